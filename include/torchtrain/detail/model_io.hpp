// SPDX-License-Identifier: MIT
// How the Trainer feeds a batch to any model and reads back its loss and predictions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/StringUtil.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include "torchtrain/detail/device_transfer.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::detail {

template <class T, class = void>
struct has_target : std::false_type {};
template <class T>
struct has_target<T, std::void_t<decltype(std::declval<const T&>().target)>> : std::true_type {};

template <class T, class = void>
struct has_attention_mask : std::false_type {};
template <class T>
struct has_attention_mask<T, std::void_t<decltype(std::declval<const T&>().attention_mask)>> : std::true_type {};

template <class M, class B, class = void>
struct forwards_batch : std::false_type {};
template <class M, class B>
struct forwards_batch<M, B, std::void_t<decltype(std::declval<M&>()->forward(std::declval<const B&>()))>>
    : std::true_type {};

template <class M, class B, class = void>
struct forwards_data_and_mask : std::false_type {};
template <class M, class B>
struct forwards_data_and_mask<M, B,
                              std::void_t<decltype(std::declval<M&>()->forward(std::declval<const B&>().data,
                                                                               std::declval<const B&>().attention_mask))>>
    : std::true_type {};

template <class M, class B, class = void>
struct forwards_data : std::false_type {};
template <class M, class B>
struct forwards_data<M, B, std::void_t<decltype(std::declval<M&>()->forward(std::declval<const B&>().data))>>
    : std::true_type {};

/// Calls the model with what it accepts: the whole batch, (data, attention_mask), or data alone.
template <class Model, class Batch>
auto forward(Model& model, const Batch& batch) {
  if constexpr (forwards_batch<Model, Batch>::value) {
    return model->forward(batch);
  } else if constexpr (forwards_data_and_mask<Model, Batch>::value) {
    return model->forward(batch.data, batch.attention_mask);
  } else {
    static_assert(forwards_data<Model, Batch>::value,
                  "the model's forward accepts none of what the Trainer passes for this batch type (the collator's "
                  "output): forward(const Batch&) with the whole batch (labels included), forward(data, "
                  "attention_mask) for a batch with an attention_mask (PaddingCollator), or forward(data); "
                  "see the Batch type in the instantiation below");
    return model->forward(batch.data);
  }
}

/// Accelerate's convert_outputs_to_fp32: a forward's float16 and bfloat16 outputs in float32, so that the loss and
/// metrics the Trainer computes from them are float32.
inline torch::Tensor to_float32(const torch::Tensor& t) {
  const bool reduced = t.defined() && (t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16);
  return reduced ? t.to(torch::kFloat) : t;
}
inline ModelOutput to_float32(ModelOutput output) {
  for (auto& [key, value] : output) value = to_float32(value);
  return output;
}

/// The labels of a batch (its `target`), or an undefined tensor when it has none.
template <class Batch>
torch::Tensor labels_of(const Batch& batch) {
  if constexpr (has_target<Batch>::value)
    return batch.target;
  else
    return {};
}

template <class Batch>
Batch to_device(Batch batch, const torch::Device& device) {
  if constexpr (has_target<Batch>::value && !has_attention_mask<Batch>::value) {
    batch.data = to_device(batch.data, device);
    batch.target = to_device(batch.target, device);
    return batch;
  } else {
    return batch.to(device, /*non_blocking=*/true);
  }
}

template <class T, class = void>
struct has_lengths : std::false_type {};
template <class T>
struct has_lengths<T, std::void_t<decltype(std::declval<T&>().lengths())>> : std::true_type {};

/// Every example's length for group_by_length: the data set's own lengths() when it has one (HF's length
/// column), otherwise the first dimension of each example's data, reading every example once.
template <class Dataset>
std::vector<std::int64_t> example_lengths(Dataset& dataset) {
  if constexpr (has_lengths<Dataset>::value) {
    const auto& lengths = dataset.lengths();
    return std::vector<std::int64_t>(lengths.begin(), lengths.end());
  } else {
    const std::size_t n = dataset.size().value_or(0);
    std::vector<std::int64_t> lengths(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto data = dataset.get(i).data;
      lengths[i] = data.dim() > 0 ? data.size(0) : 1;
    }
    return lengths;
  }
}

/// The input tokens of a batch for include_num_input_tokens_seen: "all" counts every position of its data
/// (batch x sequence length), "non_padding" those its attention_mask marks, or all of them when it has none;
/// "no" counts nothing (-1).
template <class Batch>
std::int64_t input_tokens(const Batch& batch, const std::string& mode) {
  if (mode == "no") return -1;
  if constexpr (has_attention_mask<Batch>::value)
    if (mode == "non_padding" && batch.attention_mask.defined()) return batch.attention_mask.sum().template item<std::int64_t>();
  const auto& data = batch.data;
  return data.dim() >= 2 ? data.size(0) * data.size(1) : data.numel();
}

/// The label index the built-in loss and the ready-made metrics ignore (PyTorch's and Hugging Face's -100).
inline constexpr std::int64_t kIgnoreIndex = -100;

/// Whether `labels` are class indices (integers), for which positions of kIgnoreIndex count for nothing.
inline bool are_class_indices(const torch::Tensor& labels) {
  return labels.defined() && !c10::isFloatingType(labels.scalar_type()) && !c10::isComplexType(labels.scalar_type());
}

/// The number of labels that count in `labels` (those that are not kIgnoreIndex), as a device tensor.
inline torch::Tensor count_label_tokens(const torch::Tensor& labels) { return labels.ne(kIgnoreIndex).sum(); }

/// The built-in loss: cross-entropy for class indices (per-token logits [..., classes] flattened against labels
/// [...], positions of -100 ignored, with `label_smoothing`), mean squared error otherwise. With
/// `num_items_in_batch`, the cross-entropy is summed and divided by it; otherwise it is the mean.
inline torch::Tensor builtin_loss(const torch::Tensor& logits, const torch::Tensor& labels, double label_smoothing = 0.0,
                                  const torch::Tensor& num_items_in_batch = {}) {
  namespace F = torch::nn::functional;
  if (!are_class_indices(labels))
    return F::mse_loss(logits, labels.reshape(logits.sizes()).to(logits.scalar_type()));
  const auto flat_labels = labels.reshape({-1}).to(torch::kLong);
  const auto flat_logits = logits.dim() > 2 ? logits.reshape({-1, logits.size(-1)}) : logits;
  if (flat_logits.dim() != 2 || flat_logits.size(0) != flat_labels.size(0))
    throw ArgumentError("the built-in loss needs logits [..., classes] for labels [...] of the same leading shape; "
                        "got logits " + c10::str(logits.sizes()) + " for labels " + c10::str(labels.sizes()) +
                        "; assign Trainer::criterion or override compute_loss");
  auto options = F::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex).label_smoothing(label_smoothing);
  if (!num_items_in_batch.defined()) return F::cross_entropy(flat_logits, flat_labels, options);
  // float32 at least, as Hugging Face's loss functions compute it
  const auto sum = F::cross_entropy(flat_logits.to(at::promote_types(flat_logits.scalar_type(), torch::kFloat)),
                                    flat_labels, options.reduction(torch::kSum));
  return sum / num_items_in_batch.to(sum.scalar_type());
}

/// The default criterion: builtin_loss without label smoothing, as a mean.
inline torch::Tensor default_criterion(const torch::Tensor& logits, const torch::Tensor& labels) {
  return builtin_loss(logits, labels);
}

/// How read_output computes a loss the model does not return itself.
struct LossOptions {
  /// The user's loss from (predictions, labels), a mean; when empty, builtin_loss.
  const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>* criterion = nullptr;
  double label_smoothing = 0.0;
  torch::Tensor num_items_in_batch;  // the window's label tokens, when the labels are class indices
};

template <class Output>
LossOutput read_output(Output&& output, const torch::Tensor& labels, const LossOptions& loss = {},
                       const std::vector<std::string>& ignore_keys = {}) {
  LossOutput result;
  if constexpr (std::is_same_v<std::decay_t<Output>, torch::Tensor>) {
    result.predictions = output;
  } else {
    static_assert(std::is_same_v<std::decay_t<Output>, ModelOutput>,
                  "a model's forward must return torch::Tensor or torchtrain::ModelOutput");
    if (auto it = output.find("loss"); it != output.end()) result.loss = it->second;
    auto usable = [&](const std::string& key) {
      return key != "loss" && std::find(ignore_keys.begin(), ignore_keys.end(), key) == ignore_keys.end();
    };
    std::string predictions_key = output.count("logits") && usable("logits") ? "logits" : "";
    for (const auto& [key, value] : output) {
      if (!usable(key)) continue;
      if (predictions_key.empty()) predictions_key = key;
      if (key == predictions_key)
        result.predictions = value;
      else
        result.other_outputs.emplace(key, value);
    }
  }
  if (result.loss.defined() || !labels.defined() || !result.predictions.defined()) return result;
  const bool by_items = loss.num_items_in_batch.defined() && are_class_indices(labels);
  if (loss.criterion && *loss.criterion) {
    result.loss = (*loss.criterion)(result.predictions, labels);
    // A mean over this micro-batch's label tokens, turned into its share of the window's mean.
    if (by_items) result.loss = result.loss * (count_label_tokens(labels).to(result.loss.scalar_type()) /
                                               loss.num_items_in_batch.to(result.loss.scalar_type()));
  } else {
    result.loss = builtin_loss(result.predictions, labels, loss.label_smoothing,
                               by_items ? loss.num_items_in_batch : torch::Tensor());
  }
  result.normalized_by_num_items = by_items;
  return result;
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// How the Trainer feeds a batch to any model and reads back its loss and predictions.
#pragma once

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

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

/// Calls the model with what it accepts: the whole batch, (data, attention_mask), or data alone.
template <class Model, class Batch>
auto forward(Model& model, const Batch& batch) {
  if constexpr (forwards_batch<Model, Batch>::value)
    return model->forward(batch);
  else if constexpr (forwards_data_and_mask<Model, Batch>::value)
    return model->forward(batch.data, batch.attention_mask);
  else
    return model->forward(batch.data);
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

/// A model's output reduced to what the loop needs.
struct ForwardResult {
  torch::Tensor loss;         // undefined when neither the model nor a criterion provides one
  torch::Tensor predictions;  // logits, or the first non-loss output
};

/// Default criterion: cross-entropy for integer labels, mean squared error otherwise.
inline torch::Tensor default_criterion(const torch::Tensor& logits, const torch::Tensor& labels) {
  if (!c10::isFloatingType(labels.scalar_type()))
    return torch::nn::functional::cross_entropy(logits, labels.reshape({-1}));
  return torch::nn::functional::mse_loss(logits, labels.reshape(logits.sizes()).to(logits.scalar_type()));
}

template <class Output, class Criterion>
ForwardResult read_output(Output&& output, const torch::Tensor& labels, const Criterion& criterion,
                          const std::vector<std::string>& ignore_keys = {}) {
  ForwardResult result;
  if constexpr (std::is_same_v<std::decay_t<Output>, torch::Tensor>) {
    result.predictions = output;
  } else {
    static_assert(std::is_same_v<std::decay_t<Output>, ModelOutput>,
                  "a model's forward must return torch::Tensor or torchtrain::ModelOutput");
    if (auto it = output.find("loss"); it != output.end()) result.loss = it->second;
    auto usable = [&](const std::string& key) {
      return key != "loss" && std::find(ignore_keys.begin(), ignore_keys.end(), key) == ignore_keys.end();
    };
    if (auto it = output.find("logits"); it != output.end() && usable("logits")) {
      result.predictions = it->second;
    } else {
      for (const auto& [key, value] : output)
        if (usable(key)) {
          result.predictions = value;
          break;
        }
    }
  }
  if (!result.loss.defined() && labels.defined() && result.predictions.defined())
    result.loss = criterion(result.predictions, labels);
  return result;
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// Data collators: turn the examples of one batch into the batch the model receives.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/data/example.h>
#include <torch/types.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// Stacks each field of equally shaped examples along a new first dimension.
struct DefaultDataCollator {
  torch::data::Example<> operator()(const std::vector<torch::data::Example<>>& examples) const {
    if (examples.empty()) throw ArgumentError("DefaultDataCollator: cannot collate an empty batch");
    std::vector<torch::Tensor> data, targets;
    data.reserve(examples.size());
    targets.reserve(examples.size());
    for (const auto& e : examples) {
      data.push_back(e.data);
      targets.push_back(e.target);
    }
    return {torch::stack(data), torch::stack(targets)};
  }
};

/// A batch of variable-length sequences padded to the longest one; `attention_mask` is 1 on real
/// positions and 0 on padding.
struct PaddedBatch {
  torch::Tensor data;            // [batch, longest, ...]
  torch::Tensor attention_mask;  // [batch, longest], int64
  torch::Tensor target;          // stacked targets, or per-position labels padded with the label padding

  PaddedBatch to(const torch::Device& device, bool non_blocking = false) const {
    return {data.to(device, non_blocking), attention_mask.to(device, non_blocking),
            target.to(device, non_blocking)};
  }
};

/// Pads each example's data (first dimension = sequence length) to the longest in the batch with
/// `padding_value`. Targets of one shape are stacked (a label per sequence); per-position targets of different
/// lengths (a label per token) are padded to the longest with `label_padding_value`, -100 by default: the
/// index the default loss and the ready-made metrics ignore, as Hugging Face's
/// DataCollatorForTokenClassification pads them.
struct PaddingCollator {
  double padding_value = 0;
  std::int64_t label_padding_value = -100;

  PaddedBatch operator()(const std::vector<torch::data::Example<>>& examples) const {
    if (examples.empty()) throw ArgumentError("PaddingCollator: cannot collate an empty batch");
    const auto batch = static_cast<std::int64_t>(examples.size());
    const auto data = padded("data", examples, [](const auto& e) { return e.data; }, padding_value);
    auto mask = torch::zeros({batch, data.size(1)}, torch::kLong);
    for (std::int64_t i = 0; i < batch; ++i)
      mask[i].narrow(0, 0, examples[static_cast<std::size_t>(i)].data.size(0)).fill_(1);
    return {data, mask, targets(examples)};
  }

 private:
  // The examples' `field` along a new first dimension, each padded at the end of its first dimension to the
  // longest; the other dimensions and the dtype must agree.
  template <class Field>
  static torch::Tensor padded(const char* name, const std::vector<torch::data::Example<>>& examples, Field field,
                              double value) {
    const torch::Tensor& first = field(examples.front());
    std::int64_t longest = 0;
    for (std::size_t i = 0; i < examples.size(); ++i) {
      const torch::Tensor& t = field(examples[i]);
      if (!t.defined() || t.dim() < 1)
        throw ArgumentError(std::string("PaddingCollator: the ") + name + " of example " + std::to_string(i) +
                            " needs a sequence dimension; got " + (t.defined() ? "a scalar" : "no tensor"));
      if (t.dim() != first.dim() || t.sizes().slice(1) != first.sizes().slice(1) ||
          t.scalar_type() != first.scalar_type())
        throw ArgumentError(std::string("PaddingCollator: cannot pad the ") + name + " of the batch: example " +
                            std::to_string(i) + " is " + describe(t) + " where example 0 is " + describe(first) +
                            "; only the first dimension may differ");
      longest = std::max(longest, t.size(0));
    }
    auto shape = first.sizes().vec();
    shape[0] = longest;
    shape.insert(shape.begin(), static_cast<std::int64_t>(examples.size()));
    auto out = torch::full(shape, value, first.options());
    for (std::size_t i = 0; i < examples.size(); ++i) {
      const torch::Tensor& t = field(examples[i]);
      out[static_cast<std::int64_t>(i)].narrow(0, 0, t.size(0)).copy_(t);
    }
    return out;
  }

  torch::Tensor targets(const std::vector<torch::data::Example<>>& examples) const {
    const torch::Tensor& first = examples.front().target;
    const bool none = std::all_of(examples.begin(), examples.end(), [](const auto& e) { return !e.target.defined(); });
    if (none) return {};  // unlabelled data
    bool same_shape = true;
    for (const auto& e : examples) same_shape = same_shape && e.target.defined() && e.target.sizes() == first.sizes();
    if (same_shape && first.defined()) return torch::stack(targets_of(examples));
    return padded("target", examples, [](const auto& e) { return e.target; },
                  static_cast<double>(label_padding_value));
  }

  static std::vector<torch::Tensor> targets_of(const std::vector<torch::data::Example<>>& examples) {
    std::vector<torch::Tensor> out;
    out.reserve(examples.size());
    for (const auto& e : examples) out.push_back(e.target);
    return out;
  }

  static std::string describe(const torch::Tensor& t) {
    std::string shape;
    for (const auto size : t.sizes()) shape += (shape.empty() ? "" : ", ") + std::to_string(size);
    return "[" + shape + "] " + std::string(c10::toString(t.scalar_type()));
  }
};

}  // namespace torchtrain::data

// SPDX-License-Identifier: MIT
// Data collators: turn the examples of one batch into the batch the model receives.
#pragma once

#include <algorithm>
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
  torch::Tensor target;          // stacked targets

  PaddedBatch to(const torch::Device& device, bool non_blocking = false) const {
    return {data.to(device, non_blocking), attention_mask.to(device, non_blocking),
            target.to(device, non_blocking)};
  }
};

/// Pads each example's data (first dimension = sequence length) to the longest in the batch.
struct PaddingCollator {
  double padding_value = 0;

  PaddedBatch operator()(const std::vector<torch::data::Example<>>& examples) const {
    if (examples.empty()) throw ArgumentError("PaddingCollator: cannot collate an empty batch");
    int64_t longest = 0;
    for (const auto& e : examples) {
      if (e.data.dim() < 1)
        throw ArgumentError("PaddingCollator: every example's data needs a sequence dimension; got a scalar");
      longest = std::max(longest, e.data.size(0));
    }
    const auto batch = static_cast<int64_t>(examples.size());
    auto shape = examples.front().data.sizes().vec();
    shape.insert(shape.begin(), batch);
    shape[1] = longest;
    auto data = torch::full(shape, padding_value, examples.front().data.options());
    auto mask = torch::zeros({batch, longest}, torch::kLong);
    std::vector<torch::Tensor> targets;
    targets.reserve(examples.size());
    for (int64_t i = 0; i < batch; ++i) {
      const auto& e = examples[static_cast<std::size_t>(i)];
      const auto length = e.data.size(0);
      data[i].narrow(0, 0, length).copy_(e.data);
      mask[i].narrow(0, 0, length).fill_(1);
      targets.push_back(e.target);
    }
    return {data, mask, torch::stack(targets)};
  }
};

}  // namespace torchtrain::data

// SPDX-License-Identifier: MIT
// The outputs of an evaluation loop, gathered batch by batch: kept on the device, moved to the CPU every
// eval_accumulation_steps (or at the end), and joined into one tensor, padding dimension 1 where batches differ
// in length, as Hugging Face's EvalLoopContainer does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <c10/util/StringUtil.h>
#include <torch/types.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// `pieces` joined along dimension 0. Pieces of more than one dimension whose dimension 1 differs are padded
/// at its end to the longest with `padding_index`; every other dimension must agree. `what` names the tensors
/// in errors.
inline torch::Tensor pad_and_concatenate(const std::vector<torch::Tensor>& pieces, double padding_index,
                                         const std::string& what) {
  if (pieces.empty()) return {};
  if (pieces.size() == 1) return pieces.front();
  const auto& first = pieces.front();
  std::int64_t longest = first.dim() > 1 ? first.size(1) : 0, rows = 0;
  bool same = true;
  for (const auto& p : pieces) {
    const bool agree = p.dim() == first.dim() && (p.dim() < 3 || p.sizes().slice(2) == first.sizes().slice(2));
    if (!agree)
      throw ArgumentError("evaluation: cannot join the " + what + " of two batches, of shapes " +
                          c10::str(first.sizes()) + " and " + c10::str(p.sizes()) +
                          "; only dimensions 0 and 1 may differ between batches (reduce the outputs per batch "
                          "with preprocess_logits_for_metrics, or return them at one size)");
    if (p.dim() > 1) {
      same = same && p.size(1) == longest;
      longest = std::max(longest, p.size(1));
    }
    rows += p.size(0);
  }
  if (same) return torch::cat(pieces);
  auto shape = first.sizes().vec();
  shape[0] = rows;
  shape[1] = longest;
  auto joined = torch::full(shape, padding_index, first.options());
  std::int64_t row = 0;
  for (const auto& p : pieces) {
    joined.narrow(0, row, p.size(0)).narrow(1, 0, p.size(1)).copy_(p);
    row += p.size(0);
  }
  return joined;
}

/// One kind of evaluation output (predictions, labels, inputs or losses) over a whole loop.
class EvalAccumulator {
 public:
  EvalAccumulator(std::string what, double padding_index = -100) : what_(std::move(what)), padding_(padding_index) {}

  void add(const torch::Tensor& batch) {
    if (batch.defined()) on_device_.push_back(batch.detach());
  }

  /// Moves what the device holds to the CPU, as one tensor (eval_accumulation_steps).
  void to_cpu() {
    if (on_device_.empty()) return;
    on_cpu_.push_back(pad_and_concatenate(on_device_, padding_, what_).to(torch::kCPU));
    on_device_.clear();
  }

  /// Everything added, on the CPU, joined; undefined when nothing was.
  torch::Tensor result() {
    to_cpu();
    return pad_and_concatenate(on_cpu_, padding_, what_);
  }

 private:
  std::string what_;
  double padding_;
  std::vector<torch::Tensor> on_device_, on_cpu_;
};

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// Gradient clipping that stays on the device.
#pragma once

#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

namespace torchtrain::detail {

/// Scales all gradients so that their total L2 norm is at most `max_norm`, as PyTorch's clip_grad_norm_
/// does, and returns the pre-clip total norm as a 0-dim tensor. LibTorch's own version returns a double,
/// which would make every step wait for the device.
inline torch::Tensor clip_grad_norm(const std::vector<torch::optim::OptimizerParamGroup>& groups, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& group : groups)
    for (const auto& p : group.params())
      if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({});
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(g.norm(2));
  auto total = norms.size() == 1 ? norms.front() : torch::stack(norms).norm(2);
  auto coef = torch::clamp_max(max_norm / (total + 1e-6), 1.0);
  for (auto& g : grads) g.mul_(coef);
  return total;
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// Gradient norms and clipping that stay on the device.
#pragma once

#include <vector>

#include <torch/types.h>

namespace torchtrain::detail {

inline std::vector<torch::Tensor> defined_grads(const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

inline torch::Tensor norm_of(const std::vector<torch::Tensor>& grads) {
  if (grads.empty()) return torch::zeros({});
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(g.norm(2));
  return norms.size() == 1 ? norms.front() : torch::stack(norms).norm(2);
}

/// The total L2 norm of the parameters' gradients, as a 0-dim tensor.
inline torch::Tensor total_grad_norm(const std::vector<torch::Tensor>& parameters) {
  return norm_of(defined_grads(parameters));
}

/// Scales all gradients so that their total L2 norm is at most `max_norm`, as PyTorch's clip_grad_norm_
/// does, and returns the pre-clip total norm as a 0-dim tensor. LibTorch's own version returns a double,
/// which would make every step wait for the device.
inline torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& parameters, double max_norm) {
  auto grads = defined_grads(parameters);
  auto total = norm_of(grads);
  if (grads.empty()) return total;
  auto coef = torch::clamp_max(max_norm / (total + 1e-6), 1.0);
  for (auto& g : grads) g.mul_(coef);
  return total;
}

}  // namespace torchtrain::detail

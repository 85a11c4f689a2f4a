// SPDX-License-Identifier: MIT
// to_device for one tensor: the copy the loop and the data sets skip when a tensor is already in place.
#pragma once

#include <torch/types.h>

namespace torchtrain::detail {

// A tensor already on `device` is returned as is, without a trip through the dispatcher.
inline torch::Tensor to_device(const torch::Tensor& tensor, const torch::Device& device) {
  if (!tensor.defined() || tensor.device() == device) return tensor;
  return tensor.to(device, /*non_blocking=*/true);
}

}  // namespace torchtrain::detail

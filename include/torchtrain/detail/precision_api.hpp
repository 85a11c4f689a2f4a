// SPDX-License-Identifier: MIT
// The LibTorch calls of mixed precision whose API changed between versions, in one place.
#pragma once

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

// LibTorch 2.4 replaced autocast's per-device functions (is_enabled / is_cpu_enabled, set_autocast_gpu_dtype /
// set_autocast_cpu_dtype, ...) by ones that take the device type; 1.13 to 2.3 have only the old ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE 1
#else
#define TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE 0
#endif

namespace torchtrain::detail {

inline bool autocast_enabled(c10::DeviceType device) {
#if TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CPU)
    at::autocast::set_cpu_enabled(enabled);
  else
    at::autocast::set_enabled(enabled);
#endif
}

inline c10::ScalarType autocast_dtype(c10::DeviceType device) {
#if TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
#if TORCHTRAIN_AUTOCAST_TAKES_DEVICE_TYPE
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CPU)
    at::autocast::set_autocast_cpu_dtype(dtype);
  else
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

/// TF32 for CUDA matrix products (cuBLAS) and convolutions (cuDNN), as PyTorch's
/// torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 set them (calls LibTorch has had
/// since 1.7).
inline void set_tf32(bool enabled) {
  at::globalContext().setAllowTF32CuBLAS(enabled);
  at::globalContext().setAllowTF32CuDNN(enabled);
}

}  // namespace torchtrain::detail

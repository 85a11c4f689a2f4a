// SPDX-License-Identifier: MIT
// AutocastGuard: a scope in which LibTorch runs eligible operations (matrix products, convolutions) in a lower
// precision, as Python's `with torch.autocast(device_type, dtype):`.
#pragma once

#include <optional>

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include "torchtrain/detail/precision_api.hpp"

namespace torchtrain {

/// While it lives, autocast to `dtype` is on for `device` (CPU: bfloat16 in LibTorch 1.13; CUDA: float16 or
/// bfloat16). Like Python's context manager it saves the previous state and restores it on destruction, counts
/// the nesting, and clears the cache of cast weights when the outermost guard ends, so guards nest. A guard
/// given no dtype does nothing, which lets a caller write one scope for both cases. Not copyable or movable: a
/// guard belongs to the scope (and thread) that made it.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, std::optional<c10::ScalarType> dtype) : device_(device), active_(dtype) {
    if (!active_) return;
    previous_enabled_ = detail::autocast_enabled(device_);
    previous_dtype_ = detail::autocast_dtype(device_);
    previous_cache_enabled_ = at::autocast::is_autocast_cache_enabled();
    detail::set_autocast_enabled(device_, true);
    detail::set_autocast_dtype(device_, *dtype);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(true);
  }

  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast_enabled(device_, previous_enabled_);
    detail::set_autocast_dtype(device_, previous_dtype_);
    at::autocast::set_autocast_cache_enabled(previous_cache_enabled_);
  }

  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

  /// Whether this guard turned autocast on.
  bool active() const { return active_; }

 private:
  c10::DeviceType device_;
  bool active_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Undefined;
  bool previous_cache_enabled_ = true;
};

}  // namespace torchtrain

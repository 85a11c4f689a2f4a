// SPDX-License-Identifier: MIT
// Warnings go through LibTorch's own channel so that users can route them with c10::WarningHandler.
#pragma once

#include <string>

#include <c10/util/Exception.h>

namespace torchtrain::detail {

inline void warn(const std::string& message) { TORCH_WARN(message); }

}  // namespace torchtrain::detail

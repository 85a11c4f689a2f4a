// SPDX-License-Identifier: MIT
// The message of an exception, without the C++ backtrace LibTorch appends to its own.
#pragma once

#include <exception>
#include <string>

#include <c10/util/Exception.h>

namespace torchtrain::detail {

inline std::string error_text(const std::exception& e) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&e)) return torch_error->what_without_backtrace();
  return e.what();
}

}  // namespace torchtrain::detail

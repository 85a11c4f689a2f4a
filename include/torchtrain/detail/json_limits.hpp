// SPDX-License-Identifier: MIT
// Limits that keep a damaged or hostile JSON file from crashing the reader instead of being reported.
#pragma once

#include <exception>
#include <string>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// Deepest nesting of lists and objects a JSON file may have. nlohmann::json copies, compares and prints values
/// recursively, so a file of a million '[' would overflow the stack; Python's json module stops near 1000 too.
inline constexpr int max_json_depth = 1000;

/// For nlohmann::json::parse's callback: throws FileFormatError naming `source` once nesting passes the limit.
inline void check_json_depth(int depth, const std::string& source) {
  if (depth > max_json_depth)
    throw FileFormatError(source + ": lists and objects are nested more than " + std::to_string(max_json_depth) +
                          " levels deep; the file is damaged or was not written by torchtrain or Hugging Face");
}

/// nlohmann's exception message without its "[json.exception.parse_error.101] " prefix.
inline std::string json_error_reason(const std::exception& e) {
  std::string message = e.what();
  if (const auto prefix_end = message.find("] "); message.rfind("[json.exception", 0) == 0 &&
                                                  prefix_end != std::string::npos)
    message.erase(0, prefix_end + 2);
  return message;
}

}  // namespace torchtrain::detail

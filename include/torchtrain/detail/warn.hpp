// SPDX-License-Identifier: MIT
// The library's messages, sent where messages.hpp says: the program's handler, a c10::WarningHandler of its
// own, or one clean line on standard error.
#pragma once

#include <iostream>
#include <mutex>
#include <string>
#include <typeinfo>

#include <c10/util/Exception.h>

#include "torchtrain/detail/console.hpp"
#include "torchtrain/messages.hpp"

namespace torchtrain::detail {

/// Whether the program installed a c10::WarningHandler of its own: LibTorch's default is the base class itself.
inline bool program_routes_torch_warnings() {
  c10::WarningHandler* handler = c10::Warning::get_warning_handler();
  return handler != nullptr && typeid(*handler) != typeid(c10::WarningHandler);
}

inline void send_message(MessageLevel level, const std::string& message) {
  MessageHandler handler;
  {
    std::lock_guard<std::mutex> lock(message_route().mutex);
    handler = message_route().handler;
  }
  if (handler) return handler(level, message);
  if (level == MessageLevel::warning && program_routes_torch_warnings()) {
    TORCH_WARN(message);
    return;
  }
  // One line, above the progress bars when they are on screen.
  const char* prefix = level == MessageLevel::warning ? "torchtrain: warning: " : "torchtrain: ";
  write_line(prefix + message, std::cerr);
}

inline void warn(const std::string& message) { send_message(MessageLevel::warning, message); }
inline void inform(const std::string& message) { send_message(MessageLevel::info, message); }

}  // namespace torchtrain::detail

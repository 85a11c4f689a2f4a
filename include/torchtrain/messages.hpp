// SPDX-License-Identifier: MIT
// Where torchtrain's messages go: its warnings, and what it says about resuming and preemption.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <utility>

namespace torchtrain {

enum class MessageLevel {
  info,     // what the run is doing: "Resuming from checkpoint-128 (global step 128, epoch 2.0)"
  warning,  // something the user may want to change; the run goes on
};

/// Receives each message, without a prefix or a newline.
using MessageHandler = std::function<void(MessageLevel level, const std::string& message)>;

/// Installs `handler` for the library's messages in every thread, and returns the one it replaces (empty for
/// the default). An empty handler restores the default, which writes one line on standard error,
/// "torchtrain: <message>" or "torchtrain: warning: <message>", above the progress bars when they are on a
/// terminal (see ProgressCallback::write). By default a warning goes instead to a c10::WarningHandler the
/// program installed (c10::Warning::set_warning_handler), through LibTorch's TORCH_WARN, so code that routes
/// LibTorch's warnings gets torchtrain's too.
inline MessageHandler set_message_handler(MessageHandler handler);

namespace detail {

struct MessageRoute {
  std::mutex mutex;
  MessageHandler handler;  // empty: the default
};

inline MessageRoute& message_route() {
  static MessageRoute route;
  return route;
}

}  // namespace detail

inline MessageHandler set_message_handler(MessageHandler handler) {
  std::lock_guard<std::mutex> lock(detail::message_route().mutex);
  return std::exchange(detail::message_route().handler, std::move(handler));
}

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// The definitions of CallbackHandler's list operations (callback_handler.hpp).
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "torchtrain/callback_handler.hpp"
#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain {

TORCHTRAIN_INLINE CallbackHandler::CallbackHandler(std::vector<CallbackPtr> callbacks) {
  for (auto& cb : callbacks) add_callback(std::move(cb));
}

TORCHTRAIN_INLINE void CallbackHandler::add_callback(CallbackPtr callback) {
  if (!callback) throw ArgumentError("add_callback: the callback is null; pass an object");
  const std::string name = callback->name();
  for (const auto& existing : callbacks_) {
    if (typeid(*existing) == typeid(*callback)) {
      detail::warn("You are adding a " + name +
                   " to the callbacks of this Trainer, but there is already one. The current list of "
                   "callbacks is:\n" +
                   callback_list());
      break;
    }
  }
  callbacks_.push_back(std::move(callback));
}

TORCHTRAIN_INLINE CallbackHandler::CallbackPtr CallbackHandler::pop_callback(const CallbackPtr& callback) {
  auto it = std::find(callbacks_.begin(), callbacks_.end(), callback);
  if (it == callbacks_.end()) return nullptr;
  CallbackPtr found = *it;
  callbacks_.erase(it);
  return found;
}

TORCHTRAIN_INLINE void CallbackHandler::remove_callback(const CallbackPtr& callback) {
  if (!pop_callback(callback))
    throw ArgumentError("remove_callback: " + (callback ? callback->name() : std::string("null")) +
                        " is not in the callback list; use pop_callback to remove only if present");
}

TORCHTRAIN_INLINE std::string CallbackHandler::callback_list() const {
  std::string out;
  for (const auto& cb : callbacks_) out += (out.empty() ? "" : "\n") + cb->name();
  return out;
}

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// CallbackHandler: the ordered list of callbacks, and the dispatch of every event to it.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// Callbacks run in list order and share one TrainerControl; a later callback sees (and may undo) what an
/// earlier one set. Before the callbacks of an event run, the handler clears the flags that event resets
/// (see TrainerControl).
class CallbackHandler {
 public:
  using CallbackPtr = std::shared_ptr<TrainerCallback>;

  CallbackHandler() = default;
  explicit CallbackHandler(std::vector<CallbackPtr> callbacks);

  /// Appends `callback`. A second object of the exact same class is allowed, with a warning.
  void add_callback(CallbackPtr callback);

  /// Constructs a T from `ctor_args` and appends it; returns it.
  template <class T, class... CtorArgs>
  std::shared_ptr<T> add_callback(CtorArgs&&... ctor_args) {
    static_assert(std::is_base_of_v<TrainerCallback, T>, "add_callback<T>: T must derive from TrainerCallback");
    auto callback = std::make_shared<T>(std::forward<CtorArgs>(ctor_args)...);
    add_callback(callback);
    return callback;
  }

  /// Removes and returns the first callback that is a T (subclasses match), or null.
  template <class T>
  std::shared_ptr<T> pop_callback() {
    for (auto it = callbacks_.begin(); it != callbacks_.end(); ++it) {
      if (auto match = std::dynamic_pointer_cast<T>(*it)) {
        callbacks_.erase(it);
        return match;
      }
    }
    return nullptr;
  }

  /// Removes and returns `callback` if it is in the list (by identity), or null.
  CallbackPtr pop_callback(const CallbackPtr& callback);

  /// Removes the first callback that is a T; does nothing if there is none.
  template <class T>
  void remove_callback() {
    pop_callback<T>();
  }

  /// Removes `callback`; throws ArgumentError if it is not in the list.
  void remove_callback(const CallbackPtr& callback);

  /// The class names, one per line, in list order.
  std::string callback_list() const;

  const std::vector<CallbackPtr>& callbacks() const { return callbacks_; }

  // One method per event; each clears the flags HF clears for it, then calls every callback in order.
  using Args = TrainingArguments;
  using State = TrainerState;
  using Control = TrainerControl;
  using Context = CallbackContext;

  void on_init_end(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_init_end>(a, s, c, x);
  }
  void on_train_begin(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_training_stop = false;
    call<&TrainerCallback::on_train_begin>(a, s, c, x);
  }
  void on_train_end(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_train_end>(a, s, c, x);
  }
  void on_epoch_begin(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_epoch_stop = false;
    call<&TrainerCallback::on_epoch_begin>(a, s, c, x);
  }
  void on_epoch_end(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_epoch_end>(a, s, c, x);
  }
  void on_step_begin(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_log = c.should_evaluate = c.should_save = false;
    call<&TrainerCallback::on_step_begin>(a, s, c, x);
  }
  void on_substep_end(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_substep_end>(a, s, c, x);
  }
  void on_pre_optimizer_step(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_pre_optimizer_step>(a, s, c, x);
  }
  void on_optimizer_step(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_optimizer_step>(a, s, c, x);
  }
  void on_step_end(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_step_end>(a, s, c, x);
  }
  void on_evaluate(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_evaluate = false;
    call<&TrainerCallback::on_evaluate>(a, s, c, x);
  }
  void on_predict(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_predict>(a, s, c, x);
  }
  void on_save(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_save = false;
    call<&TrainerCallback::on_save>(a, s, c, x);
  }
  void on_log(const Args& a, const State& s, Control& c, const Context& x) {
    c.should_log = false;
    call<&TrainerCallback::on_log>(a, s, c, x);
  }
  void on_prediction_step(const Args& a, const State& s, Control& c, const Context& x) {
    call<&TrainerCallback::on_prediction_step>(a, s, c, x);
  }
  /// Every callback hears about the exception, even if one of them throws in turn.
  void on_exception(const Args& a, const State& s, Control& c, const Context& x) noexcept {
    for (const auto& cb : callbacks_) {
      try {
        cb->on_exception(a, s, c, x);
      } catch (const std::exception& e) {
        detail::warn(cb->name() + ".on_exception threw: " + e.what());
      } catch (...) {
        detail::warn(cb->name() + ".on_exception threw an unknown exception");
      }
    }
  }

 private:
  using Event = void (TrainerCallback::*)(const Args&, const State&, Control&, const Context&);

  template <Event event>
  void call(const Args& a, const State& s, Control& c, const Context& x) {
    for (const auto& cb : callbacks_) ((*cb).*event)(a, s, c, x);
  }

  std::vector<CallbackPtr> callbacks_;
};

}  // namespace torchtrain

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/callback_handler.hpp"
#endif

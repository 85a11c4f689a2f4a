// SPDX-License-Identifier: MIT
// ModelInit: the Trainer's model factory, with or without the trial's hyper-parameters.
#pragma once

#include <cstddef>
#include <functional>
#include <type_traits>
#include <utility>

#include "torchtrain/search_space.hpp"

namespace torchtrain {

/// Builds a fresh model for each train() call, as HF's `model_init`. Assign a callable taking nothing, or
/// one taking `const Trial&`: that one receives the trial's values, so a hyper-parameter search can vary
/// the model itself (its width, its dropout) through keys that are not TrainingArguments fields.
template <class Model>
class ModelInit {
 public:
  ModelInit() = default;
  ModelInit(std::nullptr_t) {}
  template <class F, std::enable_if_t<std::is_invocable_r_v<Model, F&>, int> = 0>
  ModelInit(F make) : make_([make = std::move(make)](const Trial&) mutable { return make(); }) {}
  template <class F, std::enable_if_t<!std::is_invocable_r_v<Model, F&> &&
                                          std::is_invocable_r_v<Model, F&, const Trial&>, int> = 0>
  ModelInit(F make) : make_(std::move(make)), takes_trial_(true) {}

  explicit operator bool() const { return static_cast<bool>(make_); }
  /// Whether the factory receives the trial (and so accepts keys that are not TrainingArguments fields).
  bool takes_trial() const { return takes_trial_; }
  Model operator()(const Trial& trial = {}) const { return make_(trial); }

 private:
  std::function<Model(const Trial&)> make_;
  bool takes_trial_ = false;
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// ModelInit: the Trainer's model factory, with or without the trial's hyper-parameters.
#pragma once

#include <cstddef>
#include <functional>
#include <type_traits>
#include <utility>

#include "torchtrain/search_space.hpp"

namespace torchtrain {
namespace detail {
template <class F>
struct is_std_function : std::false_type {};
template <class Signature>
struct is_std_function<std::function<Signature>> : std::true_type {};
}  // namespace detail

/// Builds a fresh model for each train() call, as HF's `model_init`. Assign a callable taking nothing, or
/// one taking `const Trial&`: that one receives the trial's values, so a hyper-parameter search can vary
/// the model itself (its width, its dropout) through keys that are not TrainingArguments fields.
template <class Model>
class ModelInit {
 public:
  ModelInit() = default;
  ModelInit(std::nullptr_t) {}
  template <class F, std::enable_if_t<std::is_invocable_r_v<Model, F&>, int> = 0>
  ModelInit(F make) {
    if (!is_null(make)) make_ = [make = std::move(make)](const Trial&) mutable { return make(); };
  }
  template <class F, std::enable_if_t<!std::is_invocable_r_v<Model, F&> &&
                                          std::is_invocable_r_v<Model, F&, const Trial&>, int> = 0>
  ModelInit(F make) {
    if (!is_null(make)) make_ = std::move(make), takes_trial_ = true;
  }

  explicit operator bool() const { return static_cast<bool>(make_); }
  /// Whether the factory receives the trial (and so accepts keys that are not TrainingArguments fields).
  bool takes_trial() const { return takes_trial_; }
  Model operator()(const Trial& trial = {}) const { return make_(trial); }

 private:
  // An empty std::function or a null function pointer leaves the factory unset, as it did before.
  template <class F>
  static bool is_null(const F& make) {
    if constexpr (std::is_pointer_v<F>) return make == nullptr;
    else if constexpr (detail::is_std_function<F>::value) return !make;
    else return false;
  }

  std::function<Model(const Trial&)> make_;
  bool takes_trial_ = false;
};

}  // namespace torchtrain

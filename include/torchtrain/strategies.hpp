// SPDX-License-Identifier: MIT
// The enumerations TrainingArguments uses, spelled exactly as Hugging Face spells them.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <utility>

#include "torchtrain/errors.hpp"

namespace torchtrain {

/// When to log or evaluate: never, every N optimizer steps, or at the end of each epoch.
enum class IntervalStrategy { no, steps, epoch };

/// When to save a checkpoint; `best` saves whenever metric_for_best_model improves.
enum class SaveStrategy { no, steps, epoch, best };

/// The learning-rate schedules of Hugging Face's `get_scheduler`.
enum class SchedulerType {
  linear,
  cosine,
  cosine_with_restarts,
  polynomial,
  constant,
  constant_with_warmup,
  inverse_sqrt,
  reduce_lr_on_plateau,
  cosine_with_min_lr,
  warmup_stable_decay,
};

namespace detail {

template <class Enum, std::size_t N>
using EnumNames = std::array<std::pair<Enum, std::string_view>, N>;

inline constexpr EnumNames<IntervalStrategy, 3> interval_strategy_names{{
    {IntervalStrategy::no, "no"}, {IntervalStrategy::steps, "steps"}, {IntervalStrategy::epoch, "epoch"}}};

inline constexpr EnumNames<SaveStrategy, 4> save_strategy_names{{{SaveStrategy::no, "no"},
                                                                 {SaveStrategy::steps, "steps"},
                                                                 {SaveStrategy::epoch, "epoch"},
                                                                 {SaveStrategy::best, "best"}}};

inline constexpr EnumNames<SchedulerType, 10> scheduler_type_names{{
    {SchedulerType::linear, "linear"},
    {SchedulerType::cosine, "cosine"},
    {SchedulerType::cosine_with_restarts, "cosine_with_restarts"},
    {SchedulerType::polynomial, "polynomial"},
    {SchedulerType::constant, "constant"},
    {SchedulerType::constant_with_warmup, "constant_with_warmup"},
    {SchedulerType::inverse_sqrt, "inverse_sqrt"},
    {SchedulerType::reduce_lr_on_plateau, "reduce_lr_on_plateau"},
    {SchedulerType::cosine_with_min_lr, "cosine_with_min_lr"},
    {SchedulerType::warmup_stable_decay, "warmup_stable_decay"},
}};

template <class Enum, std::size_t N>
std::string enum_to_string(const EnumNames<Enum, N>& names, Enum value) {
  for (const auto& [e, name] : names)
    if (e == value) return std::string(name);
  return "<invalid>";
}

// Parses `text` as one of `names`; `field` names the argument in the error message.
template <class Enum, std::size_t N>
Enum enum_from_string(const EnumNames<Enum, N>& names, std::string_view text, std::string_view field) {
  std::string valid;
  for (const auto& [e, name] : names) {
    if (name == text) return e;
    valid += valid.empty() ? "" : ", ";
    valid += name;
  }
  throw ArgumentError(std::string(field) + ": '" + std::string(text) + "' is not a valid value; use one of: " +
                      valid);
}

}  // namespace detail

inline std::string to_string(IntervalStrategy s) { return detail::enum_to_string(detail::interval_strategy_names, s); }
inline std::string to_string(SaveStrategy s) { return detail::enum_to_string(detail::save_strategy_names, s); }
inline std::string to_string(SchedulerType s) { return detail::enum_to_string(detail::scheduler_type_names, s); }

/// Parses HF's spelling ("steps", "cosine", ...); throws ArgumentError naming `field` and the valid values.
inline IntervalStrategy parse_interval_strategy(std::string_view text, std::string_view field = "strategy") {
  return detail::enum_from_string(detail::interval_strategy_names, text, field);
}
inline SaveStrategy parse_save_strategy(std::string_view text, std::string_view field = "save_strategy") {
  return detail::enum_from_string(detail::save_strategy_names, text, field);
}
inline SchedulerType parse_scheduler_type(std::string_view text, std::string_view field = "lr_scheduler_type") {
  return detail::enum_from_string(detail::scheduler_type_names, text, field);
}

}  // namespace torchtrain

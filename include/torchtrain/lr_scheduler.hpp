// SPDX-License-Identifier: MIT
// get_scheduler: builds any SchedulerType from its name and options, as transformers.get_scheduler does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/schedulers/lambda_schedule.hpp"
#include "torchtrain/schedulers/lr_scheduler.hpp"
#include "torchtrain/schedulers/reduce_lr_on_plateau.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {
namespace detail {

// Reads scheduler_specific_kwargs: every key must be one `type` understands, every value of the right kind.
class SchedulerKwargs {
 public:
  SchedulerKwargs(const nlohmann::json& kwargs, SchedulerType type, std::initializer_list<std::string_view> valid)
      : kwargs_(kwargs), type_(type) {
    if (kwargs.is_null()) return;
    if (!kwargs.is_object())
      throw ArgumentError("scheduler_specific_kwargs must be a JSON object such as {\"num_cycles\": 2}, got " +
                          kwargs.dump());
    for (const auto& item : kwargs.items()) {
      bool known = false;
      std::string names;
      for (auto v : valid) {
        known = known || item.key() == v;
        names += (names.empty() ? "" : ", ") + std::string(v);
      }
      if (!known)
        throw ArgumentError("scheduler_specific_kwargs: '" + item.key() + "' is not an option of the " +
                            to_string(type) + " schedule; " +
                            (names.empty() ? "it takes none, remove it" : "valid options: " + names));
    }
  }

  template <class T>
  void read(const char* key, T& out) const {
    if (!kwargs_.is_object() || !kwargs_.contains(key)) return;
    const auto& value = kwargs_.at(key);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!value.is_string()) fail(key, value, "a string");
    } else if constexpr (std::is_integral_v<T>) {
      if (!value.is_number_integer()) fail(key, value, "an integer");
    } else {
      if (!value.is_number()) fail(key, value, "a number");
    }
    out = value.get<T>();
  }

  template <class T>
  void read(const char* key, std::optional<T>& out) const {
    if (!kwargs_.is_object() || !kwargs_.contains(key)) return;
    T value{};
    read(key, value);
    out = value;
  }

  // PyTorch's min_lr: one number for every param group, or a list with one per group.
  void read_min_lr(std::vector<double>& out) const {
    if (!kwargs_.is_object() || !kwargs_.contains("min_lr")) return;
    const auto& value = kwargs_.at("min_lr");
    if (value.is_number()) {
      out = {value.get<double>()};
      return;
    }
    if (value.is_array() && std::all_of(value.begin(), value.end(), [](const auto& v) { return v.is_number(); })) {
      out = value.get<std::vector<double>>();
      return;
    }
    fail("min_lr", value, "a number or an array of numbers");
  }

  template <class Enum>
  void read_choice(const char* key, Enum& out, std::initializer_list<std::pair<std::string_view, Enum>> choices) const {
    if (!kwargs_.is_object() || !kwargs_.contains(key)) return;
    std::string text;
    read(key, text);
    std::string names;
    for (const auto& [name, value] : choices) {
      if (name == text) {
        out = value;
        return;
      }
      names += (names.empty() ? "" : " or ") + std::string(name);
    }
    throw ArgumentError("scheduler_specific_kwargs: " + std::string(key) + " '" + text + "' of the " +
                        to_string(type_) + " schedule is unknown; use " + names);
  }

 private:
  [[noreturn]] void fail(const char* key, const nlohmann::json& value, const char* expected) const {
    throw ArgumentError("scheduler_specific_kwargs: " + std::string(key) + " of the " + to_string(type_) +
                        " schedule must be " + expected + ", got " + value.dump());
  }

  const nlohmann::json& kwargs_;
  SchedulerType type_;
};

}  // namespace detail

/// Builds the schedule `type` for `optimizer`, which must already hold every param group and the initial lrs.
/// num_training_steps matters to linear, cosine, cosine_with_restarts and polynomial (and must then be > 0);
/// reduce_lr_on_plateau ignores both step counts. scheduler_specific_kwargs (HF's lr_scheduler_kwargs) take:
/// cosine and cosine_with_restarts: num_cycles; polynomial: lr_end, power; inverse_sqrt: timescale;
/// cosine_with_min_lr: min_lr or min_lr_rate (one of them), num_cycles; warmup_stable_decay: num_decay_steps
/// (required), num_stable_steps, warmup_type, decay_type (linear, cosine, 1-sqrt), min_lr_ratio, num_cycles;
/// reduce_lr_on_plateau: mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps.
/// Throws ArgumentError naming the offending value.
inline std::unique_ptr<LRScheduler> get_scheduler(SchedulerType type, torch::optim::Optimizer& optimizer,
                                                  std::int64_t num_warmup_steps, std::int64_t num_training_steps,
                                                  const nlohmann::json& scheduler_specific_kwargs = nullptr) {
  const auto& kwargs = scheduler_specific_kwargs;
  if ((type == SchedulerType::constant || type == SchedulerType::reduce_lr_on_plateau) && num_warmup_steps != 0)
    detail::warn("lr scheduler '" + to_string(type) + "' has no warmup: num_warmup_steps (" +
                 std::to_string(num_warmup_steps) + ") is ignored" +
                 (type == SchedulerType::constant ? "; use constant_with_warmup to warm up" : ""));

  if (type == SchedulerType::reduce_lr_on_plateau) {
    using P = ReduceLROnPlateau;
    const detail::SchedulerKwargs read(
        kwargs, type, {"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps"});
    P::Options options;
    read.read_choice("mode", options.mode, {{"min", P::Mode::min}, {"max", P::Mode::max}});
    read.read("factor", options.factor);
    read.read("patience", options.patience);
    read.read("threshold", options.threshold);
    read.read_choice("threshold_mode", options.threshold_mode,
                     {{"rel", P::ThresholdMode::rel}, {"abs", P::ThresholdMode::abs}});
    read.read("cooldown", options.cooldown);
    read.read_min_lr(options.min_lr);
    read.read("eps", options.eps);
    return std::make_unique<P>(optimizer, std::move(options));
  }

  LambdaSchedule::Options options;
  options.num_warmup_steps = num_warmup_steps;
  options.num_training_steps = num_training_steps;
  switch (type) {
    case SchedulerType::cosine:
    case SchedulerType::cosine_with_restarts:
      detail::SchedulerKwargs(kwargs, type, {"num_cycles"}).read("num_cycles", options.num_cycles);
      break;
    case SchedulerType::polynomial: {
      const detail::SchedulerKwargs read(kwargs, type, {"lr_end", "power"});
      read.read("lr_end", options.lr_end);
      read.read("power", options.power);
      break;
    }
    case SchedulerType::inverse_sqrt:
      detail::SchedulerKwargs(kwargs, type, {"timescale"}).read("timescale", options.timescale);
      break;
    case SchedulerType::cosine_with_min_lr: {
      const detail::SchedulerKwargs read(kwargs, type, {"num_cycles", "min_lr", "min_lr_rate"});
      read.read("num_cycles", options.num_cycles);
      read.read("min_lr", options.min_lr);
      read.read("min_lr_rate", options.min_lr_rate);
      break;
    }
    case SchedulerType::warmup_stable_decay: {
      const detail::SchedulerKwargs read(kwargs, type,
                                         {"num_decay_steps", "num_stable_steps", "warmup_type", "decay_type",
                                          "min_lr_ratio", "num_cycles"});
      read.read("num_decay_steps", options.num_decay_steps);
      read.read("num_stable_steps", options.num_stable_steps);
      read.read("warmup_type", options.warmup_type);
      read.read("decay_type", options.decay_type);
      read.read("min_lr_ratio", options.min_lr_ratio);
      read.read("num_cycles", options.num_cycles);
      break;
    }
    default:
      detail::SchedulerKwargs(kwargs, type, {});
  }
  return std::make_unique<LambdaSchedule>(optimizer, type, std::move(options));
}

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// LambdaSchedule: Hugging Face's warmup/decay schedules, run the way torch's LambdaLR runs them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "torchtrain/errors.hpp"
#include "torchtrain/schedulers/lr_scheduler.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {
namespace detail {
inline constexpr double pi = 3.141592653589793;  // Python's math.pi
}  // namespace detail

/// Every param group's lr is base_lr * lr_lambda(last_epoch), base_lr being the group's lr when the schedule
/// is built. Construction applies step 0, so with warmup the first update uses lr 0, exactly as in HF.
/// Serves every SchedulerType except reduce_lr_on_plateau.
class LambdaSchedule final : public LRScheduler {
 public:
  struct Options {
    std::int64_t num_warmup_steps = 0;
    std::int64_t num_training_steps = 0;    // unused by constant, constant_with_warmup and inverse_sqrt
    std::optional<double> num_cycles;       // cosine: 0.5 (half a wave); cosine_with_restarts: 1
    double lr_end = 1e-7;                   // polynomial
    double power = 1.0;                     // polynomial
    std::optional<std::int64_t> timescale;  // inverse_sqrt: num_warmup_steps, or 10000 without warmup
  };

  /// Throws ArgumentError naming the offending option when the schedule would be meaningless.
  LambdaSchedule(torch::optim::Optimizer& optimizer, SchedulerType type, Options options)
      : LRScheduler(optimizer), type_(type), options_(std::move(options)), base_lrs_(last_lr_) {
    const std::string name = "lr scheduler '" + to_string(type) + "': ";
    auto number = [](double x) { return nlohmann::json(x).dump(); };
    if (type == SchedulerType::reduce_lr_on_plateau)
      throw ArgumentError(name + "is not a lambda schedule; build it with get_scheduler");
    if (options_.num_warmup_steps < 0)
      throw ArgumentError(name + "num_warmup_steps is " + std::to_string(options_.num_warmup_steps) +
                          "; it must be >= 0");
    if (uses_training_steps() && options_.num_training_steps <= 0)
      throw ArgumentError(name + "num_training_steps is " + std::to_string(options_.num_training_steps) +
                          "; it must be > 0 (set max_steps or num_train_epochs)");
    if (!options_.num_cycles) options_.num_cycles = type == SchedulerType::cosine_with_restarts ? 1.0 : 0.5;
    if (!options_.timescale)
      options_.timescale = options_.num_warmup_steps > 0 ? options_.num_warmup_steps : std::int64_t{10000};
    if (*options_.timescale <= 0)
      throw ArgumentError(name + "timescale is " + std::to_string(*options_.timescale) + "; it must be > 0");
    if (type == SchedulerType::polynomial) {
      // HF divides by the optimizer's default lr, not each group's: groups keep their ratio to it.
      lr_init_ = optimizer.defaults().get_lr();
      if (!(lr_init_ > options_.lr_end))
        throw ArgumentError(name + "lr_end (" + number(options_.lr_end) + ") must be smaller than the initial lr (" +
                            number(lr_init_) + "); lower lr_end or raise the learning rate");
      if (options_.num_training_steps == options_.num_warmup_steps)
        throw ArgumentError(name + "num_training_steps equals num_warmup_steps (" +
                            std::to_string(options_.num_warmup_steps) +
                            "), which leaves no step to decay over; use fewer warmup steps");
      if (!(options_.power >= 0))
        throw ArgumentError(name + "power is " + number(options_.power) + "; it must be >= 0");
    }
    apply_lambda();
  }

  SchedulerType type() const override { return type_; }

  void step() override {
    check_group_count();
    ++last_epoch_;
    apply_lambda();
  }

  /// The lr multiplier at `step`, as HF's lr_lambda computes it (same operations in the same order).
  double lr_lambda(std::int64_t step) const {
    const std::int64_t warmup = options_.num_warmup_steps;
    const std::int64_t total = options_.num_training_steps;
    if (type_ == SchedulerType::constant) return 1.0;
    if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
    const double decay_span = static_cast<double>(std::max<std::int64_t>(1, total - warmup));
    const double progress = static_cast<double>(step - warmup) / decay_span;
    switch (type_) {
      case SchedulerType::linear:
        return std::max(0.0, static_cast<double>(total - step) / decay_span);
      case SchedulerType::cosine:
        return std::max(0.0, 0.5 * (1.0 + std::cos(detail::pi * *options_.num_cycles * 2.0 * progress)));
      case SchedulerType::cosine_with_restarts:
        if (progress >= 1.0) return 0.0;
        return std::max(0.0, 0.5 * (1.0 + std::cos(detail::pi * std::fmod(*options_.num_cycles * progress, 1.0))));
      case SchedulerType::polynomial: {
        if (step > total) return options_.lr_end / lr_init_;
        const double lr_range = lr_init_ - options_.lr_end;
        const double pct_remaining =
            1.0 - static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
        const double decay = lr_range * std::pow(pct_remaining, options_.power) + options_.lr_end;
        return decay / lr_init_;
      }
      case SchedulerType::inverse_sqrt: {
        const std::int64_t shift = *options_.timescale - warmup;
        return 1.0 / std::sqrt(static_cast<double>(step + shift) / static_cast<double>(*options_.timescale));
      }
      case SchedulerType::constant:
      case SchedulerType::constant_with_warmup:
      case SchedulerType::reduce_lr_on_plateau:  // rejected by the constructor
        break;
    }
    return 1.0;
  }

  /// The number of step() calls since construction (torch's last_epoch).
  std::int64_t last_epoch() const { return last_epoch_; }

  nlohmann::json state_dict() const override {
    return {{"type", to_string(type_)},
            {"last_epoch", last_epoch_},
            {"base_lrs", base_lrs_},
            {"last_lr", last_lr_},
            {"config", config()}};
  }

  void load_state_dict(const nlohmann::json& state) override {
    detail::check_scheduler_state_type(state, type_);
    const std::int64_t last_epoch = detail::scheduler_state_count(state, "last_epoch");
    std::vector<double> base_lrs = detail::scheduler_state_lrs(state, "base_lrs", num_groups());
    const std::vector<double> last_lr = detail::scheduler_state_lrs(state, "last_lr", num_groups());
    check_group_count();
    detail::warn_if_scheduler_config_changed(state, config(), type_);
    last_epoch_ = last_epoch;
    base_lrs_ = std::move(base_lrs);
    for (std::size_t i = 0; i < last_lr.size(); ++i) set_group_lr(i, last_lr[i]);
  }

 private:
  bool uses_training_steps() const {
    return type_ == SchedulerType::linear || type_ == SchedulerType::cosine ||
           type_ == SchedulerType::cosine_with_restarts || type_ == SchedulerType::polynomial;
  }

  void apply_lambda() {
    const double factor = lr_lambda(last_epoch_);
    for (std::size_t i = 0; i < base_lrs_.size(); ++i) set_group_lr(i, base_lrs_[i] * factor);
  }

  // The settings this schedule reads, recorded in the state so a checkpoint says what produced it.
  nlohmann::json config() const {
    nlohmann::json c = nlohmann::json::object();
    if (type_ == SchedulerType::constant) return c;
    c["num_warmup_steps"] = options_.num_warmup_steps;
    if (uses_training_steps()) c["num_training_steps"] = options_.num_training_steps;
    if (type_ == SchedulerType::cosine || type_ == SchedulerType::cosine_with_restarts)
      c["num_cycles"] = *options_.num_cycles;
    if (type_ == SchedulerType::polynomial) {
      c["lr_end"] = options_.lr_end;
      c["power"] = options_.power;
      c["lr_init"] = lr_init_;
    }
    if (type_ == SchedulerType::inverse_sqrt) c["timescale"] = *options_.timescale;
    return c;
  }

  SchedulerType type_;
  Options options_;
  std::vector<double> base_lrs_;
  std::int64_t last_epoch_ = 0;
  double lr_init_ = 0.0;
};

}  // namespace torchtrain

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

#include "torchtrain/detail/warn.hpp"
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
    // cosine_with_min_lr: exactly one of min_lr (divided by the optimizer's default lr) and min_lr_rate
    std::optional<double> min_lr, min_lr_rate;
    // warmup_stable_decay: num_decay_steps required; num_stable_steps defaults to what the others leave
    std::optional<std::int64_t> num_decay_steps, num_stable_steps;
    std::string warmup_type = "linear", decay_type = "cosine";  // linear, cosine or 1-sqrt
    double min_lr_ratio = 0.0;
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
    if (type == SchedulerType::cosine_with_min_lr) {
      if (options_.min_lr && options_.min_lr_rate) throw ArgumentError(name + "Only one of min_lr or min_lr_rate should be set");
      if (!options_.min_lr && !options_.min_lr_rate)
        throw ArgumentError(name + "One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`");
      if (options_.min_lr) options_.min_lr_rate = *options_.min_lr / optimizer.defaults().get_lr();
    }
    if (type == SchedulerType::warmup_stable_decay) {
      if (!options_.num_decay_steps)
        throw ArgumentError(name + "needs num_decay_steps in lr_scheduler_kwargs, e.g. {\"num_decay_steps\": 100}");
      for (const std::string* shape : {&options_.warmup_type, &options_.decay_type})
        if (*shape != "linear" && *shape != "cosine" && *shape != "1-sqrt")
          throw ArgumentError(name + "unknown " + (shape == &options_.warmup_type ? "warmup" : "decay") + " type '" +
                              *shape + "'; expected 'linear', 'cosine' or '1-sqrt'");
      if (options_.num_stable_steps)
        detail::warn("Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.");
      else
        options_.num_stable_steps = options_.num_training_steps - options_.num_warmup_steps - *options_.num_decay_steps;
    }
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
    if (type_ == SchedulerType::warmup_stable_decay) return warmup_stable_decay(step);
    if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
    const double decay_span = static_cast<double>(std::max<std::int64_t>(1, total - warmup));
    const double progress = static_cast<double>(step - warmup) / decay_span;
    switch (type_) {
      case SchedulerType::linear:
        return std::max(0.0, static_cast<double>(total - step) / decay_span);
      case SchedulerType::cosine:
        return std::max(0.0, 0.5 * (1.0 + std::cos(detail::pi * *options_.num_cycles * 2.0 * progress)));
      case SchedulerType::cosine_with_min_lr: {
        const double factor = 0.5 * (1.0 + std::cos(detail::pi * *options_.num_cycles * 2.0 * progress));
        return std::max(0.0, factor * (1.0 - *options_.min_lr_rate) + *options_.min_lr_rate);
      }
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
      case SchedulerType::warmup_stable_decay:   // above
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
           type_ == SchedulerType::cosine_with_restarts || type_ == SchedulerType::polynomial ||
           type_ == SchedulerType::cosine_with_min_lr ||
           (type_ == SchedulerType::warmup_stable_decay && !options_.num_stable_steps);
  }

  // HF's _get_wsd_scheduler_lambda: warmup from min_lr_ratio, a stable phase at 1, a decay to min_lr_ratio.
  double warmup_stable_decay(std::int64_t step) const {
    const auto shaped = [](const std::string& type, double progress, bool rising) {
      if (type == "linear") return rising ? progress : 1.0 - progress;
      if (type == "cosine") return rising ? 0.5 * (1.0 - std::cos(detail::pi * progress)) : 0.0;
      return rising ? 1.0 - std::sqrt(1.0 - progress) : 1.0 - std::sqrt(progress);  // 1-sqrt
    };
    const std::int64_t warmup = options_.num_warmup_steps, stable = *options_.num_stable_steps,
                       decay = *options_.num_decay_steps;
    const double m = options_.min_lr_ratio;
    if (step < warmup) {
      const double progress = static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
      return std::max(0.0, shaped(options_.warmup_type, progress, true) * (1.0 - m) + m);
    }
    if (step < warmup + stable) return 1.0;
    if (step < warmup + stable + decay) {
      const double progress =
          static_cast<double>(step - warmup - stable) / static_cast<double>(std::max<std::int64_t>(1, decay));
      const double factor = options_.decay_type == "cosine"
                                ? 0.5 * (1.0 + std::cos(detail::pi * *options_.num_cycles * 2.0 * progress))
                                : shaped(options_.decay_type, progress, false);
      return std::max(0.0, factor * (1.0 - m) + m);
    }
    return m;
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
    if (type_ == SchedulerType::cosine || type_ == SchedulerType::cosine_with_restarts ||
        type_ == SchedulerType::cosine_with_min_lr || type_ == SchedulerType::warmup_stable_decay)
      c["num_cycles"] = *options_.num_cycles;
    if (type_ == SchedulerType::cosine_with_min_lr) c["min_lr_rate"] = *options_.min_lr_rate;
    if (type_ == SchedulerType::warmup_stable_decay) {
      c["num_stable_steps"] = *options_.num_stable_steps;
      c["num_decay_steps"] = *options_.num_decay_steps;
      c["warmup_type"] = options_.warmup_type;
      c["decay_type"] = options_.decay_type;
      c["min_lr_ratio"] = options_.min_lr_ratio;
    }
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

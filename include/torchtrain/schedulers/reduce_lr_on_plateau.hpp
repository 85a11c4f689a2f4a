// SPDX-License-Identifier: MIT
// ReduceLROnPlateau: PyTorch's metric-driven schedule, with a state that checkpoints can save.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "torchtrain/errors.hpp"
#include "torchtrain/schedulers/lr_scheduler.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {

/// Multiplies every group's lr by `factor` once the metric has not improved for more than `patience`
/// evaluations, then waits `cooldown` evaluations before counting again; exactly PyTorch's algorithm.
/// LibTorch has its own ReduceLROnPlateauScheduler, but its counters are private, so it cannot be resumed.
class ReduceLROnPlateau final : public LRScheduler {
 public:
  enum class Mode { min, max };            // whether lower or higher metric values are better
  enum class ThresholdMode { rel, abs };   // improvement must beat best * (1 -/+ threshold) or best -/+ threshold
  struct Options {
    Mode mode = Mode::min;
    double factor = 0.1;
    std::int64_t patience = 10;
    double threshold = 1e-4;
    ThresholdMode threshold_mode = ThresholdMode::rel;
    std::int64_t cooldown = 0;
    std::vector<double> min_lr;  // empty: 0 for every group; one value: for every group; else one per group
    double eps = 1e-8;           // reductions smaller than this are skipped
  };

  /// Throws ArgumentError naming the offending option, as PyTorch raises ValueError.
  ReduceLROnPlateau(torch::optim::Optimizer& optimizer, Options options)
      : LRScheduler(optimizer), options_(std::move(options)) {
    const std::string name = "lr scheduler 'reduce_lr_on_plateau': ";
    auto number = [](double x) { return nlohmann::json(x).dump(); };
    if (!(options_.factor < 1.0))
      throw ArgumentError(name + "factor is " + number(options_.factor) + "; it must be < 1.0");
    if (options_.patience < 0 || options_.cooldown < 0)
      throw ArgumentError(name + "patience and cooldown must be >= 0 (got " + std::to_string(options_.patience) +
                          " and " + std::to_string(options_.cooldown) + ")");
    if (options_.min_lr.empty()) options_.min_lr.push_back(0.0);
    if (options_.min_lr.size() == 1) options_.min_lr.resize(num_groups(), options_.min_lr.front());
    if (options_.min_lr.size() != num_groups())
      throw ArgumentError(name + "min_lr has " + std::to_string(options_.min_lr.size()) +
                          " values but the optimizer has " + std::to_string(num_groups()) +
                          " param groups; give one value, or one per group");
    best_ = mode_worse();
  }

  SchedulerType type() const override { return SchedulerType::reduce_lr_on_plateau; }
  bool steps_on_metric() const override { return true; }

  void step() override {
    throw ArgumentError(
        "lr scheduler 'reduce_lr_on_plateau' advances on a metric: call step(metric) after each evaluation "
        "(set metric_for_best_model), not step() after each update");
  }

  void step(double metric) override {
    check_group_count();
    ++last_epoch_;
    if (is_better(metric, best_)) {
      best_ = metric;
      num_bad_epochs_ = 0;
    } else {
      ++num_bad_epochs_;
    }
    if (cooldown_counter_ > 0) {
      --cooldown_counter_;
      num_bad_epochs_ = 0;  // bad evaluations during cooldown do not count
    }
    if (num_bad_epochs_ > options_.patience) {
      reduce_lr();
      cooldown_counter_ = options_.cooldown;
      num_bad_epochs_ = 0;
    }
    for (std::size_t i = 0; i < num_groups(); ++i) last_lr_[i] = group_lr(i);
  }

  nlohmann::json state_dict() const override {
    return {{"type", to_string(type())},
            {"last_epoch", last_epoch_},
            {"best", encode(best_)},
            {"num_bad_epochs", num_bad_epochs_},
            {"cooldown_counter", cooldown_counter_},
            {"last_lr", last_lr_},
            {"config", config()}};
  }

  void load_state_dict(const nlohmann::json& state) override {
    detail::check_scheduler_state_type(state, type());
    const std::int64_t last_epoch = detail::scheduler_state_count(state, "last_epoch");
    const double best = decode(detail::scheduler_state_field(state, "best"));
    const std::int64_t num_bad_epochs = detail::scheduler_state_count(state, "num_bad_epochs");
    const std::int64_t cooldown_counter = detail::scheduler_state_count(state, "cooldown_counter");
    const std::vector<double> last_lr = detail::scheduler_state_lrs(state, "last_lr", num_groups());
    check_group_count();
    detail::warn_if_scheduler_config_changed(state, config(), type());
    last_epoch_ = last_epoch;
    best_ = best;
    num_bad_epochs_ = num_bad_epochs;
    cooldown_counter_ = cooldown_counter;
    for (std::size_t i = 0; i < last_lr.size(); ++i) set_group_lr(i, last_lr[i]);
  }

 private:
  double mode_worse() const {
    const double inf = std::numeric_limits<double>::infinity();
    return options_.mode == Mode::min ? inf : -inf;
  }

  bool is_better(double a, double best) const {
    const double t = options_.threshold;
    if (options_.mode == Mode::min)
      return options_.threshold_mode == ThresholdMode::rel ? a < best * (1.0 - t) : a < best - t;
    return options_.threshold_mode == ThresholdMode::rel ? a > best * (t + 1.0) : a > best + t;
  }

  // Reads the optimizer's lr rather than last_lr_, as PyTorch does, so a user's own lr change is respected.
  void reduce_lr() {
    for (std::size_t i = 0; i < num_groups(); ++i) {
      const double old_lr = group_lr(i);
      const double new_lr = std::max(old_lr * options_.factor, options_.min_lr[i]);
      if (old_lr - new_lr > options_.eps) set_group_lr(i, new_lr);
    }
  }

  // JSON has no infinities, and best starts at one: write non-finite values as strings.
  static nlohmann::json encode(double x) {
    if (std::isnan(x)) return "nan";
    if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
    return x;
  }

  static double decode(const nlohmann::json& j) {
    if (j.is_number()) return j.get<double>();
    if (j == "inf") return std::numeric_limits<double>::infinity();
    if (j == "-inf") return -std::numeric_limits<double>::infinity();
    if (j == "nan") return std::numeric_limits<double>::quiet_NaN();
    detail::bad_scheduler_state("'best' must be a number, \"inf\", \"-inf\" or \"nan\", got " + j.dump());
  }

  nlohmann::json config() const {
    return {{"mode", options_.mode == Mode::min ? "min" : "max"},
            {"factor", options_.factor},
            {"patience", options_.patience},
            {"threshold", options_.threshold},
            {"threshold_mode", options_.threshold_mode == ThresholdMode::rel ? "rel" : "abs"},
            {"cooldown", options_.cooldown},
            {"min_lr", options_.min_lr},
            {"eps", options_.eps}};
  }

  Options options_;
  double best_ = 0.0;
  std::int64_t num_bad_epochs_ = 0;
  std::int64_t cooldown_counter_ = 0;
  std::int64_t last_epoch_ = 0;
};

}  // namespace torchtrain

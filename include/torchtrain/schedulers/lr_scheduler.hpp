// SPDX-License-Identifier: MIT
// LRScheduler: what every learning-rate schedule offers the training loop, with a JSON state for checkpoints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/optim/optimizer.h>

#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {

/// Sets the learning rate of each param group of an optimizer it does not own (so it must not outlive it).
/// Per-update schedules step once after every optimizer.step(); metric-driven ones after every evaluation.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  virtual SchedulerType type() const = 0;

  /// Advances one optimizer update.
  virtual void step() = 0;

  /// Advances one evaluation with its metric; only schedules whose steps_on_metric() is true accept it.
  virtual void step(double /*metric*/) {
    throw ArgumentError("lr scheduler '" + to_string(type()) +
                        "' advances once per optimizer update: call step(), not step(metric)");
  }

  /// True when the loop must call step(metric) after each evaluation instead of step() after each update.
  virtual bool steps_on_metric() const { return false; }

  /// The learning rate of each param group, as this scheduler last set it.
  const std::vector<double>& get_last_lr() const { return last_lr_; }

  /// Everything needed to continue bit-exactly, with a "type" key; readable JSON for checkpoints.
  virtual nlohmann::json state_dict() const = 0;

  /// Restores a state_dict() and writes its learning rates into the optimizer. Throws ArgumentError when the
  /// state belongs to another schedule type or param-group count, FileFormatError when it is malformed;
  /// either way the scheduler and the optimizer are left as they were.
  virtual void load_state_dict(const nlohmann::json& state) = 0;

 protected:
  explicit LRScheduler(torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {
    last_lr_.reserve(optimizer.param_groups().size());
    for (const auto& group : optimizer.param_groups()) last_lr_.push_back(group.options().get_lr());
  }

  std::size_t num_groups() const { return last_lr_.size(); }

  // Adding param groups after building the scheduler would leave them unscheduled: refuse loudly.
  void check_group_count() const {
    const std::size_t now = optimizer_.param_groups().size();
    if (now != num_groups())
      throw ArgumentError("lr scheduler: the optimizer had " + std::to_string(num_groups()) +
                          " param groups when the scheduler was built and has " + std::to_string(now) +
                          " now; build the scheduler after adding every param group");
  }

  double group_lr(std::size_t i) const { return optimizer_.param_groups()[i].options().get_lr(); }

  void set_group_lr(std::size_t i, double lr) {
    optimizer_.param_groups()[i].options().set_lr(lr);
    last_lr_[i] = lr;
  }

  torch::optim::Optimizer& optimizer_;
  std::vector<double> last_lr_;
};

namespace detail {

// Reading a scheduler state: a missing or mistyped field means a damaged or foreign file (FileFormatError);
// a well-formed state for another setup means the current arguments differ from the run (ArgumentError).

[[noreturn]] inline void bad_scheduler_state(const std::string& what) {
  throw FileFormatError("lr scheduler state: " + what +
                        "; the checkpoint is damaged or was not written by torchtrain, resume from another one");
}

inline void check_scheduler_state_type(const nlohmann::json& state, SchedulerType expected) {
  if (!state.is_object()) bad_scheduler_state("expected a JSON object, got " + std::string(state.type_name()));
  const auto it = state.find("type");
  if (it == state.end() || !it->is_string()) bad_scheduler_state("missing the string field 'type'");
  const auto& type = it->get_ref<const std::string&>();
  if (type != to_string(expected))
    throw ArgumentError("lr scheduler state is for '" + type + "' but this scheduler is '" + to_string(expected) +
                        "'; resume with lr_scheduler_type " + type + " or from a checkpoint of this schedule");
}

inline const nlohmann::json& scheduler_state_field(const nlohmann::json& state, const char* key) {
  const auto it = state.find(key);
  if (it == state.end()) bad_scheduler_state(std::string("missing the field '") + key + "'");
  return *it;
}

inline std::int64_t scheduler_state_count(const nlohmann::json& state, const char* key) {
  const auto& value = scheduler_state_field(state, key);
  if (!value.is_number_integer() || value.get<std::int64_t>() < 0)
    bad_scheduler_state(std::string("'") + key + "' must be a non-negative integer, got " + value.dump());
  return value.get<std::int64_t>();
}

inline std::vector<double> scheduler_state_lrs(const nlohmann::json& state, const char* key,
                                               std::size_t num_groups) {
  const auto& value = scheduler_state_field(state, key);
  if (!value.is_array()) bad_scheduler_state(std::string("'") + key + "' must be an array of numbers");
  if (value.size() != num_groups)
    throw ArgumentError("lr scheduler state has " + std::to_string(value.size()) + " param groups in '" + key +
                        "' but the optimizer has " + std::to_string(num_groups) +
                        "; build the optimizer with the same param groups as the checkpointed run");
  std::vector<double> lrs;
  lrs.reserve(num_groups);
  for (const auto& lr : value) {
    if (!lr.is_number()) bad_scheduler_state(std::string("'") + key + "' holds " + lr.dump() + ", not a number");
    lrs.push_back(lr.get<double>());
  }
  return lrs;
}

// The schedule's settings come from the current arguments, as in HF; a resume that changed them is worth a word.
inline void warn_if_scheduler_config_changed(const nlohmann::json& state, const nlohmann::json& current,
                                             SchedulerType type) {
  const auto it = state.find("config");
  if (it != state.end() && *it != current)
    warn("lr scheduler '" + to_string(type) + "': the checkpoint was saved with " + it->dump() +
         "; continuing with the current settings " + current.dump());
}

}  // namespace detail
}  // namespace torchtrain

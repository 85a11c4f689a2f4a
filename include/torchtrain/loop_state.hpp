// SPDX-License-Identifier: MIT
// LoopState: what an exact continuation needs beyond the TrainerState, saved as a checkpoint's loop_state.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/errors.hpp"

namespace torchtrain {

struct LoopState {
  /// The running loss sums (HF's tr_loss and _total_loss_scalar); in a distributed run, their mean over the
  /// ranks, from which every rank resumes.
  double interval_loss = 0.0;
  double total_loss = 0.0;
  /// The logging window: the next logged loss is averaged over the steps since this one.
  std::int64_t last_logged_step = 0;
  /// What the next log reports for the latest update.
  double learning_rate = 0.0;
  std::optional<double> grad_norm;
  /// The checkpoint was written at a step after which on_epoch_end follows (the epoch's last step, or a stop):
  /// a resume runs that epoch end first.
  bool epoch_end_pending = false;
  /// The number of processes that wrote the checkpoint.
  int world_size = 1;
  /// The steps of this run's checkpoints that a preemption wrote, which an uninterrupted run does not have.
  std::vector<std::int64_t> preemption_steps;

  /// The loop_state.json object; world_size only when it is above 1.
  nlohmann::json to_json() const {
    nlohmann::json j{{"interval_loss", interval_loss}, {"total_loss", total_loss}};
    if (world_size > 1) j["world_size"] = world_size;
    j["last_logged_step"] = last_logged_step;
    j["learning_rate"] = learning_rate;
    if (grad_norm) j["grad_norm"] = *grad_norm;
    j["epoch_end_pending"] = epoch_end_pending;
    if (!preemption_steps.empty()) j["preemption_steps"] = preemption_steps;
    return j;
  }

  /// Reads a loop_state.json object; what it leaves out (an older checkpoint's) keeps its value in `defaults`, and
  /// null (a checkpoint without the file) gives `defaults`. The loss sums are required in an object. Throws
  /// FileFormatError naming the key on a wrong type.
  static LoopState from_json(const nlohmann::json& j) { return from_json(j, LoopState()); }
  static LoopState from_json(const nlohmann::json& j, const LoopState& defaults) {
    LoopState s = defaults;
    if (j.is_null()) return s;
    if (!j.is_object()) throw FileFormatError("expected a JSON object, got " + std::string(j.type_name()));
    read(j, "interval_loss", s.interval_loss, true);
    read(j, "total_loss", s.total_loss, true);
    read(j, "world_size", s.world_size, false);
    read(j, "last_logged_step", s.last_logged_step, false);
    read(j, "learning_rate", s.learning_rate, false);
    if (j.contains("grad_norm")) read(j, "grad_norm", s.grad_norm.emplace(), true);
    read(j, "epoch_end_pending", s.epoch_end_pending, false);
    if (const auto it = j.find("preemption_steps"); it != j.end()) {
      if (!it->is_array()) throw FileFormatError("'preemption_steps' must be a list of steps, got " + it->dump());
      s.preemption_steps.clear();
      for (const auto& step : *it) {
        if (!step.is_number_integer())
          throw FileFormatError("'preemption_steps' must be a list of steps, got " + it->dump());
        s.preemption_steps.push_back(step.get<std::int64_t>());
      }
    }
    return s;
  }

 private:
  template <class T>
  static void read(const nlohmann::json& j, const char* key, T& out, bool required) {
    const auto it = j.find(key);
    if (it == j.end()) {
      if (required) throw FileFormatError(std::string("the required key '") + key + "' is missing");
      return;
    }
    const bool ok = std::is_same_v<T, bool>  ? it->is_boolean()
                    : std::is_integral_v<T> ? it->is_number_integer()
                                            : it->is_number();
    if (!ok)
      throw FileFormatError(std::string("'") + key + "' must be " +
                            (std::is_same_v<T, bool> ? "true or false" : std::is_integral_v<T> ? "an integer" : "a number") +
                            ", got " + it->dump());
    out = it->template get<T>();
  }
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// LoopState: what an exact continuation needs beyond the TrainerState, saved as a checkpoint's loop_state.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/errors.hpp"
#include "torchtrain/grad_scaler.hpp"

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
  std::optional<double> grad_norm;  // inf or NaN after a step whose gradients were not, written as a string
  /// The checkpoint was written at a step after which on_epoch_end follows (the epoch's last step, or a stop):
  /// a resume runs that epoch end first.
  bool epoch_end_pending = false;
  /// The number of processes that wrote the checkpoint.
  int world_size = 1;
  /// The steps of this run's checkpoints that a preemption wrote, which an uninterrupted run does not have.
  std::vector<std::int64_t> preemption_steps;
  /// The loss scaler's state, when the run has one: PyTorch's state_dict keys.
  std::optional<GradScaler::State> grad_scaler;
  /// Training over a stream: the pass over it (the epoch) and the micro-batches taken from it in that pass.
  struct StreamPosition {
    std::int64_t epoch = 0;
    std::int64_t batches = 0;
  };
  std::optional<StreamPosition> stream_position;

  /// The loop_state.json object; world_size only when it is above 1.
  nlohmann::json to_json() const {
    nlohmann::json j{{"interval_loss", interval_loss}, {"total_loss", total_loss}};
    if (world_size > 1) j["world_size"] = world_size;
    j["last_logged_step"] = last_logged_step;
    j["learning_rate"] = learning_rate;
    if (grad_norm) j["grad_norm"] = std::isfinite(*grad_norm) ? nlohmann::json(*grad_norm) : non_finite_text(*grad_norm);
    j["epoch_end_pending"] = epoch_end_pending;
    if (!preemption_steps.empty()) j["preemption_steps"] = preemption_steps;
    if (grad_scaler)
      j["grad_scaler"] = {{"scale", grad_scaler->scale},
                          {"growth_factor", grad_scaler->growth_factor},
                          {"backoff_factor", grad_scaler->backoff_factor},
                          {"growth_interval", grad_scaler->growth_interval},
                          {"_growth_tracker", grad_scaler->growth_tracker}};
    if (stream_position) j["stream_position"] = {{"epoch", stream_position->epoch}, {"batches", stream_position->batches}};
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
    if (const auto it = j.find("grad_norm"); it != j.end()) {
      if (it->is_string())
        s.grad_norm = non_finite_value(*it);
      else
        read(j, "grad_norm", s.grad_norm.emplace(), true);
    }
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
    if (const auto it = j.find("grad_scaler"); it != j.end()) {
      if (!it->is_object()) throw FileFormatError("'grad_scaler' must be an object, got " + it->dump());
      GradScaler::State scaler;
      read(*it, "scale", scaler.scale, true);
      read(*it, "growth_factor", scaler.growth_factor, true);
      read(*it, "backoff_factor", scaler.backoff_factor, true);
      read(*it, "growth_interval", scaler.growth_interval, true);
      read(*it, "_growth_tracker", scaler.growth_tracker, true);
      try {
        (void)GradScaler(scaler);  // its own checks of the values
      } catch (const ArgumentError& e) {
        throw FileFormatError(std::string("'grad_scaler': ") + e.what());
      }
      s.grad_scaler = scaler;
    }
    if (const auto it = j.find("stream_position"); it != j.end()) {
      if (!it->is_object()) throw FileFormatError("'stream_position' must be an object, got " + it->dump());
      StreamPosition position;
      read(*it, "epoch", position.epoch, true);
      read(*it, "batches", position.batches, true);
      if (position.epoch < 0 || position.batches < 0)
        throw FileFormatError("'stream_position' must hold an epoch and a number of batches of at least 0, got " +
                              it->dump());
      s.stream_position = position;
    }
    return s;
  }

 private:
  static nlohmann::json non_finite_text(double value) { return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf"; }
  static double non_finite_value(const nlohmann::json& text) {
    const auto t = text.get<std::string>();
    if (t == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (t == "inf") return std::numeric_limits<double>::infinity();
    if (t == "-inf") return -std::numeric_limits<double>::infinity();
    throw FileFormatError("'grad_norm' must be a number, \"inf\", \"-inf\" or \"nan\", got " + text.dump());
  }

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

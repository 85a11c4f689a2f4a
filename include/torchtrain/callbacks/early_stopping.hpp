// SPDX-License-Identifier: MIT
// EarlyStoppingCallback: stops training when the evaluation metric stops improving.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

/// Stops training after `early_stopping_patience` evaluations in a row that did not improve
/// metric_for_best_model by more than `early_stopping_threshold` over the Trainer's best metric so far.
/// Stateful: the patience counter survives a resume.
class EarlyStoppingCallback : public TrainerCallback {
 public:
  explicit EarlyStoppingCallback(int early_stopping_patience = 1, double early_stopping_threshold = 0.0);

  int early_stopping_patience;
  double early_stopping_threshold;
  int early_stopping_patience_counter = 0;

  void on_train_begin(const Args& args, const State&, Control&, const Context&) override;
  void on_evaluate(const Args& args, const State& state, Control& control, const Context& context) override;
  std::optional<nlohmann::json> state() const override;
  void restore_state(const nlohmann::json& saved) override;

 private:
  static void validate(int patience, double threshold);
  void check_metric_value(const Args& args, const State& state, double value);
};

}  // namespace torchtrain

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/early_stopping.hpp"
#endif

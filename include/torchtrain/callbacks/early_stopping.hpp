// SPDX-License-Identifier: MIT
// EarlyStoppingCallback: stops training when the evaluation metric stops improving.
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

/// Stops training after `early_stopping_patience` evaluations in a row that did not improve
/// metric_for_best_model by more than `early_stopping_threshold` over the Trainer's best metric so far.
/// Stateful: the patience counter survives a resume.
class EarlyStoppingCallback : public TrainerCallback {
 public:
  explicit EarlyStoppingCallback(int early_stopping_patience = 1, double early_stopping_threshold = 0.0)
      : early_stopping_patience(early_stopping_patience), early_stopping_threshold(early_stopping_threshold) {
    validate(early_stopping_patience, early_stopping_threshold);
  }

  int early_stopping_patience;
  double early_stopping_threshold;
  int early_stopping_patience_counter = 0;

  void on_train_begin(const Args& args, const State&, Control&, const Context&) override {
    if (!args.metric_for_best_model)
      throw ArgumentError(
          "EarlyStoppingCallback requires metric_for_best_model to be defined; set "
          "TrainingArguments.metric_for_best_model (e.g. \"loss\" or \"accuracy\")");
    if (args.eval_strategy == IntervalStrategy::no)
      throw ArgumentError(
          "EarlyStoppingCallback requires an evaluation strategy of steps or epoch; set "
          "TrainingArguments.eval_strategy");
    if (!args.load_best_model_at_end)
      detail::warn(
          "Using EarlyStoppingCallback without load_best_model_at_end=true: once training stops, the model "
          "is the latest one, not the best one.");
  }

  void on_evaluate(const Args& args, const State& state, Control& control, const Context& context) override {
    std::string key = args.metric_for_best_model.value_or("loss");
    if (key.rfind("eval_", 0) != 0) key = "eval_" + key;
    const Metrics* metrics = context.metrics;
    if (!metrics || !metrics->contains(key) || !(*metrics)[key].is_number()) {
      detail::warn("early stopping required metric_for_best_model, but did not find " + key +
                   " so early stopping is disabled");
      return;
    }
    check_metric_value(args, state, (*metrics)[key].get<double>());
    if (early_stopping_patience_counter >= early_stopping_patience) control.should_training_stop = true;
  }

  std::optional<nlohmann::json> state() const override {
    return nlohmann::json{
        {"args",
         {{"early_stopping_patience", early_stopping_patience},
          {"early_stopping_threshold", early_stopping_threshold}}},
        {"attributes", {{"early_stopping_patience_counter", early_stopping_patience_counter}}}};
  }

  void restore_state(const nlohmann::json& saved) override {
    // Parse everything before assigning anything, so a malformed state leaves this callback unchanged.
    const auto& args = saved.at("args");
    const int patience = args.at("early_stopping_patience").get<int>();
    const double threshold = args.at("early_stopping_threshold").get<double>();
    const int counter = saved.at("attributes").at("early_stopping_patience_counter").get<int>();
    validate(patience, threshold);
    if (counter < 0)
      throw ArgumentError("EarlyStoppingCallback: early_stopping_patience_counter = " + std::to_string(counter) +
                          " in the saved state must be >= 0");
    early_stopping_patience = patience;
    early_stopping_threshold = threshold;
    early_stopping_patience_counter = counter;
  }

 private:
  static void validate(int patience, double threshold) {
    if (patience < 1)
      throw ArgumentError("EarlyStoppingCallback: early_stopping_patience = " + std::to_string(patience) +
                          " must be at least 1");
    if (!(threshold >= 0.0))
      throw ArgumentError("EarlyStoppingCallback: early_stopping_threshold = " + std::to_string(threshold) +
                          " must be a number >= 0");
  }

  void check_metric_value(const Args& args, const State& state, double value) {
    // Unset greater_is_better follows TrainingArguments' default: higher is better unless the name ends in "loss".
    const std::string name = args.metric_for_best_model.value_or("loss");
    const bool ends_in_loss = name.size() >= 4 && name.compare(name.size() - 4, 4, "loss") == 0;
    const bool greater = args.greater_is_better.value_or(!ends_in_loss);
    const bool improved = state.best_metric && (greater ? value > *state.best_metric : value < *state.best_metric);
    if (!state.best_metric || (improved && std::abs(value - *state.best_metric) > early_stopping_threshold))
      early_stopping_patience_counter = 0;
    else
      ++early_stopping_patience_counter;
  }
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// The definitions of EarlyStoppingCallback (callbacks/early_stopping.hpp).
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/callbacks/early_stopping.hpp"
#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {

TORCHTRAIN_INLINE EarlyStoppingCallback::EarlyStoppingCallback(int early_stopping_patience, double early_stopping_threshold)
    : early_stopping_patience(early_stopping_patience), early_stopping_threshold(early_stopping_threshold) {
  validate(early_stopping_patience, early_stopping_threshold);
}

TORCHTRAIN_INLINE void EarlyStoppingCallback::on_train_begin(const Args& args, const State&, Control&, const Context&) {
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

TORCHTRAIN_INLINE void EarlyStoppingCallback::on_evaluate(const Args& args, const State& state, Control& control,
                                                      const Context& context) {
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

TORCHTRAIN_INLINE std::optional<nlohmann::json> EarlyStoppingCallback::state() const {
  return nlohmann::json{
      {"args",
       {{"early_stopping_patience", early_stopping_patience},
        {"early_stopping_threshold", early_stopping_threshold}}},
      {"attributes", {{"early_stopping_patience_counter", early_stopping_patience_counter}}}};
}

TORCHTRAIN_INLINE void EarlyStoppingCallback::restore_state(const nlohmann::json& saved) {
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

TORCHTRAIN_INLINE void EarlyStoppingCallback::validate(int patience, double threshold) {
  if (patience < 1)
    throw ArgumentError("EarlyStoppingCallback: early_stopping_patience = " + std::to_string(patience) +
                        " must be at least 1");
  if (!(threshold >= 0.0))
    throw ArgumentError("EarlyStoppingCallback: early_stopping_threshold = " + std::to_string(threshold) +
                        " must be a number >= 0");
}

TORCHTRAIN_INLINE void EarlyStoppingCallback::check_metric_value(const Args& args, const State& state, double value) {
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

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// What a hyper-parameter search is made of, without the search loop: directions and objectives, the trial that
// callbacks see, the records of finished trials and the best run. What a pruner such as MedianStoppingCallback
// includes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/errors.hpp"
#include "torchtrain/search_space.hpp"
#include "torchtrain/trainer_state_fields.hpp"
#include "torchtrain/trainer_types.hpp"

namespace torchtrain {

enum class Direction { minimize, maximize };

inline std::string to_string(Direction direction) {
  return direction == Direction::minimize ? "minimize" : "maximize";
}

/// "minimize" or "maximize" (HF's strings); anything else is an ArgumentError.
inline Direction parse_direction(const std::string& text) {
  if (text == "minimize") return Direction::minimize;
  if (text == "maximize") return Direction::maximize;
  throw ArgumentError("direction '" + text + "' is neither minimize nor maximize");
}

/// The number a search optimises, from one evaluation's metrics.
using ObjectiveFunction = std::function<double(const Metrics&)>;

/// HF's default objective: eval_loss if it is the only metric left once `epoch`, `step` and the speed metrics
/// (`*_runtime`, `*_per_second`, `*_compilation_time`) are dropped; otherwise the sum of the metrics left
/// other than eval_loss (with compute_metrics = accuracy, that is eval_accuracy: maximize it).
inline double default_compute_objective(const Metrics& metrics) {
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  std::optional<double> loss;
  double sum = 0;
  std::size_t others = 0;
  for (const auto& [key, value] : metrics.items()) {
    if (key == "epoch" || key == "step" || ends_with(key, "_runtime") || ends_with(key, "_per_second") ||
        ends_with(key, "_compilation_time"))
      continue;
    if (!value.is_number())
      throw ArgumentError("default_compute_objective: metric '" + key + "' is " + value.dump() +
                          ", not a number; pass a compute_objective that reads the metrics you want");
    if (key == "eval_loss") {
      loss = value.get<double>();
    } else {
      sum += value.get<double>();
      ++others;
    }
  }
  if (others > 0) return sum;
  if (!loss)
    throw ArgumentError("default_compute_objective: the evaluation has no eval_loss and no other metric; give the "
                        "Trainer an eval dataset with labels or pass a compute_objective");
  return *loss;
}

enum class TrialState { complete, pruned };

inline std::string to_string(TrialState state) { return state == TrialState::complete ? "complete" : "pruned"; }

/// The objective after one evaluation of a trial.
struct IntermediateObjective {
  std::int64_t step = 0;
  double objective = 0;
};

/// A finished trial, as the results files record it.
struct TrialRecord {
  std::size_t run_id = 0;
  std::string trial_name;
  Trial hyperparameters;
  TrialState state = TrialState::complete;
  double objective = 0;  // after the trial's last evaluation
  std::vector<IntermediateObjective> intermediate_objectives;
  Metrics metrics;  // of the last evaluation
};

/// What hyperparameter_search returns, as HF's BestRun: the best complete trial, and in run_summary the whole
/// search as hp_search_results.json holds it.
struct BestRun {
  std::string run_id;
  double objective = 0;
  Trial hyperparameters;
  nlohmann::json run_summary;
};

/// The trial in progress, as callbacks see it through CallbackContext::trial during a hyperparameter_search
/// (null otherwise). A pruner compares intermediate_objectives() with earlier_trials() and calls prune().
class HyperparameterTrial {
 public:
  HyperparameterTrial(std::size_t run_id, std::string name, Trial hyperparameters, Direction direction,
                      const ObjectiveFunction& objective, const std::vector<TrialRecord>& earlier)
      : run_id_(run_id),
        name_(std::move(name)),
        hyperparameters_(std::move(hyperparameters)),
        direction_(direction),
        objective_(objective),
        earlier_(earlier) {}

  std::size_t run_id() const { return run_id_; }
  const std::string& name() const { return name_; }
  const Trial& hyperparameters() const { return hyperparameters_; }
  Direction direction() const { return direction_; }
  /// The trials finished before this one, in run order.
  const std::vector<TrialRecord>& earlier_trials() const { return earlier_; }

  /// The search's objective of one evaluation's metrics.
  double objective(const Metrics& metrics) const { return objective_(metrics); }

  /// The objective after each evaluation so far, read from the state's log_history, so a trial resumed from a
  /// checkpoint has its earlier evaluations too. Evaluation entries of one step (several eval sets) count as one.
  std::vector<IntermediateObjective> intermediate_objectives(const TrainerState& state) const {
    std::vector<IntermediateObjective> out;
    for (const auto& [step, metrics] : evaluations(state)) out.push_back({step, objective(metrics)});
    return out;
  }

  /// Marks the trial pruned; the pruner also sets control.should_training_stop.
  void prune() { pruned_ = true; }
  bool pruned() const { return pruned_; }

  /// The record of the trial once training (and the closing evaluation, if none ran) is over.
  TrialRecord finish(const TrainerState& state) const {
    const auto evals = evaluations(state);
    if (evals.empty())
      throw Error("hyperparameter_search: trial " + name_ +
                  " ended without an evaluation to compute its objective from");
    TrialRecord record;
    record.run_id = run_id_;
    record.trial_name = name_;
    record.hyperparameters = hyperparameters_;
    record.state = pruned_ ? TrialState::pruned : TrialState::complete;
    for (const auto& [step, metrics] : evals) record.intermediate_objectives.push_back({step, objective(metrics)});
    record.objective = record.intermediate_objectives.back().objective;
    record.metrics = evals.back().second;
    return record;
  }

 private:
  // The evaluation entries of log_history (those with <prefix>_runtime and <prefix>_samples_per_second, prefix
  // not "train"), merged by step, without "step".
  static std::vector<std::pair<std::int64_t, Metrics>> evaluations(const TrainerState& state) {
    std::vector<std::pair<std::int64_t, Metrics>> out;
    for (const auto& entry : state.log_history) {
      bool is_evaluation = false;
      for (const auto& [key, value] : entry.items()) {
        const auto cut = key.rfind("_runtime");
        if (cut == std::string::npos || cut + 8 != key.size() || key == "train_runtime") continue;
        if (entry.contains(key.substr(0, cut) + "_samples_per_second")) is_evaluation = true;
      }
      if (!is_evaluation) continue;
      const std::int64_t step = entry.value("step", std::int64_t{0});
      if (out.empty() || out.back().first != step) out.emplace_back(step, Metrics::object());
      for (const auto& [key, value] : entry.items())
        if (key != "step") out.back().second[key] = value;
    }
    return out;
  }

  std::size_t run_id_;
  std::string name_;
  Trial hyperparameters_;
  Direction direction_;
  const ObjectiveFunction& objective_;
  const std::vector<TrialRecord>& earlier_;
  bool pruned_ = false;
};

/// Names a trial's folder under output_dir; the default is "run-<run_id>".
using TrialNameFunction = std::function<std::string(const Trial&, std::size_t run_id)>;

}  // namespace torchtrain

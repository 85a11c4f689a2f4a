// SPDX-License-Identifier: MIT
// Hyper-parameter search: objectives, the trial that callbacks see, trial records, the results files and the
// search loop behind Trainer::hyperparameter_search.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/search_space.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/trainer_state.hpp"

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

namespace detail {

inline nlohmann::json trial_to_json(const TrialRecord& r) {
  nlohmann::json intermediate = nlohmann::json::array();
  for (const auto& i : r.intermediate_objectives)
    intermediate.push_back({{"step", i.step}, {"objective", i.objective}});
  return {{"run_id", r.run_id},
          {"trial_name", r.trial_name},
          {"state", to_string(r.state)},
          {"objective", r.objective},
          {"hyperparameters", r.hyperparameters},
          {"intermediate_objectives", std::move(intermediate)},
          {"metrics", nlohmann::json(r.metrics)}};
}

inline TrialRecord trial_from_json(const nlohmann::json& j, const std::string& path) {
  try {
    TrialRecord r;
    r.run_id = j.at("run_id").get<std::size_t>();
    r.trial_name = j.at("trial_name").get<std::string>();
    const auto state = j.at("state").get<std::string>();
    if (state != "complete" && state != "pruned") throw std::runtime_error("state '" + state + "'");
    r.state = state == "complete" ? TrialState::complete : TrialState::pruned;
    r.objective = j.at("objective").is_null() ? std::nan("") : j.at("objective").get<double>();
    r.hyperparameters = j.at("hyperparameters").get<Trial>();
    for (const auto& i : j.at("intermediate_objectives")) {
      const auto& objective = i.at("objective");
      r.intermediate_objectives.push_back(
          {i.at("step").get<std::int64_t>(), objective.is_null() ? std::nan("") : objective.get<double>()});
    }
    r.metrics = j.at("metrics");
    return r;
  } catch (const std::exception& e) {
    throw FileFormatError(path + ": a trial entry cannot be read (" + e.what() + "); delete the file to start over");
  }
}

// A CSV field: the value's text (strings unquoted), quoted when it holds a comma, a quote or a line break.
inline std::string csv_field(const nlohmann::json& value) {
  std::string text = value.is_string() ? value.get<std::string>() : value.dump();
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

/// Runs trials 0..n-1 of a search, skipping those hp_search_results.json already records, and rewrites the
/// results files after each trial.
class HyperparameterSearch {
 public:
  HyperparameterSearch(SearchSpace space, int n_trials, Direction direction, Sampler sampler,
                       ObjectiveFunction objective, TrialNameFunction hp_name, std::filesystem::path output_dir)
      : space_(std::move(space)),
        direction_(direction),
        sampler_(std::move(sampler)),
        objective_(objective ? std::move(objective) : ObjectiveFunction(default_compute_objective)),
        hp_name_(std::move(hp_name)),
        output_dir_(std::move(output_dir)) {
    if (space_.empty()) throw ArgumentError("hyperparameter_search: the search space is empty; add a parameter");
    if (n_trials < 1)
      throw ArgumentError("hyperparameter_search: n_trials is " + std::to_string(n_trials) + "; it must be at least 1");
    const std::size_t available = sampler_.size(space_);
    n_trials_ = std::min(static_cast<std::size_t>(n_trials), available);
    if (sampler_.kind() == Sampler::Kind::grid && n_trials_ < available)
      detail::warn("hyperparameter_search: the grid has " + std::to_string(available) + " points; n_trials " +
                   std::to_string(n_trials) + " runs only the first " + std::to_string(n_trials_));
    search_ = {{"hp_space", space_.to_json()}, {"sampler", sampler_.to_json()}, {"direction", to_string(direction_)}};
  }

  std::filesystem::path json_path() const { return output_dir_ / "hp_search_results.json"; }
  std::filesystem::path csv_path() const { return output_dir_ / "hp_search_results.csv"; }

  /// `run_trial(HyperparameterTrial&)` trains one trial and returns its record.
  template <class RunTrial>
  BestRun run(RunTrial&& run_trial) {
    load_previous();
    for (std::size_t k = records_.size(); k < n_trials_; ++k) {
      Trial params = sampler_.sample(space_, k);
      HyperparameterTrial trial(k, trial_name(params, k), params, direction_, objective_, records_);
      records_.push_back(run_trial(trial));
      save();
    }
    return best_run();
  }

 private:
  std::string trial_name(const Trial& params, std::size_t k) const {
    std::string name = hp_name_ ? hp_name_(params, k) : "run-" + std::to_string(k);
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
      throw ArgumentError("hyperparameter_search: hp_name returned '" + name +
                          "' for trial " + std::to_string(k) + "; it must be a plain folder name");
    for (const auto& r : records_)
      if (r.trial_name == name)
        throw ArgumentError("hyperparameter_search: hp_name returned '" + name + "' for trials " +
                            std::to_string(r.run_id) + " and " + std::to_string(k) + "; each trial needs its own name");
    return name;
  }

  // Reads the trials a previous run of this search finished; a results file of another search is an error.
  void load_previous() {
    const auto path = json_path();
    if (!std::filesystem::exists(path)) return;
    nlohmann::json saved;
    try {
      std::ifstream in(path);
      saved = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw FileFormatError(path.string() + " is not valid JSON (" + e.what() +
                            "); delete it to start the search over");
    }
    for (const char* key : {"hp_space", "sampler", "direction"}) {
      if (!saved.is_object() || !saved.contains(key))
        throw FileFormatError(path.string() + " has no \"" + key + "\"; delete it to start the search over");
      if (saved[key] != search_[key])
        throw ArgumentError(path.string() + " records a search with another " + key + " (" + saved[key].dump() +
                            ", now " + search_[key].dump() + "); search in another output_dir, or delete the results "
                            "files to start over");
    }
    if (!saved.contains("trials") || !saved["trials"].is_array())
      throw FileFormatError(path.string() + " has no \"trials\" list; delete it to start the search over");
    for (const auto& entry : saved["trials"]) {
      TrialRecord r = trial_from_json(entry, path.string());
      const std::size_t k = records_.size();
      if (r.run_id != k)
        throw FileFormatError(path.string() + ": trial " + std::to_string(k) + " has run_id " +
                              std::to_string(r.run_id) + "; delete the file to start the search over");
      if (nlohmann::json(r.hyperparameters) != nlohmann::json(sampler_.sample(space_, k)))
        throw ArgumentError(path.string() + ": trial " + std::to_string(k) + " has hyperparameters " +
                            nlohmann::json(r.hyperparameters).dump() + " but the sampler now gives " +
                            nlohmann::json(sampler_.sample(space_, k)).dump() +
                            "; search in another output_dir, or delete the results files to start over");
      records_.push_back(std::move(r));
    }
  }

  std::optional<std::size_t> best_index() const {
    std::optional<std::size_t> best;
    for (std::size_t i = 0; i < records_.size(); ++i) {
      const auto& r = records_[i];
      if (r.state != TrialState::complete || std::isnan(r.objective)) continue;
      const double b = best ? records_[*best].objective : 0;
      if (!best || (direction_ == Direction::minimize ? r.objective < b : r.objective > b)) best = i;
    }
    return best;
  }

  nlohmann::json summary() const {
    nlohmann::json out = search_;
    nlohmann::json trials = nlohmann::json::array();
    for (const auto& r : records_) trials.push_back(trial_to_json(r));
    out["trials"] = std::move(trials);
    if (auto b = best_index())
      out["best_run"] = {{"run_id", std::to_string(*b)},
                         {"trial_name", records_[*b].trial_name},
                         {"objective", records_[*b].objective},
                         {"hyperparameters", records_[*b].hyperparameters}};
    else
      out["best_run"] = nullptr;
    return out;
  }

  std::string csv() const {
    std::ostringstream out;
    out << "run_id,trial_name,state,objective";
    for (const auto& [name, distribution] : space_.parameters()) out << "," << csv_field(name);
    out << ",intermediate_objectives\n";
    for (const auto& r : records_) {
      out << r.run_id << "," << csv_field(r.trial_name) << "," << to_string(r.state) << ","
          << csv_field(nlohmann::json(r.objective));
      for (const auto& [name, distribution] : space_.parameters()) out << "," << csv_field(r.hyperparameters.at(name));
      std::string steps;
      for (const auto& i : r.intermediate_objectives)
        steps += (steps.empty() ? "" : " ") + std::to_string(i.step) + ":" + nlohmann::json(i.objective).dump();
      out << "," << csv_field(steps) << "\n";
    }
    return out.str();
  }

  // Both files through a temporary sibling and a rename: a crash leaves the previous complete version.
  void save() const {
    std::filesystem::create_directories(output_dir_);
    detail::write_file_atomically(json_path(), summary().dump(2) + "\n");
    detail::write_file_atomically(csv_path(), csv());
  }

  BestRun best_run() const {
    const auto b = best_index();
    if (!b)
      throw Error("hyperparameter_search: no trial completed (all pruned or with a NaN objective); see " +
                  json_path().string());
    return {std::to_string(*b), records_[*b].objective, records_[*b].hyperparameters, summary()};
  }

  SearchSpace space_;
  std::size_t n_trials_ = 0;
  Direction direction_;
  Sampler sampler_;
  ObjectiveFunction objective_;
  TrialNameFunction hp_name_;
  std::filesystem::path output_dir_;
  nlohmann::json search_;
  std::vector<TrialRecord> records_;
};

}  // namespace detail
}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// The search loop behind Trainer::hyperparameter_search: runs the trials, and keeps hp_search_results.json and
// .csv, which let a search that was stopped continue.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
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
#include "torchtrain/hyperparameter_trial.hpp"
#include "torchtrain/search_space.hpp"

namespace torchtrain::detail {

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

}  // namespace torchtrain::detail

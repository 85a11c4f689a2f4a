// SPDX-License-Identifier: MIT
// TrainerState, the struct: what the loop knows about the run so far, as callbacks read it. Reading and writing
// trainer_state.json, and compute_steps, are declared here and defined in trainer_state.hpp, which a
// translation unit that calls them includes.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/trainer_types.hpp"

namespace torchtrain {

struct TrainingArguments;

/// One step is one optimizer update: with gradient_accumulation_steps = n it takes n batches. Saved in every
/// checkpoint as Hugging Face's trainer_state.json, under these names.
struct TrainerState {
  std::optional<double> epoch = 0.0;  // epochs done, the fraction the share of the current one done; 0
                                      // before training, as in HF v5 (null in older files)
  std::int64_t global_step = 0;       // optimizer steps done, those before a resume included
  std::int64_t max_steps = 0;         // optimizer steps the current train() runs to
  // The run's intervals in steps: the arguments' *_steps, with ratios below 1 turned into step counts.
  std::int64_t logging_steps = 500;              // log every this many steps (logging_strategy steps)
  std::int64_t eval_steps = 500;                 // evaluate every this many steps (eval_strategy steps)
  std::int64_t save_steps = 500;                 // save every this many steps (save_strategy steps)
  std::optional<std::int64_t> train_batch_size;  // the per-device training batch size; unset before train()
  std::int64_t num_train_epochs = 0;             // epochs the current train() covers, the last maybe partial
  // Counters Hugging Face keeps.
  std::int64_t num_input_tokens_seen = 0;  // input tokens consumed, with include_num_input_tokens_seen; else 0
  double total_flos = 0.0;                 // floating-point operations: not counted, 0 unless read from a file
  std::vector<LogEntry> log_history;       // every log() entry of the run so far, each with its "step"
  // The best model, when metric_for_best_model is set.
  std::optional<double> best_metric;                 // the best value of that metric so far
  std::optional<std::int64_t> best_global_step;      // the step whose evaluation gave it
  std::optional<std::string> best_model_checkpoint;  // the folder of the checkpoint saved at that step
  // Processes (see distributed.hpp); in a single process both are true.
  bool is_local_process_zero = true;  // the main process of this machine
  bool is_world_process_zero = true;  // the one main process of the run, the one that writes shared files
  // Hyper-parameter search (Trainer::hyperparameter_search).
  bool is_hyper_param_search = false;     // a trial of a search is training
  std::optional<std::string> trial_name;  // that trial's name, also its folder under output_dir
  nlohmann::json trial_params;            // null, or an object of that trial's hyper-parameter values
  // Class name -> {"args", "attributes"}, or a list of those when several instances of a class exist: the saved
  // states of the stateful callbacks (and of TrainerControl), restored on resume.
  nlohmann::json stateful_callbacks = nlohmann::json::object();
  // Keys this version does not know, kept so that a save does not lose them.
  nlohmann::json unknown_fields = nlohmann::json::object();

  /// The trainer_state.json object: every field under its own name, unset optionals as null, unknown keys kept.
  nlohmann::json to_json() const {
    nlohmann::json j = fields_to_json();
    nlohmann::json& history = j["log_history"] = nlohmann::json::array();
    for (const LogEntry& entry : log_history) history.push_back(nlohmann::json(entry));
    return j;
  }

  /// Stores the states of the live stateful callbacks, given in callback-list order: one entry per class, a
  /// plain state for a single instance, a list for several. The entry of each given class is replaced; entries
  /// of other classes stay, since they may belong to callbacks that are not attached now.
  void set_stateful_callback_states(const std::vector<std::pair<std::string, nlohmann::json>>& states_in_list_order) {
    std::map<std::string, std::vector<const nlohmann::json*>> by_class;
    for (const auto& [name, state] : states_in_list_order) by_class[name].push_back(&state);
    if (!stateful_callbacks.is_object()) stateful_callbacks = nlohmann::json::object();
    for (const auto& [name, states] : by_class) {
      if (states.size() == 1) {
        stateful_callbacks[name] = *states.front();
        continue;
      }
      nlohmann::json list = nlohmann::json::array();
      for (const nlohmann::json* state : states) list.push_back(*state);
      stateful_callbacks[name] = std::move(list);
    }
  }

  /// The saved states of `class_name`, in callback-list order; empty when there are none.
  std::vector<nlohmann::json> stateful_callback_states(const std::string& class_name) const {
    if (!stateful_callbacks.is_object()) return {};
    const auto it = stateful_callbacks.find(class_name);
    if (it == stateful_callbacks.end()) return {};
    if (it->is_array()) return std::vector<nlohmann::json>(it->begin(), it->end());
    return std::vector<nlohmann::json>(1, *it);
  }

  // The members below are defined in trainer_state.hpp (or, with torchtrain::compiled, in the library). Header-only,
  // their return types are deduced (TORCHTRAIN_DEDUCED; the type is in each comment), so a call compiles only
  // after their definitions: a translation unit that sees this struct alone cannot call one it lacks.

  /// -> TrainerState. Reads a trainer_state.json object. Missing keys keep their defaults (older files lack
  /// some); unknown keys go to unknown_fields with a warning. Throws FileFormatError naming `source` and the key
  /// on a wrong type.
  static TORCHTRAIN_DEDUCED(TrainerState) from_json(const nlohmann::json& json, const std::string& source);
  /// -> std::string. The file's text, byte for byte what Hugging Face writes for the same state.
  TORCHTRAIN_DEDUCED(std::string) to_json_string() const;
  /// -> void. Writes to_json_string() to `path`.
  TORCHTRAIN_DEDUCED(void) save_to_json(const std::string& path) const;
  /// -> TrainerState. from_json() on the file at `path`.
  static TORCHTRAIN_DEDUCED(TrainerState) load_from_json(const std::string& path);

  /// -> void. Sets logging_steps, eval_steps and save_steps from the arguments; values below 1 are ratios of
  /// total_steps.
  TORCHTRAIN_DEDUCED(void) compute_steps(const TrainingArguments& args, std::int64_t total_steps);

 private:
  // to_json() without log_history, which may be long.
  nlohmann::json fields_to_json() const {
    const auto or_null = [](const auto& value) { return value ? nlohmann::json(*value) : nlohmann::json(nullptr); };
    nlohmann::json j = unknown_fields.is_object() ? unknown_fields : nlohmann::json::object();
    j.erase("log_history");
    // HF v5's default epoch is the int 0, written as 0; once a step is taken it is a float.
    j["epoch"] = epoch == 0.0 ? nlohmann::json(0) : or_null(epoch);
    j["global_step"] = global_step;
    j["max_steps"] = max_steps;
    j["logging_steps"] = logging_steps;
    j["eval_steps"] = eval_steps;
    j["save_steps"] = save_steps;
    j["train_batch_size"] = or_null(train_batch_size);
    j["num_train_epochs"] = num_train_epochs;
    j["num_input_tokens_seen"] = num_input_tokens_seen;
    j["total_flos"] = total_flos;
    j["best_metric"] = or_null(best_metric);
    j["best_global_step"] = or_null(best_global_step);
    j["best_model_checkpoint"] = or_null(best_model_checkpoint);
    j["is_local_process_zero"] = is_local_process_zero;
    j["is_world_process_zero"] = is_world_process_zero;
    j["is_hyper_param_search"] = is_hyper_param_search;
    j["trial_name"] = or_null(trial_name);
    j["trial_params"] = trial_params;
    j["stateful_callbacks"] = stateful_callbacks;
    return j;
  }
};

}  // namespace torchtrain

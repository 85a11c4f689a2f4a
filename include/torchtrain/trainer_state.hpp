// SPDX-License-Identifier: MIT
// TrainerState: what the loop knows about the run so far, saved as Hugging Face's trainer_state.json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// One log() call: keys in insertion order, values are numbers or strings.
using LogEntry = nlohmann::ordered_json;

struct TrainerState {
  std::optional<double> epoch;  // fractional epoch; unset before training
  std::int64_t global_step = 0;
  std::int64_t max_steps = 0;
  std::int64_t logging_steps = 500;
  std::int64_t eval_steps = 500;
  std::int64_t save_steps = 500;
  std::optional<std::int64_t> train_batch_size;
  std::int64_t num_train_epochs = 0;
  std::int64_t num_input_tokens_seen = 0;
  double total_flos = 0.0;
  std::vector<LogEntry> log_history;
  std::optional<double> best_metric;
  std::optional<std::int64_t> best_global_step;
  std::optional<std::string> best_model_checkpoint;
  bool is_local_process_zero = true;
  bool is_world_process_zero = true;
  bool is_hyper_param_search = false;
  std::optional<std::string> trial_name;
  nlohmann::json trial_params;  // null, or an object of hyper-parameter values
  // Class name -> {"args", "attributes"}, or a list of those when several instances of a class exist.
  nlohmann::json stateful_callbacks = nlohmann::json::object();
  // Keys this version does not know, kept so that a save does not lose them.
  nlohmann::json unknown_fields = nlohmann::json::object();
};

}  // namespace torchtrain

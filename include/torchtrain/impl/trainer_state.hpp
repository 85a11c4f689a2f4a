// SPDX-License-Identifier: MIT
// The definitions of TrainerState's trainer_state.json reading and writing and of compute_steps (declared in
// trainer_state_fields.hpp): inline through trainer_state.hpp, or compiled once into torchtrain::compiled.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/trainer_state_reader.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"
#include "torchtrain/trainer_state_fields.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

TORCHTRAIN_DEDUCED(TrainerState) TrainerState::from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object())
    throw FileFormatError(source + ": the top level must be a JSON object holding the trainer state, got " +
                          json.type_name() + "; is this really a trainer_state.json?");
  TrainerState state;
  detail::TrainerStateReader r(json, source);
  r.read("epoch", state.epoch);
  r.read("global_step", state.global_step);
  r.read("max_steps", state.max_steps);
  r.read("logging_steps", state.logging_steps);
  r.read("eval_steps", state.eval_steps);
  r.read("save_steps", state.save_steps);
  r.read("train_batch_size", state.train_batch_size);
  r.read("num_train_epochs", state.num_train_epochs);
  r.read("num_input_tokens_seen", state.num_input_tokens_seen);
  r.read("total_flos", state.total_flos);
  if (const auto* history = r.find("log_history")) {
    if (!history->is_array()) r.fail("\"log_history\"", "a list of objects", *history);
    state.log_history.reserve(history->size());
    for (std::size_t i = 0; i < history->size(); ++i) {
      const nlohmann::json& entry = (*history)[i];
      if (!entry.is_object()) r.fail("log_history[" + std::to_string(i) + "]", "an object", entry);
      state.log_history.emplace_back(entry);
    }
  }
  r.read("best_metric", state.best_metric);
  r.read("best_global_step", state.best_global_step);
  r.read("best_model_checkpoint", state.best_model_checkpoint);
  r.read("is_local_process_zero", state.is_local_process_zero);
  r.read("is_world_process_zero", state.is_world_process_zero);
  r.read("is_hyper_param_search", state.is_hyper_param_search);
  r.read("trial_name", state.trial_name);
  if (const auto* params = r.find("trial_params")) {
    if (!params->is_null() && !params->is_object()) r.fail("\"trial_params\"", "an object or null", *params);
    state.trial_params = *params;
  }
  if (const auto* callbacks = r.find("stateful_callbacks")) {
    if (!callbacks->is_object()) r.fail("\"stateful_callbacks\"", "an object keyed by callback class", *callbacks);
    for (const auto& [name, saved] : callbacks->items()) {
      const bool valid = saved.is_object() || (saved.is_array() && std::all_of(saved.begin(), saved.end(),
                                                                               [](const nlohmann::json& s) {
                                                                                 return s.is_object();
                                                                               }));
      if (!valid) r.fail("stateful_callbacks[\"" + name + "\"]", "an object or a list of objects", saved);
    }
    state.stateful_callbacks = *callbacks;
  }
  state.unknown_fields = r.unknown();
  if (!state.unknown_fields.empty()) {
    std::string names;
    for (const auto& item : state.unknown_fields.items()) names += (names.empty() ? "\"" : ", \"") + item.key() + '"';
    detail::warn(source + ": unknown keys " + names +
                 " (written by a newer version?) are kept as they are and saved back unchanged");
  }
  return state;
}

TORCHTRAIN_DEDUCED(std::string) TrainerState::to_json_string() const {
  return detail::dump_python_json_with_list(fields_to_json(), "log_history", log_history);
}

TORCHTRAIN_DEDUCED(void) TrainerState::save_to_json(const std::string& path) const {
  detail::write_text_file(path, to_json_string());
}

TORCHTRAIN_DEDUCED(TrainerState) TrainerState::load_from_json(const std::string& path) {
  return from_json(detail::parse_python_json(detail::read_text_file(path), path), path);
}

TORCHTRAIN_DEDUCED(void) TrainerState::compute_steps(const TrainingArguments& args, std::int64_t total_steps) {
  const auto absolute = [total_steps](double steps) {
    return static_cast<std::int64_t>(steps < 1 ? std::ceil(static_cast<double>(total_steps) * steps) : steps);
  };
  logging_steps = absolute(args.logging_steps);
  // As in HF's TrainingArguments, eval_steps unset (or 0) under the steps strategy means logging_steps.
  std::optional<double> eval = args.eval_steps;
  if (args.eval_strategy == IntervalStrategy::steps && (!eval || *eval == 0)) eval = args.logging_steps;
  if (eval) eval_steps = absolute(*eval);
  save_steps = absolute(args.save_steps);
}

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// TrainerState: what the loop knows about the run so far, saved as Hugging Face's trainer_state.json.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"
#include "torchtrain/trainer_types.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

struct TrainerState {
  std::optional<double> epoch = 0.0;  // fractional epoch; 0 before training, as in HF v5 (null in older files)
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

  /// The trainer_state.json object: every field under its own name, unset optionals as null, unknown keys kept.
  nlohmann::json to_json() const;
  /// Reads a trainer_state.json object. Missing keys keep their defaults (older files lack some); unknown keys
  /// go to unknown_fields with a warning. Throws FileFormatError naming `source` and the key on a wrong type.
  static TrainerState from_json(const nlohmann::json& json, const std::string& source);
  /// The file's text, byte for byte what Hugging Face writes for the same state.
  std::string to_json_string() const;
  void save_to_json(const std::string& path) const;
  static TrainerState load_from_json(const std::string& path);

  /// Sets logging_steps, eval_steps and save_steps from the arguments; values below 1 are ratios of total_steps.
  void compute_steps(const TrainingArguments& args, std::int64_t total_steps);

  /// Stores the states of the live stateful callbacks, given in callback-list order: one entry per class, a
  /// plain state for a single instance, a list for several. The entry of each given class is replaced; entries
  /// of other classes stay, since they may belong to callbacks that are not attached now.
  void set_stateful_callback_states(const std::vector<std::pair<std::string, nlohmann::json>>& states_in_list_order);
  /// The saved states of `class_name`, in callback-list order; empty when there are none.
  std::vector<nlohmann::json> stateful_callback_states(const std::string& class_name) const;

 private:
  nlohmann::json fields_to_json() const;  // to_json() without log_history, which may be long
};

namespace detail {

// Reads the fields of one trainer_state.json object, remembering which keys it was asked for.
class TrainerStateReader {
 public:
  TrainerStateReader(const nlohmann::json& object, const std::string& source) : object_(object), source_(source) {}

  // nullptr when the key is absent.
  const nlohmann::json* find(std::string_view key) {
    known_.emplace_back(key);
    const auto it = object_.find(std::string(key));
    return it == object_.end() ? nullptr : &*it;
  }

  [[noreturn]] void fail(const std::string& where, const std::string& expected, const nlohmann::json& got) const {
    // nlohmann would show NaN as null.
    std::string shown = got.is_number_float() ? python_float_repr(got.get<double>())
                                              : got.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    throw FileFormatError(source_ + ": " + where + " must be " + expected + ", got " + got.type_name() + " " +
                          shown + "; fix the value, or remove the key to use the default");
  }

  void read(std::string_view key, std::int64_t& out) {
    if (const auto* v = find(key)) out = integer(*v, std::string(key));
  }
  void read(std::string_view key, std::optional<std::int64_t>& out) {
    if (const auto* v = find(key)) out = v->is_null() ? std::nullopt : std::optional(integer(*v, std::string(key)));
  }
  void read(std::string_view key, double& out) {
    if (const auto* v = find(key)) out = number(*v, std::string(key));
  }
  void read(std::string_view key, std::optional<double>& out) {
    if (const auto* v = find(key)) out = v->is_null() ? std::nullopt : std::optional(number(*v, std::string(key)));
  }
  void read(std::string_view key, bool& out) {
    if (const auto* v = find(key)) {
      if (!v->is_boolean()) fail('"' + std::string(key) + '"', "true or false", *v);
      out = v->get<bool>();
    }
  }
  void read(std::string_view key, std::optional<std::string>& out) {
    if (const auto* v = find(key)) {
      if (!v->is_null() && !v->is_string()) fail('"' + std::string(key) + '"', "a string or null", *v);
      out = v->is_null() ? std::nullopt : std::optional(v->get<std::string>());
    }
  }

  // Integral floats such as 2.0 are accepted: they are what a tool that writes every number as a float produces.
  std::int64_t integer(const nlohmann::json& v, const std::string& where) const {
    if (v.is_number_unsigned()) {
      if (v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail('"' + where + '"', "an integer that fits in 64 bits", v);
      return static_cast<std::int64_t>(v.get<std::uint64_t>());
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 0x1p63) return static_cast<std::int64_t>(d);
    }
    fail('"' + where + '"', "an integer", v);
  }

  double number(const nlohmann::json& v, const std::string& where) const {
    if (!v.is_number()) fail('"' + where + '"', "a number", v);
    return v.get<double>();
  }

  // The keys of the object that no read asked for.
  nlohmann::json unknown() const {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, value] : object_.items())
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) out[key] = value;
    return out;
  }

 private:
  const nlohmann::json& object_;
  const std::string& source_;
  std::vector<std::string> known_;
};

template <class T>
nlohmann::json value_or_null(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

}  // namespace detail

inline nlohmann::json TrainerState::to_json() const {
  nlohmann::json j = fields_to_json();
  nlohmann::json& history = j["log_history"] = nlohmann::json::array();
  for (const LogEntry& entry : log_history) history.push_back(nlohmann::json(entry));
  return j;
}

inline nlohmann::json TrainerState::fields_to_json() const {
  nlohmann::json j = unknown_fields.is_object() ? unknown_fields : nlohmann::json::object();
  j.erase("log_history");
  // HF v5's default epoch is the int 0, written as 0; once a step is taken it is a float.
  j["epoch"] = epoch == 0.0 ? nlohmann::json(0) : detail::value_or_null(epoch);
  j["global_step"] = global_step;
  j["max_steps"] = max_steps;
  j["logging_steps"] = logging_steps;
  j["eval_steps"] = eval_steps;
  j["save_steps"] = save_steps;
  j["train_batch_size"] = detail::value_or_null(train_batch_size);
  j["num_train_epochs"] = num_train_epochs;
  j["num_input_tokens_seen"] = num_input_tokens_seen;
  j["total_flos"] = total_flos;
  j["best_metric"] = detail::value_or_null(best_metric);
  j["best_global_step"] = detail::value_or_null(best_global_step);
  j["best_model_checkpoint"] = detail::value_or_null(best_model_checkpoint);
  j["is_local_process_zero"] = is_local_process_zero;
  j["is_world_process_zero"] = is_world_process_zero;
  j["is_hyper_param_search"] = is_hyper_param_search;
  j["trial_name"] = detail::value_or_null(trial_name);
  j["trial_params"] = trial_params;
  j["stateful_callbacks"] = stateful_callbacks;
  return j;
}

inline TrainerState TrainerState::from_json(const nlohmann::json& json, const std::string& source) {
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

inline std::string TrainerState::to_json_string() const {
  return detail::dump_python_json_with_list(fields_to_json(), "log_history", log_history);
}

inline void TrainerState::save_to_json(const std::string& path) const {
  detail::write_text_file(path, to_json_string());
}

inline TrainerState TrainerState::load_from_json(const std::string& path) {
  return from_json(detail::parse_python_json(detail::read_text_file(path), path), path);
}

inline void TrainerState::compute_steps(const TrainingArguments& args, std::int64_t total_steps) {
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

inline void TrainerState::set_stateful_callback_states(
    const std::vector<std::pair<std::string, nlohmann::json>>& states_in_list_order) {
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

inline std::vector<nlohmann::json> TrainerState::stateful_callback_states(const std::string& class_name) const {
  if (!stateful_callbacks.is_object()) return {};
  const auto it = stateful_callbacks.find(class_name);
  if (it == stateful_callbacks.end()) return {};
  if (it->is_array()) return std::vector<nlohmann::json>(it->begin(), it->end());
  return std::vector<nlohmann::json>(1, *it);
}

}  // namespace torchtrain

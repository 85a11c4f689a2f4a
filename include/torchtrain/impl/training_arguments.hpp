// SPDX-License-Identifier: MIT
// The definitions of TrainingArguments' validation, JSON round trip and TrainingArguments::parse (declared in
// training_arguments_fields.hpp): inline through training_arguments.hpp, or compiled once into torchtrain::compiled.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/argument_fields.hpp"
#include "torchtrain/detail/argument_parsing.hpp"
#include "torchtrain/detail/argument_value.hpp"
#include "torchtrain/detail/edit_distance.hpp"
#include "torchtrain/detail/optimizer_names.hpp"
#include "torchtrain/detail/reporter_names.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

TORCHTRAIN_DEDUCED(void) TrainingArguments::validate() {
  using detail::format_number;
  const auto fail = [](std::string_view field, const std::string& value, const std::string& why) {
    throw ArgumentError("TrainingArguments." + std::string(field) + " = " + value + ": " + why);
  };
  const auto at_least = [&](std::string_view field, double value, double minimum, const std::string& why) {
    if (value < minimum) fail(field, format_number(value), why);
  };

  // JSON cannot hold NaN or infinity, and no field means anything with them.
  for (const auto& field : detail::argument_fields<TrainingArguments>()) {
    std::visit(
        [&](auto member) {
          using T = std::decay_t<decltype(this->*member)>;
          if constexpr (std::is_same_v<T, double>) {
            if (!std::isfinite(this->*member))
              fail(field.name, format_number(this->*member), "must be a finite number");
          } else if constexpr (std::is_same_v<T, std::optional<double>>) {
            const auto& value = this->*member;
            if (value && !std::isfinite(*value)) fail(field.name, format_number(*value), "must be a finite number");
          }
        },
        field.member);
  }

  // Optimizer.
  if (std::find(detail::kOptimizerNames.begin(), detail::kOptimizerNames.end(), optim) == detail::kOptimizerNames.end())
    throw ArgumentError(detail::unknown_optimizer(optim));
  detail::parse_optim_args(optim_args, optim);  // throws naming what is wrong

  // Sequences and evaluation outputs.
  if (train_sampling_strategy != "random" && train_sampling_strategy != "sequential" &&
      train_sampling_strategy != "group_by_length")
    fail("train_sampling_strategy", "\"" + train_sampling_strategy + "\"", "choose random, sequential or group_by_length");
  if (!(label_smoothing_factor >= 0 && label_smoothing_factor < 1))
    fail("label_smoothing_factor", format_number(label_smoothing_factor), "must be at least 0 and below 1");
  if (include_num_input_tokens_seen == "true") include_num_input_tokens_seen = "all";  // HF maps the bools
  if (include_num_input_tokens_seen == "false") include_num_input_tokens_seen = "no";
  if (include_num_input_tokens_seen != "no" && include_num_input_tokens_seen != "all" &&
      include_num_input_tokens_seen != "non_padding")
    fail("include_num_input_tokens_seen", "\"" + include_num_input_tokens_seen + "\"", "choose no, all or non_padding");
  if (eval_accumulation_steps && *eval_accumulation_steps < 1)
    fail("eval_accumulation_steps", std::to_string(*eval_accumulation_steps), "must be at least 1, or none");
  for (const auto& what : include_for_metrics)
    if (what != "inputs" && what != "loss")
      fail("include_for_metrics", "\"" + what + "\"", "choose from inputs, loss");

  at_least("ddp_timeout", static_cast<double>(ddp_timeout), 1,
           "must be at least 1 second; it bounds how long a process waits for the others");
  if (output_dir.empty())
    fail("output_dir", "\"\"", "give the folder for checkpoints and outputs, e.g. --output_dir out");

  // Length of training.
  if (max_steps == 0 || max_steps < -1)
    fail("max_steps", std::to_string(max_steps),
         "must be -1 (train for num_train_epochs) or a positive number of optimizer steps");
  at_least("num_train_epochs", num_train_epochs, 0, "must be >= 0");
  if (max_steps < 0 && num_train_epochs <= 0)
    fail("num_train_epochs", format_number(num_train_epochs),
         "must be > 0 when max_steps is -1; set num_train_epochs > 0 or max_steps > 0");

  // Batching and data loading.
  at_least("per_device_train_batch_size", static_cast<double>(per_device_train_batch_size), 1, "must be at least 1");
  at_least("per_device_eval_batch_size", static_cast<double>(per_device_eval_batch_size), 1, "must be at least 1");
  at_least("gradient_accumulation_steps", static_cast<double>(gradient_accumulation_steps), 1,
           "must be at least 1 (1 steps the optimizer after every batch)");
  at_least("dataloader_num_workers", static_cast<double>(dataloader_num_workers), 0,
           "must be >= 0 (0 loads data in the training loop)");

  // Optimizer and schedule.
  at_least("learning_rate", learning_rate, 0, "must be >= 0");
  at_least("weight_decay", weight_decay, 0, "must be >= 0 (0 disables weight decay)");
  if (adam_beta1 < 0 || adam_beta1 >= 1) fail("adam_beta1", format_number(adam_beta1), "must be in [0, 1), e.g. 0.9");
  if (adam_beta2 < 0 || adam_beta2 >= 1) fail("adam_beta2", format_number(adam_beta2), "must be in [0, 1), e.g. 0.999");
  at_least("adam_epsilon", adam_epsilon, 0, "must be >= 0, e.g. 1e-8");
  if (warmup_ratio && (*warmup_ratio < 0 || *warmup_ratio > 1))
    fail("warmup_ratio", format_number(*warmup_ratio),
         "must be between 0 and 1 (a fraction of the training steps); warmup_ratio is deprecated, use "
         "warmup_steps, which takes a ratio below 1 or a number of steps");
  at_least("warmup_steps", warmup_steps, 0, "must be >= 0: a number of steps, or below 1 a ratio of the training steps");

  // Intervals: below 1 a ratio of the training steps, otherwise a whole number of steps.
  at_least("logging_steps", logging_steps, 0, "must be >= 0");
  at_least("save_steps", save_steps, 0, "must be >= 0");
  if (eval_steps) at_least("eval_steps", *eval_steps, 0, "must be >= 0, or none to use logging_steps");
  at_least("eval_delay", eval_delay, 0, "must be >= 0");
  if (save_total_limit && *save_total_limit < 0)
    fail("save_total_limit", std::to_string(*save_total_limit), "must be >= 0, or none to keep every checkpoint");
  if (logging_strategy == IntervalStrategy::steps && logging_steps == 0)
    fail("logging_steps", "0",
         "logging_strategy steps needs a positive interval; set logging_steps > 0 or logging_strategy no/epoch");
  if (eval_strategy == IntervalStrategy::steps && (!eval_steps || *eval_steps == 0)) {
    if (logging_steps <= 0)
      fail("eval_steps", eval_steps ? "0" : "none",
           "evaluation strategy steps requires either non-zero eval_steps or logging_steps; set eval_steps > 0");
    eval_steps = logging_steps;
  }
  const auto whole_steps = [&](std::string_view field, double value) {
    if (value > 1 && value != std::floor(value))
      fail(field, format_number(value),
           "steps bigger than 1 must be whole numbers; use " + format_number(std::floor(value)) + " or " +
               format_number(std::ceil(value)) + ", or a ratio below 1");
  };
  whole_steps("warmup_steps", warmup_steps);
  if (logging_strategy == IntervalStrategy::steps) whole_steps("logging_steps", logging_steps);
  if (eval_strategy == IntervalStrategy::steps) whole_steps("eval_steps", *eval_steps);
  if (save_strategy == SaveStrategy::steps) whole_steps("save_steps", save_steps);

  // Best model.
  if (!metric_for_best_model && (load_best_model_at_end || lr_scheduler_type == SchedulerType::reduce_lr_on_plateau))
    metric_for_best_model = "loss";
  if (metric_for_best_model && metric_for_best_model->empty())
    fail("metric_for_best_model", "\"\"", "give a metric name such as loss or accuracy, or none");
  if (metric_for_best_model && !greater_is_better)
    greater_is_better = !detail::ends_with(*metric_for_best_model, "loss");
  if ((save_strategy == SaveStrategy::best || load_best_model_at_end) && !metric_for_best_model)
    fail("metric_for_best_model", "none",
         "save_strategy best needs a metric to compare checkpoints; set metric_for_best_model, e.g. accuracy");
  if (save_strategy == SaveStrategy::best && eval_strategy == IntervalStrategy::no)
    fail("save_strategy", "best", "saves after evaluations, but eval_strategy is no; set eval_strategy steps or epoch");
  if (load_best_model_at_end && save_strategy != SaveStrategy::best) {
    if (to_string(eval_strategy) != to_string(save_strategy))
      fail("load_best_model_at_end", "true",
           "requires the save and eval strategy to match (unless save_strategy is best), but eval_strategy = " +
               to_string(eval_strategy) + " and save_strategy = " + to_string(save_strategy) +
               "; set both to the same value or use save_strategy best");
    if (eval_strategy == IntervalStrategy::steps) {
      // Scaled to integers so that ratios such as 0.3 and 0.1 compare exactly.
      const auto scaled = [](double value) { return std::llround(value * 1'000'000); };
      const long long save = scaled(save_steps);
      const long long eval = scaled(*eval_steps);
      if (eval != 0 && save % eval != 0) {
        if ((save_steps < 1) != (*eval_steps < 1))
          fail("save_steps", format_number(save_steps),
               "with load_best_model_at_end every save must follow an evaluation, which cannot get guaranteed "
               "when mixing a ratio and an absolute step count (eval_steps = " +
                   format_number(*eval_steps) + "); give both as ratios below 1 or both as step counts");
        const long long lower = save / eval * eval;
        fail("save_steps", format_number(save_steps),
             "with load_best_model_at_end it must be a multiple of eval_steps = " + format_number(*eval_steps) +
                 "; use " + (lower > 0 ? format_number(static_cast<double>(lower) / 1e6) + " or " : "") +
                 format_number(static_cast<double>(lower + eval) / 1e6));
      }
    }
  }
  if (lr_scheduler_type == SchedulerType::reduce_lr_on_plateau && eval_strategy == IntervalStrategy::no)
    fail("lr_scheduler_type", "reduce_lr_on_plateau",
         "steps on evaluation metrics, but eval_strategy is no; set eval_strategy steps or epoch");

  // Mixed precision (HF's messages; the device is checked where the Trainer knows it).
  if (fp16 && bf16) throw ArgumentError("At most one of fp16 and bf16 can be True, but not both");
  if (fp16_full_eval && bf16_full_eval)
    throw ArgumentError("At most one of fp16 and bf16 can be True for full eval, but not both");

  // Reporting: "all" or "none" alone, or names of built-in reporters.
  std::string listed, choices = "all, none";
  for (const auto& name : report_to) listed += (listed.empty() ? "" : ",") + name;
  for (const auto name : detail::kReporterNames) choices += ", " + std::string(name);
  for (const auto& name : report_to) {
    if (name.empty()) fail("report_to", "\"" + listed + "\"", "has an empty name; list integrations by name");
    if ((name == "all" || name == "none") && report_to.size() > 1)
      fail("report_to", listed, "\"" + name + "\" must be given alone; otherwise list integrations by name");
    if (name != "all" && name != "none" &&
        std::find(detail::kReporterNames.begin(), detail::kReporterNames.end(), name) == detail::kReporterNames.end()) {
      const std::string guess = detail::closest_name(name, detail::kReporterNames);
      fail("report_to", listed,
           "\"" + name + "\" is not an available integration" + (guess.empty() ? "" : " (did you mean " + guess + "?)") +
               "; choose from " + choices);
    }
  }
}

TORCHTRAIN_DEDUCED(void) TrainingArguments::warn_deprecated_fields() const {
  if (warmup_ratio)
    detail::warn("warmup_ratio is deprecated, as in Hugging Face v5: use warmup_steps, which takes a ratio below 1 "
                 "(warmup_steps " + detail::format_number(*warmup_ratio) + " here)" +
                 (warmup_steps != 0 ? "; warmup_ratio overrides warmup_steps " + detail::format_number(warmup_steps)
                                    : ""));
}

TORCHTRAIN_DEDUCED(nlohmann::json) TrainingArguments::to_json() const {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& field : detail::argument_fields<TrainingArguments>())
    json[std::string(field.name)] = detail::field_to_json(field, *this);
  return json;
}

TORCHTRAIN_DEDUCED(std::string) TrainingArguments::to_json_string() const {
  // A path that is not valid UTF-8 is written with U+FFFD rather than failing the whole save.
  return to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

TORCHTRAIN_DEDUCED(TrainingArguments) TrainingArguments::from_json(const nlohmann::json& json, const std::string& source) {
  TrainingArguments args;
  detail::apply_json_object(detail::bind_argument_fields(args), json, source);
  try {
    args.validate();
  } catch (const ArgumentError& e) {
    throw ArgumentError(source + ": " + e.what());
  }
  return args;
}

TORCHTRAIN_DEDUCED(void) TrainingArguments::save_to_json(const std::string& path) const {
  detail::write_text_file(path, to_json_string());
}

TORCHTRAIN_DEDUCED(TrainingArguments) TrainingArguments::load_from_json(const std::string& path) {
  return from_json(detail::read_json_file(path), path);
}

TORCHTRAIN_DEDUCED(TrainingArguments) TrainingArguments::parse(int argc, const char* const* argv) {
  TrainingArguments args;
  if (detail::parse_command_line(argc, argv, args, {}, "", std::cout, nullptr)) std::exit(0);
  return args;
}

}  // namespace torchtrain

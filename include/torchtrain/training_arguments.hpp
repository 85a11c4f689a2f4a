// SPDX-License-Identifier: MIT
// TrainingArguments: every knob of the training loop, with Hugging Face's names, defaults and validation rules.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/argument_fields.hpp"
#include "torchtrain/detail/argument_parsing.hpp"
#include "torchtrain/detail/argument_value.hpp"
#include "torchtrain/detail/edit_distance.hpp"
#include "torchtrain/detail/reporter_names.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain {

struct TrainingArguments {
  // Output
  std::string output_dir = "trainer_output";
  std::string logging_dir;  // empty: output_dir/runs/<date>_<host>
  std::string run_name;     // empty: output_dir

  // Length of training
  double num_train_epochs = 3.0;  // fractional allowed
  std::int64_t max_steps = -1;    // > 0 overrides num_train_epochs

  // Batching
  std::int64_t per_device_train_batch_size = 8;
  std::int64_t per_device_eval_batch_size = 8;
  std::int64_t gradient_accumulation_steps = 1;
  bool dataloader_drop_last = false;
  std::int64_t dataloader_num_workers = 0;

  // Optimizer (AdamW) and clipping
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;  // <= 0 disables clipping; grad_norm is logged either way

  // Learning-rate schedule
  SchedulerType lr_scheduler_type = SchedulerType::linear;
  double warmup_steps = 0;                 // a whole number of steps, or below 1 a ratio of the training steps
  std::optional<double> warmup_ratio;       // deprecated, as in HF v5: use warmup_steps; when set, it wins

  // Logging. *_steps below 1 are ratios of max_steps.
  IntervalStrategy logging_strategy = IntervalStrategy::steps;
  double logging_steps = 500;
  bool logging_first_step = false;
  bool logging_nan_inf_filter = true;

  // Evaluation
  IntervalStrategy eval_strategy = IntervalStrategy::no;
  std::optional<double> eval_steps;  // unset: logging_steps
  double eval_delay = 0;             // steps or (fractional) epochs, following eval_strategy
  bool eval_on_start = false;

  // Checkpoints
  SaveStrategy save_strategy = SaveStrategy::steps;
  double save_steps = 500;
  std::optional<std::int64_t> save_total_limit;
  bool save_only_model = false;
  bool load_best_model_at_end = false;
  std::optional<std::string> metric_for_best_model;  // "loss" when load_best_model_at_end or plateau schedule
  std::optional<bool> greater_is_better;             // unset: !metric_for_best_model.ends_with("loss")
  bool restore_callback_states_from_checkpoint = true;
  bool ignore_data_skip = false;

  // Reproducibility
  std::uint64_t seed = 42;
  std::optional<std::uint64_t> data_seed;  // unset: seed

  // Display, reporting, device
  bool disable_tqdm = false;
  std::vector<std::string> report_to{"all"};  // all, none, or of tensorboard, csv, jsonl
  bool use_cpu = false;

  // Distributed training (under torchrun, or with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set)
  std::int64_t ddp_timeout = 1800;  // seconds any collective may wait for the other processes

  /// Applies Hugging Face's post-init rules: fills eval_steps, metric_for_best_model and greater_is_better
  /// when they are derived, and throws ArgumentError naming the field, its value and the fix for anything
  /// invalid. Every factory below calls it, and so does the Trainer; calling it twice changes nothing.
  void validate();

  /// The warmup of a run of num_training_steps: ceil(num_training_steps * ratio) for warmup_ratio, or for a
  /// warmup_steps below 1; otherwise warmup_steps.
  std::int64_t get_warmup_steps(std::int64_t num_training_steps) const;

  /// Warns for each deprecated field that is set (warmup_ratio), naming its replacement; train() calls it.
  void warn_deprecated_fields() const;

  /// The seed of the data shuffle: data_seed, or seed when unset.
  std::uint64_t effective_data_seed() const { return data_seed.value_or(seed); }

  /// Every field under its name; enums as HF spells them, unset optionals as null.
  nlohmann::json to_json() const;
  /// to_json() with indent 2 and a trailing newline.
  std::string to_json_string() const;
  /// Reads the fields present in `json` (others keep their defaults) and validates. An unknown key is ignored
  /// with a warning; a wrong JSON type throws FileFormatError and an invalid value ArgumentError, both naming
  /// `source` and the key.
  static TrainingArguments from_json(const nlohmann::json& json, const std::string& source = "<json>");

  /// Writes to_json_string() to `path` (conventionally <dir>/training_args.json).
  void save_to_json(const std::string& path) const;
  /// from_json() on the file at `path`; FileFormatError naming the path when it is missing or not a JSON object.
  static TrainingArguments load_from_json(const std::string& path);

  /// Parses Hugging Face flags (see ArgumentParser) and validates. An unknown flag or bad value throws
  /// ArgumentError; --help prints every flag to stdout and exits with status 0, as argparse does. Programs
  /// with flags of their own, or that must not exit, use ArgumentParser.
  static TrainingArguments parse(int argc, const char* const* argv);
};

/// What ArgumentParser returns.
struct ParseResult {
  TrainingArguments args;                 // validated; the defaults when help was requested
  std::vector<std::string> unrecognized;  // parse_known only: tokens no flag claimed, in order
  bool help_requested = false;            // --help/-h: help was printed and nothing else was done; exit 0
};

/// Command-line parser for TrainingArguments plus a program's own flags.
///
///   --name value, --name=value     every argument
///   --flag, --flag true|false      booleans (also yes/no, 1/0); --no_flag sets false
///   --name none                    unsets an optional argument (eval_steps, save_total_limit, ...)
///   --report_to tensorboard,csv    lists are one comma-separated value
///   --config FILE.json, or a leading FILE.json
///                                  reads arguments first; flags on the command line override them,
///                                  wherever they stand. Program flags may be set in the file too.
///   -h, --help                     prints every flag with its default and help line
///
/// A repeated flag: the last one wins. Anything after "--" is left unparsed.
class ArgumentParser {
 public:
  /// `defaults` are the values before any flag; --help shows them.
  explicit ArgumentParser(std::string description = "", TrainingArguments defaults = {})
      : description_(std::move(description)), defaults_(std::move(defaults)) {}

  /// Registers --name, written to `target` when given; the value `target` holds now is the default shown by
  /// --help. T: std::string, std::int64_t, std::uint64_t, double, bool, std::optional of these, or
  /// std::vector<std::string>.
  template <class T>
  ArgumentParser& add_argument(std::string name, T& target, std::string help);

  /// Parses every token; an unknown flag or stray value throws ArgumentError with the closest valid flag.
  ParseResult parse(int argc, const char* const* argv, std::ostream& help_out = std::cout) const {
    return run(argc, argv, help_out, false);
  }
  /// Like parse(), but returns the tokens it does not know in ParseResult::unrecognized.
  ParseResult parse_known(int argc, const char* const* argv, std::ostream& help_out = std::cout) const {
    return run(argc, argv, help_out, true);
  }

  void print_help(std::ostream& out, std::string_view program = "train") const;

 private:
  ParseResult run(int argc, const char* const* argv, std::ostream& help_out, bool allow_unrecognized) const;

  std::string description_;
  TrainingArguments defaults_;
  detail::ArgumentList program_arguments_;
};

// ---------------------------------------------------------------------------------------------------------------

inline void TrainingArguments::validate() {
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

inline std::int64_t TrainingArguments::get_warmup_steps(std::int64_t num_training_steps) const {
  const double warmup = warmup_ratio.value_or(warmup_steps);
  // A ratio of 1 (deprecated warmup_ratio only) is the whole run; warmup_steps 1 is one step, as in HF.
  if (warmup >= 1 && !warmup_ratio) return static_cast<std::int64_t>(warmup);
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(num_training_steps) * warmup));
}

inline void TrainingArguments::warn_deprecated_fields() const {
  if (warmup_ratio)
    detail::warn("warmup_ratio is deprecated, as in Hugging Face v5: use warmup_steps, which takes a ratio below 1 "
                 "(warmup_steps " + detail::format_number(*warmup_ratio) + " here)" +
                 (warmup_steps != 0 ? "; warmup_ratio overrides warmup_steps " + detail::format_number(warmup_steps)
                                    : ""));
}

inline nlohmann::json TrainingArguments::to_json() const {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& field : detail::argument_fields<TrainingArguments>())
    json[std::string(field.name)] = detail::field_to_json(field, *this);
  return json;
}

inline std::string TrainingArguments::to_json_string() const {
  // A path that is not valid UTF-8 is written with U+FFFD rather than failing the whole save.
  return to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

inline TrainingArguments TrainingArguments::from_json(const nlohmann::json& json, const std::string& source) {
  TrainingArguments args;
  detail::apply_json_object(detail::bind_argument_fields(args), json, source);
  try {
    args.validate();
  } catch (const ArgumentError& e) {
    throw ArgumentError(source + ": " + e.what());
  }
  return args;
}

inline void TrainingArguments::save_to_json(const std::string& path) const {
  detail::write_text_file(path, to_json_string());
}

inline TrainingArguments TrainingArguments::load_from_json(const std::string& path) {
  return from_json(detail::read_json_file(path), path);
}

inline TrainingArguments TrainingArguments::parse(int argc, const char* const* argv) {
  ParseResult result = ArgumentParser().parse(argc, argv, std::cout);
  if (result.help_requested) std::exit(0);
  return std::move(result.args);
}

template <class T>
ArgumentParser& ArgumentParser::add_argument(std::string name, T& target, std::string help) {
  static_assert(std::is_constructible_v<detail::ValueRef, T*>,
                "add_argument: the target must be std::string, std::int64_t, std::uint64_t, double, bool, "
                "std::optional of one of these, or std::vector<std::string>");
  if (detail::starts_with(name, "--")) name.erase(0, 2);
  TrainingArguments probe;
  const bool taken = name == "help" || name == "h" || name == "config" ||
                     detail::find_argument(program_arguments_, name) ||
                     detail::find_argument(detail::bind_argument_fields(probe), name);
  if (name.empty() || name.find_first_of("= \t") != std::string::npos || detail::starts_with(name, "-"))
    throw ArgumentError("ArgumentParser::add_argument: '" + name +
                        "' is not a valid flag name; use letters, digits "
                        "and underscores");
  if (taken) throw ArgumentError("ArgumentParser::add_argument: --" + name + " already exists; choose another name");
  program_arguments_.push_back({std::move(name), detail::ValueRef(&target), std::move(help)});
  return *this;
}

inline void ArgumentParser::print_help(std::ostream& out, std::string_view program) const {
  TrainingArguments shown = defaults_;
  const detail::ArgumentList fields = detail::bind_argument_fields(shown);
  detail::write_help(out, program, description_,
                     {{"program options", &program_arguments_}, {"training arguments", &fields}});
}

inline ParseResult ArgumentParser::run(int argc, const char* const* argv, std::ostream& help_out,
                                       bool allow_unrecognized) const {
  const detail::CommandLine command_line(argc, argv);
  ParseResult result;
  result.args = defaults_;
  if (command_line.help_requested()) {
    std::string program = argc > 0 ? argv[0] : "train";
    program.erase(0, program.find_last_of('/') + 1);
    print_help(help_out, program);
    result.help_requested = true;
    return result;
  }
  detail::ArgumentList arguments = program_arguments_;
  const detail::ArgumentList fields = detail::bind_argument_fields(result.args);
  arguments.insert(arguments.end(), fields.begin(), fields.end());
  if (const auto path = command_line.config_path())
    detail::apply_json_object(arguments, detail::read_json_file(*path), *path);
  result.unrecognized = command_line.apply(arguments, allow_unrecognized);
  result.args.validate();
  return result;
}

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// TrainingArguments, the struct: every knob of the training loop with Hugging Face's names and defaults. What
// a callback or any other code that reads the fields includes. Validation, JSON and the command line are
// declared here and defined in training_arguments.hpp, which a translation unit that calls them includes.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/compiled.hpp"

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
  std::string train_sampling_strategy = "random";  // random, sequential, group_by_length

  // Sequences
  double label_smoothing_factor = 0;              // 0 to 1: the weight of the uniform distribution in the labels
  std::string include_num_input_tokens_seen = "no";  // no, all, non_padding (true/false: all/no)

  // Optimizer and clipping
  std::string optim = "adamw_torch";  // adamw_torch, adam, sgd, adagrad, rmsprop
  std::string optim_args;             // "key=value,..." for sgd, adagrad and rmsprop
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
  nlohmann::json lr_scheduler_kwargs = nlohmann::json::object();  // the schedule's own options, e.g. {"min_lr": 1e-5}

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
  std::optional<std::int64_t> eval_accumulation_steps;  // move outputs to the CPU every N batches; unset: at the end
  std::vector<std::string> include_for_metrics;          // of inputs, loss: more for compute_metrics

  // Checkpoints
  SaveStrategy save_strategy = SaveStrategy::steps;
  double save_steps = 500;
  std::optional<std::int64_t> save_total_limit;
  bool save_only_model = false;
  bool save_async = false;  // write checkpoints on a background thread; training pauses only to copy the state
  bool load_best_model_at_end = false;
  std::optional<std::string> metric_for_best_model;  // "loss" when load_best_model_at_end or plateau schedule
  std::optional<bool> greater_is_better;             // unset: !metric_for_best_model.ends_with("loss")
  bool restore_callback_states_from_checkpoint = true;
  bool ignore_data_skip = false;

  // Reproducibility
  std::uint64_t seed = 42;
  std::optional<std::uint64_t> data_seed;  // unset: seed

  // Mixed precision: the model's forward (and the loss it returns) under autocast, its outputs back to float32
  bool bf16 = false;            // bfloat16 autocast, on the CPU or CUDA
  bool fp16 = false;            // float16 autocast with dynamic loss scaling (Trainer::grad_scaler); CUDA only
  bool bf16_full_eval = false;  // evaluate()/predict() outside train(): the model cast to bfloat16 (it stays so)
  bool fp16_full_eval = false;  // the same in float16; CUDA only
  std::optional<bool> tf32;     // CUDA: TF32 matrix products and convolutions; unset: LibTorch's setting

  // Display, reporting, device
  bool disable_tqdm = false;
  std::vector<std::string> report_to{"all"};  // all, none, or names of integrations (README: Reporting)
  std::string project = "huggingface";        // the project Trackio files the run under
  bool use_cpu = false;

  // Distributed training (under torchrun, or with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set)
  std::int64_t ddp_timeout = 1800;  // seconds any collective may wait for the other processes
  bool average_tokens_across_devices = true;  // the token count of the loss's mean over every process

  /// The warmup of a run of num_training_steps: ceil(num_training_steps * ratio) for warmup_ratio, or for a
  /// warmup_steps below 1; otherwise warmup_steps.
  std::int64_t get_warmup_steps(std::int64_t num_training_steps) const {
    const double warmup = warmup_ratio.value_or(warmup_steps);
    // A ratio of 1 (deprecated warmup_ratio only) is the whole run; warmup_steps 1 is one step, as in HF.
    if (warmup >= 1 && !warmup_ratio) return static_cast<std::int64_t>(warmup);
    return static_cast<std::int64_t>(std::ceil(static_cast<double>(num_training_steps) * warmup));
  }

  /// The seed of the data shuffle: data_seed, or seed when unset.
  std::uint64_t effective_data_seed() const { return data_seed.value_or(seed); }

  // The members below are defined in training_arguments.hpp (or, with torchtrain::compiled, in the library). Header-only,
  // their return types are deduced (TORCHTRAIN_DEDUCED; the type is in each comment), so a call compiles only
  // after their definitions: a translation unit that sees this struct alone cannot call one it lacks.

  /// -> void. Applies Hugging Face's post-init rules: fills eval_steps, metric_for_best_model and
  /// greater_is_better when they are derived, and throws ArgumentError naming the field, its value and the fix
  /// for anything invalid. Every factory below calls it, and so does the Trainer; calling it twice changes
  /// nothing.
  TORCHTRAIN_DEDUCED(void) validate();

  /// -> void. Warns for each deprecated field that is set (warmup_ratio), naming its replacement; train()
  /// calls it.
  TORCHTRAIN_DEDUCED(void) warn_deprecated_fields() const;

  /// -> nlohmann::json. Every field under its name; enums as HF spells them, unset optionals as null.
  TORCHTRAIN_DEDUCED(nlohmann::json) to_json() const;
  /// -> std::string. to_json() with indent 2 and a trailing newline.
  TORCHTRAIN_DEDUCED(std::string) to_json_string() const;
  /// -> TrainingArguments. Reads the fields present in `json` (others keep their defaults) and validates. An
  /// unknown key is ignored with a warning; a wrong JSON type throws FileFormatError and an invalid value
  /// ArgumentError, both naming `source` and the key.
  static TORCHTRAIN_DEDUCED(TrainingArguments) from_json(const nlohmann::json& json, const std::string& source = "<json>");

  /// -> void. Writes to_json_string() to `path` (conventionally <dir>/training_args.json).
  TORCHTRAIN_DEDUCED(void) save_to_json(const std::string& path) const;
  /// -> TrainingArguments. from_json() on the file at `path`; FileFormatError naming the path when it is
  /// missing or not a JSON object.
  static TORCHTRAIN_DEDUCED(TrainingArguments) load_from_json(const std::string& path);

  /// -> TrainingArguments. Parses Hugging Face flags (see ArgumentParser) and validates. An unknown flag or bad
  /// value throws ArgumentError; --help prints every flag to stdout and exits with status 0, as argparse does.
  /// Programs with flags of their own, or that must not exit, use ArgumentParser.
  static TORCHTRAIN_DEDUCED(TrainingArguments) parse(int argc, const char* const* argv);
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// TrainingArguments: every knob of the training loop, with Hugging Face's names, defaults and validation rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

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
  double max_grad_norm = 1.0;  // <= 0 disables clipping (and the grad_norm log key)

  // Learning-rate schedule
  SchedulerType lr_scheduler_type = SchedulerType::linear;
  double warmup_ratio = 0.0;
  std::int64_t warmup_steps = 0;  // > 0 overrides warmup_ratio

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
  std::vector<std::string> report_to{"all"};
  bool use_cpu = false;
};

}  // namespace torchtrain

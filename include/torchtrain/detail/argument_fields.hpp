// SPDX-License-Identifier: MIT
// The one list of TrainingArguments fields: name, member and help line. JSON reading and writing, the
// command line and --help all walk this table, so a new field is added here once.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/argument_value.hpp"

namespace torchtrain::detail {

template <class Args>
struct MemberOf {
  template <class T>
  using Pointer = T Args::*;
};

/// One field of `Args` (TrainingArguments); a template only so that this table can be written before the
/// struct is complete, because the struct's own methods use it.
template <class Args>
struct ArgumentField {
  std::string_view name;
  ArgumentVariant<MemberOf<Args>::template Pointer> member;
  std::string_view help;
};

template <class Args>
const std::vector<ArgumentField<Args>>& argument_fields() {
  static const std::vector<ArgumentField<Args>> fields{
      {"output_dir", &Args::output_dir, "folder for checkpoints and final outputs"},
      {"logging_dir", &Args::logging_dir, "folder for logs; empty: output_dir/runs/<date>_<host>"},
      {"run_name", &Args::run_name, "name of the run shown by loggers; empty: output_dir"},
      {"num_train_epochs", &Args::num_train_epochs, "epochs to train for (fractions allowed) unless max_steps > 0"},
      {"max_steps", &Args::max_steps, "optimizer steps to train for; -1: use num_train_epochs"},
      {"per_device_train_batch_size", &Args::per_device_train_batch_size, "training batch size"},
      {"per_device_eval_batch_size", &Args::per_device_eval_batch_size, "evaluation and prediction batch size"},
      {"gradient_accumulation_steps", &Args::gradient_accumulation_steps,
       "batches whose gradients are summed before each optimizer step"},
      {"dataloader_drop_last", &Args::dataloader_drop_last, "drop the last incomplete training batch"},
      {"dataloader_num_workers", &Args::dataloader_num_workers, "data-loading worker threads; 0: load in the loop"},
      {"train_sampling_strategy", &Args::train_sampling_strategy,
       "training order: random, sequential, or group_by_length (similar lengths together)"},
      {"label_smoothing_factor", &Args::label_smoothing_factor,
       "label smoothing of the built-in cross-entropy, from 0 (none) to below 1"},
      {"include_num_input_tokens_seen", &Args::include_num_input_tokens_seen,
       "count the input tokens into num_input_tokens_seen: no, all or non_padding"},
      {"optim", &Args::optim, "optimizer: adamw_torch, adam, sgd, adagrad or rmsprop"},
      {"optim_args", &Args::optim_args, "more optimizer arguments as key=value,... (sgd: momentum, dampening, nesterov)"},
      {"learning_rate", &Args::learning_rate, "initial learning rate"},
      {"weight_decay", &Args::weight_decay, "weight decay (not on biases and normalization layers)"},
      {"adam_beta1", &Args::adam_beta1, "AdamW beta1"},
      {"adam_beta2", &Args::adam_beta2, "AdamW beta2"},
      {"adam_epsilon", &Args::adam_epsilon, "AdamW epsilon"},
      {"max_grad_norm", &Args::max_grad_norm, "gradient-norm clipping threshold; <= 0 disables clipping"},
      {"lr_scheduler_type", &Args::lr_scheduler_type, "learning-rate schedule"},
      {"lr_scheduler_kwargs", &Args::lr_scheduler_kwargs,
       "the schedule's own options as a JSON object, e.g. {\"num_cycles\": 2} or {\"min_lr\": 1e-5}"},
      {"warmup_ratio", &Args::warmup_ratio, "deprecated, use warmup_steps; a ratio of the training steps, overrides it"},
      {"warmup_steps", &Args::warmup_steps, "linear warmup: a number of steps, or below 1 a ratio of the training steps"},
      {"logging_strategy", &Args::logging_strategy, "when to log"},
      {"logging_steps", &Args::logging_steps, "log every N steps; below 1: a fraction of the training steps"},
      {"logging_first_step", &Args::logging_first_step, "also log after the first step"},
      {"logging_nan_inf_filter", &Args::logging_nan_inf_filter, "leave NaN/inf losses out of the logged training loss"},
      {"eval_strategy", &Args::eval_strategy, "when to evaluate"},
      {"eval_steps", &Args::eval_steps, "evaluate every N steps; below 1: a fraction; none: logging_steps"},
      {"eval_delay", &Args::eval_delay, "steps (or epochs, with eval_strategy epoch) before the first evaluation"},
      {"eval_on_start", &Args::eval_on_start, "evaluate once before training, as a sanity check"},
      {"eval_accumulation_steps", &Args::eval_accumulation_steps,
       "move evaluation outputs to the CPU every N batches; none: at the end"},
      {"include_for_metrics", &Args::include_for_metrics,
       "what else compute_metrics receives, comma separated: inputs, loss"},
      {"save_strategy", &Args::save_strategy, "when to save a checkpoint; best: when the metric improves"},
      {"save_steps", &Args::save_steps, "save every N steps; below 1: a fraction of the training steps"},
      {"save_total_limit", &Args::save_total_limit, "keep at most this many checkpoints; none: keep all"},
      {"save_only_model", &Args::save_only_model, "save the model only, without optimizer/scheduler/RNG state"},
      {"save_async", &Args::save_async,
       "write checkpoints on a background thread; training pauses only to copy the state to host memory"},
      {"load_best_model_at_end", &Args::load_best_model_at_end, "load the best checkpoint when training ends"},
      {"metric_for_best_model", &Args::metric_for_best_model, "metric that ranks checkpoints; none: loss when needed"},
      {"greater_is_better", &Args::greater_is_better,
       "whether a larger metric is better; none: false for metrics ending in loss"},
      {"restore_callback_states_from_checkpoint", &Args::restore_callback_states_from_checkpoint,
       "restore stateful callbacks when resuming"},
      {"ignore_data_skip", &Args::ignore_data_skip,
       "on resume, start the epoch's data from the beginning instead of skipping seen batches"},
      {"seed", &Args::seed, "random seed set at the start of training"},
      {"data_seed", &Args::data_seed, "seed for data shuffling; none: seed"},
      {"bf16", &Args::bf16, "bfloat16 mixed precision: the forward under autocast (CPU or CUDA)"},
      {"fp16", &Args::fp16, "float16 mixed precision with dynamic loss scaling (CUDA)"},
      {"bf16_full_eval", &Args::bf16_full_eval, "evaluate with the model cast to bfloat16"},
      {"fp16_full_eval", &Args::fp16_full_eval, "evaluate with the model cast to float16 (CUDA)"},
      {"tf32", &Args::tf32, "TF32 matrix products and convolutions on CUDA; none: LibTorch's setting"},
      {"disable_tqdm", &Args::disable_tqdm, "hide the progress bar (print logs instead)"},
      {"report_to", &Args::report_to, "integrations to report to, comma separated; all or none"},
      {"project", &Args::project, "the project Trackio files the run under"},
      {"use_cpu", &Args::use_cpu, "train on the CPU even when a GPU is available"},
      {"ddp_timeout", &Args::ddp_timeout,
       "seconds a distributed collective waits for the other processes before failing"},
      {"average_tokens_across_devices", &Args::average_tokens_across_devices,
       "normalise the loss by the label tokens of every process, not of each"},
  };
  return fields;
}

template <class Args>
nlohmann::json field_to_json(const ArgumentField<Args>& field, const Args& args) {
  return std::visit([&](auto member) { return TraitsOf<decltype(args.*member)>::write(args.*member); }, field.member);
}

/// Where each field of `args` lives, with its name and help line.
struct BoundArgument {
  std::string name;
  ValueRef value;
  std::string help;
};

template <class Args>
std::vector<BoundArgument> bind_argument_fields(Args& args) {
  std::vector<BoundArgument> bound;
  for (const auto& field : argument_fields<Args>())
    bound.push_back({std::string(field.name),
                     std::visit([&](auto member) -> ValueRef { return &(args.*member); }, field.member),
                     std::string(field.help)});
  return bound;
}

}  // namespace torchtrain::detail

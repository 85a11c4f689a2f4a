// SPDX-License-Identifier: MIT
// The definition of plan_run (run_plan.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/run_plan.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

TORCHTRAIN_INLINE RunPlan plan_run(const TrainingArguments& args, std::size_t num_batches, std::size_t num_examples) {
  if (num_batches == 0)
    throw ArgumentError("train: the train dataset yields no batch (" + std::to_string(num_examples) +
                        " examples, per_device_train_batch_size " + std::to_string(args.per_device_train_batch_size) +
                        (args.dataloader_drop_last ? ", dataloader_drop_last" : "") + ")");
  const std::int64_t ga = args.gradient_accumulation_steps;
  RunPlan plan;
  plan.batches_per_epoch = static_cast<std::int64_t>(num_batches);
  plan.updates_per_epoch = std::max<std::int64_t>((plan.batches_per_epoch + ga - 1) / ga, 1);
  if (args.max_steps > 0) {
    plan.max_steps = args.max_steps;
    plan.num_train_epochs = plan.max_steps / plan.updates_per_epoch + (plan.max_steps % plan.updates_per_epoch > 0);
  } else {
    plan.max_steps =
        static_cast<std::int64_t>(std::ceil(args.num_train_epochs * static_cast<double>(plan.updates_per_epoch)));
    plan.num_train_epochs = static_cast<std::int64_t>(std::ceil(args.num_train_epochs));
  }
  return plan;
}

TORCHTRAIN_INLINE RunPlan plan_stream_run(const TrainingArguments& args) {
  if (args.max_steps <= 0)
    throw ArgumentError("args.max_steps must be set to a positive value if dataloader does not have a length, was " +
                        std::to_string(args.max_steps));
  RunPlan plan;
  plan.max_steps = args.max_steps;
  plan.updates_per_epoch = args.max_steps;
  plan.batches_per_epoch = args.max_steps * args.gradient_accumulation_steps;
  plan.num_train_epochs = std::numeric_limits<std::int64_t>::max();
  plan.streaming = true;
  return plan;
}

}  // namespace torchtrain

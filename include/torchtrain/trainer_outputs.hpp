// SPDX-License-Identifier: MIT
// What models hand to the Trainer, and what the Trainer hands back: ModelOutput, EvalPrediction,
// TrainOutput, PredictionOutput.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <torch/types.h>

#include "torchtrain/trainer_types.hpp"

namespace torchtrain {

/// A model's forward may return this instead of a plain tensor: named outputs, including "loss" when the
/// model computes its own loss. The tensor used as predictions is "logits" when present, else the first
/// remaining output.
using ModelOutput = std::map<std::string, torch::Tensor>;

/// What compute_metrics receives: the predictions and labels of a whole evaluation set, on the CPU.
struct EvalPrediction {
  torch::Tensor predictions;
  torch::Tensor label_ids;  // undefined when the data has no labels
};

/// What train() returns.
struct TrainOutput {
  std::int64_t global_step = 0;  // optimizer steps taken, counting those before a resume
  double training_loss = 0.0;    // the mean training loss over those steps
  Metrics metrics;               // train_runtime, train_samples_per_second, ..., train_loss
  /// The signal (SIGTERM or SIGINT) that stopped training early after a checkpoint at global_step, or 0.
  int preempted_by = 0;
};

/// What predict() returns.
struct PredictionOutput {
  torch::Tensor predictions;  // of the whole data set, on the CPU
  torch::Tensor label_ids;    // undefined when the data has no labels
  Metrics metrics;            // test_loss (with labels), compute_metrics' values, test_runtime, ...
};

}  // namespace torchtrain

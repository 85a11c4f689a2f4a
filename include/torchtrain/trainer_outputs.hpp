// SPDX-License-Identifier: MIT
// What models hand to the Trainer, and what the Trainer hands back: ModelOutput, EvalPrediction,
// TrainOutput, PredictionOutput.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <torch/types.h>

#include "torchtrain/trainer_callback.hpp"

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

struct TrainOutput {
  std::int64_t global_step = 0;
  double training_loss = 0.0;
  Metrics metrics;
  /// The signal (SIGTERM or SIGINT) that stopped training early after a checkpoint at global_step, or 0.
  int preempted_by = 0;
};

struct PredictionOutput {
  torch::Tensor predictions;
  torch::Tensor label_ids;
  Metrics metrics;
};

}  // namespace torchtrain

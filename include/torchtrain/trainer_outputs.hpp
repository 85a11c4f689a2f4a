// SPDX-License-Identifier: MIT
// What models hand to the Trainer, and what the Trainer hands back: ModelOutput, LossOutput, EvalPrediction,
// PredictionStepOutput, TrainOutput, PredictionOutput.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <torch/types.h>

#include "torchtrain/trainer_types.hpp"

namespace torchtrain {

/// A model's forward may return this instead of a plain tensor: named outputs, including "loss" when the
/// model computes its own loss. The tensor used as predictions is "logits" when present, else the first
/// remaining output; evaluation keeps the others as well (EvalPrediction::outputs), as Hugging Face keeps the
/// tuple of all of them.
using ModelOutput = std::map<std::string, torch::Tensor>;

/// What compute_metrics receives: the predictions and labels of a whole evaluation set, on the CPU. Batches of
/// different sequence lengths are joined by padding dimension 1 to the longest with -100, so metrics skip the
/// positions whose label is -100.
struct EvalPrediction {
  torch::Tensor predictions;  // after preprocess_logits_for_metrics, when the Trainer has one
  torch::Tensor label_ids;    // undefined when the data has no labels
  torch::Tensor inputs;       // each batch's data, with include_for_metrics "inputs"; otherwise undefined
  torch::Tensor losses;       // each example's batch loss, with include_for_metrics "loss"; otherwise undefined
  /// The model's other named outputs (neither "loss", the predictions' one, nor in ignore_keys), each joined
  /// over the set as the predictions are; empty for a model that returns one tensor.
  ModelOutput outputs;
};

/// What Trainer::compute_loss returns: a model's output reduced to what the loop needs.
struct LossOutput {
  torch::Tensor loss;         // undefined when neither the model nor a criterion provides one
  torch::Tensor predictions;  // logits, or the first non-loss output
  ModelOutput other_outputs;  // the model's named outputs besides the loss, the predictions and ignore_keys
  /// The loss is this micro-batch's share of its accumulation window's loss: the sum over its label tokens
  /// divided by the window's num_items_in_batch, so the window's losses add up to the window's mean (Hugging
  /// Face's token-count normalisation). When false, the loop divides the loss by the window's length instead.
  bool normalized_by_num_items = false;
};

/// What one evaluation step yields (Trainer::prediction_step): the batch's mean loss, its logits and labels;
/// each undefined when there is none (logits and labels are left out when only the loss is needed).
struct PredictionStepOutput {
  torch::Tensor loss;
  torch::Tensor logits;
  torch::Tensor labels;
  ModelOutput outputs;  // the model's other named outputs, as in EvalPrediction::outputs
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
  ModelOutput outputs;        // the model's other named outputs, as in EvalPrediction::outputs
};

}  // namespace torchtrain

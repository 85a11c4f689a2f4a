// SPDX-License-Identifier: MIT
// The small value types callbacks receive: Metrics, LogEntry, DataLoaderInfo. No LibTorch here; the tensor
// outputs (ModelOutput, EvalPrediction, TrainOutput, PredictionOutput) are in trainer_outputs.hpp.
#pragma once

#include <cstddef>

#include <nlohmann/json.hpp>

namespace torchtrain {

/// Named metrics, in insertion order (what `compute_metrics`, `evaluate` and `predict` return).
using Metrics = nlohmann::ordered_json;

/// One log() call: keys in insertion order, values are numbers or strings.
using LogEntry = nlohmann::ordered_json;

/// The shape of a data loader, as callbacks see it. A stream's length is unknown: num_batches and num_samples
/// are 0 during training, and an evaluation's are filled in once it has read the stream.
struct DataLoaderInfo {
  std::size_t num_batches = 0;  // batches per pass over the data (per process when distributed)
  std::size_t num_samples = 0;  // examples in the whole data set
  std::size_t batch_size = 0;   // examples per batch; the last batch may hold fewer
};

}  // namespace torchtrain

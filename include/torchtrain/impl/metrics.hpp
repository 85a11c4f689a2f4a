// SPDX-License-Identifier: MIT
// The definitions of the ready-made compute_metrics functions (metrics.hpp).
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/metrics.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::metrics {

TORCHTRAIN_INLINE Metrics accuracy(const EvalPrediction& prediction) {
  if (!prediction.label_ids.defined())
    throw ArgumentError("metrics::accuracy needs labels; the evaluation data has none");
  const auto& predictions = prediction.predictions;
  auto labels = prediction.label_ids;
  torch::Tensor predicted;
  if (predictions.dim() == labels.dim() + 1) {
    predicted = predictions.argmax(-1);  // logits, one dimension more than the labels
  } else if (predictions.sizes() == labels.sizes()) {  // class ids (or values to round)
    predicted = c10::isFloatingType(predictions.scalar_type()) ? predictions.round().to(torch::kLong) : predictions;
  } else {
    predicted = predictions.dim() > 1 ? predictions.argmax(-1) : predictions.round().to(torch::kLong);
    labels = labels.reshape(predicted.sizes());
  }
  labels = labels.to(predicted.scalar_type());
  // Positions labelled -100 (padding, or tokens left out of the loss) are not counted.
  const auto counted = labels.ne(-100);
  const auto total = counted.sum().item<std::int64_t>();
  if (total == 0) throw ArgumentError("metrics::accuracy: every label is -100, so there is nothing to count; check that the "
                             "collator pads only what follows each sequence");
  Metrics out;
  out["accuracy"] = static_cast<double>(predicted.eq(labels).logical_and(counted).sum().item<std::int64_t>()) /
                    static_cast<double>(total);
  return out;
}

}  // namespace torchtrain::metrics

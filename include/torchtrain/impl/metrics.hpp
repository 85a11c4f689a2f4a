// SPDX-License-Identifier: MIT
// The definitions of the ready-made compute_metrics functions (metrics.hpp).
#pragma once

#include <torch/types.h>

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/metrics.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::metrics {

TORCHTRAIN_INLINE Metrics accuracy(const EvalPrediction& prediction) {
  if (!prediction.label_ids.defined())
    throw ArgumentError("metrics::accuracy needs labels; the evaluation data has none");
  const auto predicted = prediction.predictions.dim() > 1 ? prediction.predictions.argmax(-1)
                                                          : prediction.predictions.round().to(torch::kLong);
  const auto labels = prediction.label_ids.reshape(predicted.sizes()).to(predicted.scalar_type());
  Metrics out;
  out["accuracy"] = predicted.eq(labels).to(torch::kDouble).mean().item<double>();
  return out;
}

}  // namespace torchtrain::metrics

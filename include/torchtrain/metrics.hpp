// SPDX-License-Identifier: MIT
// Ready-made compute_metrics functions.
#pragma once

#include <torch/types.h>

#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::metrics {

/// {"accuracy": fraction of rows whose arg-max prediction equals the label}.
inline Metrics accuracy(const EvalPrediction& prediction) {
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

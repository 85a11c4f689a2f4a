// SPDX-License-Identifier: MIT
// Ready-made compute_metrics functions.
#pragma once

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::metrics {

/// {"accuracy": the fraction of labels that the predictions match}, leaving out labels of -100. Predictions are
/// logits (with one dimension more than the labels: their arg-max is taken) or class ids of the labels' shape.
Metrics accuracy(const EvalPrediction& prediction);

}  // namespace torchtrain::metrics

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/metrics.hpp"
#endif

// SPDX-License-Identifier: MIT
// Ready-made compute_metrics functions.
#pragma once

#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain::metrics {

/// {"accuracy": fraction of rows whose arg-max prediction equals the label}.
Metrics accuracy(const EvalPrediction& prediction);

}  // namespace torchtrain::metrics

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/metrics.hpp"
#endif

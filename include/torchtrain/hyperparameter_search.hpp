// SPDX-License-Identifier: MIT
// Hyper-parameter search: objectives, the trial that callbacks see, trial records and the best run
// (hyperparameter_trial.hpp), and the search loop behind Trainer::hyperparameter_search, which writes the
// results files.
#pragma once

#include "torchtrain/detail/hyperparameter_search.hpp"
#include "torchtrain/hyperparameter_trial.hpp"

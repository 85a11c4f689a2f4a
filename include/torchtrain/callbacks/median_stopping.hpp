// SPDX-License-Identifier: MIT
// MedianStoppingCallback: prunes a hyper-parameter search trial that does worse than the median of the
// trials before it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "torchtrain/errors.hpp"
#include "torchtrain/hyperparameter_trial.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// Optuna's MedianPruner as a callback. After each evaluation of a hyperparameter_search trial, the trial's
/// best objective so far is compared with the median of the objectives that earlier complete trials had at the
/// same global step; if it is worse, the trial is marked pruned and training stops. No trial is pruned before
/// `n_startup_trials` trials have completed, nor before global step `n_warmup_steps`. Outside a search it does
/// nothing.
class MedianStoppingCallback : public TrainerCallback {
 public:
  explicit MedianStoppingCallback(int n_startup_trials = 5, std::int64_t n_warmup_steps = 0)
      : n_startup_trials(n_startup_trials), n_warmup_steps(n_warmup_steps) {
    if (n_startup_trials < 0 || n_warmup_steps < 0)
      throw ArgumentError("MedianStoppingCallback: n_startup_trials (" + std::to_string(n_startup_trials) +
                          ") and n_warmup_steps (" + std::to_string(n_warmup_steps) + ") must not be negative");
  }

  int n_startup_trials;
  std::int64_t n_warmup_steps;

  void on_evaluate(const Args&, const State& state, Control& control, const Context& context) override {
    HyperparameterTrial* trial = context.trial;
    if (!trial || state.global_step < n_warmup_steps) return;
    const bool minimize = trial->direction() == Direction::minimize;
    std::vector<double> at_step;
    int completed = 0;
    for (const auto& earlier : trial->earlier_trials()) {
      if (earlier.state != TrialState::complete) continue;
      ++completed;
      for (const auto& i : earlier.intermediate_objectives)
        if (i.step == state.global_step && !std::isnan(i.objective)) {
          at_step.push_back(i.objective);
          break;
        }
    }
    if (completed < std::max(n_startup_trials, 1) || at_step.empty()) return;

    double best = minimize ? INFINITY : -INFINITY;
    for (const auto& i : trial->intermediate_objectives(state))
      if (i.step <= state.global_step && !std::isnan(i.objective))
        best = minimize ? std::min(best, i.objective) : std::max(best, i.objective);
    const double m = median(std::move(at_step));
    if (minimize ? best > m : best < m) {
      trial->prune();
      control.should_training_stop = true;
    }
  }

 private:
  static double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  }
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// DefaultFlowCallback: decides when the loop logs, evaluates, saves and stops.
#pragma once

#include "torchtrain/strategies.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

/// Hugging Face's default flow. It only ever sets flags, so a later callback can veto any decision.
/// Differences from HF v4.5x, both taken from its newest code: the forced save at the last step happens only
/// with the steps save strategy (no double save with the epoch strategy), and with the steps eval strategy a
/// last step that is not an eval step is evaluated too.
class DefaultFlowCallback : public TrainerCallback {
 public:
  void on_step_end(const Args& args, const State& state, Control& control, const Context&) override {
    const auto step = state.global_step;
    if (step == 1 && args.logging_first_step) control.should_log = true;
    if (args.logging_strategy == IntervalStrategy::steps && state.logging_steps > 0 &&
        step % state.logging_steps == 0)
      control.should_log = true;

    const bool eval_due = args.eval_strategy == IntervalStrategy::steps && state.eval_steps > 0 &&
                          args.eval_delay <= static_cast<double>(step);
    if (eval_due && step % state.eval_steps == 0) control.should_evaluate = true;

    if (args.save_strategy == SaveStrategy::steps && state.save_steps > 0 && step % state.save_steps == 0)
      control.should_save = true;

    if (step >= state.max_steps) {
      control.should_training_stop = true;
      if (args.save_strategy == SaveStrategy::steps) control.should_save = true;
      if (eval_due) control.should_evaluate = true;
    }
  }

  void on_epoch_end(const Args& args, const State& state, Control& control, const Context&) override {
    if (args.logging_strategy == IntervalStrategy::epoch) control.should_log = true;
    if (args.eval_strategy == IntervalStrategy::epoch && args.eval_delay <= state.epoch.value_or(0.0))
      control.should_evaluate = true;
    if (args.save_strategy == SaveStrategy::epoch) control.should_save = true;
  }
};

}  // namespace torchtrain

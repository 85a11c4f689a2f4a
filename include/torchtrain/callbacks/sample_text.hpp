// SPDX-License-Identifier: MIT
// SampleTextCallback: prints what a language model writes at each evaluation.
#pragma once

#include <functional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "torchtrain/detail/terminal.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// At each evaluation (an eval_on_start one included, which shows the untrained model), asks `generate` for a
/// sample and prints it on the world process zero, with the step, as language-model recipes do to show the model
/// learning. Generic over the generator: the model, the vocabulary and the sampling are the program's. The
/// samples are also kept in `samples`, in order. On a terminal the sample replaces the progress bar's line,
/// which the bar draws again below it at the next step.
class SampleTextCallback : public TrainerCallback {
 public:
  using Generate = std::function<std::string(const TrainerState&)>;

  explicit SampleTextCallback(Generate generate, std::ostream& out = std::cout)
      : generate_(std::move(generate)), out_(&out), clear_line_(detail::is_terminal(out)) {
    if (!generate_) throw ArgumentError("SampleTextCallback: the generate function is empty; pass one");
  }

  void on_evaluate(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    samples.push_back(generate_(state));
    if (clear_line_) *out_ << "\r\x1b[K";
    *out_ << "sample at step " << state.global_step << ":\n" << samples.back() << "\n" << std::flush;
  }

  std::vector<std::string> samples;

 private:
  Generate generate_;
  std::ostream* out_;
  bool clear_line_;
};

}  // namespace torchtrain

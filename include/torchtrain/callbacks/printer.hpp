// SPDX-License-Identifier: MIT
// PrinterCallback: prints every log entry as a line, without a progress bar.
#pragma once

#include <iostream>

#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// Used instead of ProgressCallback when disable_tqdm is set. Prints on the local process zero only, without
/// total_flos, floats to 4 significant digits as HF v5 does:
/// {'loss': '0.6931', 'grad_norm': '1.73', 'learning_rate': '5e-05', 'epoch': '0.67'}
class PrinterCallback : public TrainerCallback {
 public:
  explicit PrinterCallback(std::ostream& out = std::cout) : out_(&out) {}

  void on_log(const Args&, const State& state, Control&, const Context& context) override {
    if (!state.is_local_process_zero || !context.logs) return;
    LogEntry shown = *context.logs;
    shown.erase("total_flos");
    *out_ << detail::python_log_display(shown) << '\n' << std::flush;
  }

 private:
  std::ostream* out_;
};

}  // namespace torchtrain

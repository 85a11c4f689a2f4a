// SPDX-License-Identifier: MIT
// TrainerControl: the flags through which callbacks steer the training loop.
#pragma once

#include <nlohmann/json.hpp>

namespace torchtrain {

/// One object lives as long as the Trainer. The loop acts on the flags after on_step_end and on_epoch_end have
/// run (logging, then evaluating, then saving, then stopping). DefaultFlowCallback only ever sets flags; a
/// callback later in the list may veto one by clearing it. The CallbackHandler clears flags before the
/// callbacks of the events listed next to each field run.
struct TrainerControl {
  bool should_training_stop = false;  // end train(); cleared on on_train_begin
  bool should_epoch_stop = false;     // end the current epoch; cleared on on_epoch_begin
  bool should_save = false;           // save a checkpoint; cleared on on_step_begin and on_save
  bool should_evaluate = false;       // run an evaluation; cleared on on_step_begin and on_evaluate
  bool should_log = false;            // log the training loss since the last log; cleared on on_step_begin and on_log

  /// Stateful-callback export: {"args": {all five flags}, "attributes": {}}.
  nlohmann::json state() const {
    return {{"args",
             {{"should_training_stop", should_training_stop},
              {"should_epoch_stop", should_epoch_stop},
              {"should_save", should_save},
              {"should_evaluate", should_evaluate},
              {"should_log", should_log}}},
            {"attributes", nlohmann::json::object()}};
  }

  /// Restores the flags from state(); missing flags keep their current value.
  void restore_state(const nlohmann::json& saved) {
    const auto& args = saved.at("args");
    should_training_stop = args.value("should_training_stop", should_training_stop);
    should_epoch_stop = args.value("should_epoch_stop", should_epoch_stop);
    should_save = args.value("should_save", should_save);
    should_evaluate = args.value("should_evaluate", should_evaluate);
    should_log = args.value("should_log", should_log);
  }

  friend bool operator==(const TrainerControl& a, const TrainerControl& b) {
    return a.should_training_stop == b.should_training_stop && a.should_epoch_stop == b.should_epoch_stop &&
           a.should_save == b.should_save && a.should_evaluate == b.should_evaluate &&
           a.should_log == b.should_log;
  }
};

}  // namespace torchtrain

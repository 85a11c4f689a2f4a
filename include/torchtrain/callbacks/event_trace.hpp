// SPDX-License-Identifier: MIT
// EventTraceCallback: appends one JSON line per event to a file, for debugging any training loop.
#pragma once

#include <fstream>
#include <string>

#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// Each line is {"event": "on_step_end", "global_step": 3, "epoch": 1.5}, written and flushed as the event
/// happens, so the trace of a crashed run is complete up to the crash.
class EventTraceCallback : public TrainerCallback {
 public:
  explicit EventTraceCallback(const std::string& path) : path_(path), out_(path, std::ios::app) {
    if (!out_) throw ArgumentError("EventTraceCallback: cannot open '" + path + "' for appending");
  }

#define TORCHTRAIN_TRACE_EVENT(event)                                                \
  void event(const Args&, const State& state, Control&, const Context&) override { \
    write(#event, state);                                                            \
  }
  TORCHTRAIN_TRACE_EVENT(on_init_end)
  TORCHTRAIN_TRACE_EVENT(on_train_begin)
  TORCHTRAIN_TRACE_EVENT(on_train_end)
  TORCHTRAIN_TRACE_EVENT(on_epoch_begin)
  TORCHTRAIN_TRACE_EVENT(on_epoch_end)
  TORCHTRAIN_TRACE_EVENT(on_step_begin)
  TORCHTRAIN_TRACE_EVENT(on_substep_end)
  TORCHTRAIN_TRACE_EVENT(on_pre_optimizer_step)
  TORCHTRAIN_TRACE_EVENT(on_optimizer_step)
  TORCHTRAIN_TRACE_EVENT(on_step_end)
  TORCHTRAIN_TRACE_EVENT(on_evaluate)
  TORCHTRAIN_TRACE_EVENT(on_predict)
  TORCHTRAIN_TRACE_EVENT(on_save)
  TORCHTRAIN_TRACE_EVENT(on_log)
  TORCHTRAIN_TRACE_EVENT(on_prediction_step)
  TORCHTRAIN_TRACE_EVENT(on_exception)
#undef TORCHTRAIN_TRACE_EVENT

  const std::string& path() const { return path_; }

 private:
  void write(const char* event, const State& state) {
    nlohmann::ordered_json line{{"event", event}, {"global_step", state.global_step}};
    line["epoch"] = state.epoch ? nlohmann::ordered_json(*state.epoch) : nlohmann::ordered_json(nullptr);
    out_ << line.dump() << '\n' << std::flush;
  }

  std::string path_;
  std::ofstream out_;
};

}  // namespace torchtrain

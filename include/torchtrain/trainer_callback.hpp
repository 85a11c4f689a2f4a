// SPDX-License-Identifier: MIT
// TrainerCallback: the base class of everything that watches or steers the training loop.
#pragma once

#include <exception>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/type_name.hpp"
#include "torchtrain/trainer_control.hpp"
#include "torchtrain/trainer_state_fields.hpp"
#include "torchtrain/trainer_types.hpp"

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace torchtrain {

/// Events receive the arguments by reference only. A callback that reads their fields includes
/// <torchtrain/training_arguments_fields.hpp> (the struct alone) or <torchtrain/training_arguments.hpp> (also
/// validation and JSON, e.g. args.to_json_string()).
struct TrainingArguments;
class LRScheduler;
class HyperparameterTrial;

/// What Hugging Face passes to callbacks as keyword arguments. Pointers are null when the object does not
/// exist yet (the optimizer during on_init_end) or does not apply to the event (`logs` outside on_log).
struct CallbackContext {
  torch::nn::Module* model = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  LRScheduler* lr_scheduler = nullptr;
  const DataLoaderInfo* train_dataloader = nullptr;
  const DataLoaderInfo* eval_dataloader = nullptr;
  const LogEntry* logs = nullptr;      // on_log
  const Metrics* metrics = nullptr;    // on_evaluate, on_predict
  std::exception_ptr exception;        // on_exception
  HyperparameterTrial* trial = nullptr;  // during a hyperparameter_search trial (see MedianStoppingCallback)
};

/// Override only the events you need. Every event receives the arguments, the state, the shared control
/// (set its flags to steer the loop) and the context. A stateful callback also overrides state() and
/// restore_state(); its state is saved in every checkpoint and restored on resume.
class TrainerCallback {
 public:
  using Args = TrainingArguments;
  using State = TrainerState;
  using Control = TrainerControl;
  using Context = CallbackContext;

  virtual ~TrainerCallback() = default;

  virtual void on_init_end(const Args&, const State&, Control&, const Context&) {}
  virtual void on_train_begin(const Args&, const State&, Control&, const Context&) {}
  virtual void on_train_end(const Args&, const State&, Control&, const Context&) {}
  virtual void on_epoch_begin(const Args&, const State&, Control&, const Context&) {}
  virtual void on_epoch_end(const Args&, const State&, Control&, const Context&) {}
  virtual void on_step_begin(const Args&, const State&, Control&, const Context&) {}
  virtual void on_substep_end(const Args&, const State&, Control&, const Context&) {}
  virtual void on_pre_optimizer_step(const Args&, const State&, Control&, const Context&) {}
  virtual void on_optimizer_step(const Args&, const State&, Control&, const Context&) {}
  virtual void on_step_end(const Args&, const State&, Control&, const Context&) {}
  virtual void on_evaluate(const Args&, const State&, Control&, const Context&) {}
  virtual void on_predict(const Args&, const State&, Control&, const Context&) {}
  virtual void on_save(const Args&, const State&, Control&, const Context&) {}
  virtual void on_log(const Args&, const State&, Control&, const Context&) {}
  virtual void on_prediction_step(const Args&, const State&, Control&, const Context&) {}
  /// The loop threw (context.exception); called before the exception propagates.
  virtual void on_exception(const Args&, const State&, Control&, const Context&) {}

  /// The class name, used as the key in trainer_state.json's stateful_callbacks and in callback_list.
  virtual std::string name() const { return detail::unqualified_type_name(*this); }

  /// A stateful callback returns {"args": {...}, "attributes": {...}}; others return nothing.
  virtual std::optional<nlohmann::json> state() const { return std::nullopt; }
  /// Restores what state() returned. Throw if `saved` is malformed; leave the callback unchanged then.
  virtual void restore_state(const nlohmann::json& /*saved*/) {}
};

}  // namespace torchtrain

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
class GradScaler;
class HyperparameterTrial;

/// What Hugging Face passes to callbacks as keyword arguments. The Trainer keeps one context for its lifetime;
/// a pointer is null until the object it points to exists, and logs, metrics and exception are set only during
/// the events named next to them.
struct CallbackContext {
  torch::nn::Module* model = nullptr;            // from on_init_end; the new model once model_init made one
  torch::optim::Optimizer* optimizer = nullptr;  // from the first on_train_begin
  LRScheduler* lr_scheduler = nullptr;           // from the first on_train_begin
  GradScaler* grad_scaler = nullptr;             // on_train_begin on, when the run scales its loss (fp16)
  const DataLoaderInfo* train_dataloader = nullptr;  // from the first on_train_begin
  const DataLoaderInfo* eval_dataloader = nullptr;   // from the first evaluation or prediction: the latest one's
  const LogEntry* logs = nullptr;                    // on_log only: the entry just logged
  const Metrics* metrics = nullptr;                  // on_evaluate and on_predict only
  std::exception_ptr exception;                      // on_exception only: what train() threw
  HyperparameterTrial* trial = nullptr;  // in the train() of a hyperparameter_search trial (MedianStoppingCallback)
};

/// Override only the events you need. Every event receives the arguments, the state, the shared control
/// (set its flags to steer the loop) and the context. A stateful callback also overrides state() and
/// restore_state(); its state is saved in every checkpoint and restored on resume.
///
/// A step is one optimizer update; with gradient accumulation it takes several batches (substeps).
class TrainerCallback {
 public:
  using Args = TrainingArguments;
  using State = TrainerState;
  using Control = TrainerControl;
  using Context = CallbackContext;

  virtual ~TrainerCallback() = default;

  /// At the end of the Trainer's constructor, once the model is on its device. Of the context only `model` is
  /// set: no optimizer or data loader exists yet.
  virtual void on_init_end(const Args&, const State&, Control&, const Context&) {}
  /// At the start of train(), after the state is set up (or restored, on resume) and before the first epoch;
  /// `optimizer`, `lr_scheduler` and `train_dataloader` are set from here on.
  virtual void on_train_begin(const Args&, const State&, Control&, const Context&) {}
  /// At the end of train(), after the closing summary has been logged.
  virtual void on_train_end(const Args&, const State&, Control&, const Context&) {}
  /// At the start of each epoch, before its first batch.
  virtual void on_epoch_begin(const Args&, const State&, Control&, const Context&) {}
  /// At the end of each epoch, before the loop logs, evaluates or saves what the epoch end asks for.
  virtual void on_epoch_end(const Args&, const State&, Control&, const Context&) {}
  /// At the start of a training step, before its first batch; with gradient accumulation a step takes several.
  virtual void on_step_begin(const Args&, const State&, Control&, const Context&) {}
  /// After each batch of a gradient-accumulation step but the last, whose end is on_step_end.
  virtual void on_substep_end(const Args&, const State&, Control&, const Context&) {}
  /// Before the optimizer step, after the gradients were clipped (and averaged over the processes).
  virtual void on_pre_optimizer_step(const Args&, const State&, Control&, const Context&) {}
  /// After the optimizer step, before the scheduler steps and the gradients are zeroed.
  virtual void on_optimizer_step(const Args&, const State&, Control&, const Context&) {}
  /// At the end of a training step, once `global_step` and `epoch` count it; DefaultFlowCallback decides here
  /// whether to log, evaluate, save or stop.
  virtual void on_step_end(const Args&, const State&, Control&, const Context&) {}
  /// After an evaluation, with its metrics (`context.metrics`), once they have been logged.
  virtual void on_evaluate(const Args&, const State&, Control&, const Context&) {}
  /// After a successful predict(), with its metrics (`context.metrics`).
  virtual void on_predict(const Args&, const State&, Control&, const Context&) {}
  /// After a checkpoint has been saved (and old ones rotated out).
  virtual void on_save(const Args&, const State&, Control&, const Context&) {}
  /// After an entry has been logged (`context.logs`) and appended to `state.log_history`.
  virtual void on_log(const Args&, const State&, Control&, const Context&) {}
  /// After each batch of an evaluation or a prediction; `eval_dataloader` describes the data it runs over.
  virtual void on_prediction_step(const Args&, const State&, Control&, const Context&) {}
  /// When train() throws (`context.exception`), before the exception propagates. Not one of Hugging Face's.
  virtual void on_exception(const Args&, const State&, Control&, const Context&) {}

  /// The class name, used as the key in trainer_state.json's stateful_callbacks and in callback_list.
  virtual std::string name() const { return detail::unqualified_type_name(*this); }

  /// A stateful callback returns {"args": {...}, "attributes": {...}}; others return nothing.
  virtual std::optional<nlohmann::json> state() const { return std::nullopt; }
  /// Restores what state() returned. Throw if `saved` is malformed; leave the callback unchanged then.
  virtual void restore_state(const nlohmann::json& /*saved*/) {}
};

}  // namespace torchtrain

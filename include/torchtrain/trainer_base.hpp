// SPDX-License-Identifier: MIT
// TrainerBase: everything of the Trainer that does not depend on the model, data set or batch types: the run
// set-up and resume, the end of each optimizer step, logging, best-metric tracking, checkpoints, preemption and
// hyper-parameter search. Trainer<...> (trainer.hpp) adds the model, the data and the loops over batches.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "torchtrain/autocast.hpp"
#include "torchtrain/callback_handler.hpp"
#include "torchtrain/detail/compiled.hpp"
#include "torchtrain/detail/loss_tracker.hpp"
#include "torchtrain/grad_scaler.hpp"
#include "torchtrain/hyperparameter_trial.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/resume_from.hpp"
#include "torchtrain/run_plan.hpp"
#include "torchtrain/search_space.hpp"
#include "torchtrain/trainer_control.hpp"
#include "torchtrain/trainer_outputs.hpp"
#include "torchtrain/trainer_state.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

class PreemptionGuard;
class ProcessGroup;
namespace checkpoint {
struct ValidCheckpoint;
class BackgroundSave;
}

class TrainerBase {
 public:
  using CallbackPtr = CallbackHandler::CallbackPtr;

  virtual ~TrainerBase();
  TrainerBase(const TrainerBase&) = delete;
  TrainerBase& operator=(const TrainerBase&) = delete;

  // What HF's constructor takes; set any of these before train().
  TrainingArguments args;
  std::function<Metrics(const EvalPrediction&)> compute_metrics;
  /// Runs on each evaluation batch's logits and labels before they are kept for compute_metrics, as HF's
  /// preprocess_logits_for_metrics: an argmax there keeps token ids, not vocabulary-sized logits, for a whole
  /// evaluation set. Returns what compute_metrics receives as predictions.
  std::function<torch::Tensor(const torch::Tensor& logits, const torch::Tensor& labels)> preprocess_logits_for_metrics;
  /// Optional: created by train() when null (AdamW + the schedule of args.lr_scheduler_type). A second train()
  /// keeps the optimizer and builds a new schedule, unless you assigned lr_scheduler yourself.
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> lr_scheduler;
  /// Dynamic loss scaling: created by train() when args.fp16 and null, with PyTorch's defaults. Assign one to
  /// scale the loss in any other set-up (it works on any device). Its state is part of every checkpoint.
  std::shared_ptr<GradScaler> grad_scaler;
  /// While train() runs, SIGTERM and SIGINT make it write a checkpoint at the next step boundary and return
  /// early with TrainOutput::preempted_by set; a second signal ends the process at once (see PreemptionGuard).
  /// Set false to leave those signals to the program.
  bool handle_preemption_signals = true;

  TrainerState state;
  TrainerControl control;

  // Callbacks.
  void add_callback(CallbackPtr callback) { handler_.add_callback(std::move(callback)); }
  template <class T, class... CtorArgs>
  std::shared_ptr<T> add_callback(CtorArgs&&... ctor_args) {
    return handler_.add_callback<T>(std::forward<CtorArgs>(ctor_args)...);
  }
  template <class T>
  std::shared_ptr<T> pop_callback() { return handler_.pop_callback<T>(); }
  CallbackPtr pop_callback(const CallbackPtr& callback) { return handler_.pop_callback(callback); }
  template <class T>
  void remove_callback() { handler_.remove_callback<T>(); }
  void remove_callback(const CallbackPtr& callback) { handler_.remove_callback(callback); }
  const CallbackHandler& callback_handler() const { return handler_; }

  const torch::Device& device() const { return device_; }
  /// The distributed run this Trainer takes part in, or null in a single process.
  ProcessGroup* process_group() const { return group_.get(); }

  /// Runs the training loop. `trial` overrides TrainingArguments fields by name (values are cast to the
  /// field's type) and marks the state as a hyper-parameter search trial; a name that is not a field is an
  /// error unless model_init takes the trial.
  TrainOutput train(ResumeFrom resume_from_checkpoint = {}, const Trial& trial = {},
                    std::vector<std::string> ignore_keys_for_eval = {});

  /// Trains `n_trials` trials drawn from `hp_space` by `sampler` (random from a seed, or a grid), each with a
  /// fresh model from model_init, in its own folder `output_dir/run-<k>` (or hp_name's), and returns the best
  /// complete one by `direction` of compute_objective (default: default_compute_objective) over its last
  /// evaluation; a trial with no evaluation is evaluated once at its end. Every trial is recorded in
  /// output_dir/hp_search_results.json and .csv as it finishes; running the same search again skips the
  /// recorded trials and resumes an interrupted one from its newest valid checkpoint. Add a
  /// MedianStoppingCallback to prune poor trials. The arguments are restored when the search returns. SIGTERM or
  /// SIGINT during a trial saves its checkpoint and throws PreemptedError.
  BestRun hyperparameter_search(const SearchSpace& hp_space, int n_trials = 20,
                                Direction direction = Direction::minimize, Sampler sampler = Sampler::random(),
                                ObjectiveFunction compute_objective = {}, TrialNameFunction hp_name = {});

  /// Adds the epoch, appends the entry (with its step) to log_history and fires on_log.
  void log(LogEntry logs);

  /// Writes the model's parameters and buffers to `output_dir/model.pt` (or `dir/model.pt`); a plain LibTorch
  /// program reads them with torch::load(model, path).
  void save_model(std::optional<std::string> dir = std::nullopt);

  /// Writes trainer_state.json to output_dir.
  void save_state() const;

  /// Writes `<split>_results.json` and merges the metrics into `all_results.json`, as HF does.
  void save_metrics(const std::string& split, const Metrics& metrics, bool combined = true) const;

 protected:
  explicit TrainerBase(TrainingArguments arguments);

  // What only the Trainer template knows.
  virtual torch::nn::Module& module() = 0;
  virtual bool has_eval_dataset() const = 0;
  virtual bool has_model_init() const = 0;
  virtual bool model_init_takes_trial() const = 0;
  /// The whole run, as HF's _inner_training_loop.
  virtual TrainOutput inner_training_loop(ResumeFrom resume, const Trial& trial) = 0;
  /// Evaluates every eval set (what evaluate() does without a data set).
  virtual Metrics evaluate_eval_sets(const std::vector<std::string>& ignore_keys) = 0;

  /// Where training over a stream stands: the pass over it (the epoch), the micro-batches taken in that pass,
  /// and the stream's saved position when it can save one.
  struct StreamState {
    std::int64_t epoch = 0;
    std::int64_t batches = 0;
    std::optional<std::string> position;
  };
  /// While training over a stream, its state; nothing for a map-style dataset.
  virtual std::optional<StreamState> train_stream_state() { return std::nullopt; }
  /// Puts the training stream at `position`, saved after `batches` micro-batches of pass `epoch`.
  /// Returns false when the stream cannot restore a position.
  virtual bool restore_train_stream(std::int64_t /*epoch*/, std::int64_t /*batches*/, const std::string& /*position*/) {
    return false;
  }

  /// The end of the constructor: the callback list (DefaultFlowCallback, the reporters, the user's, then the
  /// progress display), the device and process group, and on_init_end.
  void finish_construction(std::vector<CallbackPtr> callbacks);

  /// A fresh state, the trial's arguments, the checks, the seed; drops a schedule an earlier train() built.
  void start_run(const Trial& trial);

  /// After model_init built a new model: it gets a new optimizer and schedule.
  void adopt_new_model();

  /// Creates what is missing of the optimizer and schedule, restores a checkpoint when resuming, and fires
  /// on_train_begin. Returns where the epochs start.
  ResumePoint begin_training(const RunPlan& plan, ResumeFrom resume, const DataLoaderInfo& train_loader);

  /// Whether the epoch loop goes on to epoch `epoch`.
  bool continue_epochs(std::int64_t epoch, const RunPlan& plan) const {
    return epoch < plan.num_train_epochs && !control.should_training_stop && state.global_step < plan.max_steps &&
           !preempted_by_;
  }

  /// An epoch that yielded no batch at all (a stream that is empty, or shorter than the run needs) stops the
  /// training, with Hugging Face's warning.
  void stop_after_empty_epoch();

  /// Distributed, the fewest micro-batches any rank could read for the current window: a stream that ends on
  /// one rank ends the epoch on all of them. Else `read`.
  std::int64_t agreed_window(std::int64_t read);

  /// Distributed, the examples of every rank together; else `examples`.
  std::size_t examples_over_ranks(std::size_t examples);

  /// A resume from a stream that cannot save its position reads and drops the batches before the checkpoint,
  /// with a warning that says so (Hugging Face's behaviour for every iterable dataset).
  void warn_replaying_stream(std::int64_t epoch, std::int64_t batches) const;

  /// Whether the batch loop of an epoch stops after the current micro-batch.
  bool stop_epoch() const { return preempted_by_ || control.should_epoch_stop || control.should_training_stop; }

  /// The scope of a model's forward: autocast to bfloat16 (args.bf16) or float16 (args.fp16), or to the dtype
  /// of a full-precision evaluation; nothing otherwise. An override of compute_loss that calls the model
  /// itself holds one around the call, as the built-in one does.
  AutocastGuard autocast() const { return AutocastGuard(device_.type(), autocast_dtype()); }
  std::optional<c10::ScalarType> autocast_dtype() const;

  /// loss.backward(), of the loss times the scale when there is a grad_scaler (HF's accelerator.backward).
  void backward(const torch::Tensor& loss) const {
    if (grad_scaler)
      grad_scaler->backward(loss);
    else
      loss.backward();
  }

  /// While it lives, an evaluation outside train() with bf16_full_eval or fp16_full_eval runs in that dtype:
  /// the model is cast to it (as in HF, it stays so afterwards) and the forward autocasts to it, so that float
  /// inputs meet the weights in the same dtype.
  class FullPrecisionEval {
   public:
    explicit FullPrecisionEval(TrainerBase& trainer);
    ~FullPrecisionEval() { trainer_.full_eval_dtype_.reset(); }
    FullPrecisionEval(const FullPrecisionEval&) = delete;
    FullPrecisionEval& operator=(const FullPrecisionEval&) = delete;

   private:
    TrainerBase& trainer_;
  };

  /// The micro-batch's loss, already divided by its accumulation window, after backward().
  void record_loss(const torch::Tensor& loss) { losses_.add(loss, state.global_step - last_logged_step_); }

  /// A micro-batch's loss as its share of the accumulation window: a loss `normalized_by_num_items` is already
  /// (distributed, with average_tokens_across_devices, it is multiplied by the number of processes, whose
  /// gradients are averaged); any other is divided by the window's length.
  torch::Tensor window_share(const torch::Tensor& loss, bool normalized_by_num_items) const;

  /// num_items_in_batch of a window whose batches have `labels`: their labels other than -100, over every
  /// process with average_tokens_across_devices; undefined when the labels are not class indices.
  torch::Tensor window_label_tokens(const std::vector<torch::Tensor>& labels);

  /// Adds a micro-batch's input tokens (over every process) to state.num_input_tokens_seen; -1 counts nothing.
  void count_input_tokens(std::int64_t tokens);

  /// Adds a micro-batch of `examples` on each process to the samples this train() processed, which
  /// train_samples_per_second counts.
  void count_train_samples(std::int64_t examples) { samples_this_run_ += examples * world_size(); }

  /// Whether args.include_for_metrics names `what` ("inputs" or "loss").
  bool includes_for_metrics(const std::string& what) const;

  /// The end of an accumulation window: the optimizer step with its events, the schedule, then on_step_end and
  /// whatever the callbacks asked for. `step` counts the micro-batches of `epoch`.
  void finish_update(std::int64_t epoch, std::int64_t step, std::int64_t steps_in_epoch);

  /// on_epoch_end and what the callbacks asked for; a preempted epoch ends after the resume instead.
  void end_epoch();

  /// After the last epoch: a late signal's checkpoint, the best model, the summary log and on_train_end.
  TrainOutput end_training();

  /// Logs an evaluation's metrics, fires on_evaluate and returns them with their epoch.
  Metrics report_evaluation(const Metrics& computed);

  /// Fires on_predict with the prediction's metrics.
  void report_prediction(const Metrics& metrics);

  /// The metrics of an evaluation loop over `num_batches` batches of `num_samples` examples, HF's keys: the
  /// mean loss (when the model gave one), compute_metrics' results, runtime and speeds, all under `prefix`.
  Metrics evaluation_metrics(const std::string& prefix, const torch::Tensor& loss_sum, const Metrics& computed,
                             std::size_t num_samples, std::size_t num_batches,
                             std::chrono::steady_clock::time_point started) const;

  /// The examples this process evaluates, in order: all of them, or, distributed, rank, rank + world, ...
  std::vector<std::size_t> evaluation_order(std::size_t num_examples) const;
  /// Distributed, the whole evaluation set's rows of `local` (undefined stays undefined); else `local`.
  torch::Tensor gathered_over_ranks(const torch::Tensor& local, std::size_t num_samples, const char* what);
  /// The evaluation loss summed over every rank's examples (distributed), or as it is.
  torch::Tensor summed_over_ranks(torch::Tensor loss_sum);

  int world_size() const;
  int rank() const;

  CallbackHandler handler_;
  CallbackContext context_;
  DataLoaderInfo train_info_, eval_info_;
  torch::Device device_{torch::kCPU};
  std::shared_ptr<ProcessGroup> group_;  // null in a single process
  std::vector<std::string> ignore_keys_for_eval_;
  std::int64_t current_gradient_accumulation_steps_ = 1;  // the micro-batches of the current window

 private:
  // Where the loop stands when it may log, evaluate or save; a checkpoint saved at a step after which
  // on_epoch_end follows (the epoch's last step, or a stop) has that epoch end run after a resume.
  enum class Boundary { step, last_step_of_epoch, epoch_end };

  // The few places where the loop itself, not a callback, sets a control flag.
  // (Distributed, agree_on_control then gives every rank rank 0's flags.)
  enum class LoopDecision {
    stay_stopped,   // a resumed checkpoint had stopped its run
    preempted,      // a signal asked the run to stop after its checkpoint
    already_saved,  // the pending epoch end of a resume: its save was the checkpoint itself
    empty_epoch,    // an epoch without a single batch
    save_new_best,  // save_strategy best: the evaluation found a new best metric...
    no_new_best,    // ...or did not
    saving_in_background,  // save_async: the checkpoint is handed to the writer; on_save follows when it is on disk
    save_point_continues,  // ...and that on_save, fired at the next save point, does not cancel that save
  };
  void loop_decides(LoopDecision decision);

  // Each process of a distributed run on CUDA takes the device of its LOCAL_RANK.
  static torch::Device choose_device(const TrainingArguments& a);

  void set_process_flags();

  // Mixed precision needs a device that has it (HF's messages); tf32 is applied to LibTorch when set.
  void set_up_precision() const;

  // Makes rank 0's control flags every rank's where callbacks decide (after on_step_end, on_evaluate and
  // on_epoch_end), together with any preemption signal one of the ranks received.
  void agree_on_control();

  // The mean over the ranks of a loss sum each rank kept of its own batches.
  double averaged(double value, const char* what);

  void check_eval_dataset() const;

  // A folder the run cannot write in is an error now rather than at its first checkpoint, hours later.
  void check_output_dir() const;

  // A trial key must be a TrainingArguments field, or be read by a model_init that takes the trial.
  void check_trial_key(const std::string& name, const nlohmann::json& fields, const std::string& where) const;

  void apply_trial(const Trial& trial);

  // The schedule of args.lr_scheduler_type over this run. Like PyTorch's schedulers, it starts from each param
  // group's initial lr (recorded the first time a schedule is built on the optimizer), not from the rate an
  // earlier run's schedule left behind.
  void create_scheduler(std::int64_t max_steps);

  static bool saved_stop_flag(const TrainerState& saved);

  // A stream's place in a checkpoint (loop_state.json and this process's data_state file), or nothing when the
  // checkpoint has none; the position only when the stream is to continue from it.
  std::optional<StreamState> saved_stream_position(const checkpoint::ValidCheckpoint& saved) const;

  void warn_if_no_default_flow() const;

  void warn_if_intervals_changed(const TrainerState& saved, std::int64_t max_steps) const;

  // Each process's random state cannot carry over to a different number of processes; the data position is
  // then where global_step falls in this run's (differently sized) epochs.
  void warn_if_world_size_changed(const std::filesystem::path& folder, int saved, const ResumePoint& start) const;

  void maybe_log_save_evaluate(Boundary where);

  // After SIGTERM/SIGINT: a checkpoint at this step boundary, written whatever save_strategy says because losing
  // the run costs more than one checkpoint, then on_save with should_training_stop set. Returns the signal, or 0.
  int save_if_preempted(Boundary where);

  // HF's _evaluate: the plateau schedule steps on the metric, and the best metric (and, with the best save
  // strategy, whether to save) follows the evaluation.
  void evaluate_during_training(bool track_best);

  double metric_value(const Metrics& metrics, std::string name) const;

  bool determine_best_metric(const Metrics& metrics);

  // Everything a checkpoint holds: the state with the callbacks' states, and the loop state. `preemption`:
  // written because of a signal, not because the save strategy asked for it, and always synchronously. Returns
  // whether the checkpoint is on disk (and rotated) now; with save_async it is written in the background, and
  // collect_background_save or finish_background_save completes it.
  bool save_checkpoint(Boundary where, bool preemption = false);

  // save_async: completes the checkpoint in flight once it is on disk, as a synchronous save would have at its
  // save point (rotation, then on_save with the state it holds); a failed write throws its CheckpointError.
  // collect_ only when the writer is done (as the ranks agreed at the last decision point); finish_ waits for it,
  // and says so when the next save had to wait. Distributed, every rank calls them at the same points and
  // follows rank 0's writer.
  void collect_background_save();
  void finish_background_save(bool before_next_save = false);
  void complete_background_save(int status);

  // After a checkpoint is on disk (rank 0): save_total_limit's rotation, by the best checkpoint `saved` names.
  void rotate_checkpoints(const TrainerState& saved) const;

  // Restores every stateful callback and the control from `saved`, or, if one of them throws, none of them.
  void restore_callback_states(const TrainerState& saved);

  void load_best_model();

  detail::LossTracker losses_{true};
  std::vector<torch::Tensor> parameters_;  // the model's, for clipping and averaging, during train()
  std::chrono::steady_clock::time_point started_;
  std::int64_t initial_num_input_tokens_seen_ = 0;  // state.num_input_tokens_seen when this run began
  std::int64_t first_step_this_run_ = 0;            // state.global_step when this run began
  std::int64_t samples_this_run_ = 0;               // over every process
  std::vector<std::int64_t> preemption_steps_;      // LoopState::preemption_steps
  std::int64_t last_logged_step_ = 0;
  std::int64_t last_saved_step_ = -1;  // a preemption does not save this step twice
  torch::Tensor last_grad_norm_;       // of the latest optimizer step, for the next log
  double last_learning_rate_ = 0.0;
  // The schedule train() built: while lr_scheduler is still that one, the next train() builds its own.
  std::weak_ptr<LRScheduler> created_lr_scheduler_;
  std::weak_ptr<torch::optim::Optimizer> initial_lrs_owner_;  // the optimizer initial_lrs_ belong to
  std::vector<double> initial_lrs_;
  std::optional<std::string> trial_name_;  // during hyperparameter_search: the trial's folder under output_dir
  const PreemptionGuard* preemption_ = nullptr;  // while train() runs, when it handles the signals
  bool in_train_ = false;
  std::optional<c10::ScalarType> full_eval_dtype_;  // during a FullPrecisionEval
  int agreed_signal_ = 0;                        // the preemption signal the ranks last agreed on
  // save_async: the host copies, the writer thread and the checkpoint in flight; rank 0's writer's state as the
  // ranks last agreed on it (kSave* below).
  std::unique_ptr<checkpoint::BackgroundSave> background_save_;
  int agreed_save_status_ = 0;
  std::int64_t save_points_that_waited_ = 0;  // in this train(), on rank 0
  static constexpr int kSaveWriting = 0, kSaveWritten = 1, kSaveFailed = 2;
  int preempted_by_ = 0;                         // the signal that stopped this run, once its checkpoint is saved
};

}  // namespace torchtrain

#ifndef TORCHTRAIN_COMPILED
#include "torchtrain/impl/trainer_base.hpp"
#endif

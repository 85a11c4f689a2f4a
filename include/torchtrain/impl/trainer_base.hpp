// SPDX-License-Identifier: MIT
// The definitions of TrainerBase's members: inline in the header-only default, compiled once into
// torchtrain::compiled otherwise (see detail/compiled.hpp).
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include <unistd.h>

#include "torchtrain/callbacks/default_flow.hpp"
#include "torchtrain/callbacks/printer.hpp"
#include "torchtrain/callbacks/progress.hpp"
#include "torchtrain/checkpoint.hpp"
#include "torchtrain/detail/clip_grad.hpp"
#include "torchtrain/detail/data_parallel.hpp"
#include "torchtrain/detail/edit_distance.hpp"
#include "torchtrain/detail/json_cast.hpp"
#include "torchtrain/detail/model_io.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/round.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/distributed.hpp"
#include "torchtrain/hyperparameter_search.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/loop_state.hpp"
#include "torchtrain/optimizer.hpp"
#include "torchtrain/preemption.hpp"
#include "torchtrain/results_files.hpp"
#include "torchtrain/trainer_base.hpp"

namespace torchtrain {

TORCHTRAIN_INLINE TrainerBase::TrainerBase(TrainingArguments arguments) : args(std::move(arguments)) { args.validate(); }

// Out of line, so that the compiled part holds the class's virtual table.
TORCHTRAIN_INLINE TrainerBase::~TrainerBase() = default;

TORCHTRAIN_INLINE TrainOutput TrainerBase::train(ResumeFrom resume_from_checkpoint, const Trial& trial,
                                                 std::vector<std::string> ignore_keys_for_eval) {
  std::optional<PreemptionGuard> preemption;
  if (handle_preemption_signals) preemption.emplace();
  preemption_ = preemption ? &*preemption : nullptr;
  struct Forget {  // the guard dies with this call
    const PreemptionGuard*& guard;
    bool& in_train;
    ~Forget() {
      guard = nullptr;
      in_train = false;
    }
  } forget{preemption_, in_train_};
  in_train_ = true;
  ignore_keys_for_eval_ = std::move(ignore_keys_for_eval);
  try {
    return inner_training_loop(std::move(resume_from_checkpoint), trial);
  } catch (...) {
    if (background_save_ && background_save_->in_flight()) {
      // The checkpoint in flight is completed (or its staging folder removed) before the exception goes on.
      try {
        background_save_->finish();
      } catch (const std::exception& e) {
        detail::warn(detail::error_text(e));
      }
    }
    context_.exception = std::current_exception();
    handler_.on_exception(args, state, control, context_);
    context_.exception = nullptr;
    throw;
  }
}

TORCHTRAIN_INLINE BestRun TrainerBase::hyperparameter_search(const SearchSpace& hp_space, int n_trials, Direction direction,
                                                             Sampler sampler, ObjectiveFunction compute_objective,
                                                             TrialNameFunction hp_name) {
  if (!has_model_init())
    throw ArgumentError("To use hyperparameter search, you need to pass your model through a model_init function.");
  const nlohmann::json fields = args.to_json();
  for (const auto& [name, distribution] : hp_space.parameters()) {
    if (name == "output_dir")
      throw ArgumentError(
          "hyperparameter_search: output_dir cannot be searched; each trial writes to output_dir/<trial name>");
    check_trial_key(name, fields, "hyperparameter_search: the search space's ");
  }
  const TrainingArguments base = args;
  detail::HyperparameterSearch search(hp_space, n_trials, direction, std::move(sampler), std::move(compute_objective),
                                      std::move(hp_name), base.output_dir);
  struct Restore {  // also when a trial throws
    TrainerBase& trainer;
    const TrainingArguments& base;
    ~Restore() {
      trainer.args = base;
      trainer.trial_name_.reset();
      trainer.context_.trial = nullptr;
    }
  } restore{*this, base};
  return search.run([&](HyperparameterTrial& trial) {
    args = base;
    trial_name_ = trial.name();
    context_.trial = &trial;
    const auto folder = std::filesystem::path(base.output_dir) / trial.name();
    const bool interrupted = checkpoint::get_last_checkpoint(folder).has_value();
    const TrainOutput out = train(interrupted ? ResumeFrom(true) : ResumeFrom(), trial.hyperparameters());
    context_.trial = nullptr;
    if (out.preempted_by)
      throw PreemptedError("hyperparameter_search: stopped by signal " + std::to_string(out.preempted_by) +
                               " in trial " + trial.name() +
                               " after saving its checkpoint; run the same search again to continue",
                           out.preempted_by);
    if (trial.intermediate_objectives(state).empty()) evaluate_eval_sets({});
    save_state();  // the trial's trainer_state.json, with its log_history, in its folder
    return trial.finish(state);
  });
}

TORCHTRAIN_INLINE void TrainerBase::log(LogEntry logs) {
  if (state.epoch) logs["epoch"] = *state.epoch;
  if (args.include_num_input_tokens_seen != "no") logs["num_input_tokens_seen"] = state.num_input_tokens_seen;
  LogEntry entry = logs;
  entry["step"] = state.global_step;
  state.log_history.push_back(std::move(entry));
  context_.logs = &logs;
  handler_.on_log(args, state, control, context_);
  context_.logs = nullptr;
}

TORCHTRAIN_INLINE void TrainerBase::save_model(std::optional<std::string> dir) {
  if (!state.is_world_process_zero) return;
  const std::filesystem::path folder = dir.value_or(args.output_dir);
  std::filesystem::create_directories(folder);
  checkpoint::save_module(module(), folder / checkpoint::kModelFile);
}

TORCHTRAIN_INLINE void TrainerBase::save_state() const {
  if (!state.is_world_process_zero) return;
  std::filesystem::create_directories(args.output_dir);
  checkpoint::write_file_atomically(std::filesystem::path(args.output_dir) / checkpoint::kTrainerStateFile,
                                    state.to_json_string());
}

TORCHTRAIN_INLINE void TrainerBase::save_metrics(const std::string& split, const Metrics& metrics, bool combined) const {
  if (!state.is_world_process_zero) return;
  torchtrain::save_metrics(args.output_dir, split, metrics, combined);
}

TORCHTRAIN_INLINE void TrainerBase::finish_construction(std::vector<CallbackPtr> callbacks) {
  handler_.add_callback(std::make_shared<DefaultFlowCallback>());
  for (auto& cb : get_reporting_integration_callbacks(args.report_to)) handler_.add_callback(std::move(cb));
  for (auto& cb : callbacks) handler_.add_callback(std::move(cb));
  if (args.disable_tqdm)
    handler_.add_callback(std::make_shared<PrinterCallback>());
  else
    handler_.add_callback(std::make_shared<ProgressCallback>());
  check_eval_dataset();
  device_ = choose_device(args);
  set_up_precision();
  group_ = world_process_group(std::chrono::seconds(args.ddp_timeout), device_);
  set_process_flags();
  module().to(device_);
  context_.model = &module();
  handler_.on_init_end(args, state, control, context_);
}

TORCHTRAIN_INLINE void TrainerBase::start_run(const Trial& trial) {
  state = TrainerState();
  set_process_flags();
  agreed_signal_ = 0;
  apply_trial(trial);
  args.validate();
  args.warn_deprecated_fields();
  set_up_precision();
  check_eval_dataset();
  check_output_dir();
  if (state.is_world_process_zero) checkpoint::remove_stale_staging(args.output_dir);
  torch::manual_seed(args.seed);
  // A schedule the Trainer made is for one run; one the user assigned, even after a run, is kept.
  if (lr_scheduler && lr_scheduler == created_lr_scheduler_.lock()) lr_scheduler.reset();
}

TORCHTRAIN_INLINE void TrainerBase::adopt_new_model() {
  module().to(device_);
  context_.model = &module();
  optimizer.reset();
  lr_scheduler.reset();
}

TORCHTRAIN_INLINE ResumePoint TrainerBase::begin_training(const RunPlan& plan, ResumeFrom resume, const DataLoaderInfo& train_loader) {
  state.train_batch_size = args.per_device_train_batch_size;
  state.compute_steps(args, plan.max_steps);
  if (!optimizer) optimizer = create_optimizer(module(), args);
  if (!lr_scheduler) create_scheduler(plan.max_steps);
  if (args.fp16 && !grad_scaler) grad_scaler = std::make_shared<GradScaler>();
  losses_ = detail::LossTracker(args.logging_nan_inf_filter);
  LoopState loop;
  ResumePoint start;
  bool stopped_before = false;
  if (resume) {
    auto resumed = checkpoint::resolve(resume.latest(), resume.path(), args.output_dir);
    const std::filesystem::path folder = resumed.folder;
    const auto stream = plan.streaming ? saved_stream_position(resumed) : std::nullopt;
    if (stream && stream->position) {  // first: a position the stream rejects changes nothing else
      try {
        start.stream_restored = restore_train_stream(stream->epoch, stream->batches, *stream->position);
      } catch (const std::exception& e) {
        throw CheckpointError("cannot load checkpoint " + folder.string() + ": " +
                              checkpoint::data_state_file_name(rank(), world_size()) + ": " + detail::error_text(e) +
                              "; nothing was changed");
      }
    }
    // All or nothing: if the callbacks reject their states, the model and optimizer are put back too.
    auto loaded = checkpoint::load(
        std::move(resumed), module(), optimizer.get(), lr_scheduler.get(),
        [&](const TrainerState& saved) {
          if (args.restore_callback_states_from_checkpoint) restore_callback_states(saved);
        },
        checkpoint::rng_file_name(group_ ? group_->rank() : 0, world_size()));
    const TrainerState saved = loaded.state;
    state = std::move(loaded.state);
    warn_if_intervals_changed(saved, plan.max_steps);
    state.compute_steps(args, plan.max_steps);
    // A stop decided by a callback persists, as part of the restored callback states; the stop at the end of
    // a shorter run does not. The checkpoint's control decides, never a flag left by an earlier train().
    const bool ended_its_run = saved.global_step >= saved.max_steps;
    stopped_before = args.restore_callback_states_from_checkpoint && saved_stop_flag(saved) &&
                     !(ended_its_run && state.global_step < plan.max_steps);
    LoopState defaults;  // what an older checkpoint leaves out
    defaults.last_logged_step = state.global_step;
    loop = LoopState::from_json(loaded.loop_state, defaults);
    if (stream) {
      start.epochs_trained = stream->epoch;
      start.batches_to_skip = stream->batches;
    } else {
      start = plan.resume_point(state.global_step, args.ignore_data_skip, args.gradient_accumulation_steps);
    }
    warn_if_world_size_changed(folder, loop.world_size, start);
    if (rank() == 0)
      detail::inform("Resuming from " + folder.filename().string() + " (global step " +
                     std::to_string(state.global_step) + ", epoch " +
                     detail::python_float_repr(detail::round_to(state.epoch.value_or(0.0), 2)) + ")");
  }
  state.max_steps = plan.max_steps;
  state.num_train_epochs = plan.num_train_epochs;
  set_process_flags();
  state.train_batch_size = args.per_device_train_batch_size;

  context_.optimizer = optimizer.get();
  context_.lr_scheduler = lr_scheduler.get();
  context_.grad_scaler = grad_scaler.get();
  train_info_ = train_loader;
  context_.train_dataloader = &train_info_;
  losses_.restore({loop.interval_loss, loop.total_loss});
  last_logged_step_ = loop.last_logged_step;
  last_learning_rate_ = loop.learning_rate;
  last_grad_norm_ = loop.grad_norm ? torch::tensor(*loop.grad_norm) : torch::Tensor();
  if (grad_scaler && loop.grad_scaler) grad_scaler->load_state(*loop.grad_scaler);  // checked by from_json
  last_saved_step_ = -1;
  save_points_that_waited_ = 0;
  preemption_steps_ = loop.preemption_steps;
  // ...unless a longer run now continues in the middle of that epoch.
  const bool epoch_end_pending =
      loop.epoch_end_pending && (state.global_step % plan.updates_per_epoch == 0 || stopped_before);

  if (group_) detail::broadcast_module(*group_, module());  // every rank starts from rank 0's weights
  module().train();
  // Gradients left by user code, or by an earlier run stopped inside an accumulation window, are not ours.
  module().zero_grad(/*set_to_none=*/true);
  parameters_ = module().parameters();  // clipped and cleared, as HF does
  warn_if_no_default_flow();
  started_ = std::chrono::steady_clock::now();
  initial_num_input_tokens_seen_ = state.num_input_tokens_seen;
  first_step_this_run_ = state.global_step;
  samples_this_run_ = 0;
  handler_.on_train_begin(args, state, control, context_);
  if (stopped_before) loop_decides(LoopDecision::stay_stopped);
  if (args.eval_on_start && !resume) evaluate_during_training(/*track_best=*/false);  // not again on resume
  preempted_by_ = 0;
  if (epoch_end_pending) {  // the checkpoint was written at its epoch's last step, before the epoch's end
    loop_decides(LoopDecision::already_saved);
    end_epoch();
  }
  return start;
}

TORCHTRAIN_INLINE std::optional<TrainerBase::StreamState> TrainerBase::saved_stream_position(
    const checkpoint::ValidCheckpoint& saved) const {
  const auto loop_text = saved.contents(checkpoint::kLoopStateFile);
  if (!loop_text) return std::nullopt;
  const LoopState loop = [&] {
    try {
      return LoopState::from_json(nlohmann::json::parse(*loop_text));
    } catch (const std::exception& e) {
      throw CheckpointError("cannot load checkpoint " + saved.folder.string() + ": " + checkpoint::kLoopStateFile +
                            ": " + detail::error_text(e) + "; nothing was changed");
    }
  }();
  // A checkpoint of a map-style run: the position comes from global_step, as Hugging Face has it.
  if (!loop.stream_position) return std::nullopt;
  StreamState position{loop.stream_position->epoch, args.ignore_data_skip ? 0 : loop.stream_position->batches, {}};
  // Another number of processes read other shares of the stream: the position is replayed instead.
  const auto file = checkpoint::data_state_file_name(rank(), world_size());
  if (position.batches > 0 && loop.world_size == world_size())
    if (const auto bytes = saved.contents(file)) position.position = std::string(*bytes);
  return position;
}

TORCHTRAIN_INLINE void TrainerBase::stop_after_empty_epoch() {
  detail::warn("There seems not to be a single sample in your epoch_iterator, stopping training at step " +
               std::to_string(state.global_step) +
               "! This is expected if you're using an IterableDataset and set num_steps (" +
               std::to_string(state.max_steps) + ") higher than the number of available samples.");
  loop_decides(LoopDecision::empty_epoch);
}

TORCHTRAIN_INLINE std::int64_t TrainerBase::agreed_window(std::int64_t read) {
  if (!group_) return read;
  auto count = torch::tensor(std::vector<std::int64_t>{read}, torch::kLong).to(group_->device());
  group_->all_reduce(count, "agreeing on the batches the stream still has", c10d::ReduceOp::MIN);
  return count.to(torch::kCPU).item<std::int64_t>();
}

TORCHTRAIN_INLINE std::size_t TrainerBase::examples_over_ranks(std::size_t examples) {
  if (!group_) return examples;
  auto count = torch::tensor(std::vector<std::int64_t>{static_cast<std::int64_t>(examples)}, torch::kLong);
  count = count.to(group_->device());
  group_->all_reduce(count, "counting the evaluation examples");
  return static_cast<std::size_t>(count.to(torch::kCPU).item<std::int64_t>());
}

TORCHTRAIN_INLINE void TrainerBase::warn_replaying_stream(std::int64_t epoch, std::int64_t batches) const {
  if (rank() != 0) return;
  detail::warn("The train dataset is a stream without a saved position (it has no save() and load()): resuming "
               "reads and drops its first " + std::to_string(batches) + " batches of epoch " +
               std::to_string(epoch) +
               ", which takes as long as reading them. Give the dataset save() and load() (LibTorch's "
               "StatefulDataset) to resume at once, or set ignore_data_skip to start the epoch from its beginning.");
}

TORCHTRAIN_INLINE void TrainerBase::finish_update(std::int64_t epoch, std::int64_t step, std::int64_t steps_in_epoch) {
  if (group_) detail::average_gradients(*group_, parameters_);
  // As HF v5.3, the norm is logged even when max_grad_norm <= 0 turns clipping off.
  if (grad_scaler)
    last_grad_norm_ = grad_scaler->unscale_and_clip(parameters_, args.max_grad_norm);
  else
    last_grad_norm_ = args.max_grad_norm > 0 ? detail::clip_grad_norm(parameters_, args.max_grad_norm)
                                             : detail::total_grad_norm(parameters_);
  handler_.on_pre_optimizer_step(args, state, control, context_);
  // Gradients that are not finite skip the update, and, as HF, the schedule does not advance; global_step does.
  const bool skipped = grad_scaler && grad_scaler->step_skipped();
  if (!skipped) optimizer->step();
  if (grad_scaler) grad_scaler->update();
  handler_.on_optimizer_step(args, state, control, context_);
  last_learning_rate_ = lr_scheduler->get_last_lr().front();
  if (!skipped && !lr_scheduler->steps_on_metric()) lr_scheduler->step();
  module().zero_grad(/*set_to_none=*/true);
  ++state.global_step;
  state.epoch = static_cast<double>(epoch) + static_cast<double>(step + 1) / static_cast<double>(steps_in_epoch);
  handler_.on_step_end(args, state, control, context_);
  agree_on_control();
  const Boundary where = step + 1 == steps_in_epoch ? Boundary::last_step_of_epoch : Boundary::step;
  maybe_log_save_evaluate(where);
  preempted_by_ = save_if_preempted(where);
  collect_background_save();
}

TORCHTRAIN_INLINE void TrainerBase::end_epoch() {
  if (preempted_by_) return;
  handler_.on_epoch_end(args, state, control, context_);
  agree_on_control();
  maybe_log_save_evaluate(Boundary::epoch_end);
  preempted_by_ = save_if_preempted(Boundary::epoch_end);
  collect_background_save();
}

TORCHTRAIN_INLINE TrainOutput TrainerBase::end_training() {
  finish_background_save();
  if (save_points_that_waited_ > 1)
    detail::inform(std::to_string(save_points_that_waited_) + " save points waited for the previous checkpoint to be "
                   "written; save less often to train without waiting");
  if (!preempted_by_) preempted_by_ = save_if_preempted(Boundary::epoch_end);
  // A preempted run is not at its end: the best model is loaded, and the others deleted, when it finishes.
  if (args.load_best_model_at_end && state.best_model_checkpoint && !preempted_by_) load_best_model();

  const double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  const double train_loss = averaged(losses_.total(), "averaging the training loss") /
                            std::max<double>(static_cast<double>(state.global_step), 0.001);
  LogEntry summary;
  summary["train_runtime"] = detail::round_to(runtime, 4);
  // What this run processed, not what the plan had: an early stop or a resume changes both.
  summary["train_samples_per_second"] = detail::round_to(static_cast<double>(samples_this_run_) / runtime, 3);
  summary["train_steps_per_second"] =
      detail::round_to(static_cast<double>(state.global_step - first_step_this_run_) / runtime, 3);
  summary["total_flos"] = state.total_flos;
  summary["train_loss"] = train_loss;
  log(summary);
  Metrics metrics = state.log_history.back();
  metrics.erase("step");

  if (!preempted_by_ && state.is_world_process_zero && state.best_model_checkpoint && args.save_total_limit == 1)
    checkpoint::delete_all_but_best(args.output_dir, *state.best_model_checkpoint);
  handler_.on_train_end(args, state, control, context_);
  return {state.global_step, train_loss, metrics, preempted_by_};
}

TORCHTRAIN_INLINE Metrics TrainerBase::report_evaluation(const Metrics& computed) {
  log(computed);
  Metrics metrics = state.log_history.back();
  metrics.erase("step");
  context_.metrics = &metrics;
  handler_.on_evaluate(args, state, control, context_);
  context_.metrics = nullptr;
  agree_on_control();
  return metrics;
}

TORCHTRAIN_INLINE void TrainerBase::report_prediction(const Metrics& metrics) {
  context_.metrics = &metrics;
  handler_.on_predict(args, state, control, context_);
  context_.metrics = nullptr;
}

TORCHTRAIN_INLINE Metrics TrainerBase::evaluation_metrics(const std::string& prefix, const torch::Tensor& loss_sum, const Metrics& computed,
                             std::size_t num_samples, std::size_t num_batches,
                             std::chrono::steady_clock::time_point started) const {
  Metrics m;
  if (loss_sum.defined()) m[prefix + "_loss"] = loss_sum.item<double>() / static_cast<double>(num_samples);
  for (auto& [key, value] : computed.items()) m[key.rfind(prefix + "_", 0) == 0 ? key : prefix + "_" + key] = value;
  const double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  m[prefix + "_runtime"] = detail::round_to(runtime, 4);
  m[prefix + "_samples_per_second"] = detail::round_to(static_cast<double>(num_samples) / runtime, 3);
  m[prefix + "_steps_per_second"] = detail::round_to(static_cast<double>(num_batches) / runtime, 3);
  return m;
}

TORCHTRAIN_INLINE int TrainerBase::world_size() const { return group_ ? group_->world_size() : 1; }

TORCHTRAIN_INLINE int TrainerBase::rank() const { return group_ ? group_->rank() : 0; }

TORCHTRAIN_INLINE torch::Tensor TrainerBase::window_share(const torch::Tensor& loss, bool normalized_by_num_items) const {
  if (normalized_by_num_items)
    return group_ && args.average_tokens_across_devices ? loss * static_cast<double>(world_size()) : loss;
  return current_gradient_accumulation_steps_ > 1 ? loss / static_cast<double>(current_gradient_accumulation_steps_)
                                                  : loss;
}

TORCHTRAIN_INLINE torch::Tensor TrainerBase::window_label_tokens(const std::vector<torch::Tensor>& labels) {
  if (labels.empty() || !detail::are_class_indices(labels.front())) return {};
  // A window of one batch in one process: the batch's own mean over its tokens is the window's, without a count.
  const bool across_ranks = group_ && args.average_tokens_across_devices;
  if (labels.size() == 1 && !across_ranks) return {};
  torch::Tensor count = detail::count_label_tokens(labels.front());
  for (std::size_t k = 1; k < labels.size(); ++k) count = count + detail::count_label_tokens(labels[k]);
  count = count.reshape({1});
  if (across_ranks) group_->all_reduce(count, "counting the label tokens");
  return count.reshape({});
}

TORCHTRAIN_INLINE void TrainerBase::count_input_tokens(std::int64_t tokens) {
  if (tokens < 0) return;
  if (group_) {
    auto total = torch::tensor({tokens}, torch::kLong).to(group_->device());
    group_->all_reduce(total, "counting the input tokens");
    tokens = total.item<std::int64_t>();
  }
  state.num_input_tokens_seen += tokens;
}

TORCHTRAIN_INLINE bool TrainerBase::includes_for_metrics(const std::string& what) const {
  return std::find(args.include_for_metrics.begin(), args.include_for_metrics.end(), what) !=
         args.include_for_metrics.end();
}

TORCHTRAIN_INLINE std::vector<std::size_t> TrainerBase::evaluation_order(std::size_t num_examples) const {
  if (group_) return detail::evaluation_shard(num_examples, rank(), world_size());
  std::vector<std::size_t> order(num_examples);
  std::iota(order.begin(), order.end(), std::size_t{0});
  return order;
}

TORCHTRAIN_INLINE torch::Tensor TrainerBase::gathered_over_ranks(const torch::Tensor& local, std::size_t num_samples,
                                                                 const char* what) {
  return group_ ? detail::gather_evaluation(*group_, local, num_samples, what) : local;
}

TORCHTRAIN_INLINE torch::Tensor TrainerBase::summed_over_ranks(torch::Tensor loss_sum) {
  if (!group_) return loss_sum;
  const auto sums = detail::average_over_ranks(
      *group_, {loss_sum.defined() ? loss_sum.item<double>() : 0.0, loss_sum.defined() ? 1.0 : 0.0},
      "summing the evaluation loss");
  return sums[1] > 0 ? torch::tensor(sums[0] * world_size(), torch::kDouble) : loss_sum;
}

TORCHTRAIN_INLINE void TrainerBase::loop_decides(LoopDecision decision) {
  switch (decision) {
    case LoopDecision::stay_stopped:
    case LoopDecision::preempted:
    case LoopDecision::empty_epoch:
      control.should_training_stop = true;
      break;
    case LoopDecision::save_new_best:
    case LoopDecision::save_point_continues:
      control.should_save = true;
      break;
    case LoopDecision::already_saved:
    case LoopDecision::no_new_best:
    case LoopDecision::saving_in_background:
      control.should_save = false;
      break;
  }
}

TORCHTRAIN_INLINE torch::Device TrainerBase::choose_device(const TrainingArguments& a) {
  if (a.use_cpu || !torch::cuda::is_available()) return torch::Device(torch::kCPU);
  const auto env = DistributedEnvironment::from_environment();
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env ? env->local_rank : 0));
}

TORCHTRAIN_INLINE void TrainerBase::set_up_precision() const {
  if (!device_.is_cuda()) {
    if (args.fp16) throw ArgumentError("fp16 mixed precision requires a GPU (not '" + device_.str() + "').");
    if (args.fp16_full_eval) throw ArgumentError("fp16_full_eval requires a GPU (not '" + device_.str() + "').");
    if (args.tf32.value_or(false))
      throw ArgumentError("--tf32 requires Ampere or a newer GPU arch, cuda>=11 and torch>=1.7");
  }
  if (args.tf32 && device_.is_cuda()) detail::set_tf32(*args.tf32);
}

TORCHTRAIN_INLINE std::optional<c10::ScalarType> TrainerBase::autocast_dtype() const {
  if (full_eval_dtype_) return full_eval_dtype_;
  if (args.bf16) return c10::ScalarType::BFloat16;
  if (args.fp16) return c10::ScalarType::Half;
  return std::nullopt;
}

TORCHTRAIN_INLINE TrainerBase::FullPrecisionEval::FullPrecisionEval(TrainerBase& trainer) : trainer_(trainer) {
  const auto& a = trainer.args;
  if (trainer.in_train_ || !(a.bf16_full_eval || a.fp16_full_eval)) return;
  trainer.full_eval_dtype_ = a.bf16_full_eval ? c10::ScalarType::BFloat16 : c10::ScalarType::Half;
  trainer.module().to(*trainer.full_eval_dtype_);
}

TORCHTRAIN_INLINE void TrainerBase::set_process_flags() {
  state.is_world_process_zero = !group_ || group_->rank() == 0;
  state.is_local_process_zero = !group_ || group_->local_rank() == 0;
}

TORCHTRAIN_INLINE void TrainerBase::agree_on_control() {
  if (!group_) return;
  const bool writing = background_save_ && background_save_->in_flight() && group_->rank() == 0;
  const int save_status = !writing || !background_save_->done() ? kSaveWriting
                          : background_save_->failed()          ? kSaveFailed
                                                                : kSaveWritten;
  const auto agreed = detail::agree_on_control(*group_, control, preemption_ ? preemption_->signal() : 0, save_status);
  agreed_signal_ = agreed.signal;
  agreed_save_status_ = agreed.save_status;
}

TORCHTRAIN_INLINE double TrainerBase::averaged(double value, const char* what) {
  return group_ ? detail::average_over_ranks(*group_, {value}, what).front() : value;
}

TORCHTRAIN_INLINE void TrainerBase::check_eval_dataset() const {
  if (args.eval_strategy != IntervalStrategy::no && !has_eval_dataset())
    throw ArgumentError("TrainingArguments.eval_strategy = " + to_string(args.eval_strategy) +
                        " needs an eval dataset; pass one to the Trainer or set eval_strategy to no");
  if ((args.save_strategy == SaveStrategy::best || args.load_best_model_at_end) && !args.metric_for_best_model)
    throw ArgumentError("save_strategy best and load_best_model_at_end need metric_for_best_model; set it");
}

TORCHTRAIN_INLINE void TrainerBase::check_output_dir() const {
  namespace fs = std::filesystem;
  // The folder, or the nearest folder above it that exists, in which the run will create it.
  fs::path existing = args.output_dir.empty() ? fs::path(".") : fs::path(args.output_dir);
  std::error_code error;
  while (!fs::exists(existing, error) && existing.has_relative_path()) existing = existing.parent_path();
  if (existing.empty()) existing = ".";
  const std::string where = "output_dir '" + args.output_dir + "': ";
  if (!fs::is_directory(existing, error))
    throw ArgumentError(where + "'" + existing.string() + "' is a file, not a folder; pass another output_dir, or "
                        "move the file away");
  if (::access(existing.c_str(), W_OK | X_OK) != 0)
    throw ArgumentError(where + "cannot write in '" + existing.string() + "' (" + std::strerror(errno) +
                        "); pass an output_dir in a folder you can write to");
}

TORCHTRAIN_INLINE void TrainerBase::check_trial_key(const std::string& name, const nlohmann::json& fields, const std::string& where) const {
  if (fields.contains(name) || model_init_takes_trial()) return;
  std::vector<std::string> names;
  for (const auto& [field, value] : fields.items()) names.push_back(field);
  const std::string guess = detail::closest_name(name, names);
  throw ArgumentError(where + "'" + name + "' is not a TrainingArguments field" +
                      (guess.empty() ? "" : " (did you mean '" + guess + "'?)") +
                      "; to vary the model, assign model_init a function taking const Trial&");
}

TORCHTRAIN_INLINE void TrainerBase::apply_trial(const Trial& trial) {
  if (trial.empty() && !trial_name_) return;
  nlohmann::json fields = args.to_json();
  for (const auto& [name, value] : trial) {
    check_trial_key(name, fields, "trial: ");
    if (fields.contains(name)) fields[name] = detail::cast_like(fields[name], value, name);
  }
  if (trial_name_)
    fields["output_dir"] = (std::filesystem::path(fields["output_dir"].get<std::string>()) / *trial_name_).string();
  args = TrainingArguments::from_json(fields, "trial");
  args.validate();
  state.is_hyper_param_search = true;
  state.trial_name = trial_name_;
  state.trial_params = nlohmann::json(trial);
}

TORCHTRAIN_INLINE void TrainerBase::create_scheduler(std::int64_t max_steps) {
  auto& groups = optimizer->param_groups();
  if (initial_lrs_owner_.lock() != optimizer || initial_lrs_.size() != groups.size()) {
    initial_lrs_owner_ = optimizer;
    initial_lrs_.clear();
    for (const auto& group : groups) initial_lrs_.push_back(group.options().get_lr());
  } else {
    for (std::size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(initial_lrs_[i]);
  }
  lr_scheduler = get_scheduler(args.lr_scheduler_type, *optimizer, args.get_warmup_steps(max_steps), max_steps,
                               args.lr_scheduler_kwargs);
  created_lr_scheduler_ = lr_scheduler;
}

TORCHTRAIN_INLINE bool TrainerBase::saved_stop_flag(const TrainerState& saved) {
  const auto states = saved.stateful_callback_states("TrainerControl");
  if (states.empty()) return false;
  TrainerControl saved_control;
  saved_control.restore_state(states.front());
  return saved_control.should_training_stop;
}

TORCHTRAIN_INLINE void TrainerBase::warn_if_no_default_flow() const {
  for (const auto& cb : handler_.callbacks())
    if (dynamic_cast<const DefaultFlowCallback*>(cb.get())) return;
  detail::warn("The Trainer will not work properly if you don't have a DefaultFlowCallback in its callbacks: "
               "it will never log, evaluate or save by itself. Add one before training with "
               "trainer.add_callback<DefaultFlowCallback>(). The current list of callbacks is:\n" +
               handler_.callback_list());
}

TORCHTRAIN_INLINE void TrainerBase::warn_if_intervals_changed(const TrainerState& saved, std::int64_t max_steps) const {
  TrainerState now;
  now.compute_steps(args, max_steps);
  std::string changed;
  auto check = [&](const char* name, std::int64_t before, std::int64_t after) {
    if (before != after)
      changed += std::string(changed.empty() ? "" : ", ") + name + " " + std::to_string(before) + " -> " +
                 std::to_string(after);
  };
  check("logging_steps", saved.logging_steps, now.logging_steps);
  check("eval_steps", saved.eval_steps, now.eval_steps);
  check("save_steps", saved.save_steps, now.save_steps);
  if (saved.train_batch_size && *saved.train_batch_size != args.per_device_train_batch_size)
    check("train_batch_size", *saved.train_batch_size, args.per_device_train_batch_size);
  if (!changed.empty())
    detail::warn("Resuming with different intervals than the checkpoint's (" + changed +
                 "); the current arguments are used.");
}

TORCHTRAIN_INLINE void TrainerBase::warn_if_world_size_changed(const std::filesystem::path& folder, int saved, const ResumePoint& start) const {
  if (saved == world_size()) return;
  const auto ga = args.gradient_accumulation_steps;
  detail::warn("Resuming from " + folder.string() + ", written by " + std::to_string(saved) +
               " process(es), with " + std::to_string(world_size()) +
               ": the per-process random states are not restored, and the data position is recomputed for " +
               std::to_string(world_size()) + " process(es) (epoch " + std::to_string(start.epochs_trained) +
               ", update " + std::to_string(start.batches_to_skip / ga) +
               " of the epoch); the run continues but does not repeat an "
               "uninterrupted one. Resume with " + std::to_string(saved) + " process(es) for an exact continuation.");
}

TORCHTRAIN_INLINE void TrainerBase::maybe_log_save_evaluate(Boundary where) {
  if (control.should_log && state.global_step > last_logged_step_) {
    // The one host-device sync (and, distributed, the one loss all-reduce), at logging steps only.
    const double interval_loss = averaged(losses_.take_interval(), "averaging the logged loss");
    LogEntry logs;
    logs["loss"] = interval_loss / static_cast<double>(state.global_step - last_logged_step_);  // unrounded, as v5
    if (last_grad_norm_.defined()) logs["grad_norm"] = last_grad_norm_.item<double>();
    logs["learning_rate"] = last_learning_rate_;
    if (args.include_num_input_tokens_seen != "no") {  // HF: the speed of this session's tokens
      const double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      logs["train_runtime"] = detail::round_to(runtime, 4);
      if (runtime > 0)
        logs["train_tokens_per_second"] = detail::round_to(
            static_cast<double>(state.num_input_tokens_seen - initial_num_input_tokens_seen_) / runtime, 3);
    }
    last_logged_step_ = state.global_step;
    log(std::move(logs));
  }
  if (control.should_evaluate) evaluate_during_training(/*track_best=*/true);
  if (control.should_save && save_checkpoint(where)) handler_.on_save(args, state, control, context_);
}

TORCHTRAIN_INLINE int TrainerBase::save_if_preempted(Boundary where) {
  // Distributed, only the signal agreed on at the last decision point counts, so all ranks stop together.
  const int signal = group_ ? agreed_signal_ : preemption_ ? preemption_->signal() : 0;
  if (signal == 0) return 0;
  const bool save = last_saved_step_ != state.global_step;
  if (save) save_checkpoint(where, /*preemption=*/true);  // before the stop flag, which it must not carry
  finish_background_save();  // a save at this step that is still in flight
  loop_decides(LoopDecision::preempted);
  if (save) handler_.on_save(args, state, control, context_);
  if (rank() == 0) {
    const std::string name = signal == SIGTERM ? "SIGTERM"
                             : signal == SIGINT ? "SIGINT"
                                                : "signal " + std::to_string(signal);
    detail::inform(name + ": saved checkpoint-" + std::to_string(state.global_step) + " in " + args.output_dir +
                   "; resume with resume_from_checkpoint = true (--resume_from_checkpoint true)");
  }
  return signal;
}

TORCHTRAIN_INLINE void TrainerBase::evaluate_during_training(bool track_best) {
  Metrics metrics = evaluate_eval_sets(ignore_keys_for_eval_);
  if (!track_best) return;
  if (lr_scheduler && lr_scheduler->steps_on_metric())
    lr_scheduler->step(metric_value(metrics, args.metric_for_best_model.value_or("loss")));
  if (args.metric_for_best_model) {
    const bool new_best = determine_best_metric(metrics);
    if (args.save_strategy == SaveStrategy::best)
      loop_decides(new_best ? LoopDecision::save_new_best : LoopDecision::no_new_best);
  }
}

TORCHTRAIN_INLINE double TrainerBase::metric_value(const Metrics& metrics, std::string name) const {
  if (name.rfind("eval_", 0) != 0) name = "eval_" + name;
  if (!metrics.contains(name) || !metrics[name].is_number()) {
    std::string available;
    for (const auto& [k, v] : metrics.items()) available += (available.empty() ? "" : ", ") + k;
    throw ArgumentError("The metric_for_best_model '" + name + "' is not among the evaluation metrics (" +
                        available + "); set metric_for_best_model to one of them");
  }
  return metrics[name].get<double>();
}

TORCHTRAIN_INLINE bool TrainerBase::determine_best_metric(const Metrics& metrics) {
  const double value = metric_value(metrics, *args.metric_for_best_model);
  const bool greater = args.greater_is_better.value_or(false);
  const double best = state.best_metric.value_or(greater ? -INFINITY : INFINITY);
  if (!state.best_metric) state.best_metric = best;
  if (greater ? value > best : value < best) {
    state.best_metric = value;
    state.best_global_step = state.global_step;
    return true;
  }
  return false;
}

TORCHTRAIN_INLINE bool TrainerBase::save_checkpoint(Boundary where, bool preemption) {
  finish_background_save(/*before_next_save=*/true);  // at most one in flight; the best checkpoint's folder is known
  const auto folder = std::filesystem::path(args.output_dir) / ("checkpoint-" + std::to_string(state.global_step));
  if (preemption) preemption_steps_.push_back(state.global_step);
  // The best model's checkpoint is the best step's folder when it exists, as HF has it, unless a preemption
  // wrote that folder: a run that was never stopped has none, and a resume must end as that run does.
  if (state.best_global_step && std::find(preemption_steps_.begin(), preemption_steps_.end(),
                                          *state.best_global_step) == preemption_steps_.end()) {
    const auto best = std::filesystem::path(args.output_dir) / ("checkpoint-" + std::to_string(*state.best_global_step));
    if (*state.best_global_step == state.global_step || std::filesystem::exists(best))
      state.best_model_checkpoint = best.string();
  }
  std::vector<std::pair<std::string, nlohmann::json>> callback_states;
  for (const auto& cb : handler_.callbacks())
    if (auto s = cb->state()) callback_states.emplace_back(cb->name(), std::move(*s));
  callback_states.emplace_back("TrainerControl", control.state());
  state.set_stateful_callback_states(callback_states);
  LoopState loop;
  const auto sums = losses_.sums();
  loop.interval_loss = sums.interval;
  loop.total_loss = sums.total;
  checkpoint::SaveGroup ranks;
  if (group_) {
    // Every rank resumes from the mean of the sums: a mean over the ranks of (average + what follows) is the
    // mean of the uninterrupted sums.
    const auto mean =
        detail::average_over_ranks(*group_, {loop.interval_loss, loop.total_loss}, "averaging the loss sums");
    loop.interval_loss = mean[0];
    loop.total_loss = mean[1];
    loop.world_size = group_->world_size();
    ranks = {group_->rank(), group_->world_size(), [this](const std::string& what) { group_->barrier(what); }};
  }
  loop.last_logged_step = last_logged_step_;
  loop.learning_rate = last_learning_rate_;
  if (last_grad_norm_.defined()) loop.grad_norm = last_grad_norm_.item<double>();
  if (grad_scaler) loop.grad_scaler = grad_scaler->state();
  loop.epoch_end_pending =
      where == Boundary::last_step_of_epoch || (where == Boundary::step && control.should_training_stop);
  loop.preemption_steps = preemption_steps_;
  auto stream = train_stream_state();
  if (stream) loop.stream_position = LoopState::StreamPosition{stream->epoch, stream->batches};
  auto* const saved_optimizer = args.save_only_model ? nullptr : optimizer.get();
  auto contents = checkpoint::contents_of(args, state, module(), saved_optimizer,
                                          args.save_only_model ? nullptr : lr_scheduler.get(), loop.to_json(),
                                          stream ? std::move(stream->position) : std::nullopt);
  last_saved_step_ = state.global_step;
  if (!args.save_async || preemption) {
    checkpoint::save(folder, contents, ranks);
    rotate_checkpoints(state);
    return true;
  }
  // checkpoint::save's protocol, with rank 0's part on the writer thread over host copies: the barriers stay on
  // this thread, and the other ranks' files are on disk before the writer starts.
  if (!background_save_) background_save_ = std::make_unique<checkpoint::BackgroundSave>();
  const bool zero = ranks.rank == 0;
  if (zero) {
    auto& snapshot = background_save_->snapshot();
    snapshot.capture(module(), saved_optimizer);
    contents.model = snapshot.model_contents();
    contents.optimizer = snapshot.optimizer_contents();
  }
  checkpoint::prepare_checkpoint(folder, contents, ranks);
  background_save_->start(folder, std::move(contents), ranks.world_size, state, zero);
  agreed_save_status_ = kSaveWriting;  // until the ranks next agree on this one
  loop_decides(LoopDecision::saving_in_background);
  return false;
}

TORCHTRAIN_INLINE void TrainerBase::rotate_checkpoints(const TrainerState& saved) const {
  if (saved.is_world_process_zero) checkpoint::rotate(args.output_dir, args.save_total_limit, saved.best_model_checkpoint);
}

TORCHTRAIN_INLINE void TrainerBase::collect_background_save() {
  if (!background_save_ || !background_save_->in_flight()) return;
  const int status = group_ ? agreed_save_status_
                     : !background_save_->done() ? kSaveWriting
                                                 : kSaveWritten;  // finish() throws a failure
  if (status != kSaveWriting) complete_background_save(status);
}

TORCHTRAIN_INLINE void TrainerBase::finish_background_save(bool before_next_save) {
  if (!background_save_ || !background_save_->in_flight()) return;
  const bool zero = rank() == 0;
  // Said at the first wait of a run; end_training counts the others.
  if (zero && before_next_save && !background_save_->done() && save_points_that_waited_++ == 0)
    detail::inform("waiting for " + background_save_->folder().filename().string() + " to be written before saving checkpoint-" +
                   std::to_string(state.global_step) + "; save less often to train without waiting");
  int status = kSaveWritten;
  if (zero) {
    background_save_->wait();
    if (background_save_->failed()) status = kSaveFailed;
  }
  if (group_) status = detail::max_over_ranks(*group_, zero ? status : 0, "waiting for rank 0's checkpoint");
  complete_background_save(status);
}

TORCHTRAIN_INLINE void TrainerBase::complete_background_save(int status) {
  if (status == kSaveFailed && rank() != 0) {
    const auto folder = background_save_->finish().folder;
    throw CheckpointError("cannot save checkpoint " + folder.string() +
                          ": rank 0 could not write it (its error says why); the checkpoints saved before it are untouched");
  }
  const auto written = background_save_->finish();  // rank 0's failure throws here
  rotate_checkpoints(written.state);
  const bool saving_now = control.should_save;
  handler_.on_save(args, written.state, control, context_);  // with the step it saved, as a synchronous save
  if (saving_now) loop_decides(LoopDecision::save_point_continues);
}

TORCHTRAIN_INLINE void TrainerBase::restore_callback_states(const TrainerState& saved) {
  std::vector<std::pair<CallbackPtr, nlohmann::json>> before;
  for (const auto& cb : handler_.callbacks())
    if (auto s = cb->state()) before.emplace_back(cb, std::move(*s));
  const TrainerControl control_before = control;
  std::map<std::string, std::size_t> seen;
  std::set<std::string> live;
  try {
    for (const auto& entry : before) {
      const auto& cb = entry.first;
      const auto name = cb->name();
      live.insert(name);
      const auto states = saved.stateful_callback_states(name);
      const std::size_t i = seen[name]++;
      if (i < states.size()) cb->restore_state(states[i]);
    }
    if (auto states = saved.stateful_callback_states("TrainerControl"); !states.empty())
      control.restore_state(states[0]);
  } catch (...) {
    for (const auto& [cb, s] : before) cb->restore_state(s);
    control = control_before;
    throw;
  }
  std::string missing;
  for (const auto& [name, value] : saved.stateful_callbacks.items())
    if (name != "TrainerControl" && !live.count(name)) missing += (missing.empty() ? "" : ", ") + name;
  if (!missing.empty())
    detail::warn("Checkpoint included callbacks not included in current configuration. Ignoring. (" + missing + ")");
}

TORCHTRAIN_INLINE void TrainerBase::load_best_model() {
  const std::filesystem::path best = *state.best_model_checkpoint;
  const auto weights = best / checkpoint::kModelFile;
  if (!std::filesystem::exists(weights)) {
    detail::warn("Could not locate the best model at " + weights.string() + "; keeping the latest model.");
    return;
  }
  checkpoint::load_module(module(), weights);
}

}  // namespace torchtrain

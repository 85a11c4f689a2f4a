// SPDX-License-Identifier: MIT
// Trainer: the complete training loop, with every decision point dispatched to callbacks.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <torch/torch.h>

#include "torchtrain/callback_handler.hpp"
#include "torchtrain/callbacks/default_flow.hpp"
#include "torchtrain/callbacks/printer.hpp"
#include "torchtrain/callbacks/progress.hpp"
#include "torchtrain/checkpoint.hpp"
#include "torchtrain/data/collators.hpp"
#include "torchtrain/data/data_loader.hpp"
#include "torchtrain/data/epoch_sampler.hpp"
#include "torchtrain/detail/edit_distance.hpp"
#include "torchtrain/detail/clip_grad.hpp"
#include "torchtrain/detail/data_parallel.hpp"
#include "torchtrain/detail/loss_tracker.hpp"
#include "torchtrain/detail/json_cast.hpp"
#include "torchtrain/detail/model_io.hpp"
#include "torchtrain/detail/round.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/distributed.hpp"
#include "torchtrain/hyperparameter_search.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/lr_scheduler.hpp"
#include "torchtrain/model_init.hpp"
#include "torchtrain/optimizer.hpp"
#include "torchtrain/preemption.hpp"
#include "torchtrain/results_files.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain {

/// Where train() resumes from: nowhere (default), the newest valid checkpoint in output_dir (`true`), or a
/// checkpoint folder.
class ResumeFrom {
 public:
  ResumeFrom() = default;
  ResumeFrom(std::nullopt_t) {}
  ResumeFrom(bool latest) : latest_(latest) {}
  ResumeFrom(std::string path) : path_(std::move(path)) {}
  ResumeFrom(const char* path) : path_(path) {}
  /// Parses a command-line value: "true" means the latest checkpoint, "false"/"" nothing, else a path.
  static ResumeFrom parse(const std::string& text) {
    if (text == "true" || text == "True") return ResumeFrom(true);
    if (text.empty() || text == "false" || text == "False" || text == "none" || text == "None") return {};
    return ResumeFrom(text);
  }
  bool latest() const { return latest_; }
  const std::optional<std::string>& path() const { return path_; }
  explicit operator bool() const { return latest_ || path_.has_value(); }

 private:
  bool latest_ = false;
  std::optional<std::string> path_;
};

/// Trains, evaluates and predicts with any `torch::nn` module holder over map-style `torch::data`
/// datasets. Every event goes to the callbacks in list order: DefaultFlowCallback first, then the reporters of
/// args.report_to, then the user's callbacks, then ProgressCallback (or PrinterCallback when args.disable_tqdm).
///
/// The model's forward receives the collated batch, (data, attention_mask) or data alone, whichever it
/// accepts, and returns logits (the loss then comes from `criterion` and the batch's `target`) or a
/// ModelOutput that may include "loss". Override compute_loss() for anything else.
///
/// When the environment describes a distributed run (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as torchrun
/// sets them), the Trainer joins the process group (see distributed.hpp) and trains data-parallel: each rank
/// reads its shard of every epoch, gradients are averaged before clipping, rank 0's callback decisions apply to
/// all ranks, evaluation is split and gathered, and only rank 0 writes shared files.
template <class Model, class TrainDataset, class EvalDataset = TrainDataset,
          class Collator = data::DefaultDataCollator>
class Trainer {
 public:
  using TrainLoader = data::DataLoader<TrainDataset, Collator>;
  using EvalLoader = data::DataLoader<EvalDataset, Collator>;
  using Batch = typename TrainLoader::Batch;
  static_assert(std::is_same_v<Batch, typename EvalLoader::Batch>,
                "the training and evaluation datasets must collate to the same batch type");
  using CallbackPtr = CallbackHandler::CallbackPtr;

  Trainer(Model model, TrainingArguments args, std::optional<TrainDataset> train_dataset = std::nullopt,
          std::optional<EvalDataset> eval_dataset = std::nullopt, Collator data_collator = {},
          std::vector<CallbackPtr> callbacks = {})
      : Trainer(std::move(model), std::move(args), std::move(train_dataset), unnamed(std::move(eval_dataset)),
                std::move(data_collator), std::move(callbacks)) {}

  /// Several evaluation sets: metrics of set `name` are prefixed `eval_<name>_`.
  Trainer(Model model, TrainingArguments args, std::optional<TrainDataset> train_dataset,
          std::map<std::string, EvalDataset> eval_datasets, Collator data_collator = {},
          std::vector<CallbackPtr> callbacks = {})
      : model(std::move(model)),
        args(std::move(args)),
        data_collator(std::move(data_collator)),
        train_dataset_(std::move(train_dataset)),
        eval_datasets_(std::move(eval_datasets)) {
    this->args.validate();
    if (eval_datasets_.size() > 1 && eval_datasets_.count(""))
      throw ArgumentError("Trainer: eval dataset names must not be empty");
    handler_.add_callback(std::make_shared<DefaultFlowCallback>());
    for (auto& cb : get_reporting_integration_callbacks(this->args.report_to)) handler_.add_callback(std::move(cb));
    for (auto& cb : callbacks) handler_.add_callback(std::move(cb));
    if (this->args.disable_tqdm)
      handler_.add_callback(std::make_shared<PrinterCallback>());
    else
      handler_.add_callback(std::make_shared<ProgressCallback>());
    check_eval_dataset();
    device_ = choose_device(this->args);
    group_ = world_process_group(std::chrono::seconds(this->args.ddp_timeout), device_);
    set_process_flags();
    this->model->to(device_);
    context_.model = this->model.ptr().get();
    handler_.on_init_end(this->args, state, control, context_);
  }

  virtual ~Trainer() = default;
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // What HF's constructor takes; set any of these before train().
  Model model;
  TrainingArguments args;
  Collator data_collator;
  std::function<Metrics(const EvalPrediction&)> compute_metrics;
  /// When set, train() builds a fresh model with it (after seeding), as HF does; hyperparameter_search needs
  /// it. A model_init taking `const Trial&` receives the trial's values, including keys of its own.
  ModelInit<Model> model_init;
  /// Loss from (predictions, labels) when the model returns no "loss".
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> criterion = detail::default_criterion;
  /// Optional: created by train() when null (AdamW + the schedule of args.lr_scheduler_type).
  std::shared_ptr<torch::optim::Optimizer> optimizer;
  std::shared_ptr<LRScheduler> lr_scheduler;
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
                    std::vector<std::string> ignore_keys_for_eval = {}) {
    std::optional<PreemptionGuard> preemption;
    if (handle_preemption_signals) preemption.emplace();
    preemption_ = preemption ? &*preemption : nullptr;
    struct Forget {  // the guard dies with this call
      const PreemptionGuard*& guard;
      ~Forget() { guard = nullptr; }
    } forget{preemption_};
    try {
      return train_impl(std::move(resume_from_checkpoint), trial, std::move(ignore_keys_for_eval), preemption_);
    } catch (...) {
      context_.exception = std::current_exception();
      handler_.on_exception(args, state, control, context_);
      context_.exception = nullptr;
      throw;
    }
  }

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
                                ObjectiveFunction compute_objective = {}, TrialNameFunction hp_name = {}) {
    if (!model_init)
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
      Trainer& trainer;
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
      if (trial.intermediate_objectives(state).empty()) evaluate();
      save_state();  // the trial's trainer_state.json, with its log_history, in its folder
      return trial.finish(state);
    });
  }

  /// Evaluates on `dataset` (default: the eval dataset(s)); logs the metrics and fires on_evaluate.
  Metrics evaluate(std::optional<EvalDataset> dataset = std::nullopt, const std::vector<std::string>& ignore_keys = {},
                   const std::string& metric_key_prefix = "eval") {
    if (dataset) return evaluate_one(*dataset, ignore_keys, metric_key_prefix);
    if (eval_datasets_.empty())
      throw ArgumentError("evaluate: no eval dataset; pass one to the Trainer or to evaluate()");
    Metrics all;
    for (auto& [name, ds] : eval_datasets_) {
      auto m = evaluate_one(ds, ignore_keys, name.empty() ? metric_key_prefix : metric_key_prefix + "_" + name);
      for (auto& [k, v] : m.items()) all[k] = v;
    }
    return all;
  }

  /// Predictions (and labels and metrics, when the data has labels) over `dataset`; fires on_predict.
  PredictionOutput predict(EvalDataset dataset, const std::vector<std::string>& ignore_keys = {},
                           const std::string& metric_key_prefix = "test") {
    auto loop = evaluation_loop(dataset, ignore_keys, metric_key_prefix, /*keep_predictions=*/true);
    context_.metrics = &loop.metrics;
    handler_.on_predict(args, state, control, context_);
    context_.metrics = nullptr;
    return {loop.predictions, loop.labels, std::move(loop.metrics)};
  }

  /// Adds the epoch, appends the entry (with its step) to log_history and fires on_log.
  void log(LogEntry logs) {
    if (state.epoch) logs["epoch"] = *state.epoch;
    LogEntry entry = logs;
    entry["step"] = state.global_step;
    state.log_history.push_back(std::move(entry));
    context_.logs = &logs;
    handler_.on_log(args, state, control, context_);
    context_.logs = nullptr;
  }

  /// Writes the model's parameters and buffers to `output_dir/model.pt` (or `dir/model.pt`); a plain LibTorch
  /// program reads them with torch::load(model, path).
  void save_model(std::optional<std::string> dir = std::nullopt) {
    if (!state.is_world_process_zero) return;
    const std::filesystem::path folder = dir.value_or(args.output_dir);
    std::filesystem::create_directories(folder);
    checkpoint::save_module(*model, folder / checkpoint::kModelFile);
  }

  /// Writes trainer_state.json to output_dir.
  void save_state() const {
    if (!state.is_world_process_zero) return;
    std::filesystem::create_directories(args.output_dir);
    checkpoint::write_file_atomically(std::filesystem::path(args.output_dir) / checkpoint::kTrainerStateFile,
                                      state.to_json_string());
  }

  /// Writes `<split>_results.json` and merges the metrics into `all_results.json`, as HF does.
  void save_metrics(const std::string& split, const Metrics& metrics, bool combined = true) const {
    if (!state.is_world_process_zero) return;
    torchtrain::save_metrics(args.output_dir, split, metrics, combined);
  }

  /// Computes the loss of one batch. Override for custom losses; `batch` is already on the device.
  virtual detail::ForwardResult compute_loss(Model& m, const Batch& batch,
                                             const std::vector<std::string>& ignore_keys = {}) {
    return detail::read_output(detail::forward(m, batch), detail::labels_of(batch), criterion, ignore_keys);
  }

 private:
  struct EvalLoopOutput {
    torch::Tensor predictions, labels;
    Metrics metrics;
    std::size_t num_samples = 0;
  };

  static std::map<std::string, EvalDataset> unnamed(std::optional<EvalDataset> dataset) {
    std::map<std::string, EvalDataset> single;
    if (dataset) single.emplace("", std::move(*dataset));
    return single;
  }

  // Each process of a distributed run on CUDA takes the device of its LOCAL_RANK.
  static torch::Device choose_device(const TrainingArguments& a) {
    if (a.use_cpu || !torch::cuda::is_available()) return torch::Device(torch::kCPU);
    const auto env = DistributedEnvironment::from_environment();
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env ? env->local_rank : 0));
  }

  void set_process_flags() {
    state.is_world_process_zero = !group_ || group_->rank() == 0;
    state.is_local_process_zero = !group_ || group_->local_rank() == 0;
  }

  int world_size() const { return group_ ? group_->world_size() : 1; }

  // Makes rank 0's control flags every rank's where callbacks decide (after on_step_end, on_evaluate and
  // on_epoch_end), together with any preemption signal one of the ranks received.
  void agree_on_control() {
    if (!group_) return;
    agreed_signal_ = detail::agree_on_control(*group_, control, preemption_ ? preemption_->signal() : 0);
  }

  // The mean over the ranks of a loss sum each rank kept of its own batches.
  double averaged(double value, const char* what) {
    return group_ ? detail::average_over_ranks(*group_, {value}, what).front() : value;
  }

  void check_eval_dataset() const {
    if (args.eval_strategy != IntervalStrategy::no && eval_datasets_.empty())
      throw ArgumentError("TrainingArguments.eval_strategy = " + to_string(args.eval_strategy) +
                          " needs an eval dataset; pass one to the Trainer or set eval_strategy to no");
    if ((args.save_strategy == SaveStrategy::best || args.load_best_model_at_end) && !args.metric_for_best_model)
      throw ArgumentError("save_strategy best and load_best_model_at_end need metric_for_best_model; set it");
  }

  // A trial key must be a TrainingArguments field, or be read by a model_init that takes the trial.
  void check_trial_key(const std::string& name, const nlohmann::json& fields, const std::string& where) const {
    if (fields.contains(name) || model_init.takes_trial()) return;
    std::vector<std::string> names;
    for (const auto& [field, value] : fields.items()) names.push_back(field);
    const std::string guess = detail::closest_name(name, names);
    throw ArgumentError(where + "'" + name + "' is not a TrainingArguments field" +
                        (guess.empty() ? "" : " (did you mean '" + guess + "'?)") +
                        "; to vary the model, assign model_init a function taking const Trial&");
  }

  void apply_trial(const Trial& trial) {
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

  TrainOutput train_impl(ResumeFrom resume, const Trial& trial, std::vector<std::string> ignore_keys_for_eval,
                         const PreemptionGuard* preemption) {
    if (!train_dataset_) throw ArgumentError("train: the Trainer has no train dataset");
    TrainerState fresh;
    state = std::move(fresh);
    set_process_flags();
    agreed_signal_ = 0;
    apply_trial(trial);
    args.validate();
    args.warn_deprecated_fields();
    check_eval_dataset();
    if (state.is_world_process_zero) checkpoint::remove_stale_staging(args.output_dir);
    torch::manual_seed(args.seed);
    if (created_lr_scheduler_) {  // a schedule the Trainer made is for one run; one the user passed is kept
      lr_scheduler.reset();
      created_lr_scheduler_ = false;
    }
    if (model_init) {
      model = model_init(trial);
      model->to(device_);
      context_.model = model.ptr().get();
      optimizer.reset();
      lr_scheduler.reset();
    }

    // Sizes: windows of gradient_accumulation_steps micro-batches per epoch, the last one possibly shorter.
    const std::size_t micro_batch_size = static_cast<std::size_t>(args.per_device_train_batch_size);
    TrainLoader loader(*train_dataset_, data_collator, micro_batch_size, args.dataloader_drop_last,
                       static_cast<std::size_t>(args.dataloader_num_workers), static_cast<std::size_t>(world_size()));
    const auto len_dataloader = static_cast<std::int64_t>(loader.num_batches());
    if (len_dataloader == 0)
      throw ArgumentError("train: the train dataset yields no batch (" + std::to_string(loader.num_examples()) +
                          " examples, per_device_train_batch_size " + std::to_string(micro_batch_size) +
                          (args.dataloader_drop_last ? ", dataloader_drop_last" : "") + ")");
    const std::int64_t ga = args.gradient_accumulation_steps;
    const std::int64_t updates_per_epoch = std::max<std::int64_t>((len_dataloader + ga - 1) / ga, 1);
    std::int64_t max_steps, num_train_epochs;
    double num_train_samples;
    const auto total_batch =
        static_cast<double>(micro_batch_size * static_cast<std::size_t>(ga) * static_cast<std::size_t>(world_size()));
    if (args.max_steps > 0) {
      max_steps = args.max_steps;
      num_train_epochs = max_steps / updates_per_epoch + (max_steps % updates_per_epoch > 0);
      num_train_samples = static_cast<double>(max_steps) * total_batch;
    } else {
      max_steps = static_cast<std::int64_t>(std::ceil(args.num_train_epochs * static_cast<double>(updates_per_epoch)));
      num_train_epochs = static_cast<std::int64_t>(std::ceil(args.num_train_epochs));
      num_train_samples = static_cast<double>(loader.num_examples()) * args.num_train_epochs;
    }
    state.train_batch_size = args.per_device_train_batch_size;
    state.compute_steps(args, max_steps);

    if (!optimizer) optimizer = create_optimizer(*model, args);
    if (!lr_scheduler) create_scheduler(max_steps);

    // Resume: weights, optimizer, scheduler, RNG, loss sums, state and callback states.
    std::int64_t epochs_trained = 0, steps_trained_in_current_epoch = 0;
    detail::LossTracker losses(args.logging_nan_inf_filter);
    bool stopped_before = false;
    nlohmann::json resumed_loop;
    if (resume) {
      auto resumed = checkpoint::resolve(resume.latest(), resume.path(), args.output_dir);
      const std::filesystem::path folder = resumed.folder;
      // All or nothing: if the callbacks reject their states, the model and optimizer are put back too.
      const std::string rng_file = checkpoint::rng_file_name(group_ ? group_->rank() : 0, world_size());
      auto loaded = checkpoint::load(
          std::move(resumed), *model, optimizer.get(), lr_scheduler.get(),
          [&](const TrainerState& saved) {
            if (args.restore_callback_states_from_checkpoint) restore_callback_states(saved);
          },
          rng_file);
      const TrainerState saved = loaded.state;
      state = std::move(loaded.state);
      warn_if_intervals_changed(saved, max_steps);
      state.compute_steps(args, max_steps);
      // A stop decided by a callback persists, as part of the restored callback states; the stop at the end of
      // a shorter run does not. The checkpoint's control decides, never a flag left by an earlier train().
      const bool ended_its_run = saved.global_step >= saved.max_steps;
      stopped_before = args.restore_callback_states_from_checkpoint && saved_stop_flag(saved) &&
                       !(ended_its_run && state.global_step < max_steps);
      losses.restore(loaded.loop_state);
      resumed_loop = loaded.loop_state;
      epochs_trained = state.global_step / updates_per_epoch;
      if (!args.ignore_data_skip) steps_trained_in_current_epoch = (state.global_step % updates_per_epoch) * ga;
      warn_if_world_size_changed(folder, loaded.loop_state, epochs_trained, steps_trained_in_current_epoch / ga);
    }
    state.max_steps = max_steps;
    state.num_train_epochs = num_train_epochs;
    set_process_flags();
    state.train_batch_size = args.per_device_train_batch_size;

    context_.optimizer = optimizer.get();
    context_.lr_scheduler = lr_scheduler.get();
    train_info_ = {loader.num_batches(), loader.num_examples(), micro_batch_size};
    context_.train_dataloader = &train_info_;
    last_logged_step_ = state.global_step;
    last_saved_step_ = -1;
    last_grad_norm_ = torch::Tensor();
    last_learning_rate_ = 0.0;
    bool epoch_end_pending = false;
    if (resumed_loop.is_object()) {  // see save_checkpoint
      last_logged_step_ = resumed_loop.value("last_logged_step", last_logged_step_);
      last_learning_rate_ = resumed_loop.value("learning_rate", 0.0);
      if (resumed_loop.contains("grad_norm")) last_grad_norm_ = torch::tensor(resumed_loop["grad_norm"].get<double>());
      // ...unless a longer run now continues in the middle of that epoch.
      epoch_end_pending = resumed_loop.value("epoch_end_pending", false) &&
                          (state.global_step % updates_per_epoch == 0 || stopped_before);
    }
    ignore_keys_for_eval_ = std::move(ignore_keys_for_eval);

    if (group_) detail::broadcast_module(*group_, *model);  // every rank starts from rank 0's weights
    model->train();
    // Gradients left by user code, or by an earlier run stopped inside an accumulation window, are not ours.
    model->zero_grad(/*set_to_none=*/true);
    warn_if_no_default_flow();
    const auto started = std::chrono::steady_clock::now();
    handler_.on_train_begin(args, state, control, context_);
    if (stopped_before) control.should_training_stop = true;  // a run that had stopped stays stopped
    if (args.eval_on_start && !resume) evaluate_during_training(/*track_best=*/false);  // not again on resume

    const data::EpochSampler sampler(loader.num_examples(), args.data_seed.value_or(args.seed), /*shuffle=*/true,
                                     static_cast<std::size_t>(group_ ? group_->rank() : 0),
                                     static_cast<std::size_t>(world_size()));
    const std::vector<torch::Tensor> parameters = model->parameters();  // clipped and cleared, as HF does
    const std::int64_t steps_in_epoch = len_dataloader;
    int preempted_by = 0;
    if (epoch_end_pending) {  // the checkpoint was written at its epoch's last step, before the epoch's end
      control.should_save = false;  // that save was the checkpoint itself
      handler_.on_epoch_end(args, state, control, context_);
      agree_on_control();
      maybe_log_save_evaluate(losses, Boundary::epoch_end);
      preempted_by = save_if_preempted(preemption, losses, Boundary::epoch_end);
    }

    for (std::int64_t epoch = epochs_trained; epoch < num_train_epochs && !control.should_training_stop &&
                                              state.global_step < max_steps && !preempted_by;
         ++epoch) {
      const std::int64_t first_step = epoch == epochs_trained ? steps_trained_in_current_epoch : 0;
      loader.start_epoch(sampler.indices(epoch), static_cast<std::size_t>(first_step));
      handler_.on_epoch_begin(args, state, control, context_);

      for (std::int64_t step = first_step; step < steps_in_epoch; ++step) {
        const std::int64_t window_start = step - step % ga;
        const std::int64_t window = std::min(ga, steps_in_epoch - window_start);
        if (step == window_start) handler_.on_step_begin(args, state, control, context_);

        Batch batch = detail::to_device(loader.next(), device_);
        auto out = compute_loss(model, batch);
        if (!out.loss.defined())
          throw ArgumentError("train: the model returned no loss and the batch has no labels to compute one");
        torch::Tensor loss = window > 1 ? out.loss / static_cast<double>(window) : out.loss;
        loss.backward();
        losses.add(loss, state.global_step - last_logged_step_);

        const bool sync = step + 1 == window_start + window;
        if (!sync) {
          handler_.on_substep_end(args, state, control, context_);
        } else {
          if (group_) detail::average_gradients(*group_, parameters);
          // As HF v5.3, the norm is logged even when max_grad_norm <= 0 turns clipping off.
          last_grad_norm_ = args.max_grad_norm > 0 ? detail::clip_grad_norm(parameters, args.max_grad_norm)
                                                   : detail::total_grad_norm(parameters);
          handler_.on_pre_optimizer_step(args, state, control, context_);
          optimizer->step();
          handler_.on_optimizer_step(args, state, control, context_);
          last_learning_rate_ = lr_scheduler->get_last_lr().front();
          if (!lr_scheduler->steps_on_metric()) lr_scheduler->step();
          model->zero_grad(/*set_to_none=*/true);
          ++state.global_step;
          state.epoch = static_cast<double>(epoch) + static_cast<double>(step + 1) / static_cast<double>(steps_in_epoch);
          handler_.on_step_end(args, state, control, context_);
          agree_on_control();
          const Boundary where = step + 1 == steps_in_epoch ? Boundary::last_step_of_epoch : Boundary::step;
          maybe_log_save_evaluate(losses, where);
          preempted_by = save_if_preempted(preemption, losses, where);
        }
        if (preempted_by || control.should_epoch_stop || control.should_training_stop) break;
      }
      if (preempted_by) break;  // the checkpoint runs this epoch's end after the resume
      handler_.on_epoch_end(args, state, control, context_);
      agree_on_control();
      maybe_log_save_evaluate(losses, Boundary::epoch_end);
      preempted_by = save_if_preempted(preemption, losses, Boundary::epoch_end);
    }
    if (!preempted_by) preempted_by = save_if_preempted(preemption, losses, Boundary::epoch_end);  // a late signal

    // A preempted run is not at its end: the best model is loaded, and the others deleted, when it finishes.
    if (args.load_best_model_at_end && state.best_model_checkpoint && !preempted_by) load_best_model();

    const double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double train_loss = averaged(losses.total(), "averaging the training loss") /
                              std::max<double>(static_cast<double>(state.global_step), 0.001);
    LogEntry summary;
    summary["train_runtime"] = detail::round_to(runtime, 4);
    summary["train_samples_per_second"] = detail::round_to(num_train_samples / runtime, 3);
    summary["train_steps_per_second"] = detail::round_to(static_cast<double>(max_steps) / runtime, 3);
    summary["total_flos"] = state.total_flos;
    summary["train_loss"] = train_loss;
    log(summary);
    Metrics metrics = state.log_history.back();
    metrics.erase("step");

    if (!preempted_by && state.is_world_process_zero && state.best_model_checkpoint && args.save_total_limit == 1)
      checkpoint::delete_all_but_best(args.output_dir, *state.best_model_checkpoint);
    handler_.on_train_end(args, state, control, context_);
    return {state.global_step, train_loss, metrics, preempted_by};
  }

  // The schedule of args.lr_scheduler_type over this run. Like PyTorch's schedulers, it starts from each param
  // group's initial lr (recorded the first time a schedule is built on the optimizer), not from the rate an
  // earlier run's schedule left behind.
  void create_scheduler(std::int64_t max_steps) {
    auto& groups = optimizer->param_groups();
    if (initial_lrs_owner_.lock() != optimizer || initial_lrs_.size() != groups.size()) {
      initial_lrs_owner_ = optimizer;
      initial_lrs_.clear();
      for (const auto& group : groups) initial_lrs_.push_back(group.options().get_lr());
    } else {
      for (std::size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(initial_lrs_[i]);
    }
    lr_scheduler = get_scheduler(args.lr_scheduler_type, *optimizer, args.get_warmup_steps(max_steps), max_steps);
    created_lr_scheduler_ = true;
  }

  static bool saved_stop_flag(const TrainerState& saved) {
    const auto states = saved.stateful_callback_states("TrainerControl");
    if (states.empty()) return false;
    TrainerControl saved_control;
    saved_control.restore_state(states.front());
    return saved_control.should_training_stop;
  }

  void warn_if_no_default_flow() const {
    for (const auto& cb : handler_.callbacks())
      if (dynamic_cast<const DefaultFlowCallback*>(cb.get())) return;
    detail::warn("The Trainer will not work properly if you don't have a DefaultFlowCallback in its callbacks: "
                 "it will never log, evaluate or save by itself. Add one before training with "
                 "trainer.add_callback<DefaultFlowCallback>(). The current list of callbacks is:\n" +
                 handler_.callback_list());
  }

  void warn_if_intervals_changed(const TrainerState& saved, std::int64_t max_steps) const {
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

  // Where the loop stands when it may log, evaluate or save; a checkpoint saved at a step after which
  // on_epoch_end follows (the epoch's last step, or a stop) has that epoch end run after a resume.
  enum class Boundary { step, last_step_of_epoch, epoch_end };

  void maybe_log_save_evaluate(detail::LossTracker& losses, Boundary where) {
    if (control.should_log && state.global_step > last_logged_step_) {
      // The one host-device sync (and, distributed, the one loss all-reduce), at logging steps only.
      const double interval_loss = averaged(losses.take_interval(), "averaging the logged loss");
      LogEntry logs;
      logs["loss"] = interval_loss / static_cast<double>(state.global_step - last_logged_step_);  // unrounded, as v5
      if (last_grad_norm_.defined()) logs["grad_norm"] = last_grad_norm_.item<double>();
      logs["learning_rate"] = last_learning_rate_;
      last_logged_step_ = state.global_step;
      log(std::move(logs));
    }
    if (control.should_evaluate) evaluate_during_training(/*track_best=*/true);
    if (control.should_save) {
      save_checkpoint(losses, where);
      handler_.on_save(args, state, control, context_);
    }
  }

  // After SIGTERM/SIGINT: a checkpoint at this step boundary, written whatever save_strategy says because losing
  // the run costs more than one checkpoint, then on_save with should_training_stop set. Returns the signal, or 0.
  int save_if_preempted(const PreemptionGuard* preemption, detail::LossTracker& losses, Boundary where) {
    // Distributed, only the signal agreed on at the last decision point counts, so all ranks stop together.
    const int signal = group_ ? agreed_signal_ : preemption ? preemption->signal() : 0;
    if (signal == 0) return 0;
    const bool save = last_saved_step_ != state.global_step;
    if (save) save_checkpoint(losses, where);  // before the stop flag, which the checkpoint must not carry
    control.should_training_stop = true;
    if (save) handler_.on_save(args, state, control, context_);
    return signal;
  }

  void evaluate_during_training(bool track_best) {
    Metrics metrics = evaluate(std::nullopt, ignore_keys_for_eval_);
    if (!track_best) return;
    if (lr_scheduler && lr_scheduler->steps_on_metric())
      lr_scheduler->step(metric_value(metrics, args.metric_for_best_model.value_or("loss")));
    if (args.metric_for_best_model) {
      const bool new_best = determine_best_metric(metrics);
      if (args.save_strategy == SaveStrategy::best) control.should_save = new_best;
    }
  }

  double metric_value(const Metrics& metrics, std::string name) const {
    if (name.rfind("eval_", 0) != 0) name = "eval_" + name;
    if (!metrics.contains(name) || !metrics[name].is_number()) {
      std::string available;
      for (const auto& [k, v] : metrics.items()) available += (available.empty() ? "" : ", ") + k;
      throw ArgumentError("The metric_for_best_model '" + name + "' is not among the evaluation metrics (" +
                          available + "); set metric_for_best_model to one of them");
    }
    return metrics[name].get<double>();
  }

  bool determine_best_metric(const Metrics& metrics) {
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

  void save_checkpoint(detail::LossTracker& losses, Boundary where) {
    const auto folder = std::filesystem::path(args.output_dir) / ("checkpoint-" + std::to_string(state.global_step));
    if (state.best_global_step) {
      const auto best = std::filesystem::path(args.output_dir) / ("checkpoint-" + std::to_string(*state.best_global_step));
      if (*state.best_global_step == state.global_step || std::filesystem::exists(best))
        state.best_model_checkpoint = best.string();
    }
    std::vector<std::pair<std::string, nlohmann::json>> callback_states;
    for (const auto& cb : handler_.callbacks())
      if (auto s = cb->state()) callback_states.emplace_back(cb->name(), std::move(*s));
    callback_states.emplace_back("TrainerControl", control.state());
    state.set_stateful_callback_states(callback_states);
    // Beyond the loss sums, what an exact continuation needs: the logging window (the next logged loss is
    // averaged since last_logged_step), what an epoch-end log reports, and whether on_epoch_end is still due.
    // Distributed, the sums are averaged over the ranks, and every rank resumes from that average: a mean
    // over the ranks of (average + what follows) is the mean of the uninterrupted sums.
    nlohmann::json loop = losses.state();
    checkpoint::SaveGroup ranks;
    if (group_) {
      const auto mean = detail::average_over_ranks(
          *group_, {loop["interval_loss"].get<double>(), loop["total_loss"].get<double>()}, "averaging the loss sums");
      loop["interval_loss"] = mean[0];
      loop["total_loss"] = mean[1];
      loop["world_size"] = group_->world_size();
      ranks = {group_->rank(), group_->world_size(), [this](const std::string& what) { group_->barrier(what); }};
    }
    loop["last_logged_step"] = last_logged_step_;
    loop["learning_rate"] = last_learning_rate_;
    if (last_grad_norm_.defined()) loop["grad_norm"] = last_grad_norm_.item<double>();
    loop["epoch_end_pending"] =
        where == Boundary::last_step_of_epoch || (where == Boundary::step && control.should_training_stop);
    checkpoint::save(folder, args, state, *model, args.save_only_model ? nullptr : optimizer.get(),
                     args.save_only_model ? nullptr : lr_scheduler.get(), loop, ranks);
    last_saved_step_ = state.global_step;
    if (state.is_world_process_zero) checkpoint::rotate(args.output_dir, args.save_total_limit, state.best_model_checkpoint);
  }

  // Each process's random state cannot carry over to a different number of processes; the data position is
  // then where global_step falls in this run's (differently sized) epochs.
  void warn_if_world_size_changed(const std::filesystem::path& folder, const nlohmann::json& loop,
                                  std::int64_t epoch, std::int64_t update_in_epoch) const {
    const std::int64_t saved = loop.is_object() ? loop.value("world_size", std::int64_t{1}) : 1;
    if (saved == world_size()) return;
    detail::warn("Resuming from " + folder.string() + ", written by " + std::to_string(saved) +
                 " process(es), with " + std::to_string(world_size()) +
                 ": the per-process random states are not restored, and the data position is recomputed for " +
                 std::to_string(world_size()) + " process(es) (epoch " + std::to_string(epoch) + ", update " +
                 std::to_string(update_in_epoch) + " of the epoch); the run continues but does not repeat an "
                 "uninterrupted one. Resume with " + std::to_string(saved) + " process(es) for an exact continuation.");
  }

  // Restores every stateful callback and the control from `saved`, or, if one of them throws, none of them.
  void restore_callback_states(const TrainerState& saved) {
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

  void load_best_model() {
    const std::filesystem::path best = *state.best_model_checkpoint;
    const auto weights = best / checkpoint::kModelFile;
    if (!std::filesystem::exists(weights)) {
      detail::warn("Could not locate the best model at " + weights.string() + "; keeping the latest model.");
      return;
    }
    checkpoint::load_module(*model, weights);
  }

  Metrics evaluate_one(EvalDataset& dataset, const std::vector<std::string>& ignore_keys, const std::string& prefix) {
    auto loop = evaluation_loop(dataset, ignore_keys, prefix, /*keep_predictions=*/false);
    log(loop.metrics);
    Metrics metrics = state.log_history.back();
    metrics.erase("step");
    context_.metrics = &metrics;
    handler_.on_evaluate(args, state, control, context_);
    context_.metrics = nullptr;
    agree_on_control();
    return metrics;
  }

  EvalLoopOutput evaluation_loop(EvalDataset& dataset, const std::vector<std::string>& ignore_keys,
                                 const std::string& prefix, bool keep_predictions) {
    const auto started = std::chrono::steady_clock::now();
    EvalLoader loader(dataset, data_collator, static_cast<std::size_t>(args.per_device_eval_batch_size),
                      /*drop_last=*/false, static_cast<std::size_t>(args.dataloader_num_workers));
    // Distributed, each rank evaluates examples rank, rank + world, ... and the results are gathered.
    std::vector<std::size_t> order = group_ ? detail::evaluation_shard(loader.num_examples(), group_->rank(), world_size())
                                            : std::vector<std::size_t>(loader.num_examples());
    if (!group_) std::iota(order.begin(), order.end(), std::size_t{0});
    const std::size_t order_size = order.size();
    const std::size_t num_batches = (order_size + loader.batch_size() - 1) / loader.batch_size();
    eval_info_ = {num_batches, loader.num_examples(), loader.batch_size()};
    context_.eval_dataloader = &eval_info_;
    loader.start_epoch(std::move(order));

    const bool was_training = model->is_training();
    model->eval();
    torch::NoGradGuard no_grad;
    const bool collect = keep_predictions || static_cast<bool>(compute_metrics);
    std::vector<torch::Tensor> predictions, labels;
    torch::Tensor loss_sum;
    for (std::size_t b = 0; b < num_batches; ++b) {
      Batch batch = detail::to_device(loader.next(), device_);
      auto out = compute_loss(model, batch, ignore_keys);
      const auto label = detail::labels_of(batch);
      // The batch's own number of examples: the last one may be partial.
      const auto rows = static_cast<double>(std::min(loader.batch_size(), order_size - b * loader.batch_size()));
      if (out.loss.defined()) {
        auto weighted = out.loss.detach().to(torch::kDouble) * rows;
        loss_sum = loss_sum.defined() ? loss_sum + weighted : weighted;
      }
      if (collect) {
        if (out.predictions.defined()) predictions.push_back(out.predictions.detach().to(torch::kCPU));
        if (label.defined()) labels.push_back(label.to(torch::kCPU));
      }
      handler_.on_prediction_step(args, state, control, context_);
    }
    if (was_training) model->train();

    EvalLoopOutput result;
    result.num_samples = loader.num_examples();
    if (!predictions.empty()) result.predictions = torch::cat(predictions);
    if (!labels.empty()) result.labels = torch::cat(labels);
    if (group_) {  // every rank gets the whole set's outputs and loss, so every rank computes the same metrics
      if (collect) {
        result.predictions = detail::gather_evaluation(*group_, result.predictions, result.num_samples, "predictions");
        result.labels = detail::gather_evaluation(*group_, result.labels, result.num_samples, "labels");
      }
      const auto sums = detail::average_over_ranks(
          *group_, {loss_sum.defined() ? loss_sum.item<double>() : 0.0, loss_sum.defined() ? 1.0 : 0.0},
          "summing the evaluation loss");
      if (sums[1] > 0) loss_sum = torch::tensor(sums[0] * world_size(), torch::kDouble);
    }
    Metrics computed;
    if (compute_metrics && result.predictions.defined() && result.labels.defined())
      computed = compute_metrics(EvalPrediction{result.predictions, result.labels});
    Metrics& m = result.metrics;
    if (loss_sum.defined()) m[prefix + "_loss"] = loss_sum.item<double>() / static_cast<double>(result.num_samples);
    for (auto& [key, value] : computed.items())
      m[key.rfind(prefix + "_", 0) == 0 ? key : prefix + "_" + key] = value;
    const double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    m[prefix + "_runtime"] = detail::round_to(runtime, 4);
    m[prefix + "_samples_per_second"] = detail::round_to(static_cast<double>(result.num_samples) / runtime, 3);
    m[prefix + "_steps_per_second"] = detail::round_to(static_cast<double>(num_batches) / runtime, 3);
    return result;
  }

  std::optional<TrainDataset> train_dataset_;
  std::map<std::string, EvalDataset> eval_datasets_;  // key "" for a single, unnamed eval dataset
  CallbackHandler handler_;
  CallbackContext context_;
  DataLoaderInfo train_info_, eval_info_;
  torch::Device device_{torch::kCPU};
  std::int64_t last_logged_step_ = 0;
  std::int64_t last_saved_step_ = -1;  // a preemption does not save this step twice
  torch::Tensor last_grad_norm_;       // of the latest optimizer step, for the next log
  double last_learning_rate_ = 0.0;
  bool created_lr_scheduler_ = false;  // lr_scheduler was built by train(), so the next train() builds its own
  std::weak_ptr<torch::optim::Optimizer> initial_lrs_owner_;  // the optimizer initial_lrs_ belong to
  std::vector<double> initial_lrs_;
  std::vector<std::string> ignore_keys_for_eval_;
  std::optional<std::string> trial_name_;  // during hyperparameter_search: the trial's folder under output_dir
  std::shared_ptr<ProcessGroup> group_;  // null in a single process
  const PreemptionGuard* preemption_ = nullptr;  // while train() runs
  int agreed_signal_ = 0;                        // the preemption signal the ranks last agreed on
};

template <class M, class T>
Trainer(M, TrainingArguments, T) -> Trainer<M, T, T>;
template <class M, class T, class E>
Trainer(M, TrainingArguments, T, E) -> Trainer<M, T, E>;
template <class M, class T, class E>
Trainer(M, TrainingArguments, T, std::map<std::string, E>) -> Trainer<M, T, E>;
template <class M, class T, class E, class C>
Trainer(M, TrainingArguments, T, E, C) -> Trainer<M, T, E, C>;
template <class M, class T, class E, class C>
Trainer(M, TrainingArguments, T, E, C, std::vector<std::shared_ptr<TrainerCallback>>) -> Trainer<M, T, E, C>;

}  // namespace torchtrain

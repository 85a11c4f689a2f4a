// SPDX-License-Identifier: MIT
// Trainer: the complete training loop, with every decision point dispatched to callbacks. What does not depend
// on the model, data set and batch types lives in TrainerBase (trainer_base.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "torchtrain/data/collators.hpp"
#include "torchtrain/data/data_loader.hpp"
#include "torchtrain/data/epoch_sampler.hpp"
#include "torchtrain/data/stream_loader.hpp"
#include "torchtrain/detail/eval_accumulator.hpp"
#include "torchtrain/detail/model_io.hpp"
#include "torchtrain/model_init.hpp"
#include "torchtrain/trainer_base.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain {

/// Trains, evaluates and predicts with any `torch::nn` module holder over map-style `torch::data`
/// datasets or streams (data::is_stream_dataset: read in order, max_steps required). Every event goes to the callbacks in list order: DefaultFlowCallback first, then the reporters of
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
class Trainer : public TrainerBase {
  template <class Dataset>
  using LoaderFor = std::conditional_t<data::is_stream_dataset<Dataset>::value, data::StreamLoader<Dataset, Collator>,
                                       data::DataLoader<Dataset, Collator>>;

 public:
  /// Stream datasets (see data::is_stream_dataset) are read in order; the others by index.
  static constexpr bool kTrainStream = data::is_stream_dataset<TrainDataset>::value;
  static constexpr bool kEvalStream = data::is_stream_dataset<EvalDataset>::value;
  using TrainLoader = LoaderFor<TrainDataset>;
  using EvalLoader = LoaderFor<EvalDataset>;
  using Batch = typename TrainLoader::Batch;
  static_assert(std::is_same_v<Batch, typename EvalLoader::Batch>,
                "the training and evaluation datasets must collate to the same batch type");

  Trainer(Model model, TrainingArguments args, std::optional<TrainDataset> train_dataset = std::nullopt,
          std::optional<EvalDataset> eval_dataset = std::nullopt, Collator data_collator = {},
          std::vector<CallbackPtr> callbacks = {})
      : Trainer(std::move(model), std::move(args), std::move(train_dataset), unnamed(std::move(eval_dataset)),
                std::move(data_collator), std::move(callbacks)) {}

  /// Several evaluation sets: metrics of set `name` are prefixed `eval_<name>_`.
  Trainer(Model model, TrainingArguments args, std::optional<TrainDataset> train_dataset,
          std::map<std::string, EvalDataset> eval_datasets, Collator data_collator = {},
          std::vector<CallbackPtr> callbacks = {})
      : TrainerBase(std::move(args)),
        model(std::move(model)),
        data_collator(std::move(data_collator)),
        train_dataset_(std::move(train_dataset)),
        eval_datasets_(std::move(eval_datasets)) {
    if (eval_datasets_.size() > 1 && eval_datasets_.count(""))
      throw ArgumentError("Trainer: eval dataset names must not be empty");
    if (kTrainStream && train_dataset_ && this->args.max_steps <= 0)
      throw ArgumentError("The train_dataset does not implement __len__, max_steps has to be specified. The number "
                          "of steps needs to be known in advance for the learning rate scheduler.");
    finish_construction(std::move(callbacks));
  }

  Model model;
  Collator data_collator;
  /// When set, train() builds a fresh model with it (after seeding), as HF does; hyperparameter_search needs
  /// it. A model_init taking `const Trial&` receives the trial's values, including keys of its own.
  ModelInit<Model> model_init;
  /// The loss from (predictions, labels) when the model returns no "loss", as a mean over the batch's labels;
  /// when unset, the built-in one: cross-entropy for class indices (per-token logits flattened, labels of -100
  /// ignored, args.label_smoothing_factor), mean squared error otherwise.
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> criterion;

  /// Evaluates on `dataset` (default: the eval dataset(s)); logs the metrics and fires on_evaluate.
  Metrics evaluate(std::optional<EvalDataset> dataset = std::nullopt, const std::vector<std::string>& ignore_keys = {},
                   const std::string& metric_key_prefix = "eval") {
    if (dataset) return report_evaluation(evaluation_loop(*dataset, ignore_keys, metric_key_prefix, false).metrics);
    if (eval_datasets_.empty())
      throw ArgumentError("evaluate: no eval dataset; pass one to the Trainer or to evaluate()");
    Metrics all;
    for (auto& [name, ds] : eval_datasets_) {
      const auto prefix = name.empty() ? metric_key_prefix : metric_key_prefix + "_" + name;
      auto m = report_evaluation(evaluation_loop(ds, ignore_keys, prefix, false).metrics);
      for (auto& [k, v] : m.items()) all[k] = v;
    }
    return all;
  }

  /// Predictions (and labels and metrics, when the data has labels) over `dataset`; fires on_predict.
  PredictionOutput predict(EvalDataset dataset, const std::vector<std::string>& ignore_keys = {},
                           const std::string& metric_key_prefix = "test") {
    auto loop = evaluation_loop(dataset, ignore_keys, metric_key_prefix, /*keep_predictions=*/true);
    report_prediction(loop.metrics);
    return {loop.predictions, loop.labels, std::move(loop.metrics), std::move(loop.outputs)};
  }

  /// Computes the loss of one batch, as Hugging Face's compute_loss; `batch` is already on the device. In
  /// training, when the labels are class indices, `num_items_in_batch` is the number of labels other than -100
  /// in the whole accumulation window (over every process, with average_tokens_across_devices): the loss is
  /// then this batch's sum over its labels divided by it, and LossOutput::normalized_by_num_items says so.
  /// Otherwise (undefined; also for a window of one batch in one process, whose mean is the same) the loss is
  /// the batch's mean and the loop divides it by the window's length.
  virtual LossOutput compute_loss(Model& m, const Batch& batch, const torch::Tensor& num_items_in_batch = {},
                                  const std::vector<std::string>& ignore_keys = {}) {
    detail::LossOptions options{&criterion, args.label_smoothing_factor, num_items_in_batch};
    return detail::read_output(model_forward(m, batch), detail::labels_of(batch), options, ignore_keys);
  }

  /// The model's forward on `batch` under autocast() (args.bf16, args.fp16, a full-precision evaluation), its
  /// float16/bfloat16 outputs returned in float32, as Accelerate wraps a model's forward for HF: a loss the
  /// model computes runs under autocast, one the Trainer computes from the outputs in float32.
  auto model_forward(Model& m, const Batch& batch) {
    auto output = [&] {
      const AutocastGuard precision = autocast();
      return detail::forward(m, batch);
    }();
    if (autocast_dtype()) output = detail::to_float32(std::move(output));
    return output;
  }

  /// Forward and backward of one micro-batch, as Hugging Face's training_step; returns the detached loss the
  /// log averages (already divided by the accumulation window). Override to change one step and keep the loop.
  virtual torch::Tensor training_step(Model& m, const Batch& batch, const torch::Tensor& num_items_in_batch) {
    auto out = compute_loss(m, batch, num_items_in_batch);
    if (!out.loss.defined())
      throw ArgumentError("train: the model returned no loss and the batch has no labels to compute one");
    torch::Tensor loss = window_share(out.loss, out.normalized_by_num_items);
    backward(loss);
    return loss.detach();
  }

  /// One evaluation batch, as Hugging Face's prediction_step, under no_grad: the mean loss (when there are labels
  /// or the model returns one) and, unless `prediction_loss_only`, the logits and labels.
  virtual PredictionStepOutput prediction_step(Model& m, const Batch& batch, bool prediction_loss_only,
                                               const std::vector<std::string>& ignore_keys) {
    auto out = compute_loss(m, batch, {}, ignore_keys);
    PredictionStepOutput step;
    if (out.loss.defined()) step.loss = out.loss.detach();
    if (prediction_loss_only) return step;
    if (out.predictions.defined()) step.logits = out.predictions.detach();
    for (auto& [key, value] : out.other_outputs) step.outputs.emplace(key, value.detach());
    step.labels = detail::labels_of(batch);
    return step;
  }

 private:
  struct EvalLoopOutput {
    torch::Tensor predictions, labels;
    Metrics metrics;
    ModelOutput outputs;
  };

  static std::map<std::string, EvalDataset> unnamed(std::optional<EvalDataset> dataset) {
    std::map<std::string, EvalDataset> single;
    if (dataset) single.emplace("", std::move(*dataset));
    return single;
  }

  torch::nn::Module& module() final { return *model; }
  bool has_eval_dataset() const final { return !eval_datasets_.empty(); }
  bool has_model_init() const final { return static_cast<bool>(model_init); }
  bool model_init_takes_trial() const final { return model_init.takes_trial(); }
  Metrics evaluate_eval_sets(const std::vector<std::string>& ignore_keys) final {
    return evaluate(std::nullopt, ignore_keys);
  }

  TrainOutput inner_training_loop(ResumeFrom resume, const Trial& trial) final {
    if (!train_dataset_) throw ArgumentError("train: the Trainer has no train dataset");
    start_run(trial);
    if (model_init) {
      model = model_init(trial);
      adopt_new_model();
    }
    const auto micro_batch_size = static_cast<std::size_t>(args.per_device_train_batch_size);
    open_train_loader(micro_batch_size);
    const struct Close {
      std::optional<TrainLoader>& loader;
      ~Close() { loader.reset(); }  // a stream's reader thread stops with it
    } close{train_loader_};
    TrainLoader& loader = *train_loader_;
    RunPlan plan;
    DataLoaderInfo info{0, 0, micro_batch_size};  // a stream's length is unknown
    std::optional<data::EpochSampler> sampler;
    if constexpr (kTrainStream) {
      plan = plan_stream_run(args);
    } else {
      plan = plan_run(args, loader.num_batches(), loader.num_examples());
      info = {loader.num_batches(), loader.num_examples(), micro_batch_size};
      sampler.emplace(train_sampler(loader.num_examples()));
    }
    const ResumePoint start = begin_training(plan, std::move(resume), info);

    const std::int64_t ga = args.gradient_accumulation_steps;
    const std::int64_t steps_in_epoch = plan.batches_per_epoch;
    for (std::int64_t epoch = start.epochs_trained; continue_epochs(epoch, plan); ++epoch) {
      const std::int64_t first_step = epoch == start.epochs_trained ? start.batches_to_skip : 0;
      start_train_epoch(loader, sampler, epoch, first_step, epoch == start.epochs_trained && start.stream_restored);
      handler_.on_epoch_begin(args, state, control, context_);
      std::vector<Batch> window_batches;  // reused: no allocation per window
      std::vector<std::int64_t> window_examples;
      std::vector<torch::Tensor> window_labels;
      torch::Tensor num_items_in_batch;
      std::int64_t window = 0;
      bool data_ended = false;  // a stream ended inside the current window
      for (std::int64_t step = first_step; step < steps_in_epoch; ++step) {
        const std::int64_t window_start = step - step % ga;
        if (step == window_start) {
          // The whole window first, to count its label tokens (HF's get_batch_samples).
          const std::int64_t wanted = std::min(ga, steps_in_epoch - window_start);
          window = read_window(loader, window_start, wanted, window_batches, window_examples);
          if (window == 0) {  // the stream has ended
            if (step == 0) stop_after_empty_epoch();
            break;
          }
          data_ended = window < wanted;
          handler_.on_step_begin(args, state, control, context_);
          window_labels.clear();
          for (std::int64_t k = 0; k < window; ++k) {
            const Batch& batch = window_batches[static_cast<std::size_t>(k)];
            count_train_samples(window_examples[static_cast<std::size_t>(k)]);
            window_labels.push_back(detail::labels_of(batch));
            count_input_tokens(detail::input_tokens(batch, args.include_num_input_tokens_seen));
          }
          num_items_in_batch = window_label_tokens(window_labels);
          current_gradient_accumulation_steps_ = window;
        }
        record_loss(training_step(model, window_batches.at(static_cast<std::size_t>(step - window_start)),
                                  num_items_in_batch));
        const bool window_done = step + 1 == window_start + window;
        if (!window_done)
          handler_.on_substep_end(args, state, control, context_);
        else
          finish_update(epoch, step, steps_in_epoch);
        if (stop_epoch() || (window_done && data_ended)) break;
      }
      end_epoch();
    }
    return end_training();
  }

  // Puts the loader at micro-batch `first_step` of `epoch`. A stream whose position the checkpoint restored is
  // there already; one without a saved position reads the batches before it again.
  void start_train_epoch(TrainLoader& loader, const std::optional<data::EpochSampler>& sampler, std::int64_t epoch,
                         std::int64_t first_step, bool stream_restored) {
    if constexpr (kTrainStream) {
      if (stream_restored) return;
      loader.start_epoch(epoch);
      if (first_step > 0) {
        warn_replaying_stream(epoch, first_step);
        loader.skip(first_step);
      }
    } else {
      loader.start_epoch(sampler->indices(epoch), static_cast<std::size_t>(first_step));
    }
  }

  void open_train_loader(std::size_t batch_size) {
    const auto workers = static_cast<std::size_t>(args.dataloader_num_workers);
    const auto ranks = static_cast<std::size_t>(world_size());
    if constexpr (kTrainStream)
      train_loader_.emplace(*train_dataset_, data_collator, batch_size, workers, static_cast<std::size_t>(rank()), ranks);
    else
      train_loader_.emplace(*train_dataset_, data_collator, batch_size, args.dataloader_drop_last, workers, ranks);
  }

  // Reads up to `wanted` micro-batches of the window starting at micro-batch `window_start` onto the device,
  // with each one's number of examples; returns how many it read. Only a stream can end early (on any rank).
  std::int64_t read_window(TrainLoader& loader, std::int64_t window_start, std::int64_t wanted,
                           std::vector<Batch>& batches, std::vector<std::int64_t>& examples) {
    batches.clear();
    examples.clear();
    for (std::int64_t k = 0; k < wanted; ++k) {
      if constexpr (kTrainStream) {
        auto item = loader.next();
        if (!item) break;
        examples.push_back(static_cast<std::int64_t>(item->examples));
        batches.push_back(detail::to_device(std::move(item->batch), device_));
      } else {
        const auto first_example = static_cast<std::size_t>(window_start + k) * loader.batch_size();
        examples.push_back(static_cast<std::int64_t>(std::min(loader.batch_size(), loader.shard_size() - first_example)));
        batches.push_back(detail::to_device(loader.next(), device_));
      }
    }
    if constexpr (kTrainStream) {
      const auto agreed = static_cast<std::size_t>(agreed_window(static_cast<std::int64_t>(batches.size())));
      batches.erase(batches.begin() + static_cast<std::ptrdiff_t>(agreed), batches.end());
      examples.resize(agreed);
    }
    return static_cast<std::int64_t>(batches.size());
  }

  std::optional<StreamState> train_stream_state() final {
    if constexpr (kTrainStream) {
      if (train_loader_) return StreamState{train_loader_->epoch(), train_loader_->batches_taken(), train_loader_->position()};
    }
    return std::nullopt;
  }

  bool restore_train_stream(std::int64_t epoch, std::int64_t batches, const std::string& position) final {
    if constexpr (kTrainStream && data::has_stream_position<TrainDataset>::value) {
      train_loader_->restore(epoch, batches, position);
      return true;
    }
    return false;
  }

  // The order of each epoch's examples, from args.train_sampling_strategy.
  data::EpochSampler train_sampler(std::size_t num_examples) {
    data::EpochSampler sampler(num_examples, args.effective_data_seed(), args.train_sampling_strategy != "sequential",
                               static_cast<std::size_t>(rank()), static_cast<std::size_t>(world_size()));
    if (args.train_sampling_strategy == "group_by_length")  // over the examples of one step of every process
      sampler.group_by_length(detail::example_lengths(*train_dataset_),
                              static_cast<std::size_t>(args.per_device_train_batch_size * world_size() *
                                                       args.gradient_accumulation_steps));
    return sampler;
  }

  EvalLoopOutput evaluation_loop(EvalDataset& dataset, const std::vector<std::string>& ignore_keys,
                                 const std::string& prefix, bool keep_predictions) {
    const auto started = std::chrono::steady_clock::now();
    const FullPrecisionEval full_precision(*this);
    const bool was_training = model->is_training();
    model->eval();
    torch::NoGradGuard no_grad;
    // As HF's evaluate: without compute_metrics, only the loss.
    const bool prediction_loss_only = !keep_predictions && !compute_metrics;
    detail::EvalAccumulator predictions("predictions"), labels("labels"), inputs("inputs"), losses("losses");
    std::map<std::string, detail::EvalAccumulator> outputs;  // the model's other named outputs
    const bool keep_inputs = includes_for_metrics("inputs"), keep_losses = includes_for_metrics("loss");
    const auto flush_every = args.eval_accumulation_steps.value_or(0);
    torch::Tensor loss_sum;
    std::size_t num_batches = 0;
    // One batch of `rows` examples (the last one may be partial).
    auto evaluate_batch = [&](Batch batch, std::int64_t rows) {
      batch = detail::to_device(std::move(batch), device_);
      auto step = prediction_step(model, batch, prediction_loss_only, ignore_keys);
      if (step.loss.defined()) {
        auto weighted = step.loss.to(torch::kDouble) * static_cast<double>(rows);
        loss_sum = loss_sum.defined() ? loss_sum + weighted : weighted;
        if (keep_losses) losses.add(step.loss.reshape({1}).expand({rows}));
      }
      if (!prediction_loss_only) {
        if (step.logits.defined() && preprocess_logits_for_metrics)
          step.logits = preprocess_logits_for_metrics(step.logits, step.labels);
        predictions.add(step.logits);
        labels.add(step.labels);
        if (keep_inputs) inputs.add(batch.data);
        for (const auto& [key, value] : step.outputs) outputs.try_emplace(key, key).first->second.add(value);
      }
      handler_.on_prediction_step(args, state, control, context_);
      ++num_batches;
      if (flush_every > 0 && static_cast<std::int64_t>(num_batches) % flush_every == 0) {
        for (auto* kept : {&predictions, &labels, &inputs, &losses}) kept->to_cpu();
        for (auto& [key, kept] : outputs) kept.to_cpu();
      }
    };
    const auto batch_size = static_cast<std::size_t>(args.per_device_eval_batch_size);
    const auto workers = static_cast<std::size_t>(args.dataloader_num_workers);
    std::size_t num_samples = 0;  // over every process
    if constexpr (kEvalStream) {
      EvalLoader loader(dataset, data_collator, batch_size, workers, static_cast<std::size_t>(rank()),
                        static_cast<std::size_t>(world_size()));
      eval_info_ = {0, 0, batch_size};  // a stream's length is unknown until it ends
      context_.eval_dataloader = &eval_info_;
      loader.rewind();
      std::size_t examples = 0;
      while (auto item = loader.next()) {
        examples += item->examples;
        evaluate_batch(std::move(item->batch), static_cast<std::int64_t>(item->examples));
      }
      num_samples = examples_over_ranks(examples);
      eval_info_ = {num_batches, num_samples, batch_size};
    } else {
      EvalLoader loader(dataset, data_collator, batch_size, /*drop_last=*/false, workers);
      std::vector<std::size_t> order = evaluation_order(loader.num_examples());
      const std::size_t order_size = order.size();
      const std::size_t batches = (order_size + batch_size - 1) / batch_size;
      eval_info_ = {batches, loader.num_examples(), batch_size};
      context_.eval_dataloader = &eval_info_;
      loader.start_epoch(std::move(order));
      for (std::size_t b = 0; b < batches; ++b)
        evaluate_batch(loader.next(), static_cast<std::int64_t>(std::min(batch_size, order_size - b * batch_size)));
      num_samples = loader.num_examples();
    }
    if (was_training) model->train();

    EvalLoopOutput result;
    EvalPrediction all{predictions.result(), labels.result(), inputs.result(), losses.result(), {}};
    for (auto& [key, kept] : outputs) all.outputs.emplace(key, kept.result());
    if (!prediction_loss_only) {  // distributed, every rank gets the whole set's outputs and computes the same metrics
      all.predictions = gathered_over_ranks(all.predictions, num_samples, "predictions");
      all.label_ids = gathered_over_ranks(all.label_ids, num_samples, "labels");
      if (keep_inputs) all.inputs = gathered_over_ranks(all.inputs, num_samples, "inputs");
      for (auto& [key, value] : all.outputs) value = gathered_over_ranks(value, num_samples, key.c_str());
    }
    if (keep_losses) all.losses = gathered_over_ranks(all.losses, num_samples, "losses");
    loss_sum = summed_over_ranks(loss_sum);
    Metrics computed;
    if (compute_metrics && all.predictions.defined() && all.label_ids.defined()) computed = compute_metrics(all);
    result.predictions = all.predictions;
    result.labels = all.label_ids;
    result.outputs = std::move(all.outputs);
    result.metrics = evaluation_metrics(prefix, loss_sum, computed, num_samples, num_batches, started);
    return result;
  }

  std::optional<TrainDataset> train_dataset_;
  std::map<std::string, EvalDataset> eval_datasets_;  // key "" for a single, unnamed eval dataset
  std::optional<TrainLoader> train_loader_;            // while train() runs
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

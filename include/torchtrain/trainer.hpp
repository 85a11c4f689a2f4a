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
#include "torchtrain/detail/model_io.hpp"
#include "torchtrain/model_init.hpp"
#include "torchtrain/trainer_base.hpp"
#include "torchtrain/trainer_outputs.hpp"

namespace torchtrain {

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
class Trainer : public TrainerBase {
 public:
  using TrainLoader = data::DataLoader<TrainDataset, Collator>;
  using EvalLoader = data::DataLoader<EvalDataset, Collator>;
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
    finish_construction(std::move(callbacks));
  }

  Model model;
  Collator data_collator;
  /// When set, train() builds a fresh model with it (after seeding), as HF does; hyperparameter_search needs
  /// it. A model_init taking `const Trial&` receives the trial's values, including keys of its own.
  ModelInit<Model> model_init;
  /// Loss from (predictions, labels) when the model returns no "loss".
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> criterion = detail::default_criterion;

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
    return {loop.predictions, loop.labels, std::move(loop.metrics)};
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
    TrainLoader loader(*train_dataset_, data_collator, micro_batch_size, args.dataloader_drop_last,
                       static_cast<std::size_t>(args.dataloader_num_workers), static_cast<std::size_t>(world_size()));
    const RunPlan plan = plan_run(args, loader.num_batches(), loader.num_examples(), world_size());
    const ResumePoint start =
        begin_training(plan, std::move(resume), {loader.num_batches(), loader.num_examples(), micro_batch_size});

    const data::EpochSampler sampler(loader.num_examples(), args.data_seed.value_or(args.seed), /*shuffle=*/true,
                                     static_cast<std::size_t>(rank()), static_cast<std::size_t>(world_size()));
    const std::int64_t ga = args.gradient_accumulation_steps;
    const std::int64_t steps_in_epoch = plan.batches_per_epoch;
    for (std::int64_t epoch = start.epochs_trained; continue_epochs(epoch, plan); ++epoch) {
      const std::int64_t first_step = epoch == start.epochs_trained ? start.batches_to_skip : 0;
      loader.start_epoch(sampler.indices(epoch), static_cast<std::size_t>(first_step));
      handler_.on_epoch_begin(args, state, control, context_);
      for (std::int64_t step = first_step; step < steps_in_epoch; ++step) {
        const std::int64_t window_start = step - step % ga;
        const std::int64_t window = std::min(ga, steps_in_epoch - window_start);
        if (step == window_start) handler_.on_step_begin(args, state, control, context_);
        training_step(detail::to_device(loader.next(), device_), window);
        if (step + 1 < window_start + window)
          handler_.on_substep_end(args, state, control, context_);
        else
          finish_update(epoch, step, steps_in_epoch);
        if (stop_epoch()) break;
      }
      end_epoch();
    }
    return end_training(plan);
  }

  // Forward and backward of one micro-batch of an accumulation window of `window` micro-batches.
  void training_step(const Batch& batch, std::int64_t window) {
    auto out = compute_loss(model, batch);
    if (!out.loss.defined())
      throw ArgumentError("train: the model returned no loss and the batch has no labels to compute one");
    torch::Tensor loss = window > 1 ? out.loss / static_cast<double>(window) : out.loss;
    loss.backward();
    record_loss(loss);
  }

  EvalLoopOutput evaluation_loop(EvalDataset& dataset, const std::vector<std::string>& ignore_keys,
                                 const std::string& prefix, bool keep_predictions) {
    const auto started = std::chrono::steady_clock::now();
    EvalLoader loader(dataset, data_collator, static_cast<std::size_t>(args.per_device_eval_batch_size),
                      /*drop_last=*/false, static_cast<std::size_t>(args.dataloader_num_workers));
    std::vector<std::size_t> order = evaluation_order(loader.num_examples());
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
    const std::size_t num_samples = loader.num_examples();
    if (!predictions.empty()) result.predictions = torch::cat(predictions);
    if (!labels.empty()) result.labels = torch::cat(labels);
    if (collect) {  // distributed, every rank gets the whole set's outputs and computes the same metrics
      result.predictions = gathered_over_ranks(result.predictions, num_samples, "predictions");
      result.labels = gathered_over_ranks(result.labels, num_samples, "labels");
    }
    loss_sum = summed_over_ranks(loss_sum);
    Metrics computed;
    if (compute_metrics && result.predictions.defined() && result.labels.defined())
      computed = compute_metrics(EvalPrediction{result.predictions, result.labels});
    result.metrics = evaluation_metrics(prefix, loss_sum, computed, num_samples, num_batches, started);
    return result;
  }

  std::optional<TrainDataset> train_dataset_;
  std::map<std::string, EvalDataset> eval_datasets_;  // key "" for a single, unnamed eval dataset
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

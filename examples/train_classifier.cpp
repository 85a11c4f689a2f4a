// train_classifier: trains an MLP classifier on a CSV file or on synthetic data, with every TrainingArguments
// flag available on the command line. Run with --help for the list.
//
//   train_classifier --output_dir out --num_train_epochs 5 --eval_strategy epoch
//   train_classifier --train_file train.csv --eval_file test.csv --hidden_size 128
//   train_classifier --output_dir out --resume_from_checkpoint true
//   MLFLOW_TRACKING_URI=http://localhost:5000 train_classifier --report_to mlflow
//
// The final weights go to <output_dir>/model.pt. SIGTERM or SIGINT during training saves a checkpoint at the
// next step and exits; run again with --resume_from_checkpoint true to continue exactly where it stopped.
//
// Exit status: 0 on success, 2 for bad input (a flag, a file, an argument set), 1 for anything else, and
// 128 + the signal after such a preemption checkpoint (143 for SIGTERM, 130 for SIGINT), as a shell reports a
// process killed by that signal, so job schedulers treat it as preempted.
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include <torchtrain/callbacks/codecarbon.hpp>
#include <torchtrain/callbacks/dvclive.hpp>
#include <torchtrain/callbacks/wandb.hpp>
#include <torchtrain/torchtrain.hpp>
#ifdef TORCHTRAIN_EXAMPLE_TRACKERS  // built where libcurl and libsqlite3 are found
#include <torchtrain/callbacks/mlflow.hpp>
#include <torchtrain/callbacks/trackio.hpp>
#endif

#include "classifier.hpp"

namespace tt = torchtrain;

namespace {

using examples::Classifier;
using examples::synthetic;

struct Options {
  std::string train_file, eval_file, trace_events, resume_from_checkpoint;
  std::int64_t num_train_samples = 2048, num_eval_samples = 512, num_features = 16, num_classes = 4;
  std::int64_t hidden_size = 64;
  std::optional<std::int64_t> early_stopping_patience;
  double early_stopping_threshold = 0.0;
};

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "train_classifier_output";
  defaults.learning_rate = 1e-3;
  defaults.logging_steps = 50;
  defaults.eval_strategy = tt::IntervalStrategy::epoch;
  defaults.save_strategy = tt::SaveStrategy::epoch;
  defaults.metric_for_best_model = "accuracy";  // what --early_stopping_patience watches
  defaults.per_device_train_batch_size = 32;
  defaults.per_device_eval_batch_size = 128;
  return defaults;
}

int run(int argc, char** argv) {
  Options o;
  tt::ArgumentParser parser("Train an MLP classifier with torchtrain.", program_defaults());
  parser.add_argument("train_file", o.train_file, "CSV of numeric features with the class label last; synthetic data when empty")
      .add_argument("eval_file", o.eval_file, "CSV for evaluation, same layout; synthetic data when empty")
      .add_argument("num_train_samples", o.num_train_samples, "synthetic training examples")
      .add_argument("num_eval_samples", o.num_eval_samples, "synthetic evaluation examples")
      .add_argument("num_features", o.num_features, "synthetic feature count")
      .add_argument("num_classes", o.num_classes, "synthetic class count")
      .add_argument("hidden_size", o.hidden_size, "width of the MLP's hidden layer")
      .add_argument("early_stopping_patience", o.early_stopping_patience,
                    "stop after this many evaluations without improvement")
      .add_argument("early_stopping_threshold", o.early_stopping_threshold, "smallest change that counts as improvement")
      .add_argument("trace_events", o.trace_events, "append every callback event as a JSON line to this file")
      .add_argument("resume_from_checkpoint", o.resume_from_checkpoint,
                    "a checkpoint folder, or true for the newest valid one in output_dir");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  tt::TrainingArguments args = parsed.args;
  if (o.hidden_size < 1) throw tt::ArgumentError("--hidden_size " + std::to_string(o.hidden_size) + ": must be at least 1");
  if (o.num_classes < 2) throw tt::ArgumentError("--num_classes " + std::to_string(o.num_classes) + ": must be at least 2");
  if (o.num_features < 1 || o.num_train_samples < 1 || o.num_eval_samples < 1)
    throw tt::ArgumentError("--num_features, --num_train_samples and --num_eval_samples must be at least 1");

  const uint64_t seed = args.seed;
  auto train_set = o.train_file.empty()
                       ? synthetic(o.num_train_samples, o.num_features, o.num_classes, seed, seed + 1)
                       : tt::data::TensorDataset::from_csv(o.train_file);
  auto eval_set = o.eval_file.empty() ? synthetic(o.num_eval_samples, o.num_features, o.num_classes, seed, seed + 2)
                                      : tt::data::TensorDataset::from_csv(o.eval_file);
  if (eval_set.num_features() != train_set.num_features())
    throw tt::ArgumentError("--eval_file has " + std::to_string(eval_set.num_features()) +
                            " feature columns but the training data has " + std::to_string(train_set.num_features()));
  const int64_t classes = std::max(train_set.num_classes(), eval_set.num_classes());

  torch::manual_seed(seed);
  tt::Trainer trainer(Classifier(train_set.num_features(), o.hidden_size, classes), args, train_set, eval_set);
  trainer.compute_metrics = tt::metrics::accuracy;
  if (o.early_stopping_patience)
    trainer.add_callback<tt::EarlyStoppingCallback>(static_cast<int>(*o.early_stopping_patience),
                                                    o.early_stopping_threshold);
  if (!o.trace_events.empty()) trainer.add_callback<tt::EventTraceCallback>(o.trace_events);

  auto result = trainer.train(tt::ResumeFrom::parse(o.resume_from_checkpoint));
  if (result.preempted_by) return 128 + result.preempted_by;  // the Trainer said which checkpoint it saved
  trainer.save_model();
  trainer.save_metrics("train", result.metrics);
  trainer.save_state();
  auto metrics = trainer.evaluate();
  trainer.save_metrics("eval", metrics);
  std::cout << "train_loss " << result.training_loss << "  eval_loss " << metrics["eval_loss"].get<double>()
            << "  eval_accuracy " << metrics["eval_accuracy"].get<double>() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tt::Error& e) {  // bad flags, files or argument combinations
    std::cerr << "train_classifier: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "train_classifier: error: " << e.what() << "\n";
    return 1;
  }
}

// stream_classifier: trains train_classifier's MLP on a CSV file read as a stream, in constant memory whatever
// the file's size, through a shuffle buffer. When --train_file does not exist it is generated first: --rows rows
// of the synthetic clusters train_classifier uses (about 110 bytes a row with 16 features). Kill it at any moment
// and run it again with --resume_from_checkpoint true: it continues from its newest checkpoint at once, the
// stream's position included, and ends as an uninterrupted run would. Every TrainingArguments flag is available
// on the command line; --help lists them.
//
//   stream_classifier --rows 1000000 --max_steps 4000          # a 110 MB file, 1 million rows, one pass
//   stream_classifier --resume_from_checkpoint true             # after a kill
//
// Prints the final evaluation and the process's peak resident memory. Exit status: 0 on success, 2 for bad
// input (with a one-line reason), 1 for anything else, 128 + the signal after a preemption checkpoint.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <sys/resource.h>

#include <torchtrain/torchtrain.hpp>

#include "classifier.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;
using examples::Classifier;
using examples::synthetic;

namespace {

struct Options {
  std::string train_file = "stream_classifier_output/train.csv", resume_from_checkpoint;
  int64_t rows = 200000, num_features = 16, num_classes = 4, hidden_size = 64, num_eval_samples = 2000;
  int64_t shuffle_buffer = 10000;
};

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "stream_classifier_output";
  defaults.max_steps = 1000;
  defaults.per_device_train_batch_size = 128;
  defaults.learning_rate = 3e-3;
  defaults.logging_steps = 100;
  defaults.eval_strategy = tt::IntervalStrategy::steps;
  defaults.eval_steps = 250;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 250;
  defaults.save_total_limit = 2;
  return defaults;
}

// Writes `rows` rows of the synthetic clusters, 10,000 at a time, through a staging file renamed at the end.
void generate(const Options& o, std::uint64_t seed) {
  const fs::path path = o.train_file, staging = path.string() + ".partial";
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(staging.c_str(), "wb"), std::fclose);
  if (!out) throw tt::ArgumentError("cannot write " + staging.string());
  for (int64_t f = 0; f < o.num_features; ++f) std::fprintf(out.get(), "x%lld,", static_cast<long long>(f));
  std::fprintf(out.get(), "label\n");
  for (int64_t start = 0, chunk = 0; start < o.rows; start += 10000, ++chunk) {
    const auto part = synthetic(std::min<int64_t>(10000, o.rows - start), o.num_features, o.num_classes, seed,
                                seed + 100 + static_cast<std::uint64_t>(chunk));
    const auto features = part.features().contiguous();
    const float* x = features.data_ptr<float>();
    const int64_t* label = part.labels().data_ptr<int64_t>();
    for (int64_t r = 0; r < part.labels().size(0); ++r) {
      for (int64_t f = 0; f < o.num_features; ++f) std::fprintf(out.get(), "%.4f,", x[r * o.num_features + f]);
      std::fprintf(out.get(), "%lld\n", static_cast<long long>(label[r]));
    }
  }
  if (std::fclose(out.release()) != 0) throw tt::ArgumentError("cannot write " + staging.string());
  fs::rename(staging, path);
  std::cout << "wrote " << o.rows << " rows to " << path.string() << " (" << fs::file_size(path) / 1000000
            << " MB)\n";
}

int run(int argc, char** argv) {
  Options o;
  tt::ArgumentParser parser("Train an MLP classifier on a CSV file of any size, read as a stream.", program_defaults());
  parser.add_argument("train_file", o.train_file, "CSV of numeric features with the class label last; generated if missing")
      .add_argument("rows", o.rows, "rows of the generated file")
      .add_argument("num_features", o.num_features, "feature columns of the generated file")
      .add_argument("num_classes", o.num_classes, "classes of the data")
      .add_argument("hidden_size", o.hidden_size, "width of the MLP's hidden layer")
      .add_argument("shuffle_buffer", o.shuffle_buffer, "rows held to draw from at random; 0 reads the file in order")
      .add_argument("num_eval_samples", o.num_eval_samples, "held-out synthetic examples evaluated")
      .add_argument("resume_from_checkpoint", o.resume_from_checkpoint,
                    "a checkpoint folder, or true for the newest valid one in output_dir");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  const tt::TrainingArguments& args = parsed.args;
  if (o.rows < 1 || o.num_features < 1 || o.num_classes < 2 || o.hidden_size < 1 || o.shuffle_buffer < 0 ||
      o.num_eval_samples < 1)
    throw tt::ArgumentError("--rows, --num_features, --hidden_size and --num_eval_samples must be at least 1, "
                            "--num_classes at least 2 and --shuffle_buffer at least 0");
  if (!fs::exists(o.train_file)) generate(o, args.seed);

  tt::data::TextLineStreamOptions stream_options;
  stream_options.shuffle_buffer = static_cast<std::size_t>(o.shuffle_buffer);
  stream_options.seed = args.seed;
  tt::data::CsvStream train_set(o.train_file, stream_options);
  const int64_t features = train_set.num_features();
  // Held out: the same clusters, points the file does not have.
  auto eval_set = synthetic(o.num_eval_samples, features, o.num_classes, args.seed, args.seed + 1);

  torch::manual_seed(args.seed);
  tt::Trainer trainer(Classifier(features, o.hidden_size, o.num_classes), args, std::move(train_set), eval_set);
  trainer.compute_metrics = tt::metrics::accuracy;
  const auto result = trainer.train(tt::ResumeFrom::parse(o.resume_from_checkpoint));
  if (result.preempted_by) return 128 + result.preempted_by;  // the Trainer said which checkpoint it saved
  trainer.save_model();
  trainer.save_metrics("train", result.metrics);
  trainer.save_state();
  const auto metrics = trainer.evaluate();
  trainer.save_metrics("eval", metrics);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::cout << "train_loss " << result.training_loss << "  eval_accuracy " << metrics["eval_accuracy"].get<double>()
            << "  epoch " << trainer.state.epoch.value_or(0.0) << "  peak_rss_mb " << usage.ru_maxrss / 1024 << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tt::Error& e) {
    std::cerr << "stream_classifier: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "stream_classifier: error: " << e.what() << "\n";
    return 1;
  }
}

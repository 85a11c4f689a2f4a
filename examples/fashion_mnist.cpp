// fashion_mnist: trains a small CNN on Fashion-MNIST (60,000 training and 10,000 test images of clothes, 10
// classes) from the Debian package dataset-fashion-mnist, read with LibTorch's own MNIST reader, which the
// Trainer takes as it is. Every TrainingArguments flag is available on the command line; --help lists them.
//
//   fashion_mnist --output_dir out                      # 2 epochs, evaluated on the test images after each
//   fashion_mnist --max_steps 300 --eval_strategy no     # a quick run
//
// The package ships the IDX files gzipped; they are unpacked once into <output_dir>/fashion-mnist-idx.
// Exit status: 0 on success, 2 for bad input or missing data (with a one-line reason), 1 for anything else,
// 128 + the signal after a preemption checkpoint.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

#include <torchtrain/torchtrain.hpp>

#include "fashion_cnn.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "fashion_mnist_output";
  defaults.num_train_epochs = 2;
  defaults.learning_rate = 2e-3;
  defaults.per_device_train_batch_size = 32;
  defaults.per_device_eval_batch_size = 500;
  defaults.logging_steps = 100;
  defaults.eval_strategy = tt::IntervalStrategy::epoch;
  defaults.save_strategy = tt::SaveStrategy::epoch;
  defaults.dataloader_num_workers = 2;
  return defaults;
}

int run(int argc, char** argv) {
  std::string data_dir = "/usr/share/datasets/fashion-mnist", resume_from_checkpoint;
  tt::ArgumentParser parser("Train a small CNN on Fashion-MNIST with torchtrain.", program_defaults());
  parser.add_argument("data_dir", data_dir, "folder of the Fashion-MNIST IDX files (.gz or unpacked)")
      .add_argument("resume_from_checkpoint", resume_from_checkpoint,
                    "a checkpoint folder, or true for the newest valid one in output_dir");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  const tt::TrainingArguments& args = parsed.args;

  const auto root = examples::unpacked_data(data_dir, fs::path(args.output_dir) / "fashion-mnist-idx").string();
  using torch::data::datasets::MNIST;
  MNIST train(root, MNIST::Mode::kTrain), test(root, MNIST::Mode::kTest);

  torch::manual_seed(args.seed);
  tt::Trainer trainer(examples::Cnn(), args, train, test);
  trainer.compute_metrics = tt::metrics::accuracy;
  const auto result = trainer.train(tt::ResumeFrom::parse(resume_from_checkpoint));
  if (result.preempted_by) return 128 + result.preempted_by;  // the Trainer said which checkpoint it saved
  trainer.save_model();
  trainer.save_metrics("train", result.metrics);
  trainer.save_state();
  const auto metrics = trainer.evaluate();
  trainer.save_metrics("eval", metrics);
  std::cout << "train_runtime " << result.metrics["train_runtime"].get<double>() << " s  test_accuracy "
            << metrics["eval_accuracy"].get<double>() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tt::Error& e) {
    std::cerr << "fashion_mnist: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "fashion_mnist: error: " << e.what() << "\n";
    return 1;
  }
}

// A child process for the tracker tests: trains tt_test::Mlp on Blobs with every TrainingArguments flag from the
// command line (--report_to names the trackers) and, with --kill_after_log_at N, kills itself with SIGKILL
// right after the training loss of step N was reported: the tracker tests resume it and compare what the
// trackers hold with an uninterrupted run.
#include <csignal>
#include <cstdint>
#include <iostream>
#include <string>

#include <torchtrain/callbacks/codecarbon.hpp>
#include <torchtrain/callbacks/dvclive.hpp>
#include <torchtrain/callbacks/mlflow.hpp>
#include <torchtrain/callbacks/trackio.hpp>
#include <torchtrain/callbacks/wandb.hpp>
#include <torchtrain/torchtrain.hpp>

#include "datasets.hpp"

namespace tt = torchtrain;

namespace {

struct KillAfterLog : tt::TrainerCallback {
  std::int64_t step;
  explicit KillAfterLog(std::int64_t s) : step(s) {}
  void on_log(const Args&, const State& state, Control&, const Context& context) override {
    if (state.global_step == step && context.logs && context.logs->contains("loss")) std::raise(SIGKILL);
  }
};

int run(int argc, char** argv) {
  std::int64_t kill_after_log_at = -1, train_examples = 64;
  std::string resume_from_checkpoint;
  tt::TrainingArguments defaults;
  defaults.disable_tqdm = true;
  defaults.report_to = {"none"};
  defaults.per_device_train_batch_size = 4;
  defaults.max_steps = 12;
  defaults.logging_steps = 1;
  defaults.eval_strategy = tt::IntervalStrategy::steps;
  defaults.eval_steps = 4;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 5;
  tt::ArgumentParser parser("Train a small MLP, reporting to trackers.", defaults);
  parser.add_argument("kill_after_log_at", kill_after_log_at, "SIGKILL right after the loss of this step is logged")
      .add_argument("train_examples", train_examples, "examples of the training set")
      .add_argument("resume_from_checkpoint", resume_from_checkpoint, "a checkpoint folder, or true");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  torch::manual_seed(parsed.args.seed);  // the same initial weights in every process
  tt::Trainer<tt_test::Mlp, tt_test::Blobs> trainer(tt_test::Mlp(), parsed.args, tt_test::Blobs(train_examples, 1),
                                                   tt_test::Blobs(16, 2));
  if (kill_after_log_at >= 0) trainer.add_callback<KillAfterLog>(kill_after_log_at);
  trainer.train(tt::ResumeFrom::parse(resume_from_checkpoint));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "tracker_worker: " << e.what() << "\n";
    return 1;
  }
}

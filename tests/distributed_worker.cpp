// A child process for the distributed tests: one rank of a data-parallel run (or a single process when RANK and
// WORLD_SIZE are unset) training a small classifier, with every TrainingArguments flag plus:
//
//   --dump_dir D            write D/params_<rank>.pt (final weights), D/result_<rank>.json (global_step, final
//                           evaluation metrics) and D/files_<rank>.txt (every checkpoint file this process wrote)
//   --stop_at_step N        a callback on rank 0 only stops training at step N
//   --kill_at_step N        SIGKILL this process at the end of step N (on the ranks listed by --kill_ranks)
//   --kill_ranks R          ranks that --kill_at_step applies to: "all" or one rank number
//   --resume                continue from the newest valid checkpoint in output_dir
//
// Errors print "distributed_worker: error: ..." and exit with status 2.
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, output{nullptr};
  NetImpl() : hidden(register_module("hidden", torch::nn::Linear(8, 16))), output(register_module("output", torch::nn::Linear(16, 3))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Net);

tt::data::TensorDataset blobs(std::int64_t n, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto labels = torch::randint(0, 3, {n}, gen);
  const auto centres = torch::eye(3, 8) * 2.0;
  return {centres.index_select(0, labels) + torch::randn({n, 8}, gen), labels};
}

// Stops training at a given step; added on rank 0 only, so the other ranks stop only if the decision is shared.
class StopAt : public tt::TrainerCallback {
 public:
  explicit StopAt(std::int64_t step) : step_(step) {}
  void on_step_end(const tt::TrainingArguments&, const tt::TrainerState& state, tt::TrainerControl& control,
                   const tt::CallbackContext&) override {
    if (state.global_step == step_) control.should_training_stop = true;
  }

 private:
  std::int64_t step_;
};

class KillAt : public tt::TrainerCallback {
 public:
  explicit KillAt(std::int64_t step) : step_(step) {}
  void on_step_end(const tt::TrainingArguments&, const tt::TrainerState& state, tt::TrainerControl&,
                   const tt::CallbackContext&) override {
    if (state.global_step == step_) std::raise(SIGKILL);
  }

 private:
  std::int64_t step_;
};

int run(int argc, char** argv) {
  std::string dump_dir, kill_ranks = "all";
  std::optional<std::int64_t> stop_at_step, kill_at_step;
  bool resume = false;
  std::int64_t train_samples = 96, eval_samples = 37;
  tt::TrainingArguments defaults;
  defaults.disable_tqdm = true;
  defaults.learning_rate = 1e-2;
  defaults.logging_steps = 2;
  defaults.eval_strategy = tt::IntervalStrategy::epoch;
  defaults.save_strategy = tt::SaveStrategy::steps;
  defaults.save_steps = 4;
  tt::ArgumentParser parser("One rank of a distributed torchtrain test run.", defaults);
  parser.add_argument("dump_dir", dump_dir, "where each rank writes its weights, metrics and written files")
      .add_argument("stop_at_step", stop_at_step, "rank 0 alone decides to stop at this step")
      .add_argument("kill_at_step", kill_at_step, "SIGKILL at the end of this step")
      .add_argument("kill_ranks", kill_ranks, "ranks that --kill_at_step applies to: all or a rank")
      .add_argument("resume", resume, "resume from the newest valid checkpoint")
      .add_argument("train_samples", train_samples, "training examples")
      .add_argument("eval_samples", eval_samples, "evaluation examples");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;

  const char* rank_text = std::getenv("RANK");
  const int rank = rank_text ? std::atoi(rank_text) : 0;
  std::ofstream written;
  if (!dump_dir.empty()) {
    written.open(std::filesystem::path(dump_dir) / ("files_" + std::to_string(rank) + ".txt"), std::ios::app);
    tt::checkpoint::set_after_file_written_hook(
        [&written](const std::filesystem::path& file) { written << file.filename().string() << std::endl; });
  }

  torch::manual_seed(3);
  tt::Trainer trainer(Net(), parsed.args, blobs(train_samples, 5), blobs(eval_samples, 6));
  trainer.compute_metrics = tt::metrics::accuracy;
  if (stop_at_step && rank == 0) trainer.add_callback<StopAt>(*stop_at_step);
  if (kill_at_step && (kill_ranks == "all" || kill_ranks == std::to_string(rank)))
    trainer.add_callback<KillAt>(*kill_at_step);

  const auto result = trainer.train(resume ? tt::ResumeFrom(true) : tt::ResumeFrom());
  trainer.save_model();
  trainer.save_state();
  trainer.save_metrics("train", result.metrics);
  const auto metrics = trainer.evaluate();
  if (!dump_dir.empty()) {
    tt::checkpoint::save_module(*trainer.model, std::filesystem::path(dump_dir) / ("params_" + std::to_string(rank) + ".pt"));
    nlohmann::json out = {{"global_step", result.global_step},
                          {"training_loss", result.training_loss},
                          {"eval_loss", metrics["eval_loss"]},
                          {"eval_accuracy", metrics["eval_accuracy"]},
                          {"is_world_process_zero", trainer.state.is_world_process_zero},
                          {"log_history", trainer.state.log_history}};
    std::ofstream(std::filesystem::path(dump_dir) / ("result_" + std::to_string(rank) + ".json")) << out.dump(2);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "distributed_worker: error: " << e.what() << std::endl;
    return 2;
  }
}

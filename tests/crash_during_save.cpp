// A child process for the crash tests: trains a small classifier, saving every 4 steps, and kills itself with
// SIGKILL in the middle of a save, right after the given number of files of the given checkpoint are written.
//
//   crash_during_save <output_dir> run                    train to the end
//   crash_during_save <output_dir> kill <checkpoint> <n>  SIGKILL after file <n> of save number <checkpoint>
//   crash_during_save <output_dir> resume                 resume from the newest valid checkpoint
//
// Last arguments: "scaled" trains with a loss scaler (growth every 3 finite steps) and infinite gradients at
// updates 6 and 14, whose skips change the scale; "async" saves with save_async on a slow disk (each file
// takes 20 ms more), so training runs on while a checkpoint is written and the kill lands on the writer thread.
// At the end it writes <output_dir>/model.pt and trainer_state.json, and, scaled, grad_scaler.json with the
// scaler's final state.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <iostream>
#include <string>
#include <thread>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, output{nullptr};
  NetImpl() : hidden(register_module("hidden", torch::nn::Linear(8, 32))), output(register_module("output", torch::nn::Linear(32, 3))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Net);

tt::data::TensorDataset blobs(std::int64_t n, std::uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const auto labels = torch::randint(0, 3, {n}, gen);
  const auto centres = torch::eye(3, 8) * 3.0;
  return {centres.index_select(0, labels) + torch::randn({n, 8}, gen), labels};
}

}  // namespace

int main(int argc, char** argv) {
  auto last_argument_is = [&](const char* flag) {
    const bool is = argc > 3 && std::string(argv[argc - 1]) == flag;
    if (is) --argc;
    return is;
  };
  const bool async = last_argument_is("async");
  const bool scaled = last_argument_is("scaled");
  if (argc < 3) {
    std::cerr << "usage: crash_during_save <output_dir> run|kill <checkpoint> <files>|resume\n";
    return 2;
  }
  const std::string mode = argv[2];
  const int checkpoint = mode == "kill" && argc == 5 ? std::atoi(argv[3]) : 0;
  const int files = mode == "kill" && argc == 5 ? std::atoi(argv[4]) : 0;
  if (async || checkpoint > 0) {
    tt::checkpoint::set_after_file_written_hook(
        [async, checkpoint, files, saves = 0, written = 0, folder = std::filesystem::path()](const std::filesystem::path& file) mutable {
          if (async) std::this_thread::sleep_for(std::chrono::milliseconds(20));
          if (file.parent_path() != folder) {
            folder = file.parent_path();
            ++saves;
            written = 0;
          }
          if (saves == checkpoint && ++written == files) std::raise(SIGKILL);
        });
  }
  tt::TrainingArguments args;
  args.output_dir = argv[1];
  args.disable_tqdm = true;
  args.per_device_train_batch_size = 16;
  args.num_train_epochs = 3;
  args.learning_rate = 3e-3;
  args.logging_steps = 3;
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 4;
  args.save_async = async;
  torch::manual_seed(1);
  tt::Trainer trainer(Net(), args, blobs(160, 2));
  if (scaled) {
    trainer.grad_scaler = std::make_shared<tt::GradScaler>(tt::GradScaler::State{65536.0, 2.0, 0.5, 3, 0});
    trainer.criterion = [&state = trainer.state](const torch::Tensor& logits, const torch::Tensor& labels) {
      const auto loss = torch::nn::functional::cross_entropy(logits, labels);
      return state.global_step == 5 || state.global_step == 13 ? loss * std::numeric_limits<float>::infinity() : loss;
    };
  }
  trainer.train(mode == "resume" ? tt::ResumeFrom(true) : tt::ResumeFrom());
  trainer.save_model();
  trainer.save_state();
  if (scaled) {
    const auto s = trainer.grad_scaler->state();
    std::ofstream(std::filesystem::path(args.output_dir) / "grad_scaler.json")
        << nlohmann::json{{"scale", s.scale}, {"_growth_tracker", s.growth_tracker}}.dump() << "\n";
  }
  return 0;
}

// Checkpoint I/O: checkpoint::save (every file fsynced, CRC32C manifest, staging folder and rename) and
// checkpoint::load (manifest verified, snapshot for the strong guarantee) against plain torch::save/torch::load
// of the same model and AdamW state, in the same process and folder. Then training runs of the same model
// without checkpoints, with synchronous ones and with save_async, each saving every --save_steps steps: how
// long training stalls per checkpoint, and the whole run's time. Prints the tables and writes them as JSON.
// Usage: checkpoint_io [--repeats N] [--layers N] [--width N] [--steps N] [--save_steps N] [--dir PATH]
//                      [--json PATH]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace {

struct StackImpl : torch::nn::Module {
  torch::nn::Sequential layers;
  StackImpl(int64_t count, int64_t width) {
    for (int64_t i = 0; i < count; ++i) layers->push_back(torch::nn::Linear(width, width));
    register_module("layers", layers);
  }
  torch::Tensor forward(const torch::Tensor& x) { return layers->forward(x); }
};
TORCH_MODULE(Stack);

void fsync_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("cannot fsync " + path.string());
  ::close(fd);
}

double seconds(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The time from each step's on_step_end to the next step's on_step_begin: where a checkpoint stalls training.
struct StepGaps : tt::TrainerCallback {
  std::chrono::steady_clock::time_point step_end;
  std::vector<std::pair<int64_t, double>> gaps;  // (step, seconds)
  void on_step_end(const Args&, const State&, Control&, const Context&) override {
    step_end = std::chrono::steady_clock::now();
  }
  void on_step_begin(const Args&, const State& s, Control&, const Context&) override {
    if (s.global_step > 0)
      gaps.emplace_back(s.global_step, std::chrono::duration<double>(std::chrono::steady_clock::now() - step_end).count());
  }
};

struct TrainingRun {
  double seconds = 0;
  double stall_per_checkpoint = 0;  // the median gap after a save step, less the median gap after the others
};

// Trains `steps` steps of batch 4 on random data, saving every `save_steps` steps (0: never) into `dir`.
TrainingRun train_with_saves(int64_t layers, int64_t width, int64_t steps, int64_t save_steps, bool async,
                             const fs::path& dir) {
  fs::remove_all(dir);
  tt::TrainingArguments args;
  args.output_dir = dir.string();
  args.disable_tqdm = true;
  args.report_to = {"none"};
  args.per_device_train_batch_size = 4;
  args.max_steps = steps;
  args.logging_steps = steps;  // one log line, at the end
  args.save_strategy = save_steps > 0 ? tt::SaveStrategy::steps : tt::SaveStrategy::no;
  args.save_steps = static_cast<double>(std::max<int64_t>(save_steps, 1));
  args.save_total_limit = 2;
  args.save_async = async;
  torch::manual_seed(0);
  const auto x = torch::randn({4 * steps, width});
  const auto labels = torch::randint(0, width, {4 * steps});
  tt::Trainer trainer(Stack(layers, width), args, tt::data::TensorDataset(x, labels));
  trainer.pop_callback<tt::PrinterCallback>();
  auto gaps = trainer.add_callback<StepGaps>();
  TrainingRun run;
  run.seconds = seconds([&] { trainer.train(); });
  std::vector<double> after_save, others;
  for (const auto& [step, gap] : gaps->gaps) (save_steps > 0 && (step % save_steps) == 0 ? after_save : others).push_back(gap);
  if (!after_save.empty()) run.stall_per_checkpoint = median(after_save) - median(others);
  fs::remove_all(dir);
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  int64_t layers = 6, width = 4096;  // 6 x (4096 x 4096 + 4096) = 100.7M parameters
  int64_t steps = 40, save_steps = 10;
  fs::path dir = "checkpoint_io.tmp";
  std::string json_path = "checkpoint_io.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--width")) width = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--save_steps")) save_steps = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  fs::remove_all(dir);
  fs::create_directories(dir);

  torch::manual_seed(0);
  Stack model(layers, width);
  tt::TrainingArguments args;
  auto optimizer = tt::create_optimizer(*model, args);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::randn_like(p);
  optimizer->step();  // AdamW's moments: the optimizer file is twice the model's
  auto scheduler = tt::get_scheduler(tt::SchedulerType::linear, *optimizer, 0, 1000);
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  tt::TrainerState state;
  const nlohmann::json loop_state = {{"interval_loss", 0.0}, {"total_loss", 0.0}};

  std::vector<double> save, plain_save, plain_save_fsync, verify, load, plain_load;
  std::uintmax_t checkpoint_bytes = 0;
  for (int r = 0; r < repeats; ++r) {  // alternate, so drift hits both sides alike
    state.global_step = r;
    const fs::path folder = dir / ("checkpoint-" + std::to_string(r));
    save.push_back(seconds(
        [&] { tt::checkpoint::save(folder, args, state, *model, optimizer.get(), scheduler.get(), loop_state); }));
    const fs::path model_file = dir / "model.pt", optimizer_file = dir / "optimizer.pt";
    plain_save.push_back(seconds([&] {
      torch::save(model, model_file.string());
      torch::save(*optimizer, optimizer_file.string());
    }));
    plain_save_fsync.push_back(seconds([&] {
      torch::save(model, model_file.string());
      torch::save(*optimizer, optimizer_file.string());
      fsync_file(model_file);
      fsync_file(optimizer_file);
    }));
    verify.push_back(seconds([&] {
      if (tt::checkpoint::invalid_reason(folder)) throw std::runtime_error("the checkpoint just saved is invalid");
    }));
    load.push_back(seconds([&] { tt::checkpoint::load(folder, *model, optimizer.get(), scheduler.get()); }));
    plain_load.push_back(seconds([&] {
      torch::load(model, model_file.string());
      torch::load(*optimizer, optimizer_file.string());
    }));
    checkpoint_bytes = 0;
    for (const auto& entry : fs::directory_iterator(folder)) checkpoint_bytes += entry.file_size();
    fs::remove_all(folder);
  }
  fs::remove_all(dir);

  const double mb = static_cast<double>(checkpoint_bytes) / 1e6;
  std::printf("%.1fM parameters, checkpoint %.0f MB, median of %d\n", static_cast<double>(parameters) / 1e6, mb,
              repeats);
  std::printf("%-44s %9s %9s %12s\n", "operation", "seconds", "MB/s", "checkpoint/x");
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  auto row = [&](const char* name, const std::vector<double>& times, const std::vector<double>& ours) {
    const double ratio = median(ours) / median(times);
    std::printf("%-44s %9.3f %9.0f %12.2f\n", name, median(times), mb / median(times), ratio);
    rows.push_back({{"operation", name}, {"seconds", median(times)}, {"megabytes_per_second", mb / median(times)},
                    {"checkpoint_over_this", ratio}});
  };
  row("checkpoint::save (fsync, manifest, rename)", save, save);
  row("torch::save model + optimizer", plain_save, save);
  row("torch::save model + optimizer, then fsync", plain_save_fsync, save);
  row("checkpoint::load (verify, snapshot, load)", load, load);
  row("  of which the manifest check (CRC32C)", verify, load);
  row("torch::load model + optimizer", plain_load, load);

  // Training with checkpoints: each run once per repeat, in turn, so drift hits them alike.
  std::vector<double> none_s, sync_s, async_s, sync_stall, async_stall;
  for (int r = 0; r < repeats; ++r) {
    none_s.push_back(train_with_saves(layers, width, steps, 0, false, dir).seconds);
    const auto sync = train_with_saves(layers, width, steps, save_steps, false, dir);
    const auto async = train_with_saves(layers, width, steps, save_steps, true, dir);
    sync_s.push_back(sync.seconds);
    sync_stall.push_back(sync.stall_per_checkpoint);
    async_s.push_back(async.seconds);
    async_stall.push_back(async.stall_per_checkpoint);
  }
  fs::remove_all(dir);
  const int64_t saves = steps / save_steps;
  std::printf("\ntraining %lld steps (batch 4), a checkpoint every %lld steps (%lld), median of %d\n",
              static_cast<long long>(steps), static_cast<long long>(save_steps), static_cast<long long>(saves), repeats);
  std::printf("%-44s %9s %12s %14s\n", "run", "seconds", "over no saves", "stall / save");
  nlohmann::ordered_json training = nlohmann::ordered_json::array();
  auto training_row = [&](const char* name, const std::vector<double>& times, const std::vector<double>* stall) {
    const double over = median(times) / median(none_s);
    std::printf("%-44s %9.2f %12.3f", name, median(times), over);
    nlohmann::ordered_json row = {{"run", name}, {"seconds", median(times)}, {"over_no_saves", over}};
    if (stall) {
      std::printf(" %14.3f", median(*stall));
      row["stall_per_checkpoint_seconds"] = median(*stall);
    }
    std::printf("\n");
    training.push_back(row);
  };
  training_row("no checkpoints", none_s, nullptr);
  training_row("checkpoints written synchronously", sync_s, &sync_stall);
  training_row("checkpoints with save_async", async_s, &async_stall);
  const double stall_ratio = median(async_stall) / median(sync_stall);
  std::printf("save_async's stall is %.1f %% of a synchronous save's\n", 100.0 * stall_ratio);

  nlohmann::ordered_json result = {{"parameters", parameters}, {"checkpoint_bytes", checkpoint_bytes},
                                   {"repeats", repeats},       {"rows", rows},
                                   {"steps", steps},           {"save_steps", save_steps},
                                   {"training", training},     {"async_stall_over_sync_stall", stall_ratio}};
  std::ofstream(json_path) << result.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}

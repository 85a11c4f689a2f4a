// Checkpoint I/O: checkpoint::save (every file fsynced, CRC32C manifest, staging folder and rename) and
// checkpoint::load (manifest verified, snapshot for the strong guarantee) against plain torch::save/torch::load
// of the same model and AdamW state, in the same process and folder. Prints a table and writes it as JSON.
// Usage: checkpoint_io [--repeats N] [--layers N] [--width N] [--dir PATH] [--json PATH]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
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

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  int64_t layers = 6, width = 4096;  // 6 x (4096 x 4096 + 4096) = 100.7M parameters
  fs::path dir = "checkpoint_io.tmp";
  std::string json_path = "checkpoint_io.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--layers")) layers = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--width")) width = std::atoll(argv[i + 1]);
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
  nlohmann::ordered_json result = {{"parameters", parameters}, {"checkpoint_bytes", checkpoint_bytes},
                                   {"repeats", repeats}, {"rows", rows}};
  std::ofstream(json_path) << result.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}

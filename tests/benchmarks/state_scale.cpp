// Long runs: what grows with the length of a run, and what must not. Prints a table and writes it as JSON.
//   state_scale [--repeats N] [--json PATH]
// 1. trainer_state.json save and load with 1k, 10k and 100k log_history entries, and a whole checkpoint of a
//    small model at each size (the checkpoint must cost the state file and a constant, nothing more).
// 2. Resident memory after 1k and 100k training steps logging every 100 (each in a fresh process): only
//    log_history may grow.
// 3. Resume skip: train() resumed at batch 1, 10^3 and 10^6 of one epoch, then one step: the same time at
//    every position, since the shuffle is a function of (seed, epoch) and no batch is loaded to be dropped.
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
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "models.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

extern char** environ;

namespace {

struct Silent : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

double seconds(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median_seconds(int repeats, const std::function<void()>& f) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) times.push_back(seconds(f));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// A state as a run of `entries` logging steps leaves it: one training log entry per logging step.
tt::TrainerState state_with_history(std::int64_t entries) {
  tt::TrainerState state;
  state.global_step = entries * 100;
  state.max_steps = state.global_step;
  state.logging_steps = 100;
  state.epoch = static_cast<double>(entries) / 7.0;
  for (std::int64_t i = 1; i <= entries; ++i) {
    tt::LogEntry e;
    e["loss"] = 1.0 / static_cast<double>(i + 1);
    e["grad_norm"] = 0.5 + 1.0 / static_cast<double>(i);
    e["learning_rate"] = 5e-5 * (1.0 - static_cast<double>(i) / static_cast<double>(entries + 1));
    e["epoch"] = static_cast<double>(i) / 7.0;
    e["step"] = i * 100;
    state.log_history.push_back(std::move(e));
  }
  return state;
}

void state_rows(const fs::path& dir, int repeats, nlohmann::ordered_json& out) {
  std::printf("\n%-34s %10s %10s %12s %14s\n", "trainer_state.json", "save s", "load s", "MB", "checkpoint s");
  torch::manual_seed(0);
  auto model = bench::tiny_mlp();
  tt::TrainingArguments args;
  auto optimizer = tt::create_optimizer(*model, args);
  for (std::int64_t entries : {1000, 10000, 100000}) {
    const auto state = state_with_history(entries);
    const auto path = dir / "trainer_state.json";
    const double save = median_seconds(repeats, [&] { state.save_to_json(path.string()); });
    const double load = median_seconds(repeats, [&] { tt::TrainerState::load_from_json(path.string()); });
    const double mb = static_cast<double>(fs::file_size(path)) / 1e6;
    const double checkpoint = median_seconds(repeats, [&] {
      fs::remove_all(dir / "checkpoint-1");
      tt::checkpoint::save(dir / "checkpoint-1", args, state, *model, optimizer.get(), nullptr, nullptr);
    });
    std::printf("%-34s %10.4f %10.4f %12.2f %14.4f\n", (std::to_string(entries) + " log_history entries").c_str(),
                save, load, mb, checkpoint);
    out.push_back({{"log_history_entries", entries}, {"save_seconds", save}, {"load_seconds", load},
                   {"megabytes", mb}, {"checkpoint_save_seconds", checkpoint}});
  }
}

long resident_kilobytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long value = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> value;
      return value;
    }
    status.ignore(1 << 20, '\n');
  }
  return -1;
}

tt::TrainingArguments quiet_args(const fs::path& dir) {
  tt::TrainingArguments args;
  args.output_dir = dir.string();
  args.per_device_train_batch_size = 1;
  args.save_strategy = tt::SaveStrategy::no;
  args.disable_tqdm = true;
  args.report_to = {"none"};
  return args;
}

// In a child process: trains `steps` steps, logging every 100, and prints "<rss kB> <log entries>".
int memory_child(std::int64_t steps, const fs::path& dir) {
  auto args = quiet_args(dir);
  args.max_steps = steps;
  args.logging_steps = 100;
  tt::Trainer trainer(bench::tiny_mlp(), args, bench::clusters({16}));
  trainer.pop_callback<tt::PrinterCallback>();
  trainer.train();
  std::printf("%ld %zu\n", resident_kilobytes(), trainer.state.log_history.size());
  return 0;
}

std::pair<long, long> run_memory_child(std::int64_t steps, const fs::path& dir) {
  const auto out = dir / ("memory-" + std::to_string(steps) + ".txt");
  const std::string self = fs::read_symlink("/proc/self/exe").string(), count = std::to_string(steps),
                    folder = dir.string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const char* argv[] = {self.c_str(), "--memory-child", count.c_str(), folder.c_str(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, self.c_str(), &actions, nullptr, const_cast<char**>(argv), environ) != 0)
    throw std::runtime_error("cannot start " + self);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  waitpid(pid, &status, 0);
  long rss = -1, entries = -1;
  std::ifstream(out) >> rss >> entries;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || rss < 0)
    throw std::runtime_error("the memory run of " + count + " steps failed");
  return {rss, entries};
}

void memory_rows(const fs::path& dir, nlohmann::ordered_json& out) {
  std::printf("\n%-34s %10s %12s\n", "memory (fresh process each)", "RSS MB", "log entries");
  for (std::int64_t steps : {1000, 100000}) {
    const auto [rss, entries] = run_memory_child(steps, dir);
    std::printf("%-34s %10.1f %12ld\n", (std::to_string(steps) + " steps, log every 100").c_str(),
                static_cast<double>(rss) / 1024.0, entries);
    out.push_back({{"steps", steps}, {"resident_kilobytes", rss}, {"log_history_entries", entries}});
  }
}

// A checkpoint at `step` of a one-epoch run over `data`: written from the one a real step-1 run saved, with
// only the step changed, so that reaching batch 10^6 does not take 10^6 steps.
fs::path checkpoint_at(std::int64_t step, const fs::path& dir, const tt::TrainingArguments& args) {
  const auto first = dir / "checkpoint-1";
  const auto folder = dir / ("checkpoint-" + std::to_string(step));
  if (step == 1) return first;
  torch::manual_seed(0);
  auto model = bench::tiny_mlp();
  auto optimizer = tt::create_optimizer(*model, args);
  auto loaded = tt::checkpoint::load(first, *model, optimizer.get(), nullptr);
  loaded.state.global_step = step;
  fs::remove_all(folder);
  tt::checkpoint::save(folder, args, loaded.state, *model, optimizer.get(), nullptr, loaded.loop_state);
  return folder;
}

void resume_rows(const fs::path& dir, int repeats, nlohmann::ordered_json& out) {
  constexpr std::int64_t kExamples = 1'000'016;  // one epoch of 10^6 + 16 batches of one example
  auto gen = at::detail::createCPUGenerator(2);
  tt::data::TensorDataset data(torch::randn({kExamples, 16}, gen), torch::randint(0, bench::kClasses, {kExamples}, gen));
  auto args = quiet_args(dir);
  args.max_steps = 1;
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 1;
  args.lr_scheduler_type = tt::SchedulerType::constant;
  {
    tt::Trainer trainer(bench::tiny_mlp(), args, data);
    trainer.pop_callback<tt::PrinterCallback>();
    trainer.train();
  }
  args.save_strategy = tt::SaveStrategy::no;
  const auto resume_and_step = [&](const fs::path& folder, std::int64_t step) {
    args.max_steps = step + 1;
    tt::Trainer trainer(bench::tiny_mlp(), args, data);
    trainer.pop_callback<tt::PrinterCallback>();
    if (trainer.train(folder.string()).global_step != step + 1) throw std::runtime_error("the resume went wrong");
  };
  resume_and_step(dir / "checkpoint-1", 1);  // warm-up: the first train() in a process pays for lazy set-up
  std::printf("\n%-34s %10s\n", "resume, then one step", "seconds");
  for (std::int64_t step : {1, 1000, 1000000}) {
    const auto folder = checkpoint_at(step, dir, args);
    const double time = median_seconds(repeats, [&] { resume_and_step(folder, step); });
    std::printf("%-34s %10.4f\n", ("at batch " + std::to_string(step) + " of the epoch").c_str(), time);
    out.push_back({{"batch", step}, {"seconds", time}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured, also through a pipe
  Silent silent;
  c10::Warning::WarningHandlerGuard quiet(&silent);
  torch::set_num_threads(1);
  if (argc == 4 && !std::strcmp(argv[1], "--memory-child")) return memory_child(std::atoll(argv[2]), argv[3]);

  int repeats = 5;
  std::string json_path = "state_scale.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else {
      std::fprintf(stderr, "state_scale: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const fs::path dir = fs::temp_directory_path() / ("torchtrain-state-scale-" + std::to_string(getpid()));
  fs::create_directories(dir);
  nlohmann::ordered_json result;
  state_rows(dir, repeats, result["trainer_state"]);
  memory_rows(dir, result["memory"]);
  resume_rows(dir / "resume", repeats, result["resume_skip"]);
  fs::remove_all(dir);
  std::ofstream(json_path) << result.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}

// Real processes killed at random points (SIGKILL), preempted (SIGTERM, SIGINT) and killed in the middle of a
// save, then resumed: the result must be the uninterrupted run's, bit for bit.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torchtrain/checkpoint.hpp>
#include <torchtrain/preemption.hpp>

#include "processes.hpp"
#include "support.hpp"

namespace {

namespace fs = std::filesystem;
using Child = tt_test::ChildProcess;
using tt_test::describe_status;

// train_classifier's model, to load the model.pt files it writes.
struct ClassifierImpl : torch::nn::Module {
  torch::nn::Linear hidden, output;
  ClassifierImpl(int64_t features, int64_t hidden_size, int64_t classes)
      : hidden(register_module("hidden", torch::nn::Linear(features, hidden_size))),
        output(register_module("output", torch::nn::Linear(hidden_size, classes))) {}
};
TORCH_MODULE(Classifier);

std::vector<std::string> split_flags(const std::string& flags) {
  std::istringstream in(flags);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

/// Counts the lines of a file another process appends to.
class LineCounter {
 public:
  explicit LineCounter(fs::path path) : path_(std::move(path)) {}
  std::int64_t count() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return lines_;
    in.seekg(offset_);
    char buf[65536];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      const auto n = in.gcount();
      offset_ += n;
      lines_ += std::count(buf, buf + n, '\n');
      if (in.eof()) break;
    }
    return lines_;
  }

 private:
  fs::path path_;
  std::streamoff offset_ = 0;
  std::int64_t lines_ = 0;
};

/// Polls until the trace reaches `lines` lines or the child ends; true if the child is still running.
bool wait_for_lines(Child& child, LineCounter& trace, std::int64_t lines) {
  while (child.running()) {
    if (trace.count() >= lines) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

/// One train_classifier set-up, run in its own output folders.
struct Setup {
  std::string name, flags;
  std::int64_t features = 16, hidden = 64, classes = 4;
};

std::vector<std::string> classifier_args(const Setup& s, const fs::path& dir, bool resume) {
  auto words = split_flags(s.flags + " --disable_tqdm true --output_dir " + dir.string() + " --trace_events " +
                           (dir / "trace.jsonl").string() + " --hidden_size " + std::to_string(s.hidden) +
                           " --num_features " + std::to_string(s.features) + " --num_classes " +
                           std::to_string(s.classes));
  if (resume) words.insert(words.end(), {"--resume_from_checkpoint", "true"});
  return words;
}

void run_to_end(const Setup& s, const fs::path& dir, bool resume) {
  Child child(TORCHTRAIN_TRAIN_CLASSIFIER, classifier_args(s, dir, resume), dir / "log.txt");
  const int status = child.wait();
  INFO(tt_test::read_file(dir / "log.txt"));
  REQUIRE(describe_status(status) == "exit status 0");
}

bool has_checkpoint(const fs::path& dir) {
  tt_test::WarningCapture quiet;  // skipped half-written checkpoints are expected here
  return torchtrain::checkpoint::get_last_checkpoint(dir).has_value();
}

// Timings and throughputs differ between any two runs; everything else in trainer_state.json must not.
nlohmann::json comparable_state(const fs::path& dir, bool callback_states) {
  auto state = nlohmann::json::parse(tt_test::read_file(dir / "trainer_state.json"));
  for (auto& entry : state["log_history"])
    for (auto it = entry.begin(); it != entry.end();) {
      const std::string key = it.key();
      const auto ends_with = [&](const std::string& tail) {
        return key.size() >= tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
      };
      it = ends_with("_runtime") || ends_with("_per_second") ? entry.erase(it) : std::next(it);
    }
  if (!callback_states) state.erase("stateful_callbacks");
  if (state["best_model_checkpoint"].is_string())
    state["best_model_checkpoint"] = fs::path(state["best_model_checkpoint"].get<std::string>()).filename().string();
  return state;
}

// `callback_states`: compare the states saved with the last checkpoint (false when `expected` never saved one).
void require_same_result(const Setup& s, const fs::path& expected, const fs::path& actual, bool callback_states = true) {
  Classifier a(s.features, s.hidden, s.classes), b(s.features, s.hidden, s.classes);
  torch::load(a, (expected / "model.pt").string());
  torch::load(b, (actual / "model.pt").string());
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& p : pa) {
    INFO(s.name << ": parameter " << p.key());
    CHECK(torch::equal(p.value(), pb[p.key()]));
  }
  const auto sa = comparable_state(expected, callback_states), sb = comparable_state(actual, callback_states);
  const auto& la = sa["log_history"];
  const auto& lb = sb["log_history"];
  for (std::size_t i = 0; i < std::min(la.size(), lb.size()); ++i) {
    INFO(s.name << ": log_history[" << i << "]");
    REQUIRE(la[i].dump() == lb[i].dump());
  }
  INFO(s.name);
  CHECK(la.size() == lb.size());
  CHECK(sa.dump(1) == sb.dump(1));
}

/// Runs the set-up uninterrupted, then again killed with SIGKILL `kills` times at seeded random points of
/// its event trace and resumed each time, and compares the two results.
void check_kill_and_resume(const Setup& s, std::uint32_t seed, int kills = 3) {
  tt_test::TempDir reference("crash-ref"), killed("crash-kill");
  run_to_end(s, reference.path(), false);
  const auto total = LineCounter(reference / "trace.jsonl").count();

  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int64_t> advance(total / 8, total / 3);
  LineCounter trace(killed / "trace.jsonl");
  int done = 0;
  for (int attempt = 0; attempt < kills; ++attempt) {
    const std::int64_t target = trace.count() + advance(rng);
    Child child(TORCHTRAIN_TRAIN_CLASSIFIER, classifier_args(s, killed.path(), has_checkpoint(killed.path())),
                killed / "log.txt");
    if (!wait_for_lines(child, trace, target)) {
      INFO(tt_test::read_file(killed / "log.txt"));
      REQUIRE(describe_status(child.wait()) == "exit status 0");
      break;
    }
    child.signal(SIGKILL);
    REQUIRE(describe_status(child.wait()) == "killed by signal 9");
    ++done;
  }
  INFO(s.name << ": " << done << " kills");
  CHECK(done >= 2);
  if (!fs::exists(killed / "model.pt")) run_to_end(s, killed.path(), has_checkpoint(killed.path()));
  require_same_result(s, reference.path(), killed.path());
}

// 2048 examples in batches of 32: 64 micro-batches an epoch.
const std::string kCommon = " --num_train_samples 2048 --num_eval_samples 256 --per_device_train_batch_size 32";

}  // namespace

TEST_CASE("killed at random points and resumed, training ends with the uninterrupted run's weights and log") {
  const std::vector<Setup> setups{
      {"gradient accumulation with a shorter last window",
       kCommon + " --num_train_epochs 3 --gradient_accumulation_steps 3 --logging_steps 4 --eval_strategy steps"
                 " --eval_steps 10 --save_strategy steps --save_steps 7"},
      {"logging, evaluation and saving on different steps; a save at an epoch's last step",
       kCommon + " --num_train_epochs 3 --logging_steps 5 --eval_strategy epoch --save_strategy steps --save_steps 16"},
      {"warmup", kCommon + " --num_train_epochs 2 --warmup_steps 50 --logging_steps 3 --eval_strategy steps"
                           " --eval_steps 11 --save_strategy steps --save_steps 9 --learning_rate 0.01"},
      // Overlapping classes: the accuracy creeps up and plateaus, the patience counter rises and resets, and
      // training stops at step 132 of 384.
      {"early stopping in the middle of its patience",
       kCommon + " --num_train_epochs 6 --logging_steps 8 --eval_strategy steps --eval_steps 6 --save_strategy steps"
                 " --save_steps 9 --early_stopping_patience 4",
       4, 64, 8},
      {"load_best_model_at_end", kCommon + " --num_train_epochs 3 --logging_steps 6 --eval_strategy steps --eval_steps 8"
                                           " --save_strategy steps --save_steps 8 --load_best_model_at_end true"
                                           " --metric_for_best_model loss --save_total_limit 2 --learning_rate 0.01"},
      // A save every 3 steps, each written in the background while the next steps run: most kills land
      // during a write.
      {"save_async", kCommon + " --num_train_epochs 3 --logging_steps 6 --eval_strategy steps --eval_steps 3"
                               " --save_strategy steps --save_steps 3 --save_async true --load_best_model_at_end true"
                               " --metric_for_best_model loss --save_total_limit 2 --learning_rate 0.01"},
  };
  std::uint32_t seed = 2024;
  for (const auto& s : setups) {
    SECTION(s.name) { check_kill_and_resume(s, seed); }
    ++seed;
  }
}

namespace {

// Whether `sig` is still waiting to be delivered to process `pid` (its handler has not started yet).
bool signal_pending(pid_t pid, int sig) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const unsigned long long bit = 1ull << (sig - 1);
  for (std::string line; std::getline(status, line);)
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0)
      if (std::stoull(line.substr(7), nullptr, 16) & bit) return true;
  return false;
}

std::vector<nlohmann::json> trace_events(const fs::path& path) {
  std::vector<nlohmann::json> events;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) events.push_back(nlohmann::json::parse(line));
  return events;
}

const Setup kPreempted{"preempted", kCommon + " --num_train_epochs 2 --gradient_accumulation_steps 2 --logging_steps 5"
                                              " --eval_strategy epoch --save_strategy no"};

// Runs the set-up into `dir` and sends SIGTERM once its trace has `lines` lines; it must exit with 143.
void run_until_sigterm(const Setup& s, const fs::path& dir, std::int64_t lines) {
  LineCounter trace(dir / "trace.jsonl");
  Child child(TORCHTRAIN_TRAIN_CLASSIFIER, classifier_args(s, dir, false), dir / "log.txt");
  REQUIRE(wait_for_lines(child, trace, lines));
  child.signal(SIGTERM);
  const int status = child.wait();
  INFO(tt_test::read_file(dir / "log.txt"));
  REQUIRE(describe_status(status) == "exit status 143");
}

}  // namespace

TEST_CASE("SIGTERM saves a checkpoint at the next step and exits with 143, and the resume ends where an uninterrupted run does") {
  tt_test::TempDir reference("term-ref"), preempted("term");
  run_to_end(kPreempted, reference.path(), false);
  run_until_sigterm(kPreempted, preempted.path(), LineCounter(reference / "trace.jsonl").count() / 3);
  // save_strategy is no, so the one checkpoint is the preemption's, at the step after the signal.
  const auto events = trace_events(preempted / "trace.jsonl");
  REQUIRE(events.size() >= 3);
  CHECK(events.back()["event"] == "on_train_end");
  const auto& save = events[events.size() - 3];
  CHECK(save["event"] == "on_save");
  const auto checkpoints = torchtrain::checkpoint::sorted_checkpoints(preempted.path());
  REQUIRE(checkpoints.size() == 1);
  const std::string saved = "checkpoint-" + std::to_string(save["global_step"].get<std::int64_t>());
  CHECK(checkpoints[0].filename() == saved);
  CHECK(save["global_step"].get<std::int64_t>() > 0);
  CHECK(!fs::exists(preempted / "model.pt"));
  // The log's last line says what was saved and how to continue.
  const auto log = tt_test::read_file(preempted / "log.txt");
  CHECK(log.find("torchtrain: SIGTERM: saved " + saved + " in " + preempted.str() +
                 "; resume with resume_from_checkpoint = true (--resume_from_checkpoint true)\n") != std::string::npos);

  run_to_end(kPreempted, preempted.path(), true);
  CHECK(tt_test::read_file(preempted / "log.txt").find("torchtrain: Resuming from " + saved + " (global step " +
                                                       save["global_step"].dump() + ", epoch ") != std::string::npos);
  require_same_result(kPreempted, reference.path(), preempted.path(), /*callback_states=*/false);
}

TEST_CASE("save_async: SIGTERM completes the write in flight, saves synchronously, and the resume ends where an uninterrupted run does") {
  const Setup s{"save_async preempted", kCommon + " --num_train_epochs 2 --logging_steps 5 --save_strategy steps"
                                                  " --save_steps 3 --save_async true"};
  tt_test::TempDir reference("term-async-ref"), preempted("term-async");
  run_to_end(s, reference.path(), false);
  run_until_sigterm(s, preempted.path(), LineCounter(reference / "trace.jsonl").count() / 2);
  // Every checkpoint is whole, none is left half-written, and the newest is the step the signal stopped at.
  const auto events = trace_events(preempted / "trace.jsonl");
  REQUIRE(events.size() >= 3);
  const auto& save = events[events.size() - 3];
  REQUIRE(save["event"] == "on_save");
  const auto checkpoints = torchtrain::checkpoint::sorted_checkpoints(preempted.path());
  REQUIRE(!checkpoints.empty());
  CHECK(checkpoints.back().filename() == "checkpoint-" + save["global_step"].dump());
  for (const auto& folder : checkpoints) CHECK_FALSE(torchtrain::checkpoint::invalid_reason(folder));
  for (const auto& entry : fs::directory_iterator(preempted.path()))
    CHECK(entry.path().filename().string().rfind(".tmp-", 0) != 0);
  run_to_end(s, preempted.path(), true);
  require_same_result(s, reference.path(), preempted.path());
}

TEST_CASE("SIGINT saves a checkpoint and exits with 130, and a second SIGTERM stops the process at once") {
  tt_test::TempDir interrupted("int"), twice("twice");
  {
    LineCounter trace(interrupted / "trace.jsonl");
    Child child(TORCHTRAIN_TRAIN_CLASSIFIER, classifier_args(kPreempted, interrupted.path(), false), interrupted / "log.txt");
    REQUIRE(wait_for_lines(child, trace, 200));
    child.signal(SIGINT);
    const int status = child.wait();
    INFO(tt_test::read_file(interrupted / "log.txt"));
    CHECK(describe_status(status) == "exit status 130");
    CHECK(torchtrain::checkpoint::sorted_checkpoints(interrupted.path()).size() == 1);
  }
  {
    // Many micro-batches a step leave time to send the second signal once the first is being handled.
    const Setup slow{"slow steps", kPreempted.flags + " --gradient_accumulation_steps 32"};
    LineCounter trace(twice / "trace.jsonl");
    Child child(TORCHTRAIN_TRAIN_CLASSIFIER, classifier_args(slow, twice.path(), false), twice / "log.txt");
    REQUIRE(wait_for_lines(child, trace, 100));
    child.signal(SIGTERM);
    while (signal_pending(child.pid(), SIGTERM)) std::this_thread::sleep_for(std::chrono::microseconds(50));
    child.signal(SIGTERM);
    const int status = child.wait();
    INFO(tt_test::read_file(twice / "log.txt"));
    CHECK(describe_status(status) == "killed by signal 15");
  }
}

namespace {

// crash_during_save's arguments, with "scaled" for a run with a loss scaler and "async" for save_async last.
std::vector<std::string> save_crash_args(std::vector<std::string> words, bool scaled, bool async) {
  if (scaled) words.push_back("scaled");
  if (async) words.push_back("async");
  return words;
}

void check_killed_during_save(bool scaled, bool async = false) {
  tt_test::TempDir reference("save-ref");
  {
    // The reference saves synchronously: a background write must not change what training computes.
    Child child(TORCHTRAIN_CRASH_DURING_SAVE, save_crash_args({reference.str(), "run"}, scaled, false), reference / "log.txt");
    INFO(tt_test::read_file(reference / "log.txt"));
    REQUIRE(describe_status(child.wait()) == "exit status 0");
  }
  // The third save (checkpoint-12) dies after its first file, between two files (async), or after its manifest,
  // the last file before the rename.
  for (const char* files : async ? std::vector<const char*>{"1", "4", "8"} : std::vector<const char*>{"1", "8"}) {
    tt_test::TempDir dir("save-kill");
    {
      Child child(TORCHTRAIN_CRASH_DURING_SAVE, save_crash_args({dir.str(), "kill", "3", files}, scaled, async), dir / "log.txt");
      INFO(tt_test::read_file(dir / "log.txt"));
      REQUIRE(describe_status(child.wait()) == "killed by signal 9");
    }
    INFO("killed after file " << files);
    CHECK(fs::is_directory(dir / ".tmp-checkpoint-12"));
    CHECK(!fs::exists(dir / "checkpoint-12"));
    CHECK(fs::is_directory(dir / "checkpoint-8"));
    {
      Child child(TORCHTRAIN_CRASH_DURING_SAVE, save_crash_args({dir.str(), "resume"}, scaled, async), dir / "log.txt");
      INFO(tt_test::read_file(dir / "log.txt"));
      REQUIRE(describe_status(child.wait()) == "exit status 0");
    }
    CHECK(!fs::exists(dir / ".tmp-checkpoint-12"));
    Classifier a(8, 32, 3), b(8, 32, 3);  // crash_during_save's model
    torch::load(a, (reference / "model.pt").string());
    torch::load(b, (dir / "model.pt").string());
    const auto pb = b->named_parameters();
    for (const auto& p : a->named_parameters()) CHECK(torch::equal(p.value(), pb[p.key()]));
    // Python's JSON, as HF writes it: a skipped step's grad_norm is NaN or Infinity.
    auto log_history = [](const fs::path& file) {
      return torchtrain::detail::parse_python_json(tt_test::read_file(file), file.string())["log_history"];
    };
    auto expected = log_history(reference / "trainer_state.json");
    auto actual = log_history(dir / "trainer_state.json");
    REQUIRE(expected.size() == actual.size());
    for (std::size_t i = 0; i + 1 < expected.size(); ++i) CHECK(expected[i].dump() == actual[i].dump());
    CHECK(expected.back()["train_loss"] == actual.back()["train_loss"]);
    if (scaled) CHECK(tt_test::read_file(reference / "grad_scaler.json") == tt_test::read_file(dir / "grad_scaler.json"));
  }
}

}  // namespace

TEST_CASE("a process killed in the middle of a save resumes from the checkpoint before, to the same weights") {
  check_killed_during_save(false);
}

TEST_CASE("killed in the middle of a save, a run with a loss scaler resumes to the same weights and scale") {
  check_killed_during_save(true);
}

TEST_CASE("save_async: a process killed during a background write resumes from the checkpoint before, to the same weights") {
  check_killed_during_save(true, true);
}

TEST_CASE("a resume from a checkpoint saved at an epoch's last step runs that epoch's end first") {
  // 64 steps an epoch and a save every 16: checkpoint-64 is written before epoch 0's end, whose evaluation
  // (eval_strategy epoch) follows it in the uninterrupted run.
  const Setup s{"epoch end", kCommon + " --num_train_epochs 2 --logging_steps 5 --eval_strategy epoch"
                                       " --save_strategy steps --save_steps 16"};
  tt_test::TempDir reference("epoch-end-ref"), resumed("epoch-end");
  run_to_end(s, reference.path(), false);
  fs::copy(reference / "checkpoint-64", resumed / "checkpoint-64", fs::copy_options::recursive);
  run_to_end(s, resumed.path(), true);
  require_same_result(s, reference.path(), resumed.path());
}

namespace {

std::atomic<int> previous_handler_calls{0};
void previous_handler(int) { ++previous_handler_calls; }

}  // namespace

TEST_CASE("PreemptionGuard records SIGTERM and SIGINT, calls the previous handler, and restores it exactly") {
  struct sigaction mine {}, before {}, installed {}, after {};
  mine.sa_handler = &previous_handler;
  sigemptyset(&mine.sa_mask);
  REQUIRE(::sigaction(SIGTERM, &mine, &before) == 0);
  REQUIRE(::sigaction(SIGTERM, nullptr, &installed) == 0);  // as the kernel holds it (the C library adds flags)
  {
    torchtrain::PreemptionGuard guard;
    CHECK(guard.signal() == 0);
    {
      torchtrain::PreemptionGuard nested;  // a train() inside a train(): the outer guard keeps the handlers
    }
    ::raise(SIGTERM);
    CHECK(guard.signal() == SIGTERM);
    CHECK(previous_handler_calls == 1);
  }
  REQUIRE(::sigaction(SIGTERM, nullptr, &after) == 0);
  CHECK(after.sa_handler == &previous_handler);
  CHECK(after.sa_flags == installed.sa_flags);
  ::raise(SIGTERM);  // the program's handler again, no longer ours
  CHECK(previous_handler_calls == 2);
  REQUIRE(::sigaction(SIGTERM, &before, nullptr) == 0);
  {
    torchtrain::PreemptionGuard guard;
    CHECK(guard.signal() == 0);  // a new train() starts with no stop request
  }
}

// Data-parallel training with two real processes on loopback (Gloo), started with the environment torchrun
// would give them: identical weights, equivalence with one process on the global batch, shared decisions, a
// dead rank, exact resume, and one writer per shared file.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <torchtrain/checkpoint.hpp>
#include <torchtrain/data/epoch_sampler.hpp>
#include <torchtrain/distributed.hpp>

#include "processes.hpp"
#include "support.hpp"

namespace {

namespace fs = std::filesystem;

// The worker's model, to load the weights it dumps.
struct NetImpl : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, output{nullptr};
  NetImpl() : hidden(register_module("hidden", torch::nn::Linear(8, 16))), output(register_module("output", torch::nn::Linear(16, 3))) {}
};
TORCH_MODULE(Net);

// A port nobody listens on now: the kernel picks it for a socket bound to port 0.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<std::string> split_flags(const std::string& flags) {
  std::istringstream in(flags);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

// The environment of this process without any distributed variable, plus `extra`.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  static const std::set<std::string> distributed{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                                 "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT"};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    if (!distributed.count(entry.substr(0, entry.find('=')))) env.push_back(entry);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

bool exited_ok(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

struct RunResult {
  std::vector<int> status;
  std::vector<std::string> output;
};

/// Runs `world` ranks of the worker (or one plain process when world == 0) to their end, with `flags` (plus
/// `rank_flags[r]` for rank r), output_dir `out` and dump_dir `dump`.
RunResult run_ranks(int world, const std::string& flags, const fs::path& out, const fs::path& dump,
                    const std::vector<std::string>& rank_flags = {}) {
  fs::create_directories(dump);
  const int port = free_port();
  const int processes = std::max(world, 1);
  std::vector<std::unique_ptr<tt_test::ChildProcess>> workers;
  for (int r = 0; r < processes; ++r) {
    auto args = split_flags(flags + " --output_dir " + out.string() + " --dump_dir " + dump.string());
    if (r < static_cast<int>(rank_flags.size())) {
      auto extra = split_flags(rank_flags[static_cast<std::size_t>(r)]);
      args.insert(args.end(), extra.begin(), extra.end());
    }
    std::vector<std::string> env;
    if (world > 0)
      env = {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
             "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
    workers.push_back(std::make_unique<tt_test::ChildProcess>(TORCHTRAIN_DISTRIBUTED_WORKER, args,
                                                              dump / ("log_" + std::to_string(r) + ".txt"),
                                                              tt_test::ChildProcess::Log::truncate, environment_with(env)));
  }
  RunResult result;
  for (auto& w : workers) {
    result.status.push_back(w->wait());
    result.output.push_back(tt_test::read_file(w->log()));
  }
  return result;
}

void require_success(const RunResult& run) {
  for (std::size_t r = 0; r < run.status.size(); ++r) {
    INFO("rank " << r << ": " << tt_test::describe_status(run.status[r]) << "\n" << run.output[r]);
    REQUIRE(exited_ok(run.status[r]));
  }
}

std::vector<torch::Tensor> params_of(const fs::path& file) {
  Net net;
  torchtrain::checkpoint::load_module(*net, file);
  std::vector<torch::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

void require_equal_params(const fs::path& a, const fs::path& b, std::optional<double> tolerance) {
  const auto pa = params_of(a), pb = params_of(b);
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    INFO(a << " vs " << b << " parameter " << i << ": max difference "
           << (pa[i] - pb[i]).abs().max().item<double>());
    if (tolerance)
      CHECK(torch::allclose(pa[i], pb[i], /*rtol=*/0.0, *tolerance));
    else
      CHECK(torch::equal(pa[i], pb[i]));
  }
}

nlohmann::json result_of(const fs::path& dump, int rank) {
  return nlohmann::json::parse(tt_test::read_file(dump / ("result_" + std::to_string(rank) + ".json")));
}

// log_history without the wall-clock values (runtimes, rates), which differ between processes.
nlohmann::json without_timings(nlohmann::json history) {
  for (auto& entry : history)
    for (auto it = entry.begin(); it != entry.end();) {
      const std::string& key = it.key();
      const bool timing = key.find("_runtime") != std::string::npos || key.find("_per_second") != std::string::npos;
      it = timing ? entry.erase(it) : std::next(it);
    }
  return history;
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::istringstream in(tt_test::read_file(file));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// 96 examples, 3 epochs, saves every 4 steps, evaluation (37 examples, uneven shards) every epoch.
const std::string kFlags = "--num_train_epochs 3 --max_grad_norm 0.5";

}  // namespace

TEST_CASE("DistributedSampler semantics: disjoint shards padded by wrapping", "[distributed]") {
  const torchtrain::data::EpochSampler whole(10, 7);
  const auto order = whole.indices(2);
  const torchtrain::data::EpochSampler rank0(10, 7, true, 0, 4), rank3(10, 7, true, 3, 4);
  CHECK(rank0.size() == 3);
  // Positions 0, 4, 8 and 3, 7, 11 -> 11 wraps to position 1.
  CHECK(rank0.indices(2) == std::vector<std::size_t>{order[0], order[4], order[8]});
  CHECK(rank3.indices(2) == std::vector<std::size_t>{order[3], order[7], order[1]});
}

TEST_CASE("Distributed environment variables are read and checked", "[distributed]") {
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  CHECK_FALSE(torchtrain::DistributedEnvironment::from_environment());
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("RANK", "2", 1);
  CHECK_THROWS_WITH(torchtrain::DistributedEnvironment::from_environment(),
                    Catch::Contains("RANK=2 is not an integer in [0, 1]"));
  ::setenv("RANK", "1", 1);
  ::unsetenv("MASTER_ADDR");
  CHECK_THROWS_WITH(torchtrain::DistributedEnvironment::from_environment(), Catch::Contains("MASTER_ADDR is not set"));
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", "29511", 1);
  const auto env = torchtrain::DistributedEnvironment::from_environment();
  REQUIRE(env);
  CHECK(env->rank == 1);
  CHECK(env->local_rank == 1);
  CHECK(env->master_port == 29511);
  CHECK_FALSE(env->agent_store);
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(name);
}

TEST_CASE("Two ranks train like one process on the global batch, and agree on everything", "[distributed]") {
  tt_test::TempDir dir("dist-equiv");
  const auto two = run_ranks(2, kFlags + " --per_device_train_batch_size 8", dir / "two", dir / "two-dump");
  require_success(two);
  const auto one = run_ranks(0, kFlags + " --per_device_train_batch_size 16", dir / "one", dir / "one-dump");
  require_success(one);

  // Both ranks end with the same weights, and with the weights of one process on batches of 16.
  require_equal_params(dir / "two-dump/params_0.pt", dir / "two-dump/params_1.pt", std::nullopt);
  require_equal_params(dir / "two-dump/params_0.pt", dir / "one-dump/params_0.pt", 1e-5);

  // The same metrics everywhere: the evaluation covered the 37 examples exactly once.
  const auto r0 = result_of(dir / "two-dump", 0), r1 = result_of(dir / "two-dump", 1);
  const auto single = result_of(dir / "one-dump", 0);
  CHECK(r0["global_step"] == 18);
  CHECK(r1["global_step"] == 18);
  CHECK(r0["eval_loss"] == r1["eval_loss"]);
  CHECK(r0["eval_accuracy"] == r1["eval_accuracy"]);
  CHECK(r0["eval_accuracy"] == single["eval_accuracy"]);
  CHECK(r0["eval_loss"].get<double>() == Approx(single["eval_loss"].get<double>()).margin(1e-5));
  // The logged losses are the mean over the ranks: the global batch's.
  CHECK(r0["training_loss"].get<double>() == Approx(single["training_loss"].get<double>()).margin(1e-5));
  CHECK(without_timings(r0["log_history"]) == without_timings(r1["log_history"]));
  CHECK(r0["is_world_process_zero"] == true);
  CHECK(r1["is_world_process_zero"] == false);
  const auto& h2 = r0["log_history"];
  const auto& h1 = single["log_history"];
  REQUIRE(h2.size() == h1.size());
  for (std::size_t i = 0; i < h2.size(); ++i)
    if (h2[i].contains("loss")) CHECK(h2[i]["loss"].get<double>() == Approx(h1[i]["loss"].get<double>()).margin(2e-4));

  // One writer per shared file: rank 1 wrote only its own random state into each checkpoint, and no log.
  std::set<std::string> rank0_files, rank1_files;
  for (const auto& f : lines_of(dir / "two-dump/files_0.txt")) rank0_files.insert(f);
  for (const auto& f : lines_of(dir / "two-dump/files_1.txt")) rank1_files.insert(f);
  CHECK(rank1_files == std::set<std::string>{"rng_state_1.pt"});
  CHECK(rank0_files == std::set<std::string>{"model.pt", "optimizer.pt", "scheduler.json", "rng_state_0.pt",
                                             "loop_state.json", "training_args.json", "trainer_state.json",
                                             "manifest.json"});
  CHECK(two.output[0].find("'loss'") != std::string::npos);
  CHECK(two.output[1].find("'loss'") == std::string::npos);
  const auto checkpoint = dir / "two/checkpoint-8";
  CHECK_FALSE(torchtrain::checkpoint::invalid_reason(checkpoint));
  const auto manifest = torchtrain::CheckpointManifest::read(checkpoint / "manifest.json");
  CHECK(manifest.find("rng_state_0.pt"));
  CHECK(manifest.find("rng_state_1.pt"));
  CHECK_FALSE(fs::exists(checkpoint / "rng_state.pt"));
  for (const char* file : {"model.pt", "trainer_state.json", "train_results.json", "all_results.json"})
    CHECK(fs::exists(dir / "two" / file));
}

TEST_CASE("A stop decided on rank 0 stops every rank at the same step", "[distributed]") {
  tt_test::TempDir dir("dist-stop");
  const auto run = run_ranks(2, kFlags + " --per_device_train_batch_size 8 --stop_at_step 5", dir / "out", dir / "dump");
  require_success(run);
  CHECK(result_of(dir / "dump", 0)["global_step"] == 5);
  CHECK(result_of(dir / "dump", 1)["global_step"] == 5);
  require_equal_params(dir / "dump/params_0.pt", dir / "dump/params_1.pt", std::nullopt);
}

TEST_CASE("When a rank is killed, the other stops with a clear error instead of hanging", "[distributed]") {
  tt_test::TempDir dir("dist-kill");
  const auto run = run_ranks(2, kFlags + " --per_device_train_batch_size 8 --ddp_timeout 20 --kill_at_step 3 --kill_ranks 1",
                             dir / "out", dir / "dump");
  INFO("rank 0: " << tt_test::describe_status(run.status[0]) << "\n" << run.output[0]);
  CHECK(WIFSIGNALED(run.status[1]));
  REQUIRE(WIFEXITED(run.status[0]));
  CHECK(WEXITSTATUS(run.status[0]) == 2);
  CHECK_THAT(run.output[0], Catch::Contains("distributed_worker: error: rank 0 of 2: ") &&
                                Catch::Contains("another process of the run exited or did not reach it"));
}

TEST_CASE("A distributed run resumes from its checkpoint exactly", "[distributed]") {
  tt_test::TempDir dir("dist-resume");
  const std::string flags = kFlags + " --per_device_train_batch_size 8";
  require_success(run_ranks(2, flags, dir / "full", dir / "full-dump"));

  // With save_async the killed run's checkpoints are written in the background; the result is the same.
  const std::string saves = GENERATE(as<std::string>(), "", " --save_async true");
  INFO("saves:" << saves);
  const auto killed = run_ranks(2, flags + saves + " --kill_at_step 10", dir / "cut", dir / "cut-dump");
  for (int status : killed.status) CHECK(WIFSIGNALED(status));
  // A background write of checkpoint-8 may still have been in flight at the kill: then checkpoint-4 is the newest.
  const auto newest = torchtrain::checkpoint::get_last_checkpoint(dir / "cut");
  REQUIRE(newest);
  const auto name = newest->filename().string();
  CHECK((name == "checkpoint-8" || (!saves.empty() && name == "checkpoint-4")));
  REQUIRE(fs::exists(*newest / "rng_state_1.pt"));
  require_success(run_ranks(2, flags + saves + " --resume", dir / "cut", dir / "cut-dump"));

  for (int r = 0; r < 2; ++r)
    require_equal_params(dir / "full-dump" / ("params_" + std::to_string(r) + ".pt"),
                         dir / "cut-dump" / ("params_" + std::to_string(r) + ".pt"), std::nullopt);
  const auto full = result_of(dir / "full-dump", 0), resumed = result_of(dir / "cut-dump", 0);
  CHECK(full["training_loss"].get<double>() == Approx(resumed["training_loss"].get<double>()).margin(1e-5));
  CHECK(full["eval_loss"] == resumed["eval_loss"]);
  const auto& a = full["log_history"];
  const auto& b = resumed["log_history"];
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].contains("loss")) CHECK(a[i]["loss"].get<double>() == Approx(b[i]["loss"].get<double>()).margin(1e-4));
}

TEST_CASE("Resuming with another number of processes continues with a warning", "[distributed]") {
  tt_test::TempDir dir("dist-reshape");
  const std::string flags = kFlags + " --per_device_train_batch_size 8";
  const auto killed = run_ranks(2, flags + " --kill_at_step 6", dir / "out", dir / "dump");
  for (int status : killed.status) CHECK(WIFSIGNALED(status));
  const auto resumed = run_ranks(0, flags + " --resume", dir / "out", dir / "dump");
  require_success(resumed);
  CHECK_THAT(resumed.output[0], Catch::Contains("written by 2 process(es), with 1") &&
                                    Catch::Contains("per-process random states are not restored"));
  // One process on batches of 8 has 12 steps per epoch: step 4 falls in epoch 0, and 3 epochs end at step 36.
  CHECK(result_of(dir / "dump", 0)["global_step"] == 36);
}

TEST_CASE("Variable-length sequences: two ranks at batch 4 step as one process at batch 8, and as 4 x 2 accumulated",
          "[distributed]") {
  tt_test::TempDir dir("dist-tokens");
  // Each micro-batch holds a different number of label tokens, so only the window's token count gives all three
  // the same loss and gradients.
  const std::string flags =
      "--sequences --train_samples 48 --max_steps 6 --max_grad_norm 0 --logging_steps 1 --save_strategy no "
      "--eval_strategy no";
  const auto two = run_ranks(2, flags + " --per_device_train_batch_size 4", dir / "two", dir / "two-dump");
  require_success(two);
  const auto one = run_ranks(0, flags + " --per_device_train_batch_size 8", dir / "one", dir / "one-dump");
  require_success(one);
  const auto accumulated = run_ranks(0, flags + " --per_device_train_batch_size 2 --gradient_accumulation_steps 4",
                                     dir / "acc", dir / "acc-dump");
  require_success(accumulated);

  const auto h_two = result_of(dir / "two-dump", 0)["log_history"];
  const auto h_one = result_of(dir / "one-dump", 0)["log_history"];
  const auto h_acc = result_of(dir / "acc-dump", 0)["log_history"];
  REQUIRE(h_two.size() == h_one.size());
  REQUIRE(h_acc.size() == h_one.size());
  int compared = 0;
  for (std::size_t i = 0; i < h_one.size(); ++i) {
    if (!h_one[i].contains("loss")) continue;
    INFO("step " << h_one[i]["step"]);
    for (const char* key : {"loss", "grad_norm"}) {
      CHECK(h_two[i][key].get<double>() == Approx(h_one[i][key].get<double>()).epsilon(1e-4));
      CHECK(h_acc[i][key].get<double>() == Approx(h_one[i][key].get<double>()).epsilon(1e-4));
    }
    ++compared;
  }
  CHECK(compared == 6);
}

TEST_CASE("Streams: two ranks step as one process on the doubled batch, a SIGKILLed run resumes exactly, and a stream "
          "that ends early on one rank ends the epoch on both",
          "[distributed]") {
  tt_test::TempDir dir("dist-stream");
  // 96 examples: 6 steps a pass at 16 examples a step; 15 steps end in the third pass. Evaluation: 37 examples.
  const std::string flags = "--stream --max_steps 15 --max_grad_norm 0.5 --eval_strategy steps --eval_steps 5";
  const auto two = run_ranks(2, flags + " --per_device_train_batch_size 8", dir / "two", dir / "two-dump");
  require_success(two);
  const auto one = run_ranks(0, flags + " --per_device_train_batch_size 16", dir / "one", dir / "one-dump");
  require_success(one);
  require_equal_params(dir / "two-dump/params_0.pt", dir / "two-dump/params_1.pt", std::nullopt);
  require_equal_params(dir / "two-dump/params_0.pt", dir / "one-dump/params_0.pt", 1e-5);
  const auto r0 = result_of(dir / "two-dump", 0), single = result_of(dir / "one-dump", 0);
  CHECK(r0["global_step"] == 15);
  CHECK(r0["eval_accuracy"] == single["eval_accuracy"]);
  CHECK(r0["eval_loss"].get<double>() == Approx(single["eval_loss"].get<double>()).margin(1e-5));
  CHECK(r0["training_loss"].get<double>() == Approx(single["training_loss"].get<double>()).margin(1e-5));
  CHECK(r0["log_history"].back()["epoch"].get<double>() == Approx(2.2));
  // Each rank saved its own stream position, and the manifest lists both.
  const auto manifest = torchtrain::CheckpointManifest::read(dir / "two/checkpoint-8/manifest.json");
  CHECK(manifest.find("data_state_0.pt"));
  CHECK(manifest.find("data_state_1.pt"));

  {  // killed with SIGKILL and resumed, one process and two end with the uninterrupted weights
    const std::string batch = " --per_device_train_batch_size 16";
    const auto killed = run_ranks(0, flags + batch + " --kill_at_step 10", dir / "cut-one", dir / "cut-one-dump");
    CHECK(WIFSIGNALED(killed.status[0]));
    require_success(run_ranks(0, flags + batch + " --resume", dir / "cut-one", dir / "cut-one-dump"));
    require_equal_params(dir / "one-dump/params_0.pt", dir / "cut-one-dump/params_0.pt", std::nullopt);

    const auto killed_two = run_ranks(2, flags + " --per_device_train_batch_size 8 --kill_at_step 10", dir / "cut-two",
                                      dir / "cut-two-dump");
    for (int status : killed_two.status) CHECK(WIFSIGNALED(status));
    require_success(run_ranks(2, flags + " --per_device_train_batch_size 8 --resume", dir / "cut-two", dir / "cut-two-dump"));
    for (int r = 0; r < 2; ++r)
      require_equal_params(dir / "two-dump" / ("params_" + std::to_string(r) + ".pt"),
                           dir / "cut-two-dump" / ("params_" + std::to_string(r) + ".pt"), std::nullopt);
  }

  {  // rank 1's stream holds 40 examples: every pass ends after its 3 batches, on both ranks
    const auto short_run = run_ranks(2, flags + " --per_device_train_batch_size 8 --max_steps 7 --stream_examples_rank1 40",
                                     dir / "short", dir / "short-dump");
    require_success(short_run);
    for (int r = 0; r < 2; ++r) {
      const auto result = result_of(dir / "short-dump", r);
      CHECK(result["global_step"] == 7);
      CHECK(result["log_history"].back()["epoch"].get<double>() == Approx(2.0 + 1.0 / 7.0));
    }
    require_equal_params(dir / "short-dump/params_0.pt", dir / "short-dump/params_1.pt", std::nullopt);
  }
}

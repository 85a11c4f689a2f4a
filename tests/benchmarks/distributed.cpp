// Distributed scaling: the same training (an MLP, per-rank batch 64, one intra-op thread per process) with 1 and
// with 2 ranks on loopback Gloo, and the cost of the per-step gradient all-reduce measured on its own (the
// flattened gradients of the model, and the small control-flag all-reduce) relative to the step.
// Usage: distributed [--repeats N] [--steps N]. It starts its ranks itself (fork/exec with RANK, WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT set, as torchrun would).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torchtrain/torchtrain.hpp>

extern char** environ;

namespace tt = torchtrain;

namespace {

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear a, b, c;
  MlpImpl()
      : a(register_module("a", torch::nn::Linear(64, 512))), b(register_module("b", torch::nn::Linear(512, 512))),
        c(register_module("c", torch::nn::Linear(512, 10))) {}
  torch::Tensor forward(torch::Tensor x) { return c(torch::relu(b(torch::relu(a(x))))); }
};
TORCH_MODULE(Mlp);

constexpr std::int64_t kBatch = 64;

struct Silent : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

// Median seconds of `n` calls of `f`.
template <class F>
double median_seconds(int n, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < n; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One rank (or the single process): trains `steps` steps and appends a JSON line to `out`.
int worker(std::int64_t steps, const std::string& out) {
  Silent silent;
  c10::Warning::WarningHandlerGuard guard(&silent);
  torch::set_num_threads(1);
  const char* world_text = std::getenv("WORLD_SIZE");
  const std::int64_t world = world_text ? std::atoll(world_text) : 1;
  auto gen = at::detail::createCPUGenerator(1);
  const std::int64_t samples = steps * kBatch * world;
  auto y = torch::randint(0, 10, {samples}, gen);
  auto x = torch::randn({samples, 64}, gen) + y.unsqueeze(1).to(torch::kFloat);
  tt::TrainingArguments args;
  args.output_dir = "/tmp/torchtrain-distributed-benchmark";
  args.disable_tqdm = true;
  args.per_device_train_batch_size = kBatch;
  args.num_train_epochs = 1;
  args.logging_steps = 50;
  args.save_strategy = tt::SaveStrategy::no;
  args.report_to = {"none"};
  torch::manual_seed(0);
  tt::Trainer trainer(Mlp(), args, tt::data::TensorDataset(x, y));
  trainer.remove_callback<tt::PrinterCallback>();
  const auto result = trainer.train();
  const double runtime = result.metrics["train_runtime"].get<double>();

  double allreduce = 0, control = 0;
  if (auto* group = trainer.process_group()) {
    std::int64_t numel = 0;
    for (const auto& p : trainer.model->parameters()) numel += p.numel();
    auto grads = torch::randn({numel});
    auto flags = torch::zeros({6}, torch::kLong);
    group->barrier("benchmark");
    allreduce = median_seconds(200, [&] { group->all_reduce(grads, "benchmark"); });
    control = median_seconds(200, [&] { group->all_reduce(flags, "benchmark", c10d::ReduceOp::MAX); });
  }
  if (!trainer.state.is_world_process_zero) return 0;
  std::ofstream(out, std::ios::app) << nlohmann::json{{"world", world},
                                                      {"steps", result.global_step},
                                                      {"runtime", runtime},
                                                      {"allreduce", allreduce},
                                                      {"control", control}}
                                           .dump()
                                    << "\n";
  return 0;
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs `world` ranks of this program in worker mode (world 1: one plain process) and waits for them.
void launch(const char* self, int world, std::int64_t steps, const std::string& out) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    if (world > 1)
      for (std::string v : {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                            "WORLD_SIZE=" + std::to_string(world), std::string("MASTER_ADDR=127.0.0.1"),
                            "MASTER_PORT=" + std::to_string(port)})
        env.push_back(v);
    std::vector<std::string> words{self, "--worker", std::to_string(steps), out};
    std::vector<char*> argv, envp;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid;
    if (posix_spawn(&pid, self, nullptr, nullptr, argv.data(), envp.data()) != 0) {
      std::perror("posix_spawn");
      std::exit(1);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::cerr << "a rank failed\n";
      std::exit(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--worker") == 0) return worker(std::atoll(argv[2]), argv[3]);
  int repeats = 3;
  std::int64_t steps = 400;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoll(argv[i + 1]);
  }
  const std::string out = "/tmp/torchtrain-distributed-benchmark-" + std::to_string(::getpid()) + ".jsonl";
  std::remove(out.c_str());
  for (int r = 0; r < repeats; ++r)
    for (int world : {1, 2}) launch(argv[0], world, steps, out);

  std::vector<double> rate[3], ar, ctl;
  std::ifstream in(out);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    const int world = j["world"].get<int>();
    rate[world].push_back(j["steps"].get<double>() / j["runtime"].get<double>());
    if (world == 2) {
      ar.push_back(j["allreduce"].get<double>());
      ctl.push_back(j["control"].get<double>());
    }
  }
  std::remove(out.c_str());
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double s1 = median(rate[1]), s2 = median(rate[2]);
  const double step2_ms = 1e3 / s2, ar_ms = median(ar) * 1e3, ctl_ms = median(ctl) * 1e3;
  std::printf("MLP 64-512-512-10 (%lld parameters), per-rank batch %lld, %lld steps, 1 thread per process, median of %d\n",
              static_cast<long long>(64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10), static_cast<long long>(kBatch),
              static_cast<long long>(steps), repeats);
  std::printf("| ranks | steps/s | samples/s | step (ms) | gradient all-reduce (ms) | control all-reduce (ms) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::printf("| 1 | %.1f | %.0f | %.2f | - | - |\n", s1, s1 * kBatch, 1e3 / s1);
  std::printf("| 2 | %.1f | %.0f | %.2f | %.2f (%.0f%% of the step) | %.3f |\n", s2, s2 * kBatch * 2, step2_ms, ar_ms,
              100.0 * ar_ms / step2_ms, ctl_ms);
  std::printf("samples/s with 2 ranks / 1 rank: %.2f\n", s2 * 2 / s1);
  return 0;
}

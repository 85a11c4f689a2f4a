// Loop overhead: the Trainer against a hand-written LibTorch loop doing the same work (same model, data,
// batch order, AdamW, linear schedule, gradient clipping), in the same process. Prints a table and writes
// it as JSON. Usage: loop_overhead [--repeats N] [--epochs N] [--json PATH]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>
#include <vector>

#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

namespace {

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear hidden, output;
  MlpImpl() : hidden(register_module("hidden", torch::nn::Linear(16, 64))), output(register_module("output", torch::nn::Linear(64, 4))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Mlp);

template <int>
struct NoOp : tt::TrainerCallback {};

template <int... I>
void add_no_ops(tt::Trainer<Mlp, tt::data::TensorDataset>& trainer, std::integer_sequence<int, I...>) {
  (trainer.add_callback<NoOp<I>>(), ...);
}

struct Silent : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

constexpr int64_t kSamples = 2048, kBatch = 32;

tt::data::TensorDataset make_data() {
  auto gen = at::detail::createCPUGenerator(1);
  auto y = torch::randint(0, 4, {kSamples}, gen);
  auto x = torch::randn({kSamples, 16}, gen) + y.unsqueeze(1).to(torch::kFloat);
  return {x, y};
}

// The loop a LibTorch user writes by hand, doing what the Trainer does per step.
double hand_written(const tt::data::TensorDataset& data, int64_t epochs, int64_t log_every) {
  torch::manual_seed(0);
  Mlp model;
  tt::TrainingArguments args;
  auto optimizer = tt::create_optimizer(*model, args);
  const int64_t steps_per_epoch = kSamples / kBatch, total = steps_per_epoch * epochs;
  const auto x = data.features(), y = data.labels();
  auto running = torch::zeros({});
  int64_t step = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t epoch = 0; epoch < epochs; ++epoch) {
    const auto order = tt::data::EpochSampler(kSamples, 42).indices(epoch);
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      auto rows = torch::from_blob(const_cast<size_t*>(order.data()) + b * kBatch, {kBatch}, torch::kLong);
      auto loss = torch::nn::functional::cross_entropy(model->forward(x.index_select(0, rows)), y.index_select(0, rows));
      loss.backward();
      tt::detail::clip_grad_norm(optimizer->param_groups(), 1.0);  // LibTorch's own waits for a double
      optimizer->step();
      const double lr = args.learning_rate * static_cast<double>(total - step - 1) / static_cast<double>(total);
      for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
      optimizer->zero_grad();
      running += loss.detach();
      if (++step % log_every == 0) {
        volatile double logged = running.item<double>() / static_cast<double>(log_every);
        (void)logged;
        running.zero_();
      }
    }
  }
  return static_cast<double>(step) / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double with_trainer(const tt::data::TensorDataset& data, int64_t epochs, int64_t log_every, int callbacks,
                    bool progress) {
  torch::manual_seed(0);
  tt::TrainingArguments args;
  args.output_dir = "/tmp/torchtrain-bench";
  args.num_train_epochs = static_cast<double>(epochs);
  args.per_device_train_batch_size = kBatch;
  args.logging_steps = static_cast<double>(log_every);
  args.save_strategy = tt::SaveStrategy::no;
  args.disable_tqdm = !progress;
  args.report_to = {"none"};
  tt::Trainer trainer(Mlp(), args, data);
  std::ostringstream sink;
  trainer.pop_callback<tt::PrinterCallback>();
  if (trainer.pop_callback<tt::ProgressCallback>())
    trainer.add_callback<tt::ProgressCallback>(100, sink, /*interactive=*/true);
  if (callbacks == 10) add_no_ops(trainer, std::make_integer_sequence<int, 10>{});
  auto result = trainer.train();
  return result.metrics["train_steps_per_second"].get<double>();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 7;
  int64_t epochs = 8;
  std::string json_path = "loop_overhead.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--epochs")) epochs = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  torch::set_num_threads(1);  // one core each, so the other core's noise matters less
  Silent silent;
  c10::Warning::WarningHandlerGuard quiet(&silent);
  const auto data = make_data();

  struct Config {
    const char* name;
    int64_t log_every;
    int callbacks;
    bool progress;
  };
  const std::vector<Config> configs{{"log every 500 steps", 500, 0, false},
                                    {"log every 500, 10 no-op callbacks", 500, 10, false},
                                    {"log every 500, progress bar", 500, 0, true},
                                    {"log every step", 1, 0, false}};
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  std::printf("%-38s %14s %14s %8s\n", "configuration", "hand steps/s", "trainer steps/s", "ratio");
  for (const auto& c : configs) {
    std::vector<double> ratios, hand, trainer;
    for (int r = 0; r < repeats; ++r) {  // alternate, so drift hits both sides alike
      const double h = hand_written(data, epochs, c.log_every);
      const double t = with_trainer(data, epochs, c.log_every, c.callbacks, c.progress);
      hand.push_back(h);
      trainer.push_back(t);
      ratios.push_back(t / h);
    }
    std::printf("%-38s %14.0f %14.0f %8.3f\n", c.name, median(hand), median(trainer), median(ratios));
    rows.push_back({{"configuration", c.name}, {"hand_written_steps_per_second", median(hand)},
                    {"trainer_steps_per_second", median(trainer)}, {"ratio", median(ratios)}});
  }
  std::ofstream(json_path) << rows.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}

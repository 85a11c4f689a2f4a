// Loop overhead: the Trainer against a hand-written LibTorch loop doing the same work (same model, data,
// batch order, AdamW, linear schedule, gradient clipping, loss kept on the device between logs), in the same
// process, for three models. Prints a table and writes it as JSON.
//
//   loop_overhead [--repeats N] [--json PATH]          the table: median steps/s and median ratio per row
//   loop_overhead --single hand|trainer --epochs E     one run of the tiny MLP, for callgrind
//   loop_overhead --only scaler [--repeats N]          the loss scaler's row alone: the Trainer with a
//                                                      GradScaler against the Trainer without one
//
// Both sides run on one intra-op thread and are timed by that thread's CPU clock around the whole call (the
// Trainer's set-up included), so other processes on the machine disturb the ratio far less than they would a
// wall clock. The two sides alternate, so drift hits both alike.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "models.hpp"

namespace tt = torchtrain;

namespace {

template <int>
struct NoOp : tt::TrainerCallback {};

template <class Trainer, int... I>
void add_no_ops(Trainer& trainer, std::integer_sequence<int, I...>) {
  (trainer.template add_callback<NoOp<I>>(), ...);
}

struct Silent : c10::WarningHandler {
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

// The loop a LibTorch user writes by hand, doing what the Trainer does per step. Returns the steps taken.
template <class Model>
std::int64_t hand_written(Model model, const tt::data::TensorDataset& data, std::int64_t epochs,
                          std::int64_t log_every) {
  tt::TrainingArguments args;
  auto optimizer = tt::create_optimizer(*model, args);
  const auto parameters = model->parameters();
  const std::int64_t steps_per_epoch = bench::kSamples / bench::kBatch, total = steps_per_epoch * epochs;
  const auto& x = data.features();
  const auto& y = data.labels();
  auto running = torch::zeros({});
  std::int64_t step = 0;
  for (std::int64_t epoch = 0; epoch < epochs; ++epoch) {
    const auto order = tt::data::EpochSampler(bench::kSamples, 42).indices(epoch);
    for (std::int64_t b = 0; b < steps_per_epoch; ++b) {
      auto rows = torch::from_blob(const_cast<std::size_t*>(order.data()) + b * bench::kBatch, {bench::kBatch},
                                   torch::kLong);
      auto loss = torch::nn::functional::cross_entropy(model->forward(x.index_select(0, rows)),
                                                       y.index_select(0, rows));
      loss.backward();
      tt::detail::clip_grad_norm(parameters, 1.0);  // LibTorch's own waits for a double
      optimizer->step();
      const double lr = args.learning_rate * static_cast<double>(total - step - 1) / static_cast<double>(total);
      for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
      model->zero_grad(/*set_to_none=*/true);
      running += loss.detach();
      if (++step % log_every == 0) {
        volatile double logged = running.item<double>() / static_cast<double>(log_every);
        (void)logged;
        running.zero_();
      }
    }
  }
  return step;
}

template <class Model>
std::int64_t with_trainer(Model model, const tt::data::TensorDataset& data, std::int64_t epochs,
                          std::int64_t log_every, int callbacks, bool progress, bool reporters, bool scaled = false) {
  tt::TrainingArguments args;
  args.output_dir = "/tmp/torchtrain-bench";
  args.num_train_epochs = static_cast<double>(epochs);
  args.per_device_train_batch_size = bench::kBatch;
  args.logging_steps = static_cast<double>(log_every);
  args.save_strategy = tt::SaveStrategy::no;
  args.disable_tqdm = !progress;
  args.report_to = {reporters ? "all" : "none"};
  tt::Trainer trainer(std::move(model), args, data);
  if (scaled) trainer.grad_scaler = std::make_shared<tt::GradScaler>();
  std::ostringstream sink;  // the bar is drawn as on a terminal, into memory
  trainer.template pop_callback<tt::PrinterCallback>();
  if (trainer.template pop_callback<tt::ProgressCallback>())
    trainer.template add_callback<tt::ProgressCallback>(100, sink, /*interactive=*/true);
  if (callbacks == 10) add_no_ops(trainer, std::make_integer_sequence<int, 10>{});
  return trainer.train().global_step;
}

double thread_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

template <class F>
double steps_per_second(F&& run) {
  const double start = thread_seconds();
  const auto steps = static_cast<double>(run());
  return steps / (thread_seconds() - start);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Config {
  const char* name;
  std::int64_t log_every;
  int callbacks;
  bool progress;
  bool reporters;  // report_to all (TensorBoard, CSV, JSON lines) rather than none
};

const std::vector<Config> kConfigs{{"log every 500 steps", 500, 0, false, false},
                                   {"log every 500, 10 no-op callbacks", 500, 10, false, false},
                                   {"log every 500, progress bar", 500, 0, true, false},
                                   {"log every 500, every reporter", 500, 0, false, true},
                                   {"log every step", 1, 0, false, false},
                                   {"log every step, 10 callbacks, progress", 1, 10, true, false}};

template <class MakeModel>
void measure(const char* model_name, MakeModel make_model, const tt::data::TensorDataset& data, std::int64_t epochs,
             int repeats, nlohmann::ordered_json& rows) {
  for (const auto& c : kConfigs) {
    std::vector<double> ratios, hand, trainer;
    for (int r = 0; r < repeats; ++r) {
      torch::manual_seed(0);
      const double h = steps_per_second([&] { return hand_written(make_model(), data, epochs, c.log_every); });
      torch::manual_seed(0);
      const double t = steps_per_second(
          [&] { return with_trainer(make_model(), data, epochs, c.log_every, c.callbacks, c.progress, c.reporters); });
      hand.push_back(h);
      trainer.push_back(t);
      ratios.push_back(t / h);
    }
    std::printf("%-10s %-40s %12.0f %15.0f %7.3f\n", model_name, c.name, median(hand), median(trainer),
                median(ratios));
    rows.push_back({{"model", model_name}, {"configuration", c.name},
                    {"hand_written_steps_per_second", median(hand)}, {"trainer_steps_per_second", median(trainer)},
                    {"ratio", median(ratios)}});
  }
}

// The loss scaler's cost per step: the Trainer with a GradScaler against the same Trainer without one.
void measure_scaler(const tt::data::TensorDataset& data, std::int64_t epochs, int repeats,
                    nlohmann::ordered_json& rows) {
  std::vector<double> plain, scaled, ratios;
  for (int r = 0; r < repeats; ++r) {
    torch::manual_seed(0);
    const double p = steps_per_second([&] { return with_trainer(bench::tiny_mlp(), data, epochs, 500, 0, false, false); });
    torch::manual_seed(0);
    const double s =
        steps_per_second([&] { return with_trainer(bench::tiny_mlp(), data, epochs, 500, 0, false, false, true); });
    plain.push_back(p);
    scaled.push_back(s);
    ratios.push_back(s / p);
  }
  std::printf("%-10s %-40s %12.0f %15.0f %7.3f\n", "tiny MLP", "log every 500: loss scaler / none", median(plain),
              median(scaled), median(ratios));
  rows.push_back({{"model", "tiny MLP"}, {"configuration", "log every 500: Trainer with a GradScaler / without"},
                  {"unscaled_steps_per_second", median(plain)}, {"scaled_steps_per_second", median(scaled)},
                  {"ratio", median(ratios)}});
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // rows appear as they are measured, also through a pipe
  int repeats = 7;
  std::int64_t epochs = 8;
  std::string json_path = "loop_overhead.json", single, only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--epochs")) epochs = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--single")) single = argv[i + 1];
    else if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    else {
      std::fprintf(stderr, "loop_overhead: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  torch::set_num_threads(1);  // one core each, so the other core's noise matters less
  Silent silent;
  c10::Warning::WarningHandlerGuard quiet(&silent);
  const auto tiny_data = bench::clusters({16});

  if (!single.empty()) {
    torch::manual_seed(0);
    const auto steps = single == "hand" ? hand_written(bench::tiny_mlp(), tiny_data, epochs, 500)
                                        : with_trainer(bench::tiny_mlp(), tiny_data, epochs, 500, 0, false, false);
    std::printf("%lld steps\n", static_cast<long long>(steps));
    return 0;
  }

  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  std::printf("%-10s %-40s %12s %15s %7s\n", "model", "configuration", "hand steps/s", "trainer steps/s", "ratio");
  if (only != "scaler") measure("tiny MLP", bench::tiny_mlp, tiny_data, epochs, repeats, rows);
  measure_scaler(tiny_data, epochs, repeats, rows);
  if (only == "scaler") {
    std::ofstream(json_path) << rows.dump(2) << "\n";
    return 0;
  }
  measure("wide MLP", bench::wide_mlp, bench::clusters({256}), std::max<std::int64_t>(epochs / 4, 1), repeats, rows);
  measure("conv net", bench::conv_net, bench::clusters({1, 16, 16}), std::max<std::int64_t>(epochs / 4, 1), repeats,
          rows);
  std::ofstream(json_path) << rows.dump(2) << "\n";
  std::printf("written to %s\n", json_path.c_str());
}

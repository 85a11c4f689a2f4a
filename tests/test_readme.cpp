// The README's C++ as users copy it: every block of code it shows is quoted from examples/quickstart.cpp or
// from this file, where each one compiles and runs on small data.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torchtrain/callbacks/codecarbon.hpp>
#include <torchtrain/callbacks/mlflow.hpp>  // link torchtrain::mlflow
#include <torchtrain/callbacks/wandb.hpp>
#include <torchtrain/torchtrain.hpp>

#include "datasets.hpp"
#include "support.hpp"

namespace tt = torchtrain;
using tt_test::Blobs;

namespace {

struct NetImpl : torch::nn::Module {
  torch::nn::Linear hidden, output;
  explicit NetImpl(std::int64_t width = 16)
      : hidden(register_module("hidden", torch::nn::Linear(4, width))),
        output(register_module("output", torch::nn::Linear(width, 2))) {}
  torch::Tensor forward(const torch::Tensor& x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Net);

/// Token sequences of 3 to 8 tokens, each labelled with its token modulo 3.
struct Sequences : torch::data::datasets::Dataset<Sequences> {
  std::vector<torch::Tensor> tokens;
  explicit Sequences(std::int64_t n) {
    auto gen = at::detail::createCPUGenerator(3);
    for (std::int64_t i = 0; i < n; ++i)
      tokens.push_back(torch::randint(0, 10, {torch::randint(3, 9, {1}, gen).item<std::int64_t>()}, gen));
  }
  torch::data::Example<> get(std::size_t i) override { return {tokens[i], tokens[i].remainder(3)}; }
  torch::optional<std::size_t> size() const override { return tokens.size(); }
};

struct TaggerImpl : torch::nn::Module {
  torch::nn::Embedding embed{10, 8};
  torch::nn::Linear head{8, 3};
  TaggerImpl() {
    register_module("embed", embed);
    register_module("head", head);
  }
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor&) { return head(embed(ids)); }
};
TORCH_MODULE(Tagger);

tt::TrainingArguments small_run(const tt_test::TempDir& dir) {
  tt::TrainingArguments args;
  args.output_dir = dir.str();
  args.report_to = {"none"};
  args.disable_tqdm = true;
  args.save_strategy = tt::SaveStrategy::no;
  args.learning_rate = 1e-2;
  return args;
}

// Keeps every micro-batch's loss, and trains as usual.
struct MyTrainer : tt::Trainer<Tagger, Sequences, Sequences, tt::data::PaddingCollator> {
  using Trainer::Trainer;
  torch::Tensor training_step(Tagger& model, const Batch& batch, const torch::Tensor& num_items) override {
    auto loss = Trainer::training_step(model, batch, num_items);
    losses.push_back(loss.item<double>());
    return loss;
  }
  std::vector<double> losses;
};

struct SayBest : tt::TrainerCallback {
  void on_evaluate(const Args&, const State& state, Control&, const Context&) override {
    if (state.best_metric) tt::ProgressCallback::write("best so far: " + std::to_string(*state.best_metric));
  }
};

/// A logger of the program's own, for the message-handler block.
struct Logger {
  std::vector<std::string> lines;
  void warn(const std::string& format, const std::string& text) {
    lines.push_back(format.substr(0, format.find("{}")) + text);
  }
} my_log;

// The lines of `text`, each with `indent` spaces more.
std::string indented(const std::string& text, std::size_t indent) {
  std::string out, pad(indent, ' ');
  std::size_t from = 0;
  while (from < text.size()) {
    const auto end = text.find('\n', from);
    const auto line = text.substr(from, end == std::string::npos ? std::string::npos : end - from);
    out += (line.empty() ? "" : pad) + line + (end == std::string::npos ? "" : "\n");
    if (end == std::string::npos) break;
    from = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("every C++ block of the README is quoted from a source file that compiles and runs") {
  const std::string source = TORCHTRAIN_SOURCE_DIR;
  const auto readme = tt_test::read_file(source + "/README.md");
  const std::string quoted = tt_test::read_file(source + "/examples/quickstart.cpp") +
                             tt_test::read_file(source + "/tests/test_readme.cpp");
  int blocks = 0;
  for (auto start = readme.find("```cpp\n"); start != std::string::npos; start = readme.find("```cpp\n", start)) {
    start += 7;
    const auto end = readme.find("```\n", start);
    REQUIRE(end != std::string::npos);
    const auto code = readme.substr(start, end - start);
    ++blocks;
    // Each run of lines between blank lines is in a source file as it is, maybe indented there.
    for (std::size_t from = 0, blank; from < code.size(); from = blank + 2) {
      blank = code.find("\n\n", from);
      if (blank == std::string::npos) blank = code.size();
      const auto chunk = code.substr(from, blank - from);
      if (chunk.rfind("#include <torchtrain/torchtrain.hpp>", 0) == 0) continue;  // a program has more includes
      INFO("README block " << blocks << ":\n" << chunk);
      CHECK((quoted.find(chunk) != std::string::npos || quoted.find(indented(chunk, 2)) != std::string::npos ||
             quoted.find(indented(chunk, 4)) != std::string::npos));
    }
    start = end;
  }
  CHECK(blocks >= 8);
}

TEST_CASE("README: a collator of one's own") {
  tt_test::TempDir dir("readme-collator");
  const auto args = small_run(dir);
  Blobs train_set(64, 1), eval_set(32, 2);
  // Standardises each batch's features on the fly.
  struct Standardize {
    torch::data::Example<> operator()(const std::vector<torch::data::Example<>>& examples) const {
      auto batch = tt::data::DefaultDataCollator{}(examples);
      batch.data = (batch.data - batch.data.mean(0)) / (batch.data.std(0) + 1e-6);
      return batch;
    }
  };
  tt::Trainer<Net, Blobs, Blobs, Standardize> trainer(Net(), args, train_set, eval_set);
  trainer.train();
  CHECK(trainer.evaluate().at("eval_loss").get<double>() < 0.5);
}

TEST_CASE("README: training from a CSV stream") {
  tt_test::TempDir dir("readme-stream");
  auto args = small_run(dir);
  Blobs rows(500, 1), eval_set(32, 2);
  const std::string csv = (dir / "train.csv").string();
  std::string text = "a,b,c,d,label\n";
  for (std::int64_t i = 0; i < 500; ++i) {
    for (std::int64_t f = 0; f < 4; ++f) text += std::to_string(rows.x[i][f].item<float>()) + ",";
    text += std::to_string(rows.y[i].item<std::int64_t>()) + "\n";
  }
  tt_test::write_file(csv, text);
  tt::data::TextLineStreamOptions options;
  options.shuffle_buffer = 10000;                // rows held to draw from at random; 0: the file's order
  tt::data::CsvStream train_set(csv, options);  // TensorDataset::from_csv's layout, any size
  args.max_steps = 200;                          // required: a stream has no length
  tt::Trainer trainer(Net(), args, std::move(train_set), eval_set);
  trainer.train();
  CHECK(trainer.state.global_step == 200);
  CHECK(trainer.evaluate().at("eval_loss").get<double>() < 0.5);
}

TEST_CASE("README: reporting to trackers") {
  tt_test::TempDir dir("readme-trackers");
  auto args = small_run(dir);
  const std::string store = "file:" + (dir / "mlruns").string();
  ::setenv("MLFLOW_TRACKING_URI", store.c_str(), 1);
  ::setenv("WANDB_DIR", dir.str().c_str(), 1);
  Blobs train_set(64, 1), eval_set(32, 2);
  args.report_to = {"mlflow", "wandb"};  // MLFLOW_TRACKING_URI, WANDB_PROJECT, WANDB_DIR: where to
  tt::Trainer trainer(Net(), args, train_set, eval_set);
  trainer.add_callback<tt::CodeCarbonCallback>();  // or add one as an object
  trainer.train();
  ::unsetenv("MLFLOW_TRACKING_URI");
  ::unsetenv("WANDB_DIR");
  CHECK(std::filesystem::exists(dir / "mlruns" / "0" / "meta.yaml"));
  CHECK(std::filesystem::exists(dir / "wandb"));
  CHECK(std::filesystem::exists(dir / "emissions.csv"));
}

TEST_CASE("README: TrainingArguments set in C++") {
  tt::TrainingArguments args;
  args.output_dir = "runs/tagger";
  args.eval_strategy = tt::IntervalStrategy::steps;   // no, steps, epoch
  args.eval_steps = 200;                              // or a ratio of the run below 1, as in HF
  args.save_strategy = tt::SaveStrategy::best;        // no, steps, epoch, best
  args.metric_for_best_model = "accuracy";            // std::optional<std::string>; "eval_" is added
  args.lr_scheduler_type = tt::SchedulerType::cosine;
  args.report_to = {"tensorboard", "csv"};            // or {"all"}, {"none"}
  args.include_for_metrics = {"loss"};
  CHECK_NOTHROW(args.validate());
  CHECK(tt::TrainingArguments::from_json(args.to_json()).to_json() == args.to_json());
}

TEST_CASE("README: a training_step of one's own") {
  tt_test::TempDir dir("readme-step");
  auto args = small_run(dir);
  args.max_steps = 5;
  MyTrainer trainer(Tagger(), args, Sequences(40));
  trainer.train();
  CHECK(trainer.losses.size() == 5);
}

TEST_CASE("README: a callback that stops the run, and one that prints above the progress bars") {
  tt_test::TempDir dir("readme-callbacks");
  auto args = small_run(dir);
  args.logging_steps = 1;
  args.learning_rate = 0.1;
  args.num_train_epochs = 50;
  args.eval_strategy = tt::IntervalStrategy::epoch;
  args.metric_for_best_model = "loss";
  Blobs train_set(64, 1), eval_set(32, 2);
  tt::Trainer trainer(Net(), args, train_set, eval_set);
  struct StopAtLoss : tt::TrainerCallback {
    void on_log(const Args&, const State&, Control& control, const Context& ctx) override {
      if (ctx.logs->contains("loss") && (*ctx.logs)["loss"].get<double>() < 0.05) control.should_training_stop = true;
    }
  };
  trainer.add_callback<StopAtLoss>();          // or add_callback(std::make_shared<StopAtLoss>())
  trainer.add_callback<SayBest>();
  const auto result = trainer.train();
  CHECK(result.global_step < 50 * 8);  // stopped before the 50 epochs of 8 steps
}

TEST_CASE("README: the library's messages to a logger of the program's own") {
  tt_test::TempDir dir("readme-messages");
  my_log.lines.clear();
  tt::set_message_handler([](tt::MessageLevel level, const std::string& text) {
    if (level == tt::MessageLevel::warning) my_log.warn("torchtrain: {}", text);
  });
  tt::Trainer trainer(Net(), small_run(dir), Blobs(16, 1));
  trainer.add_callback<tt::PrinterCallback>();  // a second one: a warning
  tt::set_message_handler(nullptr);
  REQUIRE(my_log.lines.size() == 1);
  CHECK(my_log.lines[0].rfind("torchtrain: You are adding a PrinterCallback", 0) == 0);
}

TEST_CASE("README: a hyper-parameter search") {
  tt_test::TempDir dir("readme-search");
  auto args = small_run(dir);
  args.num_train_epochs = 2;
  args.eval_strategy = tt::IntervalStrategy::epoch;
  Blobs train_set(64, 1), eval_set(32, 2);
  tt::Trainer trainer(Net(64), args, train_set, eval_set);
  trainer.compute_metrics = tt::metrics::accuracy;
  trainer.model_init = [](const tt::Trial& trial) { return Net(trial.at("hidden_size").get<int64_t>()); };
  trainer.add_callback<tt::MedianStoppingCallback>(/*n_startup_trials=*/2, /*n_warmup_steps=*/0);  // optional

  tt::SearchSpace space{{"learning_rate", tt::LogUniform{1e-4, 1e-1, /*grid_points=*/4}},
                        {"hidden_size", tt::Categorical{{8, 64}}}};
  tt::BestRun best = trainer.hyperparameter_search(space, /*n_trials=*/8, tt::Direction::maximize, tt::Sampler::grid());
  // best.run_id, best.objective (eval_accuracy) and best.hyperparameters: the winning trial's
  CHECK(best.objective > 0.9);
  CHECK(best.hyperparameters.count("learning_rate"));
}

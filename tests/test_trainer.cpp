// The Trainer end to end: exact event sequences, logged values, learning, evaluate/predict, checkpoints.
#include <cmath>
#include <csignal>
#include <filesystem>
#include <limits>

#include <catch2/catch.hpp>

#include <torchtrain/torchtrain.hpp>

#include "datasets.hpp"
#include "support.hpp"

namespace tt = torchtrain;
using tt_test::Blobs;
using tt_test::Mlp;
using tt_test::TempDir;

namespace {

// Returns named outputs, one of which is the loss.
struct NamedImpl : torch::nn::Module {
  torch::nn::Linear fc{4, 2};
  NamedImpl() { register_module("fc", fc); }
  tt::ModelOutput forward(const torch::data::Example<>& batch) {
    auto logits = fc(batch.data);
    return {{"logits", logits},
            {"hidden", logits * 10},
            {"loss", torch::nn::functional::cross_entropy(logits, batch.target)}};
  }
};
TORCH_MODULE(Named);

// Records every event as "name gs" (plus the epoch on step and epoch ends).
struct Recorder : tt::TrainerCallback {
  std::vector<std::string> events;
  int stop_at = -1;
  void add(const std::string& e, const State& s) { events.push_back(e + " " + std::to_string(s.global_step)); }
  void on_init_end(const Args&, const State& s, Control&, const Context&) override { add("init_end", s); }
  void on_train_begin(const Args&, const State& s, Control&, const Context&) override { add("train_begin", s); }
  void on_train_end(const Args&, const State& s, Control&, const Context&) override { add("train_end", s); }
  void on_epoch_begin(const Args&, const State& s, Control&, const Context&) override { add("epoch_begin", s); }
  void on_epoch_end(const Args&, const State& s, Control&, const Context&) override { add("epoch_end", s); }
  void on_step_begin(const Args&, const State& s, Control&, const Context&) override { add("step_begin", s); }
  void on_substep_end(const Args&, const State& s, Control&, const Context&) override { add("substep_end", s); }
  void on_pre_optimizer_step(const Args&, const State& s, Control&, const Context&) override { add("pre_opt", s); }
  void on_optimizer_step(const Args&, const State& s, Control&, const Context&) override { add("opt", s); }
  void on_step_end(const Args&, const State& s, Control& c, const Context&) override {
    add("step_end", s);
    if (s.global_step == stop_at) c.should_training_stop = true;
  }
  void on_evaluate(const Args&, const State& s, Control&, const Context&) override { add("evaluate", s); }
  void on_predict(const Args&, const State& s, Control&, const Context&) override { add("predict", s); }
  void on_save(const Args&, const State& s, Control&, const Context&) override { add("save", s); }
  void on_log(const Args&, const State& s, Control&, const Context&) override { add("log", s); }
  void on_prediction_step(const Args&, const State& s, Control&, const Context&) override { add("pred_step", s); }
};

// REF §1.3-1.4 and §4 written out as a plain simulation: the expected event sequence of a run.
struct Plan {
  int64_t batches = 3, ga = 1, epochs = 2, max_steps = -1, eval_batches = 1, stop_at = -1;
  tt::IntervalStrategy logging = tt::IntervalStrategy::steps, eval = tt::IntervalStrategy::no;
  tt::SaveStrategy save = tt::SaveStrategy::steps;
  int64_t logging_steps = 500, eval_steps = 500, save_steps = 500;
  bool logging_first_step = false;

  std::vector<std::string> expected() const {
    std::vector<std::string> ev{"init_end 0", "train_begin 0"};
    const int64_t updates = (batches + ga - 1) / ga;
    const int64_t total = max_steps > 0 ? max_steps : updates * epochs;
    const int64_t n_epochs = max_steps > 0 ? (total + updates - 1) / updates : epochs;
    int64_t gs = 0, last_logged = 0;
    auto put = [&](const std::string& e) { ev.push_back(e + " " + std::to_string(gs)); };
    auto mlse = [&](bool log, bool evaluate, bool save) {
      if (log && gs > last_logged) {
        put("log");
        last_logged = gs;
      }
      if (evaluate) {
        for (int64_t i = 0; i < eval_batches; ++i) put("pred_step");
        put("log");
        put("evaluate");
      }
      if (save) put("save");
    };
    bool stop = false;
    for (int64_t epoch = 0; epoch < n_epochs && !stop; ++epoch) {
      put("epoch_begin");
      for (int64_t step = 0; step < batches; ++step) {
        if (step % ga == 0) put("step_begin");
        const bool sync = (step + 1) % ga == 0 || step + 1 == batches;
        if (!sync) {
          put("substep_end");
        } else {
          put("pre_opt");
          put("opt");
          ++gs;
          put("step_end");
          bool log = (gs == 1 && logging_first_step) ||
                     (logging == tt::IntervalStrategy::steps && gs % logging_steps == 0);
          const bool eval_due = eval == tt::IntervalStrategy::steps;
          bool evaluate = eval_due && gs % eval_steps == 0;
          bool save_now = save == tt::SaveStrategy::steps && gs % save_steps == 0;
          if (gs == stop_at) stop = true;
          if (gs >= total) {
            stop = true;
            save_now = save_now || save == tt::SaveStrategy::steps;
            evaluate = evaluate || eval_due;
          }
          mlse(log, evaluate, save_now);
        }
        if (stop) break;
      }
      put("epoch_end");
      mlse(logging == tt::IntervalStrategy::epoch, eval == tt::IntervalStrategy::epoch,
           save == tt::SaveStrategy::epoch);
    }
    put("log");
    put("train_end");
    return ev;
  }

  tt::TrainingArguments args(const std::string& dir) const {
    tt::TrainingArguments a;
    a.output_dir = dir;
    a.per_device_train_batch_size = 4;
    a.per_device_eval_batch_size = 4;
    a.gradient_accumulation_steps = ga;
    a.num_train_epochs = static_cast<double>(epochs);
    a.max_steps = max_steps;
    a.logging_strategy = logging;
    a.logging_steps = static_cast<double>(logging_steps);
    a.logging_first_step = logging_first_step;
    a.eval_strategy = eval;
    if (eval != tt::IntervalStrategy::no) a.eval_steps = static_cast<double>(eval_steps);
    a.save_strategy = save;
    a.save_steps = static_cast<double>(save_steps);
    a.disable_tqdm = true;
    a.report_to = {"none"};
    return a;
  }
};

// Runs the plan through a real Trainer and returns the recorded events.
std::vector<std::string> run(const Plan& plan) {
  TempDir dir("events");
  auto recorder = std::make_shared<Recorder>();
  recorder->stop_at = static_cast<int>(plan.stop_at);
  std::ostringstream quiet;
  tt::Trainer trainer(Mlp(), plan.args(dir.str()), Blobs(plan.batches * 4, 1), Blobs(plan.eval_batches * 4, 2),
                      tt::data::DefaultDataCollator{}, {recorder});
  trainer.pop_callback<tt::PrinterCallback>();
  trainer.train();
  return recorder->events;
}

tt::TrainingArguments quiet_args(const std::string& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir;
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

}  // namespace

TEST_CASE("event sequence of REF 1.4: 3 batches, GA 2, 2 epochs, log every step, eval and save per epoch") {
  Plan plan;
  plan.ga = 2;
  plan.logging_steps = 1;
  plan.eval = tt::IntervalStrategy::epoch;
  plan.save = tt::SaveStrategy::epoch;
  const std::vector<std::string> ref{
      "init_end 0",  "train_begin 0", "epoch_begin 0", "step_begin 0", "substep_end 0", "pre_opt 0",
      "opt 0",       "step_end 1",    "log 1",         "step_begin 1", "pre_opt 1",     "opt 1",
      "step_end 2",  "log 2",         "epoch_end 2",   "pred_step 2",  "log 2",         "evaluate 2",
      "save 2",      "epoch_begin 2", "step_begin 2",  "substep_end 2", "pre_opt 2",    "opt 2",
      "step_end 3",  "log 3",         "step_begin 3",  "pre_opt 3",     "opt 3",        "step_end 4",
      "log 4",       "epoch_end 4",   "pred_step 4",   "log 4",         "evaluate 4",   "save 4",
      "log 4",       "train_end 4"};
  REQUIRE(plan.expected() == ref);
  CHECK(run(plan) == ref);
}

TEST_CASE("event sequences follow the reference flow for many configurations") {
  std::vector<std::pair<std::string, Plan>> plans;
  {
    Plan p;
    p.batches = 5;
    p.epochs = 3;
    plans.emplace_back("defaults", p);
  }
  {
    Plan p;
    p.batches = 7;
    p.epochs = 2;
    p.logging_steps = 5;
    plans.emplace_back("logging_steps 5", p);
  }
  {
    Plan p;
    p.batches = 7;
    p.save_steps = 5;
    plans.emplace_back("save_steps 5", p);
  }
  {
    Plan p;
    p.batches = 7;
    p.eval = tt::IntervalStrategy::steps;
    p.eval_steps = 5;
    p.eval_batches = 2;
    plans.emplace_back("eval steps 5 (and a final evaluation)", p);
  }
  {
    Plan p;
    p.batches = 4;
    p.eval = tt::IntervalStrategy::epoch;
    p.save = tt::SaveStrategy::no;
    plans.emplace_back("eval epoch", p);
  }
  {
    Plan p;
    p.batches = 11;
    p.logging_steps = 3;
    p.save_steps = 10;
    p.eval = tt::IntervalStrategy::steps;
    p.eval_steps = 5;
    plans.emplace_back("logging 3, save 10, eval 5", p);
  }
  {
    Plan p;
    p.batches = 5;
    p.ga = 2;
    p.logging_steps = 1;
    plans.emplace_back("GA 2 with a remainder window", p);
  }
  {
    Plan p;
    p.batches = 7;
    p.ga = 3;
    p.logging_steps = 2;
    p.logging_first_step = true;
    plans.emplace_back("GA 3 with a remainder window", p);
  }
  {
    Plan p;
    p.batches = 5;
    p.max_steps = 7;
    p.logging_steps = 2;
    p.save_steps = 4;
    plans.emplace_back("max_steps ending mid-epoch", p);
  }
  {
    Plan p;
    p.batches = 5;
    p.epochs = 3;
    p.stop_at = 6;
    p.logging = tt::IntervalStrategy::epoch;
    p.save = tt::SaveStrategy::epoch;
    plans.emplace_back("a callback stops training at step 6", p);
  }
  for (const auto& [name, plan] : plans) {
    INFO(name);
    CHECK(run(plan) == plan.expected());
  }
}

TEST_CASE("early stopping ends a run once the metric stops improving") {
  TempDir dir("early");
  auto args = quiet_args(dir.str());
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 1;
  args.logging_steps = 1;
  args.learning_rate = 0.0;  // the eval loss never improves
  args.metric_for_best_model = "loss";
  args.greater_is_better = false;
  args.num_train_epochs = 5;
  args.per_device_train_batch_size = 4;
  tt::Trainer trainer(Mlp(), args, Blobs(16, 1), Blobs(8, 2));
  auto early = trainer.add_callback<tt::EarlyStoppingCallback>(2);
  auto result = trainer.train();
  // Step 1 sets the best metric; steps 2 and 3 do not improve it: patience 2 is exhausted at step 3.
  CHECK(result.global_step == 3);
  CHECK(early->early_stopping_patience_counter == 2);

  // The stop, and the patience counter, survive a resume: no further step is taken.
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 1;
  TempDir saved("early-resume");
  args.output_dir = saved.str();
  tt::Trainer stopped(Mlp(), args, Blobs(16, 1), Blobs(8, 2));
  stopped.add_callback<tt::EarlyStoppingCallback>(2);
  REQUIRE(stopped.train().global_step == 3);
  tt::Trainer resumed(Mlp(), args, Blobs(16, 1), Blobs(8, 2));
  auto restored = resumed.add_callback<tt::EarlyStoppingCallback>(2);
  CHECK(resumed.train(true).global_step == 3);
  CHECK(restored->early_stopping_patience_counter == 2);
}

TEST_CASE("logged values: loss mean between logs, learning rate of the step, grad_norm, epoch fractions") {
  TempDir dir("values");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.gradient_accumulation_steps = 2;
  args.num_train_epochs = 2;
  args.logging_steps = 1;
  args.learning_rate = 1e-2;
  args.max_grad_norm = 1e9;  // a norm that never clips, so the pre-clip norm is easy to recompute

  struct NormProbe : tt::TrainerCallback {
    std::vector<double> norms;
    void on_pre_optimizer_step(const Args&, const State&, Control&, const Context& ctx) override {
      double sq = 0;
      for (const auto& p : ctx.model->parameters()) sq += p.grad().pow(2).sum().item<double>();
      norms.push_back(std::sqrt(sq));
    }
  };
  tt::Trainer trainer(Mlp(), args, Blobs(12, 3));
  auto probe = trainer.add_callback<NormProbe>();
  auto result = trainer.train();

  std::vector<const tt::LogEntry*> train_logs;
  for (const auto& e : trainer.state.log_history)
    if (e.contains("loss")) train_logs.push_back(&e);
  REQUIRE(train_logs.size() == 4);
  const std::vector<double> epochs{0.6666666666666666, 1.0, 1.6666666666666665, 2.0};
  for (std::size_t i = 0; i < 4; ++i) {
    const auto& e = *train_logs[i];
    CHECK((*train_logs[i])["epoch"].get<double>() == epochs[i]);
    // Linear decay over 4 steps, no warmup: the rate used at update k (0-based) is lr * (4 - k) / 4.
    CHECK(e["learning_rate"].get<double>() == Approx(1e-2 * (4.0 - static_cast<double>(i)) / 4.0).epsilon(1e-12));
    CHECK(e["grad_norm"].get<double>() == Approx(probe->norms[i]).epsilon(1e-5));
    CHECK(e["step"].get<int64_t>() == static_cast<int64_t>(i + 1));
  }
  // Key order as HF logs them.
  std::vector<std::string> keys;
  for (const auto& [k, v] : train_logs[0]->items()) keys.push_back(k);
  const std::vector<std::string> hf_order{"loss", "grad_norm", "learning_rate", "epoch", "step"};
  CHECK(keys == hf_order);

  // The final summary averages every update's loss.
  double sum = 0;
  for (auto* e : train_logs) sum += (*e)["loss"].get<double>();
  CHECK(result.training_loss == Approx(sum / 4).margin(1e-3));
  const auto& summary = trainer.state.log_history.back();
  for (const char* key : {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
                          "train_loss", "epoch"})
    CHECK(summary.contains(key));
  CHECK(result.metrics["train_loss"].get<double>() == result.training_loss);
}

TEST_CASE("the logged loss is the mean of the per-update losses since the previous log") {
  TempDir dir("lossmean");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.logging_steps = 3;
  args.max_steps = 6;
  args.learning_rate = 0.0;  // the model does not change, so the losses can be recomputed afterwards
  tt::Trainer trainer(Mlp(), args, Blobs(24, 4));
  trainer.train();
  Blobs data(24, 4);
  const auto order = tt::data::EpochSampler(24, 42).indices(0);
  torch::NoGradGuard no_grad;
  std::vector<double> losses;
  for (int b = 0; b < 6; ++b) {
    std::vector<int64_t> idx(order.begin() + b * 4, order.begin() + b * 4 + 4);
    auto ids = torch::tensor(idx);
    losses.push_back(torch::nn::functional::cross_entropy(trainer.model->forward(data.x.index_select(0, ids)),
                                                          data.y.index_select(0, ids))
                         .item<double>());
  }
  const auto& log = trainer.state.log_history;
  // Not rounded to 4 decimals any more (HF v5).
  CHECK(log[0]["loss"].get<double>() == Approx((losses[0] + losses[1] + losses[2]) / 3).epsilon(1e-6));
  CHECK(log[1]["loss"].get<double>() == Approx((losses[3] + losses[4] + losses[5]) / 3).epsilon(1e-6));
}

TEST_CASE("a NaN loss is replaced by the running mean (logging_nan_inf_filter), for float and double losses") {
  // A float32 loss on the CPU is folded at once; others go through the device buffer: same numbers either way.
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble);
  const bool filter = GENERATE(true, false);
  TempDir dir("nanfilter");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.logging_steps = 4;
  args.max_steps = 4;
  args.learning_rate = 0.0;
  args.max_grad_norm = 0.0;
  args.logging_nan_inf_filter = filter;
  tt::Trainer trainer(Mlp(), args, Blobs(16, 4));
  std::vector<double> losses;
  trainer.criterion = [&](const torch::Tensor& logits, const torch::Tensor& labels) {
    auto loss = torch::nn::functional::cross_entropy(logits, labels).to(dtype);
    losses.push_back(loss.item<double>());
    // The third loss is NaN; its gradient stays finite, so the weights do not change.
    return losses.size() == 3 ? loss + std::numeric_limits<double>::quiet_NaN() : loss;
  };
  trainer.train();
  REQUIRE(losses.size() == 4);
  const double logged = trainer.state.log_history.at(0)["loss"].get<double>();
  if (filter) {
    // HF: tr_loss += tr_loss / (1 + global_step - last_logged_step), with global_step = 2 at the third step.
    const float before_nan = static_cast<float>(losses[0]) + static_cast<float>(losses[1]);
    const double expected = (before_nan + before_nan / 3.0f + static_cast<float>(losses[3])) / 4.0;
    CHECK(logged == Approx(expected).epsilon(1e-6));
  } else {
    CHECK(std::isnan(logged));
  }
}

TEST_CASE("a tiny problem actually learns") {
  TempDir dir("learn");
  auto args = quiet_args(dir.str());
  args.num_train_epochs = 10;
  args.learning_rate = 1e-2;
  args.per_device_train_batch_size = 16;
  args.eval_strategy = tt::IntervalStrategy::epoch;
  tt::Trainer trainer(Mlp(), args, Blobs(256, 5), Blobs(128, 6));
  trainer.compute_metrics = tt::metrics::accuracy;
  auto result = trainer.train();
  auto metrics = trainer.evaluate();
  CHECK(result.training_loss < 0.4);
  CHECK(metrics["eval_accuracy"].get<double>() > 0.9);
  CHECK(metrics["eval_loss"].get<double>() < 0.3);
  std::vector<std::string> keys;
  for (const auto& [k, v] : metrics.items()) keys.push_back(k);
  const std::vector<std::string> hf_order{"eval_loss",          "eval_accuracy",         "eval_runtime",
                                          "eval_samples_per_second", "eval_steps_per_second", "epoch"};
  CHECK(keys == hf_order);
}

TEST_CASE("evaluate and predict on their own, named eval sets, ignore_keys") {
  TempDir dir("evalpredict");
  auto args = quiet_args(dir.str());
  std::map<std::string, Blobs> sets{{"a", Blobs(10, 1)}, {"b", Blobs(6, 2)}};
  tt::Trainer trainer(Named(), args, Blobs(8, 3), sets);
  auto metrics = trainer.evaluate();
  CHECK(metrics.contains("eval_a_loss"));
  CHECK(metrics.contains("eval_b_loss"));
  CHECK(metrics.contains("eval_b_runtime"));
  CHECK(trainer.state.log_history.size() == 2);

  auto prediction = trainer.predict(Blobs(10, 1));
  CHECK((prediction.predictions.sizes() == torch::IntArrayRef({10, 2})));
  CHECK(prediction.label_ids.size(0) == 10);
  CHECK(prediction.metrics["test_loss"].get<double>() == Approx(metrics["eval_a_loss"].get<double>()));
  CHECK(trainer.state.log_history.size() == 2);  // predict does not log

  auto hidden = trainer.predict(Blobs(10, 1), {"logits"});
  CHECK(torch::allclose(hidden.predictions, prediction.predictions * 10));
}

TEST_CASE("trial values are applied to the arguments with type casting, and unknown names are rejected") {
  TempDir dir("trial");
  auto args = quiet_args(dir.str());
  args.max_steps = 2;
  tt::Trainer trainer(Mlp(), args, Blobs(8, 1));
  trainer.train({}, {{"learning_rate", "0.001"}, {"per_device_train_batch_size", 2.0}});
  CHECK(trainer.args.learning_rate == 0.001);
  CHECK(trainer.args.per_device_train_batch_size == 2);
  CHECK(trainer.state.is_hyper_param_search);
  CHECK(trainer.state.trial_params["learning_rate"] == "0.001");
  CHECK_THROWS_WITH(trainer.train({}, {{"learning_rat", 0.1}}), Catch::Contains("learning_rat"));
}

TEST_CASE("checkpoints are written, rotated by step number, and a run resumes to the same weights") {
  TempDir dir("resume");
  auto args = quiet_args(dir.str());
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 2;
  args.save_total_limit = 2;
  args.logging_steps = 1;
  args.per_device_train_batch_size = 4;
  args.num_train_epochs = 2;
  args.gradient_accumulation_steps = 2;

  torch::manual_seed(7);
  Mlp reference;
  tt::Trainer full(reference, args, Blobs(20, 1));
  full.train();
  auto checkpoints = tt::checkpoint::sorted_checkpoints(dir.path());
  REQUIRE(checkpoints.size() == 2);
  CHECK(checkpoints[0].filename() == "checkpoint-4");
  CHECK(checkpoints[1].filename() == "checkpoint-6");
  for (const char* f : {"model.pt", "optimizer.pt", "scheduler.json", "rng_state.pt", "trainer_state.json",
                        "training_args.json"})
    CHECK(std::filesystem::exists(checkpoints[0] / f));

  // Resume from step 4 with a freshly initialised model: same final weights and the same log.
  torch::manual_seed(99);
  tt::Trainer resumed(Mlp(), args, Blobs(20, 1));
  resumed.train((checkpoints[0]).string());
  auto a = full.model->parameters();
  auto b = resumed.model->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));
  REQUIRE(resumed.state.log_history.size() == full.state.log_history.size());
  for (std::size_t i = 0; i + 1 < full.state.log_history.size(); ++i)
    CHECK(nlohmann::json(resumed.state.log_history[i]) == nlohmann::json(full.state.log_history[i]));
  CHECK(resumed.state.log_history.back()["train_loss"] == full.state.log_history.back()["train_loss"]);

  // A missing folder, or `true` with no checkpoint, is a clear error.
  CHECK_THROWS_WITH(resumed.train(std::string((dir.path() / "nope").string())), Catch::Contains("nope"));
  TempDir empty("empty");
  args.output_dir = empty.str();
  tt::Trainer none(Mlp(), args, Blobs(20, 1));
  CHECK_THROWS_WITH(none.train(true), Catch::Contains("No valid checkpoint"));
}

TEST_CASE("save_model writes weights that plain LibTorch loads, and save_metrics writes HF's files") {
  TempDir dir("savemodel");
  auto args = quiet_args(dir.str());
  args.max_steps = 1;
  tt::Trainer trainer(Mlp(), args, Blobs(8, 1));
  trainer.train();
  trainer.save_model();
  Mlp plain;
  torch::load(plain, (dir.path() / "model.pt").string());
  CHECK(torch::equal(plain->fc1->weight, trainer.model->fc1->weight));

  tt::Metrics m;
  m["eval_loss"] = 0.5;
  trainer.save_metrics("eval", m);
  tt::Metrics t;
  t["train_loss"] = 0.25;
  trainer.save_metrics("train", t);
  auto all = nlohmann::json::parse(tt_test::read_file(dir.path() / "all_results.json"));
  CHECK(all["eval_loss"] == 0.5);
  CHECK(all["train_loss"] == 0.25);
  CHECK(std::filesystem::exists(dir.path() / "eval_results.json"));
}

TEST_CASE("the shuffle is a pure function of (seed, epoch)") {
  tt::data::EpochSampler s(100, 42);
  CHECK(s.indices(3) == tt::data::EpochSampler(100, 42).indices(3));
  CHECK(s.indices(3) != s.indices(4));
  CHECK(s.indices(3) != tt::data::EpochSampler(100, 43).indices(3));
  auto sorted = s.indices(0);
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < 100; ++i) CHECK(sorted[i] == i);
}

TEST_CASE("background workers deliver the same batches in the same order") {
  Blobs data(50, 1);
  tt::data::DefaultDataCollator collate;
  const auto order = tt::data::EpochSampler(50, 1).indices(0);
  auto batches = [&](std::size_t workers) {
    tt::data::DataLoader<Blobs, tt::data::DefaultDataCollator> loader(data, collate, 8, false, workers);
    loader.start_epoch(order, 1);
    std::vector<torch::Tensor> out;
    for (std::size_t k = 1; k < loader.num_batches(); ++k) out.push_back(loader.next().data);
    return out;
  };
  auto serial = batches(0);
  auto parallel = batches(3);
  REQUIRE(serial.size() == 6);
  REQUIRE(parallel.size() == serial.size());
  for (std::size_t i = 0; i < serial.size(); ++i) CHECK(torch::equal(serial[i], parallel[i]));
  CHECK(serial.back().size(0) == 2);  // 50 = 6 * 8 + 2: the last batch is short without drop_last
}

TEST_CASE("the padding collator pads to the longest sequence and masks the padding") {
  std::vector<torch::data::Example<>> examples{{torch::ones({2}), torch::tensor(0)},
                                               {torch::ones({4}), torch::tensor(1)}};
  auto batch = tt::data::PaddingCollator{}(examples);
  CHECK((batch.data.sizes() == torch::IntArrayRef({2, 4})));
  CHECK(batch.attention_mask.sum().item<int64_t>() == 6);
  CHECK(batch.data[0][3].item<float>() == 0.0f);
  CHECK((batch.target.sizes() == torch::IntArrayRef({2})));
}

TEST_CASE("weight decay skips biases and normalisation layers") {
  struct NormNetImpl : torch::nn::Module {
    torch::nn::Linear fc{4, 4};
    torch::nn::LayerNorm norm{torch::nn::LayerNormOptions({4})};
    NormNetImpl() {
      register_module("fc", fc);
      register_module("norm", norm);
    }
  };
  auto net = std::make_shared<NormNetImpl>();
  tt::TrainingArguments args;
  args.weight_decay = 0.1;
  auto opt = tt::create_optimizer(*net, args);
  REQUIRE(opt->param_groups().size() == 2);
  CHECK(opt->param_groups()[0].params().size() == 1);  // fc.weight
  CHECK(static_cast<const torch::optim::AdamWOptions&>(opt->param_groups()[0].options()).weight_decay() == 0.1);
  CHECK(opt->param_groups()[1].params().size() == 3);  // fc.bias, norm.weight, norm.bias
  CHECK(static_cast<const torch::optim::AdamWOptions&>(opt->param_groups()[1].options()).weight_decay() == 0.0);
}

TEST_CASE("optim names the optimizer and optim_args its options; each resumes bit-exactly") {
  struct Named {
    const char* optim;
    const char* optim_args;
    std::function<void(const torch::optim::Optimizer&)> check;
  };
  const std::vector<Named> optimizers{
      {"adamw_torch", "", [](const auto& o) { CHECK(dynamic_cast<const torch::optim::AdamW*>(&o)); }},
      {"adam", "", [](const auto& o) { CHECK(dynamic_cast<const torch::optim::Adam*>(&o)); }},
      {"sgd", "momentum=0.9, nesterov=true",
       [](const auto& o) {
         REQUIRE(dynamic_cast<const torch::optim::SGD*>(&o));
         const auto& options = static_cast<const torch::optim::SGDOptions&>(o.param_groups()[0].options());
         CHECK(options.momentum() == 0.9);
         CHECK(options.nesterov());
         CHECK(options.weight_decay() == 0.01);
       }},
      {"adagrad", "lr_decay=0.01",
       [](const auto& o) {
         REQUIRE(dynamic_cast<const torch::optim::Adagrad*>(&o));
         CHECK(static_cast<const torch::optim::AdagradOptions&>(o.param_groups()[0].options()).lr_decay() == 0.01);
       }},
      {"rmsprop", "alpha=0.9,momentum=0.5,centered=true",
       [](const auto& o) {
         REQUIRE(dynamic_cast<const torch::optim::RMSprop*>(&o));
         const auto& options = static_cast<const torch::optim::RMSpropOptions&>(o.param_groups()[0].options());
         CHECK(options.alpha() == 0.9);
         CHECK(options.momentum() == 0.5);
         CHECK(options.centered());
       }},
  };
  Blobs data(48, 3);
  for (const auto& named : optimizers) {
    INFO("optim " << named.optim);
    TempDir dir;
    tt::TrainingArguments args;
    args.output_dir = dir.str();
    args.report_to = {"none"};
    args.disable_tqdm = true;
    args.optim = named.optim;
    args.optim_args = named.optim_args;
    args.weight_decay = 0.01;
    args.learning_rate = 0.01;
    args.max_steps = 6;
    args.save_steps = 3;
    args.per_device_train_batch_size = 8;
    torch::manual_seed(1);
    tt::Trainer whole(Mlp(), args, data);
    whole.train();
    named.check(*whole.optimizer);
    torch::manual_seed(2);  // other weights, which the checkpoint replaces
    tt::Trainer resumed(Mlp(), args, data);
    resumed.train((dir / "checkpoint-3").string());
    const auto a = whole.model->parameters(), b = resumed.model->parameters();
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));
  }

  tt::TrainingArguments bad;
  bad.optim = "adamw_hf";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("TrainingArguments.optim = \"adamw_hf\": not an available "
                                                    "optimizer; choose from adamw_torch, adam, sgd, adagrad, rmsprop"));
  bad.optim = "sgd";
  bad.optim_args = "momentum=0.9,betas=2";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("sgd takes no argument 'betas'; choose from momentum, dampening, "
                                                    "nesterov"));
  bad.optim_args = "momentum";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("expected key=value pairs separated by commas"));
  bad.optim_args = "momentum=fast";
  CHECK_THROWS_WITH(bad.validate(), Catch::Contains("momentum=fast is not a number or true/false"));
}

TEST_CASE("lr_scheduler_kwargs reach the schedule, from the command line and from training_args.json") {
  TempDir dir;
  const char* argv[] = {"prog", "--output_dir", dir.path().c_str(), "--lr_scheduler_type", "cosine_with_min_lr",
                        "--lr_scheduler_kwargs", "{\"min_lr\": 0.001}", "--learning_rate", "0.01",
                        "--max_steps", "10", "--report_to", "none", "--disable_tqdm", "--save_strategy", "no",
                        "--logging_steps", "1"};
  auto args = tt::TrainingArguments::parse(static_cast<int>(std::size(argv)), argv);
  CHECK(args.lr_scheduler_kwargs == nlohmann::json{{"min_lr", 0.001}});
  CHECK(tt::TrainingArguments::from_json(args.to_json()).lr_scheduler_kwargs == args.lr_scheduler_kwargs);
  tt::Trainer trainer(Mlp(), args, Blobs(16, 1));
  trainer.train();
  // The cosine ends at min_lr, not at 0.
  CHECK(trainer.lr_scheduler->get_last_lr().front() == Approx(0.001));
  const char* bad[] = {"prog", "--lr_scheduler_kwargs", "min_lr=1"};
  CHECK_THROWS_WITH(tt::TrainingArguments::parse(3, bad), Catch::Contains("not a JSON object"));
}

TEST_CASE("TensorDataset's stacked batches equal what the default collator makes of its examples") {
  tt::data::TensorDataset data(torch::randn({10, 3}), torch::arange(10));
  const std::vector<std::size_t> idx{7, 2, 9};
  auto fast = data.get_stacked_batch(idx);
  auto slow = tt::data::DefaultDataCollator{}(data.get_batch(idx));
  CHECK(torch::equal(fast.data, slow.data));
  CHECK(torch::equal(fast.target, slow.target));
}

namespace {

tt::TrainingArguments checkpointing_args(const std::string& dir) {
  auto args = quiet_args(dir);
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 2;
  args.logging_steps = 2;
  args.per_device_train_batch_size = 4;
  args.max_steps = 6;
  return args;
}

}  // namespace

TEST_CASE("resume skips an invalid newest checkpoint, says why, and removes stale staging folders") {
  TempDir dir("corrupt");
  auto args = checkpointing_args(dir.str());
  tt::Trainer full(Mlp(), args, Blobs(16, 1));
  full.train();
  REQUIRE(tt::checkpoint::sorted_checkpoints(dir.path()).size() == 3);

  // Garbage trainer_state.json in checkpoint-6, no weights in checkpoint-4: checkpoint-2 is the newest valid.
  tt_test::write_file(dir / "checkpoint-6/trainer_state.json", "{\"global_step\": ");
  std::filesystem::remove(dir / "checkpoint-4/model.pt");
  std::filesystem::create_directories(dir / ".tmp-checkpoint-8");
  tt_test::WarningCapture warnings;
  tt::Trainer resumed(Mlp(), args, Blobs(16, 1));
  resumed.train(true);
  CHECK(warnings.contains("checkpoint-6"));
  CHECK(warnings.contains("trainer_state.json"));
  CHECK(warnings.contains("checkpoint-4"));
  CHECK(warnings.contains("model.pt"));
  CHECK_FALSE(std::filesystem::exists(dir / ".tmp-checkpoint-8"));
  // Resumed from step 2 (its log history comes along), the run ends where the uninterrupted one did.
  CHECK(resumed.state.log_history.front()["step"] == 2);
  CHECK(resumed.state.global_step == 6);
  auto a = full.model->parameters();
  auto b = resumed.model->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));
}

TEST_CASE("resuming a finished run performs no step, and changed intervals are used, with a warning") {
  TempDir dir("finished");
  auto args = checkpointing_args(dir.str());
  tt::Trainer first(Mlp(), args, Blobs(16, 1));
  first.train();
  auto recorder = std::make_shared<Recorder>();
  tt::Trainer<Mlp, Blobs> again(Mlp(), args, Blobs(16, 1), std::nullopt, {}, {recorder});
  auto result = again.train(true);
  CHECK(result.global_step == 6);
  CHECK(std::count(recorder->events.begin(), recorder->events.end(), "step_begin 6") == 0);

  args.logging_steps = 1;
  args.max_steps = 8;
  tt_test::WarningCapture warnings;
  tt::Trainer longer(Mlp(), args, Blobs(16, 1));
  longer.train(std::string((dir / "checkpoint-6").string()));
  CHECK(warnings.contains("logging_steps 2 -> 1"));
  CHECK(longer.state.logging_steps == 1);
  CHECK(longer.state.global_step == 8);
  CHECK(longer.state.log_history[longer.state.log_history.size() - 2]["step"] == 8);
}

TEST_CASE("save_strategy best saves on improvement and records best_global_step, and the best model is reloaded") {
  TempDir dir("best");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.max_steps = 6;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 1;
  args.logging_steps = 1;
  args.save_strategy = tt::SaveStrategy::best;
  args.metric_for_best_model = "loss";
  args.load_best_model_at_end = true;
  args.learning_rate = 0.05;
  tt::Trainer trainer(Mlp(), args, Blobs(16, 1), Blobs(8, 2));
  trainer.train();
  REQUIRE(trainer.state.best_global_step.has_value());
  REQUIRE(trainer.state.best_model_checkpoint.has_value());
  CHECK(*trainer.state.best_model_checkpoint ==
        (dir.path() / ("checkpoint-" + std::to_string(*trainer.state.best_global_step))).string());
  // Every checkpoint is an improvement over the ones before it.
  double previous = INFINITY;
  for (const auto& folder : tt::checkpoint::sorted_checkpoints(dir.path())) {
    auto state = tt::TrainerState::load_from_json((folder / "trainer_state.json").string());
    CHECK(*state.best_metric < previous);
    previous = *state.best_metric;
  }
  // The model at the end is the best checkpoint's.
  Mlp best;
  torch::load(best, (std::filesystem::path(*trainer.state.best_model_checkpoint) / "model.pt").string());
  CHECK(torch::equal(best->fc1->weight, trainer.model->fc1->weight));
}

TEST_CASE("the loop reports exceptions to on_exception before they propagate") {
  TempDir dir("exception");
  struct Thrower : tt::TrainerCallback {
    void on_step_end(const Args&, const State& s, Control&, const Context&) override {
      if (s.global_step == 2) throw std::runtime_error("boom");
    }
  };
  struct Catcher : tt::TrainerCallback {
    std::string seen;
    void on_exception(const Args&, const State&, Control&, const Context& ctx) override {
      try {
        std::rethrow_exception(ctx.exception);
      } catch (const std::exception& e) {
        seen = e.what();
      }
    }
  };
  tt::Trainer trainer(Mlp(), quiet_args(dir.str()), Blobs(16, 1));
  trainer.add_callback<Thrower>();
  auto catcher = trainer.add_callback<Catcher>();
  CHECK_THROWS_WITH(trainer.train(), "boom");
  CHECK(catcher->seen == "boom");
}

namespace {

std::vector<double> logged_learning_rates(const std::vector<tt::LogEntry>& history) {
  std::vector<double> rates;
  for (const auto& e : history)
    if (e.contains("learning_rate")) rates.push_back(e["learning_rate"].get<double>());
  return rates;
}

std::vector<torch::Tensor> copy_of(const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> copies;
  for (const auto& p : parameters) copies.push_back(p.detach().clone());
  return copies;
}

// Four logged updates of batch 4 at learning rate 0.01.
tt::TrainingArguments four_logged_steps(const std::string& dir) {
  auto args = quiet_args(dir);
  args.per_device_train_batch_size = 4;
  args.max_steps = 4;
  args.logging_steps = 1;
  args.learning_rate = 1e-2;
  return args;
}

bool all_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("a second train() on the same Trainer runs a fresh schedule, and a scheduler the user assigned is kept") {
  TempDir dir("twice");
  tt::Trainer trainer(Mlp(), four_logged_steps(dir.str()), Blobs(16, 3));
  trainer.train();
  const auto first = logged_learning_rates(trainer.state.log_history);
  REQUIRE(first.size() == 4);
  for (std::size_t k = 0; k < 4; ++k) CHECK(first[k] == Approx(1e-2 * (4.0 - static_cast<double>(k)) / 4.0));
  const auto after_first = copy_of(trainer.model->parameters());

  trainer.train();  // the linear schedule of the first run is exhausted: the second has one of its own
  CHECK(logged_learning_rates(trainer.state.log_history) == first);
  CHECK_FALSE(all_equal(after_first, trainer.model->parameters()));

  // A scheduler dropped by hand is rebuilt from the optimizer's initial rate, not from the 0 it was left at.
  trainer.lr_scheduler.reset();
  trainer.train();
  CHECK(logged_learning_rates(trainer.state.log_history) == first);

  auto mine = std::shared_ptr<tt::LRScheduler>(
      tt::get_scheduler(tt::SchedulerType::constant, *trainer.optimizer, 0, 0));
  trainer.lr_scheduler = mine;
  trainer.train();
  CHECK(trainer.lr_scheduler == mine);
  trainer.train();
  CHECK(trainer.lr_scheduler == mine);
}

TEST_CASE("a stop flag left by an earlier train() does not stop a resumed run") {
  TempDir dir("stale_stop");
  auto args = checkpointing_args(dir.str());
  args.restore_callback_states_from_checkpoint = GENERATE(false, true);
  tt::Trainer trainer(Mlp(), args, Blobs(16, 1));
  trainer.train();
  REQUIRE(trainer.control.should_training_stop);  // set at the end of that run
  const auto result = trainer.train(std::string((dir / "checkpoint-2").string()));
  CHECK(result.global_step == 6);

  // A checkpoint written when a callback stopped the run stays stopped when its callback states are restored.
  TempDir stopped_dir("stopped");
  auto stopped_args = checkpointing_args(stopped_dir.str());
  stopped_args.restore_callback_states_from_checkpoint = args.restore_callback_states_from_checkpoint;
  auto recorder = std::make_shared<Recorder>();
  recorder->stop_at = 4;
  tt::Trainer<Mlp, Blobs> stopping(Mlp(), stopped_args, Blobs(16, 1), std::nullopt, {}, {recorder});
  REQUIRE(stopping.train().global_step == 4);
  tt::Trainer resumed(Mlp(), stopped_args, Blobs(16, 1));
  CHECK(resumed.train(std::string((stopped_dir / "checkpoint-4").string())).global_step ==
        (stopped_args.restore_callback_states_from_checkpoint ? 4 : 6));
}

TEST_CASE("gradients are cleared before the first step, and clipping and clearing cover every model parameter") {
  TempDir dir("zero_grad");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.max_steps = 3;
  args.logging_steps = 1;
  args.max_grad_norm = 1e9;  // never clips, so the logged norm is the plain total norm

  torch::manual_seed(3);
  Mlp clean_model;
  torch::manual_seed(3);
  Mlp stale_model;
  for (auto& p : stale_model->parameters()) p.mutable_grad() = torch::full_like(p, -1000.0);
  tt::Trainer clean(clean_model, args, Blobs(12, 3));
  clean.train();
  tt::Trainer stale(stale_model, args, Blobs(12, 3));
  stale.train();
  CHECK(all_equal(clean.model->parameters(), stale.model->parameters()));

  // A user optimizer over fc2 alone: grad_norm is the norm of every parameter's gradient, as HF clips
  // model.parameters(), and fc1's gradients do not pile up from step to step.
  struct Probe : tt::TrainerCallback {
    std::vector<double> norms;
    bool clear_at_step_begin = true;
    void on_step_begin(const Args&, const State&, Control&, const Context& ctx) override {
      for (const auto& p : ctx.model->parameters())
        if (p.grad().defined() && p.grad().abs().sum().item<double>() != 0) clear_at_step_begin = false;
    }
    void on_pre_optimizer_step(const Args&, const State&, Control&, const Context& ctx) override {
      double sq = 0;
      for (const auto& p : ctx.model->parameters()) sq += p.grad().pow(2).sum().item<double>();
      norms.push_back(std::sqrt(sq));
    }
  };
  tt::Trainer subset(Mlp(), args, Blobs(12, 3));
  subset.optimizer = std::make_shared<torch::optim::SGD>(subset.model->fc2->parameters(), torch::optim::SGDOptions(0.1));
  auto probe = subset.add_callback<Probe>();
  subset.train();
  CHECK(probe->clear_at_step_begin);
  REQUIRE(probe->norms.size() == 3);
  for (std::size_t i = 0; i < 3; ++i)
    CHECK(subset.state.log_history[i]["grad_norm"].get<double>() == Approx(probe->norms[i]).epsilon(1e-5));
}

TEST_CASE("eval_loss weighs a partial last batch by its own rows when the model returns only a loss") {
  struct LossOnlyImpl : torch::nn::Module {
    torch::nn::Linear fc{4, 2};
    LossOnlyImpl() { register_module("fc", fc); }
    tt::ModelOutput forward(const torch::data::Example<>& batch) {
      return {{"loss", torch::nn::functional::cross_entropy(fc(batch.data), batch.target)}};
    }
  };
  TORCH_MODULE(LossOnly);
  TempDir dir("eval_rows");
  auto args = quiet_args(dir.str());
  args.per_device_eval_batch_size = 8;
  Blobs data(10, 5);
  tt::Trainer trainer(LossOnly(), args, Blobs(8, 1), data);
  const double logged = trainer.evaluate()["eval_loss"].get<double>();

  torch::NoGradGuard no_grad;
  auto& fc = trainer.model->fc;
  const auto mean_loss = [&](int64_t from, int64_t to) {
    return torch::nn::functional::cross_entropy(fc(data.x.slice(0, from, to)), data.y.slice(0, from, to))
        .item<double>();
  };
  CHECK(logged == Approx((8 * mean_loss(0, 8) + 2 * mean_loss(8, 10)) / 10).epsilon(1e-6));
  CHECK(logged == Approx(mean_loss(0, 10)).epsilon(1e-5));  // the mean over the examples
}

TEST_CASE("the epoch is 0 from the start: in on_train_begin and in the eval_on_start log") {
  TempDir dir("epoch0");
  struct EpochAtBegin : tt::TrainerCallback {
    std::optional<double> seen;
    void on_train_begin(const Args&, const State& s, Control&, const Context&) override { seen = s.epoch; }
  };
  auto args = quiet_args(dir.str());
  args.max_steps = 2;
  args.eval_on_start = true;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 10;
  tt::Trainer trainer(Mlp(), args, Blobs(8, 1), Blobs(8, 2));
  auto probe = trainer.add_callback<EpochAtBegin>();
  trainer.train();
  REQUIRE(probe->seen.has_value());
  CHECK(*probe->seen == 0.0);
  const auto& first = trainer.state.log_history.front();
  REQUIRE(first.contains("eval_loss"));
  CHECK(first["epoch"] == 0.0);
  CHECK(tt::TrainerState().to_json()["epoch"] == 0.0);
}

TEST_CASE("training without a DefaultFlowCallback says that nothing will be logged, evaluated or saved") {
  TempDir dir("no_flow");
  auto args = quiet_args(dir.str());
  args.max_steps = 1;
  tt::Trainer trainer(Mlp(), args, Blobs(8, 1));
  {
    tt_test::WarningCapture warnings;
    trainer.train();
    CHECK_FALSE(warnings.contains("DefaultFlowCallback"));
  }
  trainer.remove_callback<tt::DefaultFlowCallback>();
  tt_test::WarningCapture warnings;
  trainer.train();
  CHECK(warnings.contains("will not work properly if you don't have a DefaultFlowCallback"));
  CHECK(warnings.contains("PrinterCallback"));
}

TEST_CASE("HF v5.3 arguments: grad_norm logged without clipping, warmup_steps as a ratio, warmup_ratio deprecated") {
  TempDir dir("v53");
  auto args = four_logged_steps(dir.str());
  args.max_grad_norm = 0;
  args.warmup_steps = 0.5;  // half of the 4 steps
  tt::Trainer trainer(Mlp(), args, Blobs(16, 3));
  {
    tt_test::WarningCapture warnings;
    trainer.train();
    CHECK_FALSE(warnings.contains("deprecated"));
  }
  CHECK(logged_learning_rates(trainer.state.log_history) == std::vector<double>{0.0, 5e-3, 1e-2, 5e-3});
  for (std::size_t i = 0; i < 4; ++i) CHECK(trainer.state.log_history[i]["grad_norm"].get<double>() > 0);

  trainer.args.warmup_steps = 0;
  trainer.args.warmup_ratio = 0.5;
  tt_test::WarningCapture warnings;
  trainer.train();
  CHECK(warnings.contains("warmup_ratio is deprecated"));
  CHECK(logged_learning_rates(trainer.state.log_history) == std::vector<double>{0.0, 5e-3, 1e-2, 5e-3});
}

TEST_CASE("plan_run: epochs, updates and steps from the arguments and the loader, as HF derives them") {
  tt::TrainingArguments args;
  args.per_device_train_batch_size = 4;
  args.gradient_accumulation_steps = 3;
  args.num_train_epochs = 2.5;
  // 10 batches per epoch in windows of 3: 4 updates, the last window a single batch.
  auto plan = tt::plan_run(args, 10, 40);
  CHECK(plan.batches_per_epoch == 10);
  CHECK(plan.updates_per_epoch == 4);
  CHECK(plan.max_steps == 10);  // ceil(2.5 * 4)
  CHECK(plan.num_train_epochs == 3);

  args.max_steps = 9;  // max_steps wins: 3 epochs of 4 updates cover it
  plan = tt::plan_run(args, 10, 40);
  CHECK(plan.max_steps == 9);
  CHECK(plan.num_train_epochs == 3);

  // Step 6 lies in the second epoch, after its 2 updates, so 6 of its batches are skipped.
  const auto point = plan.resume_point(6, /*ignore_data_skip=*/false, args.gradient_accumulation_steps);
  CHECK(point.epochs_trained == 1);
  CHECK(point.batches_to_skip == 6);
  CHECK(plan.resume_point(6, /*ignore_data_skip=*/true, 3).batches_to_skip == 0);

  args.gradient_accumulation_steps = 20;  // more than an epoch: one update per epoch
  CHECK(tt::plan_run(args, 10, 40).updates_per_epoch == 1);
  args.dataloader_drop_last = true;
  CHECK_THROWS_WITH(tt::plan_run(args, 0, 3),
                    Catch::Contains("yields no batch (3 examples, per_device_train_batch_size 4, dataloader_drop_last)"));
}

TEST_CASE("LoopState: loop_state.json round trip, older files and malformed values") {
  tt::LoopState state;
  state.interval_loss = 1.25;
  state.total_loss = 7.5;
  state.last_logged_step = 12;
  state.learning_rate = 5e-5;
  state.grad_norm = 0.75;
  state.epoch_end_pending = true;
  const auto json = state.to_json();
  CHECK_FALSE(json.contains("world_size"));  // a single process's file has no world_size, as before
  const auto back = tt::LoopState::from_json(json);
  CHECK(back.to_json() == json);
  CHECK(back.grad_norm == 0.75);
  state.world_size = 2;
  CHECK(tt::LoopState::from_json(state.to_json()).world_size == 2);

  // An older checkpoint holds only the loss sums: the rest comes from the defaults given.
  tt::LoopState defaults;
  defaults.last_logged_step = 40;
  const auto old = tt::LoopState::from_json({{"interval_loss", 0.5}, {"total_loss", 2.0}}, defaults);
  CHECK(old.last_logged_step == 40);
  CHECK_FALSE(old.grad_norm.has_value());
  CHECK(tt::LoopState::from_json(nullptr, defaults).last_logged_step == 40);

  CHECK_THROWS_AS(tt::LoopState::from_json(nlohmann::json::array()), tt::FileFormatError);
  CHECK_THROWS_WITH(tt::LoopState::from_json({{"total_loss", 1.0}}), Catch::Contains("'interval_loss' is missing"));
  CHECK_THROWS_WITH(tt::LoopState::from_json({{"interval_loss", 0.0}, {"total_loss", 0.0}, {"last_logged_step", 1.5}}),
                    Catch::Contains("'last_logged_step' must be an integer, got 1.5"));
  CHECK_THROWS_WITH(tt::LoopState::from_json({{"interval_loss", 0.0}, {"total_loss", 0.0}, {"epoch_end_pending", 1}}),
                    Catch::Contains("'epoch_end_pending' must be true or false"));
  tt::LoopState preempted;
  preempted.preemption_steps = {4, 9};
  CHECK(preempted.to_json()["preemption_steps"] == nlohmann::json::array({4, 9}));
  CHECK(tt::LoopState::from_json(preempted.to_json()).preemption_steps == std::vector<std::int64_t>{4, 9});
  CHECK_FALSE(tt::LoopState().to_json().contains("preemption_steps"));  // an ordinary run's file is unchanged
  CHECK_THROWS_WITH(tt::LoopState::from_json({{"interval_loss", 0.0}, {"total_loss", 0.0}, {"preemption_steps", {1.5}}}),
                    Catch::Contains("'preemption_steps' must be a list of steps"));
}

TEST_CASE("train_samples_per_second and train_steps_per_second count what the run processed, not what it planned") {
  TempDir dir("rates");
  auto args = quiet_args(dir.str());
  args.per_device_train_batch_size = 4;
  args.gradient_accumulation_steps = 2;
  args.max_steps = 10;  // planned: 10 updates of 8 examples
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 3;
  // 22 examples: micro-batches of 4, 4, 4, 4, 4 and 2, so updates of 8, 8 and 6 examples per epoch.
  struct StopAtStep4 : tt::TrainerCallback {
    void on_step_end(const Args&, const State& state, Control& control, const Context&) override {
      if (state.global_step == 4) control.should_training_stop = true;
    }
  };
  auto processed = [](const tt::Metrics& m) {
    const double runtime = m.at("train_runtime").get<double>();
    return std::pair{m.at("train_samples_per_second").get<double>() / m.at("train_steps_per_second").get<double>(),
                     m.at("train_steps_per_second").get<double>() * runtime};
  };
  tt::Trainer stopped(Mlp(), args, Blobs(22, 4));
  stopped.add_callback<StopAtStep4>();
  const auto [samples_per_step, steps] = processed(stopped.train().metrics);
  CHECK(samples_per_step == Approx(30.0 / 4).epsilon(1e-3));  // 22 + 8 examples in 4 updates
  CHECK(steps == Approx(4).epsilon(0.05));

  // Resumed from checkpoint-3: updates 4 to 10 are 22 + 22 + 8 examples.
  tt::Trainer resumed(Mlp(), args, Blobs(22, 4));
  const auto [resumed_samples_per_step, resumed_steps] =
      processed(resumed.train(tt::ResumeFrom((dir / "checkpoint-3").string())).metrics);
  CHECK(resumed_samples_per_step == Approx(52.0 / 7).epsilon(1e-3));
  CHECK(resumed_steps == Approx(7).epsilon(0.05));
}

TEST_CASE("train() refuses an output_dir it cannot write in before anything runs, naming it") {
  TempDir dir("outdir");
  tt_test::write_file(dir / "a-file", "not a folder");
  auto args = quiet_args((dir / "a-file").string());
  tt::Trainer trainer(Mlp(), args, Blobs(8, 4));
  auto recorder = trainer.add_callback<Recorder>();
  CHECK_THROWS_WITH(trainer.train(), Catch::Contains("output_dir '" + (dir / "a-file").string() + "': '" +
                                                     (dir / "a-file").string() + "' is a file, not a folder"));
  trainer.args.output_dir = (dir / "a-file" / "run").string();  // a folder to create below a file
  CHECK_THROWS_WITH(trainer.train(), Catch::Contains("'" + (dir / "a-file").string() + "' is a file"));
  CHECK(recorder->events.empty());
  trainer.args.output_dir = (dir / "new" / "run").string();  // created when the run first writes
  CHECK_NOTHROW(trainer.train());
}

TEST_CASE("a resume from a folder that does not exist says so") {
  TempDir dir("noresume");
  tt::Trainer trainer(Mlp(), quiet_args(dir.str()), Blobs(8, 4));
  const auto missing = (dir / "checkpoint-7").string();
  CHECK_THROWS_WITH(trainer.train(tt::ResumeFrom(missing)),
                    Catch::Contains("'" + missing + "' does not exist; pass a checkpoint folder"));
  tt_test::write_file(dir / "a-file", "");
  CHECK_THROWS_WITH(trainer.train(tt::ResumeFrom((dir / "a-file").string())),
                    Catch::Contains("is a file, not a checkpoint folder"));
}

TEST_CASE("the library's messages go to set_message_handler, warnings to a c10 handler the program installed") {
  TempDir dir("messages");
  auto args = quiet_args(dir.str());
  args.max_steps = 4;
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 2;
  tt::Trainer(Mlp(), args, Blobs(16, 4)).train();

  std::vector<std::pair<tt::MessageLevel, std::string>> messages;
  const auto previous = tt::set_message_handler(
      [&](tt::MessageLevel level, const std::string& text) { messages.emplace_back(level, text); });
  CHECK_FALSE(previous);  // the default
  tt::Trainer resumed(Mlp(), args, Blobs(16, 4));
  resumed.add_callback<tt::PrinterCallback>();  // a second one (disable_tqdm added the first): a warning
  resumed.train(tt::ResumeFrom((dir / "checkpoint-2").string()));
  for (const auto& [level, text] : messages) UNSCOPED_INFO(text);
  REQUIRE(messages.size() == 2);
  CHECK(messages[0].first == tt::MessageLevel::warning);
  CHECK(messages[0].second.rfind("You are adding a PrinterCallback", 0) == 0);
  CHECK(messages[1].first == tt::MessageLevel::info);
  CHECK(messages[1].second == "Resuming from checkpoint-2 (global step 2, epoch 1.0)");

  // With the default restored, a warning reaches the c10::WarningHandler the program installed.
  tt::set_message_handler(nullptr);
  tt_test::WarningCapture capture;
  tt::Trainer again(Mlp(), args, Blobs(16, 4));
  again.add_callback<tt::PrinterCallback>();
  CHECK(capture.contains("You are adding a PrinterCallback"));
  CHECK(messages.size() == 2);
}

TEST_CASE("a checkpoint written for a preemption never becomes the best model's, so the resume ends as the run would") {
  // SIGTERM during the first evaluation, whose loss is the best so far: the preemption saves checkpoint-4.
  struct TermAtFirstEvaluation : tt::TrainerCallback {
    void on_evaluate(const Args&, const State& state, Control&, const Context&) override {
      if (state.global_step == 4) std::raise(SIGTERM);
    }
  };
  tt_test::DefaultSigterm default_sigterm;
  for (const auto save : {tt::SaveStrategy::no, tt::SaveStrategy::steps}) {
    CAPTURE(tt::to_string(save));
    auto args_in = [&](const TempDir& dir) {
      auto args = quiet_args(dir.str());
      args.per_device_train_batch_size = 4;  // 16 examples: 4 steps per epoch, 12 in all
      args.num_train_epochs = 3;
      args.eval_strategy = tt::IntervalStrategy::epoch;
      args.metric_for_best_model = "loss";
      args.save_strategy = save;
      args.save_steps = 6;  // never at an evaluation's step but the last
      return args;
    };
    TempDir reference_dir("best-ref"), preempted_dir("best-preempted");
    tt::Trainer reference(Mlp(), args_in(reference_dir), Blobs(16, 4), Blobs(8, 5));
    reference.train();

    tt::Trainer preempted(Mlp(), args_in(preempted_dir), Blobs(16, 4), Blobs(8, 5));
    preempted.add_callback<TermAtFirstEvaluation>();
    REQUIRE(preempted.train().preempted_by == SIGTERM);
    REQUIRE(std::filesystem::is_directory(preempted_dir / "checkpoint-4"));
    CHECK_FALSE(preempted.state.best_model_checkpoint);
    tt::Trainer resumed(Mlp(), args_in(preempted_dir), Blobs(16, 4), Blobs(8, 5));
    resumed.train(tt::ResumeFrom(true));

    auto folder = [](const std::optional<std::string>& path) {
      return path ? std::filesystem::path(*path).filename().string() : std::string("none");
    };
    CHECK(resumed.state.best_global_step == reference.state.best_global_step);
    CHECK(folder(resumed.state.best_model_checkpoint) == folder(reference.state.best_model_checkpoint));
  }
}

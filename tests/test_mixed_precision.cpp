// Mixed precision: autocast around the forward (bf16 on the CPU), the loss scaler (run on the CPU here, as on
// any device), its checkpointed state, and the arguments' checks.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <torchtrain/torchtrain.hpp>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
using tt_test::Blobs;
using tt_test::Mlp;
using tt_test::TempDir;

namespace {

// Records the dtype of its hidden activation, as a forward hook would in Python.
struct ProbedImpl : torch::nn::Module {
  torch::nn::Linear fc1{4, 16}, fc2{16, 2};
  std::vector<c10::ScalarType> hidden_dtypes;
  ProbedImpl() {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
  }
  torch::Tensor forward(torch::Tensor x) {
    auto hidden = torch::matmul(torch::relu(fc1(x)), torch::eye(16));
    hidden_dtypes.push_back(hidden.scalar_type());
    return fc2(hidden);
  }
};
TORCH_MODULE(Probed);

// A Trainer that keeps the dtypes of the losses and predictions compute_loss returns.
struct DtypeTrainer : tt::Trainer<Probed, Blobs> {
  using Trainer::Trainer;
  std::vector<c10::ScalarType> loss_dtypes, prediction_dtypes;
  tt::LossOutput compute_loss(Probed& m, const Batch& batch, const torch::Tensor& num_items_in_batch = {},
                              const std::vector<std::string>& ignore_keys = {}) override {
    auto out = Trainer::compute_loss(m, batch, num_items_in_batch, ignore_keys);
    loss_dtypes.push_back(out.loss.scalar_type());
    prediction_dtypes.push_back(out.predictions.scalar_type());
    return out;
  }
};

tt::TrainingArguments quiet_args(const std::string& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir;
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.save_strategy = tt::SaveStrategy::no;
  a.per_device_train_batch_size = 8;
  a.learning_rate = 1e-2;
  return a;
}

bool all_are(const std::vector<c10::ScalarType>& dtypes, c10::ScalarType expected) {
  if (dtypes.empty()) return false;
  for (auto d : dtypes)
    if (d != expected) return false;
  return true;
}

std::vector<torch::Tensor> weights_of(torch::nn::Module& m) {
  std::vector<torch::Tensor> copies;
  for (const auto& p : m.parameters()) copies.push_back(p.detach().clone());
  return copies;
}

bool same_weights(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

// Multiplies the loss by infinity while global_step is one of `steps`: the gradients of that update are not finite.
std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> infinite_at(const tt::TrainerState& state,
                                                                                     std::vector<std::int64_t> steps) {
  return [&state, steps](const torch::Tensor& logits, const torch::Tensor& labels) {
    auto loss = torch::nn::functional::cross_entropy(logits, labels);
    const bool inject = std::find(steps.begin(), steps.end(), state.global_step) != steps.end();
    return inject ? loss * std::numeric_limits<float>::infinity() : loss;
  };
}

}  // namespace

TEST_CASE("AutocastGuard lowers linear and matmul to bfloat16 on the CPU, nests, and restores the state") {
  torch::nn::Linear linear(4, 3);
  const auto x = torch::randn({2, 4});
  CHECK(linear(x).scalar_type() == torch::kFloat);
  {
    tt::AutocastGuard outer(torch::kCPU, torch::kBFloat16);
    CHECK(outer.active());
    CHECK(linear(x).scalar_type() == torch::kBFloat16);
    CHECK(torch::matmul(x, x.t()).scalar_type() == torch::kBFloat16);
    // Losses are on autocast's float32 list.
    CHECK(torch::nn::functional::cross_entropy(linear(x), torch::tensor({0, 1})).scalar_type() == torch::kFloat);
    {
      tt::AutocastGuard inner(torch::kCPU, torch::kBFloat16);
      CHECK(linear(x).scalar_type() == torch::kBFloat16);
    }
    CHECK(at::autocast::is_cpu_enabled());  // the inner guard restored the outer state
    CHECK(linear(x).scalar_type() == torch::kBFloat16);
  }
  CHECK_FALSE(at::autocast::is_cpu_enabled());
  CHECK(linear(x).scalar_type() == torch::kFloat);
  tt::AutocastGuard nothing(torch::kCPU, std::nullopt);
  CHECK_FALSE(nothing.active());
  CHECK(linear(x).scalar_type() == torch::kFloat);
}

TEST_CASE("bf16: the forward runs under autocast in training and evaluation; losses and outputs are float32") {
  for (const bool bf16 : {false, true}) {
    TempDir dir("bf16-probe");
    auto args = quiet_args(dir.str());
    args.bf16 = bf16;
    args.max_steps = 3;
    DtypeTrainer trainer(Probed(), args, Blobs(32, 1), Blobs(16, 2));
    trainer.compute_metrics = tt::metrics::accuracy;
    trainer.train();
    INFO("bf16 " << bf16);
    const auto expected = bf16 ? torch::kBFloat16 : torch::kFloat;
    CHECK(all_are(trainer.model->hidden_dtypes, expected));
    CHECK(all_are(trainer.loss_dtypes, torch::kFloat));
    CHECK(all_are(trainer.prediction_dtypes, torch::kFloat));
    trainer.model->hidden_dtypes.clear();
    const auto metrics = trainer.evaluate();
    CHECK(all_are(trainer.model->hidden_dtypes, expected));
    CHECK(metrics.contains("eval_accuracy"));
    // The weights and their gradients stay float32: autocast casts copies.
    for (const auto& p : trainer.model->parameters()) CHECK(p.scalar_type() == torch::kFloat);
    CHECK_FALSE(at::autocast::is_cpu_enabled());
  }
}

TEST_CASE("bf16_full_eval evaluates outside train() with the model cast to bfloat16, and not during train()") {
  TempDir dir("bf16-full");
  auto args = quiet_args(dir.str());
  args.bf16_full_eval = true;
  args.max_steps = 2;
  args.eval_strategy = tt::IntervalStrategy::steps;
  args.eval_steps = 2;
  DtypeTrainer trainer(Probed(), args, Blobs(32, 1), Blobs(16, 2));
  trainer.train();
  CHECK(all_are(trainer.model->hidden_dtypes, torch::kFloat));  // HF casts only outside train()
  trainer.model->hidden_dtypes.clear();
  const auto metrics = trainer.evaluate();
  CHECK(all_are(trainer.model->hidden_dtypes, torch::kBFloat16));
  CHECK(metrics.at("eval_loss").get<double>() > 0);
  for (const auto& p : trainer.model->parameters()) CHECK(p.scalar_type() == torch::kBFloat16);  // as HF, it stays so
}

TEST_CASE("a bf16 run of train_classifier reaches the fp32 run's accuracy within 0.02") {
  double accuracy[2] = {0, 0};
  for (const bool bf16 : {false, true}) {
    TempDir dir("bf16-classifier");
    const auto r = tt_test::run_command(std::string(TORCHTRAIN_TRAIN_CLASSIFIER) + " --output_dir " + dir.str() +
                                        " --num_train_epochs 2 --save_strategy no --report_to none --disable_tqdm true" +
                                        (bf16 ? " --bf16 true" : ""));
    INFO(r.output);
    REQUIRE(r.status == 0);
    accuracy[bf16] = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"))["eval_accuracy"].get<double>();
  }
  INFO("fp32 " << accuracy[0] << ", bf16 " << accuracy[1]);
  CHECK(accuracy[0] > 0.9);
  CHECK(std::abs(accuracy[1] - accuracy[0]) <= 0.02);
}

TEST_CASE("GradScaler: PyTorch's defaults, growth after growth_interval finite steps, backoff after a skip") {
  tt::GradScaler scaler;
  CHECK(scaler.get_scale() == 65536.0);
  const auto s = scaler.state();
  CHECK(s.growth_factor == 2.0);
  CHECK(s.backoff_factor == 0.5);
  CHECK(s.growth_interval == 2000);

  tt::GradScaler fast({8.0, 2.0, 0.5, 3, 0});
  auto w = torch::ones({2}, torch::requires_grad());
  const auto step = [&](double value) {
    w.mutable_grad() = torch::full({2}, value);
    fast.unscale_and_clip({w}, 0);
    fast.update();
  };
  step(1);
  step(1);
  CHECK(fast.get_scale() == 8.0);
  step(1);
  CHECK(fast.get_scale() == 16.0);  // three finite steps in a row
  CHECK(fast.state().growth_tracker == 0);
  step(1);
  step(std::numeric_limits<double>::quiet_NaN());
  CHECK(fast.get_scale() == 8.0);
  CHECK(fast.state().growth_tracker == 0);
  step(1);
  CHECK(fast.state().growth_tracker == 1);

  // backward() gives the gradients of scale(loss), also for a loss of shape [1].
  auto v = torch::tensor({1.0f, 3.0f}, torch::requires_grad());
  tt::GradScaler(tt::GradScaler::State{4.0}).backward((v * v).sum().reshape({1}));
  CHECK(torch::equal(v.grad(), torch::tensor({8.0f, 24.0f})));

  for (const tt::GradScaler::State bad : {tt::GradScaler::State{0.0}, tt::GradScaler::State{1e39},
                                          tt::GradScaler::State{1.0, 1.0}, tt::GradScaler::State{1.0, 2.0, 1.0},
                                          tt::GradScaler::State{1.0, 2.0, 0.5, 0}, tt::GradScaler::State{1.0, 2.0, 0.5, 3, 3}})
    CHECK_THROWS_AS(tt::GradScaler(bad), tt::ArgumentError);
}

TEST_CASE("with a loss scaler the run ends with the unscaled run's weights, clipped or not") {
  for (const double max_grad_norm : {0.0, 0.05}) {
    std::vector<torch::Tensor> weights[2];
    for (const bool scaled : {false, true}) {
      TempDir dir("scaled");
      auto args = quiet_args(dir.str());
      args.max_grad_norm = max_grad_norm;
      args.gradient_accumulation_steps = 2;
      args.num_train_epochs = 2;
      args.logging_steps = 1;
      torch::manual_seed(3);  // the same initial weights for both
      tt::Trainer trainer(Mlp(), args, Blobs(40, 1));
      if (scaled) trainer.grad_scaler = std::make_shared<tt::GradScaler>();
      trainer.train();
      weights[scaled] = weights_of(*trainer.model);
      if (scaled) CHECK(trainer.grad_scaler->get_scale() == 65536.0);  // 6 steps: below growth_interval
    }
    INFO("max_grad_norm " << max_grad_norm);
    CHECK(same_weights(weights[0], weights[1]));
  }
}

TEST_CASE("non-finite gradients skip the step: the scale halves, the weights and the schedule stay, HF's logs") {
  TempDir dir("skip");
  auto args = quiet_args(dir.str());
  args.max_steps = 5;
  args.logging_steps = 1;
  args.save_strategy = tt::SaveStrategy::steps;
  args.save_steps = 3;
  tt::Trainer trainer(Mlp(), args, Blobs(64, 1));
  trainer.grad_scaler = std::make_shared<tt::GradScaler>();
  trainer.criterion = infinite_at(trainer.state, {2});  // the third update

  struct Probe : tt::TrainerCallback {
    std::vector<std::vector<torch::Tensor>> before, after;
    std::vector<double> scales;
    void on_pre_optimizer_step(const Args&, const State&, Control&, const Context& ctx) override {
      before.push_back(weights_of(*ctx.model));
      scales.push_back(ctx.grad_scaler->get_scale());
    }
    void on_optimizer_step(const Args&, const State&, Control&, const Context& ctx) override {
      after.push_back(weights_of(*ctx.model));
    }
  };
  auto probe = trainer.add_callback<Probe>();
  trainer.train();

  REQUIRE(probe->after.size() == 5);
  for (std::size_t k = 0; k < 5; ++k) {
    INFO("update " << k);
    CHECK(same_weights(probe->before[k], probe->after[k]) == (k == 2));
  }
  // The skipped update still sees its own scale; the backoff is part of its step.
  CHECK(probe->scales == std::vector<double>{65536.0, 65536.0, 65536.0, 32768.0, 32768.0});
  CHECK(trainer.grad_scaler->get_scale() == 32768.0);
  std::vector<double> rates, norms;
  for (const auto& e : trainer.state.log_history)
    if (e.contains("loss")) {
      rates.push_back(e["learning_rate"].get<double>());
      norms.push_back(e["grad_norm"].get<double>());
    }
  REQUIRE(rates.size() == 5);
  // Linear decay over 5 steps, as HF: the skipped update does not advance the schedule, so the fourth update
  // uses the third one's rate and the schedule stays a step behind global_step.
  CHECK(rates[2] == Approx(1e-2 * 3 / 5));
  CHECK(rates[3] == rates[2]);
  CHECK(rates[4] == Approx(1e-2 * 2 / 5));
  CHECK_FALSE(std::isfinite(norms[2]));  // HF logs the norm of the skipped update: inf or NaN
  CHECK(std::isfinite(norms[3]));
  // The checkpoint after the skip keeps the scaler's state and the non-finite norm of the log.
  const auto loop = nlohmann::json::parse(tt_test::read_file(dir / "checkpoint-3" / "loop_state.json"));
  CHECK(loop["grad_scaler"]["scale"] == 32768.0);
  CHECK(loop["grad_scaler"]["_growth_tracker"] == 0);
  CHECK(loop["grad_norm"].is_string());
  const auto text = tt_test::read_file(dir / "checkpoint-3" / "trainer_state.json");  // Python's JSON, as HF's
  CHECK((text.find("\"grad_norm\": NaN") != std::string::npos || text.find("\"grad_norm\": Infinity") != std::string::npos));
}

TEST_CASE("a resumed run with a loss scaler continues the scaler's state: same weights, same scale as an uninterrupted run") {
  auto run = [](const std::string& dir, bool resume) {
    auto args = quiet_args(dir);
    args.max_steps = 12;
    args.logging_steps = 2;
    args.save_strategy = tt::SaveStrategy::steps;
    args.save_steps = 5;
    tt::Trainer trainer(Mlp(), args, Blobs(64, 1));
    trainer.grad_scaler = std::make_shared<tt::GradScaler>(tt::GradScaler::State{1024.0, 2.0, 0.5, 2, 0});
    trainer.criterion = infinite_at(trainer.state, {3, 8});
    if (resume) {
      trainer.args.max_steps = 12;
      trainer.train(tt::ResumeFrom(dir + "/checkpoint-5"));
    } else {
      trainer.train();
    }
    return std::make_pair(weights_of(*trainer.model), trainer.grad_scaler->state());
  };
  TempDir dir("scaler-resume");
  const auto [weights, scaler] = run(dir.str(), false);
  const auto [resumed_weights, resumed_scaler] = run(dir.str(), true);
  CHECK(same_weights(weights, resumed_weights));
  CHECK(resumed_scaler.scale == scaler.scale);
  CHECK(resumed_scaler.growth_tracker == scaler.growth_tracker);
  CHECK(scaler.scale != 1024.0);
}

TEST_CASE("mixed precision arguments: HF's errors for bad combinations and devices, a round trip through JSON") {
  TempDir dir("precision-args");
  auto args = quiet_args(dir.str());
  args.fp16 = true;
  args.bf16 = true;
  CHECK_THROWS_WITH(args.validate(), "At most one of fp16 and bf16 can be True, but not both");
  args = quiet_args(dir.str());
  args.fp16_full_eval = args.bf16_full_eval = true;
  CHECK_THROWS_WITH(args.validate(), "At most one of fp16 and bf16 can be True for full eval, but not both");

  if (!torch::cuda::is_available()) {
    args = quiet_args(dir.str());
    args.fp16 = true;
    CHECK_THROWS_WITH(tt::Trainer(Mlp(), args, Blobs(8, 1)), "fp16 mixed precision requires a GPU (not 'cpu').");
    args.fp16 = false;
    args.tf32 = true;
    CHECK_THROWS_WITH(tt::Trainer(Mlp(), args, Blobs(8, 1)),
                      "--tf32 requires Ampere or a newer GPU arch, cuda>=11 and torch>=1.7");
    args.tf32 = false;  // nothing to turn off
    CHECK_NOTHROW(tt::Trainer(Mlp(), args, Blobs(8, 1)));
    // Set after construction, it is caught at train().
    tt::Trainer trainer(Mlp(), quiet_args(dir.str()), Blobs(8, 1));
    trainer.args.fp16 = true;
    CHECK_THROWS_AS(trainer.train(), tt::ArgumentError);
  }

  const char* argv[] = {"prog", "--output_dir", "x", "--bf16", "true", "--bf16_full_eval", "true", "--tf32", "false"};
  const auto parsed = tt::TrainingArguments::parse(9, argv);
  CHECK(parsed.bf16);
  CHECK(parsed.bf16_full_eval);
  CHECK(parsed.tf32 == false);
  const auto json = parsed.to_json();
  CHECK(json["fp16"] == false);
  CHECK(json["tf32"] == false);
  CHECK(tt::TrainingArguments().to_json()["tf32"].is_null());
  const auto back = tt::TrainingArguments::from_json(json);
  CHECK(back.bf16);
  CHECK(back.tf32 == false);
}

TEST_CASE("loop_state.json keeps the scaler and a non-finite grad_norm; malformed ones are rejected") {
  tt::LoopState loop;
  loop.grad_norm = std::numeric_limits<double>::infinity();
  loop.grad_scaler = tt::GradScaler::State{4096.0, 2.0, 0.5, 100, 7};
  const auto back = tt::LoopState::from_json(nlohmann::json::parse(loop.to_json().dump()));
  CHECK(*back.grad_norm == std::numeric_limits<double>::infinity());
  REQUIRE(back.grad_scaler);
  CHECK(back.grad_scaler->scale == 4096.0);
  CHECK(back.grad_scaler->growth_tracker == 7);
  CHECK(back.grad_scaler->growth_interval == 100);
  loop.grad_norm = std::numeric_limits<double>::quiet_NaN();
  CHECK(std::isnan(*tt::LoopState::from_json(nlohmann::json::parse(loop.to_json().dump())).grad_norm));

  auto j = loop.to_json();
  j["grad_norm"] = "big";
  CHECK_THROWS_AS(tt::LoopState::from_json(j), tt::FileFormatError);
  j = loop.to_json();
  j["grad_scaler"].erase("_growth_tracker");
  CHECK_THROWS_WITH(tt::LoopState::from_json(j), Catch::Contains("_growth_tracker"));
  j = loop.to_json();
  j["grad_scaler"]["scale"] = -1.0;
  CHECK_THROWS_WITH(tt::LoopState::from_json(j), Catch::Contains("grad_scaler") && Catch::Contains("scale"));
  CHECK_FALSE(tt::LoopState().to_json().contains("grad_scaler"));
}

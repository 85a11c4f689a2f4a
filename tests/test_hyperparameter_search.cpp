// Trainer::hyperparameter_search: samplers, objectives, pruning, results files and continuing a search.
#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include <signal.h>

#include <torchtrain/torchtrain.hpp>

#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
using json = nlohmann::json;
using tt_test::TempDir;

namespace {

// y = 2x + 1 with a little noise: a Linear(1, 1) learns it, faster with a larger learning rate.
struct Line : torch::data::datasets::Dataset<Line> {
  torch::Tensor x, y;
  Line(int64_t n, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    x = torch::randn({n, 1}, gen);
    y = 2 * x + 1 + 0.01 * torch::randn({n, 1}, gen);
  }
  torch::data::Example<> get(size_t i) override { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
  torch::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }
};

struct RegressorImpl : torch::nn::Module {
  torch::nn::Linear hidden{nullptr}, out{nullptr};
  explicit RegressorImpl(int64_t width = 0) {
    if (width > 0) hidden = register_module("hidden", torch::nn::Linear(1, width));
    out = register_module("out", torch::nn::Linear(width > 0 ? width : 1, 1));
  }
  torch::Tensor forward(torch::Tensor x) { return out(hidden ? torch::relu(hidden(x)) : x); }
};
TORCH_MODULE(Regressor);

using LineTrainer = tt::Trainer<Regressor, Line, Line>;

// 32 examples in batches of 8: 4 steps an epoch, evaluated every 2 steps.
tt::TrainingArguments search_args(const std::string& dir) {
  tt::TrainingArguments a;
  a.output_dir = dir;
  a.disable_tqdm = true;
  a.report_to = {"none"};
  a.save_strategy = tt::SaveStrategy::no;
  a.per_device_train_batch_size = 8;
  a.num_train_epochs = 2;
  a.eval_strategy = tt::IntervalStrategy::steps;
  a.eval_steps = 2;
  a.logging_steps = 2;
  return a;
}

std::unique_ptr<LineTrainer> make_trainer(const tt::TrainingArguments& args) {
  auto trainer = std::make_unique<LineTrainer>(Regressor(), args, Line(32, 1), Line(16, 2));
  trainer->model_init = [] { return Regressor(); };
  return trainer;
}

json read_json(const std::filesystem::path& p) { return json::parse(tt_test::read_file(p)); }

// Which trials trained, and from which step each started.
struct TrialLog : tt::TrainerCallback {
  std::vector<std::string> started;
  void on_train_begin(const Args& args, const State& state, Control&, const Context& ctx) override {
    started.push_back(state.trial_name.value_or("-") + "@" + std::to_string(state.global_step));
    CHECK(state.is_hyper_param_search);
    REQUIRE(ctx.trial != nullptr);
    CHECK(state.trial_name == ctx.trial->name());
    CHECK(state.trial_params == json(ctx.trial->hyperparameters()));
    CHECK(std::filesystem::path(args.output_dir).filename() == ctx.trial->name());
  }
};

// Runs `action` once, at a step of one trial: a crash or a signal in the middle of a search.
struct OnceAtStep : tt::TrainerCallback {
  std::size_t run_id;
  int64_t step;
  std::function<void()> action;
  bool armed = true;
  OnceAtStep(std::size_t run_id, int64_t step, std::function<void()> action)
      : run_id(run_id), step(step), action(std::move(action)) {}
  void on_step_end(const Args&, const State& state, Control&, const Context& ctx) override {
    if (armed && ctx.trial && ctx.trial->run_id() == run_id && state.global_step == step) {
      armed = false;
      action();
    }
  }
};

void crash() { throw std::runtime_error("simulated crash"); }
void terminate_this_process() { std::raise(SIGTERM); }

const tt::SearchSpace kLearningRates{{"learning_rate", tt::LogUniform{1e-4, 1e-1, /*grid_points=*/4}}};

}  // namespace

TEST_CASE("a grid search over the learning rate picks the best one, each trial as a plain training run", "[hp_search]") {
  TempDir dir("hp-grid");
  auto trainer = make_trainer(search_args(dir.str()));
  auto log = trainer->add_callback<TrialLog>();
  const auto best = trainer->hyperparameter_search(kLearningRates, 10, tt::Direction::minimize, tt::Sampler::grid());

  CHECK((log->started == std::vector<std::string>{"run-0@0", "run-1@0", "run-2@0", "run-3@0"}));  // 4 points, not 10
  const auto trials = best.run_summary["trials"];
  REQUIRE(trials.size() == 4);
  const std::vector<double> grid{1e-4, 1e-3, 1e-2, 1e-1};
  for (std::size_t k = 0; k < 4; ++k) CHECK(trials[k]["hyperparameters"]["learning_rate"].get<double>() == grid[k]);
  CHECK(best.run_id == "3");  // AdamW moves each weight by about lr per step: only 0.1 gets close in 8 steps
  CHECK(best.hyperparameters.at("learning_rate").get<double>() == 0.1);

  // Each trial's objective is the eval_loss of the same training run done by hand.
  for (std::size_t k = 0; k < 4; ++k) {
    auto args = search_args((dir / "by-hand").string());
    args.learning_rate = grid[k];
    auto plain = make_trainer(args);
    plain->train();
    const double eval_loss = plain->state.log_history[plain->state.log_history.size() - 2]["eval_loss"].get<double>();
    CHECK(trials[k]["objective"].get<double>() == eval_loss);
    CHECK(trials[k]["intermediate_objectives"].size() == 4);  // steps 2, 4, 6, 8
  }
  CHECK(best.objective == trials[3]["objective"].get<double>());
  for (std::size_t k = 0; k < 3; ++k) CHECK(trials[k]["objective"].get<double>() > best.objective);

  // The trainer's arguments are the search's again; each trial wrote its state into its own folder.
  CHECK(trainer->args.output_dir == dir.str());
  CHECK(trainer->args.learning_rate == 5e-5);
  for (std::size_t k = 0; k < 4; ++k) {
    const auto saved = read_json(dir / ("run-" + std::to_string(k)) / "trainer_state.json");
    CHECK(saved["is_hyper_param_search"] == true);
    CHECK(saved["trial_name"] == "run-" + std::to_string(k));
    CHECK(saved["trial_params"] == json{{"learning_rate", grid[k]}});
    CHECK(saved["global_step"] == 8);
  }
}

TEST_CASE("random search draws the same trials from the same seed and others from another", "[hp_search]") {
  const tt::SearchSpace space{{"learning_rate", tt::LogUniform{1e-5, 1e-1}},
                              {"weight_decay", tt::FloatRange{0.0, 0.3}},
                              {"gradient_accumulation_steps", tt::IntRange{1, 7, 2}},
                              {"lr_scheduler_type", tt::Categorical{{"linear", "constant", "cosine"}}}};
  auto params_of = [&](uint64_t seed, int n) {
    TempDir dir("hp-random");
    auto args = search_args(dir.str());
    args.max_steps = 1;
    args.eval_strategy = tt::IntervalStrategy::no;
    auto trainer = make_trainer(args);
    const auto best = trainer->hyperparameter_search(space, n, tt::Direction::minimize, tt::Sampler::random(seed));
    std::vector<json> params;
    for (const auto& t : best.run_summary["trials"]) {
      params.push_back(t["hyperparameters"]);
      CHECK(t["intermediate_objectives"].size() == 1);  // no evaluation during training: one at the end
    }
    return params;
  };
  const auto a = params_of(7, 5), b = params_of(7, 5), c = params_of(8, 5);
  CHECK(a == b);
  CHECK(a != c);
  std::set<std::string> schedulers;
  std::set<double> learning_rates;
  for (const auto& p : a) {
    const double lr = p["learning_rate"].get<double>();
    CHECK((lr >= 1e-5 && lr <= 1e-1));
    learning_rates.insert(lr);
    CHECK((p["weight_decay"].get<double>() >= 0.0 && p["weight_decay"].get<double>() <= 0.3));
    const auto ga = p["gradient_accumulation_steps"].get<int64_t>();
    CHECK((ga == 1 || ga == 3 || ga == 5 || ga == 7));
    schedulers.insert(p["lr_scheduler_type"].get<std::string>());
  }
  CHECK(learning_rates.size() == 5);
  // Trial k depends on (seed, k) only: a longer search begins with the same trials.
  const auto longer = params_of(7, 6);
  CHECK(std::vector<json>(longer.begin(), longer.begin() + 5) == a);
}

TEST_CASE("the median stopping rule prunes a trial that is worse than the earlier ones, and records it", "[hp_search]") {
  TempDir dir("hp-prune");
  auto trainer = make_trainer(search_args(dir.str()));
  trainer->add_callback<tt::MedianStoppingCallback>(/*n_startup_trials=*/2, /*n_warmup_steps=*/0);
  auto log = trainer->add_callback<TrialLog>();
  // Grid order: two good learning rates, then one that cannot learn in 8 steps, then a good one again.
  const tt::SearchSpace space{{"learning_rate", tt::Categorical{{0.1, 0.05, 1e-6, 0.1}}}};
  const auto best = trainer->hyperparameter_search(space, 4, tt::Direction::minimize, tt::Sampler::grid());

  const auto results = read_json(dir / "hp_search_results.json");
  const auto& trials = results["trials"];
  REQUIRE(trials.size() == 4);
  CHECK(trials[0]["state"] == "complete");
  CHECK(trials[1]["state"] == "complete");
  CHECK(trials[2]["state"] == "pruned");
  CHECK(trials[2]["intermediate_objectives"].size() == 1);  // stopped at its first evaluation, step 2
  CHECK(trials[2]["intermediate_objectives"][0]["step"] == 2);
  CHECK(trials[3]["state"] == "complete");
  CHECK(trials[3]["intermediate_objectives"].size() == 4);
  CHECK(best.run_id != "2");
  CHECK(tt_test::read_file(dir / "hp_search_results.csv").find("2,run-2,pruned,") != std::string::npos);

  // The first two trials cannot be pruned (n_startup_trials), whatever their objectives.
  TempDir startup("hp-prune-startup");
  auto second = make_trainer(search_args(startup.str()));
  second->add_callback<tt::MedianStoppingCallback>(2, 0);
  const tt::SearchSpace bad_first{{"learning_rate", tt::Categorical{{1e-6, 0.1, 0.05}}}};
  const auto summary = second->hyperparameter_search(bad_first, 3, tt::Direction::minimize, tt::Sampler::grid()).run_summary;
  for (const auto& t : summary["trials"]) CHECK(t["state"] == "complete");

  // Warm-up: no pruning before step n_warmup_steps, so the bad trial is stopped at step 4, not 2.
  TempDir warmup("hp-prune-warmup");
  auto third = make_trainer(search_args(warmup.str()));
  third->add_callback<tt::MedianStoppingCallback>(2, 3);
  const auto warm = third->hyperparameter_search(space, 3, tt::Direction::minimize, tt::Sampler::grid()).run_summary;
  CHECK(warm["trials"][2]["state"] == "pruned");
  CHECK(warm["trials"][2]["intermediate_objectives"].size() == 2);
}

TEST_CASE("a search that crashed continues where it stopped when it is run again", "[hp_search]") {
  TempDir reference_dir("hp-reference");
  auto reference = make_trainer(search_args(reference_dir.str()));
  const auto expected = reference->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());

  SECTION("without a checkpoint the interrupted trial starts over") {
    TempDir dir("hp-crash");
    auto trainer = make_trainer(search_args(dir.str()));
    trainer->add_callback<OnceAtStep>(/*run_id=*/2, /*step=*/3, crash);
    auto log = trainer->add_callback<TrialLog>();
    CHECK_THROWS_WITH(trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid()),
                      "simulated crash");
    CHECK(read_json(dir / "hp_search_results.json")["trials"].size() == 2);  // trials 0 and 1 were recorded
    CHECK(trainer->args.output_dir == dir.str());                             // restored after the throw too

    log->started.clear();
    const auto best = trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());
    CHECK((log->started == std::vector<std::string>{"run-2@0", "run-3@0"}));
    for (std::size_t k = 0; k < 4; ++k) {
      CHECK(best.run_summary["trials"][k]["objective"] == expected.run_summary["trials"][k]["objective"]);
      CHECK(best.run_summary["trials"][k]["intermediate_objectives"] ==
            expected.run_summary["trials"][k]["intermediate_objectives"]);
    }
    CHECK(best.run_id == expected.run_id);

    // Everything is recorded: a third run trains nothing.
    log->started.clear();
    trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());
    CHECK(log->started.empty());
  }

  SECTION("with a checkpoint the interrupted trial resumes from it, to the same result") {
    TempDir dir("hp-crash-resume");
    auto args = search_args(dir.str());
    args.save_strategy = tt::SaveStrategy::steps;
    args.save_steps = 2;
    auto trainer = make_trainer(args);
    trainer->add_callback<OnceAtStep>(/*run_id=*/2, /*step=*/5, crash);
    auto log = trainer->add_callback<TrialLog>();
    CHECK_THROWS(trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid()));
    log->started.clear();
    const auto best = trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());
    CHECK((log->started == std::vector<std::string>{"run-2@4", "run-3@0"}));
    for (std::size_t k = 0; k < 4; ++k) {
      CHECK(best.run_summary["trials"][k]["objective"] == expected.run_summary["trials"][k]["objective"]);
      CHECK(best.run_summary["trials"][k]["intermediate_objectives"] ==
            expected.run_summary["trials"][k]["intermediate_objectives"]);
    }
  }
}

TEST_CASE("SIGTERM in a trial saves its checkpoint and stops the search with PreemptedError, and it continues from there", "[hp_search]") {
  TempDir reference_dir("hp-reference");
  auto reference = make_trainer(search_args(reference_dir.str()));
  const auto expected = reference->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());

  tt_test::DefaultSigterm default_sigterm;

  TempDir dir("hp-sigterm");
  auto trainer = make_trainer(search_args(dir.str()));  // save_strategy no: the preemption saves regardless
  trainer->add_callback<OnceAtStep>(/*run_id=*/1, /*step=*/3, terminate_this_process);
  auto log = trainer->add_callback<TrialLog>();
  try {
    trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());
    FAIL("the search went on after SIGTERM");
  } catch (const tt::PreemptedError& e) {
    CHECK(e.signal() == SIGTERM);
    CHECK_THAT(e.what(), Catch::Contains("in trial run-1") && Catch::Contains("run the same search again"));
  }
  CHECK(std::filesystem::is_directory(dir / "run-1" / "checkpoint-3"));
  CHECK(read_json(dir / "hp_search_results.json")["trials"].size() == 1);

  log->started.clear();
  const auto best = trainer->hyperparameter_search(kLearningRates, 4, tt::Direction::minimize, tt::Sampler::grid());
  CHECK((log->started == std::vector<std::string>{"run-1@3", "run-2@0", "run-3@0"}));
  for (std::size_t k = 0; k < 4; ++k)
    CHECK(best.run_summary["trials"][k]["objective"] == expected.run_summary["trials"][k]["objective"]);
}

TEST_CASE("a changed search in the same output_dir is an error, not a silent mix", "[hp_search]") {
  TempDir dir("hp-changed");
  auto args = search_args(dir.str());
  args.max_steps = 2;
  auto trainer = make_trainer(args);
  trainer->hyperparameter_search(kLearningRates, 2, tt::Direction::minimize, tt::Sampler::grid());
  const tt::SearchSpace other{{"learning_rate", tt::LogUniform{1e-4, 1e-1, 5}}};
  CHECK_THROWS_WITH(trainer->hyperparameter_search(other, 2, tt::Direction::minimize, tt::Sampler::grid()),
                    Catch::Contains("hp_search_results.json records a search with another hp_space") &&
                        Catch::Contains("another output_dir"));
  CHECK_THROWS_WITH(trainer->hyperparameter_search(kLearningRates, 2, tt::Direction::minimize, tt::Sampler::random(3)),
                    Catch::Contains("another sampler"));
  CHECK_THROWS_WITH(trainer->hyperparameter_search(kLearningRates, 2, tt::Direction::maximize, tt::Sampler::grid()),
                    Catch::Contains("another direction"));
  // More trials of the same search are fine: the recorded ones are kept.
  const auto more = trainer->hyperparameter_search(kLearningRates, 3, tt::Direction::minimize, tt::Sampler::grid());
  CHECK(more.run_summary["trials"].size() == 3);
}

TEST_CASE("hyperparameter_search rejects a missing model_init, unknown keys and ungriddable ranges", "[hp_search]") {
  TempDir dir("hp-errors");
  auto args = search_args(dir.str());
  args.max_steps = 2;
  LineTrainer no_init(Regressor(), args, Line(32, 1), Line(16, 2));
  CHECK_THROWS_WITH(no_init.hyperparameter_search(kLearningRates),
                    "To use hyperparameter search, you need to pass your model through a model_init function.");

  auto trainer = make_trainer(args);
  const tt::SearchSpace typo{{"learning_rat", tt::LogUniform{1e-4, 1e-1}}};
  CHECK_THROWS_WITH(trainer->hyperparameter_search(typo),
                    Catch::Contains("'learning_rat' is not a TrainingArguments field") &&
                        Catch::Contains("did you mean 'learning_rate'"));
  const tt::SearchSpace folder{{"output_dir", tt::Categorical{{"a", "b"}}}};
  CHECK_THROWS_WITH(trainer->hyperparameter_search(folder), Catch::Contains("output_dir cannot be searched"));
  CHECK_THROWS_WITH(trainer->hyperparameter_search(tt::SearchSpace{{"learning_rate", tt::FloatRange{1e-4, 1e-1}}}, 4,
                                                   tt::Direction::minimize, tt::Sampler::grid()),
                    Catch::Contains("'learning_rate' is a continuous range; give it grid_points"));
  CHECK_THROWS_WITH(tt::SearchSpace().add("weight_decay", tt::LogUniform{0.0, 0.1}), Catch::Contains("above 0"));
  CHECK_THROWS_WITH(tt::SearchSpace().add("seed", tt::IntRange{5, 1}), Catch::Contains("low 5 above high 1"));
  // A value of the wrong type for its field is caught by the trial, naming the field.
  CHECK_THROWS_WITH(trainer->hyperparameter_search(tt::SearchSpace{{"max_steps", tt::Categorical{{"many"}}}}, 1),
                    Catch::Contains("max_steps"));
  CHECK_FALSE(std::filesystem::exists(dir / "hp_search_results.json"));
}

TEST_CASE("a model_init taking the trial receives keys of its own, which plain train() calls reject", "[hp_search]") {
  TempDir dir("hp-model");
  auto args = search_args(dir.str());
  args.max_steps = 2;
  auto trainer = make_trainer(args);
  CHECK_THROWS_WITH(trainer->train({}, {{"width", 4}}), Catch::Contains("'width' is not a TrainingArguments field"));

  std::vector<int64_t> widths;
  trainer->model_init = [&](const tt::Trial& trial) {
    widths.push_back(trial.at("width").get<int64_t>());
    return Regressor(widths.back());
  };
  const tt::SearchSpace space{{"width", tt::Categorical{{2, 8}}}, {"learning_rate", tt::Categorical{{0.01, 0.1}}}};
  const auto best = trainer->hyperparameter_search(space, 4, tt::Direction::minimize, tt::Sampler::grid());
  CHECK((widths == std::vector<int64_t>{2, 2, 8, 8}));
  CHECK(trainer->model->hidden->weight.size(0) == 8);  // the last trial's model
  CHECK(best.hyperparameters.count("width") == 1);
}

TEST_CASE("the results files list every trial with its hyper-parameters, objective and state", "[hp_search]") {
  TempDir dir("hp-files");
  auto args = search_args(dir.str());
  args.max_steps = 4;
  auto trainer = make_trainer(args);
  auto objective = [](const tt::Metrics& m) { return m["eval_loss"].get<double>() * 10; };
  auto name = [](const tt::Trial& t, std::size_t k) { return "lr" + t.at("learning_rate").dump() + "-" + std::to_string(k); };
  const tt::SearchSpace space{{"learning_rate", tt::Categorical{{0.1, 0.01}}}, {"lr_scheduler_type", tt::Categorical{{"constant"}}}};
  const auto best = trainer->hyperparameter_search(space, 2, tt::Direction::maximize, tt::Sampler::grid(), objective, name);

  const auto results = read_json(dir / "hp_search_results.json");
  CHECK(results == best.run_summary);
  CHECK(results["direction"] == "maximize");
  CHECK((results["sampler"] == json{{"type", "grid"}}));
  CHECK((results["hp_space"][0] == json{{"name", "learning_rate"}, {"distribution", "categorical"}, {"choices", {0.1, 0.01}}}));
  const auto& t0 = results["trials"][0];
  CHECK(t0["run_id"] == 0);
  CHECK(t0["trial_name"] == "lr0.1-0");
  CHECK((t0["hyperparameters"] == json{{"learning_rate", 0.1}, {"lr_scheduler_type", "constant"}}));
  CHECK(t0["objective"].get<double>() == Approx(t0["metrics"]["eval_loss"].get<double>() * 10));
  CHECK(t0["intermediate_objectives"] == json::array({{{"step", 2}, {"objective", t0["intermediate_objectives"][0]["objective"]}},
                                                       {{"step", 4}, {"objective", t0["objective"]}}}));
  CHECK(std::filesystem::exists(dir / "lr0.01-1" / "trainer_state.json"));
  // maximize: the larger objective wins
  const std::size_t winner = results["trials"][0]["objective"] > results["trials"][1]["objective"] ? 0 : 1;
  CHECK(best.run_id == std::to_string(winner));
  CHECK(results["best_run"]["run_id"] == best.run_id);

  const std::string csv = tt_test::read_file(dir / "hp_search_results.csv");
  std::istringstream lines(csv);
  std::string header, row0, row1, extra;
  std::getline(lines, header);
  std::getline(lines, row0);
  std::getline(lines, row1);
  CHECK(header == "run_id,trial_name,state,objective,learning_rate,lr_scheduler_type,intermediate_objectives");
  CHECK(row0 == "0,lr0.1-0,complete," + t0["objective"].dump() + ",0.1,constant,2:" +
                    t0["intermediate_objectives"][0]["objective"].dump() + " 4:" + t0["objective"].dump());
  CHECK(row1.rfind("1,lr0.01-1,complete,", 0) == 0);
  CHECK_FALSE(std::getline(lines, extra));
  CHECK_FALSE(std::filesystem::exists(dir / ".tmp-hp_search_results.json"));
}

TEST_CASE("the default objective is HF's: eval_loss alone, else the sum of the other metrics", "[hp_search]") {
  CHECK(tt::default_compute_objective(tt::Metrics{{"eval_loss", 0.5}, {"eval_runtime", 2.0}, {"epoch", 1.0},
                                                  {"eval_samples_per_second", 9.0}}) == 0.5);
  CHECK(tt::default_compute_objective(tt::Metrics{{"eval_loss", 0.5}, {"eval_accuracy", 0.75}, {"eval_f1", 0.5},
                                                  {"eval_steps_per_second", 3.0}, {"eval_jit_compilation_time", 1.0}}) ==
        1.25);
  CHECK_THROWS_WITH(tt::default_compute_objective(tt::Metrics{{"epoch", 1.0}}), Catch::Contains("no eval_loss"));
}

#ifdef TORCHTRAIN_HYPERPARAMETER_SEARCH
TEST_CASE("the hyperparameter_search example prints the trials and the best run, and continues a search", "[hp_search]") {
  auto run = [](const std::string& flags) {
    return tt_test::run_command(std::string(TORCHTRAIN_HYPERPARAMETER_SEARCH) + " " + flags);
  };

  TempDir dir("hp-example");
  const std::string flags = "--output_dir " + dir.str() + " --num_train_samples 64 --num_eval_samples 32 --eval_steps 2 "
                            "--num_train_epochs 1 --sampler random --sampler_seed 3";
  auto [status, output] = run(flags + " --n_trials 2");
  INFO(output);
  REQUIRE(status == 0);
  CHECK(output.find("run  state     objective  learning_rate  hidden_size\n0    complete") != std::string::npos);
  CHECK(output.find("best run ") != std::string::npos);
  CHECK(read_json(dir / "hp_search_results.json")["trials"].size() == 2);

  auto [more_status, more] = run(flags + " --n_trials 3");
  INFO(more);
  CHECK(more_status == 0);
  CHECK(read_json(dir / "hp_search_results.json")["trials"].size() == 3);

  auto [bad_status, bad] = run(flags + " --sampler sobol");
  CHECK(bad_status == 2);
  CHECK(bad.find("--sampler sobol: use grid or random") != std::string::npos);
  auto [changed_status, changed] = run(flags + " --n_trials 3 --sampler_seed 4");
  CHECK(changed_status == 2);
  CHECK(changed.find("records a search with another sampler") != std::string::npos);
}

TEST_CASE("the hyperparameter_search example stopped by SIGTERM saves the trial and exits with 143", "[hp_search]") {
  TempDir dir("hp-example-sigterm");
  // Long trials that save every 50 steps: once the first checkpoint is there, the signal lands in training.
  tt_test::ChildProcess child(TORCHTRAIN_HYPERPARAMETER_SEARCH,
                              {"--output_dir", dir.str(), "--num_train_samples", "4096", "--num_train_epochs", "200",
                               "--save_strategy", "steps", "--save_steps", "50", "--n_trials", "2"},
                              dir / "log.txt");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (tt::checkpoint::sorted_checkpoints(dir / "run-0").empty()) {
    REQUIRE(child.running());
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  child.signal(SIGTERM);
  const int status = child.wait();
  const std::string output = tt_test::read_file(dir / "log.txt");
  INFO(output);
  CHECK(tt_test::describe_status(status) == "exit status 143");
  CHECK(output.find("stopped by signal 15 in trial run-0 after saving its checkpoint") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "run-1"));
}
#endif

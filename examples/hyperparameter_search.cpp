// hyperparameter_search: searches the learning rate and the hidden width of train_classifier's MLP on the same
// synthetic data, with every TrainingArguments flag available on the command line. Run with --help for the list.
//
//   hyperparameter_search --output_dir hp --n_trials 8 --sampler grid
//   hyperparameter_search --output_dir hp --n_trials 12 --sampler random --sampler_seed 7 --median_stopping true
//
// Each trial trains in <output_dir>/run-<k>/; <output_dir>/hp_search_results.json and .csv record every trial.
// Running the same command again skips the trials already recorded and continues the search.
//
// Exit status: 0 on success, 2 for bad input (a flag, an argument set, a results file of another search),
// 1 for anything else.
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>

#include <torchtrain/torchtrain.hpp>

#include "classifier.hpp"

namespace tt = torchtrain;

namespace {

struct Options {
  std::int64_t n_trials = 8, num_train_samples = 1024, num_eval_samples = 256, num_features = 4, num_classes = 4;
  std::string sampler = "grid", direction = "maximize";
  std::uint64_t sampler_seed = 42;
  bool median_stopping = false;
  std::int64_t n_startup_trials = 2, n_warmup_steps = 0;
};

tt::TrainingArguments program_defaults() {
  tt::TrainingArguments defaults;
  defaults.output_dir = "hyperparameter_search_output";
  defaults.num_train_epochs = 1;
  defaults.logging_steps = 50;
  defaults.eval_strategy = tt::IntervalStrategy::steps;
  defaults.eval_steps = 16;
  defaults.save_strategy = tt::SaveStrategy::no;
  defaults.per_device_train_batch_size = 32;
  defaults.per_device_eval_batch_size = 128;
  defaults.disable_tqdm = true;
  return defaults;
}

std::string text(const nlohmann::json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

// A NaN objective is null in JSON.
double number(const nlohmann::json& value) { return value.is_number() ? value.get<double>() : std::nan(""); }

std::string three_digits(const nlohmann::json& value) {
  std::ostringstream out;
  out << std::setprecision(3) << number(value);
  return out.str();
}

int run(int argc, char** argv) {
  Options o;
  tt::ArgumentParser parser("Search the learning rate and hidden width of an MLP classifier with torchtrain.",
                            program_defaults());
  parser.add_argument("n_trials", o.n_trials, "trials to run (a grid runs at most its 8 points)")
      .add_argument("sampler", o.sampler, "grid (every combination) or random (drawn from --sampler_seed)")
      .add_argument("sampler_seed", o.sampler_seed, "seed of the random sampler")
      .add_argument("direction", o.direction, "maximize or minimize the objective (the sum of the eval metrics "
                                              "but eval_loss: here eval_accuracy)")
      .add_argument("median_stopping", o.median_stopping, "prune trials worse than the median of earlier ones")
      .add_argument("n_startup_trials", o.n_startup_trials, "complete trials before any pruning")
      .add_argument("n_warmup_steps", o.n_warmup_steps, "steps of a trial before it may be pruned")
      .add_argument("num_train_samples", o.num_train_samples, "synthetic training examples")
      .add_argument("num_eval_samples", o.num_eval_samples, "synthetic evaluation examples")
      .add_argument("num_features", o.num_features, "synthetic feature count")
      .add_argument("num_classes", o.num_classes, "synthetic class count");
  auto parsed = parser.parse(argc, argv);
  if (parsed.help_requested) return 0;
  if (o.sampler != "grid" && o.sampler != "random")
    throw tt::ArgumentError("--sampler " + o.sampler + ": use grid or random");
  if (o.num_classes < 2 || o.num_features < 1 || o.num_train_samples < 1 || o.num_eval_samples < 1)
    throw tt::ArgumentError("--num_classes must be at least 2, and --num_features and the sample counts at least 1");
  tt::TrainingArguments args = parsed.args;

  const uint64_t seed = args.seed;
  auto train_set = examples::synthetic(o.num_train_samples, o.num_features, o.num_classes, seed, seed + 1);
  auto eval_set = examples::synthetic(o.num_eval_samples, o.num_features, o.num_classes, seed, seed + 2);
  const int64_t features = o.num_features, classes = o.num_classes;

  tt::Trainer trainer(examples::Classifier(features, 64, classes), args, train_set, eval_set);
  trainer.compute_metrics = tt::metrics::accuracy;
  trainer.remove_callback<tt::PrinterCallback>();  // the table at the end replaces every trial's log lines
  trainer.model_init = [&](const tt::Trial& trial) {
    return examples::Classifier(features, trial.at("hidden_size").get<int64_t>(), classes);
  };
  if (o.median_stopping)
    trainer.add_callback<tt::MedianStoppingCallback>(static_cast<int>(o.n_startup_trials), o.n_warmup_steps);

  const tt::SearchSpace space{{"learning_rate", tt::LogUniform{1e-4, 1e-1, /*grid_points=*/4}},
                              {"hidden_size", tt::Categorical{{8, 64}}}};
  const auto sampler = o.sampler == "grid" ? tt::Sampler::grid() : tt::Sampler::random(o.sampler_seed);
  auto best = trainer.hyperparameter_search(space, static_cast<int>(o.n_trials), tt::parse_direction(o.direction), sampler);

  std::cout << "run  state     objective  learning_rate  hidden_size\n" << std::fixed << std::setprecision(4);
  for (const auto& t : best.run_summary["trials"])
    std::cout << std::left << std::setw(5) << t["run_id"].get<int>() << std::setw(10) << text(t["state"])
              << std::setw(11) << number(t["objective"]) << std::setw(15)
              << three_digits(t["hyperparameters"]["learning_rate"]) << text(t["hyperparameters"]["hidden_size"])
              << "\n";
  std::cout << "best run " << best.run_id << ": objective " << best.objective << " with "
            << nlohmann::json(best.hyperparameters).dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tt::PreemptedError& e) {  // the trial's checkpoint is saved: the same command continues
    std::cerr << "hyperparameter_search: " << e.what() << "\n";
    return 128 + e.signal();
  } catch (const tt::Error& e) {  // bad flags, argument combinations, a results file of another search
    std::cerr << "hyperparameter_search: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "hyperparameter_search: error: " << e.what() << "\n";
    return 1;
  }
}

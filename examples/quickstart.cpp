// The README's quickstart (which quotes its main() and its model): train a small classifier on synthetic data,
// stop early when the evaluation loss stops improving, keep the best model.
#include <torchtrain/torchtrain.hpp>

namespace tt = torchtrain;

// Two Gaussian blobs per class in 8 dimensions; labels are the blob's class.
struct Blobs : torch::data::datasets::Dataset<Blobs> {
  torch::Tensor x, y;
  Blobs(int64_t n, uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    y = torch::randint(0, 2, {n}, gen);
    x = torch::randn({n, 8}, gen) + y.unsqueeze(1).to(torch::kFloat) * 2.0;
  }
  torch::data::Example<> get(size_t i) override { return {x[i], y[i]}; }
  torch::optional<size_t> size() const override { return x.size(0); }
};

struct NetImpl : torch::nn::Module {
  torch::nn::Linear fc1{8, 32}, fc2{32, 2};
  NetImpl() {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
};
TORCH_MODULE(Net);

int main(int argc, char** argv) {
  tt::TrainingArguments defaults;  // the program's; flags such as --learning_rate 1e-2 override them
  defaults.learning_rate = 3e-3;
  defaults.num_train_epochs = 20;
  defaults.eval_strategy = tt::IntervalStrategy::epoch;
  defaults.save_strategy = tt::SaveStrategy::epoch;
  defaults.metric_for_best_model = "loss";
  defaults.load_best_model_at_end = true;
  const auto parsed = tt::ArgumentParser("Train a small classifier.", defaults).parse(argc, argv);
  if (parsed.help_requested) return 0;

  tt::Trainer trainer(Net(), parsed.args, Blobs(512, 0), Blobs(128, 1));  // any map-style torch::data dataset
  trainer.compute_metrics = tt::metrics::accuracy;
  trainer.add_callback<tt::EarlyStoppingCallback>(/*patience=*/3);
  const auto result = trainer.train();  // or train(true): resume from the newest checkpoint
  auto metrics = trainer.evaluate();    // {"eval_loss", "eval_accuracy", ...}
  std::cout << "train_loss " << result.training_loss << ", eval_accuracy " << metrics["eval_accuracy"] << "\n";
}

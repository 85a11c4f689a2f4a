// The README's quickstart: train a small classifier on synthetic data, evaluate it, stop early.
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
  auto args = tt::TrainingArguments::parse(argc, argv);  // --learning_rate 3e-3 --eval_strategy epoch ...
  tt::Trainer trainer(Net(), args, Blobs(512, 0), Blobs(128, 1));
  trainer.compute_metrics = tt::metrics::accuracy;
  auto result = trainer.train();
  auto metrics = trainer.evaluate();
  std::cout << "train_loss " << result.training_loss << ", eval_accuracy " << metrics["eval_accuracy"] << "\n";
}

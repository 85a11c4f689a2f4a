// Compile cost, torchtrain: the same program with the Trainer instantiated (train, evaluate, predict).
// COMPILE_COST_OWN_HEADERS: only the headers it uses instead of torchtrain.hpp.
#ifdef COMPILE_COST_OWN_HEADERS
#include <torchtrain/callbacks/early_stopping.hpp>
#include <torchtrain/data/tensor_dataset.hpp>
#include <torchtrain/metrics.hpp>
#include <torchtrain/trainer.hpp>
#else
#include <torchtrain/torchtrain.hpp>
#endif

struct NetImpl : torch::nn::Module {
  torch::nn::Linear fc1{16, 64}, fc2{64, 4};
  NetImpl() {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
  }
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
};
TORCH_MODULE(Net);

double train(const torch::Tensor& x, const torch::Tensor& y) {
  torchtrain::data::TensorDataset data(x, y);
  torchtrain::TrainingArguments args;
  args.eval_strategy = torchtrain::IntervalStrategy::epoch;
  torchtrain::Trainer trainer(Net(), args, data, data);
  trainer.compute_metrics = torchtrain::metrics::accuracy;
  trainer.add_callback<torchtrain::EarlyStoppingCallback>(3);
  auto result = trainer.train();
  trainer.predict(data);
  return result.training_loss;
}

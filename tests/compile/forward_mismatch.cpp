// A model whose forward takes none of what the Trainer passes: compiling this must fail with the Trainer's own
// message, which says what forward may take (the compile_errors.forward_mismatch test).
#include <torchtrain/torchtrain.hpp>

struct TakesTwoTensorsImpl : torch::nn::Module {
  torch::Tensor forward(const torch::Tensor& a, const torch::Tensor& b) { return a + b; }
};
TORCH_MODULE(TakesTwoTensors);

int main() {
  torchtrain::TrainingArguments args;
  torchtrain::Trainer trainer(TakesTwoTensors(), args, torchtrain::data::TensorDataset(torch::zeros({4, 2}), torch::zeros({4})));
  trainer.train();
}

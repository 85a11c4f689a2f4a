// Compile cost, baseline: what a LibTorch program with a hand-written training loop compiles.
#include <torch/torch.h>

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
  Net model;
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(5e-5));
  torch::Tensor loss;
  for (int64_t step = 0; step < 100; ++step) {
    auto rows = torch::randint(0, x.size(0), {32}, torch::kLong);
    loss = torch::nn::functional::cross_entropy(model->forward(x.index_select(0, rows)), y.index_select(0, rows));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
  }
  torch::save(model, "model.pt");
  return loss.item<double>();
}

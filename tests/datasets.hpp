// Small data sets, and the small model, of the tests that train.
#pragma once

#include <cstddef>
#include <cstdint>

#include <torch/torch.h>

namespace tt_test {

/// Linearly separable blobs: class c (0 or 1) is centred at 2*c along every feature.
struct Blobs : torch::data::datasets::Dataset<Blobs> {
  torch::Tensor x, y;
  Blobs(std::int64_t n, std::uint64_t seed, std::int64_t features = 4) {
    auto gen = at::detail::createCPUGenerator(seed);
    y = torch::randint(0, 2, {n}, gen);
    x = torch::randn({n, features}, gen) + y.unsqueeze(1).to(torch::kFloat) * 2.0;
  }
  torch::data::Example<> get(std::size_t i) override {
    return {x[static_cast<std::int64_t>(i)], y[static_cast<std::int64_t>(i)]};
  }
  torch::optional<std::size_t> size() const override { return static_cast<std::size_t>(x.size(0)); }
};

/// A two-layer perceptron for Blobs' 4 features and 2 classes.
struct MlpImpl : torch::nn::Module {
  torch::nn::Linear fc1, fc2;
  explicit MlpImpl(std::int64_t hidden = 16)
      : fc1(register_module("fc1", torch::nn::Linear(4, hidden))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, 2))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
};
TORCH_MODULE(Mlp);

}  // namespace tt_test

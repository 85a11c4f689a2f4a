// The models and data the benchmarks train: train_classifier's MLP (where the loop's own cost matters most),
// a wider MLP and a small conv net, each with a deterministic classification set that fits it.
#pragma once

#include <cstdint>
#include <vector>

#include <torchtrain/torchtrain.hpp>

namespace bench {

struct MlpImpl : torch::nn::Module {
  torch::nn::Linear hidden, output;
  MlpImpl(std::int64_t in, std::int64_t width, std::int64_t classes)
      : hidden(register_module("hidden", torch::nn::Linear(in, width))),
        output(register_module("output", torch::nn::Linear(width, classes))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Mlp);

// Two 3x3 convolutions with pooling over 1x16x16 images, then a linear classifier.
struct ConvNetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear output;
  explicit ConvNetImpl(std::int64_t classes)
      : conv1(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 8, 3).padding(1)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 16, 3).padding(1)))),
        output(register_module("output", torch::nn::Linear(16 * 4 * 4, classes))) {}
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    return output(x.flatten(1));
  }
};
TORCH_MODULE(ConvNet);

constexpr std::int64_t kClasses = 4, kSamples = 2048, kBatch = 32;

/// kSamples examples of `example_shape`, Gaussian noise shifted by the class index, the same every run.
inline torchtrain::data::TensorDataset clusters(std::vector<std::int64_t> example_shape) {
  auto gen = at::detail::createCPUGenerator(1);
  auto y = torch::randint(0, kClasses, {kSamples}, gen);
  std::vector<std::int64_t> shape{kSamples}, broadcast(example_shape.size() + 1, 1);
  shape.insert(shape.end(), example_shape.begin(), example_shape.end());
  broadcast[0] = kSamples;
  auto x = torch::randn(shape, gen) + y.to(torch::kFloat).view(broadcast);
  return {x, y};
}

// train_classifier's default network: 16 features, 64 hidden units, 4 classes.
inline Mlp tiny_mlp() { return Mlp(16, 64, kClasses); }
inline Mlp wide_mlp() { return Mlp(256, 1024, kClasses); }
inline ConvNet conv_net() { return ConvNet(kClasses); }

}  // namespace bench

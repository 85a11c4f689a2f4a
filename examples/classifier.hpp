// SPDX-License-Identifier: MIT
// The MLP classifier and the synthetic data set shared by train_classifier and hyperparameter_search.
#pragma once

#include <cstdint>

#include <torch/torch.h>

#include <torchtrain/data/tensor_dataset.hpp>

namespace examples {

struct ClassifierImpl : torch::nn::Module {
  torch::nn::Linear hidden, output;
  ClassifierImpl(int64_t features, int64_t hidden_size, int64_t classes)
      : hidden(register_module("hidden", torch::nn::Linear(features, hidden_size))),
        output(register_module("output", torch::nn::Linear(hidden_size, classes))) {}
  torch::Tensor forward(torch::Tensor x) { return output(torch::relu(hidden(x))); }
};
TORCH_MODULE(Classifier);

// Gaussian clusters, one per class, whose centres depend only on `seed`; `sample_seed` draws the points.
inline torchtrain::data::TensorDataset synthetic(int64_t samples, int64_t features, int64_t classes, uint64_t seed,
                                                 uint64_t sample_seed) {
  auto centres_gen = at::detail::createCPUGenerator(seed);
  const auto centres = torch::randn({classes, features}, centres_gen) * 2.0;
  auto gen = at::detail::createCPUGenerator(sample_seed);
  const auto labels = torch::randint(0, classes, {samples}, gen);
  const auto points = centres.index_select(0, labels) + torch::randn({samples, features}, gen);
  return {points, labels};
}

}  // namespace examples

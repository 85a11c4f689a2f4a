// The image classifier of the fashion_mnist example (and of the benchmarks): a small CNN, and the IDX files of
// the Debian package dataset-fashion-mnist unpacked for LibTorch's MNIST reader.
#pragma once

#include <filesystem>
#include <string>

#include <torch/torch.h>
#include <torchtrain/errors.hpp>

#include "gunzip.hpp"

namespace examples {

/// Two convolution blocks (16 and 32 channels, 3x3, max-pooling) and a classifier over 7 x 7 x 32 features.
struct CnnImpl : torch::nn::Module {
  torch::nn::Sequential features{
      torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)), torch::nn::ReLU(), torch::nn::MaxPool2d(2),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)), torch::nn::ReLU(), torch::nn::MaxPool2d(2)};
  torch::nn::Sequential classifier{torch::nn::Flatten(), torch::nn::Linear(32 * 7 * 7, 128), torch::nn::ReLU(),
                                   torch::nn::Linear(128, 10)};
  CnnImpl() {
    register_module("features", features);
    register_module("classifier", classifier);
  }
  torch::Tensor forward(const torch::Tensor& images) { return classifier->forward(features->forward(images)); }
};
TORCH_MODULE(Cnn);

inline constexpr const char* kFashionMnistFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/// The folder of unpacked IDX files torch::data::datasets::MNIST reads, made in `cache` from the package's .gz
/// files in `data_dir` (or copied, when they are there unpacked).
inline std::filesystem::path unpacked_data(const std::filesystem::path& data_dir, const std::filesystem::path& cache) {
  namespace fs = std::filesystem;
  for (const char* name : kFashionMnistFiles)
    if (!fs::exists(data_dir / (std::string(name) + ".gz")) && !fs::exists(data_dir / name))
      throw torchtrain::ArgumentError("no Fashion-MNIST data in " + data_dir.string() + " (" + name +
                                      ".gz is missing); install the Debian package dataset-fashion-mnist "
                                      "(apt-get install dataset-fashion-mnist) or pass --data_dir");
  fs::create_directories(cache);
  for (const char* name : kFashionMnistFiles) {
    const fs::path target = cache / name;
    if (fs::exists(target)) continue;
    if (fs::exists(data_dir / name)) {
      fs::copy_file(data_dir / name, target);
    } else {
      const fs::path partial = cache / (std::string(name) + ".partial");
      gunzip(data_dir / (std::string(name) + ".gz"), partial);
      fs::rename(partial, target);  // a file of that name is always whole
    }
  }
  return cache;
}

}  // namespace examples

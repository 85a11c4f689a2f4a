// SPDX-License-Identifier: MIT
// The states of LibTorch's default random generators (the CPU's, then one per CUDA device), as a checkpoint's
// rng_state.pt holds them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/serialize.h>

#include "torchtrain/detail/warn.hpp"

namespace torchtrain::detail {

/// The default generators: the CPU's first, then one per CUDA device (none in a CPU-only process).
inline std::vector<at::Generator> rng_generators(std::size_t cuda_devices) {
  std::vector<at::Generator> generators{at::globalContext().defaultGenerator(at::kCPU)};
  for (std::size_t i = 0; i < cuda_devices; ++i)
    generators.push_back(at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return generators;
}

inline std::vector<torch::Tensor> rng_states() {
  std::vector<torch::Tensor> states;
  for (auto& generator : rng_generators(torch::cuda::device_count())) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    states.push_back(generator.get_state());
  }
  return states;
}

/// Sets the CPU generator and the first `cuda_devices` CUDA generators from `states` (as rng_states() lists them).
inline void put_rng_states(const std::vector<torch::Tensor>& states, std::size_t cuda_devices) {
  auto generators = rng_generators(cuda_devices);
  for (std::size_t i = 0; i < generators.size() && i < states.size(); ++i) {
    std::lock_guard<std::mutex> lock(generators[i].mutex());
    generators[i].set_state(states[i]);
  }
}

/// Restores what rng_states() returned, for as many CUDA devices as both have; `source` names it in the warning.
inline void set_rng_states(const std::vector<torch::Tensor>& states, const std::string& source) {
  const std::size_t live_cuda = torch::cuda::device_count();
  const std::size_t saved_cuda = states.empty() ? 0 : states.size() - 1;
  if (saved_cuda != live_cuda)
    warn(source + " holds the random state of " + std::to_string(saved_cuda) + " CUDA device(s) and this process has " +
         std::to_string(live_cuda) + "; random numbers on the devices not restored will differ from an uninterrupted run.");
  put_rng_states(states, std::min(saved_cuda, live_cuda));
}

/// `states` (as rng_states() lists them) written as torch::save writes a vector of tensors (the CPU state as
/// "0", CUDA device i as "i+1"), so that torch::load reads it back.
inline void write_rng_states(const std::vector<torch::Tensor>& states,
                             const std::function<std::size_t(const void*, std::size_t)>& sink) {
  torch::serialize::OutputArchive archive;
  for (std::size_t i = 0; i < states.size(); ++i) archive.write(std::to_string(i), states[i]);
  archive.save_to(sink);
}

}  // namespace torchtrain::detail

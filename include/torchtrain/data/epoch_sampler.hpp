// SPDX-License-Identifier: MIT
// EpochSampler: each epoch's example order as a pure function of (seed, epoch).
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include "torchtrain/detail/split_mix64.hpp"

namespace torchtrain::data {

/// The order does not depend on earlier epochs or on any global generator, so a resumed run can jump straight
/// to epoch k and get the same order as a run that never stopped. The permutation uses its own generator
/// (detail::SplitMix64 + Fisher-Yates with unbiased bounded draws), so it is the same on every platform and version.
class EpochSampler {
 public:
  EpochSampler(std::size_t num_examples, std::uint64_t seed, bool shuffle = true)
      : num_examples_(num_examples), seed_(seed), shuffle_(shuffle) {}

  std::vector<std::size_t> indices(std::int64_t epoch) const {
    std::vector<std::size_t> order(num_examples_);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (!shuffle_) return order;
    detail::SplitMix64 rng{seed_ ^ (0x9E3779B97F4A7C15ULL * (static_cast<std::uint64_t>(epoch) + 1))};
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    return order;
  }

  std::size_t size() const { return num_examples_; }

 private:
  std::size_t num_examples_;
  std::uint64_t seed_;
  bool shuffle_;
};

}  // namespace torchtrain::data

// SPDX-License-Identifier: MIT
// EpochSampler: each epoch's example order as a pure function of (seed, epoch).
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace torchtrain::data {

/// The order does not depend on earlier epochs or on any global generator, so a resumed run can jump straight
/// to epoch k and get the same order as a run that never stopped. The permutation uses its own generator
/// (SplitMix64 + Fisher-Yates with unbiased bounded draws), so it is the same on every platform and version.
class EpochSampler {
 public:
  EpochSampler(std::size_t num_examples, std::uint64_t seed, bool shuffle = true)
      : num_examples_(num_examples), seed_(seed), shuffle_(shuffle) {}

  std::vector<std::size_t> indices(std::int64_t epoch) const {
    std::vector<std::size_t> order(num_examples_);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (!shuffle_) return order;
    SplitMix64 rng{seed_ ^ (0x9E3779B97F4A7C15ULL * (static_cast<std::uint64_t>(epoch) + 1))};
    for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    return order;
  }

  std::size_t size() const { return num_examples_; }

 private:
  struct SplitMix64 {
    std::uint64_t state;
    std::uint64_t next() {
      std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      return z ^ (z >> 31);
    }
    // Uniform in [0, bound) by rejection, so no index is favoured.
    std::uint64_t below(std::uint64_t bound) {
      const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
      std::uint64_t x;
      do x = next();
      while (x >= limit);
      return x % bound;
    }
  };

  std::size_t num_examples_;
  std::uint64_t seed_;
  bool shuffle_;
};

}  // namespace torchtrain::data

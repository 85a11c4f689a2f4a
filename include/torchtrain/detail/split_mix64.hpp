// SPDX-License-Identifier: MIT
// SplitMix64: a tiny generator whose sequence is the same on every platform and library version.
#pragma once

#include <cstdint>

namespace torchtrain::detail {

/// Where a sequence must be reproducible from a seed forever (shuffles, sampled hyper-parameters), the
/// standard library's distributions will not do: their output differs between implementations.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) by rejection, so no value is favoured.
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    std::uint64_t x;
    do x = next();
    while (x >= limit);
    return x % bound;
  }
  // Uniform in [0, 1), from the top 53 bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

}  // namespace torchtrain::detail

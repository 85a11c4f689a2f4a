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
///
/// With `num_replicas` > 1 (data-parallel training) it is PyTorch's DistributedSampler: every rank draws the
/// same permutation, pads it by wrapping around to a multiple of num_replicas, and takes the positions
/// rank, rank + num_replicas, ...; the shards are disjoint except for the padding.
class EpochSampler {
 public:
  EpochSampler(std::size_t num_examples, std::uint64_t seed, bool shuffle = true, std::size_t rank = 0,
               std::size_t num_replicas = 1)
      : num_examples_(num_examples), seed_(seed), shuffle_(shuffle), rank_(rank), num_replicas_(num_replicas) {}

  std::vector<std::size_t> indices(std::int64_t epoch) const {
    std::vector<std::size_t> order(num_examples_);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (shuffle_) {
      detail::SplitMix64 rng{seed_ ^ (0x9E3779B97F4A7C15ULL * (static_cast<std::uint64_t>(epoch) + 1))};
      for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    }
    if (num_replicas_ == 1 || order.empty()) return order;
    std::vector<std::size_t> shard;
    shard.reserve(size());
    for (std::size_t i = rank_; i < size() * num_replicas_; i += num_replicas_) shard.push_back(order[i % order.size()]);
    return shard;
  }

  /// Examples per epoch on this rank.
  std::size_t size() const { return shard_size(num_examples_, num_replicas_); }

  /// Examples per epoch on each of `num_replicas` ranks: the dataset padded to a multiple of num_replicas.
  static std::size_t shard_size(std::size_t num_examples, std::size_t num_replicas) {
    return (num_examples + num_replicas - 1) / num_replicas;
  }

 private:
  std::size_t num_examples_;
  std::uint64_t seed_;
  bool shuffle_;
  std::size_t rank_, num_replicas_;
};

}  // namespace torchtrain::data

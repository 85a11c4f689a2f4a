// SPDX-License-Identifier: MIT
// EpochSampler: each epoch's example order as a pure function of (seed, epoch).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <utility>
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

  /// Hugging Face's group_by_length (LengthGroupedSampler): each epoch's permutation is cut into mega-batches of
  /// min(n / (4 batch_size), 50) batches (at least one), each sorted by length, longest first, and the longest
  /// example of all is swapped to the front, so that a batch holds sequences of similar lengths and an
  /// out-of-memory error shows at the first step. `lengths` holds every example's length; `batch_size` is the
  /// examples of one optimizer step (HF passes train_batch_size x gradient_accumulation_steps).
  EpochSampler& group_by_length(std::vector<std::int64_t> lengths, std::size_t batch_size) {
    lengths_ = std::move(lengths);
    group_batch_size_ = std::max<std::size_t>(batch_size, 1);
    return *this;
  }

  std::vector<std::size_t> indices(std::int64_t epoch) const {
    std::vector<std::size_t> order(num_examples_);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (shuffle_) {
      detail::SplitMix64 rng{seed_ ^ (0x9E3779B97F4A7C15ULL * (static_cast<std::uint64_t>(epoch) + 1))};
      for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    }
    if (group_batch_size_ > 0) group(order);
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
  void group(std::vector<std::size_t>& order) const {
    if (order.empty()) return;
    const std::size_t mult = std::max<std::size_t>(std::min<std::size_t>(order.size() / (group_batch_size_ * 4), 50), 1);
    const std::size_t megabatch = mult * group_batch_size_;
    const auto longer = [&](std::size_t a, std::size_t b) { return lengths_.at(a) > lengths_.at(b); };
    std::size_t longest_start = 0;
    for (std::size_t start = 0; start < order.size(); start += megabatch) {
      const auto first = order.begin() + static_cast<std::ptrdiff_t>(start);
      std::stable_sort(first, order.begin() + static_cast<std::ptrdiff_t>(std::min(start + megabatch, order.size())),
                       longer);
      if (longer(*first, order[longest_start])) longest_start = start;
    }
    std::swap(order[0], order[longest_start]);
  }

  std::size_t num_examples_;
  std::uint64_t seed_;
  bool shuffle_;
  std::size_t rank_, num_replicas_;
  std::vector<std::int64_t> lengths_;
  std::size_t group_batch_size_ = 0;  // 0: no grouping
};

}  // namespace torchtrain::data

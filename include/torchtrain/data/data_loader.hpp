// SPDX-License-Identifier: MIT
// DataLoader: batches of a map-style dataset in a given order, optionally prepared by background workers.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/ArrayRef.h>

#include "torchtrain/data/collators.hpp"
#include "torchtrain/data/epoch_sampler.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// A dataset may offer get_stacked_batch(indices), returning what DefaultDataCollator would make of
/// get_batch(indices), but faster.
template <class Dataset, class = void>
struct has_stacked_batch : std::false_type {};
template <class Dataset>
struct has_stacked_batch<Dataset, std::void_t<decltype(std::declval<Dataset&>().get_stacked_batch(
                                      c10::ArrayRef<std::size_t>{}))>> : std::true_type {};

/// Batch k of an epoch holds the examples order[k*batch_size, (k+1)*batch_size), fetched with the
/// dataset's get_batch and merged by the collator. Workers only prepare batches ahead of time; which
/// examples form batch k never depends on how many workers there are, and batches arrive in order. With
/// `num_replicas` > 1 each epoch's order is this rank's shard (EpochSampler), of shard_size examples.
template <class Dataset, class Collator>
class DataLoader {
 public:
  using Examples = decltype(std::declval<Dataset&>().get_batch(c10::ArrayRef<std::size_t>{}));
  using Batch = std::invoke_result_t<const Collator&, Examples>;

  DataLoader(Dataset& dataset, const Collator& collator, std::size_t batch_size, bool drop_last,
             std::size_t num_workers = 0, std::size_t num_replicas = 1)
      : dataset_(&dataset), collator_(&collator), batch_size_(batch_size), drop_last_(drop_last),
        num_workers_(num_workers), num_replicas_(num_replicas) {
    if (batch_size == 0) throw ArgumentError("DataLoader: batch_size must be at least 1");
  }
  ~DataLoader() { stop_workers(); }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  std::size_t num_examples() const { return dataset_->size().value(); }
  /// The examples of an epoch on this rank: all of them in one process.
  std::size_t shard_size() const { return EpochSampler::shard_size(num_examples(), num_replicas_); }
  std::size_t batch_size() const { return batch_size_; }
  std::size_t num_batches() const {
    const std::size_t n = shard_size();
    return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  }

  /// Starts an epoch over `order`, beginning at batch `first_batch` (the batches before it are never
  /// loaded, so resuming in the middle of an epoch costs nothing).
  void start_epoch(std::vector<std::size_t> order, std::size_t first_batch = 0) {
    stop_workers();
    order_ = std::move(order);
    next_ = first_batch;
    if (num_workers_ > 0) start_workers(first_batch);
  }

  /// The next batch of the epoch, in order.
  Batch next() {
    const std::size_t k = next_++;
    if (num_workers_ == 0) return load(k);
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return done_.count(k) > 0; });
    auto node = done_.extract(k);
    consumed_ = k + 1;
    space_.notify_all();
    lock.unlock();
    if (node.mapped().error) std::rethrow_exception(node.mapped().error);
    return std::move(*node.mapped().batch);
  }

 private:
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  // Batches of the current epoch's order, which may be shorter than the dataset (an evaluation shard).
  std::size_t batches_in_order() const {
    return drop_last_ ? order_.size() / batch_size_ : (order_.size() + batch_size_ - 1) / batch_size_;
  }

  Batch load(std::size_t k) const {
    const std::size_t begin = k * batch_size_;
    const std::size_t end = std::min(begin + batch_size_, order_.size());
    if (begin >= end) throw ArgumentError("DataLoader: batch " + std::to_string(k) + " is past the epoch's end");
    const c10::ArrayRef<std::size_t> indices(order_.data() + begin, end - begin);
    if constexpr (has_stacked_batch<Dataset>::value && std::is_same_v<Collator, DefaultDataCollator>)
      return dataset_->get_stacked_batch(indices);  // one gather instead of one copy per example
    else
      return (*collator_)(dataset_->get_batch(indices));
  }

  void start_workers(std::size_t first_batch) {
    stopping_ = false;
    claimed_ = first_batch;
    consumed_ = first_batch;
    const std::size_t lookahead = 2 * num_workers_;
    for (std::size_t w = 0; w < num_workers_; ++w) {
      workers_.emplace_back([this, lookahead] {
        for (;;) {
          std::size_t k;
          {
            std::unique_lock<std::mutex> lock(mutex_);
            space_.wait(lock, [&] { return stopping_ || claimed_ < consumed_ + lookahead; });
            if (stopping_ || claimed_ >= batches_in_order()) return;
            k = claimed_++;
          }
          Slot slot;
          try {
            slot.batch.emplace(load(k));
          } catch (...) {
            slot.error = std::current_exception();
          }
          std::lock_guard<std::mutex> lock(mutex_);
          done_.emplace(k, std::move(slot));
          ready_.notify_all();
        }
      });
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    done_.clear();
  }

  Dataset* dataset_;
  const Collator* collator_;
  std::size_t batch_size_;
  bool drop_last_;
  std::size_t num_workers_;
  std::size_t num_replicas_;
  std::vector<std::size_t> order_;
  std::size_t next_ = 0;

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::map<std::size_t, Slot> done_;
  std::size_t claimed_ = 0, consumed_ = 0;
  bool stopping_ = false;
};

}  // namespace torchtrain::data

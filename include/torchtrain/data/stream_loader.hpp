// SPDX-License-Identifier: MIT
// StreamLoader: batches of a stream dataset (no length, read in order), optionally read ahead by a background
// thread, with the stream's position after each batch the loop has taken.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/data/example.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "torchtrain/data/collators.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::data {

/// A stream dataset, LibTorch's StatefulDataset contract: get_batch(n) returns the next batch of up to n
/// examples, or an empty optional once the stream is exhausted; reset() starts the stream again from its
/// beginning. The batch is a std::vector of examples, merged by the Trainer's collator, or an already merged
/// batch (a torch::data::Example of stacked tensors, a PaddedBatch).
template <class Dataset, class = void>
struct is_stream_dataset : std::false_type {};
template <class Dataset>
struct is_stream_dataset<Dataset, std::void_t<decltype(std::declval<Dataset&>().get_batch(std::size_t{}).has_value()),
                                              decltype(std::declval<Dataset&>().reset())>> : std::true_type {};

/// A stream that can save and restore its position (StatefulDataset's save and load): load() leaves it ready to
/// produce the batch that followed the save, so a resume costs the same at any step.
template <class Dataset, class = void>
struct has_stream_position : std::false_type {};
template <class Dataset>
struct has_stream_position<
    Dataset, std::void_t<decltype(std::declval<const Dataset&>().save(std::declval<torch::serialize::OutputArchive&>())),
                         decltype(std::declval<Dataset&>().load(std::declval<torch::serialize::InputArchive&>()))>>
    : std::true_type {};

/// A dataset told which epoch starts, as Hugging Face calls set_epoch (a shuffle seeded by the epoch).
template <class Dataset, class = void>
struct has_set_epoch : std::false_type {};
template <class Dataset>
struct has_set_epoch<Dataset, std::void_t<decltype(std::declval<Dataset&>().set_epoch(std::int64_t{}))>>
    : std::true_type {};

/// A stream that can itself keep one process's share (see StreamLoader): set_shard(rank, world_size) makes
/// get_batch(n) read n x world_size examples and return those at positions rank, rank + world_size, ..., which
/// spares it preparing the examples the process drops.
template <class Dataset, class = void>
struct has_set_shard : std::false_type {};
template <class Dataset>
struct has_set_shard<Dataset, std::void_t<decltype(std::declval<Dataset&>().set_shard(std::size_t{}, std::size_t{}))>>
    : std::true_type {};

namespace stream_detail {

template <class T>
struct is_example_vector : std::false_type {};
template <class D, class T>
struct is_example_vector<std::vector<torch::data::Example<D, T>>> : std::true_type {};

inline torch::Tensor every_nth_row(const torch::Tensor& t, std::size_t first, std::size_t step) {
  return t.defined() && t.dim() > 0 ? t.slice(0, static_cast<std::int64_t>(first), INT64_MAX, static_cast<std::int64_t>(step))
                                    : t;
}

// The rows first, first + step, ... of a batch, and a batch's number of examples.
template <class Batch>
Batch every_nth(Batch batch, std::size_t first, std::size_t step) {
  if constexpr (is_example_vector<Batch>::value) {
    Batch mine;
    for (std::size_t i = first; i < batch.size(); i += step) mine.push_back(std::move(batch[i]));
    return mine;
  } else if constexpr (std::is_same_v<Batch, PaddedBatch>) {
    return {every_nth_row(batch.data, first, step), every_nth_row(batch.attention_mask, first, step),
            every_nth_row(batch.target, first, step)};
  } else {
    static_assert(std::is_same_v<Batch, torch::data::Example<>>,
                  "a distributed stream's batch must be a vector of examples, a torch::data::Example or a PaddedBatch");
    return {every_nth_row(batch.data, first, step), every_nth_row(batch.target, first, step)};
  }
}

template <class Batch>
std::size_t rows(const Batch& batch) {
  if constexpr (is_example_vector<Batch>::value)
    return batch.size();
  else
    return batch.data.defined() ? static_cast<std::size_t>(batch.data.dim() > 0 ? batch.data.size(0) : 1) : 0;
}

}  // namespace stream_detail

/// Reads a stream dataset in order. In a distributed run every process reads the same stream and keeps the
/// examples rank, rank + world_size, ... of each batch of batch_size x world_size (as Hugging Face's
/// IterableDatasetShard), so world_size processes see what one process sees with the batch world_size times
/// larger; a stream with set_shard (has_set_shard) is told its share and keeps it itself. With `num_workers` > 0
/// one background thread (a stream cannot be read in parallel) reads up to 2 x num_workers batches ahead; which
/// examples form a batch does not change.
template <class Dataset, class Collator>
class StreamLoader {
 public:
  using RawBatch = std::decay_t<decltype(*std::declval<Dataset&>().get_batch(std::size_t{}))>;
  using Batch = typename std::conditional_t<std::is_invocable_v<const Collator&, RawBatch>,
                                            std::invoke_result<const Collator&, RawBatch>, std::decay<RawBatch>>::type;
  static constexpr bool kHasPosition = has_stream_position<Dataset>::value;

  struct Item {
    Batch batch;
    std::size_t examples;  // on this process
  };

  StreamLoader(Dataset& dataset, const Collator& collator, std::size_t batch_size, std::size_t num_workers = 0,
               std::size_t rank = 0, std::size_t world_size = 1)
      : dataset_(&dataset), collator_(&collator), batch_size_(batch_size), lookahead_(2 * num_workers),
        rank_(rank), world_size_(world_size) {
    if (batch_size == 0) throw ArgumentError("StreamLoader: batch_size must be at least 1");
    if constexpr (has_set_shard<Dataset>::value) dataset.set_shard(rank, world_size);
  }
  ~StreamLoader() { stop_reader(); }
  StreamLoader(const StreamLoader&) = delete;
  StreamLoader& operator=(const StreamLoader&) = delete;

  std::size_t batch_size() const { return batch_size_; }
  /// The current pass over the stream, and the batches the loop has taken from it.
  std::int64_t epoch() const { return epoch_; }
  std::int64_t batches_taken() const { return taken_; }

  /// Starts a pass from the stream's beginning: set_epoch(epoch) when the dataset has it, then reset().
  void start_epoch(std::int64_t epoch) {
    stop_reader();
    if constexpr (has_set_epoch<Dataset>::value) dataset_->set_epoch(epoch);
    dataset_->reset();
    begin(epoch, 0);
  }

  /// Starts the stream again from its beginning (reset()) without set_epoch: an evaluation's pass.
  void rewind() {
    stop_reader();
    dataset_->reset();
    begin(0, 0);
  }

  /// Continues pass `epoch` after its first `batches` batches, from the position saved then (see position()).
  void restore(std::int64_t epoch, std::int64_t batches, const std::string& position) {
    static_assert(kHasPosition, "restore() needs a stream with save() and load()");
    stop_reader();
    if constexpr (has_set_epoch<Dataset>::value) dataset_->set_epoch(epoch);
    torch::serialize::InputArchive archive;
    archive.load_from(position.data(), position.size());
    dataset_->load(archive);
    begin(epoch, batches);
  }

  /// Reads and drops the next `batches` batches (a resume from a stream that cannot restore its position).
  /// Returns how many there were.
  std::int64_t skip(std::int64_t batches) {
    std::int64_t skipped = 0;
    while (skipped < batches && next()) ++skipped;
    return skipped;
  }

  /// The next batch of this process, or nothing once the stream is exhausted.
  std::optional<Item> next() {
    if (lookahead_ == 0 || !reader_.joinable()) {
      if (ended_) return std::nullopt;
      auto item = read();
      if (item)
        ++taken_;
      else
        ended_ = true;
      return item;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return !queue_.empty(); });
    Slot slot = std::move(queue_.front());
    queue_.pop_front();
    space_.notify_all();
    lock.unlock();
    if (slot.error) std::rethrow_exception(slot.error);
    if (!slot.item) {
      stop_reader();  // it has stopped after the end; from here on, next() answers without it
      ended_ = true;
      return std::nullopt;
    }
    ++taken_;
    position_ = std::move(slot.position);
    return std::move(slot.item);
  }

  /// The stream's position after the batches taken so far (its save() to an archive's bytes), or nothing for a
  /// stream without one. With a reader thread, the position it recorded after reading the latest batch taken.
  std::optional<std::string> position() {
    if constexpr (kHasPosition) {
      if (lookahead_ > 0 && reader_.joinable()) return position_;
      return capture();
    } else {
      return std::nullopt;
    }
  }

 private:
  struct Slot {
    std::optional<Item> item;
    std::optional<std::string> position;
    std::exception_ptr error;
  };

  void begin(std::int64_t epoch, std::int64_t taken) {
    epoch_ = epoch;
    taken_ = taken;
    ended_ = false;
    if (lookahead_ == 0) return;
    if constexpr (kHasPosition) position_ = capture();
    stopping_ = false;
    reader_ = std::thread([this] {
      for (;;) {
        {
          std::unique_lock<std::mutex> lock(mutex_);
          space_.wait(lock, [&] { return stopping_ || queue_.size() < lookahead_; });
          if (stopping_) return;
        }
        Slot slot;
        try {
          slot.item = read();
          if constexpr (kHasPosition) slot.position = capture();
        } catch (...) {
          slot.error = std::current_exception();
        }
        const bool last = !slot.item || slot.error;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          queue_.push_back(std::move(slot));
        }
        ready_.notify_all();
        if (last) return;
      }
    });
  }

  std::optional<Item> read() {
    constexpr bool kShardsItself = has_set_shard<Dataset>::value;
    auto raw = dataset_->get_batch(kShardsItself ? batch_size_ : batch_size_ * world_size_);
    if (!raw) return std::nullopt;
    RawBatch mine = !kShardsItself && world_size_ > 1 ? stream_detail::every_nth(std::move(*raw), rank_, world_size_)
                                                      : std::move(*raw);
    const std::size_t examples = stream_detail::rows(mine);
    if (examples == 0) return std::nullopt;
    if constexpr (std::is_invocable_v<const Collator&, RawBatch>)
      return Item{(*collator_)(mine), examples};
    else
      return Item{std::move(mine), examples};
  }

  std::string capture() const {
    torch::serialize::OutputArchive archive;
    dataset_->save(archive);
    std::ostringstream bytes;
    archive.save_to(bytes);
    return bytes.str();
  }

  void stop_reader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    space_.notify_all();
    if (reader_.joinable()) reader_.join();
    queue_.clear();
  }

  Dataset* dataset_;
  const Collator* collator_;
  std::size_t batch_size_;
  std::size_t lookahead_;
  std::size_t rank_, world_size_;
  std::int64_t epoch_ = 0, taken_ = 0;
  bool ended_ = false;
  std::optional<std::string> position_;

  std::thread reader_;
  std::mutex mutex_;
  std::condition_variable ready_, space_;
  std::deque<Slot> queue_;
  bool stopping_ = false;
};

}  // namespace torchtrain::data

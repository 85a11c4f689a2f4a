// SPDX-License-Identifier: MIT
// BackgroundSave: a checkpoint written on a thread of its own while training goes on (save_async), through the
// same crash-safe path as a synchronous save.
#pragma once

#include <atomic>
#include <exception>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>

#include "torchtrain/checkpoint/save.hpp"
#include "torchtrain/checkpoint/snapshot.hpp"
#include "torchtrain/trainer_state.hpp"

namespace torchtrain::checkpoint {

/// At most one checkpoint in flight. The caller copies the state into snapshot(), starts the write with
/// contents that refer to it, and later waits for it (finish()) before the next capture: until then nothing
/// changes what the writer reads. complete_checkpoint runs on the writer thread, so a crash at any instant
/// still leaves whole checkpoints only.
class BackgroundSave {
 public:
  /// The checkpoint of the last start(): its folder and the state it holds.
  struct Written {
    std::filesystem::path folder;
    TrainerState state;
  };

  BackgroundSave() = default;
  BackgroundSave(const BackgroundSave&) = delete;
  BackgroundSave& operator=(const BackgroundSave&) = delete;
  /// Waits for a write still in flight: the checkpoint is completed, or its staging folder removed.
  ~BackgroundSave() {
    if (thread_.joinable()) thread_.join();
  }

  /// The host copies the contents of the next start() are to refer to; capture only while no write is in flight.
  StateSnapshot& snapshot() { return snapshot_; }

  /// Starts complete_checkpoint(folder, contents, world_size) on the writer thread, after prepare_checkpoint;
  /// `write` false (a rank other than 0) only records the checkpoint.
  void start(std::filesystem::path folder, CheckpointContents contents, int world_size, TrainerState state,
             bool write = true) {
    written_ = Written{std::move(folder), std::move(state)};
    error_ = nullptr;
    done_.store(!write, std::memory_order_release);
    if (!write) return;
    thread_ = std::thread([this, contents = std::move(contents), world_size] {
      try {
        complete_checkpoint(written_->folder, contents, world_size);
      } catch (...) {
        error_ = std::current_exception();
      }
      done_.store(true, std::memory_order_release);
    });
  }

  /// A checkpoint was started and not finish()ed yet.
  bool in_flight() const { return written_.has_value(); }
  /// The checkpoint in flight is on disk or has failed: finish() returns without waiting.
  bool done() const { return done_.load(std::memory_order_acquire); }
  /// Whether the write in flight failed; valid once done().
  bool failed() const { return error_ != nullptr; }
  /// The folder of the checkpoint in flight.
  const std::filesystem::path& folder() const { return written_->folder; }

  /// Waits until the checkpoint in flight is on disk or has failed (done()).
  void wait() {
    if (thread_.joinable()) thread_.join();
  }

  /// Waits for the checkpoint in flight and returns it; throws the CheckpointError its write threw, after which
  /// the earlier checkpoints are as they were.
  Written finish() {
    wait();
    Written written = std::move(*written_);
    written_.reset();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return written;
  }

 private:
  StateSnapshot snapshot_;
  std::optional<Written> written_;
  std::thread thread_;
  std::atomic<bool> done_{true};
  std::exception_ptr error_;
};

}  // namespace torchtrain::checkpoint

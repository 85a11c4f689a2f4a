// SPDX-License-Identifier: MIT
// TrackerOutbox: what a tracker has yet to deliver, kept across failures so that an unreachable server or a full
// disk never costs the training run.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "torchtrain/detail/warn.hpp"
#include "torchtrain/tracker_retry_policy.hpp"

namespace torchtrain::detail {

/// A delivery the tracker refused for good (a malformed request, a rejected credential): retrying cannot help,
/// so the outbox drops it, warns, and goes on with the next.
struct DeliveryRejected : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Deliveries (functions that throw when they fail) run in the order they were sent. When one fails, the
/// outbox warns once with the reason, keeps it and everything after it, and tries again after a delay that
/// doubles up to a limit; sending more meanwhile only queues. With `background`, a thread of its own delivers,
/// so a slow or silent server never holds the training loop; otherwise send() delivers on the caller's thread.
/// finish() makes a last attempt and says what was not delivered. Messages are said on the thread that calls
/// send() or finish(), where a program's warning handler expects them.
class TrackerOutbox {
 public:
  using Delivery = std::function<void()>;

  /// Whether a delivery may be dropped when more than the policy's capacity wait: the ones that set up the
  /// tracker's run must not be, or nothing after them could be delivered.
  enum class Keep { droppable, always };

  TrackerOutbox(std::string tracker, TrackerRetryPolicy policy, bool background)
      : tracker_(std::move(tracker)), policy_(policy), delay_(policy.first_delay) {
    if (background) worker_ = std::thread([this] { run(); });
  }
  TrackerOutbox(const TrackerOutbox&) = delete;
  TrackerOutbox& operator=(const TrackerOutbox&) = delete;
  ~TrackerOutbox() { stop(); }

  void send(Delivery delivery, Keep keep = Keep::droppable) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.size() >= policy_.capacity) {
        const auto oldest = std::find_if(queue_.begin(), queue_.end(), [](const Waiting& w) { return w.droppable; });
        if (oldest != queue_.end()) {
          queue_.erase(oldest);
          ++dropped_;
        }
      }
      queue_.push_back({std::move(delivery), keep == Keep::droppable});
    }
    if (worker_.joinable())
      wake_.notify_all();
    else
      deliver(false);
    say_notes();
  }

  /// Tries once more (a local write) or, in the background, keeps trying for up to the policy's patience; then
  /// warns about whatever was not delivered. The outbox stays usable.
  void finish() {
    if (worker_.joinable()) {
      std::unique_lock<std::mutex> lock(mutex_);
      urgent_ = true;
      retry_at_ = std::min(retry_at_, Clock::now());
      wake_.notify_all();
      drained_.wait_for(lock, policy_.patience, [this] { return queue_.empty() && !busy_; });
      urgent_ = false;
    } else {
      deliver(true);
    }
    say_notes();
    std::lock_guard<std::mutex> lock(mutex_);
    if (!queue_.empty() || dropped_ > 0 || rejected_ > 0) {
      std::string lost = std::to_string(queue_.size()) + " deliveries were not made";
      if (dropped_ > 0)
        lost += ", " + std::to_string(dropped_) + " older ones were dropped (more than " +
                std::to_string(policy_.capacity) + " waited)";
      if (rejected_ > 0) lost += ", " + std::to_string(rejected_) + " were refused";
      warn(tracker_ + ": " + lost + (reason_.empty() ? "" : "; the last error: " + reason_));
      dropped_ = rejected_ = 0;
    }
  }

  /// A message to say on the next send() or finish() (a delivery's own news, e.g. a fallback it took).
  void note(MessageLevel level, std::string text) {
    std::lock_guard<std::mutex> lock(mutex_);
    notes_.emplace_back(level, std::move(text));
  }

  /// Waits up to `timeout` until everything sent so far was delivered, unless delivering fails now (then at
  /// once). A checkpoint does this, so that what was logged before it is not lost if the process dies.
  void wait_delivered(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!worker_.joinable()) return;
    drained_.wait_for(lock, timeout, [this] { return (queue_.empty() && !busy_) || failures_ > 0; });
  }

  std::size_t pending() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size() + (busy_ ? 1 : 0);
  }

  /// The background thread ends after the delivery in hand; what is queued stays queued.
  void stop() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    worker_.join();
  }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kUrgentDelay{1000};  // between finish()'s attempts

  // One pass over the queue, in order, until it is empty or a delivery fails. Runs with the mutex released
  // around each delivery, which may take a network round trip.
  void deliver(bool ignore_backoff) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!ignore_backoff && failures_ > 0 && Clock::now() < retry_at_) return;
    while (!queue_.empty() && !stopping_) {
      Waiting next = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      std::string error;
      try {
        next.delivery();
      } catch (const DeliveryRejected& e) {
        lock.lock();
        busy_ = false;
        ++rejected_;
        if (e.what() != last_rejection_)  // the same refusal of every delivery is said once
          notes_.emplace_back(MessageLevel::warning,
                              tracker_ + ": " + e.what() + "; this delivery is dropped and the next ones go on");
        last_rejection_ = e.what();
        continue;
      } catch (const std::exception& e) {
        error = e.what();
      } catch (...) {
        error = "an unknown error";
      }
      lock.lock();
      busy_ = false;
      if (!error.empty()) {
        queue_.push_front(std::move(next));
        fail(error);
        drained_.notify_all();
        break;
      }
      if (failures_ > 0) {
        notes_.emplace_back(MessageLevel::info, tracker_ + ": delivering again after " + std::to_string(failures_) +
                                                    " failed attempt" + (failures_ > 1 ? "s" : ""));
        failures_ = 0;
        delay_ = policy_.first_delay;
        warned_ = false;
      }
    }
    drained_.notify_all();
  }

  void fail(const std::string& error) {
    reason_ = error;
    ++failures_;
    retry_at_ = Clock::now() + (urgent_ ? std::min(delay_, kUrgentDelay) : delay_);
    if (!warned_) {
      notes_.emplace_back(MessageLevel::warning,
                          tracker_ + ": " + error + "; training goes on, and what was not delivered is kept (up to " +
                              std::to_string(policy_.capacity) + " deliveries) and sent again later");
      warned_ = true;
    }
    delay_ = std::min(delay_ * 2, policy_.max_delay);
  }

  void say_notes() {
    std::vector<std::pair<MessageLevel, std::string>> notes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      notes.swap(notes_);
    }
    for (const auto& [level, text] : notes) send_message(level, text);
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      const bool waiting = !queue_.empty();
      if (waiting && (failures_ == 0 || Clock::now() >= retry_at_)) {
        lock.unlock();
        deliver(true);
        lock.lock();
        continue;
      }
      if (waiting)
        wake_.wait_until(lock, retry_at_);
      else
        wake_.wait(lock);
    }
  }

  const std::string tracker_;
  struct Waiting {
    Delivery delivery;
    bool droppable;
  };

  const TrackerRetryPolicy policy_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, drained_;
  std::deque<Waiting> queue_;
  bool busy_ = false, stopping_ = false, urgent_ = false, warned_ = false;
  std::size_t failures_ = 0, dropped_ = 0, rejected_ = 0;
  std::chrono::milliseconds delay_;
  Clock::time_point retry_at_{};
  std::string reason_, last_rejection_;
  std::vector<std::pair<MessageLevel, std::string>> notes_;  // to say on the caller's thread
  std::thread worker_;  // last: started once everything it uses exists
};

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// PreemptionGuard: turns SIGTERM and SIGINT into a request to checkpoint and stop at the next step.
#pragma once

#include <atomic>
#include <csignal>
#include <mutex>

#include <signal.h>

namespace torchtrain {

/// While alive, SIGTERM and SIGINT only record that a stop was asked for; the training loop polls
/// signal() at each step boundary, writes a checkpoint there and returns. A second signal while the
/// first is pending restores the previous disposition and re-raises, so a second Ctrl-C (or a scheduler's
/// follow-up SIGTERM) stops the process at once.
///
/// Chaining: if the disposition found at installation is a handler function (not SIG_DFL or SIG_IGN), it is
/// also called, after the flag is set, with the same arguments. Dispositions are process-wide, so guards
/// nest: the first one installs the handlers, the last one to die restores exactly what it found.
class PreemptionGuard {
 public:
  PreemptionGuard() {
    std::lock_guard<std::mutex> lock(mutex());
    if (depth()++ > 0) return;
    pending().store(0);
    struct sigaction ours {};
    ours.sa_sigaction = &handle;
    ours.sa_flags = SA_SIGINFO | SA_RESTART;  // no EINTR in the file writes and waits of the loop
    sigemptyset(&ours.sa_mask);
    for (int i = 0; i < kCount; ++i) ::sigaction(kSignals[i], &ours, &previous()[i]);
  }

  ~PreemptionGuard() {
    std::lock_guard<std::mutex> lock(mutex());
    if (--depth() > 0) return;
    for (int i = 0; i < kCount; ++i) ::sigaction(kSignals[i], &previous()[i], nullptr);
    pending().store(0);
  }

  PreemptionGuard(const PreemptionGuard&) = delete;
  PreemptionGuard& operator=(const PreemptionGuard&) = delete;

  /// The signal that asked training to stop (SIGTERM or SIGINT), or 0.
  int signal() const { return pending().load(std::memory_order_relaxed); }

 private:
  static constexpr int kCount = 2;
  static constexpr int kSignals[kCount] = {SIGTERM, SIGINT};

  static std::atomic<int>& pending() {
    static std::atomic<int> value{0};
    static_assert(std::atomic<int>::is_always_lock_free, "the signal flag must be lock-free");
    return value;
  }
  static struct sigaction* previous() {
    static struct sigaction saved[kCount];
    return saved;
  }
  static int& depth() {
    static int value = 0;
    return value;
  }
  static std::mutex& mutex() {
    static std::mutex value;
    return value;
  }

  // Async-signal-safe: a lock-free atomic, sigaction, raise, and the previous handler.
  static void handle(int sig, siginfo_t* info, void* context) {
    const struct sigaction& before = previous()[sig == kSignals[0] ? 0 : 1];
    int first = 0;
    if (!pending().compare_exchange_strong(first, sig)) {  // the second signal: stop now
      ::sigaction(sig, &before, nullptr);
      ::raise(sig);
      return;
    }
    if (before.sa_flags & SA_SIGINFO) {
      if (before.sa_sigaction) before.sa_sigaction(sig, info, context);
    } else if (before.sa_handler != SIG_DFL && before.sa_handler != SIG_IGN) {
      before.sa_handler(sig);
    }
  }
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// TrackerRetryPolicy: how a tracker callback retries what it could not deliver.
#pragma once

#include <chrono>
#include <cstddef>

namespace torchtrain {

/// Each tracker keeps what it could not deliver and tries again; the defaults suit a real server or disk, and
/// tests shorten them.
struct TrackerRetryPolicy {
  std::chrono::milliseconds first_delay{1000};  // after the first failure; doubles with each further one
  std::chrono::milliseconds max_delay{60000};
  std::size_t capacity = 10000;                 // deliveries kept; beyond it the oldest metrics are dropped
  std::chrono::milliseconds patience{10000};    // how long the end of training keeps trying, 1 s apart
};

}  // namespace torchtrain

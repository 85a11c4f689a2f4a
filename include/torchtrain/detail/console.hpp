// SPDX-License-Identifier: MIT
// The progress display drawn on a terminal, if any, so that text printed while it is on screen goes above it.
#pragma once

#include <mutex>
#include <ostream>
#include <string>

namespace torchtrain::detail {

/// What draws bars at the bottom of a terminal: prints `text` to `to` on lines of its own above them.
class LiveDisplay {
 public:
  virtual void write_above(const std::string& text, std::ostream& to) = 0;

 protected:
  ~LiveDisplay() = default;
};

struct Console {
  std::recursive_mutex mutex;  // held while a display draws or text is written above it
  LiveDisplay* display = nullptr;
};

inline Console& console() {
  static Console instance;
  return instance;
}

/// Prints `text` and a newline to `to`, above the live display when one is on screen.
inline void write_line(const std::string& text, std::ostream& to) {
  std::lock_guard<std::recursive_mutex> lock(console().mutex);
  if (console().display)
    console().display->write_above(text, to);
  else
    to << text + "\n" << std::flush;
}

}  // namespace torchtrain::detail

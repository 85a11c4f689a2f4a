// SPDX-License-Identifier: MIT
// JSONLinesLogger: every log event as one JSON object per line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "torchtrain/detail/log_file_callback.hpp"
#include "torchtrain/detail/python_json.hpp"

namespace torchtrain {

/// Writes output_dir/log_history.jsonl (or `path`; a hyper-parameter trial writes log_history-<trial>.jsonl):
/// one object per log event, {"step": 10, "epoch": 0.5, "loss": 0.6931, ...}, as Python's json.dumps writes it:
/// shortest round-trip floats, NaN and Infinity spelled as in trainer_state.json (Python's json and pandas read
/// them). A resumed run keeps the lines up to its checkpoint and continues after them.
class JSONLinesLogger : public detail::LogFileCallback {
 public:
  explicit JSONLinesLogger(std::string path = "") : LogFileCallback(std::move(path), "log_history.jsonl") {}

 protected:
  std::string render(const std::vector<LogEntry>& rows) override {
    std::string text;
    for (const auto& row : rows) text += *append_row(row);
    return text;
  }

  std::optional<std::string> append_row(const LogEntry& row) override {
    std::string line = "{";
    for (auto it = row.begin(); it != row.end(); ++it) {
      if (it != row.begin()) line += ", ";
      detail::append_python_string(line, it.key());
      line += ": ";
      if (it->is_structured())
        line += it->dump();
      else
        detail::append_python_json(line, *it, 0);
    }
    return line + "}\n";
  }
};

}  // namespace torchtrain

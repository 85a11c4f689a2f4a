// SPDX-License-Identifier: MIT
// JSONLinesLogger: every log event as one JSON object per line.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torchtrain/detail/log_file_callback.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/errors.hpp"

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

  // The earlier file's first lines are kept when each reads back as the entry of `rows` in its place.
  std::optional<std::string> kept_rows(const std::string& text, const std::vector<LogEntry>& rows) override {
    std::size_t end = 0;
    for (const auto& row : rows) {
      const std::size_t newline = text.find('\n', end);
      if (newline == std::string::npos) return std::nullopt;
      try {
        if (detail::parse_python_json(std::string_view(text).substr(end, newline - end), "") != nlohmann::json(row))
          return std::nullopt;
      } catch (const FileFormatError&) {
        return std::nullopt;
      }
      end = newline + 1;
    }
    return text.substr(0, end);
  }
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// CSVLogger: every log event as a row of a CSV file that spreadsheets and pandas read.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "torchtrain/detail/log_file_callback.hpp"
#include "torchtrain/detail/python_repr.hpp"

namespace torchtrain {

/// Writes output_dir/log_history.csv (or `path`; a hyper-parameter trial writes log_history-<trial>.csv):
/// columns step, epoch, then every log key in the order it first appeared. A log with a new key rewrites the
/// file with the wider header, atomically; earlier rows keep an empty cell there. Floats are written with the
/// shortest digits that read back to the same double (0.1, 5e-05), non-finite values as nan, inf and -inf,
/// booleans as true/false, and strings quoted when they hold a comma, a quote or a line break. A resumed run
/// keeps the rows up to its checkpoint and continues after them.
class CSVLogger : public detail::LogFileCallback {
 public:
  explicit CSVLogger(std::string path = "") : LogFileCallback(std::move(path), "log_history.csv") {}

 protected:
  void start_file() override { columns_ = {"step", "epoch"}; }

  // New keys become new columns after the existing ones, in the order they appear.
  std::string render(const std::vector<LogEntry>& rows) override {
    for (const auto& row : rows)
      for (const auto& [key, value] : row.items())
        if (std::find(columns_.begin(), columns_.end(), key) == columns_.end()) columns_.push_back(key);
    std::string text;
    for (std::size_t i = 0; i < columns_.size(); ++i) text += (i ? "," : "") + cell_text(columns_[i]);
    text += '\n';
    for (const auto& row : rows) text += line(row);
    return text;
  }

  std::optional<std::string> append_row(const LogEntry& row) override {
    for (const auto& [key, value] : row.items())
      if (std::find(columns_.begin(), columns_.end(), key) == columns_.end()) return std::nullopt;
    return line(row);
  }

  // The earlier file keeps its header (its column order, and columns of rows that are dropped) when its first
  // rows print, with those columns, exactly as `rows` do.
  std::optional<std::string> kept_rows(const std::string& text, const std::vector<LogEntry>& rows) override {
    const std::size_t end_of_header = text.find('\n');
    if (end_of_header == std::string::npos) return std::nullopt;
    std::vector<std::string> columns;
    std::string cell;
    bool quoted = false;
    for (std::size_t i = 0; i < end_of_header; ++i) {
      const char c = text[i];
      if (c == '"' && quoted && i + 1 < end_of_header && text[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        columns.push_back(cell);
        cell.clear();
      } else {
        cell += c;
      }
    }
    columns.push_back(cell);
    if (columns.size() < 2 || columns[0] != "step" || columns[1] != "epoch") return std::nullopt;
    columns_ = std::move(columns);
    std::string kept = text.substr(0, end_of_header + 1);
    bool same = true;
    for (const auto& row : rows) {
      const auto printed = append_row(row);
      same = printed.has_value();
      if (!same) break;
      kept += *printed;
    }
    if (!same || text.compare(0, kept.size(), kept) != 0) {
      start_file();
      return std::nullopt;
    }
    return kept;
  }

 private:
  std::string line(const LogEntry& row) const {
    std::string text;
    for (std::size_t i = 0; i < columns_.size(); ++i) {
      if (i) text += ',';
      const auto it = row.find(columns_[i]);
      if (it != row.end()) text += cell(*it);
    }
    return text + '\n';
  }

  static std::string cell(const LogEntry& value) {
    if (value.is_number_float()) return detail::python_repr(value.get<double>());
    if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
    if (value.is_null()) return "";
    if (value.is_string()) return cell_text(value.get_ref<const std::string&>());
    return cell_text(value.dump());  // integers as they are; a list or an object as JSON
  }

  // RFC 4180: a field with a comma, a quote or a line break is quoted, its quotes doubled.
  static std::string cell_text(const std::string& text) {
    if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
    std::string quoted = "\"";
    for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
    return quoted + '"';
  }

  std::vector<std::string> columns_;
};

}  // namespace torchtrain

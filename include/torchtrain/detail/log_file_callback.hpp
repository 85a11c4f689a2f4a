// SPDX-License-Identifier: MIT
// LogFileCallback: what CSVLogger and JSONLinesLogger share: one row per log event in a file that always holds
// the run's log_history, across resumes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain::detail {

/// Rows are {step, epoch, every log key in order}. When training starts the file is rewritten (atomically) to
/// hold state.log_history, which after a resume is exactly the entries up to the checkpoint: a resume keeps the
/// file's first rows when they are those entries, and drops the rows the interrupted run wrote after them. Each
/// later log event appends its row, or, when append_row() cannot (a CSV's new column), rewrites the file. Only
/// the world process zero writes.
class LogFileCallback : public TrainerCallback {
 public:
  /// The file of the current (or last) run; empty before the first event.
  const std::string& path() const { return path_; }

  void on_train_begin(const Args& args, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    path_ = resolve_path(args, state);
    rows_.clear();
    start_file();
    for (const LogEntry& entry : state.log_history) rows_.push_back(to_row(entry, entry.value("step", state.global_step)));
    if (state.global_step > 0 && std::filesystem::exists(path_)) {  // a resume: keep what the file has of rows_
      if (const auto kept = kept_rows(read_text_file(path_), rows_)) {
        write_file_atomically(path_, *kept);
        return;
      }
    }
    rewrite();
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !context.logs) return;
    if (path_.empty()) {  // a log before any train(), from evaluate(): a file of its own events
      path_ = resolve_path(args, state);
      rows_.clear();
      start_file();
    }
    rows_.push_back(to_row(*context.logs, state.global_step));
    if (const auto line = append_row(rows_.back()))
      append_text_file(path_, *line);
    else
      rewrite();
  }

 protected:
  /// `path` overrides output_dir/<default_name>.
  LogFileCallback(std::string path, std::string default_name)
      : explicit_path_(std::move(path)), default_name_(std::move(default_name)) {}

  /// A new file begins: forget the layout of the previous one.
  virtual void start_file() {}
  /// The whole file for `rows`.
  virtual std::string render(const std::vector<LogEntry>& rows) = 0;
  /// The text that appends `row` to the file as render() last wrote it, or nothing when the file must be
  /// rewritten instead.
  virtual std::optional<std::string> append_row(const LogEntry& row) = 0;
  /// The beginning of `text` (an earlier file) that holds exactly `rows`, each as it is, with what follows them
  /// removed; nothing when `text` does not begin with them. Later appends continue that file.
  virtual std::optional<std::string> kept_rows(const std::string& text, const std::vector<LogEntry>& rows) = 0;

 private:
  static LogEntry to_row(const LogEntry& logs, std::int64_t step) {
    LogEntry row;
    row["step"] = step;
    if (logs.contains("epoch")) row["epoch"] = logs["epoch"];
    for (const auto& [key, value] : logs.items())
      if (key != "step" && key != "epoch") row[key] = value;
    return row;
  }

  // A trial gets its own file: log_history-<trial>.csv.
  std::string resolve_path(const Args& args, const State& state) const {
    std::filesystem::path path =
        explicit_path_.empty() ? std::filesystem::path(args.output_dir) / default_name_ : std::filesystem::path(explicit_path_);
    if (state.trial_name && !state.trial_name->empty())
      path.replace_filename(path.stem().string() + "-" + *state.trial_name + path.extension().string());
    std::error_code ignored;  // a folder that cannot be made shows up as the write's error, naming the file
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ignored);
    return path.string();
  }

  void rewrite() { write_file_atomically(path_, render(rows_)); }

  std::string explicit_path_, default_name_, path_;
  std::vector<LogEntry> rows_;
};

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// TensorBoardCallback: TensorBoard event files of the logs, as Hugging Face's report_to="tensorboard" writes them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "torchtrain/detail/event_file_writer.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// Writes an event file into the run folder: logging_dir, or output_dir/runs/<Mon><DD>_<HH>-<MM>-<SS>_<host>
/// when it is empty (a hyper-parameter trial adds a sub-folder named after state.trial_name). Each train()
/// starts a new file with the arguments as a text summary (tag "args"); each log event adds a scalar per
/// numeric value at state.global_step, under Hugging Face's tags: eval_x -> eval/x, test_x -> test/x, anything
/// else -> train/x (train/loss, train/learning_rate, eval/accuracy, ...); string values become text summaries.
/// Events are written as they happen, so a live TensorBoard follows the run.
///
/// A resumed run continues in the same folder (with the default logging_dir: the newest run folder of
/// output_dir/runs that has event files) and starts its file with a session_log START event at the resumed
/// step, followed by the checkpoint's own log entries of that step: TensorBoard drops the steps the interrupted
/// run logged from that step on, and gets back those the checkpoint holds, so each step appears once.
/// Only the world process zero writes.
class TensorBoardCallback : public TrainerCallback {
 public:
  /// `log_dir` overrides args.logging_dir.
  explicit TensorBoardCallback(std::string log_dir = "") : explicit_dir_(std::move(log_dir)) {}

  /// The run folder of the current (or last) train(); empty before the first event.
  const std::filesystem::path& log_dir() const { return log_dir_; }
  /// The event file being written; empty between train() calls.
  std::filesystem::path event_file() const { return writer_ ? writer_->path() : std::filesystem::path(); }

  void on_train_begin(const Args& args, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    const bool resumed = state.global_step > 0;
    log_dir_ = resolve_log_dir(args, state, resumed);
    writer_ = std::make_unique<detail::EventFileWriter>(log_dir_);
    if (resumed) {
      writer_->add_session_start(state.global_step);
      for (const LogEntry& entry : state.log_history)
        if (entry.value("step", std::int64_t{-1}) == state.global_step) write_log(entry, state.global_step);
    }
    // Four spaces make the JSON a Markdown code block, which the text plugin shows as it is.
    std::string text;
    const std::string json = args.to_json_string();
    for (std::size_t start = 0; start < json.size();) {
      const std::size_t end = std::min(json.find('\n', start), json.size());
      text += "    " + json.substr(start, end - start) + "\n";
      start = end + 1;
    }
    writer_->add_text(state.global_step, "args", text);
  }

  void on_log(const Args& args, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !context.logs) return;
    if (!writer_) {  // evaluate() outside train(): a new file in the last run folder, or a new one
      if (log_dir_.empty()) log_dir_ = resolve_log_dir(args, state, false);
      writer_ = std::make_unique<detail::EventFileWriter>(log_dir_);
    }
    write_log(*context.logs, state.global_step);
  }

  void on_train_end(const Args&, const State&, Control&, const Context&) override { writer_.reset(); }

 private:
  static std::string tag_of(const std::string& key) {
    if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
    if (key.rfind("test_", 0) == 0) return "test/" + key.substr(5);
    return "train/" + key;
  }

  void write_log(const LogEntry& logs, std::int64_t step) {
    std::vector<std::pair<std::string, double>> scalars;
    for (const auto& [key, value] : logs.items()) {
      if (key == "step") continue;  // a log_history entry's own field
      if (value.is_number() || value.is_boolean()) {
        scalars.emplace_back(tag_of(key), value.is_boolean() ? double(value.get<bool>()) : value.get<double>());
      } else if (value.is_string()) {
        writer_->add_text(step, tag_of(key), value.get_ref<const std::string&>());
      } else {
        detail::warn("TensorBoardCallback: the log value of \"" + key + "\" is a " + value.type_name() +
                     ", neither a number nor a string; it is left out of TensorBoard");
      }
    }
    writer_->add_scalars(step, scalars);
  }

  std::filesystem::path resolve_log_dir(const Args& args, const State& state, bool resumed) const {
    std::filesystem::path dir = !explicit_dir_.empty() ? explicit_dir_ : args.logging_dir;
    if (dir.empty()) {
      const auto runs = std::filesystem::path(args.output_dir) / "runs";
      const auto previous = resumed ? newest_run_folder(runs) : std::nullopt;
      dir = previous ? *previous : runs / default_run_name();
    }
    if (state.trial_name && !state.trial_name->empty()) dir /= *state.trial_name;
    return dir;
  }

  // Hugging Face's default: runs/Nov24_05-19-10_<host>, local time.
  static std::string default_run_name() {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%b%d_%H-%M-%S", &local);
    return std::string(stamp) + "_" + detail::host_name();
  }

  // The folder of `runs` holding the event file with the latest creation time in its name.
  static std::optional<std::filesystem::path> newest_run_folder(const std::filesystem::path& runs) {
    std::optional<std::filesystem::path> newest;
    std::string newest_name;
    std::error_code ec;
    for (const auto& folder : std::filesystem::directory_iterator(runs, ec)) {
      if (!folder.is_directory(ec)) continue;
      for (const auto& file : std::filesystem::directory_iterator(folder.path(), ec)) {
        const std::string name = file.path().filename().string();
        if (name.rfind("events.out.tfevents.", 0) == 0 && name > newest_name) {
          newest_name = name;  // the time stamp is zero-padded, so names sort by it
          newest = folder.path();
        }
      }
    }
    return newest;
  }

  std::string explicit_dir_;
  std::filesystem::path log_dir_;
  std::unique_ptr<detail::EventFileWriter> writer_;
};

}  // namespace torchtrain

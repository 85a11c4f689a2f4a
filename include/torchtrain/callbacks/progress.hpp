// SPDX-License-Identifier: MIT
// ProgressCallback: progress bars for training and evaluation, with the logs printed above them.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>

#include "torchtrain/detail/console.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/terminal.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// On a terminal: a training bar with count, rate, elapsed time and ETA, sized to the terminal's width (read
/// again at each redraw, so it follows a resize) and redrawn at most every `redraw_interval`; during an
/// evaluation a second bar below it; logs, and whatever write() prints, above both. The rate is smoothed
/// over the recent steps, as tqdm's, and leaves out the time spent evaluating. Elsewhere (a pipe, a file):
/// only the log lines, without control characters. Only the world process zero prints.
class ProgressCallback : public TrainerCallback, private detail::LiveDisplay {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ProgressCallback(std::size_t max_str_len = 100, std::ostream& out = std::cout,
                            std::optional<bool> interactive = std::nullopt)
      : max_str_len_(max_str_len), out_(&out), interactive_(interactive.value_or(detail::is_terminal(out))) {}

  ~ProgressCallback() { hide(); }
  ProgressCallback(const ProgressCallback&) = delete;
  ProgressCallback& operator=(const ProgressCallback&) = delete;

  std::chrono::milliseconds redraw_interval{100};
  /// The width to fit; unset: the terminal's (80 when it cannot be read).
  std::optional<int> columns;

  /// Prints `text` and a newline to `to` (by default standard output), above the progress bars when they are
  /// on screen, as tqdm.write does: what a callback prints this way never lands on a bar's line.
  static void write(const std::string& text, std::ostream& to = std::cout) { detail::write_line(text, to); }

  void on_train_begin(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    train_ = Bar{"", state.global_step, state.global_step, state.max_steps, Clock::now()};
    show();
    redraw_bottom(*train_);
  }

  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    if (!train_) return;
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);  // another thread may write above
    train_->current = state.global_step;
    if (due(*train_)) redraw_bottom(*train_);
  }

  void on_prediction_step(const Args&, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !context.eval_dataloader) return;
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    if (!eval_) {
      eval_ = Bar{"Evaluating: ", 0, 0, static_cast<std::int64_t>(context.eval_dataloader->num_batches),
                  Clock::now()};
      show();
      if (interactive_ && train_) *out_ << '\n';  // the training bar stays on the line above
    }
    ++eval_->current;
    if (due(*eval_)) redraw_bottom(*eval_);
  }

  void on_evaluate(const Args&, const State&, Control&, const Context&) override { close_eval_bar(); }
  void on_predict(const Args&, const State&, Control&, const Context&) override { close_eval_bar(); }

  void on_log(const Args&, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !train_ || !context.logs) return;
    LogEntry shown = *context.logs;
    for (auto& [key, value] : shown.items()) {
      if (value.is_string() && value.template get_ref<const std::string&>().size() > max_str_len_)
        value = "[String too long to display, length: " +
                std::to_string(value.template get_ref<const std::string&>().size()) + " > " +
                std::to_string(max_str_len_) + ". Consider increasing `max_str_len` if needed.]";
    }
    shown.erase("total_flos");
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    if (interactive_)
      write_above(detail::python_log_display(shown), *out_);
    else
      *out_ << detail::python_log_display(shown) << '\n' << std::flush;
  }

  /// The loop threw: the bars stay as they are, and the next output starts on a line of its own.
  void on_exception(const Args&, const State&, Control&, const Context&) override {
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    if (interactive_ && (train_ || eval_)) *out_ << '\n' << std::flush;
    train_.reset();
    eval_.reset();
    hide();
  }

  void on_train_end(const Args&, const State&, Control&, const Context&) override {
    if (!train_) return;
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    redraw_bottom(*train_);
    if (interactive_) *out_ << '\n' << std::flush;
    train_.reset();
    hide();
  }

 private:
  struct Bar {
    std::string description;
    std::int64_t initial;  // a resumed run starts at its checkpoint's step
    std::int64_t current;
    std::int64_t total;
    Clock::time_point started;
    Clock::time_point last_drawn{};
    // The smoothed rate: an exponential moving average of the rate between drawn frames.
    Clock::time_point rate_since{};
    std::int64_t rate_count = 0;
    double rate = 0;
  };

  static constexpr double kSmoothing = 0.3;  // tqdm's: the weight of the newest interval

  bool due(const Bar& bar) const {
    return interactive_ && (Clock::now() - bar.last_drawn >= redraw_interval || bar.current == bar.total);
  }

  // Registers as the display that text goes above, while a bar is on a terminal.
  void show() {
    if (interactive_) detail::console().display = this;
  }
  void hide() {
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    if (detail::console().display == this) detail::console().display = nullptr;
  }

  // Clears the bars, prints the text on lines of its own, and draws the bars again below it. The cursor is
  // at the end of the bottom bar: the evaluation bar's line when both are shown.
  void write_above(const std::string& text, std::ostream& to) override {
    if (train_ && eval_) *out_ << "\r\x1b[K\x1b[A";
    *out_ << "\r\x1b[K" << std::flush;
    to << text + "\n" << std::flush;
    if (train_) draw(*train_);
    if (train_ && eval_) *out_ << '\n';
    if (eval_) draw(*eval_);
    out_->flush();
  }

  // During training the evaluation bar gives its line back: the cursor returns to the training bar. A
  // standalone evaluate() or predict() keeps its bar on screen, finished, as tqdm's leave=True does.
  void close_eval_bar() {
    if (!eval_) return;
    std::lock_guard<std::recursive_mutex> lock(detail::console().mutex);
    if (interactive_) {
      if (train_) {
        *out_ << "\r\x1b[K\x1b[A";
        // The time spent evaluating is not the training's: the rate's interval resumes from now.
        train_->rate_since += Clock::now() - eval_->started;
        draw(*train_);
      } else {
        draw(*eval_);
        *out_ << '\n';
      }
      out_->flush();
    }
    eval_.reset();
    if (!train_) hide();
  }

  void redraw_bottom(Bar& bar) {
    if (!interactive_) return;
    draw(bar);
    out_->flush();
  }

  void draw(Bar& bar) {
    const auto now = Clock::now();
    update_rate(bar, now);
    bar.last_drawn = now;
    *out_ << '\r' << render(bar, now, width()) << "\x1b[K";
  }

  void update_rate(Bar& bar, Clock::time_point now) const {
    if (bar.rate_since == Clock::time_point{}) {
      bar.rate_since = bar.started;
      bar.rate_count = bar.initial;
    }
    const double seconds = std::chrono::duration<double>(now - bar.rate_since).count();
    const auto done = bar.current - bar.rate_count;
    if (done <= 0 || seconds <= 0) return;
    // The first interval is at least a redraw interval long: the first batch alone, microseconds after the
    // bar appeared, would start the average at an absurd rate.
    if (bar.rate == 0 && now - bar.rate_since < redraw_interval && bar.current != bar.total) return;
    const double recent = static_cast<double>(done) / seconds;
    bar.rate = bar.rate > 0 ? kSmoothing * recent + (1 - kSmoothing) * bar.rate : recent;
    bar.rate_since = now;
    bar.rate_count = bar.current;
  }

  int width() const {
    if (columns) return *columns;
    const int terminal = detail::terminal_columns(*out_);
    return terminal > 0 ? terminal : 80;
  }

  // "desc 30%|#########      | 3/10 [00:01<00:02, 2.50it/s]", in at most `columns` - 1 characters: the bar
  // takes what the rest leaves, and the line is cut when even that does not fit.
  static std::string render(const Bar& bar, Clock::time_point now, int columns) {
    const double elapsed = std::chrono::duration<double>(now - bar.started).count();
    if (bar.total <= 0) {  // a stream, whose length is unknown: "desc 3it [00:01, 2.50it/s]", as tqdm
      char text[160];
      std::snprintf(text, sizeof text, "%lldit [%s, %.2fit/s]", static_cast<long long>(bar.current),
                    detail::format_duration(elapsed).c_str(), bar.rate);
      return (bar.description + text).substr(0, static_cast<std::size_t>(std::max(columns - 1, 0)));
    }
    const double fraction =
        bar.total > 0 ? std::clamp(static_cast<double>(bar.current) / static_cast<double>(bar.total), 0.0, 1.0)
                      : 0.0;
    const std::string eta =
        bar.rate > 0 ? detail::format_duration(static_cast<double>(bar.total - bar.current) / bar.rate) : "?";
    char text[160];
    std::snprintf(text, sizeof text, "%3d%%|", static_cast<int>(fraction * 100));
    const std::string left = bar.description + text;
    std::snprintf(text, sizeof text, "| %lld/%lld [%s<%s, %.2fit/s]", static_cast<long long>(bar.current),
                  static_cast<long long>(bar.total), detail::format_duration(elapsed).c_str(), eta.c_str(), bar.rate);
    const std::string right = text;
    const int room = columns - 1 - static_cast<int>(left.size() + right.size());
    if (room < 1) return (left + right).substr(0, static_cast<std::size_t>(std::max(columns - 1, 0)));
    const int filled = static_cast<int>(fraction * room);
    return left + std::string(static_cast<std::size_t>(filled), '#') +
           std::string(static_cast<std::size_t>(room - filled), ' ') + right;
  }

  std::size_t max_str_len_;
  std::ostream* out_;
  bool interactive_;
  std::optional<Bar> train_;
  std::optional<Bar> eval_;
};

}  // namespace torchtrain

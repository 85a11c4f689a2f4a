// SPDX-License-Identifier: MIT
// ProgressCallback: a progress bar for training and evaluation, with the logs printed above it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/terminal.hpp"
#include "torchtrain/trainer_callback.hpp"

namespace torchtrain {

/// On a terminal: a bar with count, rate, elapsed time and ETA, redrawn at most every `redraw_interval`,
/// logs printed above it, and a separate bar during evaluation. Elsewhere (a pipe, a file): only the log
/// lines, without control characters. Only the world process zero prints.
class ProgressCallback : public TrainerCallback {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ProgressCallback(std::size_t max_str_len = 100, std::ostream& out = std::cout,
                            std::optional<bool> interactive = std::nullopt)
      : max_str_len_(max_str_len), out_(&out), interactive_(interactive.value_or(detail::is_terminal(out))) {}

  std::chrono::milliseconds redraw_interval{100};

  void on_train_begin(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_world_process_zero) return;
    train_ = Bar{"", state.global_step, state.global_step, state.max_steps, Clock::now(), {}};
    draw(*train_, true);
  }

  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    if (!train_) return;
    train_->current = state.global_step;
    draw(*train_, false);
  }

  void on_prediction_step(const Args&, const State& state, Control&, const Context& context) override {
    if (!state.is_world_process_zero || !context.eval_dataloader) return;
    if (!eval_)
      eval_ = Bar{"Evaluating: ", 0, 0, static_cast<std::int64_t>(context.eval_dataloader->num_batches),
                  Clock::now(), {}};
    ++eval_->current;
    draw(*eval_, eval_->current == eval_->total);
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
    if (interactive_) *out_ << "\r\x1b[K";
    *out_ << detail::python_log_display(shown) << '\n';
    if (interactive_) draw(*train_, true);
    out_->flush();
  }

  void on_train_end(const Args&, const State&, Control&, const Context&) override {
    if (!train_) return;
    draw(*train_, true);
    if (interactive_) *out_ << '\n' << std::flush;
    train_.reset();
  }

 private:
  struct Bar {
    std::string description;
    std::int64_t initial;  // a resumed run starts at its checkpoint's step
    std::int64_t current;
    std::int64_t total;
    Clock::time_point started;
    Clock::time_point last_drawn;
  };

  // During training the evaluation bar gives the line back to the training bar; a standalone evaluate() or
  // predict() keeps it on screen, finished, as tqdm's leave=True does.
  void close_eval_bar() {
    if (!eval_) return;
    if (interactive_) {
      if (train_) {
        *out_ << "\r\x1b[K";
        draw(*train_, true);
      } else {
        draw(*eval_, true);
        *out_ << '\n';
      }
      out_->flush();
    }
    eval_.reset();
  }

  void draw(Bar& bar, bool force) {
    if (!interactive_) return;
    const auto now = Clock::now();
    if (!force && now - bar.last_drawn < redraw_interval && bar.current != bar.total) return;
    bar.last_drawn = now;
    *out_ << '\r' << render(bar, now) << "\x1b[K" << std::flush;
  }

  static std::string render(const Bar& bar, Clock::time_point now) {
    const double elapsed = std::chrono::duration<double>(now - bar.started).count();
    const auto done = bar.current - bar.initial;
    const double rate = elapsed > 0 && done > 0 ? static_cast<double>(done) / elapsed : 0.0;
    const double fraction =
        bar.total > 0 ? std::clamp(static_cast<double>(bar.current) / static_cast<double>(bar.total), 0.0, 1.0)
                      : 0.0;
    constexpr int width = 30;
    const int filled = static_cast<int>(fraction * width);
    const std::string eta =
        rate > 0 ? detail::format_duration(static_cast<double>(bar.total - bar.current) / rate) : "?";
    char stats[128];
    std::snprintf(stats, sizeof stats, "%3d%%|", static_cast<int>(fraction * 100));
    std::string line = bar.description + stats + std::string(static_cast<std::size_t>(filled), '#') +
                       std::string(static_cast<std::size_t>(width - filled), ' ');
    std::snprintf(stats, sizeof stats, "| %lld/%lld [%s<%s, %.2fit/s]", static_cast<long long>(bar.current),
                  static_cast<long long>(bar.total), detail::format_duration(elapsed).c_str(), eta.c_str(), rate);
    return line + stats;
  }

  std::size_t max_str_len_;
  std::ostream* out_;
  bool interactive_;
  std::optional<Bar> train_;
  std::optional<Bar> eval_;
};

}  // namespace torchtrain

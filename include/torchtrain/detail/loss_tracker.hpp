// SPDX-License-Identifier: MIT
// LossTracker: the running training-loss sums, kept on the device so that steps never wait for the host.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// Hugging Face keeps `tr_loss` as a float32 device tensor and, with logging_nan_inf_filter, replaces a
/// NaN/Inf micro-batch loss by `tr_loss / (1 + global_step - last_logged_step)`; checking that each step
/// would wait for the device. Instead each loss is copied into a device buffer (no wait) and the buffer is
/// folded on the host, in order and in float32, when a log or a checkpoint needs the sum or when it is full:
/// the same numbers as HF, with one synchronisation per logging step. A float32 loss on the CPU has nothing
/// to wait for: it is folded at once, straight from memory.
class LossTracker {
 public:
  explicit LossTracker(bool nan_inf_filter, std::int64_t capacity = 256)
      : nan_inf_filter_(nan_inf_filter), capacity_(capacity) {
    pending_steps_.reserve(static_cast<std::size_t>(capacity));
  }

  /// `loss` is the scaled micro-batch loss (a scalar); `steps_since_log` = global_step - last_logged_step.
  void add(const torch::Tensor& loss, std::int64_t steps_since_log) {
    if (loss.is_cpu() && loss.scalar_type() == torch::kFloat) {
      fold();  // anything pending from another device comes first
      fold_one(*loss.data_ptr<float>(), steps_since_log);
      return;
    }
    if (!buffer_.defined() || buffer_.device() != loss.device())
      buffer_ = torch::empty({capacity_}, loss.options().dtype(torch::kFloat));
    if (static_cast<std::int64_t>(pending_steps_.size()) == capacity_) fold();
    buffer_.select(0, static_cast<std::int64_t>(pending_steps_.size())).copy_(loss.detach(), /*non_blocking=*/true);
    pending_steps_.push_back(steps_since_log);
  }

  /// The loss summed since the previous call (HF's tr_loss.item()); moves it into the total.
  double take_interval() {
    fold();
    const double value = interval_;
    total_ += value;
    interval_ = 0.0f;
    return value;
  }

  /// Every loss so far: HF's _total_loss_scalar + tr_loss.
  double total() {
    fold();
    return total_ + static_cast<double>(interval_);
  }

  nlohmann::json state() {
    fold();
    return {{"interval_loss", static_cast<double>(interval_)}, {"total_loss", total_}};
  }

  /// Checks what restore() reads (a checkpoint's loop_state.json): null, for a checkpoint written without it,
  /// or an object with the numbers interval_loss and total_loss. Throws FileFormatError saying which is wrong.
  static void check_state(const nlohmann::json& saved) {
    if (saved.is_null()) return;
    for (const char* key : {"interval_loss", "total_loss"})
      if (!saved.is_object() || !saved.contains(key) || !saved.at(key).is_number())
        throw FileFormatError(std::string("expected an object with the numbers interval_loss and total_loss; ") + key +
                              " is missing or not a number");
  }

  void restore(const nlohmann::json& saved) {
    if (saved.is_null()) return;
    interval_ = static_cast<float>(saved.at("interval_loss").get<double>());
    total_ = saved.at("total_loss").get<double>();
  }

 private:
  void fold() {
    if (pending_steps_.empty()) return;
    const auto values =
        buffer_.narrow(0, 0, static_cast<std::int64_t>(pending_steps_.size())).to(torch::kCPU).contiguous();
    const float* v = values.data_ptr<float>();
    for (std::size_t i = 0; i < pending_steps_.size(); ++i) fold_one(v[i], pending_steps_[i]);
    pending_steps_.clear();
  }

  void fold_one(float loss, std::int64_t steps_since_log) {
    if (nan_inf_filter_ && !std::isfinite(loss))
      interval_ = interval_ + interval_ / static_cast<float>(1 + steps_since_log);
    else
      interval_ = interval_ + loss;
  }

  bool nan_inf_filter_;
  std::int64_t capacity_;
  torch::Tensor buffer_;
  std::vector<std::int64_t> pending_steps_;
  float interval_ = 0.0f;
  double total_ = 0.0;
};

}  // namespace torchtrain::detail

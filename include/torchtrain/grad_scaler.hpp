// SPDX-License-Identifier: MIT
// GradScaler: dynamic loss scaling for float16 training, with the semantics of PyTorch's torch.amp.GradScaler.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <c10/util/StringUtil.h>
#include <torch/types.h>

#include "torchtrain/detail/clip_grad.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain {

/// A GradScaler's state and options: PyTorch's defaults and state_dict names.
struct GradScalerState {
  double scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
  std::int64_t growth_tracker = 0;  // finite steps since the scale last changed ("_growth_tracker")
};

/// Multiplies the loss by a scale before backward, so that small float16 gradients do not flush to zero, then
/// divides the gradients by it before clipping and the optimizer step. A step whose gradients are not finite
/// is skipped and the scale backed off; after `growth_interval` finite steps in a row the scale grows.
///
/// Written with ordinary tensor operations, so it runs on any device, and kept cheap: the scale seeds the
/// backward pass (what multiplying the loss does, without a node in the graph), the division is folded into the
/// clipping's own multiply, and the check reads the gradient norm the loop computes anyway (an inf or NaN in any
/// gradient makes it non-finite) once on the host, which PyTorch's step() also waits for.
class GradScaler {
 public:
  using State = GradScalerState;

  /// Throws ArgumentError for a scale that is not a positive finite float32, growth_factor <= 1,
  /// backoff_factor outside (0, 1), growth_interval < 1 or a growth tracker outside [0, growth_interval).
  explicit GradScaler(State initial = {}) { load_state(initial); }

  /// The loss times the current scale.
  torch::Tensor scale(const torch::Tensor& loss) const { return loss * static_cast<double>(scale_); }

  /// The gradients of scale(loss): backward() seeded with the scale (a loss of one element but some dimensions,
  /// such as [1], gets the seed in its shape).
  void backward(const torch::Tensor& loss) {
    const torch::Tensor& seed = on_device(seed_, static_cast<double>(scale_), loss);
    loss.backward(loss.dim() == 0 ? seed : seed.expand(loss.sizes()));
  }

  /// Divides the gradients of `parameters` by the scale and, when `max_norm` > 0, clips them to that total L2
  /// norm, in one multiply per gradient. Returns the unscaled pre-clip norm (what grad_norm logs) and records
  /// whether it is finite (step_skipped).
  torch::Tensor unscale_and_clip(const std::vector<torch::Tensor>& parameters, double max_norm) {
    const auto grads = detail::defined_grads(parameters);
    found_inf_ = false;
    if (grads.empty()) return detail::norm_of(grads);
    const float inv_scale = static_cast<float>(1.0 / static_cast<double>(scale_));  // as PyTorch: float32(1/float64)
    const torch::Tensor& inverse = on_device(inverse_, static_cast<double>(inv_scale), grads.front());
    torch::Tensor norm = detail::norm_of(grads).mul_(inverse);
    const double value = norm.item<double>();
    found_inf_ = !std::isfinite(value);
    if (found_inf_) return norm;
    // float32 arithmetic, as the tensor expression clamp_max(max_norm / (norm + 1e-6), 1) of clipping
    const float clip = max_norm > 0 ? static_cast<float>(max_norm) / (static_cast<float>(value) + 1e-6f) : 1.0f;
    const torch::Tensor* factor = &inverse;
    if (clip < 1.0f) {
      if (!factor_.defined() || factor_.device() != inverse.device() || factor_.scalar_type() != inverse.scalar_type())
        factor_ = torch::empty({}, inverse.options());
      factor_.fill_(static_cast<double>(clip * inv_scale));
      factor = &factor_;
    }
    for (const auto& g : grads) g.mul_(*factor);
    return norm;
  }

  /// Whether the gradients unscaled last were not finite: the optimizer step must be skipped.
  bool step_skipped() const { return found_inf_; }

  /// After the step (skipped or not), PyTorch's update(): back off after a skip, grow after growth_interval
  /// finite steps in a row (unless the grown scale would not be finite).
  void update() {
    const float before = scale_;
    if (found_inf_) {
      scale_ = scale_ * static_cast<float>(state_.backoff_factor);
      state_.growth_tracker = 0;
    } else if (++state_.growth_tracker == state_.growth_interval) {
      const float grown = scale_ * static_cast<float>(state_.growth_factor);
      if (std::isfinite(grown)) scale_ = grown;
      state_.growth_tracker = 0;
    }
    found_inf_ = false;
    if (scale_ != before) seed_ = inverse_ = torch::Tensor();
  }

  double get_scale() const { return static_cast<double>(scale_); }

  /// What a checkpoint keeps: the scale, the growth tracker and the options.
  State state() const {
    State s = state_;
    s.scale = static_cast<double>(scale_);
    return s;
  }
  void load_state(const State& s) {
    constexpr double kFloatMax = std::numeric_limits<float>::max();  // kept as float32, as PyTorch keeps the scale
    if (!(s.scale > 0 && s.scale <= kFloatMax))
      throw ArgumentError("GradScaler: the scale must be a positive finite float32, got " + c10::str(s.scale));
    if (!(s.growth_factor > 1.0 && s.growth_factor <= kFloatMax))
      throw ArgumentError("GradScaler: growth_factor must be above 1 (and a float32), got " +
                          c10::str(s.growth_factor));
    if (!(s.backoff_factor > 0.0 && s.backoff_factor < 1.0))
      throw ArgumentError("GradScaler: backoff_factor must be between 0 and 1, got " + c10::str(s.backoff_factor));
    if (s.growth_interval < 1)
      throw ArgumentError("GradScaler: growth_interval must be at least 1, got " + std::to_string(s.growth_interval));
    if (s.growth_tracker < 0 || s.growth_tracker >= s.growth_interval)
      throw ArgumentError("GradScaler: the growth tracker must be in [0, growth_interval), got " +
                          std::to_string(s.growth_tracker));
    state_ = s;
    scale_ = static_cast<float>(s.scale);
    found_inf_ = false;
    seed_ = inverse_ = torch::Tensor();
  }

 private:
  // `cache` as a 0-dim tensor of `value` with the dtype and device of `like`, made again only when the scale
  // changed (update() clears it) or `like` differs: a tensor made from a number per step would cost more than
  // the multiply.
  static const torch::Tensor& on_device(torch::Tensor& cache, double value, const torch::Tensor& like) {
    if (!cache.defined() || cache.device() != like.device() || cache.scalar_type() != like.scalar_type())
      cache = torch::full({}, value, like.options());
    return cache;
  }

  State state_;
  float scale_ = 65536.0f;  // float32, as PyTorch keeps it
  bool found_inf_ = false;
  torch::Tensor seed_, inverse_, factor_;  // the scale, its inverse and the last clipped factor, on the device
};

}  // namespace torchtrain

// SPDX-License-Identifier: MIT
// The optimizers TrainingArguments::optim names and the optim_args each takes, kept apart from the optimizers so
// that argument validation needs none of them.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// Hugging Face's names (adam is torchtrain's own: HF has no plain Adam).
inline constexpr std::array<std::string_view, 5> kOptimizerNames{"adamw_torch", "adam", "sgd", "adagrad", "rmsprop"};

inline std::string unknown_optimizer(const std::string& name) {
  std::string choices;
  for (const auto n : kOptimizerNames) choices += (choices.empty() ? "" : ", ") + std::string(n);
  return "TrainingArguments.optim = \"" + name + "\": not an available optimizer; choose from " + choices;
}

/// The optim_args keys of optimizer `name`: its PyTorch constructor's arguments beyond lr and weight_decay. AdamW
/// and Adam take none (HF ignores optim_args for them; they read adam_beta1, adam_beta2 and adam_epsilon).
inline std::vector<std::string> optimizer_argument_keys(const std::string& name) {
  if (name == "sgd") return {"momentum", "dampening", "nesterov"};
  if (name == "adagrad") return {"lr_decay", "initial_accumulator_value", "eps"};
  if (name == "rmsprop") return {"alpha", "eps", "momentum", "centered"};
  return {};
}

/// HF's optim_args for optimizer `name`: "key=value,key=value", spaces ignored, each value a number or
/// true/false (1/0). Ignored for AdamW and Adam, as in HF; otherwise an unknown key or a bad value is an
/// ArgumentError naming it and the choices.
inline std::map<std::string, double> parse_optim_args(const std::string& text, const std::string& name) {
  std::map<std::string, double> out;
  const auto keys = optimizer_argument_keys(name);
  if (keys.empty()) return out;
  std::string compact, known;
  for (const char c : text)
    if (c != ' ') compact += c;
  for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
  for (std::size_t start = 0; start < compact.size();) {
    const std::size_t comma = std::min(compact.find(',', start), compact.size());
    const std::string item = compact.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || item.find('=', eq + 1) != std::string::npos)
      throw ArgumentError("TrainingArguments.optim_args = \"" + text +
                          "\": expected key=value pairs separated by commas, got \"" + item + "\"");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (std::find(keys.begin(), keys.end(), key) == keys.end())
      throw ArgumentError("TrainingArguments.optim_args: " + name + " takes no argument '" + key + "'; choose from " +
                          known);
    double number = 0;
    if (value == "true" || value == "True") {
      number = 1;
    } else if (value == "false" || value == "False") {
      number = 0;
    } else {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
      if (ec != std::errc() || end != value.data() + value.size() || value.empty())
        throw ArgumentError("TrainingArguments.optim_args: " + key + "=" + value + " is not a number or true/false");
    }
    out[key] = number;
  }
  return out;
}

}  // namespace torchtrain::detail

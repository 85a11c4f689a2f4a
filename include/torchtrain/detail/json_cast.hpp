// SPDX-License-Identifier: MIT
// Casting a hyper-parameter value to the JSON type of the argument field it replaces.
#pragma once

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

// "3e-4" for a float field becomes 3e-4; 4.0 for an integer field becomes 4; anything else goes through
// unchanged and TrainingArguments::from_json reports a type mismatch naming the field.
inline nlohmann::json cast_like(const nlohmann::json& current, const nlohmann::json& value, const std::string& name) {
  nlohmann::json v = value;
  if (v.is_string() && current.is_number()) {
    const auto& text = v.get_ref<const std::string&>();
    std::size_t used = 0;
    double parsed = 0;
    try {
      parsed = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size())
      throw ArgumentError("trial: " + name + " = '" + text + "' is not a number");
    v = parsed;
  }
  if (current.is_number_integer() && v.is_number_float()) {
    const double d = v.get<double>();
    if (d != std::floor(d)) throw ArgumentError("trial: " + name + " = " + v.dump() + " must be a whole number");
    v = static_cast<std::int64_t>(d);
  }
  if (current.is_number_float() && v.is_number()) v = v.get<double>();
  return v;
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// Python's repr() of floats and of a flat dict, so printed logs read exactly as Hugging Face prints them.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>

#include "torchtrain/detail/python_json.hpp"

namespace torchtrain::detail {

/// repr(float) in Python; differs from the JSON spelling only for the non-finite values.
inline std::string python_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return python_float_repr(value);
}

/// repr() of one value of a log entry: strings in single quotes, floats as Python, ints as ints.
template <class Json>
std::string python_value_repr(const Json& value) {
  if (value.is_number_float()) return python_repr(value.template get<double>());
  if (value.is_string()) return "'" + value.template get<std::string>() + "'";
  if (value.is_boolean()) return value.template get<bool>() ? "True" : "False";
  if (value.is_null()) return "None";
  return value.dump();
}

/// str() in Python of a JSON value: a string as it is, anything else as repr() (lists and dicts nested).
template <class Json>
std::string python_str(const Json& value, bool top = true) {
  if (value.is_string() && top) return value.template get<std::string>();
  if (value.is_array()) {
    std::string out = "[";
    for (std::size_t i = 0; i < value.size(); ++i) out += (i ? ", " : "") + python_str(value[i], false);
    return out + "]";
  }
  if (value.is_object()) {
    std::string out = "{";
    for (auto it = value.begin(); it != value.end(); ++it)
      out += (it == value.begin() ? "'" : ", '") + it.key() + "': " + python_str(it.value(), false);
    return out + "}";
  }
  return python_value_repr(value);
}

/// A field as Python's csv writer writes it (QUOTE_MINIMAL): quoted, with its quotes doubled, when it holds the
/// delimiter, a quote or a line break.
inline std::string python_csv_field(std::string_view text, char delimiter = ',') {
  const char special[] = {delimiter, '"', '\r', '\n', '\0'};
  if (text.find_first_of(special) == std::string_view::npos) return std::string(text);
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

/// f"{value:.4g}" in Python: four significant digits, no trailing zeros, and never "-nan".
inline std::string python_format_4g(double value) {
  if (std::isnan(value)) return "nan";
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", value);
  return text;
}

/// str(dict) in Python for a flat JSON object, keys in their order.
template <class Json>
std::string python_dict_repr(const Json& object) {
  std::string out = "{";
  bool first = true;
  for (auto it = object.begin(); it != object.end(); ++it) {
    out += first ? "'" : ", '";
    out += it.key() + "': " + python_value_repr(it.value());
    first = false;
  }
  return out + "}";
}

/// What HF v5's ProgressCallback and PrinterCallback print for a log entry: str(dict) after each float
/// became the string f"{v:.4g}", e.g. {'loss': '0.6931', 'learning_rate': '5e-05', 'epoch': '0.67'}.
template <class Json>
std::string python_log_display(const Json& logs) {
  Json shown = logs;
  for (auto& value : shown)
    if (value.is_number_float()) value = python_format_4g(value.template get<double>());
  return python_dict_repr(shown);
}

}  // namespace torchtrain::detail

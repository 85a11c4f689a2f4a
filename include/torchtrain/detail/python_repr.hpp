// SPDX-License-Identifier: MIT
// Python's repr() of floats and of a flat dict, so printed logs read exactly as Hugging Face prints them.
#pragma once

#include <cmath>
#include <string>

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

}  // namespace torchtrain::detail

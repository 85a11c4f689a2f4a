// SPDX-License-Identifier: MIT
// Python's repr() of floats and of a flat dict, so printed logs read exactly as Hugging Face prints them.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

namespace torchtrain::detail {

/// repr(float) in Python: the shortest digits that round-trip, fixed notation for exponents in [-4, 16),
/// otherwise scientific with a two-digit exponent ("5e-05", "1e+16", "0.0001", "1.0", "nan", "inf").
inline std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string sci(buf, result.ptr);  // "-d.ddde+XX"
  const bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  const auto e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(sci.c_str() + e_pos + 1);

  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out += digits + std::string(static_cast<std::size_t>(exponent + 1) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<std::size_t>(exponent + 1)) + "." +
             digits.substr(static_cast<std::size_t>(exponent + 1));
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_buf[8];
  std::snprintf(exp_buf, sizeof exp_buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_buf;
}

/// round(value, ndigits) in Python: correctly rounded from the exact binary value, ties to even
/// (round(0.125, 2) == 0.12, round(2.675, 2) == 2.67), which printf's "%.*f" also does.
inline double python_round(double value, int ndigits) {
  if (!std::isfinite(value)) return value;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", ndigits, value);
  return std::strtod(buf, nullptr);
}

/// repr() of one value of a log entry: strings in single quotes, floats as Python, ints as ints.
template <class Json>
std::string python_value_repr(const Json& value) {
  if (value.is_number_float()) return python_float_repr(value.template get<double>());
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

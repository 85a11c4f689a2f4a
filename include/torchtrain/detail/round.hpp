// SPDX-License-Identifier: MIT
// Python's round(x, n): the double nearest to x correctly rounded to n decimals.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace torchtrain::detail {

// printf rounds the exact binary value to n decimals, as Python's round() does; strtod then gives the
// nearest double, so logged values match Hugging Face's to the last bit.
inline double round_to(double value, int digits) {
  if (!std::isfinite(value)) return value;
  char buf[400];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return std::strtod(buf, nullptr);
}

}  // namespace torchtrain::detail

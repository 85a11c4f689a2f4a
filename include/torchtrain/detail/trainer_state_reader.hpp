// SPDX-License-Identifier: MIT
// TrainerStateReader: reads the fields of a trainer_state.json object, with errors that name the file and key.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

// Reads the fields of one trainer_state.json object, remembering which keys it was asked for.
class TrainerStateReader {
 public:
  TrainerStateReader(const nlohmann::json& object, const std::string& source) : object_(object), source_(source) {}

  // nullptr when the key is absent.
  const nlohmann::json* find(std::string_view key) {
    known_.emplace_back(key);
    const auto it = object_.find(std::string(key));
    return it == object_.end() ? nullptr : &*it;
  }

  [[noreturn]] void fail(const std::string& where, const std::string& expected, const nlohmann::json& got) const {
    // nlohmann would show NaN as null.
    std::string shown = got.is_number_float() ? python_float_repr(got.get<double>())
                                              : got.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    throw FileFormatError(source_ + ": " + where + " must be " + expected + ", got " + got.type_name() + " " +
                          shown + "; fix the value, or remove the key to use the default");
  }

  void read(std::string_view key, std::int64_t& out) {
    if (const auto* v = find(key)) out = integer(*v, std::string(key));
  }
  void read(std::string_view key, std::optional<std::int64_t>& out) {
    if (const auto* v = find(key)) out = v->is_null() ? std::nullopt : std::optional(integer(*v, std::string(key)));
  }
  void read(std::string_view key, double& out) {
    if (const auto* v = find(key)) out = number(*v, std::string(key));
  }
  void read(std::string_view key, std::optional<double>& out) {
    if (const auto* v = find(key)) out = v->is_null() ? std::nullopt : std::optional(number(*v, std::string(key)));
  }
  void read(std::string_view key, bool& out) {
    if (const auto* v = find(key)) {
      if (!v->is_boolean()) fail('"' + std::string(key) + '"', "true or false", *v);
      out = v->get<bool>();
    }
  }
  void read(std::string_view key, std::optional<std::string>& out) {
    if (const auto* v = find(key)) {
      if (!v->is_null() && !v->is_string()) fail('"' + std::string(key) + '"', "a string or null", *v);
      out = v->is_null() ? std::nullopt : std::optional(v->get<std::string>());
    }
  }

  // Integral floats such as 2.0 are accepted: they are what a tool that writes every number as a float produces.
  std::int64_t integer(const nlohmann::json& v, const std::string& where) const {
    if (v.is_number_unsigned()) {
      if (v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail('"' + where + '"', "an integer that fits in 64 bits", v);
      return static_cast<std::int64_t>(v.get<std::uint64_t>());
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 0x1p63) return static_cast<std::int64_t>(d);
    }
    fail('"' + where + '"', "an integer", v);
  }

  double number(const nlohmann::json& v, const std::string& where) const {
    if (!v.is_number()) fail('"' + where + '"', "a number", v);
    return v.get<double>();
  }

  // The keys of the object that no read asked for.
  nlohmann::json unknown() const {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, value] : object_.items())
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) out[key] = value;
    return out;
  }

 private:
  const nlohmann::json& object_;
  const std::string& source_;
  std::vector<std::string> known_;
};

}  // namespace torchtrain::detail

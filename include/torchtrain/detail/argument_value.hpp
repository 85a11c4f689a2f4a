// SPDX-License-Identifier: MIT
// The value types an argument can have (a TrainingArguments field or a program's own flag), and how each one
// is read from command-line text, read from and written to JSON, and shown in --help.
#pragma once

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/errors.hpp"
#include "torchtrain/strategies.hpp"

namespace torchtrain::detail {

/// Every argument type, wrapped by `Ref` (a pointer, or a pointer to a member).
template <template <class> class Ref>
using ArgumentVariant =
    std::variant<Ref<bool>, Ref<std::optional<bool>>, Ref<std::int64_t>, Ref<std::optional<std::int64_t>>,
                 Ref<std::uint64_t>, Ref<std::optional<std::uint64_t>>, Ref<double>, Ref<std::optional<double>>,
                 Ref<std::string>, Ref<std::optional<std::string>>, Ref<std::vector<std::string>>,
                 Ref<IntervalStrategy>, Ref<SaveStrategy>, Ref<SchedulerType>, Ref<nlohmann::json>>;

template <class T>
using Pointer = T*;

/// Where one argument's value lives.
using ValueRef = ArgumentVariant<Pointer>;

/// Shortest text that reads back as the same double: 5e-05, 0.1, 500.
inline std::string format_number(double value) {
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  return std::string(buf, end);
}

/// A JSON value for an error message: its type and (the start of) its text.
inline std::string describe_json(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(value.type_name()) + " " + text;
}

inline std::string quote_if_empty(std::string_view text) { return text.empty() ? "''" : std::string(text); }

template <class T, class = void>
struct ValueTraits;

// Each ValueTraits<T> has:
//   metavar()    the placeholder shown in --help (FLOAT, INT, ...)
//   json_type()  what a JSON value must be, for error messages
//   parse(text, flag)         command-line text -> T; throws ArgumentError naming `flag`
//   read(json, out, where)    false when the JSON type is wrong; `where` prefixes value errors
//   write(value) / text(value)   to JSON / to the text --help shows as the default

template <>
struct ValueTraits<bool> {
  static std::string metavar() { return "[BOOL]"; }
  static std::string json_type() { return "true or false"; }
  static std::optional<bool> try_parse(std::string_view text) {
    std::string lower(text);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "true" || lower == "1" || lower == "yes") return true;
    if (lower == "false" || lower == "0" || lower == "no") return false;
    return std::nullopt;
  }
  static bool parse(std::string_view text, std::string_view flag) {
    if (auto value = try_parse(text)) return *value;
    throw ArgumentError(std::string(flag) + " " + quote_if_empty(text) +
                        ": not a boolean; use true/false, yes/no or 1/0");
  }
  static bool read(const nlohmann::json& j, bool& out, std::string_view) {
    if (!j.is_boolean()) return false;
    out = j.get<bool>();
    return true;
  }
  static nlohmann::json write(bool value) { return value; }
  static std::string text(bool value) { return value ? "true" : "false"; }
};

template <>
struct ValueTraits<std::int64_t> {
  static std::string metavar() { return "INT"; }
  static std::string json_type() { return "a whole number"; }
  static std::int64_t parse(std::string_view text, std::string_view flag) {
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range)
      throw ArgumentError(std::string(flag) + " " + std::string(text) + ": out of range");
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      throw ArgumentError(std::string(flag) + " " + quote_if_empty(text) + ": not a whole number");
    return value;
  }
  static bool read(const nlohmann::json& j, std::int64_t& out, std::string_view) {
    if (j.is_number_unsigned()) {
      if (j.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return false;
      out = j.get<std::int64_t>();
      return true;
    }
    if (j.is_number_integer()) {
      out = j.get<std::int64_t>();
      return true;
    }
    // 500.0 is how Python writes some whole numbers; 2.5 is not a whole number.
    if (j.is_number_float()) {
      const double d = j.get<double>();
      if (d != std::floor(d) || !(std::abs(d) < 9.2e18)) return false;
      out = static_cast<std::int64_t>(d);
      return true;
    }
    return false;
  }
  static nlohmann::json write(std::int64_t value) { return value; }
  static std::string text(std::int64_t value) { return std::to_string(value); }
};

template <>
struct ValueTraits<std::uint64_t> {
  static std::string metavar() { return "UINT"; }
  static std::string json_type() { return "a non-negative whole number"; }
  static std::uint64_t parse(std::string_view text, std::string_view flag) {
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range)
      throw ArgumentError(std::string(flag) + " " + std::string(text) + ": out of range");
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      throw ArgumentError(std::string(flag) + " " + quote_if_empty(text) + ": not a non-negative whole number");
    return value;
  }
  static bool read(const nlohmann::json& j, std::uint64_t& out, std::string_view) {
    if (j.is_number_unsigned()) {
      out = j.get<std::uint64_t>();
      return true;
    }
    if (j.is_number_integer()) {
      if (j.get<std::int64_t>() < 0) return false;
      out = j.get<std::uint64_t>();
      return true;
    }
    if (j.is_number_float()) {
      const double d = j.get<double>();
      if (d != std::floor(d) || !(d >= 0 && d < 1.8e19)) return false;
      out = static_cast<std::uint64_t>(d);
      return true;
    }
    return false;
  }
  static nlohmann::json write(std::uint64_t value) { return value; }
  static std::string text(std::uint64_t value) { return std::to_string(value); }
};

template <>
struct ValueTraits<double> {
  static std::string metavar() { return "FLOAT"; }
  static std::string json_type() { return "a number"; }
  static double parse(std::string_view text, std::string_view flag) {
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range)
      throw ArgumentError(std::string(flag) + " " + std::string(text) + ": out of range");
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
      throw ArgumentError(std::string(flag) + " " + quote_if_empty(text) + ": not a number");
    // JSON cannot hold NaN or infinity, and no argument means anything with them.
    if (!std::isfinite(value))
      throw ArgumentError(std::string(flag) + " " + std::string(text) + ": not a finite number");
    return value;
  }
  static bool read(const nlohmann::json& j, double& out, std::string_view) {
    if (!j.is_number()) return false;
    out = j.get<double>();
    return true;
  }
  static nlohmann::json write(double value) { return value; }
  static std::string text(double value) { return format_number(value); }
};

template <>
struct ValueTraits<std::string> {
  static std::string metavar() { return "STR"; }
  static std::string json_type() { return "a string"; }
  static std::string parse(std::string_view text, std::string_view) { return std::string(text); }
  // null reads as "", which for logging_dir and run_name means "derive it", as HF's None does.
  static bool read(const nlohmann::json& j, std::string& out, std::string_view) {
    if (j.is_null()) {
      out.clear();
      return true;
    }
    if (!j.is_string()) return false;
    out = j.get<std::string>();
    return true;
  }
  static nlohmann::json write(const std::string& value) { return value; }
  static std::string text(const std::string& value) { return value.empty() ? "\"\"" : value; }
};

// Lists are comma separated on the command line: --report_to tensorboard,csv.
template <>
struct ValueTraits<std::vector<std::string>> {
  static std::string metavar() { return "A,B,..."; }
  static std::string json_type() { return "a list of strings (or one string)"; }
  static std::vector<std::string> parse(std::string_view text, std::string_view) {
    std::vector<std::string> items;
    while (!text.empty()) {
      const std::size_t comma = text.find(',');
      std::string_view item = text.substr(0, comma);
      const std::size_t first = item.find_first_not_of(" \t");
      if (first != std::string_view::npos) {
        item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
        items.emplace_back(item);
      }
      if (comma == std::string_view::npos) break;
      text.remove_prefix(comma + 1);
    }
    return items;
  }
  static bool read(const nlohmann::json& j, std::vector<std::string>& out, std::string_view) {
    if (j.is_string()) {
      out = {j.get<std::string>()};
      return true;
    }
    if (!j.is_array()) return false;
    std::vector<std::string> items;
    for (const auto& item : j) {
      if (!item.is_string()) return false;
      items.push_back(item.get<std::string>());
    }
    out = std::move(items);
    return true;
  }
  static nlohmann::json write(const std::vector<std::string>& value) { return value; }
  static std::string text(const std::vector<std::string>& value) {
    std::string joined;
    for (const auto& item : value) joined += (joined.empty() ? "" : ",") + item;
    return joined.empty() ? "\"\"" : joined;
  }
};

// JSON objects (lr_scheduler_kwargs): JSON text on the command line, as HF's json.loads of a string.
template <>
struct ValueTraits<nlohmann::json> {
  static std::string metavar() { return "JSON"; }
  static std::string json_type() { return "a JSON object"; }
  static nlohmann::json parse(std::string_view text, std::string_view flag) {
    const auto value = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (!value.is_object())
      throw ArgumentError(std::string(flag) + " " + quote_if_empty(text) +
                          ": not a JSON object; write it as '{\"key\": value}'");
    return value;
  }
  static bool read(const nlohmann::json& j, nlohmann::json& out, std::string_view) {
    if (j.is_null()) {
      out = nlohmann::json::object();
      return true;
    }
    if (!j.is_object()) return false;
    out = j;
    return true;
  }
  static nlohmann::json write(const nlohmann::json& value) { return value; }
  static std::string text(const nlohmann::json& value) { return value.dump(); }
};

template <class Enum>
struct EnumNamesOf;
template <>
struct EnumNamesOf<IntervalStrategy> {
  static constexpr const auto& names = interval_strategy_names;
};
template <>
struct EnumNamesOf<SaveStrategy> {
  static constexpr const auto& names = save_strategy_names;
};
template <>
struct EnumNamesOf<SchedulerType> {
  static constexpr const auto& names = scheduler_type_names;
};

template <class Enum>
struct ValueTraits<Enum, std::enable_if_t<std::is_enum_v<Enum>>> {
  static std::string metavar() {
    std::string choices;
    for (const auto& entry : EnumNamesOf<Enum>::names)
      choices += (choices.empty() ? "{" : ",") + std::string(entry.second);
    return choices + "}";
  }
  static std::string json_type() {
    std::string choices;
    for (const auto& entry : EnumNamesOf<Enum>::names)
      choices += (choices.empty() ? "one of the strings \"" : ", \"") + std::string(entry.second) + "\"";
    return choices;
  }
  static Enum parse(std::string_view text, std::string_view flag) {
    return enum_from_string(EnumNamesOf<Enum>::names, text, flag);
  }
  static bool read(const nlohmann::json& j, Enum& out, std::string_view where) {
    if (!j.is_string()) return false;
    out = enum_from_string(EnumNamesOf<Enum>::names, j.get<std::string>(), where);
    return true;
  }
  static nlohmann::json write(Enum value) { return enum_to_string(EnumNamesOf<Enum>::names, value); }
  static std::string text(Enum value) { return enum_to_string(EnumNamesOf<Enum>::names, value); }
};

inline bool is_none_text(std::string_view text) { return text == "none" || text == "None" || text == "null"; }

// Optional values: "none" on the command line and null in JSON unset them.
template <class T>
struct ValueTraits<std::optional<T>> {
  static std::string metavar() {
    if constexpr (std::is_same_v<T, bool>) {
      return "[BOOL|none]";
    } else {
      return ValueTraits<T>::metavar() + "|none";
    }
  }
  static std::string json_type() { return ValueTraits<T>::json_type() + " or null"; }
  static std::optional<T> parse(std::string_view text, std::string_view flag) {
    if (is_none_text(text)) return std::nullopt;
    return ValueTraits<T>::parse(text, flag);
  }
  static bool read(const nlohmann::json& j, std::optional<T>& out, std::string_view where) {
    if (j.is_null()) {
      out.reset();
      return true;
    }
    T value{};
    if (!ValueTraits<T>::read(j, value, where)) return false;
    out = std::move(value);
    return true;
  }
  static nlohmann::json write(const std::optional<T>& value) {
    return value ? ValueTraits<T>::write(*value) : nlohmann::json(nullptr);
  }
  static std::string text(const std::optional<T>& value) { return value ? ValueTraits<T>::text(*value) : "none"; }
};

template <class T>
using TraitsOf = ValueTraits<std::remove_cv_t<std::remove_reference_t<T>>>;

/// A bare --flag sets these to true.
inline bool is_boolean(const ValueRef& ref) {
  return std::holds_alternative<bool*>(ref) || std::holds_alternative<std::optional<bool>*>(ref);
}

inline void parse_text(const ValueRef& ref, std::string_view text, std::string_view flag) {
  std::visit([&](auto* value) { *value = TraitsOf<decltype(*value)>::parse(text, flag); }, ref);
}

/// Reads `json` into the argument `key`; throws FileFormatError naming `source`, `key` and the expected type.
inline void read_json(const ValueRef& ref, const nlohmann::json& json, const std::string& key,
                      const std::string& source) {
  std::visit(
      [&](auto* value) {
        using Traits = TraitsOf<decltype(*value)>;
        if (!Traits::read(json, *value, source + ": " + key))
          throw FileFormatError(source + ": \"" + key + "\" must be " + Traits::json_type() + ", not " +
                                describe_json(json));
      },
      ref);
}

inline nlohmann::json to_json(const ValueRef& ref) {
  return std::visit([](auto* value) { return TraitsOf<decltype(*value)>::write(*value); }, ref);
}

inline std::string value_text(const ValueRef& ref) {
  return std::visit([](auto* value) { return TraitsOf<decltype(*value)>::text(*value); }, ref);
}

inline std::string metavar(const ValueRef& ref) {
  return std::visit([](auto* value) { return TraitsOf<decltype(*value)>::metavar(); }, ref);
}

}  // namespace torchtrain::detail

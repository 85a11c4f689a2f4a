// SPDX-License-Identifier: MIT
// JSON exactly as Python's json module writes it (indent=2, sort_keys=True), and a reader that accepts
// the NaN / Infinity / -Infinity tokens Python writes, so that files stay byte-compatible with Hugging Face.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/json_limits.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// Python's repr(float), with json's spelling of the non-finite values: shortest round-trip digits,
/// positional notation for exponents in [-4, 16) with ".0" on integral values, otherwise "1e+16" style.
inline std::string python_float_repr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";

  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<std::size_t>(result.ptr - buf));  // e.g. "-3.7500000000000003e-05"

  const bool negative = sci.front() == '-';
  const std::size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0)))
    if (c != '.') digits += c;
  int exponent = 0;
  const std::string_view exp_text = sci.substr(e_pos + 1);
  std::from_chars(exp_text.data() + (exp_text.front() == '+' ? 1 : 0), exp_text.data() + exp_text.size(), exponent);

  std::string out = negative ? "-" : "";
  const int ndigits = static_cast<int>(digits.size());
  if (exponent >= -4 && exponent < 16) {
    const int point = exponent + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
    } else if (point >= ndigits) {
      out += digits + std::string(static_cast<std::size_t>(point - ndigits), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<std::size_t>(point)) + "." + digits.substr(static_cast<std::size_t>(point));
    }
  } else {
    out += digits.substr(0, 1);
    if (ndigits > 1) out += "." + digits.substr(1);
    const std::string magnitude = std::to_string(std::abs(exponent));
    out += exponent < 0 ? "e-" : "e+";
    if (magnitude.size() < 2) out += '0';
    out += magnitude;
  }
  return out;
}

// Decodes the UTF-8 code point at text[pos] and advances pos; an invalid byte reads as U+FFFD and is skipped
// on its own, so a string from C++ that is not valid UTF-8 is still written rather than aborting a save.
inline char32_t next_code_point(std::string_view text, std::size_t& pos) {
  constexpr char32_t replacement = 0xFFFD;
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) {
    ++pos;
    return lead;
  }
  std::size_t length = 0;
  char32_t cp = 0;
  char32_t smallest = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2, cp = lead & 0x1Fu, smallest = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, cp = lead & 0x0Fu, smallest = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, cp = lead & 0x07u, smallest = 0x10000;
  } else {
    ++pos;
    return replacement;
  }
  if (pos + length > text.size()) {
    ++pos;
    return replacement;
  }
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(pos + k) & 0xC0) != 0x80) {
      ++pos;
      return replacement;
    }
    cp = (cp << 6) | (byte(pos + k) & 0x3Fu);
  }
  if (cp < smallest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++pos;
    return replacement;
  }
  pos += length;
  return cp;
}

// A JSON string literal as Python writes it with ensure_ascii=True: only printable ASCII stays as it is.
inline void append_python_string(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto append_u = [&](char32_t unit) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(unit >> shift) & 0xF];
  };
  out += '"';
  for (std::size_t pos = 0; pos < text.size();) {
    const char32_t cp = next_code_point(text, pos);
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp >= 0x20 && cp <= 0x7E) {
          out += static_cast<char>(cp);
        } else if (cp < 0x10000) {
          append_u(cp);
        } else {
          append_u(0xD800 + ((cp - 0x10000) >> 10));
          append_u(0xDC00 + ((cp - 0x10000) & 0x3FF));
        }
    }
  }
  out += '"';
}

template <class BasicJson>
void append_python_json(std::string& out, const BasicJson& value, std::size_t depth) {
  using value_t = nlohmann::detail::value_t;
  const auto newline_indent = [&](std::size_t level) {
    out += '\n';
    out.append(2 * level, ' ');
  };
  switch (value.type()) {
    case value_t::null: out += "null"; break;
    case value_t::boolean: out += value.template get<bool>() ? "true" : "false"; break;
    case value_t::number_integer: out += std::to_string(value.template get<std::int64_t>()); break;
    case value_t::number_unsigned: out += std::to_string(value.template get<std::uint64_t>()); break;
    case value_t::number_float: out += python_float_repr(value.template get<double>()); break;
    case value_t::string: append_python_string(out, value.template get_ref<const std::string&>()); break;
    case value_t::array: {
      if (value.empty()) {
        out += "[]";
        break;
      }
      out += '[';
      bool first = true;
      for (const auto& element : value) {
        if (!first) out += ',';
        first = false;
        newline_indent(depth + 1);
        append_python_json(out, element, depth + 1);
      }
      newline_indent(depth);
      out += ']';
      break;
    }
    case value_t::object: {
      if (value.empty()) {
        out += "{}";
        break;
      }
      // ordered_json keeps insertion order, so sort here; std::string compares bytes as unsigned, which for
      // UTF-8 is code point order, the order Python's sort_keys uses.
      using Item = typename BasicJson::object_t::value_type;
      std::vector<const Item*> items;
      items.reserve(value.size());
      for (const auto& item : value.template get_ref<const typename BasicJson::object_t&>()) items.push_back(&item);
      std::sort(items.begin(), items.end(), [](const Item* a, const Item* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const Item* item : items) {
        if (!first) out += ',';
        first = false;
        newline_indent(depth + 1);
        append_python_string(out, item->first);
        out += ": ";
        append_python_json(out, item->second, depth + 1);
      }
      newline_indent(depth);
      out += '}';
      break;
    }
    case value_t::binary:
    case value_t::discarded:
      throw Error("a binary or discarded JSON value cannot be written as Python JSON; store numbers, strings, "
                  "lists or objects instead");
  }
}

/// What Python's `json.dumps(value, indent=2, sort_keys=True) + "\n"` returns.
inline std::string dump_python_json(const nlohmann::json& value) {
  std::string out;
  append_python_json(out, value, 0);
  out += '\n';
  return out;
}

inline std::string dump_python_json(const nlohmann::ordered_json& value) {
  std::string out;
  append_python_json(out, value, 0);
  out += '\n';
  return out;
}

/// Parses JSON as Python's json.loads does, including the bare NaN, Infinity and -Infinity tokens.
/// Throws FileFormatError naming `source` when the text is empty or not valid JSON.
inline nlohmann::json parse_python_json(std::string_view text, const std::string& source) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos)
    throw FileFormatError(source + ": the file is empty; it was probably cut short while being written, so use "
                                   "another copy or delete it");

  // nlohmann rejects the non-finite tokens, so each one outside a string becomes a 0 padded with spaces to the
  // same length (error positions stay true; the leading space keeps "1NaN" invalid), and we remember which
  // number in document order it was.
  std::string scrubbed(text);
  std::vector<std::pair<std::size_t, double>> specials;  // (index among all numbers, value)
  std::size_t numbers = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        i += 2;
      } else {
        in_string = c != '"';
        ++i;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      ++i;
      continue;
    }
    const auto substitute = [&](std::string_view token, double number) {
      if (text.substr(i, token.size()) != token) return false;
      scrubbed.replace(i, token.size(), " 0" + std::string(token.size() - 2, ' '));
      specials.emplace_back(numbers++, number);
      i += token.size();
      return true;
    };
    constexpr double inf = std::numeric_limits<double>::infinity();
    if (substitute("NaN", std::numeric_limits<double>::quiet_NaN()) || substitute("Infinity", inf) ||
        substitute("-Infinity", -inf))
      continue;
    if (c == '-' || (c >= '0' && c <= '9')) {
      ++numbers;
      while (i < text.size() && std::string_view("0123456789+-.eE").find(text[i]) != std::string_view::npos) ++i;
      continue;
    }
    ++i;
  }

  std::size_t seen = 0;
  std::size_t next_special = 0;
  const auto restore = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start)
      check_json_depth(depth, source);
    if (event == nlohmann::json::parse_event_t::value && parsed.is_number()) {
      if (next_special < specials.size() && specials[next_special].first == seen)
        parsed = specials[next_special++].second;
      ++seen;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(scrubbed, restore);
  } catch (const nlohmann::json::parse_error& e) {
    const std::string message = json_error_reason(e);
    throw FileFormatError(source + ": not valid JSON (byte " + std::to_string(e.byte) + "): " + message +
                          "; the file may be truncated or damaged, so use another copy or delete it");
  } catch (const nlohmann::json::out_of_range& e) {  // a number beyond a double's range, such as 1e999
    throw FileFormatError(source + ": not valid JSON: " + json_error_reason(e) +
                          "; the file may be damaged, so use another copy or delete it");
  }
}

}  // namespace torchtrain::detail

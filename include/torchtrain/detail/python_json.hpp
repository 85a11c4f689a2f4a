// SPDX-License-Identifier: MIT
// JSON exactly as Python's json module writes it (indent=2, sort_keys=True, or another layout), and a reader
// that accepts the NaN / Infinity / -Infinity tokens Python writes, so that files stay byte-compatible with
// Hugging Face.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/json_limits.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

/// How Python's json spells a non-finite double: "NaN", "Infinity" or "-Infinity"; nullptr for a finite one.
inline const char* non_finite_token(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return nullptr;
}

/// Appends Python's repr(float), with json's spelling of the non-finite values: shortest round-trip digits,
/// positional notation for exponents in [-4, 16) with ".0" on integral values, otherwise "1e+16" style.
inline void append_python_float(std::string& out, double value) {
  if (const char* token = non_finite_token(value)) {
    out += token;
    return;
  }
  char sci[32];  // shortest round trip, e.g. "-3.7500000000000003e-05"
  const char* const sci_end = std::to_chars(sci, sci + sizeof sci, value, std::chars_format::scientific).ptr;
  const bool negative = sci[0] == '-';
  const char* const e = std::find(static_cast<const char*>(sci), sci_end, 'e');
  char digits[24];
  int ndigits = 0;
  for (const char* c = sci + (negative ? 1 : 0); c != e; ++c)
    if (*c != '.') digits[ndigits++] = *c;
  int exponent = 0;
  std::from_chars(e + 1 + (e[1] == '+' ? 1 : 0), sci_end, exponent);

  char text[48];  // at most a sign, "0.000" and 17 digits, or 17 digits, 15 zeros and ".0"
  char* p = text;
  if (negative) *p++ = '-';
  const auto put = [&p](const char* from, int count) { p = std::copy(from, from + count, p); };
  if (exponent >= -4 && exponent < 16) {
    const int point = exponent + 1;  // digits before the decimal point
    if (point <= 0) {
      put("0.0000", 2 - point);
      put(digits, ndigits);
    } else if (point >= ndigits) {
      put(digits, ndigits);
      p = std::fill_n(p, point - ndigits, '0');
      put(".0", 2);
    } else {
      put(digits, point);
      *p++ = '.';
      put(digits + point, ndigits - point);
    }
  } else {
    *p++ = digits[0];
    if (ndigits > 1) {
      *p++ = '.';
      put(digits + 1, ndigits - 1);
    }
    *p++ = 'e';
    *p++ = exponent < 0 ? '-' : '+';
    const int magnitude = exponent < 0 ? -exponent : exponent;
    if (magnitude < 10) *p++ = '0';
    p = std::to_chars(p, text + sizeof text, magnitude).ptr;
  }
  out.append(text, p);
}

inline std::string python_float_repr(double value) {
  std::string out;
  append_python_float(out, value);
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
    const std::size_t plain = pos;  // a run of printable ASCII other than '"' and '\\' is copied as it is
    while (pos < text.size() && text[pos] >= 0x20 && text[pos] <= 0x7E && text[pos] != '"' && text[pos] != '\\') ++pos;
    out.append(text.data() + plain, pos - plain);
    if (pos == text.size()) break;
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

/// The layout arguments of Python's json.dumps. The default is what Hugging Face writes (indent=2,
/// sort_keys=True); kOneLineJson is json.dumps' own default (indent=None: ", " and ": " on one line).
struct PythonJsonLayout {
  std::optional<std::size_t> indent = 2;  // spaces per level; std::nullopt: one line
  bool sort_keys = true;
};
inline constexpr PythonJsonLayout kOneLineJson{std::nullopt, false};

// With an indent, a new line indented to `level`; on one line, nothing. It stands before a non-empty list's or
// object's closing bracket.
inline void append_closing_indent(std::string& out, const PythonJsonLayout& layout, std::size_t level) {
  if (!layout.indent) return;
  out += '\n';
  out.append(*layout.indent * level, ' ');
}

// What stands before a list element or an object member: json.dumps' item separator, then the line break.
inline void append_item_start(std::string& out, const PythonJsonLayout& layout, std::size_t level, bool first) {
  if (!first) out += layout.indent ? "," : ", ";
  append_closing_indent(out, layout, level);
}

template <class BasicJson>
void append_python_json(std::string& out, const BasicJson& value, std::size_t depth,
                        const PythonJsonLayout& layout = {});

/// A list of JSON values (a json array, or any container of json values) as Python writes it.
template <class Elements>
void append_python_list(std::string& out, const Elements& elements, std::size_t depth,
                        const PythonJsonLayout& layout = {}) {
  if (elements.empty()) {
    out += "[]";
    return;
  }
  out += '[';
  bool first = true;
  for (const auto& element : elements) {
    append_item_start(out, layout, depth + 1, first);
    first = false;
    append_python_json(out, element, depth + 1, layout);
  }
  append_closing_indent(out, layout, depth);
  out += ']';
}

/// `value` as Python's json.dumps writes it with `layout`, ASCII only, NaN and Infinity as bare tokens;
/// `depth` is the nesting level it stands at.
template <class BasicJson>
void append_python_json(std::string& out, const BasicJson& value, std::size_t depth, const PythonJsonLayout& layout) {
  using value_t = nlohmann::detail::value_t;
  switch (value.type()) {
    case value_t::null: out += "null"; break;
    case value_t::boolean: out += value.template get<bool>() ? "true" : "false"; break;
    case value_t::number_integer: out += std::to_string(value.template get<std::int64_t>()); break;
    case value_t::number_unsigned: out += std::to_string(value.template get<std::uint64_t>()); break;
    case value_t::number_float: append_python_float(out, value.template get<double>()); break;
    case value_t::string: append_python_string(out, value.template get_ref<const std::string&>()); break;
    case value_t::array: append_python_list(out, value, depth, layout); break;
    case value_t::object: {
      if (value.empty()) {
        out += "{}";
        break;
      }
      using Item = typename BasicJson::object_t::value_type;
      std::vector<const Item*> items;
      items.reserve(value.size());
      for (const auto& item : value.template get_ref<const typename BasicJson::object_t&>()) items.push_back(&item);
      // ordered_json keeps insertion order, so sort here; std::string compares bytes as unsigned, which for
      // UTF-8 is code point order, the order Python's sort_keys uses.
      if (layout.sort_keys)
        std::sort(items.begin(), items.end(), [](const Item* a, const Item* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const Item* item : items) {
        append_item_start(out, layout, depth + 1, first);
        first = false;
        append_python_string(out, item->first);
        out += ": ";
        append_python_json(out, item->second, depth + 1, layout);
      }
      append_closing_indent(out, layout, depth);
      out += '}';
      break;
    }
    case value_t::binary:
    case value_t::discarded:
      throw Error("a binary or discarded JSON value cannot be written as Python JSON; store numbers, strings, "
                  "lists or objects instead");
  }
}

/// What Python's `json.dumps(value, indent=2, sort_keys=True) + "\n"` returns (or the same with `layout`).
inline std::string dump_python_json(const nlohmann::json& value, const PythonJsonLayout& layout = {}) {
  std::string out;
  append_python_json(out, value, 0, layout);
  out += '\n';
  return out;
}

inline std::string dump_python_json(const nlohmann::ordered_json& value, const PythonJsonLayout& layout = {}) {
  std::string out;
  append_python_json(out, value, 0, layout);
  out += '\n';
  return out;
}

/// dump_python_json of `object` with one more member, `list_key`, whose list is written straight from `list`:
/// for a long list (a run's log_history) this saves copying every element into the object first.
template <class Element>
std::string dump_python_json_with_list(const nlohmann::json& object, const std::string& list_key,
                                       const std::vector<Element>& list) {
  std::vector<const std::string*> keys{&list_key};
  for (const auto& item : object.items()) keys.push_back(&item.key());
  std::sort(keys.begin(), keys.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
  std::string out = "{";
  const PythonJsonLayout layout;
  for (const std::string* key : keys) {
    append_item_start(out, layout, 1, out.size() == 1);
    append_python_string(out, *key);
    out += ": ";
    if (key == &list_key)
      append_python_list(out, list, 1);
    else
      append_python_json(out, object.at(*key), 1);
  }
  out += "\n}\n";
  return out;
}

/// Builds the document from nlohmann's SAX events, putting each non-finite value back in place of the 0 that
/// stood in for it, and stopping at max_json_depth. (nlohmann's parse-with-callback would do the same, but it
/// rescans the enclosing list after each object, which makes a long log_history quadratic to read.)
class PythonJsonSax {
 public:
  using json = nlohmann::json;
  PythonJsonSax(json& result, std::vector<std::pair<std::size_t, double>> specials, const std::string& source)
      : dom_(result), specials_(std::move(specials)), source_(source) {}

  bool null() { return dom_.null(); }
  bool boolean(bool value) { return dom_.boolean(value); }
  bool number_integer(json::number_integer_t value) { return special() ? substitute() : dom_.number_integer(value); }
  bool number_unsigned(json::number_unsigned_t value) { return special() ? substitute() : dom_.number_unsigned(value); }
  bool number_float(json::number_float_t value, const json::string_t& text) {
    return special() ? substitute() : dom_.number_float(value, text);
  }
  bool string(json::string_t& value) { return dom_.string(value); }
  bool binary(json::binary_t& value) { return dom_.binary(value); }
  bool start_object(std::size_t elements) {
    check_json_depth(depth_++, source_);
    return dom_.start_object(elements);
  }
  bool key(json::string_t& value) { return dom_.key(value); }
  bool end_object() {
    --depth_;
    return dom_.end_object();
  }
  bool start_array(std::size_t elements) {
    check_json_depth(depth_++, source_);
    return dom_.start_array(elements);
  }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>  // parse_error or out_of_range, thrown as its own type
  bool parse_error(std::size_t position, const std::string& token, const Exception& error) {
    return dom_.parse_error(position, token, error);
  }

 private:
  // Whether the number about to be stored, counted in document order, stood for NaN or an infinity.
  bool special() {
    const std::size_t index = numbers_++;
    return next_ < specials_.size() && specials_[next_].first == index;
  }
  bool substitute() { return dom_.number_float(specials_[next_++].second, ""); }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::pair<std::size_t, double>> specials_;  // (index among all numbers, value), in order
  const std::string& source_;
  std::size_t numbers_ = 0, next_ = 0;
  int depth_ = 0;
};

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

  nlohmann::json result;
  PythonJsonSax sax(result, std::move(specials), source);
  try {
    // nlohmann's own parser class, as json::sax_parse runs it: sax_parse itself also instantiates the
    // CBOR/MessagePack/BSON/UBJSON readers (a runtime switch on the format), a tenth of a Trainer's object code.
    using Adapter = nlohmann::detail::iterator_input_adapter<const char*>;
    const char* first = scrubbed.data();
    nlohmann::detail::parser<nlohmann::json, Adapter>(Adapter(first, first + scrubbed.size())).sax_parse(&sax);
    return result;
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

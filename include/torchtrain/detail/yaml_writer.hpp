// SPDX-License-Identifier: MIT
// YAML in the block style that ruamel.yaml's round-trip dumper writes (YAML 1.2, width 80, allow_unicode), for
// files that Python tools read back with ruamel.yaml or PyYAML (DVCLive's params.yaml and dvc.yaml).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <regex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/python_json.hpp"

namespace torchtrain::detail {

namespace yaml {

inline std::u32string to_code_points(std::string_view text) {
  std::u32string points;
  for (std::size_t pos = 0; pos < text.size();) points += next_code_point(text, pos);
  return points;
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

inline bool is_line_break(char32_t c) { return c == U'\n' || c == 0x85 || c == 0x2028 || c == 0x2029; }
inline bool is_blank_or_break(char32_t c) { return c == 0 || c == U' ' || c == U'\t' || c == U'\r' || is_line_break(c); }

/// Whether a plain scalar `text` would read back as something other than a string under ruamel's YAML 1.2
/// resolver (bool, int, float, null, timestamp, merge, value): such a string must be quoted.
inline bool resolves_as_non_string(const std::string& text) {
  static const std::regex implicit(
      "true|True|TRUE|false|False|FALSE"
      "|[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
      "|[-+]?\\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN)"
      "|[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+"
      "|<<|~|null|Null|NULL|="
      "|[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
      "|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \\t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\\.[0-9]*)?"
      "(?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?");
  return text.empty() || std::regex_match(text, implicit);
}

struct ScalarAnalysis {
  bool empty = false, multiline = false, allow_block_plain = true, allow_single_quoted = true;
};

// ruamel's Emitter.analyze_scalar for the block context.
inline ScalarAnalysis analyze_scalar(const std::u32string& s) {
  ScalarAnalysis a;
  if (s.empty()) {
    a.empty = true;
    return a;
  }
  bool block_indicators = false, line_breaks = false, special = false;
  bool leading_space = false, leading_break = false, trailing_space = false, trailing_break = false;
  bool break_space = false, space_break = false;
  if (s.compare(0, 3, U"---") == 0 || s.compare(0, 3, U"...") == 0) block_indicators = true;
  bool preceded_by_whitespace = true;
  bool followed_by_whitespace = s.size() == 1 || is_blank_or_break(s[1]);
  bool previous_space = false, previous_break = false;
  for (std::size_t index = 0; index < s.size();) {
    const char32_t ch = s[index];
    if (index == 0) {
      if (std::u32string_view(U"#,[]{}&*!|>'\"%@`").find(ch) != std::u32string_view::npos) block_indicators = true;
      if ((ch == U'?' || ch == U':') && followed_by_whitespace) block_indicators = true;
      if (ch == U'-' && followed_by_whitespace) block_indicators = true;
    } else {
      if (ch == U':' && followed_by_whitespace) block_indicators = true;
      if (ch == U'#' && preceded_by_whitespace) block_indicators = true;
    }
    if (is_line_break(ch)) line_breaks = true;
    if (!(ch == U'\n' || (ch >= 0x20 && ch <= 0x7E))) {
      const bool printable = (ch == 0x85 || (ch >= 0xA0 && ch <= 0xD7FF) || (ch >= 0xE000 && ch <= 0xFFFD) ||
                              (ch >= 0x10000 && ch <= 0x10FFFF)) &&
                             ch != 0xFEFF;
      if (!printable) special = true;
    }
    if (ch == U' ') {
      if (index == 0) leading_space = true;
      if (index == s.size() - 1) trailing_space = true;
      if (previous_break) break_space = true;
      previous_space = true;
      previous_break = false;
    } else if (is_line_break(ch)) {
      if (index == 0) leading_break = true;
      if (index == s.size() - 1) trailing_break = true;
      if (previous_space) space_break = true;
      previous_space = false;
      previous_break = true;
    } else {
      previous_space = previous_break = false;
    }
    ++index;
    preceded_by_whitespace = is_blank_or_break(ch);
    followed_by_whitespace = index + 1 >= s.size() || is_blank_or_break(s[index + 1]);
  }
  if (leading_space || leading_break || trailing_space || trailing_break) a.allow_block_plain = false;
  if (break_space) a.allow_block_plain = a.allow_single_quoted = false;
  if (special || space_break) a.allow_block_plain = a.allow_single_quoted = false;
  if (line_breaks) a.allow_block_plain = false;
  if (block_indicators) a.allow_block_plain = false;
  a.multiline = line_breaks;
  return a;
}

}  // namespace yaml

/// Writes a YAML document as ruamel.yaml's round-trip dumper does in block style: mappings indented by 2,
/// sequence dashes at their key's column, None as an empty value, strings quoted only when YAML needs it, and
/// plain and quoted scalars folded at spaces past column 80.
class YamlWriter {
 public:
  static constexpr std::size_t kBestWidth = 80;

  /// A mapping or sequence at `indent` (the column of its keys or dashes).
  static std::string document(const nlohmann::ordered_json& value, std::size_t indent = 0) {
    YamlWriter e;
    if (value.is_object() && !value.empty())
      e.mapping(value, indent);
    else if (value.is_array() && !value.empty())
      e.sequence(value, indent);
    else {
      e.out_.append(indent, ' ');
      e.column_ = indent;
      e.scalar_or_empty(value, indent, false, true);
      e.out_ += '\n';
    }
    return e.out_;
  }

 private:
  void mapping(const nlohmann::ordered_json& object, std::size_t indent, bool first_line_written = false) {
    bool first = true;
    for (const auto& [key, value] : object.items()) {
      if (!(first && first_line_written)) {
        out_.append(indent, ' ');
        column_ = indent;
      }
      first = false;
      string_scalar(yaml::to_code_points(key), indent, /*simple_key=*/true, /*after_whitespace=*/true);
      raw(":");
      node(value, indent + 2, indent + 2, false);
    }
  }

  void sequence(const nlohmann::ordered_json& array, std::size_t indent, bool first_line_written = false) {
    bool first = true;
    for (const auto& item : array) {
      if (!(first && first_line_written)) {
        out_.append(indent, ' ');
        column_ = indent;
      }
      first = false;
      raw("- ");
      node(item, indent + 2, indent + 2, true);
    }
  }

  // A value after "key:" (its continuation lines at `scalar_indent`) or after "- " (`after_whitespace`).
  void node(const nlohmann::ordered_json& value, std::size_t child_indent, std::size_t scalar_indent,
            bool after_whitespace) {
    if (value.is_object() && !value.empty()) {
      if (after_whitespace) {
        mapping(value, child_indent, true);
      } else {
        out_ += '\n';
        mapping(value, child_indent);
      }
      return;
    }
    if (value.is_array() && !value.empty()) {
      if (after_whitespace) {
        sequence(value, child_indent, true);
      } else {
        out_ += '\n';
        sequence(value, child_indent - 2);  // dashes at the key's column
      }
      return;
    }
    scalar_or_empty(value, scalar_indent, false, after_whitespace);
    out_ += '\n';
  }

  void scalar_or_empty(const nlohmann::ordered_json& value, std::size_t indent, bool simple_key, bool after_whitespace) {
    const auto prefix = [&] {
      if (!after_whitespace) raw(" ");
    };
    switch (value.type()) {
      case nlohmann::json::value_t::null: return;  // "key:" alone, "- " alone
      case nlohmann::json::value_t::object: prefix(); raw("{}"); return;
      case nlohmann::json::value_t::array: prefix(); raw("[]"); return;
      case nlohmann::json::value_t::boolean: prefix(); raw(value.get<bool>() ? "true" : "false"); return;
      case nlohmann::json::value_t::number_integer: prefix(); raw(std::to_string(value.get<std::int64_t>())); return;
      case nlohmann::json::value_t::number_unsigned: prefix(); raw(std::to_string(value.get<std::uint64_t>())); return;
      case nlohmann::json::value_t::number_float: {
        const double v = value.get<double>();
        prefix();
        if (std::isnan(v))
          raw(".nan");
        else if (std::isinf(v))
          raw(v > 0 ? ".inf" : "-.inf");
        else
          raw(python_float_repr(v));  // repr(data).lower(): Python's repr has no capitals for finite values
        return;
      }
      case nlohmann::json::value_t::string:
        string_scalar(yaml::to_code_points(value.get_ref<const std::string&>()), indent, simple_key, after_whitespace);
        return;
      default: prefix(); raw("''"); return;
    }
  }

  // ruamel's choose_scalar_style, then write_plain / write_single_quoted / write_double_quoted.
  void string_scalar(const std::u32string& text, std::size_t indent, bool simple_key, bool after_whitespace) {
    const yaml::ScalarAnalysis a = yaml::analyze_scalar(text);
    std::string utf8;
    for (char32_t c : text) yaml::append_utf8(utf8, c);
    const bool split = !simple_key;
    if (!yaml::resolves_as_non_string(utf8) && !(simple_key && (a.empty || a.multiline)) && a.allow_block_plain) {
      if (!after_whitespace) raw(" ");
      plain(text, indent, split);
      return;
    }
    if (!after_whitespace) raw(" ");
    const bool other_breaks = text.find_first_of(U"\x85\u2028\u2029") != std::u32string::npos;
    if (text.find_first_of(U"'\n") != std::u32string::npos || other_breaks) {
      double_quoted(text, indent, split);
    } else if (a.allow_single_quoted && !(simple_key && a.multiline)) {
      single_quoted(text, indent, split);
    } else {
      double_quoted(text, indent, split);
    }
  }

  void plain(const std::u32string& t, std::size_t indent, bool split) {
    bool spaces = false;
    std::size_t start = 0;
    for (std::size_t end = 0; end <= t.size(); ++end) {
      const bool at_end = end == t.size();
      const char32_t ch = at_end ? 0 : t[end];
      if (spaces) {
        if (at_end || ch != U' ') {
          if (start + 1 == end && column_ > kBestWidth && split)
            indent_line(indent);
          else
            write(t, start, end);
          start = end;
        }
      } else if (at_end || ch == U' ') {
        write(t, start, end);
        start = end;
      }
      if (!at_end) spaces = ch == U' ';
    }
  }

  void single_quoted(const std::u32string& t, std::size_t indent, bool split) {
    raw("'");
    bool spaces = false;
    std::size_t start = 0;
    for (std::size_t end = 0; end <= t.size(); ++end) {
      const bool at_end = end == t.size();
      const char32_t ch = at_end ? 0 : t[end];
      if (spaces) {
        if (at_end || ch != U' ') {
          if (start + 1 == end && column_ > kBestWidth && split && start != 0 && end != t.size())
            indent_line(indent);
          else
            write(t, start, end);
          start = end;
        }
      } else if (at_end || ch == U' ' || ch == U'\'') {
        if (start < end) {
          write(t, start, end);
          start = end;
        }
      }
      if (!at_end && ch == U'\'') {
        raw("''");
        start = end + 1;
      }
      if (!at_end) spaces = ch == U' ';
    }
    raw("'");
  }

  void double_quoted(const std::u32string& t, std::size_t indent, bool split) {
    raw("\"");
    std::size_t start = 0;
    for (std::size_t end = 0; end <= t.size(); ++end) {
      const bool at_end = end == t.size();
      const char32_t ch = at_end ? 0 : t[end];
      const bool kept = !at_end && ch != U'"' && ch != U'\\' && ch != 0x85 && ch != 0x2028 && ch != 0x2029 &&
                        ch != 0xFEFF &&
                        ((ch >= 0x20 && ch <= 0x7E) || (ch >= 0xA0 && ch <= 0xD7FF) || (ch >= 0xE000 && ch <= 0xFFFD));
      if (!kept) {
        if (start < end) {
          write(t, start, end);
          start = end;
        }
        if (!at_end) {
          raw(escape(ch));
          start = end + 1;
        }
      }
      if (end > 0 && end + 1 < t.size() && (ch == U' ' || start >= end) && column_ + (end - start) > kBestWidth &&
          split) {
        if (start < end) {
          write(t, start, end);
          start = end;
        }
        raw("\\");
        indent_line(indent);
        if (t[start] == U' ') raw("\\");
      }
    }
    raw("\"");
  }

  static std::string escape(char32_t ch) {
    switch (ch) {
      case 0: return "\\0";
      case 0x07: return "\\a";
      case 0x08: return "\\b";
      case 0x09: return "\\t";
      case 0x0A: return "\\n";
      case 0x0B: return "\\v";
      case 0x0C: return "\\f";
      case 0x0D: return "\\r";
      case 0x1B: return "\\e";
      case U'"': return "\\\"";
      case U'\\': return "\\\\";
      case 0x85: return "\\N";
      case 0xA0: return "\\_";
      case 0x2028: return "\\L";
      case 0x2029: return "\\P";
      default: break;
    }
    char text[16];
    if (ch <= 0xFF)
      std::snprintf(text, sizeof text, "\\x%02X", static_cast<unsigned>(ch));
    else if (ch <= 0xFFFF)
      std::snprintf(text, sizeof text, "\\u%04X", static_cast<unsigned>(ch));
    else
      std::snprintf(text, sizeof text, "\\U%08X", static_cast<unsigned>(ch));
    return text;
  }

  void raw(std::string_view ascii) {
    out_ += ascii;
    column_ += ascii.size();
  }
  void write(const std::u32string& t, std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) yaml::append_utf8(out_, t[i]);
    column_ += to - from;
  }
  void indent_line(std::size_t indent) {
    out_ += '\n';
    out_.append(indent, ' ');
    column_ = indent;
  }

  std::string out_;
  std::size_t column_ = 0;  // in code points, as Python counts
};

}  // namespace torchtrain::detail

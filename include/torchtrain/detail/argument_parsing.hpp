// SPDX-License-Identifier: MIT
// Reading a list of bound arguments from a JSON object, a JSON file or command-line tokens, and printing
// their --help. Knows nothing of TrainingArguments: it sees names, value pointers and help lines, and the
// arguments struct as a template parameter (whose fields argument_fields.hpp lists).
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/argument_fields.hpp"
#include "torchtrain/detail/argument_value.hpp"
#include "torchtrain/detail/edit_distance.hpp"
#include "torchtrain/detail/json_limits.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain::detail {

using ArgumentList = std::vector<BoundArgument>;

inline const BoundArgument* find_argument(const ArgumentList& arguments, std::string_view name) {
  for (const auto& argument : arguments)
    if (argument.name == name) return &argument;
  return nullptr;
}

inline std::string closest_argument(const ArgumentList& arguments, std::string_view name) {
  std::vector<std::string_view> names;
  for (const auto& argument : arguments) names.push_back(argument.name);
  return closest_name(name, names);
}

/// Sets every argument named by a key of `object`. Unknown keys are ignored with one warning (files written by
/// Python's Trainer hold many fields torchtrain does not have); a wrong type or a bad value throws.
inline void apply_json_object(const ArgumentList& arguments, const nlohmann::json& object, const std::string& source) {
  if (!object.is_object())
    throw FileFormatError(source + ": expected a JSON object of argument names and values, not " +
                          describe_json(object));
  std::vector<std::string> unknown;
  for (const auto& [key, value] : object.items()) {
    if (const BoundArgument* argument = find_argument(arguments, key)) {
      read_json(argument->value, value, key, source);
      continue;
    }
    const std::string guess = closest_argument(arguments, key);
    unknown.push_back("\"" + key + "\"" + (guess.empty() ? "" : " (did you mean \"" + guess + "\"?)"));
  }
  if (unknown.empty()) return;
  constexpr std::size_t shown = 10;
  std::string list;
  for (std::size_t i = 0; i < std::min(shown, unknown.size()); ++i) list += (i ? ", " : "") + unknown[i];
  if (unknown.size() > shown) list += " and " + std::to_string(unknown.size() - shown) + " more";
  warn(source + ": ignoring " + std::to_string(unknown.size()) + " unknown key" + (unknown.size() > 1 ? "s" : "") +
       ": " + list);
}

/// The JSON value in `text`, read from `source` (a path); throws FileFormatError naming it when the text is
/// empty or malformed.
inline nlohmann::json parse_json_text(const std::string& text, const std::string& source) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    throw FileFormatError(source + ": the file is empty; expected a JSON object such as {\"learning_rate\": 3e-4}");
  const auto limit_depth = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start)
      check_json_depth(depth, source);
    return true;
  };
  try {
    return nlohmann::json::parse(text, limit_depth);
  } catch (const nlohmann::json::parse_error& e) {
    const bool cut_short = e.byte >= text.size();
    throw FileFormatError(source + ": not valid JSON" +
                          (cut_short ? " (the file ends too early; is it truncated?)" : "") + ": " +
                          json_error_reason(e));
  } catch (const nlohmann::json::out_of_range& e) {  // a number beyond a double's range, such as 1e999
    throw FileFormatError(source + ": not valid JSON: " + json_error_reason(e));
  }
}

/// The JSON value in the file at `path`; throws FileFormatError naming the path for a missing, empty or
/// malformed file.
inline nlohmann::json read_json_file(const std::string& path) { return parse_json_text(read_text_file(path), path); }

inline bool is_help_token(std::string_view token) { return token == "-h" || token == "--help"; }

inline bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

inline bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

/// Command-line tokens (argv without the program name), as the parser walks them.
class CommandLine {
 public:
  CommandLine(int argc, const char* const* argv) {
    for (int i = 1; i < argc; ++i) tokens_.emplace_back(argv[i]);
  }

  /// --help or -h anywhere before a "--" terminator.
  bool help_requested() const {
    for (const auto& token : tokens_) {
      if (token == "--") return false;
      if (is_help_token(token)) return true;
    }
    return false;
  }

  /// The JSON file to read before the flags: `--config FILE`, `--config=FILE`, or a leading `FILE.json`
  /// (as Hugging Face's HfArgumentParser accepts).
  std::optional<std::string> config_path() const {
    std::optional<std::string> path;
    const auto set = [&](const std::string& value) {
      if (path) throw ArgumentError("--config given twice (" + *path + " and " + value + "); give one JSON file");
      path = value;
    };
    if (!tokens_.empty() && is_leading_config(tokens_[0])) set(tokens_[0]);
    for (std::size_t i = 0; i < tokens_.size() && tokens_[i] != "--"; ++i) {
      if (tokens_[i] == "--config") {
        if (i + 1 >= tokens_.size() || starts_with(tokens_[i + 1], "--"))
          throw ArgumentError("--config: missing value; usage: --config FILE.json");
        set(tokens_[++i]);
      } else if (starts_with(tokens_[i], "--config=")) {
        set(tokens_[i].substr(9));
      }
    }
    return path;
  }

  /// Applies every flag to `arguments`, left to right (a repeated flag: the last one wins). Tokens that
  /// match no argument are returned when `allow_unrecognized`, otherwise they throw ArgumentError.
  std::vector<std::string> apply(const ArgumentList& arguments, bool allow_unrecognized) const {
    std::vector<std::string> unrecognized;
    const auto reject = [&](const std::string& token, const std::string& message) {
      if (!allow_unrecognized) throw ArgumentError(message);
      unrecognized.push_back(token);
    };
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      const std::string& token = tokens_[i];
      if (token == "--") {
        if (!allow_unrecognized && i + 1 < tokens_.size())
          throw ArgumentError("unexpected argument '" + tokens_[i + 1] + "' after --");
        unrecognized.insert(unrecognized.end(), tokens_.begin() + static_cast<std::ptrdiff_t>(i) + 1, tokens_.end());
        break;
      }
      if (i == 0 && is_leading_config(token)) continue;
      if (starts_with(token, "-") && !starts_with(token, "--") && token.size() > 1 &&
          !std::isdigit(static_cast<unsigned char>(token[1])) && token[1] != '.') {
        reject(token, "unknown flag " + token + "; flags are spelled --name (see --help)");
        continue;
      }
      if (!starts_with(token, "--")) {
        reject(token, "unexpected argument '" + token +
                          "'; flags take one value each (lists are comma separated: --report_to tensorboard,csv)");
        continue;
      }
      const std::size_t equals = token.find('=');
      const std::string name = token.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
      const std::optional<std::string> inline_value =
          equals == std::string::npos ? std::nullopt : std::optional<std::string>(token.substr(equals + 1));
      if (name == "config") {
        if (!inline_value) ++i;  // config_path() has read it already
        continue;
      }
      const BoundArgument* argument = find_argument(arguments, name);
      if (!argument && starts_with(name, "no_")) {
        // --no_flag sets a boolean flag to false.
        const BoundArgument* negated = find_argument(arguments, name.substr(3));
        if (negated && is_boolean(negated->value)) {
          if (inline_value)
            throw ArgumentError("--" + name + " takes no value; use --" + name.substr(3) + "=" + *inline_value);
          parse_text(negated->value, "false", "--" + name);
          continue;
        }
      }
      if (!argument) {
        const std::string guess = closest_argument(arguments, name);
        reject(token, "unknown flag --" + name +
                          (guess.empty() ? "; see --help for the list" : "; did you mean --" + guess + "?"));
        continue;
      }
      const std::string flag = "--" + name;
      if (inline_value) {
        parse_text(argument->value, *inline_value, flag);
      } else if (is_boolean(argument->value)) {
        // A bare boolean flag means true; a following true/false/yes/no/1/0 (or none) is its value.
        const bool has_value =
            i + 1 < tokens_.size() &&
            (ValueTraits<bool>::try_parse(tokens_[i + 1]) ||
             (std::holds_alternative<std::optional<bool>*>(argument->value) && is_none_text(tokens_[i + 1])));
        parse_text(argument->value, has_value ? tokens_[++i] : "true", flag);
      } else if (i + 1 < tokens_.size() && !starts_with(tokens_[i + 1], "--")) {
        parse_text(argument->value, tokens_[++i], flag);
      } else {
        throw ArgumentError(flag + ": missing value; usage: " + flag + " " + metavar(argument->value));
      }
    }
    return unrecognized;
  }

 private:
  static bool is_leading_config(std::string_view token) {
    return !starts_with(token, "-") && ends_with(token, ".json");
  }

  std::vector<std::string> tokens_;
};

struct HelpSection {
  std::string title;
  const ArgumentList* arguments;
};

/// One line per argument: flag, placeholder, help line and default.
inline void write_help(std::ostream& out, std::string_view program, std::string_view description,
                       const std::vector<HelpSection>& sections) {
  constexpr std::size_t column = 44;  // longer flags put their help on the next line
  const auto line = [&](const std::string& flag, const std::string& help) {
    out << "  " << flag;
    if (flag.size() + 4 > column)
      out << '\n' << std::string(column, ' ');
    else
      out << std::string(column - 2 - flag.size(), ' ');
    out << help << '\n';
  };
  out << "usage: " << program << " [FILE.json] [--config FILE.json] [--FLAG VALUE ...]\n";
  if (!description.empty()) out << '\n' << description << '\n';
  out << "\noptions:\n";
  line("-h, --help", "show this help and exit");
  line("--config FILE.json", "read arguments from a JSON file first; flags given here override it");
  for (const auto& section : sections) {
    if (section.arguments->empty()) continue;
    out << '\n' << section.title << ":\n";
    for (const auto& argument : *section.arguments)
      line("--" + argument.name + " " + metavar(argument.value),
           argument.help + " (default: " + value_text(argument.value) + ")");
  }
  out << "\nBooleans: a bare --FLAG means true; --no_FLAG means false. Optional values accept none.\n";
}

/// --help for a program's own arguments followed by the fields of `defaults`, each with its default.
template <class Args>
void write_arguments_help(std::ostream& out, std::string_view program, std::string_view description,
                          const ArgumentList& program_arguments, Args defaults) {
  const ArgumentList fields = bind_argument_fields(defaults);
  write_help(out, program, description, {{"program options", &program_arguments}, {"training arguments", &fields}});
}

/// Parses a command line into `args`, which holds the defaults, and into `program_arguments`: the JSON file of
/// --config (or a leading FILE.json) first, then the flags; then validates `args`. Tokens no argument claims are
/// appended to `unrecognized`, or, when it is null, throw ArgumentError. With --help or -h, writes the help to
/// `help_out`, changes nothing and returns true.
template <class Args>
bool parse_command_line(int argc, const char* const* argv, Args& args, const ArgumentList& program_arguments,
                        std::string_view description, std::ostream& help_out, std::vector<std::string>* unrecognized) {
  const CommandLine command_line(argc, argv);
  if (command_line.help_requested()) {
    std::string program = argc > 0 ? argv[0] : "train";
    program.erase(0, program.find_last_of('/') + 1);
    write_arguments_help(help_out, program, description, program_arguments, args);
    return true;
  }
  ArgumentList arguments = program_arguments;
  const ArgumentList fields = bind_argument_fields(args);
  arguments.insert(arguments.end(), fields.begin(), fields.end());
  if (const auto path = command_line.config_path()) apply_json_object(arguments, read_json_file(*path), *path);
  std::vector<std::string> left = command_line.apply(arguments, unrecognized != nullptr);
  if (unrecognized) *unrecognized = std::move(left);
  args.validate();
  return false;
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// ArgumentParser: the command line of a program, TrainingArguments' flags plus the program's own, as Hugging
// Face's HfArgumentParser reads them.
#pragma once

#include <iostream>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "torchtrain/detail/argument_fields.hpp"
#include "torchtrain/detail/argument_parsing.hpp"
#include "torchtrain/detail/argument_value.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/training_arguments.hpp"

namespace torchtrain {

/// What ArgumentParser returns.
struct ParseResult {
  TrainingArguments args;                 // validated; the defaults when help was requested
  std::vector<std::string> unrecognized;  // parse_known only: tokens no flag claimed, in order
  bool help_requested = false;            // --help/-h: help was printed and nothing else was done; exit 0
};

/// Command-line parser for TrainingArguments plus a program's own flags.
///
///   --name value, --name=value     every argument
///   --flag, --flag true|false      booleans (also yes/no, 1/0); --no_flag sets false
///   --name none                    unsets an optional argument (eval_steps, save_total_limit, ...)
///   --report_to tensorboard,csv    lists are one comma-separated value
///   --config FILE.json, or a leading FILE.json
///                                  reads arguments first; flags on the command line override them,
///                                  wherever they stand. Program flags may be set in the file too.
///   -h, --help                     prints every flag with its default and help line
///
/// A repeated flag: the last one wins. Anything after "--" is left unparsed.
class ArgumentParser {
 public:
  /// `defaults` are the values before any flag; --help shows them.
  explicit ArgumentParser(std::string description = "", TrainingArguments defaults = {})
      : description_(std::move(description)), defaults_(std::move(defaults)) {}

  /// Registers --name, written to `target` when given; the value `target` holds now is the default shown by
  /// --help. T: std::string, std::int64_t, std::uint64_t, double, bool, std::optional of these, or
  /// std::vector<std::string>.
  template <class T>
  ArgumentParser& add_argument(std::string name, T& target, std::string help);

  /// Parses every token; an unknown flag or stray value throws ArgumentError with the closest valid flag.
  ParseResult parse(int argc, const char* const* argv, std::ostream& help_out = std::cout) const {
    return run(argc, argv, help_out, false);
  }
  /// Like parse(), but returns the tokens it does not know in ParseResult::unrecognized.
  ParseResult parse_known(int argc, const char* const* argv, std::ostream& help_out = std::cout) const {
    return run(argc, argv, help_out, true);
  }

  void print_help(std::ostream& out, std::string_view program = "train") const;

 private:
  ParseResult run(int argc, const char* const* argv, std::ostream& help_out, bool allow_unrecognized) const;

  std::string description_;
  TrainingArguments defaults_;
  detail::ArgumentList program_arguments_;
};

template <class T>
ArgumentParser& ArgumentParser::add_argument(std::string name, T& target, std::string help) {
  static_assert(std::is_constructible_v<detail::ValueRef, T*>,
                "add_argument: the target must be std::string, std::int64_t, std::uint64_t, double, bool, "
                "std::optional of one of these, or std::vector<std::string>");
  if (detail::starts_with(name, "--")) name.erase(0, 2);
  TrainingArguments probe;
  const bool taken = name == "help" || name == "h" || name == "config" ||
                     detail::find_argument(program_arguments_, name) ||
                     detail::find_argument(detail::bind_argument_fields(probe), name);
  if (name.empty() || name.find_first_of("= \t") != std::string::npos || detail::starts_with(name, "-"))
    throw ArgumentError("ArgumentParser::add_argument: '" + name +
                        "' is not a valid flag name; use letters, digits "
                        "and underscores");
  if (taken) throw ArgumentError("ArgumentParser::add_argument: --" + name + " already exists; choose another name");
  program_arguments_.push_back({std::move(name), detail::ValueRef(&target), std::move(help)});
  return *this;
}

inline void ArgumentParser::print_help(std::ostream& out, std::string_view program) const {
  detail::write_arguments_help(out, program, description_, program_arguments_, defaults_);
}

inline ParseResult ArgumentParser::run(int argc, const char* const* argv, std::ostream& help_out,
                                       bool allow_unrecognized) const {
  ParseResult result;
  result.args = defaults_;
  result.help_requested = detail::parse_command_line(argc, argv, result.args, program_arguments_, description_,
                                                     help_out, allow_unrecognized ? &result.unrecognized : nullptr);
  return result;
}

}  // namespace torchtrain

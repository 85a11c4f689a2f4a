// SPDX-License-Identifier: MIT
// The command line: ArgumentParser::parse and parse_known over TrainingArguments plus program flags of every
// value type. The input is argv without the program name, one token per line. Tokens that would read a
// --config file are skipped (training_args covers the JSON reader; the fuzzer must not open arbitrary paths).
// Arguments that parse must survive a JSON round trip unchanged.
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <torchtrain/training_arguments.hpp>

#include "fuzz_target.hpp"

namespace {

bool reads_a_file(std::string_view token) {
  using torchtrain::detail::ends_with;
  using torchtrain::detail::starts_with;
  return token == "--config" || starts_with(token, "--config=") || ends_with(token, ".json");
}

}  // namespace

TORCHTRAIN_FUZZ_TARGET(command_line) {
  using namespace torchtrain;
  fuzz::quiet_warnings();
  std::vector<std::string> tokens{"train"};
  for (std::string_view rest = fuzz::as_text(data, size); !rest.empty();) {
    const std::size_t newline = rest.find('\n');
    tokens.emplace_back(rest.substr(0, newline));
    if (reads_a_file(tokens.back())) return 0;
    rest = newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
  }
  std::vector<const char*> argv;
  for (const auto& token : tokens) argv.push_back(token.c_str());
  const int argc = static_cast<int>(argv.size());

  std::string train_file;
  std::int64_t hidden_size = 64;
  std::uint64_t count = 0;
  double dropout = 0.1;
  bool verbose = false;
  std::optional<std::int64_t> patience;
  std::optional<double> threshold;
  std::optional<std::string> trace_events;
  std::optional<bool> shuffle;
  std::vector<std::string> layers{"a", "b"};
  ArgumentParser parser("fuzzed program");
  parser.add_argument("train_file", train_file, "a path")
      .add_argument("hidden_size", hidden_size, "an int")
      .add_argument("count", count, "an unsigned int")
      .add_argument("dropout", dropout, "a float")
      .add_argument("verbose", verbose, "a bool")
      .add_argument("early_stopping_patience", patience, "an optional int")
      .add_argument("threshold", threshold, "an optional float")
      .add_argument("trace_events", trace_events, "an optional string")
      .add_argument("shuffle", shuffle, "an optional bool")
      .add_argument("layers", layers, "a list");

  std::ostringstream help;
  std::optional<ParseResult> result;
  fuzz::expect_only_torchtrain_errors([&] { result = parser.parse(argc, argv.data(), help); });
  fuzz::expect_only_torchtrain_errors([&] { parser.parse_known(argc, argv.data(), help); });
  if (!result || result->help_requested) return 0;

  const std::string written = result->args.to_json_string();
  try {
    const TrainingArguments again =
        TrainingArguments::from_json(detail::parse_json_text(written, "written"), "written");
    fuzz::check(again.to_json_string() == written, "parsed arguments changed when written to JSON and read back");
  } catch (const Error& e) {
    throw fuzz::PropertyViolation(std::string("parsed arguments cannot read back their own JSON: ") + e.what());
  }
  return 0;
}

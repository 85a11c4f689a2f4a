// SPDX-License-Identifier: MIT
// training_args.json: the JSON reader of TrainingArguments::load_from_json and TrainingArguments::from_json
// (types, values, validation). Arguments that read must survive their own JSON round trip unchanged.
#include <optional>
#include <string>

#include <torchtrain/training_arguments.hpp>

#include "fuzz_target.hpp"

TORCHTRAIN_FUZZ_TARGET(training_args) {
  using namespace torchtrain;
  fuzz::quiet_warnings();
  const std::string text(fuzz::as_text(data, size));

  std::optional<TrainingArguments> args;
  fuzz::expect_only_torchtrain_errors([&] {
    args = TrainingArguments::from_json(detail::parse_json_text(text, "training_args.json"), "training_args.json");
  });
  if (!args) return 0;

  const std::string written = args->to_json_string();
  try {
    const TrainingArguments again =
        TrainingArguments::from_json(detail::parse_json_text(written, "written"), "written");
    fuzz::check(again.to_json_string() == written, "training_args.json changed when written, read and written again");
  } catch (const Error& e) {
    throw fuzz::PropertyViolation(std::string("arguments that were read cannot read back what they write: ") +
                                  e.what());
  }
  return 0;
}

// SPDX-License-Identifier: MIT
// trainer_state.json: the Python-flavoured JSON reader and TrainerState::from_json. A state that reads must
// write, read back and write again to the same bytes.
#include <optional>
#include <string>

#include <torchtrain/detail/python_json.hpp>
#include <torchtrain/trainer_state.hpp>

#include "fuzz_target.hpp"

TORCHTRAIN_FUZZ_TARGET(trainer_state) {
  using namespace torchtrain;
  fuzz::quiet_warnings();
  const std::string text(fuzz::as_text(data, size));

  std::optional<TrainerState> state;
  fuzz::expect_only_torchtrain_errors([&] {
    state = TrainerState::from_json(detail::parse_python_json(text, "trainer_state.json"), "trainer_state.json");
  });
  if (!state) return 0;

  for (const auto& item : state->stateful_callbacks.items()) state->stateful_callback_states(item.key());
  const std::string written = state->to_json_string();
  try {
    const TrainerState again = TrainerState::from_json(detail::parse_python_json(written, "written"), "written");
    fuzz::check(again.to_json_string() == written, "trainer_state.json changed when written, read and written again");
  } catch (const Error& e) {
    throw fuzz::PropertyViolation(std::string("a state that was read cannot read back what it writes: ") + e.what());
  }
  return 0;
}

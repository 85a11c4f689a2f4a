// Compiled, not run, by the headers.* tests: the heavier members of TrainingArguments and TrainerState can be
// called where their definitions are included, and not where only the structs are. WITH_DEFINITIONS selects
// which headers this file includes; CALL selects the member it calls.
#ifdef WITH_DEFINITIONS
#include <torchtrain/trainer_state.hpp>
#include <torchtrain/training_arguments.hpp>
#else
#include <torchtrain/trainer_callback.hpp>
#include <torchtrain/training_arguments_fields.hpp>
#endif

std::size_t use(torchtrain::TrainingArguments& args, torchtrain::TrainerState& state) {
#if CALL == 1
  args.validate();
  return args.to_json().size();
#elif CALL == 2
  return torchtrain::TrainingArguments::from_json({{"seed", 1}}).seed;
#elif CALL == 3
  const char* argv[] = {"train"};
  return torchtrain::TrainingArguments::parse(1, argv).seed;
#elif CALL == 4
  return state.to_json_string().size();
#elif CALL == 5
  return torchtrain::TrainerState::load_from_json("trainer_state.json").log_history.size();
#elif CALL == 6
  state.compute_steps(args, 100);
  return 0;
#endif
}

// Tests of the callback system: DefaultFlowCallback's decisions, the CallbackHandler's dispatch, flag resets and
// list management, and the built-in callbacks (early stopping, printer, progress, event trace), driven with
// synthetic states and event sequences as the training loop would drive them (REF §1.2, §2, §4-§7).
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>  // getpid, used by support.hpp

#include "support.hpp"
#include "terminal.hpp"
#include "torchtrain/callback_handler.hpp"
#include "torchtrain/callbacks/default_flow.hpp"
#include "torchtrain/callbacks/early_stopping.hpp"
#include "torchtrain/callbacks/event_trace.hpp"
#include "torchtrain/callbacks/printer.hpp"
#include "torchtrain/callbacks/progress.hpp"
#include "torchtrain/callbacks/sample_text.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/python_repr.hpp"
#include "torchtrain/detail/round.hpp"

namespace tt = torchtrain;
using tt::CallbackContext;
using tt::CallbackHandler;
using tt::DefaultFlowCallback;
using tt::IntervalStrategy;
using tt::SaveStrategy;
using tt::TrainerControl;
using tt::TrainerState;
using tt::TrainingArguments;

namespace {

// The flags that are set, in a fixed order, e.g. "log eval save stop"; "" when none is.
std::string flags(const TrainerControl& c) {
  std::string out;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(c.should_log, "log");
  add(c.should_evaluate, "eval");
  add(c.should_save, "save");
  add(c.should_training_stop, "stop");
  add(c.should_epoch_stop, "epoch_stop");
  return out;
}

TrainerControl all_flags_set() {
  TrainerControl c;
  c.should_training_stop = c.should_epoch_stop = c.should_save = c.should_evaluate = c.should_log = true;
  return c;
}

// Arguments with every interval disabled; each test turns on what it exercises.
TrainingArguments quiet_args() {
  TrainingArguments a;
  a.logging_strategy = IntervalStrategy::no;
  a.eval_strategy = IntervalStrategy::no;
  a.save_strategy = SaveStrategy::no;
  return a;
}

TrainerState make_state(std::int64_t max_steps, std::int64_t logging_steps = 500, std::int64_t eval_steps = 500,
                        std::int64_t save_steps = 500) {
  TrainerState s;
  s.max_steps = max_steps;
  s.logging_steps = logging_steps;
  s.eval_steps = eval_steps;
  s.save_steps = save_steps;
  return s;
}

// What DefaultFlowCallback decides in on_step_end at `step`, starting from a clear control.
std::string step_end_flags(const TrainingArguments& args, TrainerState state, std::int64_t step) {
  state.global_step = step;
  state.epoch = static_cast<double>(step) / 4.0;
  TrainerControl control;
  DefaultFlowCallback().on_step_end(args, state, control, CallbackContext{});
  return flags(control);
}

// What DefaultFlowCallback decides in on_epoch_end at fractional epoch `epoch`, starting from a clear control.
std::string epoch_end_flags(const TrainingArguments& args, TrainerState state, std::optional<double> epoch) {
  state.epoch = epoch;
  TrainerControl control;
  DefaultFlowCallback().on_epoch_end(args, state, control, CallbackContext{});
  return flags(control);
}

// Simulates the step loop of a short run through a handler holding DefaultFlowCallback: on_step_begin then
// on_step_end for global_step 1..max_steps, on the same control object. Returns the flags after each
// on_step_end, for the steps where any is set.
std::map<std::int64_t, std::string> simulate_steps(const TrainingArguments& args, TrainerState state) {
  CallbackHandler handler;
  handler.add_callback<DefaultFlowCallback>();
  TrainerControl control;
  const CallbackContext ctx;
  std::map<std::int64_t, std::string> decided;
  handler.on_train_begin(args, state, control, ctx);
  for (std::int64_t step = 1; step <= state.max_steps; ++step) {
    state.global_step = step - 1;
    handler.on_step_begin(args, state, control, ctx);
    state.global_step = step;
    state.epoch = static_cast<double>(step) / static_cast<double>(state.max_steps);
    handler.on_step_end(args, state, control, ctx);
    if (!flags(control).empty()) decided[step] = flags(control);
  }
  return decided;
}

// Records every event it hears, with a copy of the control as it was when the event reached it.
struct Recorder : tt::TrainerCallback {
  struct Seen {
    std::string event;
    TrainerControl control;
  };
  std::vector<Seen> seen;
  std::vector<bool> had_exception;

#define TT_RECORD(event)                                                               \
  void event(const Args&, const State&, Control& control, const Context&) override { \
    seen.push_back({#event, control});                                                 \
  }
  TT_RECORD(on_init_end)
  TT_RECORD(on_train_begin)
  TT_RECORD(on_train_end)
  TT_RECORD(on_epoch_begin)
  TT_RECORD(on_epoch_end)
  TT_RECORD(on_step_begin)
  TT_RECORD(on_substep_end)
  TT_RECORD(on_pre_optimizer_step)
  TT_RECORD(on_optimizer_step)
  TT_RECORD(on_step_end)
  TT_RECORD(on_evaluate)
  TT_RECORD(on_predict)
  TT_RECORD(on_save)
  TT_RECORD(on_log)
  TT_RECORD(on_prediction_step)
#undef TT_RECORD
  void on_exception(const Args&, const State&, Control& control, const Context& ctx) override {
    seen.push_back({"on_exception", control});
    had_exception.push_back(static_cast<bool>(ctx.exception));
  }
};

// Clears should_save in on_step_end: a veto of what DefaultFlowCallback decided, if it runs after it.
struct SaveVeto : tt::TrainerCallback {
  void on_step_end(const Args&, const State&, Control& control, const Context&) override {
    control.should_save = false;
  }
};

struct CustomFlow : DefaultFlowCallback {};

struct Configured : tt::TrainerCallback {
  Configured(std::string label, int count, std::vector<int>& sink) : label(std::move(label)), count(count), sink(&sink) {}
  std::string label;
  int count;
  std::vector<int>* sink;
  void on_train_begin(const Args&, const State&, Control&, const Context&) override { sink->push_back(count); }
};

struct ThrowsStd : tt::TrainerCallback {
  void on_exception(const Args&, const State&, Control&, const Context&) override {
    throw std::runtime_error("boom");
  }
};

struct ThrowsInt : tt::TrainerCallback {
  void on_exception(const Args&, const State&, Control&, const Context&) override { throw 42; }
};

using HandlerEvent = void (CallbackHandler::*)(const TrainingArguments&, const TrainerState&, TrainerControl&,
                                               const CallbackContext&);

struct EventCase {
  const char* name;
  HandlerEvent method;
  const char* cleared;  // flags the handler clears before the callbacks run, as flags() prints them
};

// Every handler event, in declaration order, with the flags HF's handler clears for it (REF §1.1, §2).
const std::vector<EventCase>& all_events() {
  static const std::vector<EventCase> events{
      {"on_init_end", &CallbackHandler::on_init_end, ""},
      {"on_train_begin", &CallbackHandler::on_train_begin, "stop"},
      {"on_train_end", &CallbackHandler::on_train_end, ""},
      {"on_epoch_begin", &CallbackHandler::on_epoch_begin, "epoch_stop"},
      {"on_epoch_end", &CallbackHandler::on_epoch_end, ""},
      {"on_step_begin", &CallbackHandler::on_step_begin, "log eval save"},
      {"on_substep_end", &CallbackHandler::on_substep_end, ""},
      {"on_pre_optimizer_step", &CallbackHandler::on_pre_optimizer_step, ""},
      {"on_optimizer_step", &CallbackHandler::on_optimizer_step, ""},
      {"on_step_end", &CallbackHandler::on_step_end, ""},
      {"on_evaluate", &CallbackHandler::on_evaluate, "eval"},
      {"on_predict", &CallbackHandler::on_predict, ""},
      {"on_save", &CallbackHandler::on_save, "save"},
      {"on_log", &CallbackHandler::on_log, "log"},
      {"on_prediction_step", &CallbackHandler::on_prediction_step, ""},
      {"on_exception", &CallbackHandler::on_exception, ""},
  };
  return events;
}

// All five flags except those named in `cleared`.
std::string all_flags_except(const std::string& cleared) {
  std::string out;
  for (const char* f : {"log", "eval", "save", "stop", "epoch_stop"}) {
    std::istringstream words(cleared);
    bool is_cleared = false;
    for (std::string w; words >> w;) is_cleared |= (w == f);
    if (is_cleared) continue;
    if (!out.empty()) out += ' ';
    out += f;
  }
  return out;
}

std::string names(const CallbackHandler& handler) {
  std::string out;
  for (const auto& cb : handler.callbacks()) out += (out.empty() ? "" : ",") + cb->name();
  return out;
}

}  // namespace

// A class outside any function, in the anonymous namespace: its name is printed without qualifiers.
namespace {
struct LocalNamed : tt::TrainerCallback {};
}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// DefaultFlowCallback (REF §4)
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("DefaultFlowCallback: logging with the steps strategy and logging_first_step", "[callbacks][flow]") {
  auto args = quiet_args();
  args.logging_strategy = IntervalStrategy::steps;
  const auto state = make_state(100, /*logging*/ 3);

  SECTION("without logging_first_step, only multiples of logging_steps log") {
    std::vector<std::string> got;
    for (std::int64_t step = 1; step <= 7; ++step) got.push_back(step_end_flags(args, state, step));
    CHECK(got == std::vector<std::string>{"", "", "log", "", "", "log", ""});
  }
  SECTION("logging_first_step adds step 1 only") {
    args.logging_first_step = true;
    CHECK(step_end_flags(args, state, 1) == "log");
    CHECK(step_end_flags(args, state, 2) == "");
    CHECK(step_end_flags(args, state, 3) == "log");
  }
  SECTION("logging_steps 1 logs every step") {
    const auto every = make_state(100, 1);
    for (std::int64_t step = 1; step <= 5; ++step) CHECK(step_end_flags(args, every, step) == "log");
  }
  SECTION("the interval comes from the state, not the arguments") {
    args.logging_steps = 2;  // state.logging_steps (3) wins, as compute_steps has already resolved it
    CHECK(step_end_flags(args, state, 2) == "");
    CHECK(step_end_flags(args, state, 3) == "log");
  }
  SECTION("logging_steps 0 in the state never logs (and does not divide by zero)") {
    const auto zero = make_state(100, 0);
    CHECK(step_end_flags(args, zero, 1) == "");
    CHECK(step_end_flags(args, zero, 5) == "");
  }
}

TEST_CASE("DefaultFlowCallback: logging with the epoch and no strategies", "[callbacks][flow]") {
  auto args = quiet_args();
  const auto state = make_state(100, /*logging*/ 1);
  SECTION("epoch: never at a step end, always at an epoch end") {
    args.logging_strategy = IntervalStrategy::epoch;
    CHECK(step_end_flags(args, state, 1) == "");
    CHECK(step_end_flags(args, state, 2) == "");
    CHECK(epoch_end_flags(args, state, 1.0) == "log");
  }
  SECTION("epoch with logging_first_step logs step 1 too") {
    args.logging_strategy = IntervalStrategy::epoch;
    args.logging_first_step = true;
    CHECK(step_end_flags(args, state, 1) == "log");
    CHECK(step_end_flags(args, state, 2) == "");
  }
  SECTION("no: never, neither at steps nor at epoch ends") {
    args.logging_strategy = IntervalStrategy::no;
    CHECK(step_end_flags(args, state, 1) == "");
    CHECK(step_end_flags(args, state, 2) == "");
    CHECK(epoch_end_flags(args, state, 1.0) == "");
  }
  SECTION("no with logging_first_step still logs step 1") {
    args.logging_strategy = IntervalStrategy::no;
    args.logging_first_step = true;
    CHECK(step_end_flags(args, state, 1) == "log");
    CHECK(step_end_flags(args, state, 2) == "");
  }
}

TEST_CASE("DefaultFlowCallback: evaluation with the steps strategy and eval_delay", "[callbacks][flow]") {
  auto args = quiet_args();
  args.eval_strategy = IntervalStrategy::steps;
  const auto state = make_state(100, 500, /*eval*/ 4);

  SECTION("every eval_steps steps") {
    std::vector<std::string> got;
    for (std::int64_t step = 1; step <= 12; ++step) got.push_back(step_end_flags(args, state, step));
    CHECK(got == std::vector<std::string>{"", "", "", "eval", "", "", "", "eval", "", "", "", "eval"});
  }
  SECTION("eval_delay skips eval steps before it, and the delay step itself counts (delay <= step)") {
    args.eval_delay = 8;
    CHECK(step_end_flags(args, state, 4) == "");
    CHECK(step_end_flags(args, state, 8) == "eval");
    CHECK(step_end_flags(args, state, 12) == "eval");
    args.eval_delay = 8.5;
    CHECK(step_end_flags(args, state, 8) == "");
    CHECK(step_end_flags(args, state, 12) == "eval");
  }
  SECTION("the epoch end never evaluates with the steps strategy") {
    CHECK(epoch_end_flags(args, state, 1.0) == "");
  }
  SECTION("evaluation strategy epoch or no never evaluates at a step end") {
    args.eval_strategy = IntervalStrategy::epoch;
    CHECK(step_end_flags(args, state, 4) == "");
    args.eval_strategy = IntervalStrategy::no;
    CHECK(step_end_flags(args, state, 4) == "");
  }
}

TEST_CASE("DefaultFlowCallback: evaluation with the epoch strategy compares eval_delay to the float epoch",
          "[callbacks][flow]") {
  auto args = quiet_args();
  args.eval_strategy = IntervalStrategy::epoch;
  const auto state = make_state(100);

  CHECK(epoch_end_flags(args, state, 1.0) == "eval");
  args.eval_delay = 1.5;
  CHECK(epoch_end_flags(args, state, 1.0) == "");
  CHECK(epoch_end_flags(args, state, 1.4999999) == "");
  CHECK(epoch_end_flags(args, state, 1.5) == "eval");  // delay <= epoch
  CHECK(epoch_end_flags(args, state, 2.0) == "eval");
  args.eval_delay = 0.5;
  CHECK(epoch_end_flags(args, state, 0.49) == "");
  CHECK(epoch_end_flags(args, state, 0.5) == "eval");
  // A step end never evaluates with the epoch strategy, even at the last step.
  CHECK(step_end_flags(args, state, 100) == "stop");
}

TEST_CASE("DefaultFlowCallback: save strategies", "[callbacks][flow]") {
  auto args = quiet_args();
  const auto state = make_state(100, 500, 500, /*save*/ 5);

  SECTION("steps: every save_steps steps") {
    args.save_strategy = SaveStrategy::steps;
    std::vector<std::string> got;
    for (std::int64_t step = 1; step <= 10; ++step) got.push_back(step_end_flags(args, state, step));
    CHECK(got == std::vector<std::string>{"", "", "", "", "save", "", "", "", "", "save"});
    CHECK(epoch_end_flags(args, state, 1.0) == "");
  }
  SECTION("epoch: at every epoch end, never at a step end") {
    args.save_strategy = SaveStrategy::epoch;
    CHECK(step_end_flags(args, state, 5) == "");
    CHECK(step_end_flags(args, state, 10) == "");
    CHECK(epoch_end_flags(args, state, 1.0) == "save");
    CHECK(epoch_end_flags(args, state, 0.5) == "save");
  }
  SECTION("best: the callback never requests a save (the Trainer does, after an evaluation)") {
    args.save_strategy = SaveStrategy::best;
    args.eval_strategy = IntervalStrategy::epoch;
    CHECK(step_end_flags(args, state, 5) == "");
    CHECK(step_end_flags(args, state, 100) == "stop");
    CHECK(epoch_end_flags(args, state, 1.0) == "eval");
  }
  SECTION("no: never") {
    args.save_strategy = SaveStrategy::no;
    CHECK(step_end_flags(args, state, 5) == "");
    CHECK(epoch_end_flags(args, state, 1.0) == "");
  }
  SECTION("save_steps 0 in the state: no interval saves, and no division by zero") {
    args.save_strategy = SaveStrategy::steps;
    const auto zero = make_state(100, 500, 500, 0);
    for (std::int64_t step = 1; step <= 10; ++step) CHECK(step_end_flags(args, zero, step) == "");
    // The forced final save does not depend on the interval (HF: save_strategy == steps is enough).
    CHECK(step_end_flags(args, zero, 100) == "save stop");
  }
}

TEST_CASE("DefaultFlowCallback: end of training", "[callbacks][flow]") {
  auto args = quiet_args();
  auto state = make_state(10, 500, 500, /*save*/ 4);

  SECTION("should_training_stop once global_step >= max_steps") {
    CHECK(step_end_flags(args, state, 9) == "");
    CHECK(step_end_flags(args, state, 10) == "stop");
    CHECK(step_end_flags(args, state, 11) == "stop");
  }
  SECTION("forced final save with the steps save strategy only") {
    args.save_strategy = SaveStrategy::steps;
    CHECK(step_end_flags(args, state, 9) == "");
    CHECK(step_end_flags(args, state, 10) == "save stop");  // 10 % 4 != 0: forced
    args.save_strategy = SaveStrategy::epoch;
    CHECK(step_end_flags(args, state, 10) == "stop");  // no double save with the epoch strategy (issue #36203)
    args.save_strategy = SaveStrategy::best;
    CHECK(step_end_flags(args, state, 10) == "stop");
    args.save_strategy = SaveStrategy::no;
    CHECK(step_end_flags(args, state, 10) == "stop");
  }
  SECTION("final evaluation with the steps eval strategy when the last step is not an eval step") {
    args.eval_strategy = IntervalStrategy::steps;
    state.eval_steps = 4;
    CHECK(step_end_flags(args, state, 9) == "");
    CHECK(step_end_flags(args, state, 10) == "eval stop");  // 10 % 4 != 0
    state.max_steps = 12;                                   // 12 % 4 == 0: the regular eval, once
    CHECK(step_end_flags(args, state, 12) == "eval stop");
    CHECK(step_end_flags(args, state, 11) == "");
  }
  SECTION("the final evaluation honours eval_delay") {
    args.eval_strategy = IntervalStrategy::steps;
    state.eval_steps = 4;
    args.eval_delay = 11;  // > max_steps: never evaluates
    CHECK(step_end_flags(args, state, 8) == "");
    CHECK(step_end_flags(args, state, 10) == "stop");
    args.eval_delay = 10;  // == max_steps: the final step is due
    CHECK(step_end_flags(args, state, 8) == "");
    CHECK(step_end_flags(args, state, 10) == "eval stop");
  }
  SECTION("no final evaluation with the epoch or no eval strategies") {
    state.eval_steps = 4;
    args.eval_strategy = IntervalStrategy::epoch;
    CHECK(step_end_flags(args, state, 10) == "stop");
    args.eval_strategy = IntervalStrategy::no;
    CHECK(step_end_flags(args, state, 10) == "stop");
  }
}

TEST_CASE("DefaultFlowCallback: a whole short run through the handler", "[callbacks][flow]") {
  auto args = quiet_args();
  args.logging_strategy = IntervalStrategy::steps;
  args.logging_first_step = true;
  args.eval_strategy = IntervalStrategy::steps;
  args.save_strategy = SaveStrategy::steps;
  const auto state = make_state(10, /*logging*/ 3, /*eval*/ 4, /*save*/ 5);

  SECTION("flags at each step; on_step_begin clears the previous step's decisions") {
    const std::map<std::int64_t, std::string> expected{
        {1, "log"},         {3, "log"}, {4, "eval"}, {5, "save"}, {6, "log"},
        {8, "eval"},        {9, "log"},
        {10, "eval save stop"},  // final: forced save, final evaluation (10 % 4 != 0), stop
    };
    CHECK(simulate_steps(args, state) == expected);
  }
  SECTION("with eval_delay 6, evaluation starts at step 8 and the final one still runs") {
    args.eval_delay = 6;
    const std::map<std::int64_t, std::string> expected{
        {1, "log"}, {3, "log"}, {5, "save"}, {6, "log"}, {8, "eval"}, {9, "log"}, {10, "eval save stop"},
    };
    CHECK(simulate_steps(args, state) == expected);
  }
  SECTION("with eval_delay past the end, there is no evaluation at all") {
    args.eval_delay = 11;
    const std::map<std::int64_t, std::string> expected{
        {1, "log"}, {3, "log"}, {5, "save"}, {6, "log"}, {9, "log"}, {10, "save stop"},
    };
    CHECK(simulate_steps(args, state) == expected);
  }
  SECTION("epoch strategies: steps only stop; epoch ends log, evaluate (after eval_delay) and save") {
    args.logging_strategy = IntervalStrategy::epoch;
    args.logging_first_step = false;
    args.eval_strategy = IntervalStrategy::epoch;
    args.save_strategy = SaveStrategy::epoch;
    args.eval_delay = 1.5;
    CHECK(simulate_steps(args, state) == std::map<std::int64_t, std::string>{{10, "stop"}});

    CallbackHandler handler;
    handler.add_callback<DefaultFlowCallback>();
    TrainerControl control;
    TrainerState s = state;
    std::vector<std::string> at_epoch_end;
    for (int epoch = 1; epoch <= 3; ++epoch) {
      handler.on_epoch_begin(args, s, control, {});
      handler.on_step_begin(args, s, control, {});
      s.epoch = epoch;
      handler.on_epoch_end(args, s, control, {});
      at_epoch_end.push_back(flags(control));
      handler.on_log(args, s, control, {});
      handler.on_evaluate(args, s, control, {});
      handler.on_save(args, s, control, {});
      CHECK(flags(control) == "");
    }
    CHECK(at_epoch_end == std::vector<std::string>{"log save", "log eval save", "log eval save"});
  }
}

// ---------------------------------------------------------------------------------------------------------------
// CallbackHandler (REF §1.2, §2, §7)
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("CallbackHandler: each event clears HF's flags before the callbacks run, and only those",
          "[callbacks][handler]") {
  for (const auto& event : all_events()) {
    CAPTURE(event.name);
    CallbackHandler handler;
    auto recorder = handler.add_callback<Recorder>();
    TrainerControl control = all_flags_set();
    (handler.*event.method)(TrainingArguments{}, TrainerState{}, control, CallbackContext{});
    REQUIRE(recorder->seen.size() == 1);
    CHECK(recorder->seen[0].event == event.name);  // the handler dispatches to the matching callback event
    CHECK(flags(recorder->seen[0].control) == all_flags_except(event.cleared));
    CHECK(flags(control) == all_flags_except(event.cleared));
  }
}

TEST_CASE("CallbackHandler: resets happen before the callbacks, so a callback may set the flag again",
          "[callbacks][handler]") {
  struct SetsLogInOnLog : tt::TrainerCallback {
    void on_log(const Args&, const State&, Control& c, const Context&) override { c.should_log = true; }
  };
  CallbackHandler handler;
  handler.add_callback<SetsLogInOnLog>();
  TrainerControl control;
  control.should_log = true;
  handler.on_log(TrainingArguments{}, TrainerState{}, control, CallbackContext{});
  CHECK(control.should_log);
}

TEST_CASE("CallbackHandler: callbacks run in list order and share one control", "[callbacks][handler]") {
  auto args = quiet_args();
  args.save_strategy = SaveStrategy::steps;
  auto state = make_state(100, 500, 500, /*save*/ 5);
  state.global_step = 5;

  SECTION("a later callback vetoes a flag DefaultFlowCallback set, and a recorder after both sees the result") {
    tt_test::WarningCapture duplicate_warnings;
    CallbackHandler handler;
    auto first = handler.add_callback<Recorder>();
    handler.add_callback<DefaultFlowCallback>();
    auto middle = handler.add_callback<Recorder>();
    handler.add_callback<SaveVeto>();
    auto last = handler.add_callback<Recorder>();
    TrainerControl control;
    handler.on_step_end(args, state, control, {});
    CHECK(flags(first->seen.at(0).control) == "");
    CHECK(flags(middle->seen.at(0).control) == "save");
    CHECK(flags(last->seen.at(0).control) == "");
    CHECK_FALSE(control.should_save);
  }
  SECTION("a veto placed before DefaultFlowCallback has no effect") {
    CallbackHandler handler;
    handler.add_callback<SaveVeto>();
    handler.add_callback<DefaultFlowCallback>();
    TrainerControl control;
    handler.on_step_end(args, state, control, {});
    CHECK(control.should_save);
  }
  SECTION("the constructor keeps the given order") {
    CallbackHandler handler({std::make_shared<tt::PrinterCallback>(), std::make_shared<DefaultFlowCallback>(),
                             std::make_shared<SaveVeto>()});
    CHECK(names(handler) == "PrinterCallback,DefaultFlowCallback,SaveVeto");
  }
}

TEST_CASE("CallbackHandler: add_callback by type forwards constructor arguments", "[callbacks][handler]") {
  CallbackHandler handler;
  std::vector<int> sink;
  auto configured = handler.add_callback<Configured>("label", 7, sink);  // sink by reference
  auto early = handler.add_callback<tt::EarlyStoppingCallback>(3, 0.25);
  std::ostringstream out;
  auto printer = handler.add_callback<tt::PrinterCallback>(out);

  REQUIRE(handler.callbacks().size() == 3);
  CHECK(handler.callbacks()[0] == configured);
  CHECK(handler.callbacks()[1] == early);
  CHECK(handler.callbacks()[2] == printer);
  CHECK(configured->label == "label");
  CHECK(configured->count == 7);
  CHECK(early->early_stopping_patience == 3);
  CHECK(early->early_stopping_threshold == 0.25);

  TrainingArguments args;  // valid for EarlyStoppingCallback's on_train_begin checks
  args.eval_strategy = IntervalStrategy::steps;
  args.metric_for_best_model = "loss";
  args.load_best_model_at_end = true;
  TrainerControl control;
  handler.on_train_begin(args, TrainerState{}, control, {});
  CHECK(sink == std::vector<int>{7});  // the callback writes into the caller's vector, not a copy

  tt::LogEntry logs{{"loss", 0.5}};
  CallbackContext ctx;
  ctx.logs = &logs;
  handler.on_log(args, TrainerState{}, control, ctx);
  CHECK(out.str() == "{'loss': '0.5'}\n");  // the printer writes to the stream that was passed by reference
}

TEST_CASE("CallbackHandler: a second object of the same class is appended with a warning",
          "[callbacks][handler]") {
  CallbackHandler handler;
  handler.add_callback<DefaultFlowCallback>();
  handler.add_callback<tt::PrinterCallback>();

  SECTION("duplicate class: warning with the current list, still appended") {
    tt_test::WarningCapture warnings;
    auto second = std::make_shared<DefaultFlowCallback>();
    handler.add_callback(second);
    REQUIRE(warnings.messages.size() == 1);
    const std::string& msg = warnings.messages[0];
    CHECK_THAT(msg, Catch::Contains("You are adding a DefaultFlowCallback to the callbacks of this Trainer, but "
                                    "there is already one."));
    CHECK_THAT(msg, Catch::Contains("DefaultFlowCallback\nPrinterCallback"));  // the list before the append
    CHECK(names(handler) == "DefaultFlowCallback,PrinterCallback,DefaultFlowCallback");
    CHECK(handler.callbacks().back() == second);
  }
  SECTION("a subclass or a different class is not a duplicate") {
    tt_test::WarningCapture warnings;
    handler.add_callback<CustomFlow>();
    handler.add_callback<SaveVeto>();
    CHECK(warnings.messages.empty());
    CHECK(names(handler) == "DefaultFlowCallback,PrinterCallback,CustomFlow,SaveVeto");
  }
}

TEST_CASE("CallbackHandler: add_callback(nullptr) throws and leaves the list unchanged", "[callbacks][handler]") {
  CallbackHandler handler;
  handler.add_callback<DefaultFlowCallback>();
  CHECK_THROWS_AS(handler.add_callback(CallbackHandler::CallbackPtr{}), tt::ArgumentError);
  CHECK_THROWS_WITH(handler.add_callback(nullptr), Catch::Contains("null"));
  CHECK(names(handler) == "DefaultFlowCallback");
}

TEST_CASE("CallbackHandler: pop_callback", "[callbacks][handler]") {
  CallbackHandler handler;
  auto printer = handler.add_callback<tt::PrinterCallback>();
  auto custom = handler.add_callback<CustomFlow>();
  auto flow = handler.add_callback<DefaultFlowCallback>();

  SECTION("by type: the first object that is a T, subclasses included") {
    std::shared_ptr<DefaultFlowCallback> popped = handler.pop_callback<DefaultFlowCallback>();
    CHECK(popped == custom);
    CHECK(names(handler) == "PrinterCallback,DefaultFlowCallback");
    CHECK(handler.pop_callback<DefaultFlowCallback>() == flow);
    CHECK(handler.pop_callback<DefaultFlowCallback>() == nullptr);
    CHECK(names(handler) == "PrinterCallback");
  }
  SECTION("by type: a subclass type does not match its base") {
    handler.pop_callback<CustomFlow>();
    CHECK(handler.pop_callback<CustomFlow>() == nullptr);
    CHECK(names(handler) == "PrinterCallback,DefaultFlowCallback");
  }
  SECTION("by type: absent gives null and changes nothing") {
    CHECK(handler.pop_callback<tt::EarlyStoppingCallback>() == nullptr);
    CHECK(names(handler) == "PrinterCallback,CustomFlow,DefaultFlowCallback");
  }
  SECTION("by instance: identity, not class") {
    auto another_flow = std::make_shared<DefaultFlowCallback>();
    CHECK(handler.pop_callback(another_flow) == nullptr);  // same class, different object
    CHECK(handler.callbacks().size() == 3);
    CHECK(handler.pop_callback(flow) == flow);
    CHECK(names(handler) == "PrinterCallback,CustomFlow");
    CHECK(handler.pop_callback(flow) == nullptr);
    CHECK(handler.pop_callback(printer) == printer);
    CHECK(handler.callbacks().size() == 1);
    CHECK(handler.callbacks()[0] == custom);
  }
  SECTION("by instance: of two objects of one class, the given one goes") {
    auto second = std::make_shared<DefaultFlowCallback>();
    {
      tt_test::WarningCapture quiet;
      handler.add_callback(second);
    }
    CHECK(handler.pop_callback(second) == second);
    REQUIRE(handler.callbacks().size() == 3);
    CHECK(handler.callbacks()[2] == flow);
  }
}

TEST_CASE("CallbackHandler: remove_callback", "[callbacks][handler]") {
  CallbackHandler handler;
  auto flow = handler.add_callback<DefaultFlowCallback>();
  auto printer = handler.add_callback<tt::PrinterCallback>();

  SECTION("by type: removes the first one, silent when absent") {
    CHECK_NOTHROW(handler.remove_callback<tt::EarlyStoppingCallback>());
    CHECK(names(handler) == "DefaultFlowCallback,PrinterCallback");
    handler.remove_callback<tt::PrinterCallback>();
    CHECK(names(handler) == "DefaultFlowCallback");
    CHECK_NOTHROW(handler.remove_callback<tt::PrinterCallback>());
    CHECK(names(handler) == "DefaultFlowCallback");
  }
  SECTION("by instance: removes it; throws ArgumentError naming it when absent") {
    handler.remove_callback(printer);
    CHECK(names(handler) == "DefaultFlowCallback");
    CHECK_THROWS_AS(handler.remove_callback(printer), tt::ArgumentError);
    CHECK_THROWS_WITH(handler.remove_callback(printer), Catch::Contains("PrinterCallback") &&
                                                            Catch::Contains("not in the callback list"));
    auto stranger = std::make_shared<DefaultFlowCallback>();  // same class as a member, but not a member
    CHECK_THROWS_AS(handler.remove_callback(stranger), tt::ArgumentError);
    CHECK_THROWS_AS(handler.remove_callback(CallbackHandler::CallbackPtr{}), tt::ArgumentError);
    CHECK(handler.callbacks().size() == 1);
    CHECK(handler.callbacks()[0] == flow);
  }
}

TEST_CASE("CallbackHandler: callback_list joins unqualified class names with newlines", "[callbacks][handler]") {
  struct InsideTest : tt::TrainerCallback {};
  CallbackHandler handler;
  CHECK(handler.callback_list() == "");
  handler.add_callback<DefaultFlowCallback>();
  CHECK(handler.callback_list() == "DefaultFlowCallback");
  handler.add_callback<tt::PrinterCallback>();
  handler.add_callback<LocalNamed>();
  handler.add_callback<InsideTest>();
  handler.add_callback<tt::EarlyStoppingCallback>();
  CHECK(handler.callback_list() ==
        "DefaultFlowCallback\nPrinterCallback\nLocalNamed\nInsideTest\nEarlyStoppingCallback");
}

TEST_CASE("CallbackHandler: on_exception reaches every callback even when some throw", "[callbacks][handler]") {
  CallbackHandler handler;
  std::shared_ptr<Recorder> before, between, after;
  {
    tt_test::WarningCapture duplicate_warnings;
    before = handler.add_callback<Recorder>();
    handler.add_callback<ThrowsStd>();
    between = handler.add_callback<Recorder>();
    handler.add_callback<ThrowsInt>();
    after = handler.add_callback<Recorder>();
  }

  CallbackContext ctx;
  try {
    throw std::logic_error("loop failed");
  } catch (...) {
    ctx.exception = std::current_exception();
  }
  tt_test::WarningCapture warnings;
  TrainerControl control;
  CHECK_NOTHROW(handler.on_exception(TrainingArguments{}, TrainerState{}, control, ctx));
  for (const auto& r : {before, between, after}) {
    REQUIRE(r->seen.size() == 1);
    CHECK(r->seen[0].event == "on_exception");
    REQUIRE(r->had_exception.size() == 1);
    CHECK(r->had_exception[0]);
  }
  REQUIRE(warnings.messages.size() == 2);
  CHECK_THAT(warnings.messages[0], Catch::Contains("ThrowsStd.on_exception threw: boom"));
  CHECK_THAT(warnings.messages[1], Catch::Contains("ThrowsInt.on_exception threw an unknown exception"));
}

// ---------------------------------------------------------------------------------------------------------------
// EarlyStoppingCallback (REF §6)
// ---------------------------------------------------------------------------------------------------------------

namespace {

TrainingArguments early_args(const std::string& metric, std::optional<bool> greater_is_better) {
  TrainingArguments a;
  a.eval_strategy = IntervalStrategy::steps;
  a.load_best_model_at_end = true;
  a.metric_for_best_model = metric;
  a.greater_is_better = greater_is_better;
  return a;
}

// Runs one evaluation through a handler, as the Trainer does; returns whether training should stop.
bool evaluate(tt::EarlyStoppingCallback& cb, const TrainingArguments& args, std::optional<double> best,
              const tt::Metrics& metrics) {
  TrainerState state;
  state.best_metric = best;
  TrainerControl control;
  CallbackContext ctx;
  ctx.metrics = &metrics;
  cb.on_evaluate(args, state, control, ctx);
  return control.should_training_stop;
}

}  // namespace

TEST_CASE("EarlyStoppingCallback: the counter against best_metric and the threshold", "[callbacks][early]") {
  SECTION("lower is better (greater_is_better false)") {
    tt::EarlyStoppingCallback cb(10, 0.25);
    const auto args = early_args("loss", false);
    evaluate(cb, args, 1.0, {{"eval_loss", 0.75}});  // better by exactly the threshold: not enough
    CHECK(cb.early_stopping_patience_counter == 1);
    evaluate(cb, args, 1.0, {{"eval_loss", 1.5}});  // worse
    CHECK(cb.early_stopping_patience_counter == 2);
    evaluate(cb, args, 1.0, {{"eval_loss", 1.0}});  // equal
    CHECK(cb.early_stopping_patience_counter == 3);
    evaluate(cb, args, 1.0, {{"eval_loss", 0.5}});  // better by more than the threshold
    CHECK(cb.early_stopping_patience_counter == 0);
  }
  SECTION("higher is better (greater_is_better true)") {
    tt::EarlyStoppingCallback cb(10, 0.25);
    const auto args = early_args("accuracy", true);
    evaluate(cb, args, 0.5, {{"eval_accuracy", 0.75}});  // better by exactly the threshold
    CHECK(cb.early_stopping_patience_counter == 1);
    evaluate(cb, args, 0.5, {{"eval_accuracy", 0.25}});  // worse (and below by more than the threshold)
    CHECK(cb.early_stopping_patience_counter == 2);
    evaluate(cb, args, 0.5, {{"eval_accuracy", 0.875}});
    CHECK(cb.early_stopping_patience_counter == 0);
  }
  SECTION("threshold 0: any strict improvement resets") {
    tt::EarlyStoppingCallback cb(10);
    const auto args = early_args("loss", false);
    evaluate(cb, args, 1.0, {{"eval_loss", 1.0}});
    CHECK(cb.early_stopping_patience_counter == 1);
    evaluate(cb, args, 1.0, {{"eval_loss", 0.999}});
    CHECK(cb.early_stopping_patience_counter == 0);
  }
  SECTION("greater_is_better unset follows the metric name: '...loss' is lower-is-better, others higher") {
    tt::EarlyStoppingCallback cb(10);
    evaluate(cb, early_args("accuracy", std::nullopt), 0.5, {{"eval_accuracy", 0.25}});
    CHECK(cb.early_stopping_patience_counter == 1);
    evaluate(cb, early_args("accuracy", std::nullopt), 0.5, {{"eval_accuracy", 0.75}});
    CHECK(cb.early_stopping_patience_counter == 0);
    evaluate(cb, early_args("eval_loss", std::nullopt), 0.5, {{"eval_loss", 0.75}});
    CHECK(cb.early_stopping_patience_counter == 1);
    evaluate(cb, early_args("eval_loss", std::nullopt), 0.5, {{"eval_loss", 0.25}});
    CHECK(cb.early_stopping_patience_counter == 0);
  }
  SECTION("best_metric unset resets the counter whatever the value") {
    tt::EarlyStoppingCallback cb(10);
    const auto args = early_args("loss", false);
    evaluate(cb, args, 1.0, {{"eval_loss", 2.0}});
    evaluate(cb, args, 1.0, {{"eval_loss", 2.0}});
    REQUIRE(cb.early_stopping_patience_counter == 2);
    evaluate(cb, args, std::nullopt, {{"eval_loss", 100.0}});
    CHECK(cb.early_stopping_patience_counter == 0);
  }
  SECTION("a NaN metric is not an improvement") {
    tt::EarlyStoppingCallback cb(10);
    evaluate(cb, early_args("loss", false), 1.0, {{"eval_loss", std::nan("")}});
    CHECK(cb.early_stopping_patience_counter == 1);
  }
}

TEST_CASE("EarlyStoppingCallback: stops once the counter reaches the patience", "[callbacks][early]") {
  const auto args = early_args("loss", false);
  CallbackHandler handler;
  handler.add_callback<DefaultFlowCallback>();
  auto cb = handler.add_callback<tt::EarlyStoppingCallback>(3);
  TrainerState state;
  state.best_metric = 1.0;
  TrainerControl control;
  const tt::Metrics worse{{"eval_loss", 2.0}, {"epoch", 1.0}};
  CallbackContext ctx;
  ctx.metrics = &worse;
  std::vector<bool> stop;
  for (int i = 0; i < 4; ++i) {
    handler.on_evaluate(args, state, control, ctx);
    stop.push_back(control.should_training_stop);
  }
  CHECK(stop == std::vector<bool>{false, false, true, true});
  CHECK(cb->early_stopping_patience_counter == 4);
  CHECK_FALSE(control.should_evaluate);
}

TEST_CASE("EarlyStoppingCallback: the metric key, with and without the eval_ prefix", "[callbacks][early]") {
  const tt::Metrics metrics{{"eval_loss", 2.0}, {"eval_accuracy", 0.25}, {"accuracy", 0.99}};
  for (const std::string name : {"loss", "eval_loss"}) {
    CAPTURE(name);
    tt::EarlyStoppingCallback cb(10);
    tt_test::WarningCapture warnings;
    evaluate(cb, early_args(name, false), 1.0, metrics);
    CHECK(cb.early_stopping_patience_counter == 1);
    CHECK(warnings.messages.empty());
  }
  // "accuracy" is looked up as eval_accuracy (0.25, worse than 0.5), never as the unprefixed "accuracy".
  tt::EarlyStoppingCallback cb(10);
  evaluate(cb, early_args("accuracy", true), 0.5, metrics);
  CHECK(cb.early_stopping_patience_counter == 1);
}

TEST_CASE("EarlyStoppingCallback: a missing metric warns and leaves the counter unchanged", "[callbacks][early]") {
  tt::EarlyStoppingCallback cb(1);
  cb.early_stopping_patience_counter = 0;
  const auto args = early_args("accuracy", true);
  tt_test::WarningCapture warnings;

  // Only the unprefixed key is present: still missing.
  CHECK_FALSE(evaluate(cb, args, 0.5, {{"accuracy", 0.1}, {"eval_loss", 0.3}}));
  CHECK(cb.early_stopping_patience_counter == 0);
  REQUIRE(warnings.messages.size() == 1);
  CHECK(warnings.messages[0] ==
        "early stopping required metric_for_best_model, but did not find eval_accuracy so early stopping is "
        "disabled");

  cb.early_stopping_patience_counter = 3;
  TrainerState state;
  state.best_metric = 0.5;
  TrainerControl control;
  cb.on_evaluate(args, state, control, CallbackContext{});  // no metrics at all
  CHECK(cb.early_stopping_patience_counter == 3);
  CHECK_FALSE(control.should_training_stop);
  CHECK(warnings.messages.size() == 2);
}

TEST_CASE("EarlyStoppingCallback: on_train_begin checks the arguments", "[callbacks][early]") {
  tt::EarlyStoppingCallback cb;
  TrainerControl control;
  SECTION("metric_for_best_model unset") {
    auto args = early_args("loss", false);
    args.metric_for_best_model.reset();
    CHECK_THROWS_AS(cb.on_train_begin(args, TrainerState{}, control, {}), tt::ArgumentError);
    CHECK_THROWS_WITH(cb.on_train_begin(args, TrainerState{}, control, {}),
                      Catch::Contains("EarlyStoppingCallback requires metric_for_best_model to be defined"));
  }
  SECTION("eval_strategy no") {
    auto args = early_args("loss", false);
    args.eval_strategy = IntervalStrategy::no;
    CHECK_THROWS_AS(cb.on_train_begin(args, TrainerState{}, control, {}), tt::ArgumentError);
    CHECK_THROWS_WITH(cb.on_train_begin(args, TrainerState{}, control, {}),
                      Catch::Contains("requires an evaluation strategy of steps or epoch") &&
                          Catch::Contains("eval_strategy"));
  }
  SECTION("load_best_model_at_end false: a warning, not an error") {
    auto args = early_args("loss", false);
    args.eval_strategy = IntervalStrategy::epoch;
    args.load_best_model_at_end = false;
    tt_test::WarningCapture warnings;
    CHECK_NOTHROW(cb.on_train_begin(args, TrainerState{}, control, {}));
    REQUIRE(warnings.messages.size() == 1);
    CHECK_THAT(warnings.messages[0], Catch::Contains("load_best_model_at_end"));
  }
  SECTION("valid arguments with load_best_model_at_end: silent") {
    tt_test::WarningCapture warnings;
    CHECK_NOTHROW(cb.on_train_begin(early_args("loss", false), TrainerState{}, control, {}));
    CHECK(warnings.messages.empty());
  }
}

TEST_CASE("EarlyStoppingCallback: state() and restore_state()", "[callbacks][early]") {
  tt::EarlyStoppingCallback cb(3, 0.5);
  cb.early_stopping_patience_counter = 2;
  const auto saved = cb.state();
  REQUIRE(saved.has_value());
  CHECK(*saved == nlohmann::json::parse(R"({"args": {"early_stopping_patience": 3, "early_stopping_threshold": 0.5},
                                           "attributes": {"early_stopping_patience_counter": 2}})"));
  CHECK(tt::EarlyStoppingCallback(2).state()->at("args").at("early_stopping_threshold").dump() == "0.0");
  CHECK(cb.name() == "EarlyStoppingCallback");

  SECTION("round trip into a default-constructed callback, through text") {
    tt::EarlyStoppingCallback restored;
    restored.restore_state(nlohmann::json::parse(saved->dump()));
    CHECK(restored.early_stopping_patience == 3);
    CHECK(restored.early_stopping_threshold == 0.5);
    CHECK(restored.early_stopping_patience_counter == 2);
    CHECK(restored.state() == saved);
  }
  SECTION("a malformed state throws and leaves the callback unchanged") {
    const std::vector<std::string> malformed{
        R"({})",
        R"({"args": {"early_stopping_patience": 7, "early_stopping_threshold": 0.1}})",
        R"({"args": {"early_stopping_patience": 7}, "attributes": {"early_stopping_patience_counter": 5}})",
        R"({"args": {"early_stopping_patience": "7", "early_stopping_threshold": 0.1},
            "attributes": {"early_stopping_patience_counter": 5}})",
        R"({"args": {"early_stopping_patience": 7, "early_stopping_threshold": 0.1},
            "attributes": {"early_stopping_patience_counter": "5"}})",
        R"({"args": {"early_stopping_patience": 0, "early_stopping_threshold": 0.1},
            "attributes": {"early_stopping_patience_counter": 5}})",
        R"({"args": {"early_stopping_patience": 7, "early_stopping_threshold": -1.0},
            "attributes": {"early_stopping_patience_counter": 5}})",
        R"({"args": {"early_stopping_patience": 7, "early_stopping_threshold": 0.1},
            "attributes": {"early_stopping_patience_counter": -1}})",
        R"([1, 2])",
    };
    for (const auto& text : malformed) {
      CAPTURE(text);
      tt::EarlyStoppingCallback target(3, 0.5);
      target.early_stopping_patience_counter = 2;
      CHECK_THROWS(target.restore_state(nlohmann::json::parse(text)));
      CHECK(target.state() == saved);
    }
  }
}

TEST_CASE("EarlyStoppingCallback: constructor validation", "[callbacks][early]") {
  CHECK_THROWS_AS(tt::EarlyStoppingCallback(0), tt::ArgumentError);
  CHECK_THROWS_WITH(tt::EarlyStoppingCallback(0), Catch::Contains("early_stopping_patience") &&
                                                      Catch::Contains("at least 1"));
  CHECK_THROWS_AS(tt::EarlyStoppingCallback(-2), tt::ArgumentError);
  CHECK_THROWS_AS(tt::EarlyStoppingCallback(1, -0.1), tt::ArgumentError);
  CHECK_THROWS_WITH(tt::EarlyStoppingCallback(1, -0.1), Catch::Contains("early_stopping_threshold"));
  CHECK_THROWS_AS(tt::EarlyStoppingCallback(1, std::nan("")), tt::ArgumentError);
  const tt::EarlyStoppingCallback defaults;
  CHECK(defaults.early_stopping_patience == 1);
  CHECK(defaults.early_stopping_threshold == 0.0);
  CHECK(defaults.early_stopping_patience_counter == 0);
}

// ---------------------------------------------------------------------------------------------------------------
// PrinterCallback (REF §5.2)
// ---------------------------------------------------------------------------------------------------------------

namespace {

tt::LogEntry train_log() {
  tt::LogEntry logs;
  logs["loss"] = 0.6931;
  logs["grad_norm"] = 1.73;
  logs["learning_rate"] = 5e-05;
  logs["epoch"] = 0.67;
  return logs;
}

void send_log(tt::TrainerCallback& cb, const TrainerState& state, const tt::LogEntry& logs) {
  CallbackContext ctx;
  ctx.logs = &logs;
  TrainerControl control;
  cb.on_log(TrainingArguments{}, state, control, ctx);
}

}  // namespace

TEST_CASE("PrinterCallback: prints each log as HF v5 does, floats to 4 digits, without total_flos",
          "[callbacks][printer]") {
  std::ostringstream out;
  tt::PrinterCallback printer(out);
  TrainerState state;

  auto logs = train_log();
  send_log(printer, state, logs);
  CHECK(out.str() == "{'loss': '0.6931', 'grad_norm': '1.73', 'learning_rate': '5e-05', 'epoch': '0.67'}\n");

  out.str("");
  tt::LogEntry summary;
  summary["train_runtime"] = 12.5;
  summary["train_samples_per_second"] = 100.0;
  summary["total_flos"] = 1234567.0;
  summary["train_loss"] = 0.6917;
  summary["epoch"] = 2.0;
  send_log(printer, state, summary);
  CHECK(out.str() == "{'train_runtime': '12.5', 'train_samples_per_second': '100', 'train_loss': '0.6917', 'epoch': '2'}\n");
  CHECK(summary.contains("total_flos"));  // the caller's entry is not modified

  SECTION("nothing on other local processes; the world rank does not matter") {
    out.str("");
    state.is_local_process_zero = false;
    send_log(printer, state, logs);
    CHECK(out.str().empty());
    state.is_local_process_zero = true;
    state.is_world_process_zero = false;
    send_log(printer, state, logs);
    CHECK(out.str() == "{'loss': '0.6931', 'grad_norm': '1.73', 'learning_rate': '5e-05', 'epoch': '0.67'}\n");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// ProgressCallback (REF §5.1)
// ---------------------------------------------------------------------------------------------------------------

namespace {

struct ProgressRun {
  std::ostringstream out;
  tt::ProgressCallback cb;
  TrainingArguments args;
  TrainerState state;
  TrainerControl control;
  tt::DataLoaderInfo eval_loader{4, 32, 8};

  explicit ProgressRun(std::optional<bool> interactive, std::size_t max_str_len = 100)
      : cb(max_str_len, out, interactive) {
    cb.redraw_interval = std::chrono::milliseconds(0);
    state.max_steps = 10;
  }
  void train_begin(std::int64_t global_step = 0) {
    state.global_step = global_step;
    cb.on_train_begin(args, state, control, {});
  }
  void step_end(std::int64_t global_step) {
    state.global_step = global_step;
    state.epoch = static_cast<double>(global_step) / 10.0;
    cb.on_step_end(args, state, control, {});
  }
  void log(const tt::LogEntry& logs) { send_log(cb, state, logs); }
  void prediction_step(bool with_loader = true) {
    CallbackContext ctx;
    if (with_loader) ctx.eval_dataloader = &eval_loader;
    cb.on_prediction_step(args, state, control, ctx);
  }
  void evaluate() { cb.on_evaluate(args, state, control, {}); }
  void train_end() { cb.on_train_end(args, state, control, {}); }
};

bool has_control_chars(const std::string& s) {
  return s.find('\r') != std::string::npos || s.find('\x1b') != std::string::npos;
}

// The text after the last carriage return: what a terminal shows on the bar's line.
std::string last_redraw(const std::string& s) {
  auto pos = s.rfind('\r');
  std::string line = pos == std::string::npos ? s : s.substr(pos + 1);
  const auto clear = line.find("\x1b[K");
  if (clear != std::string::npos) line.erase(clear);
  return line;
}

}  // namespace

TEST_CASE("ProgressCallback: non-interactive output is only the log lines", "[callbacks][progress]") {
  ProgressRun run(false);

  SECTION("logs before on_train_begin (a standalone evaluate) are not printed") {
    run.log({{"eval_loss", 0.5}});
    CHECK(run.out.str().empty());
  }
  SECTION("a whole run: log lines with floats as f\"{v:.4g}\" (HF v5), total_flos dropped") {
    run.train_begin();
    for (int step = 1; step <= 3; ++step) run.step_end(step);
    tt::LogEntry logs{{"loss", 0.6931}, {"grad_norm", 1.73}, {"learning_rate", 5e-05}, {"epoch", 2.0 / 3.0}};
    run.log(logs);
    for (int i = 0; i < 4; ++i) run.prediction_step();
    run.log({{"eval_loss", 0.25}, {"epoch", 0.125}, {"eval_samples", 12345.0}});  // ties to even: 1.234e+04
    run.evaluate();
    run.log({{"loss", 0.5}, {"epoch", 2.675}, {"num_input_tokens_seen", 1234567}});  // ints stay as they are
    run.log({{"train_runtime", 1.5}, {"total_flos", 1e12}, {"train_loss", std::nan("")}, {"epoch", 1.0}});
    run.train_end();
    CHECK(run.out.str() ==
          "{'loss': '0.6931', 'grad_norm': '1.73', 'learning_rate': '5e-05', 'epoch': '0.6667'}\n"
          "{'eval_loss': '0.25', 'epoch': '0.125', 'eval_samples': '1.234e+04'}\n"
          "{'loss': '0.5', 'epoch': '2.675', 'num_input_tokens_seen': 1234567}\n"
          "{'train_runtime': '1.5', 'train_loss': 'nan', 'epoch': '1'}\n");
    CHECK_FALSE(has_control_chars(run.out.str()));
    CHECK(logs["epoch"].get<double>() == 2.0 / 3.0);  // the caller's entry is not changed
  }
  SECTION("strings longer than max_str_len are replaced by a message") {
    ProgressRun small(false, 10);
    small.train_begin();
    small.log({{"exactly_ten", "abcdefghij"}, {"too_long", "abcdefghijkl"}, {"loss", 1.0}});
    CHECK(small.out.str() ==
          "{'exactly_ten': 'abcdefghij', 'too_long': '[String too long to display, length: 12 > 10. Consider "
          "increasing `max_str_len` if needed.]', 'loss': '1'}\n");
  }
  SECTION("the default max_str_len is 100") {
    run.train_begin();
    run.log({{"s", std::string(100, 'x')}, {"t", std::string(101, 'y')}});
    CHECK(run.out.str() == "{'s': '" + std::string(100, 'x') +
                               "', 't': '[String too long to display, length: 101 > 100. Consider increasing "
                               "`max_str_len` if needed.]'}\n");
  }
  SECTION("only the world process zero prints") {
    run.state.is_world_process_zero = false;
    run.train_begin();
    run.step_end(1);
    run.log({{"loss", 1.0}});
    run.prediction_step();
    run.train_end();
    CHECK(run.out.str().empty());
  }
  SECTION("after on_train_end, logs are not printed any more") {
    run.train_begin();
    run.train_end();
    run.log({{"loss", 1.0}});
    CHECK(run.out.str().empty());
  }
  SECTION("an ostringstream is not a terminal: the default is non-interactive") {
    ProgressRun detected(std::nullopt);
    detected.train_begin();
    detected.step_end(1);
    detected.log({{"loss", 1.0}});
    CHECK(detected.out.str() == "{'loss': '1'}\n");
  }
}

TEST_CASE("ProgressCallback: interactive bars", "[callbacks][progress]") {
  ProgressRun run(true);

  SECTION("the training bar shows count, percentage, elapsed time, ETA and rate, one column short of the width") {
    for (const int columns : {60, 80, 120}) {
      run.cb.columns = columns;
      run.train_begin();
      CHECK_THAT(last_redraw(run.out.str()), Catch::Contains("0/10") && Catch::Contains("  0%|"));
      for (int step = 1; step <= 3; ++step) run.step_end(step);
      const std::string bar = last_redraw(run.out.str());
      CAPTURE(columns, bar);
      CHECK(static_cast<int>(bar.size()) == columns - 1);
      const auto room = bar.find('|', 5) - 5;  // between " 30%|" and "| 3/10"
      CHECK_THAT(bar, Catch::StartsWith(" 30%|" + std::string(static_cast<std::size_t>(0.3 * room), '#') + " "));
      CHECK(std::regex_search(bar, std::regex(R"(\| 3/10 \[\d\d:\d\d<\d\d:\d\d, [0-9]+\.[0-9]{2}it/s\]$)")));
    }
  }
  SECTION("the rate follows the recent steps and leaves out the time spent evaluating") {
    run.cb.columns = 120;
    run.train_begin();
    for (int step = 1; step <= 4; ++step) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      run.step_end(step);
    }
    run.prediction_step();
    std::this_thread::sleep_for(std::chrono::seconds(1));  // a long evaluation
    run.evaluate();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    run.step_end(5);
    const auto bar = last_redraw(run.out.str());
    std::smatch rate;
    REQUIRE(std::regex_search(bar, rate, std::regex(R"(, ([0-9.]+)it/s\]$)")));
    CAPTURE(bar);
    CHECK(std::stod(rate[1]) > 20);  // about 100 steps a second; 5 steps in over a second would be under 5
  }
  SECTION("in a narrow terminal the bar shrinks, then the line is cut: it never wraps") {
    run.cb.columns = 20;
    run.train_begin();
    run.step_end(3);
    CHECK(last_redraw(run.out.str()).size() == 19);
  }
  SECTION("during an evaluation both bars show; write() and logs print above both") {
    run.cb.columns = 80;
    run.train_begin();
    run.step_end(2);
    run.prediction_step();
    tt::ProgressCallback::write("a line from a callback", run.out);
    run.log({{"eval_loss", 0.5}});
    tt_test::Screen during(80);
    during.feed(run.out.str());
    auto rows = during.rows();
    REQUIRE(rows.size() == 4);
    CHECK(rows[0] == "a line from a callback");
    CHECK(rows[1] == "{'eval_loss': '0.5'}");
    CHECK_THAT(rows[2], Catch::StartsWith(" 20%|") && Catch::Contains("| 2/10 ["));
    CHECK_THAT(rows[3], Catch::StartsWith("Evaluating:  25%|") && Catch::Contains("| 1/4 ["));
    run.evaluate();  // the evaluation bar's line is given back
    tt_test::Screen after(80);
    after.feed(run.out.str());
    rows = after.rows();
    REQUIRE(rows.size() == 3);
    CHECK_THAT(rows[2], Catch::StartsWith(" 20%|"));
    CHECK(during.wrapped.empty());
  }
  SECTION("a log line clears the bar line, prints, and redraws the bar") {
    run.train_begin();
    run.step_end(3);
    run.out.str("");
    run.log({{"loss", 0.5}, {"epoch", 0.3}});
    const std::string out = run.out.str();
    CHECK_THAT(out, Catch::StartsWith("\r\x1b[K{'loss': '0.5', 'epoch': '0.3'}\n\r"));
    CHECK_THAT(last_redraw(out), Catch::Contains("3/10"));
  }
  SECTION("the evaluation bar during on_prediction_step, closed by on_evaluate") {
    run.train_begin();
    run.step_end(2);
    run.out.str("");
    run.prediction_step();
    CHECK_THAT(last_redraw(run.out.str()), Catch::StartsWith("Evaluating:  25%|") && Catch::Contains("1/4"));
    run.prediction_step();
    CHECK_THAT(last_redraw(run.out.str()), Catch::Contains("2/4"));
    run.evaluate();
    CHECK_THAT(last_redraw(run.out.str()), Catch::Contains("2/10") && !Catch::Contains("Evaluating"));
    run.out.str("");
    run.prediction_step();  // a new evaluation opens a new bar
    CHECK_THAT(last_redraw(run.out.str()), Catch::Contains("Evaluating:") && Catch::Contains("1/4"));
  }
  SECTION("no evaluation bar without an eval dataloader") {
    run.train_begin();
    run.prediction_step(false);
    CHECK_THAT(run.out.str(), !Catch::Contains("Evaluating"));
  }
  SECTION("after a resume the bar starts at the resumed step") {
    run.train_begin(5);
    CHECK_THAT(last_redraw(run.out.str()), Catch::Contains(" 50%|") && Catch::Contains("| 5/10 ["));
    run.step_end(6);
    CHECK_THAT(last_redraw(run.out.str()), Catch::Contains("| 6/10 ["));
  }
  SECTION("on_train_end draws the final bar and ends the line") {
    run.train_begin();
    run.step_end(10);
    run.train_end();
    const std::string out = run.out.str();
    REQUIRE_FALSE(out.empty());
    CHECK(out.back() == '\n');
    CHECK_THAT(last_redraw(out.substr(0, out.size() - 1)), Catch::StartsWith("100%|") && Catch::Contains("10/10"));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// EventTraceCallback
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("EventTraceCallback: one JSON object per line per event, appended", "[callbacks][trace]") {
  tt_test::TempDir dir("tt-trace");
  const auto path = (dir / "trace.jsonl").string();
  TrainingArguments args;
  TrainerControl control;
  TrainerState state;
  {
    CallbackHandler handler;
    handler.add_callback<tt::EventTraceCallback>(path);
    handler.on_train_begin(args, state, control, {});
    // Flushed as it happens: the line is on disk while the callback is alive.
    CHECK(tt_test::read_file(path) == "{\"event\":\"on_train_begin\",\"global_step\":0,\"epoch\":0.0}\n");
    state.global_step = 3;
    state.epoch = 1.5;
    handler.on_step_end(args, state, control, {});
  }
  {
    tt::EventTraceCallback second(path);
    CHECK(second.path() == path);
    state.epoch = 2.0 / 3.0;
    second.on_train_end(args, state, control, {});
  }
  CHECK(tt_test::read_file(path) ==
        "{\"event\":\"on_train_begin\",\"global_step\":0,\"epoch\":0.0}\n"
        "{\"event\":\"on_step_end\",\"global_step\":3,\"epoch\":1.5}\n"
        "{\"event\":\"on_train_end\",\"global_step\":3,\"epoch\":0.6666666666666666}\n");
}

TEST_CASE("EventTraceCallback: every event is traced under its own name", "[callbacks][trace]") {
  tt_test::TempDir dir("tt-trace");
  const auto path = (dir / "all.jsonl").string();
  {
    CallbackHandler handler;
    handler.add_callback<tt::EventTraceCallback>(path);
    TrainerState state;
    TrainerControl control;
    for (const auto& event : all_events())
      (handler.*event.method)(TrainingArguments{}, state, control, CallbackContext{});
  }
  std::istringstream lines(tt_test::read_file(path));
  std::vector<std::string> traced;
  for (std::string line; std::getline(lines, line);) traced.push_back(nlohmann::json::parse(line).at("event"));
  std::vector<std::string> expected;
  for (const auto& event : all_events()) expected.push_back(event.name);
  CHECK(traced == expected);
}

TEST_CASE("EventTraceCallback: an unwritable path throws ArgumentError naming it", "[callbacks][trace]") {
  tt_test::TempDir dir("tt-trace");
  const auto path = (dir / "no-such-dir" / "trace.jsonl").string();
  CHECK_THROWS_AS(tt::EventTraceCallback(path), tt::ArgumentError);
  CHECK_THROWS_WITH(tt::EventTraceCallback(path), Catch::Contains(path));
  CHECK_THROWS_AS(tt::EventTraceCallback(dir.str()), tt::ArgumentError);  // a directory
}

// ---------------------------------------------------------------------------------------------------------------
// SampleTextCallback
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("SampleTextCallback: a sample at each evaluation, printed by process zero only", "[callbacks][sample]") {
  std::ostringstream out;
  tt::SampleTextCallback sampler(
      [](const TrainerState& state) { return "text of step " + std::to_string(state.global_step); }, out);
  TrainerState state;
  TrainerControl control;
  sampler.on_evaluate(TrainingArguments{}, state, control, {});
  state.global_step = 500;
  sampler.on_evaluate(TrainingArguments{}, state, control, {});
  state.is_world_process_zero = false;
  sampler.on_evaluate(TrainingArguments{}, state, control, {});
  CHECK(out.str() == "sample at step 0:\ntext of step 0\nsample at step 500:\ntext of step 500\n");
  CHECK(sampler.samples == std::vector<std::string>{"text of step 0", "text of step 500"});
  CHECK_THROWS_AS(tt::SampleTextCallback(nullptr), tt::ArgumentError);
}

// ---------------------------------------------------------------------------------------------------------------
// detail::python_repr, python_float_repr, round_to and python_dict_repr
// ---------------------------------------------------------------------------------------------------------------

TEST_CASE("python_repr and python_float_repr match Python's repr(float)", "[callbacks][repr]") {
  // Expected strings from CPython 3: python3 -c 'print(repr(x))'.
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<double, std::string>> table{
      {0.1, "0.1"},
      {1.0 / 3.0, "0.3333333333333333"},
      {2.0 / 3.0, "0.6666666666666666"},
      {1.0 + 2.0 / 3.0, "1.6666666666666665"},
      {5e-05, "5e-05"},
      {3.7500000000000003e-05, "3.7500000000000003e-05"},
      {1.5e-5, "1.5e-05"},
      {1e-05, "1e-05"},
      {9.999e-5, "9.999e-05"},
      {0.0001, "0.0001"},
      {0.00012, "0.00012"},
      {-1e-7, "-1e-07"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1.0, "1.0"},
      {-2.5, "-2.5"},
      {100.0, "100.0"},
      {0.6931, "0.6931"},
      {1.7342519760131836, "1.7342519760131836"},
      {123456789.123, "123456789.123"},
      {1e15, "1000000000000000.0"},
      {1234567890123456.7, "1234567890123456.8"},
      {9007199254740992.0, "9007199254740992.0"},
      {9999999999999998.0, "9999999999999998.0"},
      {1e16, "1e+16"},
      {12345678901234567.0, "1.2345678901234568e+16"},
      {123456789012345680.0, "1.2345678901234568e+17"},
      {1e22, "1e+22"},
      {1e100, "1e+100"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {1e-310, "1e-310"},
      {5e-324, "5e-324"},
  };
  for (const auto& [value, expected] : table) {
    CAPTURE(expected);
    CHECK(tt::detail::python_repr(value) == expected);
    CHECK(tt::detail::python_float_repr(value) == expected);
  }
  // Non-finite values: repr() spells them nan / inf; Python's json module writes NaN / Infinity.
  CHECK(tt::detail::python_repr(std::nan("")) == "nan");
  CHECK(tt::detail::python_repr(inf) == "inf");
  CHECK(tt::detail::python_repr(-inf) == "-inf");
  CHECK(tt::detail::python_float_repr(std::nan("")) == "NaN");
  CHECK(tt::detail::python_float_repr(inf) == "Infinity");
  CHECK(tt::detail::python_float_repr(-inf) == "-Infinity");
  tt::LogEntry non_finite{{"a", std::nan("")}, {"b", inf}};
  CHECK(tt::detail::python_dict_repr(non_finite) == "{'a': nan, 'b': inf}");
}

TEST_CASE("python_format_4g matches Python's f\"{x:.4g}\"", "[callbacks][repr]") {
  // Expected values from CPython 3.
  const std::vector<std::pair<double, std::string>> table{
      {0.6931, "0.6931"},     {2.0 / 3.0, "0.6667"}, {5e-05, "5e-05"},   {100.0, "100"},     {2.0, "2"},
      {1234567.0, "1.235e+06"}, {12345.0, "1.234e+04"}, {0.0001, "0.0001"}, {-0.5, "-0.5"},   {0.0, "0"},
      {-0.0, "-0"},           {1e16, "1e+16"},       {3.14159265, "3.142"},
  };
  for (const auto& [value, expected] : table) {
    CAPTURE(value);
    CHECK(tt::detail::python_format_4g(value) == expected);
  }
  const double inf = std::numeric_limits<double>::infinity();
  CHECK(tt::detail::python_format_4g(inf) == "inf");
  CHECK(tt::detail::python_format_4g(-inf) == "-inf");
  CHECK(tt::detail::python_format_4g(-std::nan("")) == "nan");  // C would print -nan
}

TEST_CASE("round_to matches Python's round(x, 2)", "[callbacks][repr]") {
  // Expected values from CPython 3: round(x, 2) rounds the exact binary value, ties to even.
  const std::vector<std::pair<double, double>> table{
      {0.125, 0.12}, {0.375, 0.38}, {0.675, 0.68},  {2.675, 2.67},   {1.005, 1.0},       {0.015, 0.01},
      {0.025, 0.03}, {0.995, 0.99}, {99.995, 100.0}, {12.345, 12.35}, {2.0 / 3.0, 0.67}, {5.0 / 3.0, 1.67},
      {-0.125, -0.12}, {3.0, 3.0},
  };
  for (const auto& [value, expected] : table) {
    CAPTURE(value);
    CHECK(tt::detail::round_to(value, 2) == expected);
  }
  CHECK(std::isnan(tt::detail::round_to(std::nan(""), 2)));
  CHECK(tt::detail::round_to(std::numeric_limits<double>::infinity(), 2) ==
        std::numeric_limits<double>::infinity());
}

TEST_CASE("python_dict_repr matches Python's str(dict) for a flat log entry", "[callbacks][repr]") {
  CHECK(tt::detail::python_dict_repr(tt::LogEntry::object()) == "{}");
  tt::LogEntry entry;
  entry["loss"] = 0.6931;
  entry["step"] = 3;
  entry["neg"] = -7;
  entry["big"] = std::uint64_t{18446744073709551615ull};
  entry["name"] = "run-1";
  entry["flag"] = true;
  entry["off"] = false;
  entry["none"] = nullptr;
  entry["lr"] = 5e-05;
  entry["epoch"] = 1.0;
  // Python: {'loss': 0.6931, 'step': 3, 'neg': -7, 'big': 18446744073709551615, 'name': 'run-1', 'flag': True,
  //          'off': False, 'none': None, 'lr': 5e-05, 'epoch': 1.0}
  CHECK(tt::detail::python_dict_repr(entry) ==
        "{'loss': 0.6931, 'step': 3, 'neg': -7, 'big': 18446744073709551615, 'name': 'run-1', 'flag': True, "
        "'off': False, 'none': None, 'lr': 5e-05, 'epoch': 1.0}");
}

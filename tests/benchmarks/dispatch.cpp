// Dispatch: the cost of one event sent to N callbacks (Google Benchmark). Each callback counts the events it
// sees, so the call cannot be optimised away; ns_per_callback is the time above N = 0, divided by N.
//   dispatch [--benchmark_out=PATH --benchmark_out_format=json]
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include <torchtrain/callback_handler.hpp>
#include <torchtrain/training_arguments_fields.hpp>

namespace tt = torchtrain;

namespace {

struct Counting : tt::TrainerCallback {
  std::int64_t seen = 0;
  void on_step_end(const Args&, const State&, Control&, const Context&) override { ++seen; }
};

struct Silent : c10::WarningHandler {  // several callbacks of one class warn once each
  void process(const c10::SourceLocation&, const std::string&, bool) override {}
};

void on_step_end(benchmark::State& bench) {
  Silent silent;
  c10::Warning::WarningHandlerGuard quiet(&silent);
  tt::CallbackHandler handler;
  for (std::int64_t i = 0; i < bench.range(0); ++i) handler.add_callback(std::make_shared<Counting>());
  tt::TrainingArguments args;
  tt::TrainerState state;
  tt::TrainerControl control;
  tt::CallbackContext context;
  for (auto _ : bench) {
    handler.on_step_end(args, state, control, context);
    benchmark::ClobberMemory();
  }
}

// on_step_begin also clears three control flags before the callbacks run.
void on_step_begin(benchmark::State& bench) {
  tt::CallbackHandler handler;
  tt::TrainingArguments args;
  tt::TrainerState state;
  tt::TrainerControl control;
  tt::CallbackContext context;
  for (auto _ : bench) {
    handler.on_step_begin(args, state, control, context);
    benchmark::ClobberMemory();
  }
}

}  // namespace

BENCHMARK(on_step_end)->Arg(0)->Arg(1)->Arg(10)->Arg(100);
BENCHMARK(on_step_begin);
BENCHMARK_MAIN();

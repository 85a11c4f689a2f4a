// SPDX-License-Identifier: MIT
// What every fuzz target shares. A target is written once as
//
//   TORCHTRAIN_FUZZ_TARGET(name) { ...use data, size...; return 0; }
//
// and built two ways: with clang's -fsanitize=fuzzer it is a libFuzzer entry point (LLVMFuzzerTestOneInput);
// with TORCHTRAIN_FUZZ_REPLAY defined it registers itself with replay_main.cpp, which runs the checked-in corpus
// through it once (a plain executable, any compiler, run by CTest).
//
// The contract under test: on any input, the parsers either succeed or throw torchtrain::Error (or a subclass).
// Any other exception, a crash, or undefined behaviour is a bug in the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <c10/util/Exception.h>

#include "torchtrain/errors.hpp"

namespace torchtrain::fuzz {

/// A violated property of a successful parse (e.g. a round trip that changes the value). It is deliberately
/// not a torchtrain::Error, so that it is reported as a failure rather than taken as a rejected input.
struct PropertyViolation : std::logic_error {
  using std::logic_error::logic_error;
};

inline void check(bool condition, const std::string& what) {
  if (!condition) throw PropertyViolation(what);
}

/// Runs `parse`; a torchtrain::Error means the input was rejected properly, anything else propagates.
template <class Parse>
void expect_only_torchtrain_errors(Parse&& parse) {
  try {
    parse();
  } catch (const torchtrain::Error&) {
  }
}

/// Warnings (unknown keys, ...) are formatted as usual and then dropped, to keep the fuzzer's output readable.
inline void quiet_warnings() {
  struct Discard : c10::WarningHandler {
    void process(const c10::SourceLocation&, const std::string&, bool) override {}
  };
  static Discard discard;
  c10::Warning::set_warning_handler(&discard);
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

#ifdef TORCHTRAIN_FUZZ_REPLAY
using TargetFunction = int (*)(const std::uint8_t*, std::size_t);
/// Registers a target under its name; defined in replay_main.cpp.
bool register_target(const char* name, TargetFunction function);
#endif

}  // namespace torchtrain::fuzz

#ifdef TORCHTRAIN_FUZZ_REPLAY
#define TORCHTRAIN_FUZZ_TARGET(name)                                                                           \
  static int torchtrain_fuzz_one_input(const std::uint8_t* data, std::size_t size);                            \
  [[maybe_unused]] static const bool torchtrain_fuzz_registered =                                              \
      ::torchtrain::fuzz::register_target(#name, torchtrain_fuzz_one_input);                                   \
  static int torchtrain_fuzz_one_input(const std::uint8_t* data, std::size_t size)
#else
#define TORCHTRAIN_FUZZ_TARGET(name) extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
#endif

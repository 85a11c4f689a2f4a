#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <torch/utils.h>

namespace {

/// LibTorch seeds its default generator from the system's entropy in each process, so a model built before a
/// Trainer (which seeds from TrainingArguments::seed) would start from other weights on every run. Every test
/// case starts from the same generator state instead: a failure reproduces.
struct SeedEachTestCase : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(Catch::TestCaseInfo const& info) override {
    TestEventListenerBase::testCaseStarting(info);
    torch::manual_seed(0);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SeedEachTestCase)

// Learning-rate schedules: HF's formulas, PyTorch's plateau algorithm, exact resume, and bad input.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// LibTorch first: its glog CHECK macro must be overridden by Catch's, not the other way round.
#include <torch/torch.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support.hpp"
#include "torchtrain/lr_scheduler.hpp"

namespace {

using torchtrain::ArgumentError;
using torchtrain::FileFormatError;
using torchtrain::get_scheduler;
using torchtrain::LRScheduler;
using torchtrain::SchedulerType;
using Json = nlohmann::json;
using Catch::Matchers::Contains;

constexpr double kLr0 = 0.1;   // the optimizer's default lr, used by group 0
constexpr double kLr1 = 0.02;  // group 1's own lr

// Two param groups with different lrs, so that per-group scaling is visible.
std::unique_ptr<torch::optim::SGD> make_optimizer(double lr0 = kLr0, double lr1 = kLr1) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{torch::ones({2}, torch::requires_grad())});
  groups.emplace_back(std::vector<torch::Tensor>{torch::ones({3}, torch::requires_grad())},
                      std::make_unique<torch::optim::SGDOptions>(lr1));
  return std::make_unique<torch::optim::SGD>(groups, torch::optim::SGDOptions(lr0));
}

std::vector<double> group_lrs(const torch::optim::Optimizer& optimizer) {
  std::vector<double> lrs;
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  return lrs;
}

void advance(LRScheduler& scheduler, std::int64_t steps) {
  for (std::int64_t i = 0; i < steps; ++i) scheduler.step();
}

template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "<nothing thrown>";
}

// HF's lr_lambda of each schedule, written out independently of the library.
struct Case {
  std::string name;
  SchedulerType type;
  Json kwargs;
  std::function<double(std::int64_t)> lambda;
};

std::vector<Case> cases(std::int64_t W, std::int64_t T) {
  const double pi = std::acos(-1.0);
  auto warm = [W](std::int64_t s) { return double(s) / double(std::max<std::int64_t>(1, W)); };
  auto progress = [W, T](std::int64_t s) { return double(s - W) / double(std::max<std::int64_t>(1, T - W)); };
  auto cosine = [=](double cycles) {
    return [=](std::int64_t s) {
      return s < W ? warm(s) : std::max(0.0, 0.5 * (1.0 + std::cos(pi * cycles * 2.0 * progress(s))));
    };
  };
  auto restarts = [=](double cycles) {
    return [=](std::int64_t s) {
      if (s < W) return warm(s);
      if (progress(s) >= 1.0) return 0.0;
      return std::max(0.0, 0.5 * (1.0 + std::cos(pi * std::fmod(cycles * progress(s), 1.0))));
    };
  };
  auto polynomial = [=](double lr_end, double power) {
    return [=](std::int64_t s) {
      if (s < W) return warm(s);
      if (s > T) return lr_end / kLr0;
      const double remaining = 1.0 - double(s - W) / double(T - W);
      return ((kLr0 - lr_end) * std::pow(remaining, power) + lr_end) / kLr0;
    };
  };
  auto inverse_sqrt = [=](std::int64_t timescale) {
    return [=](std::int64_t s) {
      return s < W ? warm(s) : 1.0 / std::sqrt(double(s + timescale - W) / double(timescale));
    };
  };
  return {
      {"constant", SchedulerType::constant, nullptr, [](std::int64_t) { return 1.0; }},
      {"constant_with_warmup", SchedulerType::constant_with_warmup, nullptr,
       [=](std::int64_t s) { return s < W ? warm(s) : 1.0; }},
      {"linear", SchedulerType::linear, nullptr,
       [=](std::int64_t s) {
         return s < W ? warm(s) : std::max(0.0, double(T - s) / double(std::max<std::int64_t>(1, T - W)));
       }},
      {"cosine", SchedulerType::cosine, nullptr, cosine(0.5)},
      {"cosine num_cycles=2", SchedulerType::cosine, {{"num_cycles", 2}}, cosine(2.0)},
      {"cosine_with_restarts", SchedulerType::cosine_with_restarts, nullptr, restarts(1.0)},
      {"cosine_with_restarts num_cycles=3", SchedulerType::cosine_with_restarts, {{"num_cycles", 3}}, restarts(3.0)},
      {"polynomial", SchedulerType::polynomial, nullptr, polynomial(1e-7, 1.0)},
      {"polynomial lr_end=0.01 power=2", SchedulerType::polynomial, {{"lr_end", 0.01}, {"power", 2.0}},
       polynomial(0.01, 2.0)},
      {"inverse_sqrt", SchedulerType::inverse_sqrt, nullptr, inverse_sqrt(W > 0 ? W : 10000)},
      {"inverse_sqrt timescale=25", SchedulerType::inverse_sqrt, {{"timescale", 25}}, inverse_sqrt(25)},
      {"cosine_with_min_lr min_lr=0.01", SchedulerType::cosine_with_min_lr, {{"min_lr", 0.01}},
       [=](std::int64_t s) {  // min_lr over the optimizer's default lr: a rate of 0.1
         if (s < W) return warm(s);
         return std::max(0.0, 0.5 * (1.0 + std::cos(pi * 0.5 * 2.0 * progress(s))) * 0.9 + 0.1);
       }},
      {"cosine_with_min_lr min_lr_rate=0.2 num_cycles=1", SchedulerType::cosine_with_min_lr,
       {{"min_lr_rate", 0.2}, {"num_cycles", 1}},
       [=](std::int64_t s) {
         if (s < W) return warm(s);
         return std::max(0.0, 0.5 * (1.0 + std::cos(pi * 1.0 * 2.0 * progress(s))) * 0.8 + 0.2);
       }},
      {"warmup_stable_decay", SchedulerType::warmup_stable_decay, {{"num_decay_steps", T / 4}},
       [=](std::int64_t s) {  // linear warmup, stable, cosine decay over the last quarter, then 0
         const std::int64_t D = T / 4, S = T - W - D;
         if (s < W) return warm(s);
         if (s < W + S) return 1.0;
         if (s < W + S + D) return std::max(0.0, 0.5 * (1.0 + std::cos(pi * 0.5 * 2.0 * double(s - W - S) / double(std::max<std::int64_t>(1, D)))));
         return 0.0;
       }},
      {"warmup_stable_decay 1-sqrt min_lr_ratio=0.1", SchedulerType::warmup_stable_decay,
       {{"num_decay_steps", 5}, {"num_stable_steps", 3}, {"warmup_type", "cosine"}, {"decay_type", "1-sqrt"},
        {"min_lr_ratio", 0.1}},
       [=](std::int64_t s) {  // warmup from 0.1; past W + 3 + 5 it stays at 0.1
         if (s < W) return std::max(0.0, 0.5 * (1.0 - std::cos(pi * warm(s))) * 0.9 + 0.1);
         if (s < W + 3) return 1.0;
         if (s < W + 8) return std::max(0.0, (1.0 - std::sqrt(double(s - W - 3) / 5.0)) * 0.9 + 0.1);
         return 0.1;
       }},
  };
}

Approx close(double x) { return Approx(x).epsilon(1e-12).margin(1e-18); }

}  // namespace

TEST_CASE("every lambda schedule follows HF's formula in each param group", "[schedulers]") {
  tt_test::WarningCapture quiet;  // constant warns that it ignores warmup
  for (auto [W, T] : {std::pair<std::int64_t, std::int64_t>{10, 110}, {0, 50}, {7, 8}}) {
    for (const auto& c : cases(W, T)) {
      if (c.type == SchedulerType::polynomial && W == T) continue;
      DYNAMIC_SECTION(c.name << " warmup=" << W << " total=" << T) {
        auto optimizer = make_optimizer();
        auto scheduler = get_scheduler(c.type, *optimizer, W, T, c.kwargs);
        REQUIRE(scheduler->type() == c.type);
        REQUIRE_FALSE(scheduler->steps_on_metric());
        for (std::int64_t step = 0; step <= 2 * T + 20; ++step) {
          INFO("step " << step);
          const auto lrs = group_lrs(*optimizer);
          REQUIRE(lrs[0] == close(kLr0 * c.lambda(step)));
          REQUIRE(lrs[1] == close(kLr1 * c.lambda(step)));
          REQUIRE(scheduler->get_last_lr() == lrs);
          scheduler->step();
        }
      }
    }
  }
}

TEST_CASE("cosine_with_min_lr and warmup_stable_decay reject what HF rejects", "[schedulers]") {
  auto optimizer = make_optimizer();
  CHECK_THROWS_WITH(get_scheduler(SchedulerType::cosine_with_min_lr, *optimizer, 0, 10),
                    Contains("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`"));
  CHECK_THROWS_WITH(get_scheduler(SchedulerType::cosine_with_min_lr, *optimizer, 0, 10,
                                  Json{{"min_lr", 0.1}, {"min_lr_rate", 0.1}}),
                    Contains("Only one of min_lr or min_lr_rate should be set"));
  CHECK_THROWS_WITH(get_scheduler(SchedulerType::warmup_stable_decay, *optimizer, 0, 10),
                    Contains("needs num_decay_steps in lr_scheduler_kwargs"));
  CHECK_THROWS_WITH(get_scheduler(SchedulerType::warmup_stable_decay, *optimizer, 0, 10,
                                  Json{{"num_decay_steps", 2}, {"decay_type", "exp"}}),
                    Contains("unknown decay type 'exp'; expected 'linear', 'cosine' or '1-sqrt'"));
  CHECK_THROWS_WITH(get_scheduler(SchedulerType::warmup_stable_decay, *optimizer, 0, 10, Json{{"min_lr", 2}}),
                    Contains("'min_lr' is not an option of the warmup_stable_decay schedule"));
  tt_test::WarningCapture warnings;
  get_scheduler(SchedulerType::warmup_stable_decay, *optimizer, 0, 10, Json{{"num_decay_steps", 2}, {"num_stable_steps", 3}});
  CHECK(warnings.contains("Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used."));
}

TEST_CASE("schedules hit HF's landmark values", "[schedulers]") {
  tt_test::WarningCapture quiet;  // constant warns that it ignores warmup
  // warmup 10, total 110: the decay spans 100 steps. lr_at(s) gives both groups' lrs after s steps.
  auto lr_at = [](SchedulerType type, std::int64_t steps, const Json& kwargs = nullptr,
                  std::int64_t warmup = 10) {
    auto optimizer = make_optimizer();
    auto scheduler = get_scheduler(type, *optimizer, warmup, 110, kwargs);
    advance(*scheduler, steps);
    return group_lrs(*optimizer);
  };
  using S = SchedulerType;
  SECTION("linear") {
    CHECK(lr_at(S::linear, 0)[0] == 0.0);
    CHECK(lr_at(S::linear, 5)[0] == close(0.05));
    CHECK(lr_at(S::linear, 10)[0] == close(0.1));
    CHECK(lr_at(S::linear, 60)[0] == close(0.05));
    CHECK(lr_at(S::linear, 60)[1] == close(0.01));
    CHECK(lr_at(S::linear, 110)[0] == 0.0);
    CHECK(lr_at(S::linear, 500)[0] == 0.0);
  }
  SECTION("cosine: half-way is half, then it climbs back after the end as HF's does") {
    CHECK(lr_at(S::cosine, 10)[0] == close(0.1));
    CHECK(lr_at(S::cosine, 60)[0] == close(0.05));
    CHECK(lr_at(S::cosine, 110)[0] == Approx(0.0).margin(1e-15));
    CHECK(lr_at(S::cosine, 160)[0] == close(0.05));
  }
  SECTION("cosine_with_restarts restarts each cycle and stays at 0 after the end") {
    const Json two{{"num_cycles", 2}};
    CHECK(lr_at(S::cosine_with_restarts, 35, two)[0] == close(0.05));
    CHECK(lr_at(S::cosine_with_restarts, 59, two)[0] < 0.001);
    CHECK(lr_at(S::cosine_with_restarts, 60, two)[0] == close(0.1));
    CHECK(lr_at(S::cosine_with_restarts, 110, two)[0] == 0.0);
    CHECK(lr_at(S::cosine_with_restarts, 150, two)[0] == 0.0);
  }
  SECTION("polynomial ends at lr_end, scaled per group by the optimizer's default lr") {
    const Json kw{{"lr_end", 0.01}, {"power", 2.0}};
    CHECK(lr_at(S::polynomial, 60, kw)[0] == close(0.0325));
    CHECK(lr_at(S::polynomial, 60, kw)[1] == close(0.0065));
    CHECK(lr_at(S::polynomial, 110, kw)[0] == close(0.01));
    CHECK(lr_at(S::polynomial, 111, kw)[0] == close(0.01));
    CHECK(lr_at(S::polynomial, 111, kw)[1] == close(0.002));
  }
  SECTION("inverse_sqrt: timescale defaults to warmup, or 10000 without warmup") {
    CHECK(lr_at(S::inverse_sqrt, 10)[0] == close(0.1));
    CHECK(lr_at(S::inverse_sqrt, 40)[0] == close(0.05));
    CHECK(lr_at(S::inverse_sqrt, 0, nullptr, 0)[0] == close(0.1));
    CHECK(lr_at(S::inverse_sqrt, 30000, nullptr, 0)[0] == close(0.05));
  }
  SECTION("constant_with_warmup and constant") {
    CHECK(lr_at(S::constant_with_warmup, 5)[0] == close(0.05));
    CHECK(lr_at(S::constant_with_warmup, 10)[0] == 0.1);
    CHECK(lr_at(S::constant_with_warmup, 1000)[1] == 0.02);
    CHECK(lr_at(S::constant, 0, nullptr, 0) == std::vector<double>{0.1, 0.02});
    CHECK(lr_at(S::constant, 1000, nullptr, 0) == std::vector<double>{0.1, 0.02});
  }
}

TEST_CASE("the optimizer trains with the scheduled lr: 0 on the first warmup update, as in HF", "[schedulers]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::linear, *optimizer, 10, 110);
  auto& w = optimizer->param_groups()[0].params()[0];
  auto update = [&] {
    optimizer->zero_grad();
    w.sum().backward();  // gradient 1 everywhere
    optimizer->step();
    scheduler->step();
  };
  update();
  CHECK(w[0].item<double>() == 1.0);
  update();  // lr 0.1 * 1/10
  CHECK(w[0].item<double>() == Approx(1.0 - 0.01));
}

TEST_CASE("state_dict is readable JSON", "[schedulers]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::cosine, *optimizer, 10, 110);
  advance(*scheduler, 12);
  const Json state = scheduler->state_dict();
  CHECK(state.at("type") == "cosine");
  CHECK(state.at("last_epoch") == 12);
  CHECK(state.at("base_lrs") == Json{kLr0, kLr1});
  CHECK(state.at("last_lr") == Json(group_lrs(*optimizer)));
  CHECK(state.at("config") == Json{{"num_warmup_steps", 10}, {"num_training_steps", 110}, {"num_cycles", 0.5}});
}

TEST_CASE("a restored lambda schedule continues bit-exactly", "[schedulers][resume]") {
  tt_test::WarningCapture quiet;  // constant warns that it ignores warmup
  constexpr std::int64_t kSteps = 140;
  for (const auto& c : cases(10, 110)) {
    DYNAMIC_SECTION(c.name) {
      std::vector<std::vector<double>> expected;
      {
        auto optimizer = make_optimizer();
        auto scheduler = get_scheduler(c.type, *optimizer, 10, 110, c.kwargs);
        for (std::int64_t s = 0; s <= kSteps; ++s, scheduler->step()) expected.push_back(group_lrs(*optimizer));
      }
      for (std::int64_t k : {0, 1, 9, 10, 11, 57, 110, 111, 130}) {
        INFO("saved after " << k << " steps");
        auto optimizer = make_optimizer();
        auto scheduler = get_scheduler(c.type, *optimizer, 10, 110, c.kwargs);
        advance(*scheduler, k);
        const std::string saved = scheduler->state_dict().dump();

        // Build the new scheduler on lrs that are not the initial ones: base_lrs must come from the state.
        auto optimizer2 = make_optimizer();
        optimizer2->param_groups()[0].options().set_lr(0.7);
        optimizer2->param_groups()[1].options().set_lr(0.3);
        auto scheduler2 = get_scheduler(c.type, *optimizer2, 10, 110, c.kwargs);
        scheduler2->step();
        scheduler2->load_state_dict(Json::parse(saved));
        REQUIRE(group_lrs(*optimizer2) == expected[k]);
        REQUIRE(scheduler2->get_last_lr() == expected[k]);
        REQUIRE(scheduler2->state_dict().dump() == saved);
        for (std::int64_t s = k + 1; s <= kSteps; ++s) {
          scheduler2->step();
          REQUIRE(group_lrs(*optimizer2) == expected[s]);
        }
      }
    }
  }
}

TEST_CASE("a restored plateau schedule continues bit-exactly", "[schedulers][resume]") {
  const std::vector<double> metrics{5, 4, 4, 4, 4, 3.9999, 4, 4, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2};
  for (const char* mode : {"min", "max"}) {
    DYNAMIC_SECTION("mode " << mode) {
      const Json kwargs{{"mode", mode}, {"patience", 1}, {"cooldown", 2}, {"factor", 0.5}, {"min_lr", 0.004}};
      std::vector<std::vector<double>> expected;
      {
        auto optimizer = make_optimizer();
        auto scheduler = get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer, 0, 0, kwargs);
        for (double m : metrics) {
          scheduler->step(m);
          expected.push_back(group_lrs(*optimizer));
        }
        REQUIRE(expected.back() != expected.front());  // the sequence must exercise reductions
      }
      for (std::size_t k = 0; k <= metrics.size(); ++k) {
        INFO("saved after " << k << " evaluations");
        auto optimizer = make_optimizer();
        auto scheduler = get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer, 0, 0, kwargs);
        for (std::size_t i = 0; i < k; ++i) scheduler->step(metrics[i]);
        const std::string saved = scheduler->state_dict().dump();

        auto optimizer2 = make_optimizer();
        auto scheduler2 = get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer2, 0, 0, kwargs);
        scheduler2->step(100.0);
        scheduler2->step(-100.0);
        scheduler2->load_state_dict(Json::parse(saved));
        REQUIRE(scheduler2->state_dict().dump() == saved);
        REQUIRE(group_lrs(*optimizer2) == group_lrs(*optimizer));
        for (std::size_t i = k; i < metrics.size(); ++i) {
          scheduler2->step(metrics[i]);
          REQUIRE(group_lrs(*optimizer2) == expected[i]);
          REQUIRE(scheduler2->get_last_lr() == expected[i]);
        }
      }
    }
  }
}

TEST_CASE("a rejected state leaves the scheduler and the optimizer untouched", "[schedulers][resume]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::linear, *optimizer, 10, 110);
  advance(*scheduler, 15);
  const Json good = scheduler->state_dict();
  const auto lrs_before = group_lrs(*optimizer);

  auto expect_unchanged = [&] {
    CHECK(group_lrs(*optimizer) == lrs_before);
    CHECK(scheduler->get_last_lr() == lrs_before);
    CHECK(scheduler->state_dict() == good);
  };
  // A valid state that differs from `good` in every field, so that a partial load would show.
  Json donor = good;
  donor["last_epoch"] = 40;
  donor["base_lrs"] = {0.3, 0.2};
  donor["last_lr"] = {0.25, 0.15};
  {
    auto twin_optimizer = make_optimizer();
    auto twin = get_scheduler(SchedulerType::linear, *twin_optimizer, 10, 110);
    twin->load_state_dict(donor);
    REQUIRE(group_lrs(*twin_optimizer) == std::vector<double>{0.25, 0.15});
  }
  auto with = [&](const char* key, Json value) {
    Json state = donor;
    state[key] = std::move(value);
    return state;
  };
  auto without = [&](const char* key) {
    Json state = donor;
    state.erase(key);
    return state;
  };

  SECTION("another schedule's state") {
    auto other_optimizer = make_optimizer();
    auto cosine = get_scheduler(SchedulerType::cosine, *other_optimizer, 10, 110);
    advance(*cosine, 40);
    CHECK_THAT(message_of<ArgumentError>([&] { scheduler->load_state_dict(cosine->state_dict()); }),
               Contains("'cosine'") && Contains("'linear'"));
    expect_unchanged();
  }
  SECTION("another param-group count") {
    std::vector<torch::Tensor> params{torch::ones({2}, torch::requires_grad())};
    torch::optim::SGD one_group(params, torch::optim::SGDOptions(0.1));
    auto other = get_scheduler(SchedulerType::linear, one_group, 10, 110);
    advance(*other, 40);
    CHECK_THAT(message_of<ArgumentError>([&] { scheduler->load_state_dict(other->state_dict()); }),
               Contains("1 param groups") && Contains("has 2"));
    expect_unchanged();
  }
  SECTION("valid counters but a last_lr of the wrong size") {
    CHECK_THAT(message_of<ArgumentError>([&] { scheduler->load_state_dict(with("last_lr", {0.5})); }),
               Contains("last_lr"));
    expect_unchanged();
  }
  SECTION("garbage") {
    const std::vector<Json> garbage{
        Json::array({1, 2}),
        "linear",
        Json(nullptr),
        without("type"),
        with("type", 3),
        without("last_epoch"),
        with("last_epoch", -1),
        with("last_epoch", "15"),
        with("last_epoch", 1.5),
        without("base_lrs"),
        with("base_lrs", {0.1, "0.02"}),
        with("base_lrs", 0.1),
        without("last_lr"),
        with("last_lr", {0.5, nullptr}),
    };
    for (const auto& state : garbage) {
      INFO(state.dump());
      CHECK_THAT(message_of<FileFormatError>([&] { scheduler->load_state_dict(state); }),
                 Contains("lr scheduler state"));
      expect_unchanged();
    }
  }
  scheduler->step();
  CHECK(scheduler->state_dict().at("last_epoch") == 16);
}

TEST_CASE("a rejected plateau state leaves it untouched", "[schedulers][resume]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer, 0, 0, {{"patience", 0}});
  for (double m : {3.0, 2.0, 2.0}) scheduler->step(m);
  const Json good = scheduler->state_dict();
  REQUIRE(good.at("best") == 2.0);
  const auto lrs_before = group_lrs(*optimizer);
  // Valid, and different from `good` in every field, so that a partial load would show.
  Json donor = good;
  donor["last_epoch"] = 9;
  donor["best"] = 0.5;
  donor["num_bad_epochs"] = 3;
  donor["cooldown_counter"] = 1;
  donor["last_lr"] = {0.25, 0.15};
  for (const char* key : {"last_epoch", "best", "num_bad_epochs", "cooldown_counter", "last_lr"}) {
    for (const Json& bad : {Json("infinity"), Json(-1), Json(nullptr)}) {
      if (bad.is_number() && std::string(key) == "best") continue;
      Json state = donor;
      state[key] = bad;
      INFO(state.dump());
      CHECK_THROWS_AS(scheduler->load_state_dict(state), FileFormatError);
      CHECK(scheduler->state_dict() == good);
      CHECK(group_lrs(*optimizer) == lrs_before);
    }
  }
  CHECK_NOTHROW(scheduler->load_state_dict(donor));
  CHECK(scheduler->state_dict() == donor);
}

TEST_CASE("loading a state saved with other settings keeps the current ones and says so", "[schedulers][resume]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::linear, *optimizer, 10, 110);
  advance(*scheduler, 60);
  const Json state = scheduler->state_dict();

  SECTION("same settings: silent") {
    tt_test::WarningCapture warnings;
    auto optimizer2 = make_optimizer();
    get_scheduler(SchedulerType::linear, *optimizer2, 10, 110)->load_state_dict(state);
    CHECK(warnings.messages.empty());
  }
  SECTION("longer training: a warning, the saved lr, then the new schedule") {
    tt_test::WarningCapture warnings;
    auto optimizer2 = make_optimizer();
    auto longer = get_scheduler(SchedulerType::linear, *optimizer2, 10, 210);
    longer->load_state_dict(state);
    CHECK(warnings.contains("\"num_training_steps\":110"));
    CHECK(warnings.contains("\"num_training_steps\":210"));
    CHECK(group_lrs(*optimizer2) == group_lrs(*optimizer));
    longer->step();
    CHECK(group_lrs(*optimizer2)[0] == close(kLr0 * (210.0 - 61.0) / 200.0));
  }
}

TEST_CASE("reduce_lr_on_plateau follows PyTorch", "[schedulers][plateau]") {
  auto optimizer = make_optimizer();
  auto plateau = [&](Json kwargs) {
    return get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer, 0, 0, std::move(kwargs));
  };
  // Steps through `metrics` and returns group 0's lr after each one.
  auto run = [&](LRScheduler& scheduler, std::vector<double> metrics) {
    std::vector<double> lrs;
    for (double m : metrics) {
      scheduler.step(m);
      lrs.push_back(group_lrs(*optimizer)[0]);
    }
    return lrs;
  };

  SECTION("defaults: patience 10, factor 0.1") {
    auto s = plateau(nullptr);
    CHECK(s->steps_on_metric());
    CHECK(s->get_last_lr() == std::vector<double>{kLr0, kLr1});
    const auto lrs = run(*s, std::vector<double>(12, 1.0));
    CHECK(lrs[10] == kLr0);  // 10 bad evaluations: patience not exceeded yet
    CHECK(lrs[11] == close(kLr0 * 0.1));
    CHECK(group_lrs(*optimizer)[1] == close(kLr1 * 0.1));
    CHECK(s->get_last_lr() == group_lrs(*optimizer));
  }
  SECTION("patience counts bad evaluations since the best one") {
    auto s = plateau({{"patience", 2}, {"factor", 0.5}});
    CHECK(run(*s, {1, 1, 1, 1, 1, 0.5, 1, 1, 1}) ==
          std::vector<double>{0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025});
  }
  SECTION("cooldown ignores bad evaluations after a reduction") {
    auto s = plateau({{"patience", 0}, {"cooldown", 2}, {"factor", 0.5}});
    CHECK(run(*s, {1, 1, 1, 1, 1, 1}) == std::vector<double>{0.1, 0.05, 0.05, 0.05, 0.025, 0.025});
    CHECK(s->state_dict().at("cooldown_counter") == 1);
  }
  SECTION("min_lr per group, and reductions below eps are skipped") {
    auto s = plateau({{"patience", 0}, {"factor", 0.5}, {"min_lr", {0.03, 0.001}}});
    run(*s, std::vector<double>(8, 1.0));
    CHECK(group_lrs(*optimizer) == std::vector<double>{0.03, 0.001});
  }
  SECTION("eps") {
    auto s = plateau({{"patience", 0}, {"factor", 0.5}, {"eps", 0.03}});
    run(*s, {1, 1, 1});
    CHECK(group_lrs(*optimizer) == std::vector<double>{0.05, kLr1});
  }
  SECTION("mode max") {
    auto s = plateau({{"mode", "max"}, {"patience", 0}, {"factor", 0.5}});
    CHECK(run(*s, {1, 2, 2, 3, 1}) == std::vector<double>{0.1, 0.1, 0.05, 0.05, 0.025});
  }
  SECTION("relative threshold") {
    auto s = plateau({{"patience", 0}, {"factor", 0.5}, {"threshold", 0.1}});
    CHECK(run(*s, {1, 0.95, 0.89, 0.85}) == std::vector<double>{0.1, 0.05, 0.05, 0.025});
  }
  SECTION("absolute threshold") {
    auto s = plateau({{"patience", 0}, {"factor", 0.5}, {"threshold", 0.1}, {"threshold_mode", "abs"}});
    CHECK(run(*s, {10, 9.95, 9.85, 9.8}) == std::vector<double>{0.1, 0.05, 0.05, 0.025});
  }
  SECTION("a NaN metric is a bad evaluation") {
    auto s = plateau({{"patience", 0}, {"factor", 0.5}});
    const double nan = std::numeric_limits<double>::quiet_NaN();
    CHECK(run(*s, {1, nan}) == std::vector<double>{0.1, 0.05});
  }
  SECTION("the initial best is infinite and survives a JSON round trip") {
    auto s = plateau({{"mode", "max"}});
    const Json state = Json::parse(s->state_dict().dump());
    CHECK(state.at("best") == "-inf");
    auto optimizer2 = make_optimizer();
    auto s2 = get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer2, 0, 0, {{"mode", "max"}});
    s2->step(5.0);
    s2->load_state_dict(state);
    CHECK(s2->state_dict() == state);
  }
  SECTION("the schedule advances on metrics only, and lambda schedules on updates only") {
    auto s = plateau(nullptr);
    CHECK_THAT(message_of<ArgumentError>([&] { s->step(); }), Contains("step(metric)"));
    auto linear = get_scheduler(SchedulerType::linear, *optimizer, 0, 10);
    CHECK_FALSE(linear->steps_on_metric());
    CHECK_THAT(message_of<ArgumentError>([&] { linear->step(1.0); }), Contains("call step()"));
  }
}

TEST_CASE("get_scheduler rejects bad arguments, naming them", "[schedulers][errors]") {
  auto optimizer = make_optimizer();
  using S = SchedulerType;
  auto error = [&](S type, std::int64_t warmup, std::int64_t total, Json kwargs = nullptr) {
    return message_of<ArgumentError>([&] { get_scheduler(type, *optimizer, warmup, total, kwargs); });
  };

  SECTION("unknown options list the valid ones") {
    CHECK_THAT(error(S::cosine, 0, 10, {{"num_cycle", 2}}), Contains("'num_cycle'") && Contains("num_cycles"));
    CHECK_THAT(error(S::polynomial, 0, 10, {{"timescale", 2}}), Contains("lr_end, power"));
    CHECK_THAT(error(S::linear, 0, 10, {{"num_cycles", 2}}), Contains("takes none"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"verbose", true}}), Contains("threshold_mode"));
    CHECK_THAT(error(S::cosine, 0, 10, Json::array({2})), Contains("JSON object"));
  }
  SECTION("options of the wrong kind") {
    CHECK_THAT(error(S::cosine, 0, 10, {{"num_cycles", "2"}}), Contains("num_cycles") && Contains("a number"));
    CHECK_THAT(error(S::inverse_sqrt, 0, 10, {{"timescale", 2.5}}), Contains("an integer"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"mode", "median"}}), Contains("min or max"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"threshold_mode", "ABS"}}), Contains("rel or abs"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"min_lr", {0.1, 0.2, 0.3}}}), Contains("min_lr has 3"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"min_lr", "0"}}), Contains("min_lr"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"factor", 1.0}}), Contains("factor"));
    CHECK_THAT(error(S::reduce_lr_on_plateau, 0, 0, {{"patience", -1}}), Contains("patience"));
    CHECK_THAT(error(S::inverse_sqrt, 0, 10, {{"timescale", 0}}), Contains("timescale"));
    CHECK_THAT(error(S::polynomial, 0, 10, {{"power", -1.0}}), Contains("power"));
  }
  SECTION("step counts") {
    CHECK_THAT(error(S::linear, -1, 10), Contains("num_warmup_steps is -1"));
    for (S type : {S::linear, S::cosine, S::cosine_with_restarts, S::polynomial})
      CHECK_THAT(error(type, 0, 0), Contains("num_training_steps is 0"));
    for (S type : {S::constant, S::constant_with_warmup, S::inverse_sqrt, S::reduce_lr_on_plateau})
      CHECK_NOTHROW(get_scheduler(type, *optimizer, 0, 0));
    CHECK_THAT(error(S::polynomial, 10, 10), Contains("no step to decay"));
  }
  SECTION("polynomial's lr_end must be below the initial lr") {
    CHECK_THAT(error(S::polynomial, 0, 10, {{"lr_end", 0.1}}), Contains("lr_end (0.1)") && Contains("(0.1)"));
    CHECK_THAT(error(S::polynomial, 0, 10, {{"lr_end", 0.5}}), Contains("smaller than the initial lr"));
    CHECK_NOTHROW(get_scheduler(S::polynomial, *optimizer, 0, 10, {{"lr_end", 0.05}}));
  }
  SECTION("a failed build leaves the optimizer's lrs alone") {
    error(S::polynomial, 0, 10, {{"lr_end", 0.5}});
    CHECK(group_lrs(*optimizer) == std::vector<double>{kLr0, kLr1});
  }
}

TEST_CASE("schedules that ignore warmup say so", "[schedulers]") {
  auto optimizer = make_optimizer();
  tt_test::WarningCapture warnings;
  get_scheduler(SchedulerType::constant, *optimizer, 5, 100);
  CHECK(warnings.contains("constant_with_warmup"));
  get_scheduler(SchedulerType::reduce_lr_on_plateau, *optimizer, 5, 100);
  CHECK(warnings.contains("'reduce_lr_on_plateau' has no warmup"));
  warnings.messages.clear();
  get_scheduler(SchedulerType::linear, *optimizer, 5, 100);
  CHECK(warnings.messages.empty());
}

TEST_CASE("param groups added after the scheduler are refused, not silently unscheduled", "[schedulers][errors]") {
  auto optimizer = make_optimizer();
  auto scheduler = get_scheduler(SchedulerType::linear, *optimizer, 0, 10);
  optimizer->add_param_group(
      torch::optim::OptimizerParamGroup(std::vector<torch::Tensor>{torch::ones({1}, torch::requires_grad())}));
  CHECK_THAT(message_of<ArgumentError>([&] { scheduler->step(); }), Contains("had 2 param groups"));
}

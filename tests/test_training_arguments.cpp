// TrainingArguments: HF defaults, validation, JSON files and the command line.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support.hpp"
#include "torchtrain/detail/argument_fields.hpp"
#include "torchtrain/training_arguments.hpp"

using Catch::Matchers::Contains;
using nlohmann::json;
using torchtrain::ArgumentError;
using torchtrain::ArgumentParser;
using torchtrain::FileFormatError;
using torchtrain::IntervalStrategy;
using torchtrain::ParseResult;
using torchtrain::SaveStrategy;
using torchtrain::SchedulerType;
using torchtrain::TrainingArguments;

namespace {

// Every field, listed by hand so that a field missing from the library's table shows up here.
void require_same_fields(const TrainingArguments& a, const TrainingArguments& b) {
  CHECK(a.output_dir == b.output_dir);
  CHECK(a.logging_dir == b.logging_dir);
  CHECK(a.run_name == b.run_name);
  CHECK(a.num_train_epochs == b.num_train_epochs);
  CHECK(a.max_steps == b.max_steps);
  CHECK(a.per_device_train_batch_size == b.per_device_train_batch_size);
  CHECK(a.per_device_eval_batch_size == b.per_device_eval_batch_size);
  CHECK(a.gradient_accumulation_steps == b.gradient_accumulation_steps);
  CHECK(a.dataloader_drop_last == b.dataloader_drop_last);
  CHECK(a.dataloader_num_workers == b.dataloader_num_workers);
  CHECK(a.learning_rate == b.learning_rate);
  CHECK(a.weight_decay == b.weight_decay);
  CHECK(a.adam_beta1 == b.adam_beta1);
  CHECK(a.adam_beta2 == b.adam_beta2);
  CHECK(a.adam_epsilon == b.adam_epsilon);
  CHECK(a.max_grad_norm == b.max_grad_norm);
  CHECK(a.lr_scheduler_type == b.lr_scheduler_type);
  CHECK(a.warmup_ratio == b.warmup_ratio);
  CHECK(a.warmup_steps == b.warmup_steps);
  CHECK(a.logging_strategy == b.logging_strategy);
  CHECK(a.logging_steps == b.logging_steps);
  CHECK(a.logging_first_step == b.logging_first_step);
  CHECK(a.logging_nan_inf_filter == b.logging_nan_inf_filter);
  CHECK(a.eval_strategy == b.eval_strategy);
  CHECK(a.eval_steps == b.eval_steps);
  CHECK(a.eval_delay == b.eval_delay);
  CHECK(a.eval_on_start == b.eval_on_start);
  CHECK(a.save_strategy == b.save_strategy);
  CHECK(a.save_steps == b.save_steps);
  CHECK(a.save_total_limit == b.save_total_limit);
  CHECK(a.save_only_model == b.save_only_model);
  CHECK(a.save_async == b.save_async);
  CHECK(a.load_best_model_at_end == b.load_best_model_at_end);
  CHECK(a.metric_for_best_model == b.metric_for_best_model);
  CHECK(a.greater_is_better == b.greater_is_better);
  CHECK(a.restore_callback_states_from_checkpoint == b.restore_callback_states_from_checkpoint);
  CHECK(a.ignore_data_skip == b.ignore_data_skip);
  CHECK(a.seed == b.seed);
  CHECK(a.data_seed == b.data_seed);
  CHECK(a.disable_tqdm == b.disable_tqdm);
  CHECK(a.report_to == b.report_to);
  CHECK(a.project == b.project);
  CHECK(a.use_cpu == b.use_cpu);
  CHECK(a.ddp_timeout == b.ddp_timeout);
  CHECK(a.train_sampling_strategy == b.train_sampling_strategy);
  CHECK(a.label_smoothing_factor == b.label_smoothing_factor);
  CHECK(a.include_num_input_tokens_seen == b.include_num_input_tokens_seen);
  CHECK(a.eval_accumulation_steps == b.eval_accumulation_steps);
  CHECK(a.include_for_metrics == b.include_for_metrics);
  CHECK(a.average_tokens_across_devices == b.average_tokens_across_devices);
  CHECK(a.optim == b.optim);
  CHECK(a.optim_args == b.optim_args);
  CHECK(a.lr_scheduler_kwargs == b.lr_scheduler_kwargs);
  CHECK(a.bf16 == b.bf16);
  CHECK(a.fp16 == b.fp16);
  CHECK(a.bf16_full_eval == b.bf16_full_eval);
  CHECK(a.fp16_full_eval == b.fp16_full_eval);
  CHECK(a.tf32 == b.tf32);
}

// A valid combination in which every field differs from its default, except the one of each exclusive pair
// (fp16 or bf16, fp16_full_eval or bf16_full_eval) that `swapped` leaves at its default.
TrainingArguments non_default_arguments(bool swapped = false) {
  TrainingArguments a;
  a.output_dir = "runs/exp1";
  a.logging_dir = "runs/exp1/logs";
  a.run_name = "exp1 \xc3\xa9t\xc3\xa9";  // non-ASCII survives the round trip
  a.num_train_epochs = 2.5;
  a.max_steps = 1234;
  a.per_device_train_batch_size = 16;
  a.per_device_eval_batch_size = 32;
  a.gradient_accumulation_steps = 4;
  a.dataloader_drop_last = true;
  a.dataloader_num_workers = 2;
  a.learning_rate = 3.7500000000000003e-05;
  a.weight_decay = 0.01;
  a.adam_beta1 = 0.8;
  a.adam_beta2 = 0.95;
  a.adam_epsilon = 1e-6;
  a.max_grad_norm = 0.1;
  a.lr_scheduler_type = SchedulerType::cosine_with_restarts;
  a.warmup_ratio = 0.1;
  a.warmup_steps = 7;
  a.logging_strategy = IntervalStrategy::epoch;
  a.logging_steps = 0.05;
  a.logging_first_step = true;
  a.logging_nan_inf_filter = false;
  a.eval_strategy = IntervalStrategy::steps;
  a.eval_steps = 25;
  a.eval_delay = 3;
  a.eval_on_start = true;
  a.save_strategy = SaveStrategy::best;
  a.save_steps = 75;
  a.save_total_limit = 3;
  a.save_only_model = true;
  a.save_async = true;
  a.load_best_model_at_end = true;
  a.metric_for_best_model = "accuracy";
  a.greater_is_better = false;
  a.restore_callback_states_from_checkpoint = false;
  a.ignore_data_skip = true;
  a.seed = 18446744073709551615ULL;  // largest uint64: must not pass through a double or int64
  a.data_seed = 7;
  a.disable_tqdm = true;
  a.report_to = {"tensorboard", "csv"};
  a.project = "blobs";
  a.use_cpu = true;
  a.ddp_timeout = 60;
  a.train_sampling_strategy = "group_by_length";
  a.label_smoothing_factor = 0.1;
  a.include_num_input_tokens_seen = "non_padding";
  a.eval_accumulation_steps = 4;
  a.include_for_metrics = {"inputs", "loss"};
  a.average_tokens_across_devices = false;
  a.optim = "sgd";
  a.optim_args = "momentum=0.9";
  a.lr_scheduler_kwargs = {{"num_cycles", 2}};
  a.fp16 = a.bf16_full_eval = !swapped;
  a.bf16 = a.fp16_full_eval = swapped;
  a.tf32 = false;
  a.validate();
  return a;
}

// Runs `parser` on {"prog", tokens...}.
ParseResult parse_tokens(const std::vector<std::string>& tokens, const ArgumentParser& parser = ArgumentParser(),
                         bool known = false) {
  std::vector<const char*> argv{"prog"};
  for (const auto& token : tokens) argv.push_back(token.c_str());
  std::ostringstream help;
  return known ? parser.parse_known(static_cast<int>(argv.size()), argv.data(), help)
               : parser.parse(static_cast<int>(argv.size()), argv.data(), help);
}

TrainingArguments parse_args(const std::vector<std::string>& tokens) { return parse_tokens(tokens).args; }

// The exception message of `f`, which must throw E.
template <class E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return "";
}

std::string validate_error(const std::function<void(TrainingArguments&)>& change) {
  return error_of<ArgumentError>([&] {
    TrainingArguments a;
    change(a);
    a.validate();
  });
}

}  // namespace

TEST_CASE("TrainingArguments defaults are Hugging Face's", "[training_arguments]") {
  const TrainingArguments a;
  CHECK(a.output_dir == "trainer_output");
  CHECK(a.logging_dir.empty());
  CHECK(a.run_name.empty());
  CHECK(a.num_train_epochs == 3.0);
  CHECK(a.max_steps == -1);
  CHECK(a.per_device_train_batch_size == 8);
  CHECK(a.per_device_eval_batch_size == 8);
  CHECK(a.gradient_accumulation_steps == 1);
  CHECK_FALSE(a.dataloader_drop_last);
  CHECK(a.dataloader_num_workers == 0);
  CHECK(a.learning_rate == 5e-5);
  CHECK(a.weight_decay == 0.0);
  CHECK(a.adam_beta1 == 0.9);
  CHECK(a.adam_beta2 == 0.999);
  CHECK(a.adam_epsilon == 1e-8);
  CHECK(a.max_grad_norm == 1.0);
  CHECK(a.lr_scheduler_type == SchedulerType::linear);
  CHECK_FALSE(a.warmup_ratio.has_value());
  CHECK(a.warmup_steps == 0);
  CHECK(a.logging_strategy == IntervalStrategy::steps);
  CHECK(a.logging_steps == 500);
  CHECK_FALSE(a.logging_first_step);
  CHECK(a.logging_nan_inf_filter);
  CHECK(a.eval_strategy == IntervalStrategy::no);
  CHECK_FALSE(a.eval_steps);
  CHECK(a.eval_delay == 0);
  CHECK_FALSE(a.eval_on_start);
  CHECK(a.save_strategy == SaveStrategy::steps);
  CHECK(a.save_steps == 500);
  CHECK_FALSE(a.save_total_limit);
  CHECK_FALSE(a.save_only_model);
  CHECK_FALSE(a.save_async);
  CHECK_FALSE(a.load_best_model_at_end);
  CHECK_FALSE(a.metric_for_best_model);
  CHECK_FALSE(a.greater_is_better);
  CHECK_FALSE(a.ignore_data_skip);
  CHECK(a.seed == 42);
  CHECK_FALSE(a.data_seed);
  CHECK_FALSE(a.disable_tqdm);                            // HF: None, resolved to False at the default log level
  CHECK(a.report_to == std::vector<std::string>{"all"});  // HF v4
  CHECK_FALSE(a.use_cpu);
  CHECK(a.ddp_timeout == 1800);  // HF
  // Deliberate improvement (DESIGN, semantics 5): HF defaults to False.
  CHECK(a.restore_callback_states_from_checkpoint);
}

TEST_CASE("validate accepts the defaults and is idempotent", "[training_arguments]") {
  TrainingArguments a;
  a.validate();
  require_same_fields(a, TrainingArguments());

  TrainingArguments b = non_default_arguments();
  const json before = b.to_json();
  b.validate();
  CHECK(b.to_json() == before);
}

// ---- validation errors: each names the field and the offending value -----------------------------------------

TEST_CASE("validate: logging_steps 0 with the steps logging strategy", "[training_arguments][validate]") {
  const auto message = validate_error([](TrainingArguments& a) { a.logging_steps = 0; });
  CHECK_THAT(message, Contains("TrainingArguments.logging_steps = 0"));
  CHECK_THAT(message, Contains("logging_strategy"));
  // Not an error when logging by epoch.
  TrainingArguments ok;
  ok.logging_steps = 0;
  ok.logging_strategy = IntervalStrategy::epoch;
  CHECK_NOTHROW(ok.validate());
}

TEST_CASE("validate: eval strategy steps without eval_steps or logging_steps", "[training_arguments][validate]") {
  const auto message = validate_error([](TrainingArguments& a) {
    a.eval_strategy = IntervalStrategy::steps;
    a.logging_strategy = IntervalStrategy::no;
    a.logging_steps = 0;
  });
  CHECK_THAT(message, Contains("TrainingArguments.eval_steps = none"));
  CHECK_THAT(message, Contains("evaluation strategy steps requires either non-zero eval_steps or logging_steps"));
}

TEST_CASE("validate: steps above 1 must be whole numbers", "[training_arguments][validate]") {
  CHECK(validate_error([](TrainingArguments& a) { a.logging_steps = 2.5; }) ==
        "TrainingArguments.logging_steps = 2.5: steps bigger than 1 must be whole numbers; use 2 or 3, or a ratio "
        "below 1");
  CHECK_THAT(validate_error([](TrainingArguments& a) {
               a.eval_strategy = IntervalStrategy::steps;
               a.eval_steps = 10.5;
             }),
             Contains("TrainingArguments.eval_steps = 10.5: steps bigger than 1 must be whole numbers; use 10 or 11"));
  CHECK_THAT(validate_error([](TrainingArguments& a) { a.save_steps = 100.25; }),
             Contains("TrainingArguments.save_steps = 100.25: steps bigger than 1 must be whole numbers"));
  // Ratios and whole numbers are fine, and the rule only applies to the steps strategy.
  TrainingArguments ok;
  ok.logging_steps = 0.25;
  ok.save_steps = 1;
  CHECK_NOTHROW(ok.validate());
  ok.save_strategy = SaveStrategy::epoch;
  ok.save_steps = 2.5;
  CHECK_NOTHROW(ok.validate());
}

TEST_CASE("validate: out-of-range numbers name the field and the value", "[training_arguments][validate]") {
  struct Case {
    const char* field;
    std::function<void(TrainingArguments&)> change;
    const char* expected;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<Case> cases{
      {"num_train_epochs", [](auto& a) { a.num_train_epochs = -1; }, "num_train_epochs = -1: must be >= 0"},
      {"num_train_epochs (no max_steps)", [](auto& a) { a.num_train_epochs = 0; },
       "num_train_epochs = 0: must be > 0 when max_steps is -1"},
      {"max_steps 0", [](auto& a) { a.max_steps = 0; }, "max_steps = 0: must be -1"},
      {"max_steps -2", [](auto& a) { a.max_steps = -2; }, "max_steps = -2: must be -1"},
      {"per_device_train_batch_size", [](auto& a) { a.per_device_train_batch_size = 0; },
       "per_device_train_batch_size = 0: must be at least 1"},
      {"per_device_eval_batch_size", [](auto& a) { a.per_device_eval_batch_size = -4; },
       "per_device_eval_batch_size = -4: must be at least 1"},
      {"gradient_accumulation_steps", [](auto& a) { a.gradient_accumulation_steps = 0; },
       "gradient_accumulation_steps = 0: must be at least 1"},
      {"dataloader_num_workers", [](auto& a) { a.dataloader_num_workers = -1; }, "dataloader_num_workers = -1"},
      {"learning_rate", [](auto& a) { a.learning_rate = -0.1; }, "learning_rate = -0.1: must be >= 0"},
      {"learning_rate nan", [nan](auto& a) { a.learning_rate = nan; }, "learning_rate = nan: must be a finite"},
      {"weight_decay", [](auto& a) { a.weight_decay = -1; }, "weight_decay = -1"},
      {"adam_beta1", [](auto& a) { a.adam_beta1 = 1.0; }, "adam_beta1 = 1: must be in [0, 1)"},
      {"adam_beta2", [](auto& a) { a.adam_beta2 = -0.5; }, "adam_beta2 = -0.5: must be in [0, 1)"},
      {"adam_epsilon", [](auto& a) { a.adam_epsilon = -1e-8; }, "adam_epsilon = -1e-08"},
      {"warmup_ratio high", [](auto& a) { a.warmup_ratio = 1.5; }, "warmup_ratio = 1.5: must be between 0 and 1"},
      {"warmup_ratio low", [](auto& a) { a.warmup_ratio = -0.1; }, "warmup_ratio = -0.1: must be between 0 and 1"},
      {"warmup_steps", [](auto& a) { a.warmup_steps = -3; }, "warmup_steps = -3: must be >= 0"},
      {"label_smoothing_factor", [](auto& a) { a.label_smoothing_factor = 1; },
       "label_smoothing_factor = 1: must be at least 0 and below 1"},
      {"include_num_input_tokens_seen", [](auto& a) { a.include_num_input_tokens_seen = "padding"; },
       "include_num_input_tokens_seen = \"padding\": choose no, all or non_padding"},
      {"eval_accumulation_steps", [](auto& a) { a.eval_accumulation_steps = 0; },
       "eval_accumulation_steps = 0: must be at least 1, or none"},
      {"include_for_metrics", [](auto& a) { a.include_for_metrics = {"inputs", "labels"}; },
       "include_for_metrics = \"labels\": choose from inputs, loss"},
      {"logging_steps", [](auto& a) { a.logging_steps = -10; }, "logging_steps = -10: must be >= 0"},
      {"save_steps", [](auto& a) { a.save_steps = -1; }, "save_steps = -1: must be >= 0"},
      {"eval_steps", [](auto& a) { a.eval_steps = -5; }, "eval_steps = -5: must be >= 0"},
      {"eval_steps inf", [](auto& a) { a.eval_steps = std::numeric_limits<double>::infinity(); },
       "eval_steps = inf: must be a finite"},
      {"eval_delay", [](auto& a) { a.eval_delay = -1; }, "eval_delay = -1: must be >= 0"},
      {"save_total_limit", [](auto& a) { a.save_total_limit = -1; }, "save_total_limit = -1: must be >= 0"},
      {"output_dir", [](auto& a) { a.output_dir = ""; }, "output_dir = \"\": give the folder"},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.field) {
      CHECK_THAT(validate_error(c.change), Contains(std::string("TrainingArguments.") + c.expected));
    }
  }
}

TEST_CASE("validate: include_num_input_tokens_seen takes HF's booleans", "[training_arguments][validate]") {
  TrainingArguments a;
  a.include_num_input_tokens_seen = "true";
  a.validate();
  CHECK(a.include_num_input_tokens_seen == "all");
  a.include_num_input_tokens_seen = "false";
  a.validate();
  CHECK(a.include_num_input_tokens_seen == "no");
}

TEST_CASE("validate: max_steps > 0 makes num_train_epochs irrelevant", "[training_arguments][validate]") {
  TrainingArguments a;
  a.max_steps = 100;
  a.num_train_epochs = 0;
  CHECK_NOTHROW(a.validate());
}

TEST_CASE("validate: warmup_ratio bounds are inclusive", "[training_arguments][validate]") {
  TrainingArguments a;
  a.warmup_ratio = 1.0;
  CHECK_NOTHROW(a.validate());
  a.warmup_ratio = 0.0;
  CHECK_NOTHROW(a.validate());
}

TEST_CASE("validate: load_best_model_at_end needs matching strategies", "[training_arguments][validate]") {
  const auto message = validate_error([](TrainingArguments& a) {
    a.load_best_model_at_end = true;
    a.eval_strategy = IntervalStrategy::epoch;
    a.save_strategy = SaveStrategy::steps;
  });
  CHECK_THAT(message, Contains("TrainingArguments.load_best_model_at_end = true"));
  CHECK_THAT(message, Contains("eval_strategy = epoch and save_strategy = steps"));

  TrainingArguments best;  // the best strategy saves after evaluations, whatever they are
  best.load_best_model_at_end = true;
  best.eval_strategy = IntervalStrategy::epoch;
  best.save_strategy = SaveStrategy::best;
  CHECK_NOTHROW(best.validate());
}

TEST_CASE("validate: load_best_model_at_end needs save_steps to be a multiple of eval_steps",
          "[training_arguments][validate]") {
  const auto with_steps = [](double save, std::optional<double> eval) {
    TrainingArguments a;
    a.load_best_model_at_end = true;
    a.eval_strategy = IntervalStrategy::steps;
    a.save_steps = save;
    a.eval_steps = eval;
    a.logging_steps = 100;
    return a;
  };
  auto bad = with_steps(250, 100.0);
  CHECK(error_of<ArgumentError>([&] { bad.validate(); }) ==
        "TrainingArguments.save_steps = 250: with load_best_model_at_end it must be a multiple of eval_steps = 100; "
        "use 200 or 300");
  auto good = with_steps(300, 100.0);
  CHECK_NOTHROW(good.validate());
  // eval_steps falls back to logging_steps before the check.
  auto fallback = with_steps(250, std::nullopt);
  CHECK_THAT(error_of<ArgumentError>([&] { fallback.validate(); }), Contains("multiple of eval_steps = 100"));
}

TEST_CASE("validate: load_best_model_at_end rejects mixing a ratio with a step count",
          "[training_arguments][validate]") {
  TrainingArguments a;
  a.load_best_model_at_end = true;
  a.eval_strategy = IntervalStrategy::steps;
  a.eval_steps = 100;
  a.save_steps = 0.5;
  const auto message = error_of<ArgumentError>([&] { a.validate(); });
  CHECK_THAT(message, Contains("TrainingArguments.save_steps = 0.5"));
  CHECK_THAT(message, Contains("cannot get guaranteed"));
}

TEST_CASE("validate: ratios are compared as exact multiples", "[training_arguments][validate]") {
  TrainingArguments a;
  a.load_best_model_at_end = true;
  a.eval_strategy = IntervalStrategy::steps;
  a.eval_steps = 0.1;
  a.save_steps = 0.3;  // std::fmod(0.3, 0.1) is 0.0999..., but 0.3 is three evaluations
  CHECK_NOTHROW(a.validate());
  a.save_steps = 0.25;
  CHECK_THAT(error_of<ArgumentError>([&] { a.validate(); }),
             Contains("TrainingArguments.save_steps = 0.25: with load_best_model_at_end it must be a multiple of "
                      "eval_steps = 0.1; use 0.2 or 0.3"));
}

TEST_CASE("validate: reduce_lr_on_plateau needs evaluation", "[training_arguments][validate]") {
  const auto message =
      validate_error([](TrainingArguments& a) { a.lr_scheduler_type = SchedulerType::reduce_lr_on_plateau; });
  CHECK_THAT(message, Contains("TrainingArguments.lr_scheduler_type = reduce_lr_on_plateau"));
  CHECK_THAT(message, Contains("eval_strategy"));
}

TEST_CASE("validate: save_strategy best needs a metric and evaluation", "[training_arguments][validate]") {
  const auto no_metric = validate_error([](TrainingArguments& a) {
    a.save_strategy = SaveStrategy::best;
    a.eval_strategy = IntervalStrategy::epoch;
  });
  CHECK_THAT(no_metric, Contains("TrainingArguments.metric_for_best_model = none"));
  CHECK_THAT(no_metric, Contains("save_strategy best"));

  const auto no_eval = validate_error([](TrainingArguments& a) {
    a.save_strategy = SaveStrategy::best;
    a.metric_for_best_model = "accuracy";
  });
  CHECK_THAT(no_eval, Contains("TrainingArguments.save_strategy = best"));
  CHECK_THAT(no_eval, Contains("eval_strategy is no"));
}

TEST_CASE("validate: metric_for_best_model cannot be empty", "[training_arguments][validate]") {
  CHECK_THAT(validate_error([](TrainingArguments& a) { a.metric_for_best_model = ""; }),
             Contains("TrainingArguments.metric_for_best_model = \"\""));
}

TEST_CASE("validate: report_to takes all or none alone, or names", "[training_arguments][validate]") {
  CHECK_THAT(validate_error([](TrainingArguments& a) {
               a.report_to = {"all", "wandb"};
             }),
             Contains("TrainingArguments.report_to = all,wandb: \"all\" must be given alone"));
  CHECK_THAT(validate_error([](TrainingArguments& a) {
               a.report_to = {"tensorboard", "none"};
             }),
             Contains("TrainingArguments.report_to = tensorboard,none: \"none\" must be given alone"));
  CHECK_THAT(validate_error([](TrainingArguments& a) { a.report_to = {""}; }), Contains("TrainingArguments.report_to"));
  for (const auto& ok : std::vector<std::vector<std::string>>{{}, {"none"}, {"all"}, {"tensorboard", "csv"}, {"jsonl"}}) {
    TrainingArguments a;
    a.report_to = ok;
    CHECK_NOTHROW(a.validate());
  }
}

// ---- derived values --------------------------------------------------------------------------------------------

TEST_CASE("validate: eval_steps falls back to logging_steps", "[training_arguments][derived]") {
  TrainingArguments a;
  a.eval_strategy = IntervalStrategy::steps;
  a.logging_steps = 50;
  a.validate();
  CHECK(a.eval_steps == 50.0);

  TrainingArguments zero;  // 0 means unset, as in HF
  zero.eval_strategy = IntervalStrategy::steps;
  zero.eval_steps = 0;
  zero.logging_steps = 0.1;
  zero.validate();
  CHECK(zero.eval_steps == 0.1);

  TrainingArguments given;
  given.eval_strategy = IntervalStrategy::steps;
  given.eval_steps = 20;
  given.validate();
  CHECK(given.eval_steps == 20.0);

  TrainingArguments no_eval;
  no_eval.validate();
  CHECK_FALSE(no_eval.eval_steps);
}

TEST_CASE("validate: metric_for_best_model defaults to loss when it is needed", "[training_arguments][derived]") {
  TrainingArguments best;
  best.load_best_model_at_end = true;
  best.eval_strategy = IntervalStrategy::epoch;
  best.save_strategy = SaveStrategy::epoch;
  best.validate();
  CHECK(best.metric_for_best_model == "loss");
  CHECK(best.greater_is_better == false);

  TrainingArguments plateau;
  plateau.lr_scheduler_type = SchedulerType::reduce_lr_on_plateau;
  plateau.eval_strategy = IntervalStrategy::epoch;
  plateau.validate();
  CHECK(plateau.metric_for_best_model == "loss");

  TrainingArguments plain;
  plain.validate();
  CHECK_FALSE(plain.metric_for_best_model);
  CHECK_FALSE(plain.greater_is_better);
}

TEST_CASE("validate: greater_is_better follows the metric name unless given", "[training_arguments][derived]") {
  const auto derived = [](const std::string& metric) {
    TrainingArguments a;
    a.metric_for_best_model = metric;
    a.validate();
    return a.greater_is_better;
  };
  CHECK(derived("accuracy") == true);
  CHECK(derived("eval_loss") == false);
  CHECK(derived("loss") == false);
  CHECK(derived("loss_ratio") == true);

  TrainingArguments given;
  given.metric_for_best_model = "accuracy";
  given.greater_is_better = false;
  given.validate();
  CHECK(given.greater_is_better == false);
}

TEST_CASE("get_warmup_steps and effective_data_seed", "[training_arguments][derived]") {
  TrainingArguments a;
  CHECK(a.get_warmup_steps(1000) == 0);
  a.warmup_steps = 0.1;  // below 1: a ratio of the training steps, as in HF v5
  CHECK(a.get_warmup_steps(95) == 10);  // ceil(9.5)
  CHECK(a.get_warmup_steps(100) == 10);
  a.warmup_steps = 7;
  CHECK(a.get_warmup_steps(1000) == 7);
  a.warmup_steps = 1;  // one step, not the whole run
  CHECK(a.get_warmup_steps(1000) == 1);
  a.warmup_ratio = 0.1;  // deprecated; when set it wins, as in HF v5
  CHECK(a.get_warmup_steps(95) == 10);
  a.warmup_ratio = 1.0;  // the whole run
  CHECK(a.get_warmup_steps(50) == 50);
  a.warmup_steps = 2.5;
  CHECK_THAT(error_of<ArgumentError>([&] { a.validate(); }),
             Contains("warmup_steps = 2.5: steps bigger than 1 must be whole numbers"));
  const char* ratio[] = {"prog", "--warmup_steps", "0.25"};
  CHECK(TrainingArguments::parse(3, ratio).warmup_steps == 0.25);

  CHECK(a.effective_data_seed() == 42);
  a.data_seed = 5;
  CHECK(a.effective_data_seed() == 5);
}

// ---- JSON ------------------------------------------------------------------------------------------------------

TEST_CASE("to_json writes every field with HF spellings", "[training_arguments][json]") {
  const json j = TrainingArguments().to_json();
  CHECK(j.size() == 58);
  for (const auto& field : torchtrain::detail::argument_fields<TrainingArguments>())
    CHECK(j.contains(std::string(field.name)));
  CHECK(j.at("eval_strategy") == "no");
  CHECK(j.at("save_strategy") == "steps");
  CHECK(j.at("lr_scheduler_type") == "linear");
  CHECK(j.at("eval_steps").is_null());
  CHECK(j.at("metric_for_best_model").is_null());
  CHECK(j.at("greater_is_better").is_null());
  CHECK(j.at("data_seed").is_null());
  CHECK(j.at("save_total_limit").is_null());
  CHECK(j.at("report_to") == json::array({"all"}));
  CHECK(j.at("project") == "huggingface");
  CHECK(j.at("max_steps") == -1);
  CHECK(j.at("max_steps").is_number_integer());
  CHECK(j.at("learning_rate") == 5e-5);
  CHECK(j.at("output_dir") == "trainer_output");
}

TEST_CASE("JSON round trip is exact for every field", "[training_arguments][json]") {
  // Every field really differs from its default in one of the two, so a field the table forgot cannot pass
  // unnoticed.
  const json defaults = TrainingArguments().to_json();
  const json first = non_default_arguments().to_json(), second = non_default_arguments(true).to_json();
  for (const auto& [key, value] : first.items()) CHECK_FALSE((value == defaults.at(key) && second.at(key) == value));

  for (const bool swapped : {false, true}) {
    const TrainingArguments original = non_default_arguments(swapped);
    const json j = original.to_json();
    const TrainingArguments back = TrainingArguments::from_json(j);
    require_same_fields(back, original);
    CHECK(back.to_json() == j);
    // Through text as well.
    const TrainingArguments reparsed = TrainingArguments::from_json(json::parse(original.to_json_string()));
    require_same_fields(reparsed, original);
  }
}

TEST_CASE("from_json: missing keys keep their defaults, derived values are filled", "[training_arguments][json]") {
  const auto a =
      TrainingArguments::from_json(json{{"learning_rate", 1e-3}, {"eval_strategy", "steps"}, {"logging_steps", 10}});
  CHECK(a.learning_rate == 1e-3);
  CHECK(a.eval_steps == 10.0);
  CHECK(a.per_device_train_batch_size == 8);
}

TEST_CASE("from_json: accepted value forms", "[training_arguments][json]") {
  const auto a = TrainingArguments::from_json(json{{"max_steps", 100.0},          // whole numbers written as floats
                                                   {"report_to", "tensorboard"},  // one string, as HF accepts
                                                   {"seed", 7},
                                                   {"logging_dir", nullptr}});
  CHECK(a.max_steps == 100);
  CHECK(a.report_to == std::vector<std::string>{"tensorboard"});
  CHECK(a.seed == 7);
  CHECK(a.logging_dir.empty());
}

TEST_CASE("from_json: unknown keys are ignored with one warning", "[training_arguments][json]") {
  tt_test::WarningCapture warnings;
  const auto a = TrainingArguments::from_json(json{{"learning_rat", 0.5}, {"gradient_checkpointing", true}, {"seed", 3}}, "cfg.json");
  CHECK(a.learning_rate == 5e-5);
  CHECK(a.seed == 3);
  REQUIRE(warnings.messages.size() == 1);
  CHECK_THAT(warnings.messages[0], Contains("cfg.json: ignoring 2 unknown keys"));
  CHECK_THAT(warnings.messages[0], Contains("\"learning_rat\" (did you mean \"learning_rate\"?)"));
  CHECK_THAT(warnings.messages[0], Contains("\"gradient_checkpointing\""));
}

TEST_CASE("from_json: reads a training_args.json written by Hugging Face", "[training_arguments][json]") {
  const json hf = json::parse(R"({
    "output_dir": "out", "overwrite_output_dir": false, "do_train": true, "eval_strategy": "steps",
    "per_device_train_batch_size": 16, "learning_rate": 3e-05, "num_train_epochs": 3.0, "max_steps": -1,
    "lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {}, "warmup_ratio": 0.0, "logging_steps": 50,
    "eval_steps": null, "save_steps": 500, "save_total_limit": null, "seed": 42, "data_seed": null,
    "fp16": false, "report_to": ["tensorboard"], "metric_for_best_model": null, "greater_is_better": null,
    "push_to_hub": false})");
  tt_test::WarningCapture warnings;
  const auto a = TrainingArguments::from_json(hf, "training_args.json");
  CHECK(a.per_device_train_batch_size == 16);
  CHECK(a.lr_scheduler_type == SchedulerType::cosine);
  CHECK(a.eval_steps == 50.0);
  CHECK(a.report_to == std::vector<std::string>{"tensorboard"});
  REQUIRE(warnings.messages.size() == 1);
  CHECK_THAT(warnings.messages[0], Contains("ignoring 3 unknown keys"));
  CHECK_FALSE(a.fp16);  // a field of both
  CHECK(a.lr_scheduler_kwargs == json::object());  // read, as HF writes it
}

TEST_CASE("from_json: wrong types name the source, the key and the expected type", "[training_arguments][json]") {
  struct Case {
    json input;
    const char* expected;
  };
  const std::vector<Case> cases{
      {{{"learning_rate", "abc"}}, "src.json: \"learning_rate\" must be a number, not string \"abc\""},
      {{{"output_dir", 5}}, "src.json: \"output_dir\" must be a string, not number 5"},
      {{{"max_steps", 2.5}}, "src.json: \"max_steps\" must be a whole number"},
      {{{"seed", -1}}, "src.json: \"seed\" must be a non-negative whole number"},
      {{{"use_cpu", "true"}}, "src.json: \"use_cpu\" must be true or false"},
      {{{"eval_steps", "10"}}, "src.json: \"eval_steps\" must be a number or null"},
      {{{"report_to", json::array({"wandb", 1})}}, "src.json: \"report_to\" must be a list of strings"},
      {{{"eval_strategy", 1}}, "src.json: \"eval_strategy\" must be one of the strings \"no\", \"steps\", \"epoch\""},
      {{{"metric_for_best_model", false}}, "src.json: \"metric_for_best_model\" must be a string or null"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.input.dump());
    CHECK_THAT(error_of<FileFormatError>([&] { TrainingArguments::from_json(c.input, "src.json"); }),
               Contains(c.expected));
  }
}

TEST_CASE("from_json: invalid values name the source", "[training_arguments][json]") {
  CHECK_THAT(error_of<ArgumentError>([] {
               TrainingArguments::from_json(json{{"eval_strategy", "stepz"}}, "a.json");
             }),
             Contains("a.json: eval_strategy: 'stepz' is not a valid value; use one of: no, steps, epoch"));
  CHECK_THAT(error_of<ArgumentError>([] {
               TrainingArguments::from_json(json{{"warmup_ratio", 2}}, "a.json");
             }),
             Contains("a.json: TrainingArguments.warmup_ratio = 2"));
}

TEST_CASE("save_to_json and load_from_json round trip through a file", "[training_arguments][json]") {
  tt_test::TempDir dir;
  const std::string path = (dir / "training_args.json").string();
  const TrainingArguments original = non_default_arguments();
  original.save_to_json(path);
  const std::string text = tt_test::read_file(path);
  CHECK(text == original.to_json().dump(2) + "\n");
  CHECK_THAT(text, Contains("\n  \"adam_beta1\": 0.8,\n"));
  CHECK(text.back() == '\n');
  const TrainingArguments back = TrainingArguments::load_from_json(path);
  require_same_fields(back, original);
}

TEST_CASE("load_from_json: malformed files name the file and the problem", "[training_arguments][json]") {
  tt_test::TempDir dir;
  const auto file_with = [&](const std::string& name, const std::string& text) {
    const std::string path = (dir / name).string();
    tt_test::write_file(path, text);
    return path;
  };
  const auto load_error = [](const std::string& path) {
    return error_of<FileFormatError>([&] { TrainingArguments::load_from_json(path); });
  };
  SECTION("missing") {
    const std::string path = (dir / "absent.json").string();
    CHECK_THAT(load_error(path), Contains(path + ": cannot open the file"));
  }
  SECTION("empty") {
    const auto path = file_with("empty.json", "  \n");
    CHECK_THAT(load_error(path), Contains(path + ": the file is empty"));
  }
  SECTION("truncated") {
    const std::string full = TrainingArguments().to_json_string();
    const auto path = file_with("cut.json", full.substr(0, full.size() / 2));
    CHECK_THAT(load_error(path), Contains(path + ": not valid JSON (the file ends too early; is it truncated?)"));
  }
  SECTION("not JSON") {
    const auto path = file_with("text.json", "learning_rate = 3e-4\n");
    const auto message = load_error(path);
    CHECK_THAT(message, Contains(path + ": not valid JSON: parse error at line 1"));
    CHECK_THAT(message, !Contains("truncated"));
  }
  SECTION("array instead of object") {
    const auto path = file_with("array.json", "[1, 2]");
    CHECK_THAT(load_error(path), Contains(path + ": expected a JSON object of argument names and values, not array"));
  }
  SECTION("wrong type for a field") {
    const auto path = file_with("typed.json", R"({"per_device_train_batch_size": "16"})");
    CHECK_THAT(load_error(path), Contains(path + ": \"per_device_train_batch_size\" must be a whole number"));
  }
}

// ---- command line ----------------------------------------------------------------------------------------------

TEST_CASE("CLI: --name value and --name=value", "[training_arguments][cli]") {
  const auto a = parse_args({"--learning_rate", "3e-4", "--max_steps=100", "--output_dir", "out dir",
                             "--lr_scheduler_type=cosine", "--eval_strategy", "epoch", "--seed", "7"});
  CHECK(a.learning_rate == 3e-4);
  CHECK(a.max_steps == 100);
  CHECK(a.output_dir == "out dir");
  CHECK(a.lr_scheduler_type == SchedulerType::cosine);
  CHECK(a.eval_strategy == IntervalStrategy::epoch);
  CHECK(a.seed == 7);
  // A negative number is a value, not a flag; the last repetition wins.
  const auto b = parse_args({"--max_steps", "10", "--max_steps", "-1", "--run_name=a=b"});
  CHECK(b.max_steps == -1);
  CHECK(b.run_name == "a=b");
}

TEST_CASE("CLI: every field can be set", "[training_arguments][cli]") {
  const TrainingArguments original = non_default_arguments();
  const json fields = original.to_json();
  std::vector<std::string> tokens;
  for (const auto& [key, value] : fields.items()) {
    std::string text;
    if (value.is_null())
      text = "none";
    else if (value.is_string())
      text = value.get<std::string>();
    else if (value.is_array()) {
      for (const auto& item : value) text += (text.empty() ? "" : ",") + item.get<std::string>();
    } else if (value.is_number_float())
      text = torchtrain::detail::format_number(value.get<double>());
    else
      text = value.dump();
    tokens.push_back("--" + key + "=" + text);
  }
  require_same_fields(parse_args(tokens), original);
}

TEST_CASE("CLI: booleans", "[training_arguments][cli]") {
  CHECK(parse_args({"--use_cpu"}).use_cpu);
  CHECK(parse_args({"--use_cpu", "--seed", "1"}).use_cpu);
  CHECK(parse_args({"--use_cpu", "--seed", "1"}).seed == 1);
  for (const char* yes : {"true", "True", "1", "yes"}) CHECK(parse_args({"--use_cpu", yes}).use_cpu);
  for (const char* no : {"false", "False", "0", "no"})
    CHECK_FALSE(parse_args({"--logging_nan_inf_filter", no}).logging_nan_inf_filter);
  CHECK_FALSE(parse_args({"--logging_nan_inf_filter=false"}).logging_nan_inf_filter);
  CHECK_FALSE(parse_args({"--no_logging_nan_inf_filter"}).logging_nan_inf_filter);
  CHECK_THAT(error_of<ArgumentError>([] { parse_args({"--use_cpu=maybe"}); }),
             Contains("--use_cpu maybe: not a boolean"));
  CHECK_THAT(error_of<ArgumentError>([] { parse_args({"--no_learning_rate"}); }),
             Contains("unknown flag --no_learning_rate"));
  // An optional boolean also takes none.
  const auto a = parse_args({"--metric_for_best_model", "accuracy", "--greater_is_better", "false"});
  CHECK(a.greater_is_better == false);
  const auto b = parse_args({"--metric_for_best_model", "accuracy", "--greater_is_better", "none"});
  CHECK(b.greater_is_better == true);  // unset, then derived from the metric name
}

TEST_CASE("CLI: optional fields accept none", "[training_arguments][cli]") {
  const auto a = parse_args({"--save_total_limit", "none", "--data_seed=None", "--metric_for_best_model", "none"});
  CHECK_FALSE(a.save_total_limit);
  CHECK_FALSE(a.data_seed);
  CHECK_FALSE(a.metric_for_best_model);
  ArgumentParser parser("", [] {
    TrainingArguments d;
    d.save_total_limit = 2;
    return d;
  }());
  CHECK(parse_tokens({}, parser).args.save_total_limit == 2);
  CHECK_FALSE(parse_tokens({"--save_total_limit", "none"}, parser).args.save_total_limit);
  CHECK(parse_args({"--save_total_limit", "5"}).save_total_limit == 5);
}

TEST_CASE("CLI: report_to is comma separated", "[training_arguments][cli]") {
  CHECK(parse_args({"--report_to", "tensorboard,csv"}).report_to == std::vector<std::string>{"tensorboard", "csv"});
  CHECK(parse_args({"--report_to", "none"}).report_to == std::vector<std::string>{"none"});
  CHECK(parse_args({"--report_to="}).report_to.empty());
  // A space-separated second name is a stray value, and the error says how to list several.
  CHECK_THAT(error_of<ArgumentError>([] {
               parse_args({"--report_to", "tensorboard", "wandb"});
             }),
             Contains("unexpected argument 'wandb'; flags take one value each (lists are comma separated"));
}

TEST_CASE("CLI: bad values and missing values", "[training_arguments][cli]") {
  CHECK(error_of<ArgumentError>([] { parse_args({"--learning_rate", "abc"}); }) == "--learning_rate abc: not a number");
  CHECK(error_of<ArgumentError>([] { parse_args({"--learning_rate=1e-3x"}); }) ==
        "--learning_rate 1e-3x: not a number");
  CHECK(error_of<ArgumentError>([] { parse_args({"--max_steps", "2.5"}); }) == "--max_steps 2.5: not a whole number");
  CHECK(error_of<ArgumentError>([] { parse_args({"--seed", "-3"}); }) == "--seed -3: not a non-negative whole number");
  CHECK(error_of<ArgumentError>([] {
          parse_args({"--learning_rate", "nan"});
        }) == "--learning_rate nan: not a finite number");
  CHECK_THAT(error_of<ArgumentError>([] {
               parse_args({"--eval_strategy", "stepz"});
             }),
             Contains("--eval_strategy: 'stepz' is not a valid value; use one of: no, steps, epoch"));
  CHECK(error_of<ArgumentError>([] { parse_args({"--learning_rate"}); }) ==
        "--learning_rate: missing value; usage: --learning_rate FLOAT");
  CHECK(error_of<ArgumentError>([] {
          parse_args({"--output_dir", "--seed", "3"});
        }) == "--output_dir: missing value; usage: --output_dir STR");
}

TEST_CASE("CLI: a misspelt flag suggests the closest one", "[training_arguments][cli]") {
  CHECK(error_of<ArgumentError>([] {
          parse_args({"--learning_rat", "3e-4"});
        }) == "unknown flag --learning_rat; did you mean --learning_rate?");
  CHECK_THAT(error_of<ArgumentError>([] {
               parse_args({"--evaluation_strategy", "steps"});
             }),
             Contains("did you mean --eval_strategy?"));
  CHECK(error_of<ArgumentError>([] { parse_args({"--completely_different"}); }) ==
        "unknown flag --completely_different; see --help for the list");
  CHECK_THAT(error_of<ArgumentError>([] { parse_args({"-x"}); }), Contains("unknown flag -x"));
}

TEST_CASE("CLI: validation runs after every flag is applied", "[training_arguments][cli]") {
  CHECK_THAT(error_of<ArgumentError>([] {
               parse_args({"--logging_steps", "2.5"});
             }),
             Contains("TrainingArguments.logging_steps = 2.5"));
  // The derived eval_steps uses the final logging_steps, whatever the flag order.
  CHECK(parse_args({"--eval_strategy", "steps", "--logging_steps", "10"}).eval_steps == 10.0);
}

TEST_CASE("CLI: --help lists every field with its default", "[training_arguments][cli]") {
  std::ostringstream out;
  const char* argv[] = {"/usr/bin/train_it", "--learning_rate", "abc", "--help"};
  TrainingArguments defaults;
  defaults.learning_rate = 1e-3;
  const ParseResult result = ArgumentParser("Trains a thing.", defaults).parse(4, argv, out);
  CHECK(result.help_requested);
  CHECK(result.args.learning_rate == 1e-3);  // nothing was parsed: the bad value is not reported
  const std::string help = out.str();
  CHECK_THAT(help, Contains("usage: train_it"));
  CHECK_THAT(help, Contains("Trains a thing."));
  CHECK_THAT(help, Contains("-h, --help"));
  CHECK_THAT(help, Contains("--config FILE.json"));
  for (const auto& field : torchtrain::detail::argument_fields<TrainingArguments>()) {
    CAPTURE(field.name);
    CHECK_THAT(help, Contains("--" + std::string(field.name) + " "));
    CHECK_THAT(help, Contains(std::string(field.help)));
  }
  CHECK_THAT(help, Contains("initial learning rate (default: 0.001)"));
  CHECK_THAT(help, Contains("--eval_strategy {no,steps,epoch}"));
  CHECK_THAT(help, Contains("(default: trainer_output)"));
  CHECK_THAT(help, Contains("(default: none)"));
  CHECK_THAT(help, Contains("(default: all)"));

  std::ostringstream silent;
  const char* plain[] = {"prog", "-h"};
  CHECK(ArgumentParser().parse_known(2, plain, silent).help_requested);
  const char* none[] = {"prog"};
  std::ostringstream quiet;
  CHECK_FALSE(ArgumentParser().parse(1, none, quiet).help_requested);
  CHECK(quiet.str().empty());
}

TEST_CASE("CLI: a config file is read first and flags override it", "[training_arguments][cli]") {
  tt_test::TempDir dir;
  const std::string path = (dir / "config.json").string();
  tt_test::write_file(path,
                      R"({"learning_rate": 0.01, "max_steps": 50, "eval_strategy": "steps", "logging_steps": 5})");

  SECTION("--config, before or after the overriding flag") {
    for (const auto& tokens : std::vector<std::vector<std::string>>{{"--config", path, "--max_steps", "70"},
                                                                    {"--max_steps=70", "--config=" + path}}) {
      const auto a = parse_args(tokens);
      CHECK(a.learning_rate == 0.01);
      CHECK(a.max_steps == 70);
      CHECK(a.eval_steps == 5.0);
    }
  }
  SECTION("a leading .json file, as HfArgumentParser accepts") {
    const auto a = parse_args({path, "--logging_steps", "20"});
    CHECK(a.learning_rate == 0.01);
    CHECK(a.eval_steps == 20.0);  // derived after the override
  }
  SECTION("errors") {
    CHECK_THAT(error_of<FileFormatError>([&] {
                 parse_args({"--config", path + ".missing"});
               }),
               Contains(path + ".missing: cannot open the file"));
    CHECK_THAT(error_of<ArgumentError>([&] { parse_args({"--config"}); }), Contains("--config: missing value"));
    CHECK_THAT(error_of<ArgumentError>([&] {
                 parse_args({path, "--config", path});
               }),
               Contains("--config given twice"));
  }
  SECTION("unknown keys warn") {
    tt_test::write_file(path, R"({"learning_rate": 0.01, "num_epochs": 2})");
    tt_test::WarningCapture warnings;
    CHECK(parse_args({"--config", path}).learning_rate == 0.01);
    CHECK(warnings.contains(path + ": ignoring 1 unknown key: \"num_epochs\""));
  }
}

TEST_CASE("CLI: program flags", "[training_arguments][cli]") {
  std::string train_file;
  std::int64_t hidden = 64;
  double dropout = 0.1;
  bool verbose = false;
  std::optional<std::string> eval_file;
  ArgumentParser parser("Trains a classifier.");
  parser.add_argument("train_file", train_file, "CSV file to train on")
      .add_argument("hidden", hidden, "hidden units")
      .add_argument("--dropout", dropout, "dropout probability")
      .add_argument("verbose", verbose, "print more")
      .add_argument("eval_file", eval_file, "CSV file to evaluate on");

  SECTION("parsed with the training arguments") {
    const auto result = parse_tokens({"--train_file", "data.csv", "--hidden=128", "--dropout", "0.3", "--verbose",
                                      "--eval_file", "e.csv", "--learning_rate", "1e-3"},
                                     parser);
    CHECK(train_file == "data.csv");
    CHECK(hidden == 128);
    CHECK(dropout == 0.3);
    CHECK(verbose);
    CHECK(eval_file == "e.csv");
    CHECK(result.args.learning_rate == 1e-3);
    CHECK(result.unrecognized.empty());
  }
  SECTION("set from the config file too") {
    tt_test::TempDir dir;
    const std::string path = (dir / "c.json").string();
    tt_test::write_file(path, R"({"train_file": "from_config.csv", "hidden": 32, "seed": 9})");
    const auto result = parse_tokens({path, "--hidden", "16"}, parser);
    CHECK(train_file == "from_config.csv");
    CHECK(hidden == 16);
    CHECK(result.args.seed == 9);
  }
  SECTION("listed in --help with their defaults") {
    std::ostringstream out;
    const char* argv[] = {"prog", "--help"};
    CHECK(parser.parse(2, argv, out).help_requested);
    CHECK_THAT(out.str(), Contains("Trains a classifier."));
    CHECK_THAT(out.str(), Contains("program options:"));
    CHECK_THAT(out.str(), Contains("--hidden INT"));
    CHECK_THAT(out.str(), Contains("hidden units (default: 64)"));
    CHECK_THAT(out.str(), Contains("dropout probability (default: 0.1)"));
    CHECK_THAT(out.str(), Contains("CSV file to train on (default: \"\")"));
    CHECK(hidden == 64);
  }
  SECTION("misspelt program flags get suggestions too") {
    CHECK(error_of<ArgumentError>([&] {
            parse_tokens({"--train_fil", "x"}, parser);
          }) == "unknown flag --train_fil; did you mean --train_file?");
  }
  SECTION("names must be new") {
    std::string other;
    CHECK_THROWS_AS(parser.add_argument("seed", other, "clashes with a field"), ArgumentError);
    CHECK_THROWS_AS(parser.add_argument("train_file", other, "registered twice"), ArgumentError);
    CHECK_THROWS_AS(parser.add_argument("config", other, "reserved"), ArgumentError);
    CHECK_THROWS_AS(parser.add_argument("bad name", other, "space"), ArgumentError);
  }
}

TEST_CASE("CLI: parse_known returns what it does not know", "[training_arguments][cli]") {
  const auto result =
      parse_tokens({"--train_file", "x.csv", "--learning_rate", "0.1", "--flag=1", "pos", "--", "--seed", "5"},
                   ArgumentParser(), /*known=*/true);
  CHECK(result.args.learning_rate == 0.1);
  CHECK(result.args.seed == 42);  // after "--": left alone
  CHECK(result.unrecognized == std::vector<std::string>{"--train_file", "x.csv", "--flag=1", "pos", "--seed", "5"});
  // parse() rejects the same tokens.
  CHECK_THAT(error_of<ArgumentError>([] { parse_args({"pos"}); }), Contains("unexpected argument 'pos'"));
  CHECK_THAT(error_of<ArgumentError>([] { parse_args({"--", "x"}); }), Contains("unexpected argument 'x' after --"));
}

TEST_CASE("TrainingArguments::parse reads flags and validates", "[training_arguments][cli]") {
  const char* argv[] = {"prog", "--per_device_train_batch_size", "4", "--eval_strategy=steps", "--eval_steps", "0.25"};
  const auto a = TrainingArguments::parse(6, argv);
  CHECK(a.per_device_train_batch_size == 4);
  CHECK(a.eval_steps == 0.25);
  const char* bad[] = {"prog", "--per_device_train_batch_size", "0"};
  CHECK_THROWS_WITH(TrainingArguments::parse(3, bad), Contains("TrainingArguments.per_device_train_batch_size = 0"));
}

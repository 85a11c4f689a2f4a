#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "support.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/trainer_state.hpp"
#include "torchtrain/training_arguments.hpp"

using namespace std::string_literals;
using nlohmann::json;
using torchtrain::TrainerState;
using torchtrain::detail::dump_python_json;
using torchtrain::detail::kOneLineJson;
using torchtrain::detail::parse_python_json;
using torchtrain::detail::python_float_repr;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// REF §3.5, verbatim. Python's json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n" gives it back.
const std::string hf_example = R"({
  "best_global_step": 2,
  "best_metric": 0.6812345027923584,
  "best_model_checkpoint": "out/checkpoint-2",
  "epoch": 1.0,
  "eval_steps": 500,
  "global_step": 2,
  "is_hyper_param_search": false,
  "is_local_process_zero": true,
  "is_world_process_zero": true,
  "log_history": [
    {
      "epoch": 0.6666666666666666,
      "grad_norm": 1.7342519760131836,
      "learning_rate": 5e-05,
      "loss": 0.6931,
      "step": 1
    },
    {
      "epoch": 1.0,
      "grad_norm": 1.5120397806167603,
      "learning_rate": 3.7500000000000003e-05,
      "loss": 0.6902,
      "step": 2
    },
    {
      "epoch": 1.0,
      "eval_loss": 0.6812345027923584,
      "eval_runtime": 0.0123,
      "eval_samples_per_second": 650.407,
      "eval_steps_per_second": 81.301,
      "step": 2
    }
  ],
  "logging_steps": 1,
  "max_steps": 4,
  "num_input_tokens_seen": 0,
  "num_train_epochs": 2,
  "save_steps": 500,
  "stateful_callbacks": {
    "EarlyStoppingCallback": {
      "args": {
        "early_stopping_patience": 2,
        "early_stopping_threshold": 0.0
      },
      "attributes": {
        "early_stopping_patience_counter": 0
      }
    },
    "TrainerControl": {
      "args": {
        "should_epoch_stop": false,
        "should_evaluate": false,
        "should_log": false,
        "should_save": true,
        "should_training_stop": false
      },
      "attributes": {}
    }
  },
  "total_flos": 0.0,
  "train_batch_size": 8,
  "trial_name": null,
  "trial_params": null
}
)";

// The message of the FileFormatError that loading `path` throws; fails the test when nothing or another type is
// thrown.
std::string load_error(const std::string& path) {
  try {
    TrainerState::load_from_json(path);
  } catch (const torchtrain::FileFormatError& e) {
    return e.what();
  }
  FAIL("loading " << path << " did not throw FileFormatError");
  return {};
}

std::string parse_error(const std::string& text) {
  try {
    parse_python_json(text, "input.json");
  } catch (const torchtrain::FileFormatError& e) {
    return e.what();
  }
  FAIL("parsing '" << text << "' did not throw FileFormatError");
  return {};
}

json callback_state(int patience, int counter) {
  return {{"args", {{"early_stopping_patience", patience}, {"early_stopping_threshold", 0.0}}},
          {"attributes", {{"early_stopping_patience_counter", counter}}}};
}

}  // namespace

TEST_CASE("python_float_repr writes what Python's json.dumps writes", "[trainer_state][python_json]") {
  // Expected strings produced by python3 -c 'import json; print(json.dumps(x))'.
  const std::vector<std::pair<double, std::string>> table{
      {0.1, "0.1"},
      {1.0 / 3.0, "0.3333333333333333"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {-0.0, "-0.0"},
      {0.0, "0.0"},
      {1e-5, "1e-05"},
      {0.00012, "0.00012"},
      {2.5e-05, "2.5e-05"},
      {0.0001, "0.0001"},
      {0.001, "0.001"},
      {1.0, "1.0"},
      {100.0, "100.0"},
      {3.7500000000000003e-05, "3.7500000000000003e-05"},
      {1e22, "1e+22"},
      {1e-7, "1e-07"},
      {1e100, "1e+100"},
      {-1.5e-10, "-1.5e-10"},
      {123.456, "123.456"},
      {0.30000000000000004, "0.30000000000000004"},
      {9999999999999998.0, "9999999999999998.0"},
      {1234567890123456.7, "1234567890123456.8"},
      {9007199254740992.0, "9007199254740992.0"},
      {1e16 / 3, "3333333333333333.5"},
      {12345678901234567890.0, "1.2345678901234567e+19"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {std::numeric_limits<double>::quiet_NaN(), "NaN"},
      {inf, "Infinity"},
      {-inf, "-Infinity"},
  };
  for (const auto& [value, expected] : table) {
    INFO("value " << value);
    CHECK(python_float_repr(value) == expected);
    CHECK(dump_python_json(json(value)) == expected + "\n");
  }
}

TEST_CASE("dump_python_json matches json.dumps(indent=2, sort_keys=True) byte for byte",
          "[trainer_state][python_json]") {
  SECTION("nesting, sorted keys, empty containers, ints, escapes") {
    // python3: json.dumps({"b":[],"a":{},"c":[1,{"z":"é€😀\x7f\x00\x1f\n\t\"\\/","y":None}],"d":True,"e":-5,
    //                     "f":18446744073709551615}, indent=2, sort_keys=True)
    const std::string awkward = "\u00e9\u20ac\U0001F600\x7f\x00\x1f\n\t\"\\/"s;
    const json value = {{"b", json::array()},
                        {"a", json::object()},
                        {"c", {1, {{"z", awkward}, {"y", nullptr}}}},
                        {"d", true},
                        {"e", -5},
                        {"f", std::numeric_limits<std::uint64_t>::max()}};
    CHECK(dump_python_json(value) ==
          "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": [\n    1,\n    {\n      \"y\": null,\n      \"z\": "
          "\"\\u00e9\\u20ac\\ud83d\\ude00\\u007f\\u0000\\u001f\\n\\t\\\"\\\\/\"\n    }\n  ],\n  \"d\": true,\n  "
          "\"e\": -5,\n  \"f\": 18446744073709551615\n}\n");
  }
  SECTION("ordered_json is sorted at every level, by code point") {
    // python3: json.dumps({"z":{"b":1,"a":[{"y":2,"x":[]}]},"é":1,"e":2,"E":3}, indent=2, sort_keys=True)
    nlohmann::ordered_json value;
    value["z"]["b"] = 1;
    value["z"]["a"] = {{{"y", 2}, {"x", json::array()}}};
    value["\u00e9"] = 1;
    value["e"] = 2;
    value["E"] = 3;
    CHECK(dump_python_json(value) ==
          "{\n  \"E\": 3,\n  \"e\": 2,\n  \"z\": {\n    \"a\": [\n      {\n        \"x\": [],\n        \"y\": 2\n"
          "      }\n    ],\n    \"b\": 1\n  },\n  \"\\u00e9\": 1\n}\n");
  }
  SECTION("non-finite numbers as bare tokens, strings that look like them stay strings") {
    const json value = {{"best_metric", std::numeric_limits<double>::quiet_NaN()},
                        {"a", {inf, -inf}},
                        {"s", "NaN Infinity -Infinity \"NaN\""}};
    CHECK(dump_python_json(value) ==
          "{\n  \"a\": [\n    Infinity,\n    -Infinity\n  ],\n  \"best_metric\": NaN,\n  \"s\": \"NaN Infinity "
          "-Infinity \\\"NaN\\\"\"\n}\n");
  }
  SECTION("scalars and empty containers at the top level") {
    CHECK(dump_python_json(json::array()) == "[]\n");
    CHECK(dump_python_json(json::object()) == "{}\n");
    CHECK(dump_python_json(json("x")) == "\"x\"\n");
    CHECK(dump_python_json(json(std::numeric_limits<std::int64_t>::min())) == "-9223372036854775808\n");
  }
  SECTION("json.dumps' own layout and indent=4, in insertion order (W&B's value_json, DVCLive's metrics.json)") {
    // python3: v = {"z":{"b":1,"a":[{"y":2.5,"x":[]},float("nan")]},"e":{},"E":[True,None,-float("inf")]}
    //          json.dumps(v); json.dumps(v, indent=4)
    nlohmann::ordered_json value;
    value["z"]["b"] = 1;
    value["z"]["a"] = {{{"y", 2.5}, {"x", json::array()}}, std::numeric_limits<double>::quiet_NaN()};
    value["e"] = json::object();
    value["E"] = {true, nullptr, -inf};
    CHECK(dump_python_json(value, kOneLineJson) ==
          "{\"z\": {\"b\": 1, \"a\": [{\"y\": 2.5, \"x\": []}, NaN]}, \"e\": {}, \"E\": [true, null, -Infinity]}\n");
    CHECK(dump_python_json(value, {4, false}) ==
          "{\n    \"z\": {\n        \"b\": 1,\n        \"a\": [\n            {\n                \"y\": 2.5,\n"
          "                \"x\": []\n            },\n            NaN\n        ]\n    },\n    \"e\": {},\n"
          "    \"E\": [\n        true,\n        null,\n        -Infinity\n    ]\n}\n");
  }
  SECTION("bytes that are not UTF-8 become U+FFFD instead of failing the save") {
    CHECK(dump_python_json(json("a\xff" "b\xe2\x82")) == "\"a\\ufffdb\\ufffd\\ufffd\"\n");
    CHECK(dump_python_json(json("\xed\xa0\x80")) == "\"\\ufffd\\ufffd\\ufffd\"\n");  // an encoded surrogate
    CHECK(dump_python_json(json("\xc0\xaf")) == "\"\\ufffd\\ufffd\"\n");             // an overlong '/'
  }
}

TEST_CASE("parse_python_json reads Python's non-finite tokens and leaves strings alone",
          "[trainer_state][python_json]") {
  const json value = parse_python_json(
      R"({"a": "NaN", "b": [NaN, -Infinity, Infinity, 1, "\"NaN", 2.5], "c\\": Infinity, "d": "x\\", "e": NaN})",
      "input.json");
  CHECK(value["a"] == "NaN");
  const json& b = value["b"];
  REQUIRE(b.size() == 6);
  CHECK(std::isnan(b[0].get<double>()));
  CHECK(b[1].get<double>() == -inf);
  CHECK(b[2].get<double>() == inf);
  CHECK(b[3].is_number_integer());
  CHECK(b[3] == 1);
  CHECK(b[4] == "\"NaN");
  CHECK(b[5].get<double>() == 2.5);
  CHECK(value["c\\"].get<double>() == inf);
  CHECK(value["d"] == "x\\");
  CHECK(std::isnan(value["e"].get<double>()));

  // What Python writes, we read back and write identically.
  const std::string python_text =
      "{\n  \"a\": [\n    Infinity,\n    -Infinity\n  ],\n  \"best_metric\": NaN,\n  \"s\": \"NaN Infinity "
      "-Infinity \\\"NaN\\\"\"\n}\n";
  CHECK(dump_python_json(parse_python_json(python_text, "input.json")) == python_text);

  // Python's json.loads rejects these too.
  for (const std::string bad : {"1NaN", "[-NaN]", "[NaNa]", "[NaN NaN]", "{NaN: 1}", "nan", "[Infinityx]"}) {
    INFO(bad);
    CHECK_THAT(parse_error(bad), Catch::Contains("input.json") && Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("parse_python_json reports the source, the byte and the parser's reason", "[trainer_state][python_json]") {
  const std::string message = parse_error("[NaN, 1,, 2]");
  CHECK_THAT(message, Catch::StartsWith("input.json: not valid JSON (byte 9)") &&
                          Catch::Contains("unexpected ','") && !Catch::Contains("[json.exception"));
  CHECK_THAT(parse_error(" \n\t"), Catch::Contains("input.json") && Catch::Contains("empty"));
  CHECK_THAT(parse_error("{\"a\": 1"), Catch::Contains("input.json") && Catch::Contains("end of input"));
}

TEST_CASE("HF's example trainer_state.json loads with the right values", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto path = (dir / "trainer_state.json").string();
  tt_test::write_file(path, hf_example);
  tt_test::WarningCapture warnings;
  const TrainerState state = TrainerState::load_from_json(path);
  CHECK(warnings.messages.empty());

  CHECK(state.best_global_step == 2);
  CHECK(state.best_metric == 0.6812345027923584);
  CHECK(state.best_model_checkpoint == "out/checkpoint-2");
  CHECK(state.epoch == 1.0);
  CHECK(state.eval_steps == 500);
  CHECK(state.global_step == 2);
  CHECK_FALSE(state.is_hyper_param_search);
  CHECK(state.is_local_process_zero);
  CHECK(state.is_world_process_zero);
  CHECK(state.logging_steps == 1);
  CHECK(state.max_steps == 4);
  CHECK(state.num_input_tokens_seen == 0);
  CHECK(state.num_train_epochs == 2);
  CHECK(state.save_steps == 500);
  CHECK(state.total_flos == 0.0);
  CHECK(state.train_batch_size == 8);
  CHECK_FALSE(state.trial_name.has_value());
  CHECK(state.trial_params.is_null());
  CHECK(state.unknown_fields.empty());

  REQUIRE(state.log_history.size() == 3);
  CHECK(state.log_history[0]["loss"] == 0.6931);
  CHECK(state.log_history[0]["step"].is_number_integer());
  CHECK(state.log_history[1]["learning_rate"] == 3.7500000000000003e-05);
  CHECK(state.log_history[2]["eval_samples_per_second"] == 650.407);

  const auto early = state.stateful_callback_states("EarlyStoppingCallback");
  REQUIRE(early.size() == 1);
  CHECK(early[0]["args"]["early_stopping_patience"] == 2);
  const auto control = state.stateful_callback_states("TrainerControl");
  REQUIRE(control.size() == 1);
  CHECK(control[0]["args"]["should_save"] == true);
}

TEST_CASE("Saving HF's example reproduces it byte for byte, and again after another cycle", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto original = (dir / "original.json").string();
  const auto first = (dir / "first.json").string();
  const auto second = (dir / "second.json").string();
  tt_test::write_file(original, hf_example);

  TrainerState::load_from_json(original).save_to_json(first);
  CHECK(tt_test::read_file(first) == hf_example);
  TrainerState::load_from_json(first).save_to_json(second);
  CHECK(tt_test::read_file(second) == hf_example);
}

TEST_CASE("A default state is written the way HF writes its defaults", "[trainer_state]") {
  // python3: json.dumps(<TrainerState() fields of HF v5.3, with total_flos 0.0>, indent=2, sort_keys=True)
  CHECK(TrainerState{}.to_json_string() == R"({
  "best_global_step": null,
  "best_metric": null,
  "best_model_checkpoint": null,
  "epoch": 0,
  "eval_steps": 500,
  "global_step": 0,
  "is_hyper_param_search": false,
  "is_local_process_zero": true,
  "is_world_process_zero": true,
  "log_history": [],
  "logging_steps": 500,
  "max_steps": 0,
  "num_input_tokens_seen": 0,
  "num_train_epochs": 0,
  "save_steps": 500,
  "stateful_callbacks": {},
  "total_flos": 0.0,
  "train_batch_size": null,
  "trial_name": null,
  "trial_params": null
}
)");
}

TEST_CASE("Log entries keep insertion order in memory and are sorted in the file", "[trainer_state]") {
  TrainerState state;
  state.epoch = 1.0;
  torchtrain::LogEntry entry;
  entry["loss"] = 0.5;
  entry["grad_norm"] = 1.25;
  entry["learning_rate"] = 5e-05;
  entry["epoch"] = 1.0;
  entry["step"] = 2;
  state.log_history.push_back(entry);

  const std::string text = state.to_json_string();
  CHECK(state.log_history[0].begin().key() == "loss");
  CHECK(text.find("\"epoch\": 1.0,\n  \"eval_steps\"") != std::string::npos);
  CHECK(text.find("    {\n      \"epoch\": 1.0,\n      \"grad_norm\": 1.25,\n      \"learning_rate\": 5e-05,\n"
                  "      \"loss\": 0.5,\n      \"step\": 2\n    }\n") != std::string::npos);
}

TEST_CASE("NaN and infinite metrics survive a save and a load", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto path = (dir / "trainer_state.json").string();
  for (const double metric : {inf, -inf, std::numeric_limits<double>::quiet_NaN()}) {
    TrainerState state;
    state.best_metric = metric;
    torchtrain::LogEntry entry;
    entry["eval_loss"] = metric;
    entry["note"] = "NaN";
    state.log_history.push_back(entry);
    state.save_to_json(path);
    const std::string text = tt_test::read_file(path);
    CHECK(text.find("\"best_metric\": " + python_float_repr(metric) + ",\n") != std::string::npos);

    const TrainerState loaded = TrainerState::load_from_json(path);
    REQUIRE(loaded.best_metric.has_value());
    if (std::isnan(metric)) {
      CHECK(std::isnan(*loaded.best_metric));
      CHECK(std::isnan(loaded.log_history.at(0)["eval_loss"].get<double>()));
    } else {
      CHECK(*loaded.best_metric == metric);
      CHECK(loaded.log_history.at(0)["eval_loss"].get<double>() == metric);
    }
    CHECK(loaded.log_history.at(0)["note"] == "NaN");
    CHECK(loaded.to_json_string() == text);
  }
}

TEST_CASE("Unknown keys are kept, written back and named in one warning", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto path = (dir / "trainer_state.json").string();
  json file = parse_python_json(hf_example, "example");
  file["future_field"] = {{"nested", {1, 2}}};
  file["another_one"] = "x";
  tt_test::write_file(path, dump_python_json(file));

  tt_test::WarningCapture warnings;
  const TrainerState state = TrainerState::load_from_json(path);
  REQUIRE(warnings.messages.size() == 1);
  CHECK_THAT(warnings.messages[0], Catch::Contains(path) && Catch::Contains("\"future_field\"") &&
                                       Catch::Contains("\"another_one\"") && !Catch::Contains("global_step"));
  CHECK(state.unknown_fields == json({{"future_field", {{"nested", {1, 2}}}}, {"another_one", "x"}}));
  CHECK(state.to_json_string() == dump_python_json(file));
}

TEST_CASE("An old trainer_state.json without the newer keys loads with defaults", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto path = (dir / "trainer_state.json").string();
  tt_test::write_file(path, R"({
  "best_metric": null,
  "best_model_checkpoint": null,
  "epoch": 3.0,
  "global_step": 30,
  "is_hyper_param_search": false,
  "is_local_process_zero": true,
  "is_world_process_zero": true,
  "log_history": [
    {
      "epoch": 3.0,
      "step": 30,
      "total_flos": 1234.0,
      "train_loss": 0.25
    }
  ],
  "max_steps": 30,
  "num_train_epochs": 3,
  "total_flos": 1234.0,
  "trial_name": null,
  "trial_params": null
}
)");
  tt_test::WarningCapture warnings;
  const TrainerState state = TrainerState::load_from_json(path);
  CHECK(warnings.messages.empty());
  CHECK(state.epoch == 3.0);
  CHECK(state.global_step == 30);
  CHECK(state.max_steps == 30);
  CHECK(state.total_flos == 1234.0);
  REQUIRE(state.log_history.size() == 1);
  CHECK(state.log_history[0]["train_loss"] == 0.25);
  CHECK_FALSE(state.best_global_step.has_value());
  CHECK(state.logging_steps == 500);
  CHECK(state.eval_steps == 500);
  CHECK(state.save_steps == 500);
  CHECK_FALSE(state.train_batch_size.has_value());
  CHECK(state.num_input_tokens_seen == 0);
  CHECK(state.stateful_callbacks == json::object());
}

TEST_CASE("Malformed trainer_state.json files raise FileFormatError naming the file and the problem",
          "[trainer_state]") {
  tt_test::TempDir dir;
  const auto write = [&](const std::string& name, const std::string& text) {
    const auto path = (dir / name).string();
    tt_test::write_file(path, text);
    return path;
  };
  const auto with = [](const std::string& key, const json& value) {
    json file = parse_python_json(hf_example, "example");
    file[key] = value;
    return dump_python_json(file);
  };

  SECTION("missing") {
    const auto path = (dir / "absent.json").string();
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("No such file"));
  }
  SECTION("a directory") {
    CHECK_THAT(load_error(dir.str()), Catch::Contains(dir.str()) && Catch::Contains("Is a directory"));
  }
  SECTION("empty") {
    const auto path = write("empty.json", "");
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("empty"));
  }
  SECTION("truncated in the middle") {
    const auto mid_string = write("mid_string.json", hf_example.substr(0, hf_example.size() / 2));
    CHECK_THAT(load_error(mid_string), Catch::Contains(mid_string) && Catch::Contains("not valid JSON") &&
                                           Catch::Contains("line 31") && Catch::Contains("missing closing quote"));
    const auto cut = hf_example.find("\"log_history\": [\n") + 17;
    const auto mid_list = write("mid_list.json", hf_example.substr(0, cut));
    CHECK_THAT(load_error(mid_list), Catch::Contains(mid_list) && Catch::Contains("not valid JSON") &&
                                         Catch::Contains("unexpected end of input"));
  }
  SECTION("not JSON") {
    const auto path = write("text.json", "checkpoint saved\n");
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("not valid JSON") &&
                                     Catch::Contains("byte 1"));
  }
  SECTION("top level array") {
    const auto path = write("array.json", "[\n  1\n]\n");
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("top level") && Catch::Contains("array"));
  }
  SECTION("global_step is not an integer") {
    const auto path = write("step.json", with("global_step", "abc"));
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("\"global_step\" must be an integer") &&
                                     Catch::Contains("\"abc\""));
    const auto fraction = write("fraction.json", with("global_step", 1.5));
    CHECK_THAT(load_error(fraction), Catch::Contains("\"global_step\" must be an integer"));
    const auto nan = write("nan.json", with("global_step", std::numeric_limits<double>::quiet_NaN()));
    CHECK_THAT(load_error(nan), Catch::Contains("\"global_step\" must be an integer, got number NaN"));
  }
  SECTION("other fields of the wrong type") {
    CHECK_THAT(load_error(write("a.json", with("best_metric", "high"))), Catch::Contains("\"best_metric\""));
    CHECK_THAT(load_error(write("b.json", with("is_world_process_zero", 1))),
               Catch::Contains("\"is_world_process_zero\""));
    CHECK_THAT(load_error(write("c.json", with("best_model_checkpoint", 3))),
               Catch::Contains("\"best_model_checkpoint\""));
    CHECK_THAT(load_error(write("d.json", with("trial_params", json::array()))), Catch::Contains("\"trial_params\""));
    CHECK_THAT(load_error(write("e.json", with("stateful_callbacks", {{"TrainerControl", {1, 2}}}))),
               Catch::Contains("stateful_callbacks[\"TrainerControl\"]"));
    CHECK_THAT(load_error(write("f.json", with("max_steps", std::numeric_limits<std::uint64_t>::max()))),
               Catch::Contains("\"max_steps\""));
  }
  SECTION("log_history is not a list") {
    const auto path = write("history.json", with("log_history", {{"loss", 1.0}}));
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("\"log_history\" must be a list"));
  }
  SECTION("a log_history entry is not an object") {
    json file = parse_python_json(hf_example, "example");
    file["log_history"][1] = {1, 2};
    const auto path = write("entry.json", dump_python_json(file));
    CHECK_THAT(load_error(path), Catch::Contains(path) && Catch::Contains("log_history[1] must be an object"));
  }
}

TEST_CASE("Integral floats are accepted for integer fields", "[trainer_state]") {
  const TrainerState state = TrainerState::from_json({{"global_step", 7.0}, {"train_batch_size", 16}}, "mem");
  CHECK(state.global_step == 7);
  CHECK(state.train_batch_size == 16);
}

TEST_CASE("compute_steps turns ratios into step counts as HF does", "[trainer_state]") {
  torchtrain::TrainingArguments args;
  TrainerState state;

  SECTION("absolute values are used as they are; eval_steps stays 500 when evaluation is not by steps") {
    args.logging_steps = 10;
    args.save_steps = 1;  // 1 is a count, not a ratio
    state.compute_steps(args, 95);
    CHECK(state.logging_steps == 10);
    CHECK(state.eval_steps == 500);
    CHECK(state.save_steps == 1);
  }
  SECTION("ratios round up with Python's float arithmetic") {
    args.logging_steps = 0.1;
    args.eval_strategy = torchtrain::IntervalStrategy::steps;
    args.eval_steps = 0.25;
    args.save_steps = 0.07;
    state.compute_steps(args, 95);
    CHECK(state.logging_steps == 10);  // ceil(9.5)
    CHECK(state.eval_steps == 24);     // ceil(23.75)
    CHECK(state.save_steps == 7);      // ceil(6.65)
    state.compute_steps(args, 100);
    CHECK(state.save_steps == 8);  // Python: math.ceil(100 * 0.07) == 8, as 100 * 0.07 == 7.000000000000001
  }
  SECTION("eval_steps unset under the steps strategy follows logging_steps") {
    args.logging_steps = 0.5;
    args.eval_strategy = torchtrain::IntervalStrategy::steps;
    state.compute_steps(args, 9);
    CHECK(state.logging_steps == 5);
    CHECK(state.eval_steps == 5);
  }
  SECTION("an explicit eval_steps is used even when evaluation is not by steps") {
    args.eval_steps = 40;
    state.compute_steps(args, 95);
    CHECK(state.eval_steps == 40);
  }
}

TEST_CASE("Stateful callback states of duplicate classes are replaced, never appended", "[trainer_state]") {
  tt_test::TempDir dir;
  const auto path = (dir / "trainer_state.json").string();
  const json control = {{"args", {{"should_save", true}}}, {"attributes", json::object()}};

  TrainerState state;
  state.stateful_callbacks["DetachedCallback"] = callback_state(9, 9);  // from a checkpoint, not attached now
  for (int save = 1; save <= 3; ++save) {
    state.set_stateful_callback_states({{"EarlyStoppingCallback", callback_state(2, save)},
                                        {"TrainerControl", control},
                                        {"EarlyStoppingCallback", callback_state(5, 10 * save)}});
    state.save_to_json(path);
    state = TrainerState::load_from_json(path);
  }
  const auto early = state.stateful_callback_states("EarlyStoppingCallback");
  REQUIRE(early.size() == 2);
  CHECK(early[0] == callback_state(2, 3));
  CHECK(early[1] == callback_state(5, 30));
  CHECK(state.stateful_callback_states("TrainerControl") == std::vector<json>{control});
  CHECK(state.stateful_callbacks["TrainerControl"].is_object());
  CHECK(state.stateful_callback_states("DetachedCallback") == std::vector<json>{callback_state(9, 9)});
  CHECK(state.stateful_callback_states("NeverSaved").empty());

  // One instance left: the list becomes a plain state again.
  state.set_stateful_callback_states({{"EarlyStoppingCallback", callback_state(2, 4)}});
  CHECK(state.stateful_callbacks["EarlyStoppingCallback"] == callback_state(2, 4));
  CHECK(state.stateful_callback_states("EarlyStoppingCallback").size() == 1);
}

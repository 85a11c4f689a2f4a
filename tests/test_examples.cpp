// train_classifier as its users meet it: a real process, real files, real bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "processes.hpp"
#include "support.hpp"
#include "terminal.hpp"

namespace {

tt_test::Outcome run_classifier(const std::string& flags) {
  return tt_test::run_command(std::string(TORCHTRAIN_TRAIN_CLASSIFIER) + " " + flags);
}

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of('\n');
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

// train_classifier for 16 steps with an evaluation of 1200 batches after each of its 2 epochs.
std::vector<std::string> classifier_with_long_evaluations(const tt_test::TempDir& dir) {
  return {TORCHTRAIN_TRAIN_CLASSIFIER, "--output_dir", dir.str(), "--num_train_samples", "256", "--num_eval_samples",
          "1200", "--per_device_eval_batch_size", "1", "--num_train_epochs", "2", "--eval_strategy", "epoch",
          "--save_strategy", "no", "--logging_steps", "5", "--report_to", "none"};
}

}  // namespace

TEST_CASE("train_classifier trains on synthetic data and writes HF's files") {
  tt_test::TempDir dir("tc");
  auto trace = dir / "trace.jsonl";
  auto r = run_classifier("--output_dir " + dir.str() + " --num_train_epochs 2 --trace_events " + trace.string() +
                          " --early_stopping_patience 3");
  INFO(r.output);
  REQUIRE(r.status == 0);
  for (const char* f : {"trainer_state.json", "train_results.json", "eval_results.json", "all_results.json"})
    CHECK(std::filesystem::exists(dir / f));
  CHECK(std::filesystem::exists(dir / "checkpoint-128"));
  auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_accuracy"].get<double>() > 0.9);
  auto trace_text = tt_test::read_file(trace);
  // The tracer is attached after the Trainer is built, so its first event is on_train_begin.
  CHECK(trace_text.rfind("{\"event\":\"on_train_begin\"", 0) == 0);
  CHECK(trace_text.find("{\"event\":\"on_step_end\",\"global_step\":1,\"epoch\":0.015625}") != std::string::npos);

  // Resuming the finished run performs no further step.
  auto again = run_classifier("--output_dir " + dir.str() + " --num_train_epochs 2 --resume_from_checkpoint true");
  INFO(again.output);
  CHECK(again.status == 0);
  auto state = nlohmann::json::parse(tt_test::read_file(dir / "trainer_state.json"));
  CHECK(state["global_step"] == 128);
}

TEST_CASE("train_classifier trains on a CSV file with a header") {
  tt_test::TempDir dir("tccsv");
  std::string csv = "x1,x2,label\n";
  for (int i = 0; i < 200; ++i) {
    const int label = i % 2;
    csv += std::to_string(label * 4 + (i % 7) * 0.1) + "," + std::to_string(-label * 3 + (i % 5) * 0.1) + "," +
           std::to_string(label) + "\n";
  }
  tt_test::write_file(dir / "train.csv", csv);
  auto r = run_classifier("--output_dir " + dir.str() + " --train_file " + (dir / "train.csv").string() +
                          " --eval_file " + (dir / "train.csv").string() + " --num_train_epochs 10 --learning_rate 0.03");
  INFO(r.output);
  REQUIRE(r.status == 0);
  auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_accuracy"].get<double>() > 0.95);
}

TEST_CASE("train_classifier learns the real Iris data set from CSV in seconds") {
  tt_test::TempDir dir("tciris");
  const std::string data = TORCHTRAIN_TEST_DATA_DIR;
  auto r = run_classifier("--output_dir " + dir.str() + " --train_file " + data + "/iris_train.csv --eval_file " +
                          data + "/iris_test.csv --num_train_epochs 60 --per_device_train_batch_size 8 "
                          "--learning_rate 0.01 --save_strategy no --disable_tqdm --report_to none");
  INFO(r.output);
  REQUIRE(r.status == 0);
  auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_accuracy"].get<double>() >= 0.9);  // the 30 held-out flowers; chance is 1/3
  CHECK(eval["eval_loss"].get<double>() < 0.4);
}

TEST_CASE("train_classifier rejects bad input with a one-line reason and a non-zero status") {
  tt_test::TempDir dir("tcbad");
  tt_test::write_file(dir / "bad.csv", "1,2,0\n3,4,1\n5,x,1\n");
  tt_test::write_file(dir / "ragged.csv", "1,2,0\n3,1\n");
  struct Case {
    std::string flags, expected;
  };
  const std::vector<Case> cases{
      {"--learning_rat 0.1", "did you mean --learning_rate"},
      {"--train_file " + (dir / "missing.csv").string(), "missing.csv"},
      {"--train_file " + (dir / "bad.csv").string(), "bad.csv:3"},
      {"--train_file " + (dir / "ragged.csv").string(), "ragged.csv:2"},
      {"--load_best_model_at_end --eval_strategy steps --save_strategy epoch", "save_strategy"},
      {"--learning_rate abc", "not a number"},
      {"--resume_from_checkpoint " + (dir / "nowhere").string(), "nowhere"},
  };
  for (const auto& c : cases) {
    auto r = run_classifier("--output_dir " + dir.str() + " " + c.flags);
    INFO(c.flags << "\n" << r.output);
    CHECK(r.status == 2);
    const auto line = last_line(r.output);
    CHECK(line.rfind("train_classifier: error: ", 0) == 0);
    CHECK(line.find(c.expected) != std::string::npos);
  }
}

TEST_CASE("train_classifier --help lists the TrainingArguments and the program's flags") {
  auto r = run_classifier("--help");
  CHECK(r.status == 0);
  for (const char* flag : {"--learning_rate", "--eval_strategy", "--train_file", "--hidden_size", "--trace_events"})
    CHECK(r.output.find(flag) != std::string::npos);
}

TEST_CASE("in a terminal of 60, 80 and 120 columns no bar wraps, both bars show while evaluating, the last is full") {
  for (const int columns : {60, 80, 120}) {
    tt_test::TempDir dir("tty");
    // 1200 evaluation batches: the longest counts; 8 steps per epoch, 16 in all.
    auto argv = classifier_with_long_evaluations(dir);
    argv.insert(argv.end(), {"--warmup_ratio", "0.1"});  // a warning
    const auto [status, output] = tt_test::run_in_terminal(argv, columns);
    tt_test::Screen screen(columns);
    screen.feed(output);
    std::string shown;
    for (const auto& row : screen.rows()) shown += row + "\n";
    INFO(columns << " columns; the screen:\n" << shown);
    REQUIRE(status == 0);
    for (const auto& line : screen.wrapped) CHECK(line.find("%|") == std::string::npos);  // only log lines wrap
    REQUIRE(screen.training_above_eval.size() >= 2);
    for (const auto& above : screen.training_above_eval) CHECK_THAT(above, Catch::Contains("%|") && Catch::Contains("/16 ["));
    const auto rows = screen.rows();
    const auto final_bar = std::find_if(rows.begin(), rows.end(), [](const std::string& row) {
      return row.rfind("100%|", 0) == 0 && row.find("| 16/16 [") != std::string::npos;
    });
    REQUIRE(final_bar != rows.end());
    // The evaluations during training gave their lines back; the one after train() keeps its bar.
    CHECK(std::none_of(rows.begin(), final_bar, [](const std::string& row) { return row.rfind("Evaluating:", 0) == 0; }));
    CHECK(std::count_if(rows.begin(), rows.end(), [](const std::string& row) {
            return row.rfind("torchtrain: warning: warmup_ratio is deprecated", 0) == 0;
          }) == 1);
  }
}

TEST_CASE("the bars follow a terminal that is made narrower during the run") {
  tt_test::TempDir dir("tty-resize");
  // 120 columns until the first evaluation bar, then 60.
  const auto [status, output] =
      tt_test::run_in_terminal(classifier_with_long_evaluations(dir), 120, "Evaluating:", 60);
  tt_test::Screen screen(120);
  screen.feed(output);
  INFO(output);
  REQUIRE(status == 0);
  const auto rows = screen.rows();
  const auto final_bar = std::find_if(rows.begin(), rows.end(), [](const std::string& row) {
    return row.rfind("100%|", 0) == 0 && row.find("| 16/16 [") != std::string::npos;
  });
  REQUIRE(final_bar != rows.end());
  CHECK(final_bar->size() == 59);
}

#ifdef TORCHTRAIN_QUICKSTART
TEST_CASE("the README's quickstart trains with early stopping and evaluates") {
  tt_test::TempDir dir("quickstart");
  const auto r = tt_test::run_command(std::string(TORCHTRAIN_QUICKSTART) + " --output_dir " + dir.str() +
                                      " --disable_tqdm --report_to none");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("warning") == std::string::npos);
  const auto accuracy = r.output.rfind("eval_accuracy ");
  REQUIRE(accuracy != std::string::npos);
  CHECK(std::stod(r.output.substr(accuracy + 14)) > 0.9);
  CHECK(std::filesystem::exists(dir / "checkpoint-64"));           // the first epoch's
}
#endif

TEST_CASE("report_to all takes each tracker whose environment says where to write; one not included is an error") {
  tt_test::TempDir dir("trackers-all");
  std::filesystem::create_directories(dir / ".dvc");  // a DVC repository: DVCLive writes into it
  // Only the configuration below: whatever the developer's environment holds for the trackers is left out.
  const std::string env = "env -u MLFLOW_EXPERIMENT_NAME -u MLFLOW_RUN_ID -u WANDB_MODE -u DVCLIVE_RESUME "
                          "MLFLOW_TRACKING_URI=file:" + (dir / "mlruns").string() + " WANDB_PROJECT=blobs WANDB_DIR=" +
                          dir.str() + " TRACKIO_DIR=" + (dir / "trackio").string() +
                          " CODECARBON_MEASURE_POWER_SECS=1 ";
  const auto r = tt_test::run_command("cd " + dir.str() + " && " + env + TORCHTRAIN_TRAIN_CLASSIFIER +
                                      " --output_dir out --num_train_epochs 1 --save_strategy no --disable_tqdm true");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(std::filesystem::exists(dir / "mlruns" / "0" / "meta.yaml"));
  CHECK(std::filesystem::exists(dir / "wandb"));
  CHECK(std::filesystem::exists(dir / "trackio" / "huggingface.db"));
  CHECK(std::filesystem::exists(dir / "dvclive" / "metrics.json"));
  CHECK(std::filesystem::exists(dir / "out" / "emissions.csv"));
  CHECK(std::filesystem::exists(dir / "out" / "log_history.csv"));
  CHECK(r.output.find("wandb sync") != std::string::npos);

#ifdef TORCHTRAIN_QUICKSTART
  // quickstart includes no tracker header: naming one says which header and library it needs.
  const auto q = tt_test::run_command(std::string(TORCHTRAIN_QUICKSTART) + " --output_dir " + (dir / "q").string() +
                                      " --disable_tqdm --report_to mlflow");
  CHECK(q.status != 0);
  CHECK(q.output.find("report_to names \"mlflow\", which this program does not include: #include "
                      "<torchtrain/callbacks/mlflow.hpp> and link torchtrain::mlflow (libcurl)") != std::string::npos);
#endif
}

TEST_CASE("train_classifier prints the library's warnings as one clean line on standard error") {
  tt_test::TempDir dir("tcwarn");
  const auto r = run_classifier("--output_dir " + dir.str() + " --max_steps 2 --warmup_ratio 0.1 --save_strategy no"
                                " --eval_strategy no --disable_tqdm --report_to none");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto at = r.output.find("torchtrain: warning: warmup_ratio is deprecated, as in Hugging Face v5");
  REQUIRE(at != std::string::npos);
  CHECK((at == 0 || r.output[at - 1] == '\n'));  // a line of its own
  CHECK(r.output.find("InitGoogleLogging") == std::string::npos);  // none of glog's decoration
  CHECK(r.output.find("(function ") == std::string::npos);
}

#ifdef TORCHTRAIN_FASHION_MNIST
TEST_CASE("fashion_mnist trains a CNN on the real Fashion-MNIST images to 0.80 test accuracy in 600 steps") {
  tt_test::TempDir dir("fmnist");
  const auto r = tt_test::run_command(std::string(TORCHTRAIN_FASHION_MNIST) + " --output_dir " + dir.str() +
                                      " --max_steps 600 --eval_strategy no --save_strategy no");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_accuracy"].get<double>() >= 0.80);
  CHECK(eval["eval_samples_per_second"].get<double>() > 0);
  CHECK(std::filesystem::exists(dir / "fashion-mnist-idx/t10k-images-idx3-ubyte"));

  const auto missing = tt_test::run_command(std::string(TORCHTRAIN_FASHION_MNIST) + " --output_dir " + dir.str() +
                                            " --data_dir " + (dir / "nowhere").string());
  CHECK(missing.status == 2);
  CHECK(last_line(missing.output).find("install the Debian package dataset-fashion-mnist") != std::string::npos);
}
#endif

#ifdef TORCHTRAIN_CHAR_LM
TEST_CASE("char_lm learns the Jargon File: held-out loss below 0.8 x the unigram entropy in 600 steps") {
  tt_test::TempDir dir("charlm");
  const auto r = tt_test::run_command(std::string(TORCHTRAIN_CHAR_LM) + " --output_dir " + dir.str() +
                                      " --max_steps 600 --gradient_accumulation_steps 1 --eval_strategy no"
                                      " --save_strategy no --max_eval_blocks 100");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  const double loss = eval["eval_loss"].get<double>(), unigram = eval["eval_unigram_entropy"].get<double>();
  CHECK(unigram > 3.0);  // nats per character of English text: about 4.8 bits
  CHECK(loss < 0.8 * unigram);
  CHECK(eval["eval_bits_per_character"].get<double>() == Approx(loss / std::log(2.0)));
  CHECK(eval["eval_perplexity"].get<double>() == Approx(std::exp(loss)));
  // A sample of the untrained model (eval_on_start) and one of the trained model.
  CHECK(r.output.find("sample at step 0:\nThe ") != std::string::npos);
  CHECK(r.output.find("sample at step 600:\nThe ") != std::string::npos);

  const auto missing = tt_test::run_command(std::string(TORCHTRAIN_CHAR_LM) + " --output_dir " + dir.str() +
                                            " --text_file " + (dir / "nowhere.txt.gz").string());
  CHECK(missing.status == 2);
  CHECK(last_line(missing.output).find("install the Debian package jargon-text") != std::string::npos);
}
#endif

#ifdef TORCHTRAIN_CHAR_LM
TEST_CASE("char_lm trains from the lines of its text read as a stream") {
  tt_test::TempDir dir("charlm-stream");
  const auto r = tt_test::run_command(std::string(TORCHTRAIN_CHAR_LM) + " --output_dir " + dir.str() +
                                      " --stream true --max_steps 120 --gradient_accumulation_steps 1"
                                      " --eval_strategy no --save_strategy steps --save_steps 60 --max_eval_blocks 50");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(std::filesystem::file_size(dir / "train_text.txt") > 1000000);  // nine tenths of the 1.7 MB text
  CHECK(std::filesystem::exists(dir / "checkpoint-60" / "data_state.pt"));
  const auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_loss"].get<double>() < eval["eval_unigram_entropy"].get<double>());
}
#endif

#ifdef TORCHTRAIN_STREAM_CLASSIFIER
TEST_CASE("stream_classifier generates a CSV, trains on it as a stream, and a resume continues from its position") {
  tt_test::TempDir dir("stream-classifier");
  const std::string base = std::string(TORCHTRAIN_STREAM_CLASSIFIER) + " --output_dir " + dir.str() + " --train_file " +
                           (dir / "train.csv").string() + " --rows 3000 --shuffle_buffer 500 --report_to none" +
                           " --per_device_train_batch_size 64 --save_steps 20 --eval_steps 40 --logging_steps 20";
  const auto first = tt_test::run_command(base + " --max_steps 40");
  INFO(first.output);
  REQUIRE(first.status == 0);
  CHECK(first.output.find("wrote 3000 rows to ") != std::string::npos);
  const auto eval = nlohmann::json::parse(tt_test::read_file(dir / "eval_results.json"));
  CHECK(eval["eval_accuracy"].get<double>() > 0.9);
  CHECK(std::filesystem::exists(dir / "checkpoint-40" / "data_state.pt"));

  // 3000 rows make 47 batches a pass: a longer run resumed at step 40 continues in the first pass, into the second.
  const auto resumed = tt_test::run_command(base + " --max_steps 60 --resume_from_checkpoint true");
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  CHECK(resumed.output.find("wrote") == std::string::npos);  // the file is read, not generated again
  CHECK(resumed.output.find("Resuming from checkpoint-40") != std::string::npos);
  const auto state = nlohmann::json::parse(tt_test::read_file(dir / "trainer_state.json"));
  CHECK(state["global_step"] == 60);
  CHECK(state["epoch"].get<double>() == Approx(1.0 + 13.0 / 60.0));

  const auto bad = tt_test::run_command(base + " --max_steps -1");
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Catch::Contains("stream_classifier: error: The train_dataset does not implement __len__"));
}
#endif

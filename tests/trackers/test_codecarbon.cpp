// CodeCarbonCallback: the emissions.csv rows of real training runs, read back with a CSV reader of the test's
// own and checked against CodeCarbon 3.3.0's columns and units: the RAPL energy of a fake powercap tree whose
// counter the test advances (and wraps), the load-based estimate without RAPL, CODECARBON_* configuration,
// unwritable files, and a killed and resumed run.
#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <torchtrain/callbacks/codecarbon.hpp>
#include <torchtrain/torchtrain.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "datasets.hpp"
#include "processes.hpp"
#include "support.hpp"

namespace tt = torchtrain;
namespace fs = std::filesystem;

namespace codecarbon_tests {

// The fields of CodeCarbon 3.3.0's EmissionsData (codecarbon/output_methods/emissions_data.py), in order.
const std::vector<std::string> kColumns{
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "water_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue"};

// CodeCarbon's Energy.from_ujoules: µJ × 1e-6 × 2.77778e-7.
inline double kwh_of_micro_joules(double uj) { return uj * 1e-6 * 2.77778e-7; }

// Every record of a CSV file (RFC 4180 quoting), its cells as written.
inline std::vector<std::vector<std::string>> read_csv(const fs::path& path) {
  const std::string text = tt_test::read_file(path);
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> record{""};
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        record.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        record.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      record.emplace_back();
    } else if (c == '\n') {
      records.push_back(record);
      record = {""};
    } else {
      record.back() += c;
    }
  }
  REQUIRE((record.size() == 1 && record[0].empty()));  // the file ends with a line end
  return records;
}

// The rows of an emissions file whose header must be CodeCarbon's, each by column name.
inline std::vector<std::map<std::string, std::string>> read_rows(const fs::path& path) {
  const auto records = read_csv(path);
  REQUIRE(!records.empty());
  REQUIRE(records[0] == kColumns);
  std::vector<std::map<std::string, std::string>> rows;
  for (std::size_t r = 1; r < records.size(); ++r) {
    REQUIRE(records[r].size() == kColumns.size());
    std::map<std::string, std::string> row;
    for (std::size_t c = 0; c < kColumns.size(); ++c) row[kColumns[c]] = records[r][c];
    rows.push_back(row);
  }
  return rows;
}

inline double number(const std::map<std::string, std::string>& row, const std::string& column) {
  const std::string& text = row.at(column);
  INFO(column << " = \"" << text << "\"");
  std::size_t used = 0;
  const double value = std::stod(text, &used);
  REQUIRE(used == text.size());
  return value;
}

// CodeCarbon's RAM power on x86 (external/ram.py) for memories up to 128 GB: 5 W a DIMM, 10 W at least.
inline std::optional<double> expected_ram_power() {
  const std::string meminfo = tt_test::read_file("/proc/meminfo");
  const double gb = std::stod(meminfo.substr(meminfo.find("MemTotal:") + 9)) * 1024 / (1024.0 * 1024 * 1024);
  if (gb > 128) return std::nullopt;
  const int dimms = gb <= 2 ? 1 : gb <= 16 ? 2 : gb <= 64 ? 4 : 8;
  return std::max(10.0, dimms <= 4 ? 5.0 * dimms : 20 + 4.5 * (dimms - 4));
}

// The library's messages while alive.
struct Messages {
  std::vector<std::pair<tt::MessageLevel, std::string>> seen;
  tt::MessageHandler previous;
  Messages() {
    previous = tt::set_message_handler([this](tt::MessageLevel level, const std::string& m) { seen.emplace_back(level, m); });
  }
  ~Messages() { tt::set_message_handler(previous); }
  int count(tt::MessageLevel level, const std::string& needle) const {
    int n = 0;
    for (const auto& [l, m] : seen) n += l == level && m.find(needle) != std::string::npos;
    return n;
  }
};

// Clears every CODECARBON_* variable (any case) and points HOME at `home`, until the result goes, so that neither
// the machine's own settings nor a ~/.codecarbon.config change a result; worker processes inherit the same.
inline std::vector<std::unique_ptr<tt_test::ScopedEnv>> clean_environment(const tt_test::TempDir& home) {
  std::vector<std::string> names;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    std::string prefix = entry.substr(0, 11);
    for (char& c : prefix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (prefix == "codecarbon_") names.push_back(entry.substr(0, entry.find('=')));
  }
  std::vector<std::unique_ptr<tt_test::ScopedEnv>> cleared;
  for (const auto& name : names) cleared.push_back(std::make_unique<tt_test::ScopedEnv>(name.c_str(), nullptr));
  cleared.push_back(std::make_unique<tt_test::ScopedEnv>("HOME", home.str()));
  return cleared;
}

// Waits until the tracker has taken `count` measurements, on its own thread; the deadline is generous, for a
// loaded machine, and only a tracker that stopped measuring reaches it.
inline void wait_for_measurements(const tt::CodeCarbonCallback& tracker, std::size_t count,
                                  std::chrono::seconds patience = std::chrono::seconds(120)) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (tracker.measurements() < count && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(tracker.measurements() >= count);
}

// A powercap tree with one package domain, intel-rapl:0, whose counter the test sets.
struct FakePowercap {
  tt_test::TempDir root{"cc-powercap"};
  fs::path domain = root / "intel-rapl:0";
  FakePowercap(double max_uj, double start_uj) {
    fs::create_directories(domain);
    tt_test::write_file(domain / "name", "package-0\n");
    tt_test::write_file(domain / "max_energy_range_uj", std::to_string(static_cast<std::int64_t>(max_uj)) + "\n");
    set(start_uj);
  }
  void set(double uj) {  // renamed into place, so that a reader never sees half a number
    tt_test::write_file(domain / "energy_uj.new", std::to_string(static_cast<std::int64_t>(uj)) + "\n");
    fs::rename(domain / "energy_uj.new", domain / "energy_uj");
  }
};

// At the end of the given steps, sets the counter and waits until the tracker's own thread has measured twice
// (so that one measurement began after the change).
struct AdvanceCounter : tt::TrainerCallback {
  FakePowercap& rapl;
  const tt::CodeCarbonCallback& tracker;
  std::map<std::int64_t, double> at_step;
  AdvanceCounter(FakePowercap& r, const tt::CodeCarbonCallback& t, std::map<std::int64_t, double> s)
      : rapl(r), tracker(t), at_step(std::move(s)) {}
  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    const auto it = at_step.find(state.global_step);
    if (it == at_step.end()) return;
    const std::size_t before = tracker.measurements();
    rapl.set(it->second);
    wait_for_measurements(tracker, before + 2);
  }
};

// At the end of step `step`, waits up to `patience` until `tracker` has measured `count` times.
struct AwaitMeasurements : tt::TrainerCallback {
  std::int64_t step;
  std::size_t count;
  std::chrono::seconds patience;
  std::shared_ptr<const tt::CodeCarbonCallback> tracker;
  AwaitMeasurements(std::int64_t s, std::size_t c, std::chrono::seconds p) : step(s), count(c), patience(p) {}
  void on_step_end(const Args&, const State& state, Control&, const Context&) override {
    if (state.global_step != step) return;
    REQUIRE(tracker);
    wait_for_measurements(*tracker, count, patience);
  }
};

// Power × duration × PUE, less up to the last 50 ms, which CodeCarbon's stop() leaves out when it measured
// that recently (_measure_power_and_energy_if_stale).
inline Catch::Matchers::Floating::WithinAbsMatcher measured_over(double power_w, double duration_s, double pue) {
  const double per_second = power_w * pue / 3.6e6;
  return Catch::Matchers::WithinAbs(per_second * (duration_s - 0.03), per_second * 0.031);
}

using Trainer = tt::Trainer<tt_test::Mlp, tt_test::Blobs>;

// 8 steps of 4 examples, a log every 4, no evaluation or checkpoint.
inline tt::TrainingArguments tiny_args(const fs::path& output_dir, std::vector<std::string> report_to = {"none"}) {
  tt::TrainingArguments a;
  a.output_dir = output_dir.string();
  a.disable_tqdm = true;
  a.report_to = std::move(report_to);
  a.per_device_train_batch_size = 4;
  a.max_steps = 8;
  a.logging_steps = 4;
  a.eval_strategy = tt::IntervalStrategy::no;
  a.save_strategy = tt::SaveStrategy::no;
  return a;
}

inline std::unique_ptr<Trainer> make_trainer(const tt::TrainingArguments& args) {
  torch::manual_seed(0);
  auto trainer = std::make_unique<Trainer>(tt_test::Mlp(), args, tt_test::Blobs(32, 1), tt_test::Blobs(16, 2));
  trainer->pop_callback<tt::PrinterCallback>();
  return trainer;
}

inline std::vector<double> losses(const Trainer& trainer) {
  std::vector<double> out;
  for (const auto& entry : trainer.state.log_history)
    if (entry.contains("loss")) out.push_back(entry["loss"].get<double>());
  return out;
}

TEST_CASE("codecarbon: the CPU energy is the RAPL counter's gain, a wrap included, one CSV row per run",
          "[trackers][codecarbon]") {
  tt_test::TempDir home("cc-home");
  const auto environment = clean_environment(home);
  Messages messages;
  tt_test::TempDir out("cc-rapl");
  const double max_uj = 262143328850.0;  // a real package's max_energy_range_uj
  FakePowercap rapl(max_uj, max_uj - 3e9);
  tt::CodeCarbonOptions options;
  options.powercap_root = rapl.root.path();
  options.measure_power_secs = 0.05;

  auto trainer = make_trainer(tiny_args(out.path()));
  auto tracker = std::make_shared<tt::CodeCarbonCallback>(options);
  trainer->add_callback(tracker);
  // +2e9, then past the maximum to 5e8 (+1e9 + 5e8), then +2e9: 5.5e9 µJ in all.
  trainer->add_callback(std::make_shared<AdvanceCounter>(
      rapl, *tracker, std::map<std::int64_t, double>{{2, max_uj - 1e9}, {5, 5e8}, {7, 2.5e9}}));
  const auto begin = std::chrono::steady_clock::now();
  trainer->train();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  CHECK(tracker->cpu_tracking_mode() == "RAPL");

  const fs::path file = out / "emissions.csv";
  auto rows = read_rows(file);
  REQUIRE(rows.size() == 1);
  const auto& row = rows[0];
  const double expected_cpu = kwh_of_micro_joules(5.5e9);
  CHECK(number(row, "cpu_energy") == Approx(expected_cpu).epsilon(1e-12));
  const double duration = number(row, "duration");
  CHECK(duration > 0);
  CHECK(duration <= wall);
  const double ram_power = number(row, "ram_power");
  if (const auto expected = expected_ram_power()) CHECK(ram_power == Approx(*expected));
  CHECK_THAT(number(row, "ram_energy"), measured_over(ram_power, duration, 1));
  const double energy = number(row, "energy_consumed");
  CHECK(energy == Approx(number(row, "cpu_energy") + number(row, "ram_energy")).epsilon(1e-12));
  CHECK(number(row, "emissions") == Approx(energy * 475 / 1000).epsilon(1e-12));  // the world average
  CHECK(number(row, "emissions_rate") == Approx(number(row, "emissions") / duration).epsilon(1e-9));
  CHECK(number(row, "cpu_power") > 0);

  CHECK(std::regex_match(row.at("timestamp"), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")));
  CHECK(row.at("project_name") == "codecarbon");
  CHECK(std::regex_match(row.at("run_id"),
                         std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
  CHECK(row.at("experiment_id") == "5b0fa12a-3dd7-45bb-9766-cc326314d9f1");
  for (const char* unknown : {"country_name", "country_iso_code", "region", "cloud_provider", "cloud_region",
                              "longitude", "latitude", "python_version", "gpu_model"})
    CHECK(row.at(unknown).empty());
  for (const char* zero : {"gpu_power", "gpu_energy", "water_consumed", "wue"}) CHECK(row.at(zero) == "0.0");
  CHECK(row.at("gpu_count") == "0");
  CHECK(row.at("gpu_utilization_percent") == "0");
  CHECK(row.at("pue") == "1.0");
  CHECK(row.at("on_cloud") == "N");
  CHECK(row.at("tracking_mode") == "machine");
  CHECK(row.at("codecarbon_version") == "3.3.0");
  CHECK(row.at("os").rfind("Linux-", 0) == 0);
  CHECK(row.at("cpu_count") == std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)));
  CHECK(number(row, "ram_total_size") > 0);

  // The accessors hold the row; one info message says the energy and the emissions.
  REQUIRE(tracker->final_emissions_data());
  CHECK(tracker->final_emissions_data()->cpu_energy == number(row, "cpu_energy"));
  CHECK(tracker->final_emissions() == number(row, "emissions"));
  CHECK(messages.count(tt::MessageLevel::info, "CodeCarbon: energy_consumed " + row.at("energy_consumed") +
                                                   " kWh, emissions " + row.at("emissions") + " kg") == 1);
  CHECK(messages.count(tt::MessageLevel::warning, "") == 0);

  // A second run appends its own row under the same header; the counter did not move, so no CPU energy.
  auto second = make_trainer(tiny_args(out.path()));
  second->add_callback(std::make_shared<tt::CodeCarbonCallback>(options));
  second->train();
  rows = read_rows(file);
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].at("run_id") != rows[0].at("run_id"));
  CHECK(rows[1].at("cpu_energy") == "0.0");
  CHECK(number(rows[1], "ram_energy") > 0);
}

TEST_CASE("codecarbon: without RAPL the CPU power is estimated from the load; CODECARBON_* variables configure it",
          "[trackers][codecarbon]") {
  tt_test::TempDir home("cc-home");
  const auto environment = clean_environment(home);
  Messages messages;
  const double threads = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));

  SECTION("an empty powercap root: 4 W a thread, at least a tenth of it") {
    tt_test::TempDir out("cc-load"), empty_root("cc-no-rapl");
    tt::CodeCarbonOptions options;
    options.powercap_root = empty_root.path();
    options.measure_power_secs = 0.05;
    auto trainer = make_trainer(tiny_args(out.path()));
    auto tracker = std::make_shared<tt::CodeCarbonCallback>(options);
    trainer->add_callback(tracker);
    trainer->train();
    CHECK(tracker->cpu_tracking_mode() == "cpu_load");
    const auto rows = read_rows(out / "emissions.csv");
    REQUIRE(rows.size() == 1);
    const auto& row = rows[0];
    const double cpu_power = number(row, "cpu_power"), duration = number(row, "duration");
    CHECK(cpu_power >= 0.1 * 4 * threads * 0.999);
    CHECK(cpu_power <= 4 * threads * threads);  // sockets ≤ threads
    CHECK(number(row, "cpu_energy") > 0);
    CHECK(number(row, "cpu_energy") == Approx(cpu_power * duration / 3.6e6).epsilon(0.5));
    CHECK(number(row, "energy_consumed") ==
          Approx(number(row, "cpu_energy") + number(row, "ram_energy")).epsilon(1e-12));
    CHECK(!row.at("cpu_model").empty());
  }

  SECTION("report_to codecarbon with CODECARBON_* variables; an emissions.csv of other columns is kept as .bak") {
    tt_test::TempDir out("cc-env");
    const auto trackers = [] {
      const auto all = tt::get_reporting_integration_callbacks({"all"});
      return std::count_if(all.begin(), all.end(), [](const auto& c) {
        return std::dynamic_pointer_cast<tt::CodeCarbonCallback>(c) != nullptr;
      });
    };
    if (!fs::exists(".codecarbon.config")) CHECK(trackers() == 0);
    tt_test::ScopedEnv project("CODECARBON_PROJECT_NAME", "energy, measured");
    tt_test::ScopedEnv forced_cpu("CODECARBON_FORCE_CPU_POWER", "100");  // replaces RAPL, where there is one
    tt_test::ScopedEnv intensity("CODECARBON_FORCE_CARBON_INTENSITY_G_CO2E_KWH", "100");
    tt_test::ScopedEnv pue("CODECARBON_PUE", "1.5");
    tt_test::ScopedEnv interval("codecarbon_measure_power_secs", "0.05");  // any case, as CodeCarbon reads them
    CHECK(trackers() == 1);

    const std::string old = "timestamp,project_name,duration\n2024-01-01T00:00:00,old,1.0\n";
    tt_test::write_file(out / "emissions.csv", old);
    auto trainer = make_trainer(tiny_args(out.path(), {"codecarbon"}));
    // Every 0.05 s, not every 15: 3 measurements within 25 s (a busy machine's 0.1 s; 30 s at 15 s apart).
    auto await = trainer->add_callback<AwaitMeasurements>(4, 3, std::chrono::seconds(25));
    for (const auto& callback : trainer->callback_handler().callbacks())
      if (auto found = std::dynamic_pointer_cast<tt::CodeCarbonCallback>(callback)) await->tracker = found;
    trainer->train();
    const auto tracker = trainer->pop_callback<tt::CodeCarbonCallback>();
    REQUIRE(tracker);
    CHECK(tracker->cpu_tracking_mode() == "cpu_load");
    CHECK(tracker->measurements() >= 3);
    CHECK(tt_test::read_file(out / "emissions.csv.bak") == old);
    const auto rows = read_rows(out / "emissions.csv");
    REQUIRE(rows.size() == 1);
    const auto& row = rows[0];
    CHECK(row.at("project_name") == "energy, measured");
    CHECK(row.at("pue") == "1.5");
    const double cpu_power = number(row, "cpu_power"), duration = number(row, "duration");
    CHECK(cpu_power >= 10 * 0.999);
    CHECK(cpu_power <= 100);
    CHECK_THAT(number(row, "ram_energy"), measured_over(number(row, "ram_power"), duration, 1.5));
    CHECK(number(row, "emissions") == Approx(number(row, "energy_consumed") * 0.1).epsilon(1e-12));
  }
  CHECK(messages.count(tt::MessageLevel::warning, "") == 0);
}

TEST_CASE("codecarbon: an emissions file that cannot be written never stops training and is warned about once",
          "[trackers][codecarbon]") {
  tt_test::TempDir home("cc-home");
  const auto environment = clean_environment(home);
  tt_test::TempDir base("cc-fail"), empty_root("cc-fail-no-rapl");
  auto plain = make_trainer(tiny_args(base / "plain"));
  plain->train();

  tt::CodeCarbonOptions options;
  options.powercap_root = empty_root.path();
  options.measure_power_secs = 0.05;
  const auto check = [&](const fs::path& output_dir, const std::string& reason) {
    Messages messages;
    auto trainer = make_trainer(tiny_args(base / "run"));
    options.output_dir = output_dir.string();  // CodeCarbon's own output_dir, which the Trainer does not check
    auto tracker = std::make_shared<tt::CodeCarbonCallback>(options);
    trainer->add_callback(tracker);
    REQUIRE_NOTHROW(trainer->train());
    CHECK(trainer->state.global_step == 8);
    CHECK(losses(*trainer) == losses(*plain));
    CHECK(messages.count(tt::MessageLevel::warning, "training goes on") == 1);
    CHECK(messages.count(tt::MessageLevel::warning, reason) == 2);  // the failure, then what was not delivered
    CHECK(messages.count(tt::MessageLevel::warning, "1 deliveries were not made") == 1);
    CHECK(messages.count(tt::MessageLevel::info, "CodeCarbon: energy_consumed") == 1);
    CHECK(tracker->final_emissions_data());
    tracker.reset();
    trainer.reset();  // the callback's end tries the row once more, and says it is still not written
    CHECK(messages.count(tt::MessageLevel::warning, "1 deliveries were not made") == 2);
  };

  SECTION("emissions.csv is a link to /dev/full") {
    fs::create_directories(base / "full");
    fs::create_symlink("/dev/full", base / "full" / "emissions.csv");
    check(base / "full", "No space left on device");
  }
  SECTION("output_dir is under a regular file") {
    tt_test::write_file(base / "file", "x");
    check(base / "file" / "out", "Not a directory");
  }
}

TEST_CASE("codecarbon: a killed run writes no row; its resumed run writes one for its own part",
          "[trackers][codecarbon]") {
  tt_test::TempDir home("cc-home");
  const auto environment = clean_environment(home);
  tt_test::TempDir whole("cc-whole"), killed("cc-killed");
  const std::string worker = std::string("CODECARBON_MEASURE_POWER_SECS=0.05 ") + TORCHTRAIN_TRACKER_WORKER +
                             " --report_to codecarbon --output_dir ";
  const auto uninterrupted = tt_test::run_command(worker + whole.str());
  INFO(uninterrupted.output);
  REQUIRE(uninterrupted.status == 0);
  const auto whole_rows = read_rows(whole / "emissions.csv");
  CHECK(whole_rows.size() == 1);

  const auto interrupted = tt_test::run_command(worker + killed.str() + " --kill_after_log_at 7");
  CHECK(interrupted.status == 137);  // the shell's report of SIGKILL
  CHECK(!fs::exists(killed / "emissions.csv"));
  const auto resumed = tt_test::run_command(worker + killed.str() + " --resume_from_checkpoint true");
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  const auto resumed_rows = read_rows(killed / "emissions.csv");
  REQUIRE(resumed_rows.size() == 1);
  CHECK(resumed_rows[0].at("run_id") != whole_rows.at(0).at("run_id"));
  CHECK(number(resumed_rows[0], "energy_consumed") > 0);
  // What does not measure this process's time and energy is the uninterrupted run's.
  const std::vector<std::string> measured{"timestamp", "run_id", "duration", "emissions", "emissions_rate",
                                          "cpu_power", "cpu_energy", "ram_energy", "energy_consumed",
                                          "water_consumed", "cpu_utilization_percent", "ram_utilization_percent",
                                          "ram_used_gb"};
  for (const auto& column : kColumns) {
    if (std::find(measured.begin(), measured.end(), column) != measured.end()) continue;
    INFO(column);
    CHECK(resumed_rows[0].at(column) == whole_rows.at(0).at(column));
  }
}

}  // namespace codecarbon_tests

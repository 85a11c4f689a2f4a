// SPDX-License-Identifier: MIT
// CodeCarbonCallback: the energy and CO2 emissions of training, appended to output_dir/emissions.csv as
// Hugging Face's report_to="codecarbon" has CodeCarbon's EmissionsTracker do it.
#pragma once

#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "torchtrain/detail/codecarbon_output.hpp"
#include "torchtrain/detail/codecarbon_power.hpp"
#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"
#include "torchtrain/detail/warn.hpp"
#include "torchtrain/integrations.hpp"
#include "torchtrain/tracker_retry_policy.hpp"
#include "torchtrain/trainer_callback.hpp"
#include "torchtrain/training_arguments_fields.hpp"

namespace torchtrain {

/// CodeCarbonCallback's settings. Each one left unset comes from CodeCarbon's configuration (the
/// CODECARBON_<NAME> environment variable, else ./.codecarbon.config, else ~/.codecarbon.config, section
/// [codecarbon], key <name>), else CodeCarbon's default.
struct CodeCarbonOptions {
  std::optional<std::string> project_name;   // default "codecarbon"
  std::optional<std::string> experiment_id;  // default 5b0fa12a-3dd7-45bb-9766-cc326314d9f1
  std::optional<std::string> output_dir;     // default args.output_dir (configuration files do not override it)
  std::optional<std::string> output_file;    // default "emissions.csv"
  std::optional<double> measure_power_secs;  // seconds between measurements; default 15
  /// The CPU's maximum power in W (its TDP, all sockets). Set, it replaces RAPL by the load-based estimate,
  /// as in CodeCarbon; unset, the estimate (without RAPL) takes 4 W per thread and socket.
  std::optional<double> force_cpu_power;
  std::optional<double> force_ram_power;  // W; default CodeCarbon's DIMM model of the total memory
  /// g CO2eq per kWh; default the world average CodeCarbon applies where it has no data, 475.
  std::optional<double> force_carbon_intensity_g_co2e_kwh;
  std::optional<double> pue;  // power usage effectiveness; default 1
  std::optional<double> wue;  // water usage effectiveness, L/kWh; default 0
  std::optional<bool> rapl_prefer_psys;  // the psys RAPL domain rather than the packages; default false
  std::optional<bool> save_to_file;      // default true (also off when output_methods leaves out csv)
  /// Where the RAPL counters are (intel-rapl:N folders with name, energy_uj, max_energy_range_uj).
  std::filesystem::path powercap_root = "/sys/class/powercap";
};

/// Measures the energy the machine uses while train() runs, as CodeCarbon 3.3's EmissionsTracker does in its
/// "machine" mode, and at the end of train() appends one row to output_dir/emissions.csv with CodeCarbon's 38
/// columns. The CPU energy is the gain of the RAPL package counters (psys when there is no package) read every
/// measure_power_secs, wraps past max_energy_range_uj included; where they cannot be read, the CPU power is
/// estimated as max_power × (0.1 + 0.9 × load³) from the machine load of /proc/stat. The RAM power comes from
/// CodeCarbon's DIMM model of the total memory. Emissions are energy × the carbon intensity; there is no
/// location lookup, so the location columns stay empty and the world average applies unless one is forced.
/// The end of train() also says the energy and emissions in one info message.
///
/// Each train() is measured on its own and writes its own row (a resumed run: the part after the resume; a run
/// killed before its end writes nothing). Only the local process zero measures, as in Hugging Face. A row that
/// cannot be written is warned about once and tried again at once, at the next train()'s end and when the
/// callback is destroyed, each time saying that it is not written; a measurement that cannot start is warned
/// about and writes no row. Training goes on either way.
class CodeCarbonCallback : public TrainerCallback {
 public:
  CodeCarbonCallback() : CodeCarbonCallback(CodeCarbonOptions{}) {}
  explicit CodeCarbonCallback(CodeCarbonOptions options)
      : options_(std::move(options)), outbox_("CodeCarbonCallback", TrackerRetryPolicy{}, false) {}
  CodeCarbonCallback(const CodeCarbonCallback&) = delete;
  CodeCarbonCallback& operator=(const CodeCarbonCallback&) = delete;
  ~CodeCarbonCallback() override {
    try {
      if (outbox_.pending() > 0) outbox_.finish();  // a last try at a row that could not be written
    } catch (...) {  // a destructor must not throw
    }
  }

  /// The row of the last train() that ended (CodeCarbon's final_emissions_data); nothing before.
  const std::optional<CodeCarbonEmissions>& final_emissions_data() const { return final_; }
  /// Its emissions in kg CO2eq (CodeCarbon's final_emissions).
  std::optional<double> final_emissions() const {
    return final_ ? std::optional<double>(final_->emissions) : std::nullopt;
  }
  /// "RAPL" or "cpu_load" (CodeCarbon's names) for the current or last train(); empty before the first.
  const std::string& cpu_tracking_mode() const { return cpu_mode_; }
  /// Measurements taken so far in the current train(), the one at its start included.
  std::size_t measurements() const { return meter_ ? meter_->measurements() : measured_; }
  /// The emissions file; empty before the tracker is set up.
  const std::filesystem::path& output_file() const { return output_file_; }

  void on_init_end(const Args& args, const State& state, Control&, const Context&) override {
    if (state.is_local_process_zero && !set_up_) set_up(args);
  }

  void on_train_begin(const Args& args, const State& state, Control&, const Context&) override {
    if (!state.is_local_process_zero) return;
    if (!set_up_) set_up(args);  // a callback added after the Trainer was made
    start();
  }

  void on_train_end(const Args&, const State& state, Control&, const Context&) override {
    if (!state.is_local_process_zero || !meter_) return;
    detail::MeterTotals totals;
    try {
      totals = meter_->stop();
    } catch (const std::exception& e) {
      meter_.reset();
      detail::warn(std::string("CodeCarbonCallback: cannot stop measuring: ") + e.what() +
                   "; this train() gets no row in " + output_file_.string() + ". The training's results are complete.");
      return;
    }
    measured_ = totals.measurements;
    meter_.reset();
    final_ = row(totals);
    if (save_to_file_) {
      // The row holds the whole record of this train() (and the header of a new file): never dropped.
      outbox_.send([path = output_file_, data = *final_] { detail::append_codecarbon_row(path, data); },
                   detail::TrackerOutbox::Keep::always);
      outbox_.finish();
    }
    const bool written = save_to_file_ && outbox_.pending() == 0;
    detail::send_message(MessageLevel::info,
                         "CodeCarbon: energy_consumed " + detail::python_float_repr(final_->energy_consumed) +
                             " kWh, emissions " + detail::python_float_repr(final_->emissions) + " kg CO2eq (CPU " +
                             (cpu_mode_ == "RAPL" ? "from RAPL" : "estimated from the load") + ")" +
                             (written ? "; appended to " + output_file_.string() : ""));
  }

  /// train() threw: CodeCarbon's stop() never runs, so this part is not written.
  void on_exception(const Args&, const State&, Control&, const Context&) override { meter_.reset(); }

 private:
  using Settings = std::map<std::string, detail::CodeCarbonSetting>;

  // The tracker of Hugging Face's on_init_end, EmissionsTracker(output_dir=args.output_dir).
  void set_up(const Args& args) {
    set_up_ = true;
    const Settings config = detail::codecarbon_config();
    project_name_ = text_option(options_.project_name, config, "project_name", "codecarbon");
    experiment_id_ = text_option(options_.experiment_id, config, "experiment_id", detail::kCodeCarbonDefaultExperimentId);
    const std::string file = text_option(options_.output_file, config, "output_file", "emissions.csv");
    output_file_ = std::filesystem::path(options_.output_dir.value_or(args.output_dir)) / file;
    measure_power_secs_ = number_option(options_.measure_power_secs, config, "measure_power_secs", 15, 1e-3, 86400);
    force_cpu_power_ = optional_number(options_.force_cpu_power, config, "force_cpu_power", 0);
    force_ram_power_ = optional_number(options_.force_ram_power, config, "force_ram_power", 0);
    intensity_ = optional_number(options_.force_carbon_intensity_g_co2e_kwh, config,
                                 "force_carbon_intensity_g_co2e_kwh", 0)
                     .value_or(detail::kCodeCarbonWorldAverageIntensity);
    pue_ = number_option(options_.pue, config, "pue", 1, 0, 1e9);
    wue_ = number_option(options_.wue, config, "wue", 0, 0, 1e9);
    prefer_psys_ = flag_option(options_.rapl_prefer_psys, config, "rapl_prefer_psys", false);
    save_to_file_ = flag_option(options_.save_to_file, config, "save_to_file", true);
    if (!options_.save_to_file && config.count("output_methods"))
      save_to_file_ = config.at("output_methods").value.find("csv") != std::string::npos;
    if (config.count("tracking_mode") && config.at("tracking_mode").value != "machine")
      detail::warn("CodeCarbonCallback: " + config.at("tracking_mode").source + " sets tracking_mode to \"" +
                   config.at("tracking_mode").value + "\"; only \"machine\" is measured, so the row is the whole "
                   "machine's. Remove the setting to silence this.");
  }

  // A meter that cannot start (no thread to be had) costs this train() its row, never the training.
  void start() {
    meter_.reset();
    measured_ = 0;
    try {
      start_meter();
    } catch (const std::exception& e) {
      meter_.reset();
      detail::warn(std::string("CodeCarbonCallback: cannot start measuring: ") + e.what() +
                   "; this train() gets no row in " + output_file_.string() + ". Training goes on.");
    }
  }

  void start_meter() {
    if (!machine_) machine_ = detail::probe_machine();
    std::string problem;
    detail::RaplCounters rapl;
    if (!force_cpu_power_) rapl = detail::RaplCounters::discover(options_.powercap_root, prefer_psys_, problem);
    if (!problem.empty() && rapl.empty() && !rapl_warned_) {
      rapl_warned_ = true;
      detail::warn("CodeCarbonCallback: " + problem + "; the CPU power is estimated from the load meanwhile");
    }
    detail::MeterSettings settings;
    settings.measure_power_secs = measure_power_secs_;
    settings.ram_power_w = force_ram_power_.value_or(detail::ram_power_watts(machine_->ram_total_gb, machine_->arm));
    settings.pue = pue_;
    settings.wue = wue_;
    if (rapl.empty()) settings.cpu_max_power_w = force_cpu_power_.value_or(detail::default_cpu_max_power(*machine_));
    cpu_mode_ = rapl.empty() ? "cpu_load" : "RAPL";
    run_id_ = detail::uuid4();
    auto meter = std::make_unique<detail::EnergyMeter>(settings, std::move(rapl));
    meter->start();
    meter_ = std::move(meter);
  }

  CodeCarbonEmissions row(const detail::MeterTotals& t) const {
    CodeCarbonEmissions d;
    d.timestamp = detail::time_stamp("%Y-%m-%dT%H:%M:%S");
    d.project_name = project_name_;
    d.run_id = run_id_;
    d.experiment_id = experiment_id_;
    d.duration = t.duration_s;
    d.emissions = t.energy_kwh * intensity_ / 1000.0;
    d.emissions_rate = t.duration_s > 0 ? d.emissions / t.duration_s : 0;
    d.cpu_power = t.cpu_power_w;
    d.ram_power = t.ram_power_w;
    d.cpu_energy = t.cpu_energy_kwh;
    d.ram_energy = t.ram_energy_kwh;
    d.energy_consumed = t.energy_kwh;
    d.water_consumed = t.water_l;
    d.os = machine_->os;
    d.codecarbon_version = detail::kCodeCarbonVersion;
    d.cpu_count = machine_->cpu_count;
    // CodeCarbon names a CPU it cannot identify "Unknown" when it estimates.
    d.cpu_model = machine_->cpu_model.empty() && cpu_mode_ == "cpu_load" ? "Unknown" : machine_->cpu_model;
    d.ram_total_size = machine_->ram_total_gb;
    d.tracking_mode = "machine";
    d.cpu_utilization_percent = t.cpu_utilization;
    d.ram_utilization_percent = t.ram_utilization;
    d.ram_used_gb = t.ram_used_gb;
    d.pue = pue_;
    d.wue = wue_;
    return d;
  }

  static std::string text_option(const std::optional<std::string>& given, const Settings& config, const char* key,
                                 const char* fallback) {
    if (given) return *given;
    const auto found = config.find(key);
    return found != config.end() ? found->second.value : fallback;
  }

  // A number from the configuration; a value that is not one, or out of [low, high], is warned about and
  // left out (CodeCarbon logs an error and ignores it).
  static std::optional<double> optional_number(const std::optional<double>& given, const Settings& config,
                                               const char* key, double low, double high = 1e12) {
    if (given) return given;
    const auto found = config.find(key);
    if (found == config.end()) return std::nullopt;
    const std::string& text = found->second.value;
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value) || value < low || value > high) {
      detail::warn("CodeCarbonCallback: " + found->second.source + " gives " + key + " = \"" + text +
                   "\", not a number from " + detail::python_float_repr(low) + " to " +
                   detail::python_float_repr(high) + "; it is ignored. Fix or remove it.");
      return std::nullopt;
    }
    return value;
  }

  static double number_option(const std::optional<double>& given, const Settings& config, const char* key,
                              double fallback, double low, double high) {
    return optional_number(given, config, key, low, high).value_or(fallback);
  }

  // CodeCarbon's booleans: "true" in any case is true, anything else false.
  static bool flag_option(const std::optional<bool>& given, const Settings& config, const char* key, bool fallback) {
    if (given) return *given;
    const auto found = config.find(key);
    return found != config.end() ? detail::lower_case(found->second.value) == "true" : fallback;
  }

  CodeCarbonOptions options_;
  bool set_up_ = false, rapl_warned_ = false, prefer_psys_ = false, save_to_file_ = true;
  std::string project_name_, experiment_id_, run_id_, cpu_mode_;
  std::filesystem::path output_file_;
  double measure_power_secs_ = 15, intensity_ = detail::kCodeCarbonWorldAverageIntensity, pue_ = 1, wue_ = 0;
  std::optional<double> force_cpu_power_, force_ram_power_;
  std::optional<detail::MachineInfo> machine_;
  std::unique_ptr<detail::EnergyMeter> meter_;
  std::size_t measured_ = 0;
  std::optional<CodeCarbonEmissions> final_;
  detail::TrackerOutbox outbox_;
};

namespace detail {
inline const bool kCodeCarbonRegistered = register_reporting_integration(
    {"codecarbon", [] { return std::make_shared<CodeCarbonCallback>(); }, [] { return codecarbon_configured(); }});
}  // namespace detail

}  // namespace torchtrain

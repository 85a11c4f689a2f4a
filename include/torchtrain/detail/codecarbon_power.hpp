// SPDX-License-Identifier: MIT
// What CodeCarbonCallback measures, the way CodeCarbon 3.x does: the CPU packages' RAPL energy counters, or an
// estimate from the CPU's power and the machine load, the RAM power of CodeCarbon's DIMM model, and a thread
// that samples them all.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "torchtrain/detail/tracker_logs.hpp"

namespace torchtrain::detail {

inline constexpr double kCodeCarbonJoulesToKwh = 2.77778e-7;  // CodeCarbon's Energy.JOULES_TO_KWH, as it is
inline constexpr double kBytesPerGb = 1024.0 * 1024.0 * 1024.0;
inline constexpr double kCodeCarbonPowerPerThread = 4;  // W, DEFAULT_POWER_PER_CORE for a CPU it does not know
inline constexpr double kCodeCarbonPowerConstant = 85;  // W, POWER_CONSTANT when not even the model is known

inline double micro_joules_to_kwh(double micro_joules) { return micro_joules * 1e-6 * kCodeCarbonJoulesToKwh; }

/// The bytes of a small (sysfs, procfs) file, nothing when it cannot be read; `error` gets errno then.
inline std::optional<std::string> read_small_file(const std::filesystem::path& path, int* error = nullptr) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error) *error = errno;
    return std::nullopt;
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (error) *error = errno;
      ::close(fd);
      return std::nullopt;
    }
    break;
  }
  ::close(fd);
  return text;
}

inline std::string trimmed(const std::string& text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

/// A file holding one number (energy_uj), nothing when it cannot be read or is not a number.
inline std::optional<double> read_number_file(const std::filesystem::path& path, int* error = nullptr) {
  const auto text = read_small_file(path, error);
  if (!text) return std::nullopt;
  const std::string value = trimmed(*text);
  char* end = nullptr;
  const double number = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size()) {
    if (error) *error = EINVAL;
    return std::nullopt;
  }
  return number;
}

// ---- RAPL (CodeCarbon's core/cpu.py IntelRAPL and core/rapl.py RAPLFile) -------------------------------------

/// One RAPL domain whose energy CodeCarbon counts as the CPU's: a package (its name contains "package"), or
/// psys.
struct RaplDomain {
  std::string name;  // its `name` file, e.g. package-0
  std::filesystem::path energy_file;
  double max_energy_uj = 0;  // max_energy_range_uj; 0 when unreadable, which (as in CodeCarbon) misses wraps
  double last_uj = 0;        // the last reading
  bool mmio = false;         // under intel-rapl-mmio, which CodeCarbon prefers for a name found twice
};

/// The CPU domains under a powercap root and the energy their counters gained between reads.
class RaplCounters {
 public:
  /// Looks for intel-rapl* domains (folders named with a ':' holding energy_uj) in `root` and one level into
  /// its intel-rapl* folders, as CodeCarbon scans /sys/class/powercap. Package domains are used, or psys when
  /// `prefer_psys` or when there is no package; one domain per name, intel-rapl-mmio preferred. `problem`
  /// says why none could be used when a counter exists but cannot be read.
  static RaplCounters discover(const std::filesystem::path& root, bool prefer_psys, std::string& problem) {
    std::vector<std::filesystem::path> dirs;
    std::error_code ec;
    const auto sorted_children = [&](const std::filesystem::path& dir) {
      std::vector<std::filesystem::path> children;
      for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) children.push_back(entry.path());
      std::sort(children.begin(), children.end());
      return children;
    };
    const auto is_domain = [&](const std::filesystem::path& dir) {
      return dir.filename().string().find(':') != std::string::npos && std::filesystem::is_directory(dir, ec) &&
             std::filesystem::exists(dir / "energy_uj", ec);
    };
    for (const auto& entry : sorted_children(root)) {
      if (entry.filename().string().rfind("intel-rapl", 0) != 0 || !std::filesystem::is_directory(entry, ec)) continue;
      if (is_domain(entry)) dirs.push_back(entry);
      for (const auto& sub : sorted_children(entry))
        if (is_domain(sub)) dirs.push_back(sub);
    }

    std::vector<RaplDomain> packages, psys;
    for (const auto& dir : dirs) {
      int error = 0;
      if (!read_number_file(dir / "energy_uj", &error)) {
        if ((error == EACCES || error == EPERM) && problem.empty())
          problem = "cannot read " + (dir / "energy_uj").string() + " (" + std::strerror(error) +
                    "); grant read access with: sudo chmod -R a+r /sys/class/powercap/*";
        continue;
      }
      RaplDomain domain;
      domain.name = trimmed(read_small_file(dir / "name").value_or(""));
      if (domain.name.empty()) domain.name = dir.filename().string();
      domain.energy_file = dir / "energy_uj";
      domain.mmio = dir.string().find("intel-rapl-mmio") != std::string::npos;
      const std::string lowered = lower_case(domain.name);
      const bool package = lowered.find("package") != std::string::npos;
      if (!package && lowered != "psys") continue;
      domain.max_energy_uj = read_number_file(dir / "max_energy_range_uj").value_or(0);
      (package ? packages : psys).push_back(std::move(domain));
    }
    const std::vector<RaplDomain>& chosen = (prefer_psys && !psys.empty()) || packages.empty() ? psys : packages;

    RaplCounters counters;
    std::map<std::string, std::size_t> by_name;
    for (const auto& domain : chosen) {
      const auto known = by_name.find(domain.name);
      if (known == by_name.end()) {
        by_name[domain.name] = counters.domains_.size();
        counters.domains_.push_back(domain);
      } else if (domain.mmio && !counters.domains_[known->second].mmio) {
        counters.domains_[known->second] = domain;
      }
    }
    return counters;
  }

  bool empty() const { return domains_.empty(); }

  /// Reads every counter as the starting point.
  void start() {
    for (auto& domain : domains_)
      if (const auto value = read_number_file(domain.energy_file)) domain.last_uj = *value;
  }

  /// The µJ all domains gained since the last read. A reading below the previous one is a wrap of the counter
  /// past max_energy_range_uj. A counter that cannot be read this time keeps its last reading.
  double delta_uj() {
    double total = 0;
    for (auto& domain : domains_) {
      const auto value = read_number_file(domain.energy_file);
      if (!value) continue;
      const double now = *value < domain.last_uj ? *value + domain.max_energy_uj : *value;
      total += now - domain.last_uj;
      domain.last_uj = *value;
    }
    return total;
  }

 private:
  std::vector<RaplDomain> domains_;
};

// ---- The machine: /proc, as psutil, py-cpuinfo and platform read it ------------------------------------------

/// psutil.cpu_percent(interval=None) of the whole machine from /proc/stat: the busy share of the CPU time since
/// the previous call, rounded to 0.1 %; 0 on the first call.
class CpuLoad {
 public:
  double percent() {
    const auto now = read_times();
    if (!now) return 0;
    const auto before = last_.value_or(*now);
    last_ = now;
    std::array<double, 10> delta{};
    for (std::size_t i = 0; i < delta.size(); ++i) delta[i] = std::max(0.0, (*now)[i] - before[i]);
    // user nice system idle iowait irq softirq steal, without guest and guest_nice (already in user and nice)
    double all = 0;
    for (std::size_t i = 0; i < 8; ++i) all += delta[i];
    const double busy = all - delta[3] - delta[4];
    if (all <= 0) return 0;
    return std::nearbyint(busy / all * 100 * 10) / 10;
  }

 private:
  static std::optional<std::array<double, 10>> read_times() {
    const auto text = read_small_file("/proc/stat");
    if (!text || text->rfind("cpu ", 0) != 0) return std::nullopt;
    std::array<double, 10> times{};
    const char* p = text->c_str() + 4;
    for (auto& t : times) {
      char* end = nullptr;
      t = std::strtod(p, &end);
      if (end == p) break;
      p = end;
    }
    return times;
  }

  std::optional<std::array<double, 10>> last_;
};

/// psutil.virtual_memory() from /proc/meminfo, in bytes.
struct MemoryInfo {
  double total = 0, available = 0, used = 0;
  double percent() const {
    return total > 0 ? std::nearbyint((total - available) / total * 100 * 10) / 10 : 0;
  }
};

inline MemoryInfo read_memory_info() {
  std::map<std::string, double> fields;
  const std::string text = read_small_file("/proc/meminfo").value_or("");
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string line = text.substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) fields[line.substr(0, colon)] = std::strtod(line.c_str() + colon + 1, nullptr) * 1024;
    start = end + 1;
  }
  const auto field = [&](const char* name) { return fields.count(name) ? fields[name] : 0.0; };
  MemoryInfo info;
  info.total = field("MemTotal");
  const double free = field("MemFree"), buffers = field("Buffers"), cached = field("Cached") + field("SReclaimable");
  info.available = fields.count("MemAvailable") ? field("MemAvailable") : free + buffers + cached;
  info.used = info.total - free - buffers - cached;
  if (info.used < 0) info.used = info.total - free;
  return info;
}

/// What CodeCarbon's rows say about the machine.
struct MachineInfo {
  std::string os;         // platform.platform(): Linux-<release>-<machine>-with-glibc<version>
  std::string cpu_model;  // /proc/cpuinfo "model name"; empty when it has none
  int cpu_count = 1;      // logical CPUs online (psutil.cpu_count())
  int cpu_sockets = 1;    // physical packages (lscpu's Socket(s))
  double ram_total_gb = 0;
  bool arm = false;
};

inline MachineInfo probe_machine() {
  MachineInfo info;
  struct utsname names {};
  if (::uname(&names) == 0) {
    const std::string machine = lower_case(names.machine);
    info.arm = machine.find("arm") != std::string::npos || machine.find("aarch") != std::string::npos;
    std::vector<std::string> parts{names.sysname, names.release, names.machine};
    char libc[64] = {0};
    if (::confstr(_CS_GNU_LIBC_VERSION, libc, sizeof libc) > 0) {
      std::string version = libc;  // "glibc 2.36"
      version.erase(std::remove(version.begin(), version.end(), ' '), version.end());
      parts.push_back("with");
      parts.push_back(version);
    }
    std::string os;
    for (const auto& part : parts)
      if (!part.empty()) os += (os.empty() ? "" : "-") + part;
    for (char& c : os) {  // platform's clean-up of characters that do not belong in a file name
      if (c == ' ') c = '_';
      if (std::strchr("/\\:;\"()", c) != nullptr) c = '-';
    }
    info.os = os;
  }
  const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  info.cpu_count = online > 0 ? static_cast<int>(online) : 1;
  std::set<std::string> sockets;
  const std::string cpuinfo = read_small_file("/proc/cpuinfo").value_or("");
  std::size_t start = 0;
  while (start < cpuinfo.size()) {
    const std::size_t end = std::min(cpuinfo.find('\n', start), cpuinfo.size());
    const std::string line = cpuinfo.substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      const std::string key = trimmed(line.substr(0, colon)), value = trimmed(line.substr(colon + 1));
      if ((key == "model name" || key == "Model") && info.cpu_model.empty()) info.cpu_model = value;
      if (key == "physical id") sockets.insert(value);
    }
    start = end + 1;
  }
  if (!sockets.empty()) info.cpu_sockets = static_cast<int>(sockets.size());
  info.ram_total_gb = read_memory_info().total / kBytesPerGb;
  return info;
}

// ---- The power models (CodeCarbon's external/hardware.py CPU, external/ram.py RAM) ---------------------------

/// The CPU power at `load_percent` of the machine: 10 % of the maximum when idle, rising with the cube of the load.
inline double cpu_load_power(double max_power_w, double load_percent) {
  const double load = load_percent / 100.0;
  return max_power_w * (0.1 + 0.9 * load * load * load);
}

/// The maximum CPU power CodeCarbon assumes for a CPU missing from its table: 4 W per thread for each socket,
/// or 85 W when the model is not known at all.
inline double default_cpu_max_power(const MachineInfo& machine) {
  if (machine.cpu_model.empty()) return kCodeCarbonPowerConstant;
  return machine.cpu_count * kCodeCarbonPowerPerThread * machine.cpu_sockets;
}

/// CodeCarbon's guess of the DIMMs behind `total_gb` of memory.
inline int estimate_dimm_count(double total_gb) {
  if (total_gb <= 2) return 1;
  if (total_gb <= 16) return 2;
  if (total_gb <= 64) return 4;
  if (total_gb <= 128) return 8;
  for (const double dimm_gb : {128.0, 64.0, 32.0, 16.0, 8.0, 4.0})
    if (dimm_gb <= total_gb / 8) return static_cast<int>(std::min(32.0, std::ceil(total_gb / dimm_gb)));
  return 8;
}

/// CodeCarbon's RAM power: 5 W a DIMM on x86 (at least 10 W), 1.5 W on ARM (at least 3 W); DIMMs past the 4th,
/// 8th and 16th count 0.9, 0.8 and 0.7 of that.
inline double ram_power_watts(double total_gb, bool arm) {
  const int dimms = estimate_dimm_count(total_gb);
  const double per_dimm = arm ? 1.5 : 5.0, minimum = arm ? 3.0 : 2 * per_dimm;
  double power = 0;
  for (int i = 1; i <= dimms; ++i) power += per_dimm * (i <= 4 ? 1.0 : i <= 8 ? 0.9 : i <= 16 ? 0.8 : 0.7);
  return std::max(minimum, power);
}

// ---- The sampler (CodeCarbon's BaseEmissionsTracker._measure_power_and_energy and _monitor_power) ------------

struct MeterSettings {
  double measure_power_secs = 15;
  double monitor_secs = 1;                 // CodeCarbon's _scheduler_monitor_power interval
  std::optional<double> cpu_max_power_w;   // the estimate's maximum; unused with RAPL
  double ram_power_w = 0;
  double pue = 1, wue = 0;
};

/// What a meter measured from start() to stop(). Energies in kWh with the PUE applied, powers in W averaged
/// over the measurements, utilisations averaged over the monitor samples (nothing when none was taken).
struct MeterTotals {
  double duration_s = 0;
  double cpu_energy_kwh = 0, ram_energy_kwh = 0, energy_kwh = 0, water_l = 0;
  double cpu_power_w = 0, ram_power_w = 0;
  std::optional<double> cpu_utilization, ram_utilization, ram_used_gb;
  std::size_t measurements = 0;
};

/// Measures the CPU and RAM energy from start() to stop(): a thread measures every measure_power_secs (so that
/// a RAPL counter wrapping between two reads is seen) and takes a monitor sample (load, memory) every second;
/// start() and stop() measure too. With RAPL counters the CPU energy is their gain; without, the CPU power is
/// the mean of the load-based estimates since the last measurement, times its duration.
class EnergyMeter {
 public:
  EnergyMeter(MeterSettings settings, RaplCounters rapl) : settings_(settings), rapl_(std::move(rapl)) {}
  EnergyMeter(const EnergyMeter&) = delete;
  EnergyMeter& operator=(const EnergyMeter&) = delete;
  ~EnergyMeter() {
    try {
      halt();
    } catch (...) {  // a destructor must not throw; the thread is gone or never ran
    }
  }

  bool uses_rapl() const { return !rapl_.empty(); }
  /// Measurements made so far, the one of start() included.
  std::size_t measurements() const { return count_.load(); }

  /// Takes the first measurement and starts the thread; throws std::system_error when it cannot be started.
  void start() {
    std::lock_guard<std::mutex> lock(mutex_);
    start_ = last_measured_ = Clock::now();
    if (uses_rapl()) {
      rapl_.start();
    } else {
      // psutil's first cpu_percent blocks 50 ms so that the first sample covers some time.
      power_load_.percent();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    utilization_load_.percent();
    measure_locked();
    thread_ = std::thread([this] { run(); });
  }

  /// Stops the thread, measures what is left (unless the last measurement is under 50 ms old) and returns
  /// the totals.
  MeterTotals stop() {
    halt();
    std::lock_guard<std::mutex> lock(mutex_);
    if (seconds(Clock::now() - last_measured_) >= 0.05) measure_locked();
    MeterTotals totals = totals_;
    totals.duration_s = seconds(Clock::now() - start_);
    const auto n = static_cast<double>(totals.measurements);
    if (n > 0) {
      totals.cpu_power_w = cpu_power_sum_ / n;
      totals.ram_power_w = ram_power_sum_ / n;
    }
    const auto mean = [](const std::vector<double>& v) -> std::optional<double> {
      if (v.empty()) return std::nullopt;
      double sum = 0;
      for (double x : v) sum += x;
      return sum / static_cast<double>(v.size());
    };
    totals.cpu_utilization = mean(cpu_utilization_);
    totals.ram_utilization = mean(ram_utilization_);
    totals.ram_used_gb = mean(ram_used_gb_);
    return totals;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

  void halt() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto every = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };
    auto next_monitor = start_ + every(settings_.monitor_secs);
    auto next_measure = last_measured_ + every(settings_.measure_power_secs);
    while (!stopping_) {
      wake_.wait_until(lock, std::min(next_monitor, next_measure), [this] { return stopping_; });
      if (stopping_) break;
      // A probe that fails leaves its sample out (the training is never disturbed) and is next tried on time,
      // not at once: each schedule moves on whether its probe threw or not.
      const auto now = Clock::now();
      if (now >= next_monitor) {
        next_monitor = std::max(next_monitor + every(settings_.monitor_secs), now);
        try {
          monitor_locked();
        } catch (...) {
        }
      }
      if (now >= next_measure) {
        try {
          measure_locked();
        } catch (...) {
        }
        next_measure = Clock::now() + every(settings_.measure_power_secs);
      }
    }
  }

  void monitor_locked() {
    if (!uses_rapl()) cpu_power_samples_.push_back(load_power());
    cpu_utilization_.push_back(utilization_load_.percent());
    const MemoryInfo memory = read_memory_info();
    ram_utilization_.push_back(memory.percent());
    ram_used_gb_.push_back(memory.used / kBytesPerGb);
  }

  double load_power() { return cpu_load_power(settings_.cpu_max_power_w.value_or(0), power_load_.percent()); }

  void measure_locked() {
    const auto now = Clock::now();
    const double hours = seconds(now - last_measured_) / 3600.0;
    double cpu_power = 0, cpu_energy = 0;
    if (uses_rapl()) {
      cpu_energy = micro_joules_to_kwh(rapl_.delta_uj());
      cpu_power = hours > 0 ? cpu_energy / hours * 1000 : 0;
    } else {
      cpu_power_samples_.push_back(load_power());
      double sum = 0;
      for (double p : cpu_power_samples_) sum += p;
      cpu_power = sum / static_cast<double>(cpu_power_samples_.size());
      cpu_power_samples_.clear();
      cpu_energy = cpu_power / 1000 * hours;
    }
    const double ram_energy = settings_.ram_power_w / 1000 * hours;
    cpu_energy *= settings_.pue;
    const double pue_ram_energy = ram_energy * settings_.pue;
    totals_.cpu_energy_kwh += cpu_energy;
    totals_.ram_energy_kwh += pue_ram_energy;
    totals_.energy_kwh += cpu_energy + pue_ram_energy;
    totals_.water_l += settings_.wue * (cpu_energy + pue_ram_energy);
    cpu_power_sum_ += cpu_power;
    ram_power_sum_ += settings_.ram_power_w;
    ++totals_.measurements;
    count_.store(totals_.measurements);
    last_measured_ = now;
  }

  const MeterSettings settings_;
  RaplCounters rapl_;
  CpuLoad power_load_, utilization_load_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  Clock::time_point start_{}, last_measured_{};
  MeterTotals totals_;
  double cpu_power_sum_ = 0, ram_power_sum_ = 0;
  std::vector<double> cpu_power_samples_, cpu_utilization_, ram_utilization_, ram_used_gb_;
  std::atomic<std::size_t> count_{0};
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace torchtrain::detail

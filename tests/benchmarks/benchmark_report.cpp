// Gathers the results run_benchmarks.sh collected in one folder into benchmarks.json and prints them as the
// Markdown tables of the README's Performance section, each figure next to its target.
//   benchmark_report <results folder>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

json read(const fs::path& dir, const char* name) {
  std::ifstream in(dir / (std::string(name) + ".json"));
  if (!in) return nullptr;
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

std::string fixed(double value, int decimals) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string verdict(bool met) { return met ? "met" : "**missed**"; }

// The median per-event time of `name` in Google Benchmark's JSON, in nanoseconds.
double median_ns(const json& dispatch, const std::string& name) {
  for (const auto& b : dispatch.at("benchmarks"))
    if (b.value("run_name", "") == name && b.value("aggregate_name", "") == "median") return b.at("cpu_time");
  throw std::runtime_error("dispatch results lack " + name);
}

// Rows of the loss scaler (loop_overhead) and of bf16 (real_models) compare the Trainer with itself.
bool scaler_row(const json& r) { return r.contains("scaled_steps_per_second"); }
bool bf16_row(const json& r) { return r.contains("bf16_samples_per_second"); }

void loop_table(const json& rows, std::ostream& out) {
  out << "| model | configuration | hand-written steps/s | Trainer steps/s | ratio |\n|---|---|---:|---:|---:|\n";
  for (const auto& r : rows)
    if (!scaler_row(r))
      out << "| " << r.at("model").get<std::string>() << " | " << r.at("configuration").get<std::string>() << " | "
        << fixed(r.at("hand_written_steps_per_second"), 0) << " | " << fixed(r.at("trainer_steps_per_second"), 0)
        << " | " << fixed(r.at("ratio"), 3) << " |\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: benchmark_report <results folder>\n");
    return 2;
  }
  const fs::path dir = argv[1];
  json all;
  for (const char* part : {"machine", "loop_overhead", "real_models", "callgrind", "dispatch", "state_scale",
                           "compile_cost", "python", "checkpoint_io", "streaming"})
    if (auto value = read(dir, part); !value.is_null() && !value.is_discarded()) all[part] = std::move(value);

  std::ostringstream out;
  if (all.contains("machine")) out << "Machine: " << all["machine"].at("description").get<std::string>() << ".\n\n";
  out << "| target | measured | goal | |\n|---|---:|---:|---|\n";
  if (all.contains("loop_overhead")) {
    const double ratio = all["loop_overhead"].at(0).at("ratio");
    out << "| Trainer / hand-written steps/s, tiny MLP, log every 500 | " << fixed(ratio, 3) << " | ≥ 0.97 | "
        << verdict(ratio >= 0.97) << " |\n";
    for (const auto& r : all["loop_overhead"])
      if (scaler_row(r)) {
        const double scaled = r.at("ratio");
        out << "| Trainer with a `GradScaler` / without, steps/s, tiny MLP, log every 500 | " << fixed(scaled, 3)
            << " | ≥ 0.97 | " << verdict(scaled >= 0.97) << " |\n";
      }
  }
  if (all.contains("real_models")) {
    for (const auto& r : all["real_models"]) {
      if (bf16_row(r)) {
        out << "| bf16 / fp32 samples/s, " << r.at("model").get<std::string>() << " | " << fixed(r.at("ratio"), 2)
            << " | published | |\n";
        continue;
      }
      const int workers = r.at("dataloader_num_workers");
      const double ratio = r.at("ratio"), goal = workers == 0 ? 0.98 : 1.0;
      out << "| Trainer / hand-written samples/s, " << r.at("model").get<std::string>()
          << (workers == 0 ? "" : ", " + std::to_string(workers) + " DataLoader workers") << " | " << fixed(ratio, 3)
          << " | ≥ " << fixed(goal, 2) << " | " << verdict(ratio >= goal) << " |\n";
    }
  }
  if (all.contains("callgrind")) {
    const double ratio = all["callgrind"].at("ratio");
    out << "| Trainer / hand-written instructions per step (callgrind), tiny MLP | " << fixed(ratio, 3)
        << " | ≤ 1.05 | " << verdict(ratio <= 1.05) << " |\n";
  }
  if (all.contains("dispatch")) {
    const double per = (median_ns(all["dispatch"], "on_step_end/100") - median_ns(all["dispatch"], "on_step_end/0")) / 100;
    all["dispatch_ns_per_callback"] = per;
    out << "| one event to one callback | " << fixed(per, 2) << " ns | ≤ 5 ns | " << verdict(per <= 5) << " |\n";
  }
  if (all.contains("state_scale")) {
    const auto& s = all["state_scale"];
    const double save = s.at("trainer_state").at(2).at("save_seconds");
    out << "| trainer_state.json with 100k log entries, save | " << fixed(save, 3) << " s | ≤ 0.5 s | "
        << verdict(save <= 0.5) << " |\n";
    const double first = s.at("resume_skip").at(0).at("seconds"), last = s.at("resume_skip").at(2).at("seconds");
    out << "| resume at batch 10^6 / at batch 1 | " << fixed(last / first, 2) << " | flat (≤ 1.2) | "
        << verdict(last / first <= 1.2) << " |\n";
  }
  if (all.contains("streaming")) {
    const auto& s = all["streaming"];
    const double ratio = s.at("throughput").at("ratio");
    out << "| CsvStream / reading the file by hand, MB/s | " << fixed(ratio, 2) << " | ≥ 0.90 | " << verdict(ratio >= 0.9)
        << " |\n";
    const auto& r = s.at("resume");
    const double flat = r.at("saved_100000_s").get<double>() / r.at("saved_10_s").get<double>();
    out << "| stream resume at step 10^5 / at step 10 | " << fixed(flat, 2) << " | flat (≤ 1.2) | "
        << verdict(flat <= 1.2) << " |\n";
    if (s.contains("peak_rss_mb")) {
      const double grown = s.at("peak_rss_mb").at("1000").get<double>() / s.at("peak_rss_mb").at("100").get<double>();
      out << "| peak memory training through a 1 GB / a 100 MB CSV stream | " << fixed(grown, 3) << " | ≤ 1.10 | "
          << verdict(grown <= 1.1) << " |\n";
    }
  }
  if (all.contains("compile_cost")) {
    const double ratio = all["compile_cost"].at("ratio");
    out << "| compile time, Trainer TU / torch/torch.h TU, header-only | " << fixed(ratio, 2) << " | ≤ 2.00 | "
        << verdict(ratio <= 2.0) << " |\n";
    if (all["compile_cost"].contains("compiled_ratio")) {
      const double compiled = all["compile_cost"].at("compiled_ratio");
      out << "| compile time, Trainer TU / torch/torch.h TU, with torchtrain::compiled | " << fixed(compiled, 2)
          << " | ≤ 1.40 | " << verdict(compiled <= 1.4) << " |\n";
    }
    if (all["compile_cost"].contains("compiled_own_headers_ratio"))
      out << "| the same, including only the headers the file uses instead of `torchtrain.hpp` | "
          << fixed(all["compile_cost"].at("compiled_own_headers_ratio"), 2) << " | | |\n";
  }

  if (all.contains("loop_overhead")) {
    out << "\nLoop overhead (median of repeats, one intra-op thread, thread CPU time):\n\n";
    loop_table(all["loop_overhead"], out);
  }
  if (all.contains("real_models")) {
    out << "\nReal models on real data (median of repeats, one intra-op thread, wall clock):\n\n"
           "| model | DataLoader workers | hand-written samples/s | Trainer samples/s | ratio |\n"
           "|---|---:|---:|---:|---:|\n";
    for (const auto& r : all["real_models"])
      if (!bf16_row(r))
        out << "| " << r.at("model").get<std::string>() << " | " << r.at("dataloader_num_workers") << " | "
            << fixed(r.at("hand_written_samples_per_second"), 1) << " | "
            << fixed(r.at("trainer_samples_per_second"), 1) << " | " << fixed(r.at("ratio"), 3) << " |\n";
    out << "\nThe same Trainer with bf16 autocast against float32:\n\n"
           "| model | fp32 samples/s | bf16 samples/s | bf16 / fp32 |\n|---|---:|---:|---:|\n";
    for (const auto& r : all["real_models"])
      if (bf16_row(r))
        out << "| " << r.at("model").get<std::string>() << " | " << fixed(r.at("fp32_samples_per_second"), 1) << " | "
            << fixed(r.at("bf16_samples_per_second"), 1) << " | " << fixed(r.at("ratio"), 2) << " |\n";
  }
  if (all.contains("python") && all.contains("loop_overhead")) {
    const double python = all["python"].at("steps_per_second"),
                 hand = all["loop_overhead"].at(0).at("hand_written_steps_per_second");
    out << "\nThe same tiny-MLP loop hand-written in Python (PyTorch " << all["python"].at("torch").get<std::string>()
        << "): " << fixed(python, 0) << " steps/s, " << fixed(hand / python, 2)
        << "× slower than the C++ loops above.\n";
  }
  if (all.contains("callgrind")) {
    const auto& c = all["callgrind"];
    out << "\nInstructions per step under callgrind (difference of a " << c.at("short_epochs") << "- and a "
        << c.at("long_epochs") << "-epoch run, so start-up cancels): hand-written "
        << fixed(c.at("hand_per_step"), 0) << ", Trainer " << fixed(c.at("trainer_per_step"), 0) << ".\n";
  }
  if (all.contains("dispatch")) {
    out << "\nEvent dispatch (Google Benchmark, median CPU time per event):\n\n| callbacks | ns per event |\n|---:|---:|\n";
    for (int n : {0, 1, 10, 100})
      out << "| " << n << " | " << fixed(median_ns(all["dispatch"], "on_step_end/" + std::to_string(n)), 1) << " |\n";
  }
  if (all.contains("state_scale")) {
    const auto& s = all["state_scale"];
    out << "\nState at scale:\n\n| log_history entries | file MB | save s | load s | whole checkpoint s |\n"
           "|---:|---:|---:|---:|---:|\n";
    for (const auto& r : s.at("trainer_state"))
      out << "| " << r.at("log_history_entries") << " | " << fixed(r.at("megabytes"), 2) << " | "
          << fixed(r.at("save_seconds"), 4) << " | " << fixed(r.at("load_seconds"), 4) << " | "
          << fixed(r.at("checkpoint_save_seconds"), 4) << " |\n";
    out << "\n| training steps (log every 100) | resident MB | log_history entries |\n|---:|---:|---:|\n";
    for (const auto& r : s.at("memory"))
      out << "| " << r.at("steps") << " | " << fixed(r.at("resident_kilobytes").get<double>() / 1024, 1) << " | "
          << r.at("log_history_entries") << " |\n";
    out << "\n| resume at batch | seconds (load + one step) |\n|---:|---:|\n";
    for (const auto& r : s.at("resume_skip")) out << "| " << r.at("batch") << " | " << fixed(r.at("seconds"), 4) << " |\n";
  }
  if (all.contains("compile_cost")) {
    const auto& c = all["compile_cost"];
    out << "\nCompile time of one translation unit (median of " << c.at("repeats") << "): `torch/torch.h` with a "
        << "hand-written loop " << fixed(c.at("torch_only_seconds"), 1) << " s, `torchtrain.hpp` with a Trainer "
        << "instantiated " << fixed(c.at("with_trainer_seconds"), 1) << " s header-only";
    if (c.contains("with_trainer_compiled_seconds"))
      out << ", " << fixed(c.at("with_trainer_compiled_seconds"), 1) << " s with `torchtrain::compiled`";
    if (c.contains("with_trainer_compiled_own_headers_seconds"))
      out << ", " << fixed(c.at("with_trainer_compiled_own_headers_seconds"), 1)
          << " s with `torchtrain::compiled` and only the headers it uses";
    out << ".\n";
  }
  std::cout << out.str();
  std::ofstream(dir / "benchmarks.md") << out.str();
  std::ofstream(dir / "benchmarks.json") << all.dump(2) << "\n";
}

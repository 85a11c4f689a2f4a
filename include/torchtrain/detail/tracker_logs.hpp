// SPDX-License-Identifier: MIT
// What the tracker callbacks share, as Hugging Face's integration_utils has it: their environment variables,
// the key rewriting, the summary scalars, run ids, the user and time stamps.
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include <pwd.h>
#include <unistd.h>

#include "torchtrain/trainer_types.hpp"

namespace torchtrain::detail {

/// An environment variable, nothing when it is unset or empty.
inline std::optional<std::string> environment_variable(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

/// HF's ENV_VARS_TRUE_VALUES: 1, ON, YES, TRUE in any case.
inline bool environment_flag(const char* name) {
  auto value = environment_variable(name);
  if (!value) return false;
  std::transform(value->begin(), value->end(), value->begin(), [](unsigned char c) { return std::toupper(c); });
  return *value == "1" || *value == "ON" || *value == "YES" || *value == "TRUE";
}

/// HF's rewrite_logs: eval_x -> eval/x, test_x -> test/x, anything else -> train/x. A log_history entry's own
/// "step" is not a log value and is left out.
inline LogEntry rewrite_logs(const LogEntry& logs) {
  LogEntry rewritten = LogEntry::object();
  for (const auto& [key, value] : logs.items()) {
    if (key == "step") continue;
    if (key.rfind("eval_", 0) == 0)
      rewritten["eval/" + key.substr(5)] = value;
    else if (key.rfind("test_", 0) == 0)
      rewritten["test/" + key.substr(5)] = value;
    else
      rewritten["train/" + key] = value;
  }
  return rewritten;
}

/// The values of train()'s closing log that W&B files in the run summary and Trackio leaves out.
inline bool is_single_value_scalar(std::string_view key) {
  static constexpr std::array<std::string_view, 5> keys{"train_runtime", "train_samples_per_second",
                                                        "train_steps_per_second", "train_loss", "total_flos"};
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

/// `length` random characters of `alphabet` (run ids; not for secrets).
inline std::string random_id(std::size_t length, std::string_view alphabet = "0123456789abcdef") {
  static thread_local std::mt19937_64 generator = [] {
    std::random_device entropy;  // 256 bits of it: ids of processes started together must not collide
    std::seed_seq seed{entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy(), entropy()};
    return std::mt19937_64(seed);
  }();
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string id(length, ' ');
  for (char& c : id) c = alphabet[pick(generator)];
  return id;
}

/// Python's uuid.uuid4().hex: 32 hex digits with the version nibble 4 and the variant bits 10.
inline std::string uuid4_hex() {
  std::string id = random_id(32);
  id[12] = '4';
  id[16] = random_id(1, "89ab").front();
  return id;
}

/// str(uuid.uuid4()): uuid4_hex() in groups of 8-4-4-4-12.
inline std::string uuid4() {
  const std::string hex = uuid4_hex();
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20);
}

inline std::string lower_case(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

/// The user's name: USER, else the password database's entry, else "unknown".
inline std::string user_name() {
  if (const auto user = environment_variable("USER")) return *user;
  if (const passwd* entry = ::getpwuid(::getuid())) return entry->pw_name;
  return "unknown";
}

/// The home folder: HOME, else the password database's entry, else "".
inline std::string home_directory() {
  if (const auto home = environment_variable("HOME")) return *home;
  if (const passwd* entry = ::getpwuid(::getuid())) return entry->pw_dir;
  return "";
}

/// Milliseconds since the Unix epoch, as MLflow's timestamps.
inline std::int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Seconds since the Unix epoch with their fraction, as W&B's _timestamp.
inline double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// datetime.now(timezone.utc).isoformat(): 2026-08-21T16:25:35.123456+00:00.
inline std::string utc_isoformat() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm parts{};
  gmtime_r(&seconds, &parts);
  char text[64];
  const std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &parts);
  if (micros != 0)  // Python leaves a zero fraction out
    std::snprintf(text + n, sizeof text - n, ".%06lld", static_cast<long long>(micros));
  return std::string(text) + "+00:00";
}

/// `format` (strftime) of the current local or UTC time.
inline std::string time_stamp(const char* format, bool utc = false) {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  if (utc)
    gmtime_r(&now, &parts);
  else
    localtime_r(&now, &parts);
  char text[64];
  return std::string(text, std::strftime(text, sizeof text, format, &parts));
}

}  // namespace torchtrain::detail

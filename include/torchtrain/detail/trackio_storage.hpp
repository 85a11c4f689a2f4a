// SPDX-License-Identifier: MIT
// A project database of Trackio (trackio/sqlite_storage.py, 0.36): where it lives, its process lock, its schema,
// and the values it stores (compact JSON with NaN/Infinity as strings).
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "torchtrain/detail/python_json.hpp"
#include "torchtrain/detail/tracker_logs.hpp"
#include "torchtrain/detail/tracker_outbox.hpp"

namespace torchtrain::detail::trackio {

/// TRACKIO_DIR, else $HF_HOME/trackio, else huggingface_hub's default home: $XDG_CACHE_HOME/huggingface or
/// ~/.cache/huggingface.
inline std::filesystem::path trackio_dir() {
  if (auto dir = environment_variable("TRACKIO_DIR")) return *dir;
  const auto expand_home = [](std::string path) -> std::filesystem::path {
    if (path.rfind("~", 0) == 0 && (path.size() == 1 || path[1] == '/'))
      path = home_directory() + path.substr(1);
    return path;
  };
  if (auto hf_home = environment_variable("HF_HOME")) return expand_home(*hf_home) / "trackio";
  const std::filesystem::path cache =
      expand_home(environment_variable("XDG_CACHE_HOME").value_or("~/.cache"));
  return cache / "huggingface" / "trackio";
}

/// Trackio's canonical_project_name: only [A-Za-z0-9_-] are kept, "default" when none is left.
inline std::string canonical_project_name(std::string_view project) {
  std::string safe;
  for (const char c : project) {
    const bool ascii_alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (ascii_alnum || c == '-' || c == '_') safe += c;
  }
  return safe.empty() ? "default" : safe;
}

/// Trackio's serialize_values: NaN and the infinities become the strings "NaN", "Infinity", "-Infinity".
inline nlohmann::ordered_json serialize_values(const nlohmann::ordered_json& value) {
  if (value.is_object()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const auto& [key, item] : value.items()) out[key] = serialize_values(item);
    return out;
  }
  if (value.is_array()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& item : value) out.push_back(serialize_values(item));
    return out;
  }
  if (value.is_number_float())
    if (const char* non_finite = non_finite_token(value.get<double>())) return non_finite;
  return value;
}

/// orjson.dumps of serialize_values: compact, UTF-8 (an invalid byte becomes U+FFFD rather than failing a log).
inline std::string compact_json(const nlohmann::ordered_json& value) {
  return serialize_values(value).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

/// The process lock trackio takes around every database write: an exclusive flock on <project>.lock, tried
/// every 0.1 s for 10 s.
class ProcessLock {
 public:
  explicit ProcessLock(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd_ < 0)
      throw std::runtime_error("cannot open the Trackio lock file " + path.string() + ": " + std::strerror(errno) +
                               "; set TRACKIO_DIR to a writable folder");
    for (int attempt = 0; ::flock(fd_, LOCK_EX | LOCK_NB) != 0; ++attempt) {
      if (attempt == 99) {
        ::close(fd_);
        throw std::runtime_error("could not take the Trackio lock " + path.string() +
                                 " within 10 seconds: another process holds it");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~ProcessLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  ProcessLock(const ProcessLock&) = delete;
  ProcessLock& operator=(const ProcessLock&) = delete;

 private:
  int fd_ = -1;
};

class Statement;

/// A connection to a project database, set up as trackio sets up its own: a busy timeout (trackio's is 30 s) and
/// its pragmas (WAL, synchronous NORMAL, ...; TRACKIO_SQLITE_* override them).
class Database {
 public:
  Database(std::filesystem::path path, bool create, std::chrono::milliseconds busy_timeout = std::chrono::seconds(30))
      : path_(std::move(path)) {
    const int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    sqlite3* opened = nullptr;
    const int rc = sqlite3_open_v2(path_.c_str(), &opened, flags, nullptr);
    db_.reset(opened);  // closed however the rest of the constructor ends
    if (rc != SQLITE_OK)
      throw std::runtime_error("cannot open the Trackio database " + path_.string() + ": " +
                               (opened != nullptr ? sqlite3_errmsg(opened) : sqlite3_errstr(rc)) +
                               "; set TRACKIO_DIR to a writable folder");
    sqlite3_busy_timeout(handle(), static_cast<int>(busy_timeout.count()));
    exec("PRAGMA journal_mode = " + pragma_choice("TRACKIO_SQLITE_JOURNAL_MODE",
                                                  {"wal", "delete", "truncate", "persist", "memory", "off"}, "wal"));
    exec("PRAGMA synchronous = " + pragma_choice("TRACKIO_SQLITE_SYNCHRONOUS", {"off", "normal", "full", "extra"},
                                                 "normal"));
    exec("PRAGMA temp_store = " + pragma_choice("TRACKIO_SQLITE_TEMP_STORE", {"default", "file", "memory"}, "memory"));
    exec("PRAGMA cache_size = -20000");
    long long mmap_size = 0;
    if (auto text = environment_variable("TRACKIO_SQLITE_MMAP_SIZE")) {
      try {
        mmap_size = std::stoll(*text);
      } catch (const std::exception&) {
      }
    }
    exec("PRAGMA mmap_size = " + std::to_string(mmap_size));
    const std::string locking = pragma_choice("TRACKIO_SQLITE_LOCKING_MODE", {"normal", "exclusive"}, "");
    if (!locking.empty()) exec("PRAGMA locking_mode = " + locking);
  }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  sqlite3* handle() const { return db_.get(); }

  void exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(handle(), sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
      const std::string reason = message != nullptr ? message : sqlite3_errmsg(handle());
      sqlite3_free(message);
      fail(reason);
    }
  }

  /// Throws what SQLite reported. A file that is not a database, or a damaged one, stays so however often it is
  /// tried again: that is a DeliveryRejected.
  [[noreturn]] void fail(const std::string& reason) const {
    const int code = sqlite3_errcode(handle());
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
      throw DeliveryRejected("the Trackio database " + path_.string() + " cannot be used: " + reason +
                             "; move the file away, or log to another project or TRACKIO_DIR");
    throw std::runtime_error("SQLite error on the Trackio database " + path_.string() + ": " + reason);
  }

  bool has_column(const std::string& table, const std::string& column);

  /// The tables and indexes of trackio's SQLiteStorage.init_db, created when missing, columns added later by
  /// ALTER TABLE included, so that trackio finds what it expects when it opens the file.
  void init_schema() {
    exec(R"sql(
      CREATE TABLE IF NOT EXISTS metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        timestamp TEXT NOT NULL, run_name TEXT NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS configs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        run_name TEXT NOT NULL, config TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE(run_id));
      CREATE TABLE IF NOT EXISTS system_metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        timestamp TEXT NOT NULL, run_name TEXT NOT NULL, metrics TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS traces (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, timestamp TEXT NOT NULL,
        run_name TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, trace_index INTEGER,
        messages TEXT NOT NULL, metadata TEXT NOT NULL, search_text TEXT NOT NULL, log_id TEXT, space_id TEXT);
      CREATE TABLE IF NOT EXISTS project_metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS pending_uploads (id INTEGER PRIMARY KEY AUTOINCREMENT, space_id TEXT NOT NULL,
        run_id TEXT, run_name TEXT, step INTEGER, file_path TEXT NOT NULL, relative_path TEXT,
        created_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        timestamp TEXT NOT NULL, run_name TEXT NOT NULL, title TEXT NOT NULL, text TEXT,
        level TEXT NOT NULL DEFAULT 'warn', step INTEGER, alert_id TEXT);
      CREATE TABLE IF NOT EXISTS artifacts (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, description TEXT, created_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS artifact_versions (id INTEGER PRIMARY KEY AUTOINCREMENT,
        artifact_id INTEGER NOT NULL REFERENCES artifacts(id), version INTEGER NOT NULL,
        manifest_digest TEXT NOT NULL, manifest TEXT NOT NULL, metadata TEXT, size_bytes INTEGER NOT NULL,
        producer_run_id TEXT, producer_run_name TEXT, created_at TEXT NOT NULL, UNIQUE(artifact_id, version),
        UNIQUE(artifact_id, manifest_digest));
      CREATE TABLE IF NOT EXISTS artifact_aliases (artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
        alias TEXT NOT NULL, artifact_version_id INTEGER NOT NULL REFERENCES artifact_versions(id),
        PRIMARY KEY (artifact_id, alias));
      CREATE TABLE IF NOT EXISTS run_artifact_links (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT,
        run_name TEXT, artifact_version_id INTEGER NOT NULL REFERENCES artifact_versions(id),
        direction TEXT NOT NULL CHECK(direction IN ('input', 'output')), created_at TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS idx_run_artifact_links_run ON run_artifact_links(run_id, run_name);
      CREATE INDEX IF NOT EXISTS idx_run_artifact_links_name ON run_artifact_links(run_name, run_id);
      CREATE INDEX IF NOT EXISTS idx_run_artifact_links_version ON run_artifact_links(artifact_version_id);
      CREATE UNIQUE INDEX IF NOT EXISTS idx_run_artifact_links_unique
        ON run_artifact_links(run_id, artifact_version_id, direction);
    )sql");
    add_column("pending_uploads", "kind TEXT NOT NULL DEFAULT 'media'");
    add_column("pending_uploads", "digest TEXT");
    exec("CREATE INDEX IF NOT EXISTS idx_pending_uploads_kind ON pending_uploads(kind)");
    // A database from before run ids keys its indexes on run_name, as trackio does.
    const std::string metrics_key = has_column("metrics", "run_id") ? "run_id" : "run_name";
    const std::string system_key = has_column("system_metrics", "run_id") ? "run_id" : "run_name";
    const std::string alerts_key = has_column("alerts", "run_id") ? "run_id" : "run_name";
    exec("CREATE INDEX IF NOT EXISTS idx_metrics_run_step ON metrics(" + metrics_key + ", step);"
         "CREATE INDEX IF NOT EXISTS idx_metrics_run_timestamp ON metrics(" + metrics_key + ", timestamp);"
         "CREATE INDEX IF NOT EXISTS idx_configs_run_name ON configs(run_name);"
         "CREATE INDEX IF NOT EXISTS idx_system_metrics_run_timestamp ON system_metrics(" + system_key +
         ", timestamp);"
         "CREATE INDEX IF NOT EXISTS idx_traces_run_step ON traces(run_id, step);"
         "CREATE INDEX IF NOT EXISTS idx_traces_run_timestamp ON traces(run_id, timestamp);"
         "CREATE INDEX IF NOT EXISTS idx_traces_search ON traces(search_text);"
         "CREATE INDEX IF NOT EXISTS idx_alerts_run ON alerts(" + alerts_key + ");"
         "CREATE INDEX IF NOT EXISTS idx_alerts_timestamp ON alerts(timestamp);"
         "CREATE UNIQUE INDEX IF NOT EXISTS idx_alerts_alert_id ON alerts(alert_id) WHERE alert_id IS NOT NULL;");
    for (const std::string table : {"metrics", "system_metrics"}) {
      add_column(table, "log_id TEXT");
      add_column(table, "space_id TEXT");
      exec("CREATE UNIQUE INDEX IF NOT EXISTS idx_" + table + "_log_id ON " + table +
           "(log_id) WHERE log_id IS NOT NULL;"
           "CREATE INDEX IF NOT EXISTS idx_" + table + "_pending ON " + table +
           "(space_id) WHERE space_id IS NOT NULL;");
    }
  }

 private:
  // ALTER TABLE ADD COLUMN, which fails harmlessly once the column exists.
  void add_column(const std::string& table, const std::string& column) {
    const std::string sql = "ALTER TABLE " + table + " ADD COLUMN " + column;
    if (sqlite3_exec(handle(), sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK) return;
    const std::string reason = sqlite3_errmsg(handle());
    if (reason.find("duplicate column") == std::string::npos) fail(reason);
  }

  static std::string pragma_choice(const char* variable, std::initializer_list<std::string_view> allowed,
                                   std::string fallback) {
    auto value = environment_variable(variable);
    if (!value) return fallback;
    std::string word;
    for (const char c : *value)
      if (c != ' ' && c != '\t' && c != '\n') word += c;
    word = lower_case(word);  // SQLite reads pragma values in any case
    for (const auto choice : allowed)
      if (word == choice) return word;
    return fallback;
  }

  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }  // an open transaction is rolled back
  };

  std::filesystem::path path_;
  std::unique_ptr<sqlite3, Close> db_;
};

/// A prepared statement; binds are 1-based, as SQLite's.
class Statement {
 public:
  Statement(Database& db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db.handle(), sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      db.fail(sqlite3_errmsg(db.handle()));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& text(int i, const std::string& value) {
    check(sqlite3_bind_text(stmt_, i, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT));
    return *this;
  }
  // Trackio stores its JSON columns as the bytes orjson returns, which SQLite keeps as BLOBs.
  Statement& blob(int i, const std::string& value) {
    check(sqlite3_bind_blob(stmt_, i, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& integer(int i, std::int64_t value) {
    check(sqlite3_bind_int64(stmt_, i, value));
    return *this;
  }
  /// Steps once: true when a row came back.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.fail(sqlite3_errmsg(db_.handle()));
  }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  std::int64_t integer_at(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::string text_at(int column) const {
    const auto* bytes = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
    return bytes != nullptr ? std::string(bytes, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
                            : std::string();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) db_.fail(sqlite3_errmsg(db_.handle()));
  }

  Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

inline bool Database::has_column(const std::string& table, const std::string& column) {
  Statement info(*this, "PRAGMA table_info(" + table + ")");
  while (info.step())
    if (info.text_at(1) == column) return true;
  return false;
}

}  // namespace torchtrain::detail::trackio

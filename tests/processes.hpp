// Child processes for the tests that run real programs: spawned with their output in a file, or run to their
// end with their output captured.
#pragma once

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

extern char** environ;

namespace tt_test {

/// A child process whose stdout and stderr go to `log` (appended to, or truncated first); killed with SIGKILL
/// when the object dies before the process ended. `env` replaces the environment when given.
class ChildProcess {
 public:
  enum class Log { append, truncate };

  ChildProcess(const std::string& program, const std::vector<std::string>& arguments, const std::filesystem::path& log,
               Log mode = Log::append, std::optional<std::vector<std::string>> env = std::nullopt)
      : log_(log) {
    std::vector<std::string> words{program};
    words.insert(words.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv, envp;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    if (env) {
      for (auto& e : *env) envp.push_back(e.data());
      envp.push_back(nullptr);
    }
    const int flags = O_WRONLY | O_CREAT | (mode == Log::append ? O_APPEND : O_TRUNC);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), flags, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    const int rc = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv.data(), env ? envp.data() : environ);
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE(rc == 0);
  }
  ~ChildProcess() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::filesystem::path& log() const { return log_; }

  bool running() {
    if (status_) return false;
    int raw = 0;
    if (::waitpid(pid_, &raw, WNOHANG) == pid_) status_ = raw;
    return !status_;
  }
  /// The raw wait status.
  int wait() {
    if (!status_) {
      int raw = 0;
      while (::waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
      }
      status_ = raw;
    }
    return *status_;
  }
  void signal(int sig) const { REQUIRE(::kill(pid_, sig) == 0); }

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
  std::optional<int> status_;
};

/// A raw wait status in words.
inline std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "raw status " + std::to_string(status);
}

struct Outcome {
  int status;          // the exit status, or -1 when the process did not exit
  std::string output;  // stdout and stderr together
};

/// Runs a shell command to its end.
inline Outcome run_command(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe)) output += buf.data();
  const int raw = ::pclose(pipe);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, output};
}

}  // namespace tt_test

// A program run in a pseudo-terminal of a given width, and the screen a terminal would show for its output:
// what a person sees, for the tests of the progress display.
#pragma once

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace tt_test {

/// The screen of a terminal `columns` wide that has received some output: carriage return, newline, erase to
/// the end of the line (ESC [ K), cursor up (ESC [ n A); a character written past the last column wraps to the
/// next line, as a terminal does, and is remembered in `wrapped`.
class Screen {
 public:
  explicit Screen(int columns) : columns_(columns) {}

  void feed(const std::string& output) {
    for (std::size_t i = 0; i < output.size(); ++i) {
      const char c = output[i];
      if (c == '\r') {
        column_ = 0;
      } else if (c == '\n') {
        ++row_;
      } else if (c == '\x1b' && i + 1 < output.size() && output[i + 1] == '[') {
        std::size_t end = i + 2;
        while (end < output.size() && std::isdigit(static_cast<unsigned char>(output[end]))) ++end;
        const int count = end > i + 2 ? std::atoi(output.substr(i + 2, end - i - 2).c_str()) : 1;
        if (end < output.size() && output[end] == 'K')
          line().erase(static_cast<std::size_t>(std::min(column_, width(line()))));
        if (end < output.size() && output[end] == 'A') row_ = std::max(0, row_ - count);
        on_control(end < output.size() ? output[end] : '\0');
        i = end;
      } else {
        if ((static_cast<unsigned char>(c) & 0xC0) == 0x80) {  // a UTF-8 continuation byte takes no column
          line() += c;
          continue;
        }
        if (column_ == columns_) {
          wrapped.push_back(line());
          ++row_;
          column_ = 0;
        }
        write_at(c);
        ++column_;
      }
    }
  }

  /// The rows, without trailing empty ones.
  std::vector<std::string> rows() const {
    auto out = rows_;
    while (!out.empty() && out.back().empty()) out.pop_back();
    return out;
  }

  std::vector<std::string> wrapped;              // each line that ran past the last column, as it was then
  std::vector<std::string> training_above_eval;  // the line above each evaluation bar as it was drawn

 private:
  std::string& line() {
    if (static_cast<std::size_t>(row_) >= rows_.size()) rows_.resize(static_cast<std::size_t>(row_) + 1);
    return rows_[static_cast<std::size_t>(row_)];
  }

  static int width(const std::string& s) {
    int n = 0;
    for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
  }

  // Writes one ASCII character at the cursor (the bars are ASCII; other text is only appended).
  void write_at(char c) {
    std::string& l = line();
    if (column_ >= width(l)) {
      l.append(static_cast<std::size_t>(column_ - width(l)), ' ');
      l += c;
    } else {
      l[static_cast<std::size_t>(column_)] = c;
    }
  }

  void on_control(char command) {
    if (command == 'K' && line().rfind("Evaluating:", 0) == 0 && row_ > 0)
      training_above_eval.push_back(rows_[static_cast<std::size_t>(row_) - 1]);
  }

  int columns_;
  int row_ = 0, column_ = 0;
  std::vector<std::string> rows_;
};

/// Runs `argv` with its standard output and error on a pseudo-terminal `columns` wide, to its end; returns
/// the exit status and all it wrote. With `resize_when` and `resized_columns`, the terminal becomes that wide
/// once the output contains `resize_when`, as when a person drags the window's edge.
inline std::pair<int, std::string> run_in_terminal(const std::vector<std::string>& argv, int columns,
                                                   std::string resize_when = "", int resized_columns = 0) {
  int master = -1, slave = -1;
  winsize size{};
  size.ws_col = static_cast<unsigned short>(columns);
  size.ws_row = 50;
  if (::openpty(&master, &slave, nullptr, nullptr, &size) != 0) return {-1, "openpty failed"};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, slave, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, slave, STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, master);
  posix_spawn_file_actions_addclose(&actions, slave);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(slave);
  std::string output;
  if (spawned == 0) {
    char buffer[4096];
    for (;;) {  // until the child's side closes: EIO on Linux
      const ssize_t n = ::read(master, buffer, sizeof buffer);
      if (n > 0) {
        output.append(buffer, static_cast<std::size_t>(n));
        if (!resize_when.empty() && output.find(resize_when) != std::string::npos) {
          size.ws_col = static_cast<unsigned short>(resized_columns);
          ::ioctl(master, TIOCSWINSZ, &size);
          resize_when.clear();
        }
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
  }
  ::close(master);
  int status = -1;
  if (spawned == 0) ::waitpid(pid, &status, 0);
  return {spawned == 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace tt_test

// SPDX-License-Identifier: MIT
// ResumeFrom: what train() resumes from, as a value or as the command line's --resume_from_checkpoint.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace torchtrain {

/// Where train() resumes from: nowhere (default), the newest valid checkpoint in output_dir (`true`), or a
/// checkpoint folder.
class ResumeFrom {
 public:
  ResumeFrom() = default;
  ResumeFrom(std::nullopt_t) {}
  ResumeFrom(bool latest) : latest_(latest) {}
  ResumeFrom(std::string path) : path_(std::move(path)) {}
  ResumeFrom(const char* path) : path_(path) {}
  /// Parses a command-line value: "true" means the latest checkpoint, "false"/"" nothing, else a path.
  static ResumeFrom parse(const std::string& text) {
    if (text == "true" || text == "True") return ResumeFrom(true);
    if (text.empty() || text == "false" || text == "False" || text == "none" || text == "None") return {};
    return ResumeFrom(text);
  }
  bool latest() const { return latest_; }
  const std::optional<std::string>& path() const { return path_; }
  explicit operator bool() const { return latest_ || path_.has_value(); }

 private:
  bool latest_ = false;
  std::optional<std::string> path_;
};

}  // namespace torchtrain

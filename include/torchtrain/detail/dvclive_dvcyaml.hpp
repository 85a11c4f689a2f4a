// SPDX-License-Identifier: MIT
// DVCLive's dvc.yaml: its params, metrics and plots lists, written new or edited in place as dvclive's
// make_dvcyaml / update_dvcyaml do, keeping everything else of the user's file as it is written.
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/dvclive_files.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/detail/yaml_writer.hpp"

namespace torchtrain::detail::dvclive {

/// A top-level entry of a YAML document: its key (empty for what precedes the first key) and its lines, each
/// with its newline.
struct YamlBlock {
  std::string key;
  std::vector<std::string> lines;
};

/// A block-style list below a key: the blank and comment lines before its first entry, and its entries' lines.
struct YamlList {
  std::vector<std::string> lead;
  std::vector<std::vector<std::string>> entries;
  std::size_t dash = 0;  // the column of the entries' dashes
};

inline std::size_t indentation(const std::string& line) { return line.find_first_not_of(' '); }

inline bool blank_or_comment(const std::string& line) {
  const std::size_t i = indentation(line);
  return i == std::string::npos || line[i] == '\n' || line[i] == '#';
}

/// The key of a line that starts a top-level mapping entry ("key:" or "'key': value"); nothing for any other line.
inline std::optional<std::string> top_level_key(const std::string& line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string::npos || std::string(" \t#-\n.").find(line[0]) != std::string::npos) return std::nullopt;
  std::string key = line.substr(0, colon);
  while (!key.empty() && key.back() == ' ') key.pop_back();
  if (key.size() >= 2 && (key.front() == '\'' || key.front() == '"') && key.back() == key.front())
    key = key.substr(1, key.size() - 2);
  return key;
}

inline std::vector<YamlBlock> top_level_blocks(const std::string& text) {
  std::vector<YamlBlock> blocks(1);
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t end = text.find('\n', pos);
    end = end == std::string::npos ? text.size() : end + 1;
    std::string line = text.substr(pos, end - pos);
    if (line.back() != '\n') line += '\n';
    pos = end;
    if (auto key = top_level_key(line)) blocks.push_back({std::move(*key), {}});
    blocks.back().lines.push_back(std::move(line));
  }
  return blocks;
}

/// The list of a block whose key's line has nothing after the colon; nothing when it is in flow style
/// ("key: [...]") or is not a list.
inline std::optional<YamlList> block_list(const YamlBlock& block) {
  const std::string& head = block.lines.front();
  const std::size_t after = head.find_first_not_of(' ', head.find(':') + 1);
  if (after != std::string::npos && head[after] != '\n' && head[after] != '#') return std::nullopt;
  YamlList list;
  bool started = false;
  for (std::size_t i = 1; i < block.lines.size(); ++i) {
    const std::string& line = block.lines[i];
    if (!started) {
      if (blank_or_comment(line)) {
        list.lead.push_back(line);
        continue;
      }
      list.dash = indentation(line);
      if (line[list.dash] != '-') return std::nullopt;
      started = true;
    }
    if (!blank_or_comment(line) && indentation(line) == list.dash && line[list.dash] == '-') list.entries.emplace_back();
    list.entries.back().push_back(line);
  }
  return list;
}

/// What an entry names: "- path" gives path; "- path:" or "- path: value" (a one-key mapping) gives its key.
inline std::string entry_subject(const std::string& first_line, std::size_t dash) {
  std::string content = first_line.substr(dash + 1);
  content.erase(0, std::min(content.find_first_not_of(' '), content.size()));
  while (!content.empty() && (content.back() == '\n' || content.back() == ' ')) content.pop_back();
  if (!content.empty() && content.back() == ':') content.pop_back();
  return content.substr(0, content.find(": "));
}

/// update_dvcyaml's _update_entries for one list: the entries that do not name `dvclive_dir`, then `added`
/// (nothing for none). Empty when no entry is left; nothing when the list is in a form this cannot edit.
inline std::optional<std::vector<std::string>> updated_list(const YamlBlock& block, const nlohmann::ordered_json* added,
                                                            const std::string& dvclive_dir) {
  const auto list = block_list(block);
  if (!list) return std::nullopt;
  std::vector<std::string> kept;
  for (const auto& entry : list->entries)
    if (entry_subject(entry.front(), list->dash).find(dvclive_dir) == std::string::npos)
      kept.insert(kept.end(), entry.begin(), entry.end());
  const std::string new_entries = added ? YamlWriter::document(*added, list->entries.empty() ? 0 : list->dash) : "";
  if (kept.empty() && new_entries.empty()) return std::vector<std::string>{};
  std::vector<std::string> lines{block.lines.front()};
  lines.insert(lines.end(), list->lead.begin(), list->lead.end());
  lines.insert(lines.end(), kept.begin(), kept.end());
  if (!new_entries.empty()) lines.push_back(new_entries);
  return lines;
}

/// dvclive's update_dvcyaml on the text of an existing dvc.yaml: in its params, metrics and plots lists the
/// entries that name `dvclive_dir` are replaced by those of `sections` (after the others' entries), and a list
/// it lacks is added at the end; everything else is kept as written. Nothing when a list is in flow style.
inline std::optional<std::string> merge_dvcyaml(const std::string& existing, const nlohmann::ordered_json& sections,
                                                const std::string& dvclive_dir) {
  static const std::set<std::string> kLists = {"params", "metrics", "plots"};
  std::vector<YamlBlock> blocks = top_level_blocks(existing);
  std::set<std::string> present;
  std::string text;
  for (const YamlBlock& block : blocks) {
    if (!kLists.count(block.key)) {
      for (const auto& line : block.lines) text += line;
      continue;
    }
    present.insert(block.key);
    const auto lines = updated_list(block, sections.contains(block.key) ? &sections.at(block.key) : nullptr, dvclive_dir);
    if (!lines) return std::nullopt;
    for (const auto& line : *lines) text += line;
  }
  for (const char* key : {"params", "metrics", "plots"})
    if (!present.count(key) && sections.contains(key))
      text += YamlWriter::document(nlohmann::ordered_json{{key, sections.at(key)}});
  return text;
}

/// The lists dvc.yaml at `dvc_file` gets for the output folder `dir`: params.yaml and metrics.json once
/// written, the metric plots once a TSV exists, each path relative to dvc.yaml's folder.
inline nlohmann::ordered_json dvcyaml_sections(const std::filesystem::path& dir, const std::filesystem::path& dvc_file,
                                               bool params, bool metrics) {
  using ojson = nlohmann::ordered_json;
  const auto base = dvc_file.parent_path();
  ojson sections = ojson::object();
  if (params) sections["params"] = ojson::array({rel_path(dir / "params.yaml", base)});
  if (metrics) sections["metrics"] = ojson::array({rel_path(dir / "metrics.json", base)});
  std::error_code ec;
  if (std::filesystem::exists(dir / "plots" / "metrics", ec))
    sections["plots"] = ojson::array({ojson{{rel_path(dir / "plots" / "metrics", base), ojson{{"x", "step"}}}}});
  return sections;
}

/// Live.make_dvcyaml: writes dvc.yaml new, or edits the existing file's lists (replaced atomically, and only
/// when something changes). False when the existing file's lists are in flow style, which this cannot edit:
/// the file is then left as it is.
inline bool write_dvcyaml(const std::filesystem::path& dir, const std::filesystem::path& dvc_file, bool params,
                          bool metrics) {
  namespace fs = std::filesystem;
  const auto sections = dvcyaml_sections(dir, dvc_file, params, metrics);
  std::error_code ec;
  std::string text;
  if (fs::exists(dvc_file, ec)) {
    const std::string existing = read_text_file(dvc_file.string());
    const auto merged = merge_dvcyaml(existing, sections, rel_path(dir, dvc_file.parent_path()) + "/");
    if (!merged) return false;
    if (*merged == existing) return true;
    text = *merged;
  } else {
    text = YamlWriter::document(sections);
  }
  if (dvc_file.has_parent_path()) fs::create_directories(dvc_file.parent_path());
  write_file_atomically(dvc_file, text);
  return true;
}

}  // namespace torchtrain::detail::dvclive

// SPDX-License-Identifier: MIT
// CheckpointManifest: manifest.json, the last file of a checkpoint, listing every other file with its size
// and CRC32C checksum. A checkpoint whose files do not agree with its manifest is not resumed from.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "torchtrain/checkpoint/layout.hpp"
#include "torchtrain/detail/crc32c.hpp"
#include "torchtrain/detail/durable_file.hpp"
#include "torchtrain/detail/text_file.hpp"
#include "torchtrain/errors.hpp"
#include "torchtrain/version.hpp"

namespace torchtrain {

struct CheckpointManifest {
  static constexpr int kFormatVersion = 1;
  static constexpr const char* kFileName = checkpoint::kManifestFile;

  struct File {
    std::string name;
    std::uint64_t size = 0;
    std::uint32_t crc32c = 0;
  };

  int format_version = kFormatVersion;
  std::string torchtrain_version = TORCHTRAIN_VERSION;
  std::string torch_version = TORCH_VERSION;
  std::int64_t global_step = 0;
  std::vector<File> files;  // sorted by name

  void add(std::string name, const detail::FileChecksum& sum) {
    files.push_back({std::move(name), sum.size, sum.crc32c});
    std::sort(files.begin(), files.end(), [](const File& a, const File& b) { return a.name < b.name; });
  }

  const File* find(const std::string& name) const {
    for (const auto& f : files)
      if (f.name == name) return &f;
    return nullptr;
  }

  std::string to_json_string() const {
    nlohmann::ordered_json listed = nlohmann::ordered_json::object();
    for (const auto& f : files) listed[f.name] = {{"size", f.size}, {"crc32c", hex(f.crc32c)}};
    nlohmann::ordered_json j = {{"format_version", format_version},
                                {"torchtrain_version", torchtrain_version},
                                {"torch_version", torch_version},
                                {"global_step", global_step},
                                {"files", std::move(listed)}};
    return j.dump(2) + "\n";
  }

  /// Writes `folder/manifest.json` and flushes it to disk.
  void write(const std::filesystem::path& folder) const {
    const std::string text = to_json_string();
    detail::DurableFile file(folder / kFileName);
    file.write(text.data(), text.size());
    file.commit();
  }

  /// Reads a manifest; FileFormatError names the file and what is wrong with it.
  static CheckpointManifest read(const std::filesystem::path& path) {
    const std::string where = path.string() + ": ";
    const auto j = nlohmann::json::parse(detail::read_text_file(path.string()), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw FileFormatError(where + "not valid JSON");
    if (!j.is_object()) throw FileFormatError(where + "expected a JSON object");
    auto field = [&](const char* key) -> const nlohmann::json& {
      if (!j.contains(key)) throw FileFormatError(where + "the field '" + key + "' is missing");
      return j.at(key);
    };
    CheckpointManifest m;
    const auto& version = field("format_version");
    if (!version.is_number_integer()) throw FileFormatError(where + "format_version must be an integer");
    m.format_version = version.get<int>();
    if (m.format_version != kFormatVersion)
      throw FileFormatError(where + "format_version " + version.dump() + " is not the one this torchtrain reads (" +
                            std::to_string(kFormatVersion) + "); use the torchtrain version that wrote it (" +
                            j.value("torchtrain_version", std::string("unknown")) + ")");
    for (auto [key, out] : {std::pair<const char*, std::string*>{"torchtrain_version", &m.torchtrain_version},
                            {"torch_version", &m.torch_version}}) {
      if (!field(key).is_string()) throw FileFormatError(where + key + " must be a string");
      *out = field(key).get<std::string>();
    }
    const auto& step = field("global_step");
    if (!step.is_number_integer() || step.get<std::int64_t>() < 0)
      throw FileFormatError(where + "global_step must be an integer >= 0");
    m.global_step = step.get<std::int64_t>();
    const auto& listed = field("files");
    if (!listed.is_object()) throw FileFormatError(where + "files must be an object of name -> {size, crc32c}");
    for (const auto& [name, entry] : listed.items()) {
      const std::string what = where + "files." + name + ": ";
      if (name.empty() || name == "." || name == ".." || name == kFileName || name.find('/') != std::string::npos ||
          name.find('\0') != std::string::npos)
        throw FileFormatError(what + "not a file name inside a checkpoint");
      if (!entry.is_object() || !entry.contains("size") || !entry.contains("crc32c"))
        throw FileFormatError(what + "expected {\"size\": bytes, \"crc32c\": \"8 hex digits\"}");
      if (!entry.at("size").is_number_unsigned()) throw FileFormatError(what + "size must be an integer >= 0");
      const auto crc = parse_hex(entry.at("crc32c"));
      if (!crc) throw FileFormatError(what + "crc32c must be a string of 8 hex digits");
      m.files.push_back({name, entry.at("size").get<std::uint64_t>(), *crc});
    }
    return m;
  }

  /// Why the files of `folder` disagree with this manifest (a missing, extra, resized or altered file), or
  /// nothing when they agree. Names and sizes are checked before any file is read; then `checksum(file)` reads
  /// each listed file, in the manifest's order, and returns its size and CRC32C. A FileFormatError it throws
  /// makes the file unreadable (the reason names the error).
  template <class Checksum>
  std::optional<std::string> verify(const std::filesystem::path& folder, Checksum&& checksum) const {
    namespace fs = std::filesystem;
    std::set<std::string> listed;
    for (const auto& f : files) {
      listed.insert(f.name);
      std::error_code ec;
      const fs::path path = folder / f.name;
      if (!fs::is_regular_file(path, ec)) return f.name + " is missing";
      const auto size = fs::file_size(path, ec);
      if (ec) return f.name + " cannot be read: " + ec.message();
      if (size != f.size) return size_mismatch(f, size);
    }
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
      const std::string name = entry.path().filename().string();
      if (name != kFileName && !listed.count(name)) return "it holds " + name + ", which its manifest does not list";
    }
    if (ec) return "its folder cannot be listed: " + ec.message();
    for (const auto& f : files) {
      detail::FileChecksum sum;
      try {
        sum = checksum(f);
      } catch (const FileFormatError& e) {
        return f.name + " cannot be read: " + e.what();
      }
      if (sum.size != f.size) return size_mismatch(f, sum.size);
      if (sum.crc32c != f.crc32c)
        return f.name + " has CRC32C " + hex(sum.crc32c) + ", the manifest says " + hex(f.crc32c) +
               " (its content changed after it was saved)";
    }
    return std::nullopt;
  }

  /// verify() with each file's checksum read straight from the disk.
  std::optional<std::string> verify(const std::filesystem::path& folder) const {
    return verify(folder, [&](const File& f) { return detail::crc32c_of_file((folder / f.name).string()); });
  }

 private:
  static std::string size_mismatch(const File& f, std::uint64_t size) {
    return f.name + " is " + std::to_string(size) + " bytes, the manifest says " + std::to_string(f.size);
  }

  static std::string hex(std::uint32_t value) {
    char text[9];
    std::snprintf(text, sizeof text, "%08x", static_cast<unsigned>(value));
    return text;
  }

  static std::optional<std::uint32_t> parse_hex(const nlohmann::json& value) {
    if (!value.is_string()) return std::nullopt;
    const auto& text = value.get_ref<const std::string&>();
    if (text.size() != 8) return std::nullopt;
    std::uint32_t out = 0;
    for (const char c : text) {
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (digit < 0) return std::nullopt;
      out = out << 4 | static_cast<std::uint32_t>(digit);
    }
    return out;
  }
};

}  // namespace torchtrain

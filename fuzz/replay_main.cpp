// SPDX-License-Identifier: MIT
// Runs every file of the given folders (or single files) through one fuzz target, once each:
//
//   fuzz_replay TARGET PATH...
//
// Exit status 0 when every input was accepted or rejected with a torchtrain::Error, 1 when any input made the
// target throw something else (the file and the exception are printed), 2 on bad usage.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "fuzz_target.hpp"

namespace torchtrain::fuzz {

static std::map<std::string, TargetFunction>& targets() {
  static std::map<std::string, TargetFunction> all;
  return all;
}

bool register_target(const char* name, TargetFunction function) {
  targets().emplace(name, function);
  return true;
}

}  // namespace torchtrain::fuzz

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const auto& targets = torchtrain::fuzz::targets();
  const auto target = argc >= 3 ? targets.find(argv[1]) : targets.end();
  if (target == targets.end()) {
    std::cerr << "usage: fuzz_replay TARGET PATH...\ntargets:";
    for (const auto& [name, function] : targets) std::cerr << ' ' << name;
    std::cerr << '\n';
    return 2;
  }

  std::vector<fs::path> inputs;
  for (int i = 2; i < argc; ++i) {
    const fs::path path = argv[i];
    if (fs::is_directory(path)) {
      for (const auto& entry : fs::directory_iterator(path))
        if (entry.is_regular_file()) inputs.push_back(entry.path());
    } else if (fs::is_regular_file(path)) {
      inputs.push_back(path);
    } else {
      std::cerr << "fuzz_replay: " << path.string() << ": no such file or folder\n";
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());

  int failures = 0;
  for (const auto& path : inputs) {
    std::ifstream file(path, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    try {
      target->second(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    } catch (const std::exception& e) {
      ++failures;
      std::cerr << "FAILED " << path.string() << ": " << e.what() << '\n';
    } catch (...) {
      ++failures;
      std::cerr << "FAILED " << path.string() << ": a non-standard exception\n";
    }
  }
  std::cout << target->first << ": " << inputs.size() - failures << " of " << inputs.size()
            << " inputs handled correctly\n";
  return failures == 0 && !inputs.empty() ? 0 : 1;
}

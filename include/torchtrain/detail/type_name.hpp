// SPDX-License-Identifier: MIT
// Human-readable class names without namespaces, as Python's type(obj).__name__ gives them.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <typeinfo>

#include <cxxabi.h>

namespace torchtrain::detail {

inline std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

// "ns::inner::Foo<int>" -> "Foo<int>": drop every qualifier that precedes the class's own name.
inline std::string strip_qualifiers(const std::string& full) {
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < full.size(); ++i) {
    char c = full[i];
    if (c == '<' || c == '(') ++depth;
    if (c == '>' || c == ')') --depth;
    if (depth == 0 && c == ':' && i + 1 < full.size() && full[i + 1] == ':') start = i + 2;
  }
  return full.substr(start);
}

template <class T>
std::string unqualified_type_name(const T& object) {
  return strip_qualifiers(demangle(typeid(object).name()));
}

}  // namespace torchtrain::detail

// SPDX-License-Identifier: MIT
// Levenshtein distance, to suggest the name a user probably meant when they misspell a flag or a key.
#pragma once

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace torchtrain::detail {

/// Number of single-character insertions, deletions and substitutions that turn `a` into `b`.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), std::size_t{0});
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// The candidate nearest to `word`, or "" when none is close enough to be a plausible typo
/// (at most a third of the word's letters changed, and never more than a few).
template <class Names>
std::string closest_name(std::string_view word, const Names& candidates) {
  const std::size_t limit = std::clamp<std::size_t>(word.size() / 3, 2, 6);
  std::string best;
  std::size_t best_distance = limit + 1;
  for (const auto& candidate : candidates) {
    const std::size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = std::string(candidate);
    }
  }
  return best;
}

}  // namespace torchtrain::detail

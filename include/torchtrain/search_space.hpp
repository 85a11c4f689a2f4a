// SPDX-License-Identifier: MIT
// Hyper-parameter search spaces (categorical choices, int and float ranges, log-uniform floats) and the grid
// and seeded random samplers that turn a space into trials.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "torchtrain/detail/split_mix64.hpp"
#include "torchtrain/errors.hpp"

namespace torchtrain {

/// Hyper-parameter values of one trial by name: TrainingArguments fields, and keys of your own that a
/// model_init taking a `const Trial&` reads.
using Trial = std::map<std::string, nlohmann::json>;

/// One of a fixed set of values (numbers, strings, booleans: anything JSON holds).
struct Categorical {
  std::vector<nlohmann::json> choices;
};

/// An integer in [low, high] on a step grid (low, low + step, ...).
struct IntRange {
  std::int64_t low = 0, high = 0, step = 1;
};

/// A float uniform in [low, high]. A grid takes `grid_points` evenly spaced values, low and high included.
struct FloatRange {
  double low = 0, high = 0;
  int grid_points = 0;
};

/// A float whose logarithm is uniform in [log low, log high] (learning rates, weight decays). A grid takes
/// `grid_points` values evenly spaced on the log scale, low and high included.
struct LogUniform {
  double low = 0, high = 0;
  int grid_points = 0;
};

using Distribution = std::variant<Categorical, IntRange, FloatRange, LogUniform>;

/// The hyper-parameters to search, in the order given (which is the order a grid enumerates them in).
///
///     tt::SearchSpace space{{"learning_rate", tt::LogUniform{1e-4, 1e-1, 4}},
///                           {"per_device_train_batch_size", tt::Categorical{{16, 32}}}};
class SearchSpace {
 public:
  SearchSpace() = default;
  SearchSpace(std::initializer_list<std::pair<std::string, Distribution>> parameters) {
    for (const auto& [name, distribution] : parameters) add(name, distribution);
  }

  /// Adds a parameter; a repeated name or an empty or inverted range is an ArgumentError.
  SearchSpace& add(const std::string& name, Distribution distribution) {
    if (name.empty()) throw ArgumentError("SearchSpace: a parameter name is empty");
    for (const auto& p : parameters_)
      if (p.first == name) throw ArgumentError("SearchSpace: '" + name + "' is given twice; give each parameter once");
    validate(name, distribution);
    parameters_.emplace_back(name, std::move(distribution));
    return *this;
  }

  const std::vector<std::pair<std::string, Distribution>>& parameters() const { return parameters_; }
  bool empty() const { return parameters_.empty(); }

  /// `[{"name": ..., "distribution": "log_uniform", "low": ..., ...}, ...]`, as the results file records it.
  nlohmann::json to_json() const {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [name, distribution] : parameters_) {
      nlohmann::json p{{"name", name}};
      std::visit(
          [&](const auto& d) {
            using D = std::decay_t<decltype(d)>;
            if constexpr (std::is_same_v<D, Categorical>) {
              p["distribution"] = "categorical";
              p["choices"] = d.choices;
            } else if constexpr (std::is_same_v<D, IntRange>) {
              p["distribution"] = "int";
              p["low"] = d.low, p["high"] = d.high, p["step"] = d.step;
            } else {
              p["distribution"] = std::is_same_v<D, FloatRange> ? "float" : "log_uniform";
              p["low"] = d.low, p["high"] = d.high, p["grid_points"] = d.grid_points;
            }
          },
          distribution);
      out.push_back(std::move(p));
    }
    return out;
  }

 private:
  static void validate(const std::string& name, const Distribution& distribution) {
    const std::string where = "SearchSpace: '" + name + "' ";
    std::visit(
        [&](const auto& d) {
          using D = std::decay_t<decltype(d)>;
          if constexpr (std::is_same_v<D, Categorical>) {
            if (d.choices.empty()) throw ArgumentError(where + "has no choices; give at least one");
          } else if constexpr (std::is_same_v<D, IntRange>) {
            if (d.step < 1)
              throw ArgumentError(where + "has step " + std::to_string(d.step) + "; it must be at least 1");
            if (d.low > d.high)
              throw ArgumentError(where + "has low " + std::to_string(d.low) + " above high " + std::to_string(d.high));
          } else {
            if (!std::isfinite(d.low) || !std::isfinite(d.high) || d.low > d.high)
              throw ArgumentError(where + "needs finite bounds with low <= high, got [" + nlohmann::json(d.low).dump() +
                                  ", " + nlohmann::json(d.high).dump() + "]");
            if constexpr (std::is_same_v<D, LogUniform>)
              if (d.low <= 0) throw ArgumentError(where + "is log-uniform, so its low bound must be above 0");
            if (d.grid_points < 0) throw ArgumentError(where + "has a negative number of grid points");
          }
        },
        distribution);
  }

  std::vector<std::pair<std::string, Distribution>> parameters_;
};

/// How trials are drawn from a space. Trial k is a pure function of (space, sampler, k), so a search run
/// again continues with the same trials.
///
/// - `Sampler::grid()`: every combination, the last parameter varying fastest. Categorical choices and
///   integer ranges are enumerated; a FloatRange or LogUniform needs `grid_points` (an error otherwise).
/// - `Sampler::random(seed)`: each trial draws each parameter independently from its own SplitMix64 stream
///   seeded by (seed, k); `grid_points` are ignored.
class Sampler {
 public:
  enum class Kind { grid, random };

  static Sampler grid() { return Sampler(Kind::grid, 0); }
  static Sampler random(std::uint64_t seed = 42) { return Sampler(Kind::random, seed); }

  Kind kind() const { return kind_; }
  std::uint64_t seed() const { return seed_; }

  /// How many distinct trials the space holds for this sampler (unbounded for random sampling); a grid
  /// over a continuous range without grid_points is an ArgumentError.
  std::size_t size(const SearchSpace& space) const {
    if (kind_ == Kind::random) return std::numeric_limits<std::size_t>::max();
    std::size_t total = 1;
    for (const auto& [name, distribution] : space.parameters()) {
      const std::size_t n = grid_size(name, distribution);
      if (total > std::numeric_limits<std::size_t>::max() / n)
        throw ArgumentError("Sampler::grid: the grid has more points than can be counted; use fewer values");
      total *= n;
    }
    return total;
  }

  /// Trial number k (from 0).
  Trial sample(const SearchSpace& space, std::size_t k) const {
    Trial trial;
    if (kind_ == Kind::grid) {
      std::size_t rest = k;
      const auto& params = space.parameters();
      for (auto it = params.rbegin(); it != params.rend(); ++it) {
        const std::size_t n = grid_size(it->first, it->second);
        trial[it->first] = grid_value(it->second, rest % n);
        rest /= n;
      }
      return trial;
    }
    detail::SplitMix64 rng{seed_ ^ (0xD1B54A32D192ED03ULL * (static_cast<std::uint64_t>(k) + 1))};
    for (const auto& [name, distribution] : space.parameters()) trial[name] = draw(distribution, rng);
    return trial;
  }

  nlohmann::json to_json() const {
    if (kind_ == Kind::grid) return {{"type", "grid"}};
    return {{"type", "random"}, {"seed", seed_}};
  }

 private:
  Sampler(Kind kind, std::uint64_t seed) : kind_(kind), seed_(seed) {}

  static std::size_t grid_size(const std::string& name, const Distribution& distribution) {
    return std::visit(
        [&](const auto& d) -> std::size_t {
          using D = std::decay_t<decltype(d)>;
          if constexpr (std::is_same_v<D, Categorical>) {
            return d.choices.size();
          } else if constexpr (std::is_same_v<D, IntRange>) {
            return static_cast<std::size_t>((d.high - d.low) / d.step) + 1;
          } else {
            if (d.grid_points < 1)
              throw ArgumentError("Sampler::grid: '" + name +
                                  "' is a continuous range; give it grid_points (e.g. {low, high, 3} for 3 evenly "
                                  "spaced values) or use Categorical, or sample it with Sampler::random");
            return static_cast<std::size_t>(d.grid_points);
          }
        },
        distribution);
  }

  static nlohmann::json grid_value(const Distribution& distribution, std::size_t i) {
    return std::visit(
        [&](const auto& d) -> nlohmann::json {
          using D = std::decay_t<decltype(d)>;
          if constexpr (std::is_same_v<D, Categorical>) {
            return d.choices[i];
          } else if constexpr (std::is_same_v<D, IntRange>) {
            return d.low + static_cast<std::int64_t>(i) * d.step;
          } else {
            if (i + 1 == static_cast<std::size_t>(d.grid_points)) return d.high;  // exactly, not low + rounding
            const double t = d.grid_points == 1 ? 0.0 : static_cast<double>(i) / (d.grid_points - 1);
            return interpolate(d, t);
          }
        },
        distribution);
  }

  static nlohmann::json draw(const Distribution& distribution, detail::SplitMix64& rng) {
    return std::visit(
        [&](const auto& d) -> nlohmann::json {
          using D = std::decay_t<decltype(d)>;
          if constexpr (std::is_same_v<D, Categorical>) {
            return d.choices[rng.below(d.choices.size())];
          } else if constexpr (std::is_same_v<D, IntRange>) {
            const auto n = static_cast<std::uint64_t>((d.high - d.low) / d.step) + 1;
            return d.low + static_cast<std::int64_t>(rng.below(n)) * d.step;
          } else {
            return interpolate(d, rng.uniform());
          }
        },
        distribution);
  }

  // The point a fraction t of the way from low to high, on the distribution's scale. Powers of ten stay exact
  // on the log scale (1e-3, not 0.0010000000000000002).
  static double interpolate(const FloatRange& d, double t) { return d.low + t * (d.high - d.low); }
  static double interpolate(const LogUniform& d, double t) {
    const double lo = std::log10(d.low), hi = std::log10(d.high);
    return std::pow(10.0, lo + t * (hi - lo));
  }

  Kind kind_;
  std::uint64_t seed_;
};

}  // namespace torchtrain

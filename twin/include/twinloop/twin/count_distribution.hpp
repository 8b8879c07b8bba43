// Predicted spike-count distributions: what a twin hypothesis says a unit will do in a trial's
// response window, and the log-likelihood of what it did. Poisson (mean only) and negative
// binomial (mean and over-dispersion, for units whose trial-to-trial variance exceeds the mean).
//
// Plain value types and pure functions; safe from any thread; no allocation.
#pragma once

#include <cstdint>

namespace twinloop::twin {

/// A count distribution. `dispersion` = 0 is Poisson; > 0 is negative binomial with
/// variance = mean + dispersion * mean^2 (the NB2 parameterisation).
struct CountDistribution {
  double mean = 0.0;
  double dispersion = 0.0;

  [[nodiscard]] double variance() const noexcept { return mean + dispersion * mean * mean; }
};

/// log P(count | distribution). Mean 0 gives 0 for count 0 and -inf otherwise.
[[nodiscard]] double log_probability(const CountDistribution& distribution,
                                     std::uint32_t count) noexcept;

}  // namespace twinloop::twin

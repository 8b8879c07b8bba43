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

/// Dispersions at or below this are Poisson. A negative binomial whose size r = 1/dispersion
/// exceeds 1e6 differs from the Poisson by under 1e-6 * mean^2 in variance, but its log-pmf in
/// double precision (lgamma(k + r) - lgamma(r), r log(r / (r + mean))) loses every digit: a
/// method-of-moments dispersion of 5e-17 (the rounding residue of an exact Poisson fit) scored one
/// count about 100 nats wrong, and turned the designer's information estimates negative.
inline constexpr double kPoissonDispersion = 1e-6;

/// Whether `d` is to be treated as Poisson (see kPoissonDispersion).
[[nodiscard]] constexpr bool is_poisson(const CountDistribution& d) noexcept {
  return !(d.dispersion > kPoissonDispersion);
}

/// log P(count | distribution). Mean 0 gives 0 for count 0 and -inf otherwise.
[[nodiscard]] double log_probability(const CountDistribution& distribution,
                                     std::uint32_t count) noexcept;

}  // namespace twinloop::twin

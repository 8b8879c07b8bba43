#include "twinloop/twin/count_distribution.hpp"

#include <cmath>
#include <limits>

namespace twinloop::twin {

double log_probability(const CountDistribution& d, std::uint32_t count) noexcept {
  const double k = static_cast<double>(count);
  if (!(d.mean > 0.0)) return count == 0 ? 0.0 : -std::numeric_limits<double>::infinity();
  if (!(d.dispersion > 0.0)) {
    // Poisson: k log(mu) - mu - log(k!)
    return k * std::log(d.mean) - d.mean - std::lgamma(k + 1.0);
  }
  // Negative binomial with size r = 1/dispersion and success probability p = r / (r + mu):
  // log Gamma(k + r) - log Gamma(r) - log k! + r log p + k log(1 - p)
  const double r = 1.0 / d.dispersion;
  const double log_p = std::log(r / (r + d.mean));
  const double log_q = std::log(d.mean / (r + d.mean));
  return std::lgamma(k + r) - std::lgamma(r) - std::lgamma(k + 1.0) + r * log_p + k * log_q;
}

}  // namespace twinloop::twin

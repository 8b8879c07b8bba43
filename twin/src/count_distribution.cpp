#include "twinloop/twin/count_distribution.hpp"

#include <cmath>
#include <limits>

namespace twinloop::twin {

double log_probability(const CountDistribution& d, std::uint32_t count) noexcept {
  const double k = static_cast<double>(count);
  if (!(d.mean > 0.0)) return count == 0 ? 0.0 : -std::numeric_limits<double>::infinity();
  if (is_poisson(d)) {
    // Poisson: k log(mu) - mu - log(k!)
    return k * std::log(d.mean) - d.mean - std::lgamma(k + 1.0);
  }
  // Negative binomial with size r = 1/dispersion and success probability p = r / (r + mu):
  // log Gamma(k + r) - log Gamma(r) - log k! + r log p + k log(1 - p)
  const double r = 1.0 / d.dispersion;
  // r log p = -r log(1 + mu / r), accurate for small mu / r where log(r / (r + mu)) is not.
  const double r_log_p = -r * std::log1p(d.mean / r);
  const double log_q = std::log(d.mean / (r + d.mean));
  return std::lgamma(k + r) - std::lgamma(r) - std::lgamma(k + 1.0) + r_log_p + k * log_q;
}

}  // namespace twinloop::twin

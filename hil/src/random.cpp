#include "twinloop/hil/details/random.hpp"

#include <cmath>
#include <numbers>

namespace twinloop::hil::details {
namespace {

// Inverse of Phi(x) = erfc(-x / sqrt 2) / 2 by bisection: slow but exact to double precision, and
// it runs once per process.
double normal_quantile(double p) {
  double lo = -12.0;
  double hi = 12.0;
  for (int i = 0; i < 80; ++i) {
    const double mid = 0.5 * (lo + hi);
    const double cdf = 0.5 * std::erfc(-mid / std::numbers::sqrt2);
    (cdf < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

struct GaussianTable {
  std::array<float, kGaussianTableSize> values{};
  GaussianTable() {
    constexpr std::size_t kHalf = kGaussianTableSize / 2;
    double sum_sq = 0.0;
    for (std::size_t i = 0; i < kHalf; ++i) {
      const double p = (static_cast<double>(i) + 0.5) / static_cast<double>(kGaussianTableSize);
      const double q = normal_quantile(p);
      values[i] = static_cast<float>(q);
      values[kGaussianTableSize - 1 - i] = static_cast<float>(-q);  // exact symmetry: zero mean
      sum_sq += 2.0 * q * q;
    }
    // The truncated tails lose ~0.1 % of the variance; put it back so sigma is what was asked for.
    const double scale = 1.0 / std::sqrt(sum_sq / static_cast<double>(kGaussianTableSize));
    for (auto& v : values) v = static_cast<float>(v * scale);
  }
};

}  // namespace

const std::array<float, kGaussianTableSize>& gaussian_table() noexcept {
  static const GaussianTable table;
  return table.values;
}

}  // namespace twinloop::hil::details

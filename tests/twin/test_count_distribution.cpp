// Count distributions against values computed by hand and against their defining sums.
#include <gtest/gtest.h>

#include <cmath>

#include "twinloop/twin/count_distribution.hpp"

namespace twinloop::twin {
namespace {

TEST(CountDistribution, PoissonMatchesClosedForm) {
  // P(3 | 2) = 2^3 e^-2 / 3! = 0.180447...
  EXPECT_NEAR(std::exp(log_probability({2.0, 0.0}, 3)), 8.0 * std::exp(-2.0) / 6.0, 1e-12);
  EXPECT_DOUBLE_EQ(log_probability({0.0, 0.0}, 0), 0.0);
  EXPECT_TRUE(std::isinf(log_probability({0.0, 0.0}, 1)));
}

TEST(CountDistribution, NegativeBinomialSumsToOneWithItsMeanAndVariance) {
  const CountDistribution d{6.0, 0.4};
  double total = 0, mean = 0, second = 0;
  for (std::uint32_t k = 0; k < 2000; ++k) {
    const double p = std::exp(log_probability(d, k));
    total += p;
    mean += k * p;
    second += static_cast<double>(k) * k * p;
  }
  EXPECT_NEAR(total, 1.0, 1e-9);
  EXPECT_NEAR(mean, 6.0, 1e-6);
  EXPECT_NEAR(second - mean * mean, d.variance(), 1e-4);
  EXPECT_DOUBLE_EQ(d.variance(), 6.0 + 0.4 * 36.0);
}

TEST(CountDistribution, SmallDispersionApproachesPoisson) {
  EXPECT_NEAR(log_probability({4.0, 1e-9}, 5), log_probability({4.0, 0.0}, 5), 1e-6);
}

}  // namespace
}  // namespace twinloop::twin

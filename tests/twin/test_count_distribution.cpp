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

// A fitted dispersion that is rounding residue (5e-17 came out of a method-of-moments fit to
// Poisson-like counts) once scored a count about 100 nats away from the Poisson it is.
TEST(CountDistribution, RoundingResidueDispersionScoresAsThePoissonItIs) {
  for (const double residue : {4.68375e-17, 3.1e-16, 1e-12, 1e-7}) {
    for (const std::uint32_t k : {0u, 1u, 3u, 9u, 40u}) {
      EXPECT_NEAR(log_probability({2.66667, residue}, k), log_probability({2.66667, 0.0}, k), 1e-5)
          << "dispersion " << residue << ", count " << k;
    }
  }
  // Just above the Poisson cut the negative binomial is still computed, and still accurate.
  const CountDistribution near{30.0, 2e-6};
  double total = 0.0, second = 0.0;
  for (std::uint32_t k = 0; k < 200; ++k) {
    const double p = std::exp(log_probability(near, k));
    total += p;
    second += (k - 30.0) * (k - 30.0) * p;
  }
  EXPECT_NEAR(total, 1.0, 1e-9);
  EXPECT_NEAR(second, near.variance(), 1e-4);
}

}  // namespace
}  // namespace twinloop::twin

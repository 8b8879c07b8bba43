// details/random.hpp: seeded streams repeat, the Gaussian table has unit variance and the gamma
// sampler the asked-for moments.
#include <gtest/gtest.h>

#include <cmath>

#include "twinloop/hil/details/random.hpp"

namespace twinloop::hil::details {
namespace {

TEST(Random, SameSeedSameStreamDifferentSeedDifferent) {
  Xoshiro256pp a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    differs |= x != c.next();
  }
  EXPECT_TRUE(differs);
  EXPECT_NE(derive_seed(1, 0), derive_seed(1, 1));
  EXPECT_NE(derive_seed(1, 0), derive_seed(2, 0));
}

TEST(Random, GaussianTableIsStandardNormal) {
  const auto& t = gaussian_table();
  double sum = 0.0, sum_sq = 0.0, sum_4 = 0.0;
  for (float v : t) {
    sum += v;
    sum_sq += double(v) * v;
    sum_4 += double(v) * v * v * v;
  }
  const double n = static_cast<double>(t.size());
  EXPECT_NEAR(sum / n, 0.0, 1e-6);
  EXPECT_NEAR(sum_sq / n, 1.0, 1e-4);
  EXPECT_NEAR(sum_4 / n, 3.0, 0.05);  // kurtosis of a normal, tails cut near 4.2 sigma
  EXPECT_GT(t.back(), 4.0f);
}

TEST(Random, GammaHasShapeMeanAndVariance) {
  Xoshiro256pp rng(5);
  for (double shape : {0.5, 2.0, 4.0}) {
    double sum = 0.0, sum_sq = 0.0;
    constexpr int kN = 200000;
    for (int i = 0; i < kN; ++i) {
      const double g = rng.gamma(shape);
      sum += g;
      sum_sq += g * g;
    }
    const double mean = sum / kN;
    EXPECT_NEAR(mean, shape, 0.02 * shape + 0.01) << shape;
    EXPECT_NEAR(sum_sq / kN - mean * mean, shape, 0.05 * shape) << shape;
  }
}

}  // namespace
}  // namespace twinloop::hil::details

// RandomStrategy: uniform over allowed candidates, never a disallowed one, reproducible by seed.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <vector>

#include "twinloop/designer/random_strategy.hpp"

namespace twinloop::designer {
namespace {

TEST(RandomStrategy, SameSeedSameChoices) {
  RandomStrategy a(42), b(42), c(43);
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.choose(48u);
    EXPECT_EQ(x, b.choose(48u));
    differ += x != c.choose(48u) ? 1 : 0;
  }
  EXPECT_GT(differ, 80);
}

TEST(RandomStrategy, UniformOverCandidates) {
  RandomStrategy s(7);
  std::array<int, 8> counts{};
  constexpr int kDraws = 80000;
  for (int i = 0; i < kDraws; ++i) ++counts[s.choose(8u)];
  for (int n : counts) EXPECT_NEAR(n, kDraws / 8, 5 * std::sqrt(kDraws / 8.0)) << "5 sigma";
}

TEST(RandomStrategy, OnlyAllowedCandidatesAndNoneWhenExhausted) {
  RandomStrategy s(1);
  const std::array<bool, 5> allowed{false, true, false, true, false};
  std::array<int, 5> counts{};
  for (int i = 0; i < 1000; ++i) {
    const auto pick = s.choose(allowed);
    ASSERT_TRUE(pick.has_value());
    ++counts[*pick];
  }
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);
  EXPECT_GT(counts[1], 400);
  EXPECT_GT(counts[3], 400);
  const std::array<bool, 3> none{false, false, false};
  EXPECT_FALSE(s.choose(none).has_value());
}

}  // namespace
}  // namespace twinloop::designer

// WindowCounter: half-open windows, overlapping windows, completion and slot reuse.
#include <gtest/gtest.h>

#include "twinloop/acquisition/window_counter.hpp"

namespace twinloop::acquisition {
namespace {

TEST(WindowCounter, CountsHalfOpenWindowsPerChannel) {
  WindowCounter counter(4, 2);
  const auto a = counter.open(100, 200);
  const auto b = counter.open(150, 300);
  ASSERT_TRUE(a && b);
  counter.add_events(std::vector<SpikeEvent>{{99, 0, -1.f},
                                             {100, 0, -1.f},
                                             {150, 1, -1.f},
                                             {199, 1, -1.f},
                                             {200, 2, -1.f},
                                             {299, 3, -1.f}});
  EXPECT_EQ(std::vector<std::uint32_t>(counter.counts(*a).begin(), counter.counts(*a).end()),
            (std::vector<std::uint32_t>{1, 2, 0, 0}));
  EXPECT_EQ(std::vector<std::uint32_t>(counter.counts(*b).begin(), counter.counts(*b).end()),
            (std::vector<std::uint32_t>{0, 2, 1, 1}));
}

TEST(WindowCounter, CompleteOnlyWhenAllEventsBeforeEndArePublished) {
  WindowCounter counter(1, 1);
  const auto w = counter.open(0, 100);
  ASSERT_TRUE(w);
  EXPECT_FALSE(counter.complete(*w, 99));
  EXPECT_TRUE(counter.complete(*w, 100));
}

TEST(WindowCounter, RefusesWhenFullAndReusesClosedSlots) {
  WindowCounter counter(2, 1);
  const auto first = counter.open(0, 10);
  ASSERT_TRUE(first);
  EXPECT_FALSE(counter.open(10, 20));
  EXPECT_FALSE(counter.open(5, 5)) << "an empty window";
  counter.add_event({3, 1, -1.f});
  counter.close(*first);
  const auto second = counter.open(10, 20);
  ASSERT_TRUE(second);
  EXPECT_EQ(counter.counts(*second)[1], 0u) << "counts start from zero in a reused slot";
}

TEST(WindowCounter, IgnoresEventsOnUnknownChannels) {
  WindowCounter counter(2, 1);
  const auto w = counter.open(0, 10);
  counter.add_event({1, 7, -1.f});
  EXPECT_EQ(counter.counts(*w)[0] + counter.counts(*w)[1], 0u);
}

}  // namespace
}  // namespace twinloop::acquisition

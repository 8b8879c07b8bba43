// StimulusSpace lookups and Stimulus construction on a hand-built space.
#include <gtest/gtest.h>

#include <stdexcept>

#include "twinloop/protocols/stimulus_space.hpp"

namespace twinloop::protocols {
namespace {

StimulusSpace two_by_two() {
  StimulusSpace space;
  space.kind = StimulusKind::kElectrical;
  space.dimensions = {{"amplitude", "uA", {-10, 10}}, {"width", "us", {100, 200}}};
  space.candidate_values = {-10, 100, -10, 200, 10, 100, 10, 200};
  return space;
}

TEST(StimulusSpace, FindsDimensionsByName) {
  const auto space = two_by_two();
  EXPECT_EQ(space.dimension_index("width"), 1u);
  EXPECT_FALSE(space.dimension_index("Width").has_value());
  ASSERT_NE(space.find_dimension("amplitude"), nullptr);
  EXPECT_EQ(space.find_dimension("amplitude")->unit, "uA");
  EXPECT_EQ(space.find_dimension("phase"), nullptr);
}

TEST(StimulusSpace, MakesStimulusForCandidate) {
  const auto space = two_by_two();
  ASSERT_EQ(space.candidate_count(), 4u);
  const Stimulus s = space.stimulus(2);
  EXPECT_EQ(s.candidate, 2u);
  EXPECT_EQ(s.dimension_count, 2);
  EXPECT_DOUBLE_EQ(s.value(0), 10);
  EXPECT_DOUBLE_EQ(s.value(1), 100);
  EXPECT_DOUBLE_EQ(s.value(2), 0);  // unused dimensions stay zero
}

TEST(StimulusSpace, RejectsOutOfRangeIndices) {
  const auto space = two_by_two();
  EXPECT_THROW((void)space.stimulus(4), std::out_of_range);
  EXPECT_THROW((void)space.candidate_value(0, 2), std::out_of_range);
  EXPECT_EQ(StimulusSpace{}.candidate_count(), 0u);
  EXPECT_THROW((void)StimulusSpace{}.stimulus(0), std::out_of_range);
}

TEST(StimulusSpace, KindNamesMatchTheYamlSpelling) {
  EXPECT_EQ(to_string(StimulusKind::kOptogenetic), "optogenetic");
  EXPECT_EQ(to_string(StimulusKind::kElectrical), "electrical");
}

}  // namespace
}  // namespace twinloop::protocols

// The shipped example protocols in config/examples load cleanly and mean what they say.
#include <gtest/gtest.h>

#include <string>

#include "twinloop/protocols/loader.hpp"

namespace twinloop::protocols {
namespace {

ProtocolLoadResult load_example(const std::string& name) {
  return load_protocol_file(std::string(TWINLOOP_CONFIG_DIR) + "/examples/" + name);
}

TEST(ExampleProtocols, GratingsLoads) {
  const auto result = load_example("protocol_gratings.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& p = *result.protocol;
  EXPECT_EQ(p.stimulus.kind, StimulusKind::kGrating);
  ASSERT_NE(p.stimulus.find_dimension("direction"), nullptr);
  EXPECT_EQ(p.stimulus.find_dimension("direction")->values.size(), 16u);
  EXPECT_DOUBLE_EQ(p.stimulus.find_dimension("direction")->values.back(), 337.5);
  EXPECT_EQ(p.stimulus.candidate_count(), 48u);
  ASSERT_EQ(p.probes.size(), 1u);
  EXPECT_EQ(p.probes[0].type, ProbeType::kNP1000);
  EXPECT_EQ(p.probes[0].source, ProbeSourceKind::kSim);
  EXPECT_EQ(p.hypotheses.size(), 3u);
  EXPECT_EQ(p.hypotheses[0].params.at("preferred_deg"), 90.0);
}

TEST(ExampleProtocols, OptogeneticLoads) {
  const auto result = load_example("protocol_optogenetic.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& p = *result.protocol;
  EXPECT_EQ(p.stimulus.kind, StimulusKind::kOptogenetic);
  EXPECT_EQ(p.stimulus.candidate_count(), 12u);
  EXPECT_EQ(p.safety.duration_dimension, "pulse_ms");
  const auto* pulse = p.stimulus.find_dimension("pulse_ms");
  ASSERT_NE(pulse, nullptr);
  ASSERT_EQ(pulse->values.size(), 3u);
  EXPECT_DOUBLE_EQ(pulse->values[1], 12.5);
  EXPECT_EQ(p.probes[0].type, ProbeType::kNP2000);
  EXPECT_EQ(p.probes[0].channels, 384);
}

TEST(ExampleProtocols, DirectionVsOrientationLoads) {
  const auto result = load_example("protocol_direction_vs_orientation.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& p = *result.protocol;
  EXPECT_EQ(p.stimulus.candidate_count(), 128u);
  ASSERT_EQ(p.hypotheses.size(), 3u);
  EXPECT_EQ(p.hypotheses[0].family, HypothesisFamily::kDirectionTuning);
  EXPECT_EQ(p.hypotheses[1].family, HypothesisFamily::kOrientationTuning);
  EXPECT_EQ(p.hypotheses[2].family, HypothesisFamily::kNull);
  const auto* contrast = p.stimulus.find_dimension("contrast");
  ASSERT_NE(contrast, nullptr);
  ASSERT_EQ(contrast->values.size(), 8u);
  for (std::size_t i = 1; i < contrast->values.size(); ++i) {  // log-spaced: a constant ratio
    EXPECT_NEAR(contrast->values[i] / contrast->values[i - 1], 1.748, 0.01) << i;
  }
}

TEST(ExampleProtocols, DirectionOrientationSpatialFrequencyLoads) {
  const auto result = load_example("protocol_direction_orientation_sf.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& p = *result.protocol;
  EXPECT_EQ(p.stimulus.candidate_count(), 16u * 4u * 5u);
  const auto* sf = p.stimulus.find_dimension("spatial_frequency");
  ASSERT_NE(sf, nullptr);
  EXPECT_EQ(sf->unit, "cpd");
  ASSERT_EQ(sf->values.size(), 5u);
  for (std::size_t i = 1; i < sf->values.size(); ++i) {  // octave-spaced
    EXPECT_DOUBLE_EQ(sf->values[i] / sf->values[i - 1], 2.0) << i;
  }
  ASSERT_EQ(p.hypotheses.size(), 3u);
  EXPECT_EQ(p.hypotheses[1].family, HypothesisFamily::kOrientationTuning);
}

}  // namespace
}  // namespace twinloop::protocols

// score_detection on hand-made cases: tolerance in time and space, one-to-one matching, and the
// SNR filter applying to recall only.
#include <gtest/gtest.h>

#include <vector>

#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::acquisition {
namespace {

const drivers::ProbeGeometry kGeometry = drivers::neuropixels1_geometry(384);

TEST(DetectionScore, MatchesWithinToleranceOnly) {
  // Unit 0 peaks on channel 100 (z = 1000 µm); channel 110 is 100 µm away.
  const std::vector<TruthUnit> units{{100, 10.0}};
  const std::vector<TruthSpike> truth{{1000, 0}, {2000, 0}, {3000, 0}, {4000, 0}};
  const std::vector<SpikeEvent> detected{
      {1010, 100, -50.f},  // 10 samples late: match
      {2016, 100, -50.f},  // 16 samples late: outside ±15
      {3000, 110, -50.f},  // right time, 100 µm away: no match
      {4000, 102, -50.f},  // 20 µm away: match
  };
  const DetectionScore s = score_detection(detected, truth, units, kGeometry, ScoreOptions{});
  EXPECT_EQ(s.truth_spikes, 4u);
  EXPECT_EQ(s.truth_matched, 2u);
  EXPECT_EQ(s.detected, 4u);
  EXPECT_EQ(s.detected_matched, 2u);
  EXPECT_DOUBLE_EQ(s.recall(), 0.5);
  EXPECT_DOUBLE_EQ(s.precision(), 0.5);
}

TEST(DetectionScore, EachEventMatchesOneSpike) {
  const std::vector<TruthUnit> units{{100, 10.0}, {101, 10.0}};
  const std::vector<TruthSpike> truth{{1000, 0}, {1002, 1}};
  const std::vector<SpikeEvent> detected{{1001, 100, -80.f}};
  const DetectionScore s = score_detection(detected, truth, units, kGeometry, ScoreOptions{});
  EXPECT_EQ(s.truth_matched, 1u);
  EXPECT_EQ(s.detected_matched, 1u);
}

TEST(DetectionScore, LowSnrUnitsCountForPrecisionNotRecall) {
  const std::vector<TruthUnit> units{{100, 10.0}, {200, 3.0}};
  const std::vector<TruthSpike> truth{{1000, 0}, {1500, 1}, {2500, 1}};
  const std::vector<SpikeEvent> detected{{1000, 100, -60.f}, {1500, 200, -20.f}};
  const DetectionScore s = score_detection(detected, truth, units, kGeometry, ScoreOptions{});
  EXPECT_EQ(s.truth_spikes, 1u);  // only the SNR 10 unit
  EXPECT_EQ(s.truth_matched, 1u);
  EXPECT_EQ(s.detected_matched, 2u);  // the SNR 3 spike was real
  EXPECT_EQ(s.units[1].spikes, 2u);
  EXPECT_EQ(s.units[1].matched, 1u);
}

TEST(DetectionScore, RangeLimitsBothSides) {
  const std::vector<TruthUnit> units{{100, 10.0}};
  const std::vector<TruthSpike> truth{{500, 0}, {1500, 0}};
  const std::vector<SpikeEvent> detected{{500, 100, -60.f}, {900, 100, -60.f}, {1500, 100, -60.f}};
  ScoreOptions options;
  options.from_sample = 1000;
  const DetectionScore s = score_detection(detected, truth, units, kGeometry, options);
  EXPECT_EQ(s.truth_spikes, 1u);
  EXPECT_EQ(s.detected, 1u);
  EXPECT_DOUBLE_EQ(s.precision(), 1.0);
}

}  // namespace
}  // namespace twinloop::acquisition

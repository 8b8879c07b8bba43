// response_models: the tuning curves have the shapes they claim; adaptation decays and recovers;
// untuned units ignore the stimulus.
#include <gtest/gtest.h>

#include <cmath>

#include "twinloop/hil/response_models.hpp"

namespace twinloop::hil {
namespace {

ResponseParams tuned(ResponseKind kind) {
  ResponseParams p;
  p.kind = kind;
  p.baseline_hz = 5.0;
  p.preferred_deg = 90.0;
  p.kappa = 2.0;
  p.peak_evoked_hz = 30.0;
  p.c50 = 0.2;
  p.nr_exponent = 2.0;
  return p;
}

TEST(ResponseModels, VonMisesPeaksAtPreferredAndIsSymmetric) {
  EXPECT_DOUBLE_EQ(von_mises_factor(90.0, 90.0, 2.0), 1.0);
  EXPECT_NEAR(von_mises_factor(270.0, 90.0, 2.0), std::exp(-4.0), 1e-12);
  EXPECT_NEAR(von_mises_factor(60.0, 90.0, 2.0), von_mises_factor(120.0, 90.0, 2.0), 1e-12);
  EXPECT_NEAR(von_mises_factor(-270.0, 90.0, 2.0), 1.0, 1e-12);  // angles wrap
  EXPECT_DOUBLE_EQ(von_mises_factor(std::nan(""), 90.0, 2.0), 1.0);
}

TEST(ResponseModels, NakaRushtonSaturatesWithHalfAtC50) {
  EXPECT_DOUBLE_EQ(naka_rushton(0.0, 0.2, 2.0), 0.0);
  EXPECT_NEAR(naka_rushton(0.2, 0.2, 2.0), 0.5, 1e-12);
  EXPECT_GT(naka_rushton(1.0, 0.2, 2.0), 0.95);
  EXPECT_DOUBLE_EQ(naka_rushton(3.0, 0.2, 2.0), naka_rushton(1.0, 0.2, 2.0));  // clamped
  EXPECT_LT(naka_rushton(0.1, 0.2, 2.0), naka_rushton(0.3, 0.2, 2.0));
}

TEST(ResponseModels, DirectionTunedIsVonMisesTimesNakaRushton) {
  const auto p = tuned(ResponseKind::kDirectionTuned);
  const StimulusFeatures pref{90.0, 0.5};
  EXPECT_NEAR(mean_window_rate_hz(p, pref), 5.0 + 30.0 * naka_rushton(0.5, 0.2, 2.0), 1e-9);
  EXPECT_GT(mean_window_rate_hz(p, pref), mean_window_rate_hz(p, {270.0, 0.5}));
  EXPECT_DOUBLE_EQ(mean_window_rate_hz(p, {90.0, 0.0}), 5.0);  // no contrast: baseline
}

TEST(ResponseModels, SpatialFrequencyTuningIsALogGaussianOnTheEvokedPart) {
  EXPECT_DOUBLE_EQ(spatial_frequency_factor(0.04, 0.04, 0.6), 1.0);
  // Half height at sqrt(2 ln 2) sigma octaves either side, symmetric on the log axis.
  const double half = std::sqrt(2.0 * std::log(2.0)) * 0.6;
  EXPECT_NEAR(spatial_frequency_factor(0.04 * std::exp2(half), 0.04, 0.6), 0.5, 1e-12);
  EXPECT_NEAR(spatial_frequency_factor(0.04 * std::exp2(-half), 0.04, 0.6), 0.5, 1e-12);
  // Not tuned: no frequency, no width, or a frequency that is not positive.
  EXPECT_DOUBLE_EQ(spatial_frequency_factor(std::nan(""), 0.04, 0.6), 1.0);
  EXPECT_DOUBLE_EQ(spatial_frequency_factor(0.32, 0.04, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(spatial_frequency_factor(0.0, 0.04, 0.6), 1.0);

  auto p = tuned(ResponseKind::kDirectionTuned);
  p.preferred_sf_cpd = 0.04;
  p.sf_sigma_octaves = 0.6;
  const double full = mean_window_rate_hz(p, {90.0, 1.0, 0.04});
  EXPECT_NEAR(mean_window_rate_hz(p, {90.0, 1.0}), full, 1e-12);  // no SF given: the preferred
  const double two_octaves_off = mean_window_rate_hz(p, {90.0, 1.0, 0.16});
  EXPECT_NEAR(two_octaves_off - 5.0, (full - 5.0) * spatial_frequency_factor(0.16, 0.04, 0.6),
              1e-9);
  EXPECT_LT(two_octaves_off - 5.0, 0.01 * (full - 5.0));  // the baseline stays
  EXPECT_GE(two_octaves_off, 5.0);
}

TEST(ResponseModels, BimodalHasTwoLobesWithTheirOwnGains) {
  auto p = tuned(ResponseKind::kBimodal);
  p.second_preferred_deg = 270.0;
  p.second_peak_evoked_hz = 15.0;
  const double at_first = mean_window_rate_hz(p, {90.0, 1.0});
  const double at_second = mean_window_rate_hz(p, {270.0, 1.0});
  const double between = mean_window_rate_hz(p, {0.0, 1.0});
  EXPECT_GT(at_first, at_second);
  EXPECT_GT(at_second, between);
  EXPECT_GT(at_second - 5.0, 0.4 * (at_first - 5.0));
}

TEST(ResponseModels, OrientationTunedIsVonMisesOfTheDoubledAngle) {
  const auto p = tuned(ResponseKind::kOrientationTuned);
  const double nr = naka_rushton(1.0, 0.2, 2.0);
  EXPECT_NEAR(mean_window_rate_hz(p, {90.0, 1.0}), 5.0 + 30.0 * nr, 1e-9);
  EXPECT_NEAR(mean_window_rate_hz(p, {270.0, 1.0}), mean_window_rate_hz(p, {90.0, 1.0}), 1e-9);
  // 45 deg off: cos(2 x 45 deg) = 0, so the factor is exp(-kappa); 90 deg off: exp(-2 kappa).
  EXPECT_NEAR(mean_window_rate_hz(p, {135.0, 1.0}), 5.0 + 30.0 * nr * std::exp(-2.0), 1e-9);
  EXPECT_NEAR(mean_window_rate_hz(p, {0.0, 1.0}), 5.0 + 30.0 * nr * std::exp(-4.0), 1e-9);
  EXPECT_EQ(to_string(ResponseKind::kOrientationTuned), "orientation_tuned");
}

TEST(ResponseModels, AdaptationDecaysWithRepetitionAndRecovers) {
  auto p = tuned(ResponseKind::kAdapting);
  p.adaptation_tau_s = 2.0;
  p.adaptation_strength = 2.0;
  ResponseState s;
  const StimulusFeatures pref{90.0, 1.0};
  const double first = trial_window_rate_hz(p, s, pref, 0.0, 1.0);
  const double second = trial_window_rate_hz(p, s, pref, 0.5, 1.0);
  const double third = trial_window_rate_hz(p, s, pref, 1.0, 1.0);
  EXPECT_NEAR(first, mean_window_rate_hz(p, pref), 1e-9);
  EXPECT_LT(second, first);
  EXPECT_LT(third, second);
  const double rested = trial_window_rate_hz(p, s, pref, 60.0, 1.0);
  EXPECT_NEAR(rested, first, 1e-3 * first);
  // The null direction drives little, so it adapts little.
  ResponseState n;
  const double null1 = trial_window_rate_hz(p, n, {270.0, 1.0}, 0.0, 1.0);
  const double null2 = trial_window_rate_hz(p, n, {270.0, 1.0}, 0.5, 1.0);
  EXPECT_GT(null2, 0.98 * null1);
}

TEST(ResponseModels, GainScalesOnlyGainFluctuatingUnits) {
  ResponseState s;
  const StimulusFeatures pref{90.0, 1.0};
  const auto g = tuned(ResponseKind::kGainFluctuating);
  EXPECT_NEAR(trial_window_rate_hz(g, s, pref, 0.0, 2.0), 2.0 * mean_window_rate_hz(g, pref), 1e-9);
  const auto d = tuned(ResponseKind::kDirectionTuned);
  EXPECT_NEAR(trial_window_rate_hz(d, s, pref, 0.0, 2.0), mean_window_rate_hz(d, pref), 1e-9);
}

TEST(ResponseModels, UntunedIgnoresTheStimulus) {
  auto p = tuned(ResponseKind::kUntuned);
  ResponseState s;
  for (double dir : {0.0, 90.0, 180.0}) {
    EXPECT_DOUBLE_EQ(trial_window_rate_hz(p, s, {dir, 1.0}, 0.0, 1.0), 5.0);
  }
  EXPECT_EQ(to_string(ResponseKind::kUntuned), "untuned");
}

}  // namespace
}  // namespace twinloop::hil

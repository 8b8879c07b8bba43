// SimulatedStimulator: onsets respect the earliest sample and the generator's position; stimuli
// drive the units as their models say (tuning, over-dispersion), also across threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "hil_test_helpers.hpp"

namespace twinloop::hil {
namespace {

using testing::fano;
using testing::fast_config;
using testing::grating;
using testing::latency_samples;
using testing::present;

TEST(SimulatedStimulator, OnsetIsAtLeastEarliestAndPastTheGeneratedSamples) {
  auto rig = make_simulated_rig(fast_config(0.0));
  ASSERT_TRUE(rig.probe->start());
  drivers::SampleBlock block;
  block.allocate(300, 385);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(rig.probe->read(block), drivers::ReadStatus::kOk);
  const std::int64_t generated = rig.subject->generated_until();
  ASSERT_EQ(generated, 3000);
  drivers::StimulusCommand cmd;
  cmd.stimulus = grating(0.0, 1.0);
  cmd.duration_samples = 300;
  cmd.earliest_onset_sample = 0;  // already past: the onset moves to the next free sample
  auto onset = rig.stimulator->deliver(cmd);
  ASSERT_TRUE(onset.delivered);
  EXPECT_EQ(onset.onset_sample, generated + rig.subject->onset_latency_samples());
  EXPECT_EQ(rig.subject->onset_latency_samples(), 30);
  cmd.earliest_onset_sample = 100000;
  onset = rig.stimulator->deliver(cmd);
  EXPECT_EQ(onset.onset_sample, 100000);
  cmd.duration_samples = -1;
  EXPECT_FALSE(rig.stimulator->deliver(cmd).delivered);
  EXPECT_FALSE(rig.stimulator->last_error().empty());
  ASSERT_EQ(rig.probe->read(block), drivers::ReadStatus::kOk);
  const auto truth = rig.subject->ground_truth();
  ASSERT_EQ(truth.trials.size(), 2u);
  EXPECT_EQ(truth.trials[0].onset_sample, 3030);
  EXPECT_FALSE(truth.trials[0].late);
  EXPECT_EQ(rig.subject->late_stimuli(), 0u);
}

TEST(SimulatedStimulator, FullHandOffQueueIsRefusedAndCounted) {
  auto rig = make_simulated_rig(fast_config(0.0));
  drivers::StimulusCommand cmd;
  cmd.duration_samples = 10;
  int refused = 0;
  for (int i = 0; i < 300; ++i) refused += !rig.stimulator->deliver(cmd).delivered;
  EXPECT_GT(refused, 0);
  EXPECT_EQ(rig.subject->dropped_stimuli(), static_cast<std::uint64_t>(refused));
}

TEST(SimulatedStimulator, TunedUnitFiresMoreAtPreferredThanAtNullDirection) {
  auto c = testing::white_only(fast_config(0.0));
  c.unit_count = 8;
  c.mix = ResponseMix{1, 0, 0, 0, 0};
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const auto& unit = rig.subject->units()[0];
  ASSERT_EQ(unit.response.kind, ResponseKind::kDirectionTuned);
  const double pref = unit.response.preferred_deg;
  std::vector<protocols::Stimulus> stimuli;
  for (int i = 0; i < 60; ++i) stimuli.push_back(grating(i % 2 ? pref + 180.0 : pref, 1.0));
  const std::int64_t dur = 9000;  // 300 ms
  const auto onsets = present(rig, stimuli, dur, 15000);
  const auto truth = rig.subject->ground_truth();
  ASSERT_EQ(truth.trials.size(), 60u);
  const std::int64_t lat = latency_samples(unit, 30000.0);
  double at_pref = 0.0, at_null = 0.0;
  for (std::size_t i = 0; i < onsets.size(); ++i) {
    EXPECT_EQ(truth.trials[i].onset_sample, onsets[i]);
    const auto n = double(truth.count_spikes(0, onsets[i] + lat, onsets[i] + lat + dur));
    (i % 2 ? at_null : at_pref) += n;
  }
  const double expected_pref = mean_window_rate_hz(unit.response, {pref, 1.0}) * 0.3 * 30;
  EXPECT_NEAR(at_pref, expected_pref, 4.0 * std::sqrt(expected_pref));
  EXPECT_GT(at_pref, 1.5 * at_null + 20.0);
}

TEST(SimulatedStimulator, SpatialFrequencyTunedUnitsAnswerTheirPreferredFrequency) {
  auto c = testing::white_only(fast_config(0.0, 9));
  c.unit_count = 8;
  c.mix = ResponseMix{1, 0, 0, 0, 1};  // half tuned, half untuned
  c.direction_dimension = -1;          // every tuned unit at its preferred direction
  auto plain = make_simulated_rig(c);
  c.spatial_frequency_dimension = 2;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  // The same units as without the dimension, plus an SF preference in the configured range.
  for (std::size_t u = 0; u < c.unit_count; ++u) {
    const ResponseParams& with = rig.subject->units()[u].response;
    const ResponseParams& without = plain.subject->units()[u].response;
    EXPECT_EQ(with.peak_evoked_hz, without.peak_evoked_hz) << u;
    EXPECT_EQ(without.sf_sigma_octaves, 0.0) << u;
    EXPECT_EQ(with.sf_sigma_octaves, c.sf_sigma_octaves) << u;
    EXPECT_GE(with.preferred_sf_cpd, c.min_preferred_sf_cpd) << u;
    EXPECT_LE(with.preferred_sf_cpd, c.max_preferred_sf_cpd) << u;
  }
  // Alternate the tuned unit 0's preferred frequency and 3 octaves above it.
  const ResponseParams& unit = rig.subject->units()[0].response;
  ASSERT_EQ(unit.kind, ResponseKind::kDirectionTuned);
  std::vector<protocols::Stimulus> stimuli;
  for (int i = 0; i < 40; ++i) {
    protocols::Stimulus s = grating(0.0, 1.0);
    s.dimension_count = 3;
    s.values[2] = unit.preferred_sf_cpd * (i % 2 ? 8.0 : 1.0);
    stimuli.push_back(s);
  }
  (void)present(rig, stimuli, 9000, 15000);
  const auto truth = rig.subject->ground_truth();
  ASSERT_EQ(truth.trials.size(), 40u);
  const std::size_t n = truth.units.size();
  for (std::size_t u = 0; u < n; ++u) {
    const ResponseParams& r = truth.units[u].response;
    const double at_pref = truth.trial_rates_hz[u];  // trial 0 is at unit 0's frequency
    const double far = truth.trial_rates_hz[n + u];
    if (r.kind == ResponseKind::kUntuned) {
      EXPECT_DOUBLE_EQ(at_pref, far) << u;
    } else {
      const double expected_far =
          mean_window_rate_hz(r, {std::nan(""), 1.0, unit.preferred_sf_cpd * 8.0});
      EXPECT_NEAR(far, expected_far, 1e-3 * expected_far) << u;
    }
  }
  EXPECT_GT(truth.trial_rates_hz[0], truth.trial_rates_hz[n] + 0.5 * unit.peak_evoked_hz);
}

// Gamma gain per trial makes counts over-dispersed (Fano 1 + mu / k); a stimulus-independent
// Poisson unit stays near Fano 1.
TEST(SimulatedStimulator, GainFluctuationOverDispersesCountsAndPoissonDoesNot) {
  auto c = testing::white_only(fast_config(0.0, 21));
  c.unit_count = 20;
  c.mix = ResponseMix{0, 0, 0, 1, 1};
  c.direction_dimension = -1;  // no direction: every unit is driven at its preferred one
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const std::vector<protocols::Stimulus> stimuli(120, grating(0.0, 1.0));
  const std::int64_t dur = 15000;  // 500 ms
  const auto onsets = present(rig, stimuli, dur, 21000);
  const auto truth = rig.subject->ground_truth();
  double gain_fano = 0.0, poisson_fano = 0.0;
  int gain_units = 0, poisson_units = 0;
  for (const auto& u : truth.units) {
    std::vector<double> counts;
    const std::int64_t lat = latency_samples(u, 30000.0);
    for (auto onset : onsets) {
      counts.push_back(double(truth.count_spikes(u.id, onset + lat, onset + lat + dur)));
    }
    const double f = fano(counts);
    if (u.response.kind == ResponseKind::kGainFluctuating) {
      gain_fano += f, ++gain_units;
      EXPECT_GT(f, 1.3) << u.id;
    } else {
      poisson_fano += f, ++poisson_units;
    }
  }
  ASSERT_EQ(gain_units, 10);
  ASSERT_EQ(poisson_units, 10);
  EXPECT_GT(gain_fano / gain_units, 2.0);
  EXPECT_NEAR(poisson_fano / poisson_units, 1.0, 0.15);
}

TEST(SimulatedStimulator, AdaptingUnitRespondsLessToRepeatedStimuli) {
  auto c = testing::white_only(fast_config(0.0, 5));
  c.unit_count = 10;
  c.mix = ResponseMix{0, 0, 1, 0, 0};
  c.direction_dimension = -1;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const std::vector<protocols::Stimulus> stimuli(20, grating(0.0, 1.0));
  (void)present(rig, stimuli, 9000, 12000);
  const auto truth = rig.subject->ground_truth();
  const std::size_t n = truth.units.size();
  for (std::size_t u = 0; u < n; ++u) {
    EXPECT_LT(truth.trial_rates_hz[19 * n + u], 0.8 * truth.trial_rates_hz[u]) << u;
  }
}

// The session thread delivers while the acquisition thread reads at max pace: every onset is
// past its earliest sample and the generator's position, and every stimulus is applied.
TEST(SimulatedStimulator, HandsStimuliToAGeneratorOnAnotherThread) {
  auto rig = make_simulated_rig(fast_config(4.0));
  ASSERT_TRUE(rig.probe->start());
  std::thread reader([&] {
    drivers::SampleBlock block;
    block.allocate(30, 385);
    while (rig.probe->read(block) == drivers::ReadStatus::kOk) {
    }
  });
  std::vector<std::int64_t> onsets;
  for (int i = 0; i < 50; ++i) {
    drivers::StimulusCommand cmd;
    cmd.trial = std::uint64_t(i);
    cmd.stimulus = grating(45.0 * i, 1.0);
    cmd.earliest_onset_sample = 1000 * i;
    cmd.duration_samples = 3000;
    const std::int64_t before = rig.subject->generated_until();
    const auto onset = rig.stimulator->deliver(cmd);
    ASSERT_TRUE(onset.delivered);
    EXPECT_GE(onset.onset_sample, cmd.earliest_onset_sample);
    EXPECT_GE(onset.onset_sample, before + rig.subject->onset_latency_samples());
    onsets.push_back(onset.onset_sample);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  reader.join();
  const auto truth = rig.subject->ground_truth();
  const auto applied = truth.trials.size() + rig.subject->dropped_stimuli();
  EXPECT_LE(applied, 50u);  // stimuli delivered after the stream ended are never applied
  for (std::size_t i = 0; i < truth.trials.size(); ++i) {
    EXPECT_EQ(truth.trials[i].trial, i);
    EXPECT_EQ(truth.trials[i].onset_sample, onsets[i]);
  }
}

}  // namespace
}  // namespace twinloop::hil

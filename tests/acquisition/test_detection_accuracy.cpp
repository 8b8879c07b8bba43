// Detection accuracy against the simulated subject's ground truth: 60 s of a 384-channel
// Neuropixels 1.0 recording (fixed seed) streamed through the detector in 1 ms blocks, as a live
// rig would deliver it. Detected events must match the spikes of units with peak SNR >= 5 within
// ±0.5 ms on a site within 50 µm, with recall and precision of at least 0.90.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/acquisition/spike_detector.hpp"
#include "twinloop/hil/simulated_subject.hpp"

namespace twinloop::acquisition {
namespace {

TEST(DetectionAccuracy, SixtySecondsOfSimulatedNeuropixelsMeetRecallAndPrecision) {
  hil::SimulationConfig sim;
  sim.seed = 2024;
  sim.seconds = 60.0;
  sim.pace = drivers::Pace::kMax;
  hil::SimulatedSubject subject(sim);
  const drivers::ProbeInfo& info = subject.probe_info();
  SpikeDetector detector(info, DetectorConfig{});

  drivers::SampleBlock block;
  block.allocate(30, info.stored_channels);
  std::vector<SpikeEvent> out(4096);
  std::vector<SpikeEvent> events;
  const auto total = static_cast<std::int64_t>(sim.seconds * info.sample_rate_hz);
  for (std::int64_t done = 0; done < total;) {
    const std::size_t n = subject.generate(block, 30);
    ASSERT_GT(n, 0u);
    done += static_cast<std::int64_t>(n);
    const std::size_t k = detector.process(block, out);
    events.insert(events.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k));
  }
  ASSERT_TRUE(detector.armed());
  EXPECT_EQ(detector.stats().events_overflowed, 0u);
  EXPECT_EQ(detector.stats().candidates_overflowed, 0u);

  const hil::GroundTruth truth = subject.ground_truth();
  std::vector<TruthUnit> units;
  std::size_t detectable = 0;
  for (const hil::UnitTruth& u : truth.units) {
    units.push_back({static_cast<std::uint32_t>(u.peak_channel), u.snr});
    detectable += u.snr >= 5.0 ? 1 : 0;
  }
  ASSERT_GE(truth.units.size(), 50u);
  ASSERT_GE(detectable, 40u) << "the subject must have many units above SNR 5";
  std::vector<TruthSpike> spikes;
  for (const hil::SpikeTruth& s : truth.spikes) {
    spikes.push_back({s.sample, static_cast<std::int32_t>(s.unit)});
  }
  std::sort(spikes.begin(), spikes.end(),
            [](const TruthSpike& a, const TruthSpike& b) { return a.sample < b.sample; });

  ScoreOptions options;  // ±15 samples = ±0.5 ms at 30 kHz, 50 µm, SNR >= 5
  options.from_sample = detector.armed_from_sample();
  options.to_sample = total - detector.delay_samples() - 1;
  const DetectionScore score = score_detection(events, spikes, units, info.geometry, options);
  std::printf("recall %.3f (%llu / %llu), precision %.3f (%llu / %llu) over %.1f s\n",
              score.recall(), static_cast<unsigned long long>(score.truth_matched),
              static_cast<unsigned long long>(score.truth_spikes), score.precision(),
              static_cast<unsigned long long>(score.detected_matched),
              static_cast<unsigned long long>(score.detected),
              static_cast<double>(options.to_sample - options.from_sample) / info.sample_rate_hz);
  EXPECT_GT(score.truth_spikes, 10000u);
  EXPECT_GE(score.recall(), 0.90);
  EXPECT_GE(score.precision(), 0.90);
}

}  // namespace
}  // namespace twinloop::acquisition

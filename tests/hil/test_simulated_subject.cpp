// SimulatedSubject: unit layout and waveforms, background noise statistics, rendered spike
// amplitudes and spike-train rates against the configuration and the recorded ground truth.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <stdexcept>

#include "hil_test_helpers.hpp"
#include "twinloop/hil/simulated_subject.hpp"

namespace twinloop::hil {
namespace {

using testing::fast_config;
using testing::read_all;
using testing::white_only;

TEST(SimulatedSubject, RejectsBadConfigNamingTheField) {
  auto c = fast_config();
  c.block_samples = 0;
  try {
    SimulatedSubject s(c);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("block_samples"), std::string::npos);
  }
  c = fast_config();
  c.mix = ResponseMix{0, 0, 0, 0, 0};
  EXPECT_THROW(SimulatedSubject{c}, std::invalid_argument);
  c = fast_config();
  c.spatial_frequency_dimension = 2;
  c.min_preferred_sf_cpd = 0.0;
  EXPECT_NE(c.validate().find("min_preferred_sf_cpd"), std::string::npos);
  c.min_preferred_sf_cpd = 0.02;
  EXPECT_EQ(c.validate(), "");
  c.spatial_frequency_dimension = 99;
  EXPECT_NE(c.validate().find("spatial_frequency_dimension"), std::string::npos);
}

TEST(SimulatedSubject, DefaultsDescribeAnNp1ProbeWithSync) {
  SimulatedSubject s{SimulationConfig{}};
  const auto& info = s.probe_info();
  EXPECT_EQ(info.neural_channels, 384u);
  EXPECT_EQ(info.stored_channels, 385u);
  EXPECT_TRUE(info.has_sync_word);
  EXPECT_DOUBLE_EQ(info.sample_rate_hz, 30000.0);
  EXPECT_NEAR(info.microvolts_per_bit, 2.34375, 1e-9);
  EXPECT_EQ(info.geometry.sites.size(), 384u);
  EXPECT_GE(s.units().size(), 50u);
}

TEST(SimulatedSubject, UnitsSitOnTheProbeWithTheConfiguredMix) {
  SimulatedSubject s{SimulationConfig{}};
  std::map<ResponseKind, int> kinds;
  int low_snr = 0;
  for (const auto& u : s.units()) {
    ++kinds[u.response.kind];
    EXPECT_GE(u.z_um, 0.0);
    EXPECT_LE(u.z_um, 3840.0);
    EXPECT_GE(u.plane_distance_um, 10.0);
    EXPECT_LE(u.plane_distance_um, 60.0);
    EXPECT_GE(u.response.baseline_hz, 2.0);
    EXPECT_LE(u.response.baseline_hz, 15.0);
    EXPECT_GE(u.snr, 2.5);
    EXPECT_LE(u.snr, 25.0 + 1e-9);
    EXPECT_NEAR(u.peak_amplitude_uv, u.snr * u.noise_uv, 1e-9);
    low_snr += u.snr < 5.0;
    // Waveform: trough -1 near kTroughIndex, a smaller positive repolarisation after it.
    const auto lo = std::min_element(u.waveform.begin(), u.waveform.end());
    const auto hi = std::max_element(u.waveform.begin(), u.waveform.end());
    EXPECT_FLOAT_EQ(*lo, -1.0f);
    EXPECT_LE(std::abs(lo - u.waveform.begin() - std::ptrdiff_t(kTroughIndex)), 1);
    EXPECT_GT(hi, lo);
    EXPECT_GT(*hi, 0.1f);
    EXPECT_LT(*hi, 0.6f);
    EXPECT_NEAR(u.waveform.back(), 0.0f, 1e-6);
  }
  EXPECT_EQ(kinds.size(), 5u);
  EXPECT_EQ(kinds[ResponseKind::kDirectionTuned], 26);  // 0.40 * 64 = 25.6
  EXPECT_GT(low_snr, 0);
  EXPECT_LT(low_snr, 24);
}

TEST(SimulatedSubject, PeakChannelIsTheNearestSite) {
  SimulatedSubject s{SimulationConfig{}};
  const auto& sites = s.probe_info().geometry.sites;
  for (const auto& u : s.units()) {
    std::size_t nearest = 0;
    double best = 1e300;
    for (std::size_t ch = 0; ch < sites.size(); ++ch) {
      const double d =
          std::hypot(sites[ch].x_um - u.x_um, sites[ch].z_um - u.z_um, u.plane_distance_um);
      if (d < best) best = d, nearest = ch;
    }
    EXPECT_EQ(u.peak_channel, nearest) << u.id;
    EXPECT_NEAR(u.peak_distance_um, best, 1e-9);
  }
}

TEST(SimulatedSubject, SameSeedSameUnitsDifferentSeedDifferentUnits) {
  auto c = fast_config();
  SimulatedSubject a(c), b(c);
  c.seed += 1;
  SimulatedSubject other(c);
  ASSERT_EQ(a.units().size(), b.units().size());
  for (std::size_t i = 0; i < a.units().size(); ++i) {
    EXPECT_EQ(a.units()[i].z_um, b.units()[i].z_um);
    EXPECT_EQ(a.units()[i].response.preferred_deg, b.units()[i].response.preferred_deg);
    EXPECT_EQ(a.units()[i].waveform, b.units()[i].waveform);
  }
  EXPECT_NE(a.units()[0].z_um, other.units()[0].z_um);
}

TEST(SimulatedSubject, WhiteNoiseRmsMatchesConfig) {
  auto c = white_only(fast_config(1.0));
  c.unit_count = 0;
  c.noise_uv_rms = 7.0;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const auto data = read_all(*rig.probe);
  const std::size_t stride = 385;
  double sum = 0.0, sum_sq = 0.0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (i % stride == 384) continue;
    const double uv = data[i] * c.microvolts_per_bit;
    sum += uv;
    sum_sq += uv * uv;
    ++n;
  }
  const double mean = sum / double(n);
  EXPECT_NEAR(mean, 0.0, 0.05);
  // Quantisation (2.34 uV steps) adds step^2 / 12 = 0.46 uV^2: 7.03 uV.
  EXPECT_NEAR(std::sqrt(sum_sq / double(n) - mean * mean), 7.0, 0.1);
}

// Common mode is identical on every channel: the per-sample channel mean carries it, and
// subtracting that mean leaves the white noise.
TEST(SimulatedSubject, CommonModeIsSharedAndRemovedByACommonReference) {
  auto c = white_only(fast_config(0.5));
  c.unit_count = 0;
  c.common_mode_uv_rms = 3.0;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const auto data = read_all(*rig.probe);
  const std::size_t rows = data.size() / 385;
  double cm_sq = 0.0, resid_sq = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    double m = 0.0;
    for (std::size_t ch = 0; ch < 384; ++ch) m += data[r * 385 + ch];
    m /= 384.0;
    cm_sq += m * m;
    for (std::size_t ch = 0; ch < 384; ++ch) {
      const double d = data[r * 385 + ch] - m;
      resid_sq += d * d;
    }
  }
  const double uvpb = c.microvolts_per_bit;
  EXPECT_NEAR(std::sqrt(cm_sq / double(rows)) * uvpb, 3.0, 0.3);
  EXPECT_NEAR(std::sqrt(resid_sq / double(rows * 384)) * uvpb, 7.0, 0.15);
}

// LFP is slow: 1 ms means (which average the white noise down) carry almost all of it, and
// adjacent 1 ms means are almost equal.
TEST(SimulatedSubject, LfpIsSlowAndHasTheConfiguredSize) {
  auto c = white_only(fast_config(20.0));
  c.unit_count = 0;
  c.lfp_uv_rms = 30.0;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  const std::size_t ch = 100;
  std::vector<double> ms_means;
  testing::for_each_block(*rig.probe, [&](const drivers::SampleBlock& block) {
    for (std::size_t r = 0; r + 30 <= block.sample_count; r += 30) {
      double m = 0.0;
      for (std::size_t k = 0; k < 30; ++k) m += block.row(r + k)[ch];
      ms_means.push_back(m / 30.0 * c.microvolts_per_bit);
    }
  });
  double sum_sq = 0.0, diff_sq = 0.0, mean = 0.0;
  for (double v : ms_means) mean += v;
  mean /= double(ms_means.size());
  for (std::size_t i = 0; i < ms_means.size(); ++i) {
    sum_sq += (ms_means[i] - mean) * (ms_means[i] - mean);
    if (i) diff_sq += (ms_means[i] - ms_means[i - 1]) * (ms_means[i] - ms_means[i - 1]);
  }
  const double rms = std::sqrt(sum_sq / double(ms_means.size()));
  EXPECT_GT(rms, 0.5 * 30.0);
  EXPECT_LT(rms, 1.5 * 30.0);
  // 1 ms steps of a < 10 Hz process are tiny next to its size (white noise alone gives ~1.8 uV).
  EXPECT_LT(std::sqrt(diff_sq / double(ms_means.size() - 1)), 0.15 * rms);
}

// Averaging the recording at each ground-truth spike recovers the unit's trough on its peak
// channel, at the recorded amplitude, and weaker on a site 100 um away.
TEST(SimulatedSubject, SpikesAreRenderedAtTheirPeakChannelWithTheirAmplitude) {
  auto c = white_only(fast_config(20.0));
  c.unit_count = 50;
  c.amplitude_jitter = 0.0;
  // Same seed, same spikes: the first run gives the truth, the second is averaged at it.
  auto first = make_simulated_rig(c);
  ASSERT_TRUE(first.probe->start());
  testing::for_each_block(*first.probe, [](const drivers::SampleBlock&) {});
  auto truth = first.subject->ground_truth();
  std::sort(truth.spikes.begin(), truth.spikes.end(),
            [](const SpikeTruth& a, const SpikeTruth& b) { return a.sample < b.sample; });
  std::vector<double> trough_sum(truth.units.size(), 0.0), far_sum(truth.units.size(), 0.0);
  std::vector<int> spikes(truth.units.size(), 0);
  auto far_channel = [](std::size_t peak) { return peak >= 10 ? peak - 10 : peak + 10; };
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  std::size_t next = 0;
  testing::for_each_block(*rig.probe, [&](const drivers::SampleBlock& block) {
    const auto end = block.first_sample + std::int64_t(block.sample_count);
    for (; next < truth.spikes.size() && truth.spikes[next].sample < end; ++next) {
      const auto& s = truth.spikes[next];
      const auto* row = block.row(std::size_t(s.sample - block.first_sample));
      const auto& u = truth.units[s.unit];
      trough_sum[s.unit] += row[u.peak_channel];
      far_sum[s.unit] += row[far_channel(u.peak_channel)];
      ++spikes[s.unit];
    }
  });
  int checked = 0;
  for (const auto& u : truth.units) {
    if (u.snr < 5.0) continue;
    const int n = spikes[u.id];
    ASSERT_GT(n, 20) << u.id;
    const double trough = trough_sum[u.id] / n * c.microvolts_per_bit;
    const double far = far_sum[u.id] / n * c.microvolts_per_bit;
    // Other units' spikes add a little noise to the average; 15 % covers it at these SNRs.
    EXPECT_NEAR(-trough, u.peak_amplitude_uv, 0.15 * u.peak_amplitude_uv + 2.0) << u.id;
    EXPECT_LT(std::abs(far), 0.4 * std::abs(trough)) << u.id;
    ++checked;
  }
  EXPECT_GT(checked, 30);
}

// Drift moves the sites along z: each spike's trough on the peak channel follows the Lorentzian
// law at the drifted distance, so amplitudes change over the drift cycle.
TEST(SimulatedSubject, DriftChangesAmplitudesAsTheModelSays) {
  auto c = testing::white_only(fast_config(4.0, 9));
  c.unit_count = 12;
  c.noise_uv_rms = 0.5;  // make single-spike troughs precise
  c.amplitude_jitter = 0.0;
  c.drift_amplitude_um = 15.0;
  c.drift_period_s = 8.0;
  auto first = make_simulated_rig(c);
  ASSERT_TRUE(first.probe->start());
  testing::for_each_block(*first.probe, [](const drivers::SampleBlock&) {});
  auto truth = first.subject->ground_truth();
  std::sort(truth.spikes.begin(), truth.spikes.end(),
            [](const SpikeTruth& a, const SpikeTruth& b) { return a.sample < b.sample; });
  const auto& sites = first.subject->probe_info().geometry.sites;
  std::vector<double> early(c.unit_count, 0.0), late(c.unit_count, 0.0);
  std::vector<int> n_early(c.unit_count, 0), n_late(c.unit_count, 0);
  int matched = 0, checked = 0;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  std::size_t next = 0;
  testing::for_each_block(*rig.probe, [&](const drivers::SampleBlock& block) {
    const auto end = block.first_sample + std::int64_t(block.sample_count);
    for (; next < truth.spikes.size() && truth.spikes[next].sample < end; ++next) {
      const auto& s = truth.spikes[next];
      const auto& u = truth.units[s.unit];
      const double measured =
          -block.row(std::size_t(s.sample - block.first_sample))[u.peak_channel] *
          c.microvolts_per_bit;
      const double drift =
          15.0 * std::sin(2.0 * std::numbers::pi * double(s.sample) / (8.0 * 30000.0));
      const auto& site = sites[u.peak_channel];
      const double dz = site.z_um + drift - u.z_um;
      const double dx = site.x_um - u.x_um;
      const double d_sq = dx * dx + dz * dz + u.plane_distance_um * u.plane_distance_um;
      const double predicted =
          u.amplitude0_uv / (1.0 + d_sq / (u.spatial_decay_um * u.spatial_decay_um));
      ++checked;
      // Overlaps with other units' spikes are rare at 12 units; quantisation is 2.3 uV.
      matched += std::abs(measured - predicted) < 0.03 * predicted + 3.0;
      if (s.sample < 15000) early[s.unit] += measured, ++n_early[s.unit];
      if (s.sample > 50000 && s.sample < 70000) late[s.unit] += measured, ++n_late[s.unit];
    }
  });
  EXPECT_GT(double(matched), 0.95 * checked);
  int changed = 0;
  for (std::size_t u = 0; u < c.unit_count; ++u) {
    if (n_early[u] && n_late[u]) {
      changed += std::abs(late[u] / n_late[u] / (early[u] / n_early[u]) - 1.0) > 0.05;
    }
  }
  EXPECT_GE(changed, 4);
}

TEST(SimulatedSubject, UntunedRatesMatchTheirBaselines) {
  auto c = white_only(fast_config(30.0));
  c.mix = ResponseMix{0, 0, 0, 0, 1};
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  testing::for_each_block(*rig.probe, [](const drivers::SampleBlock&) {});
  const auto truth = rig.subject->ground_truth();
  ASSERT_EQ(truth.samples_generated, 30 * 30000);
  double expected_total = 0.0;
  std::vector<std::size_t> counts(truth.units.size(), 0);
  for (const auto& s : truth.spikes) ++counts[s.unit];
  for (const auto& u : truth.units) {
    const double expected = u.response.baseline_hz * 30.0;
    expected_total += expected;
    EXPECT_NEAR(double(counts[u.id]), expected, 5.0 * std::sqrt(expected)) << u.id;
  }
  EXPECT_NEAR(double(truth.spikes.size()), expected_total, 3.0 * std::sqrt(expected_total));
}

TEST(SimulatedSubject, RefractoryPeriodIsNeverViolated) {
  auto c = white_only(fast_config(10.0));
  c.min_baseline_hz = 50.0;  // dense trains make a violation likely if it could happen
  c.max_baseline_hz = 100.0;
  c.refractory_ms = 2.0;
  auto rig = make_simulated_rig(c);
  ASSERT_TRUE(rig.probe->start());
  testing::for_each_block(*rig.probe, [](const drivers::SampleBlock&) {});
  const auto truth = rig.subject->ground_truth();
  std::vector<std::int64_t> last(truth.units.size(), -1000000);
  for (const auto& s : truth.spikes) {
    EXPECT_GE(s.sample - last[s.unit], 60 - 1);  // 2 ms, minus flooring to whole samples
    last[s.unit] = s.sample;
  }
}

}  // namespace
}  // namespace twinloop::hil

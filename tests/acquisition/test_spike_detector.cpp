// SpikeDetector on signals whose answer is known: sines in and out of the pass band, and
// synthetic spikes of known time, place and depth in Gaussian noise.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "twinloop/acquisition/spike_detector.hpp"
#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::acquisition {
namespace {

drivers::ProbeInfo probe_info(std::size_t channels) {
  drivers::ProbeInfo info;
  info.name = "test";
  info.stored_channels = channels + 1;  // a sync word after the neural channels, as SpikeGLX
  info.neural_channels = channels;
  info.has_sync_word = true;
  info.sample_rate_hz = 30000.0;
  info.microvolts_per_bit = 1.0;
  info.geometry = drivers::neuropixels1_geometry(channels);
  return info;
}

// Runs `samples` (rows x stored) through a detector in blocks of `block_rows`.
std::vector<SpikeEvent> run(SpikeDetector& detector, const std::vector<std::int16_t>& samples,
                            std::size_t stored, std::size_t block_rows) {
  std::vector<SpikeEvent> all;
  std::vector<SpikeEvent> out(4096);
  drivers::SampleBlock block;
  block.allocate(block_rows, stored);
  const std::size_t rows = samples.size() / stored;
  for (std::size_t r = 0; r < rows; r += block_rows) {
    const std::size_t n = std::min(block_rows, rows - r);
    std::copy_n(samples.begin() + static_cast<std::ptrdiff_t>(r * stored), n * stored,
                block.samples.begin());
    block.first_sample = static_cast<std::int64_t>(r) + 1000;
    block.sample_count = n;
    const std::size_t k = detector.process(block, out);
    all.insert(all.end(), out.begin(), out.begin() + static_cast<std::ptrdiff_t>(k));
  }
  return all;
}

// Adds a trough shaped like an extracellular spike (negative Gaussian, 0.15 ms wide) of depth
// `depth` at `row` on `channel`, and weaker copies on neighbouring channels.
void add_spike(std::vector<std::int16_t>& samples, std::size_t stored, std::size_t channels,
               std::size_t row, std::size_t channel, double depth) {
  const drivers::ProbeGeometry g = drivers::neuropixels1_geometry(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    const double d = g.distance_um(c, channel);
    if (d > 60) continue;
    const double scale = 1.0 / (1.0 + (d / 25.0) * (d / 25.0));
    for (int dt = -12; dt <= 12; ++dt) {
      const double t = dt / 4.5;
      const double v = -depth * scale * std::exp(-0.5 * t * t);
      auto& s = samples[(row + static_cast<std::size_t>(dt)) * stored + c];
      s = static_cast<std::int16_t>(s + std::lround(v));
    }
  }
}

TEST(SpikeDetector, RejectsHighPassAboveNyquist) {
  DetectorConfig config;
  config.highpass_hz = 20000.0;
  EXPECT_THROW(SpikeDetector(probe_info(8), config), std::invalid_argument);
}

TEST(SpikeDetector, RejectsGeometryThatDoesNotMatchChannels) {
  drivers::ProbeInfo info = probe_info(8);
  info.geometry = drivers::neuropixels1_geometry(4);
  EXPECT_THROW(SpikeDetector(info, DetectorConfig{}), std::invalid_argument);
}

// Noise only: the MAD estimate must find the noise level it was given, and with a 5-sigma
// threshold almost nothing is detected.
TEST(SpikeDetector, NoiseEstimateMatchesInjectedNoise) {
  constexpr std::size_t kChannels = 32, kStored = 33, kRows = 30000;
  std::mt19937 rng(7);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (std::size_t r = 0; r < kRows; ++r) {
    for (std::size_t c = 0; c < kChannels; ++c) {
      const double sigma = 10.0 + static_cast<double>(c);  // each channel its own level
      samples[r * kStored + c] =
          static_cast<std::int16_t>(std::lround(std::normal_distribution<double>(0, sigma)(rng)));
    }
  }
  DetectorConfig config;
  config.common_reference = false;
  config.lowpass_hz = 0;  // white noise must keep its full bandwidth for the level to be known
  config.threshold_sigma = 5.5;
  SpikeDetector detector(probe_info(kChannels), config);
  const auto events = run(detector, samples, kStored, 30);
  ASSERT_TRUE(detector.armed());
  const std::vector<double> noise = detector.noise_uv();
  for (std::size_t c = 0; c < kChannels; ++c) {
    // The 300 Hz high-pass removes ~2% of white noise power; the MAD over 1024 samples has a
    // standard error near 4%.
    const double sigma = 10.0 + static_cast<double>(c);
    EXPECT_NEAR(noise[c], sigma, 0.12 * sigma) << "channel " << c;
  }
  EXPECT_LT(events.size(), 10u);
}

// A 3 kHz sine passes the 300 Hz high-pass almost unchanged; a 30 Hz sine is removed. Checked
// through the noise estimate of a noiseless channel carrying only the sine.
TEST(SpikeDetector, HighPassKeepsSpikeBandAndRemovesSlowWaves) {
  constexpr std::size_t kChannels = 2, kStored = 2, kRows = 30000;
  std::vector<std::int16_t> samples(kRows * kStored);
  for (std::size_t r = 0; r < kRows; ++r) {
    const double t = static_cast<double>(r) / 30000.0;
    samples[r * kStored + 0] =
        static_cast<std::int16_t>(std::lround(1000 * std::sin(2 * std::numbers::pi * 3000 * t)));
    samples[r * kStored + 1] =
        static_cast<std::int16_t>(std::lround(1000 * std::sin(2 * std::numbers::pi * 30 * t)));
  }
  drivers::ProbeInfo info = probe_info(kChannels);
  info.stored_channels = kStored;
  DetectorConfig config;
  config.common_reference = false;
  config.lowpass_hz = 0;
  SpikeDetector detector(info, config);
  run(detector, samples, kStored, 64);
  ASSERT_TRUE(detector.armed());
  // MAD of a sine of amplitude A is A*sin(pi/4) = 0.707 A, reported as 0.707 A / 0.6745.
  const double passband = detector.noise_uv()[0] * 0.6745 / 0.7071;
  const double stopband = detector.noise_uv()[1] * 0.6745 / 0.7071;
  EXPECT_NEAR(passband, 1000.0, 30.0);
  EXPECT_LT(stopband, 15.0);  // 2nd order: -40 dB/decade, 30 Hz is a decade below 300 Hz
}

// The one-pole low-pass at 6 kHz passes 1 kHz almost unchanged and attenuates 12 kHz to about
// half (|H| = alpha / |1 - (1 - alpha) e^{-jw}|).
TEST(SpikeDetector, LowPassAttenuatesAboveSpikeBand) {
  constexpr std::size_t kChannels = 2, kStored = 2, kRows = 30000;
  std::vector<std::int16_t> samples(kRows * kStored);
  for (std::size_t r = 0; r < kRows; ++r) {
    const double t = static_cast<double>(r) / 30000.0;
    samples[r * kStored + 0] =
        static_cast<std::int16_t>(std::lround(1000 * std::sin(2 * std::numbers::pi * 1000 * t)));
    samples[r * kStored + 1] =
        static_cast<std::int16_t>(std::lround(1000 * std::sin(2 * std::numbers::pi * 12000 * t)));
  }
  drivers::ProbeInfo info = probe_info(kChannels);
  info.stored_channels = kStored;
  DetectorConfig config;
  config.common_reference = false;
  SpikeDetector detector(info, config);
  run(detector, samples, kStored, 64);
  ASSERT_TRUE(detector.armed());
  const double alpha = 1.0 - std::exp(-2.0 * std::numbers::pi * 6000.0 / 30000.0);
  auto gain = [alpha](double f) {
    const double w = 2.0 * std::numbers::pi * f / 30000.0;
    const double re = 1.0 - (1.0 - alpha) * std::cos(w), im = (1.0 - alpha) * std::sin(w);
    return alpha / std::sqrt(re * re + im * im);
  };
  const double low = detector.noise_uv()[0] * 0.6745 / 0.7071;
  const double high = detector.noise_uv()[1] * 0.6745 / 0.7071;
  EXPECT_NEAR(low, 1000.0 * gain(1000.0), 40.0);
  EXPECT_NEAR(high, 1000.0 * gain(12000.0), 40.0);
  EXPECT_LT(high, 0.6 * low);
}

// Spikes of known time and place in noise: each is found once (not once per site it touches),
// at the right time and on its peak site.
TEST(SpikeDetector, FindsEachSpikeOnceAtItsPeakSite) {
  constexpr std::size_t kChannels = 64, kStored = 65, kRows = 60000;
  std::mt19937 rng(11);
  std::normal_distribution<double> noise(0.0, 8.0);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (std::size_t i = 0; i < kRows * kStored; ++i) {
    samples[i] = static_cast<std::int16_t>(std::lround(noise(rng)));
  }
  struct Injected {
    std::size_t row, channel;
  };
  std::vector<Injected> injected;
  for (std::size_t row = 20000; row + 100 < kRows; row += 397) {
    const std::size_t channel = 8 + (row / 397 * 13) % 48;
    injected.push_back({row, channel});
    add_spike(samples, kStored, kChannels, row, channel, 120.0);
  }
  // On a short probe one spike covers much of the probe, so a common average reference would
  // carve it out of every site; the reference is tested on its own below.
  DetectorConfig config;
  config.common_reference = false;
  SpikeDetector detector(probe_info(kChannels), config);
  const auto events = run(detector, samples, kStored, 30);
  ASSERT_TRUE(detector.armed());
  ASSERT_LT(detector.armed_from_sample(), 1000 + 20000);

  const drivers::ProbeGeometry geometry = drivers::neuropixels1_geometry(kChannels);
  std::size_t found = 0;
  for (const Injected& spike : injected) {
    const std::int64_t sample = static_cast<std::int64_t>(spike.row) + 1000;
    std::size_t hits = 0;
    for (const SpikeEvent& e : events) {
      if (std::llabs(e.sample - sample) <= 15 &&
          geometry.distance_um(e.channel, spike.channel) < 60) {
        ++hits;
        // The trough is flat over a few samples (0.15 ms Gaussian) and noise moves its minimum.
        EXPECT_LE(std::llabs(e.sample - sample), 6) << "trough time";
        EXPECT_EQ(e.channel, spike.channel) << "peak site";
        // The 300 Hz high-pass takes the slow part of this 0.15 ms-wide trough (about a third).
        EXPECT_LT(e.amplitude_uv, -60.0f);
      }
    }
    EXPECT_LE(hits, 1u) << "spike at row " << spike.row << " reported more than once";
    found += hits;
  }
  EXPECT_GE(found, injected.size() * 98 / 100);
  // Gaussian noise crosses 4.5 sigma with p = 3.4e-6 per sample: about 9 crossings on 64 channels
  // over the 40000 armed rows.
  EXPECT_LE(events.size(), injected.size() + 20);
  for (std::size_t i = 1; i < events.size(); ++i) {
    EXPECT_LE(events[i - 1].sample, events[i].sample) << "events leave in sample order";
  }
}

// Two troughs on the same site 0.6 ms apart: the second falls in the refractory period.
TEST(SpikeDetector, RefractoryPeriodSuppressesSecondTroughOnSameChannel) {
  constexpr std::size_t kChannels = 16, kStored = 16, kRows = 40000;
  std::mt19937 rng(3);
  std::normal_distribution<double> noise(0.0, 5.0);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (auto& s : samples) s = static_cast<std::int16_t>(std::lround(noise(rng)));
  add_spike(samples, kStored, kChannels, 30000, 6, 150.0);
  add_spike(samples, kStored, kChannels, 30018, 6, 150.0);  // 0.6 ms later
  add_spike(samples, kStored, kChannels, 35000, 6, 150.0);
  add_spike(samples, kStored, kChannels, 35045, 6, 150.0);  // 1.5 ms later: a new spike
  drivers::ProbeInfo info = probe_info(kChannels);
  info.stored_channels = kStored;
  DetectorConfig config;
  config.common_reference = false;
  SpikeDetector detector(info, config);
  const auto events = run(detector, samples, kStored, 30);
  auto count_near = [&](std::int64_t row) {
    return std::count_if(events.begin(), events.end(), [&](const SpikeEvent& e) {
      return e.channel == 6 && std::llabs(e.sample - 1000 - row) <= 2;
    });
  };
  EXPECT_EQ(count_near(30000), 1);
  EXPECT_EQ(count_near(30018), 0) << "inside the 1 ms refractory period";
  EXPECT_EQ(count_near(35000), 1);
  EXPECT_EQ(count_near(35045), 1) << "1.5 ms later is a new spike";
}

// A large common-mode artefact (e.g. a licking or line-noise transient on every site) crosses every
// threshold without the common average reference and none with it.
TEST(SpikeDetector, CommonReferenceRemovesCommonModeArtefact) {
  constexpr std::size_t kChannels = 384, kStored = 385, kRows = 36000;
  std::mt19937 rng(13);
  std::normal_distribution<double> noise(0.0, 6.0);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (auto& s : samples) s = static_cast<std::int16_t>(std::lround(noise(rng)));
  for (std::size_t row = 25000; row < 35000; row += 1000) {
    for (std::size_t c = 0; c < kChannels; ++c) {
      for (int dt = -10; dt <= 10; ++dt) {
        samples[(row + static_cast<std::size_t>(dt)) * kStored + c] =
            static_cast<std::int16_t>(samples[(row + static_cast<std::size_t>(dt)) * kStored + c] -
                                      200 * std::exp(-dt * dt / 8.0));
      }
    }
  }
  DetectorConfig with_reference;
  DetectorConfig without_reference;
  without_reference.common_reference = false;
  SpikeDetector a(probe_info(kChannels), with_reference);
  SpikeDetector b(probe_info(kChannels), without_reference);
  auto near_artefact = [](const std::vector<SpikeEvent>& events) {
    return std::count_if(events.begin(), events.end(), [](const SpikeEvent& e) {
      const std::int64_t row = e.sample - 1000;
      return row >= 24990 && (row % 1000 <= 10 || row % 1000 >= 990);
    });
  };
  EXPECT_LT(near_artefact(run(a, samples, kStored, 30)), 3);
  EXPECT_GE(near_artefact(run(b, samples, kStored, 30)), 10 * 384 / 20);  // one per neighbourhood
}

// Block size must not change the result: the detector is a stream.
TEST(SpikeDetector, ResultDoesNotDependOnBlockSize) {
  constexpr std::size_t kChannels = 32, kStored = 33, kRows = 40000;
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0.0, 8.0);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (auto& s : samples) s = static_cast<std::int16_t>(std::lround(noise(rng)));
  for (std::size_t row = 20000; row + 100 < kRows; row += 511) {
    add_spike(samples, kStored, kChannels, row, (row / 511) % 32, 100.0);
  }
  SpikeDetector a(probe_info(kChannels), DetectorConfig{});
  SpikeDetector b(probe_info(kChannels), DetectorConfig{});
  const auto small = run(a, samples, kStored, 7);
  const auto large = run(b, samples, kStored, 1000);
  ASSERT_EQ(small.size(), large.size());
  ASSERT_GT(small.size(), 30u);
  for (std::size_t i = 0; i < small.size(); ++i) {
    EXPECT_EQ(small[i].sample, large[i].sample);
    EXPECT_EQ(small[i].channel, large[i].channel);
    EXPECT_FLOAT_EQ(small[i].amplitude_uv, large[i].amplitude_uv);
  }
}

// Baseline SIMD must give the same events as the best target (same arithmetic, other width).
TEST(SpikeDetector, BaselineSimdGivesSameEvents) {
  constexpr std::size_t kChannels = 48, kStored = 49, kRows = 30000;
  std::mt19937 rng(9);
  std::normal_distribution<double> noise(0.0, 8.0);
  std::vector<std::int16_t> samples(kRows * kStored);
  for (auto& s : samples) s = static_cast<std::int16_t>(std::lround(noise(rng)));
  for (std::size_t row = 20000; row + 100 < kRows; row += 300) {
    add_spike(samples, kStored, kChannels, row, (row / 300) % 48, 100.0);
  }
  SpikeDetector best(probe_info(kChannels), DetectorConfig{});
  const auto expected = run(best, samples, kStored, 30);
  force_baseline_simd();
  SpikeDetector baseline(probe_info(kChannels), DetectorConfig{});
  const auto got = run(baseline, samples, kStored, 30);
  restore_best_simd();
  ASSERT_EQ(expected.size(), got.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(expected[i].sample, got[i].sample);
    EXPECT_EQ(expected[i].channel, got[i].channel);
  }
}

}  // namespace
}  // namespace twinloop::acquisition

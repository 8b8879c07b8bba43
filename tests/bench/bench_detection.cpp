// Offline spike-detection throughput on one core, as a real-time factor (seconds of 384-channel
// 30 kHz recording processed per second of wall time), on simulated Neuropixels 1.0 data.
//
// Prints, for the SIMD target the CPU dispatches to and for every other target the binary carries
// down to the baseline it was compiled for, the median of several passes, and two references
// measured in the same run: one core summing the same int16 samples from memory (the streaming
// ceiling) and a plain filter + reference + threshold loop auto-vectorised for the baseline.
//
//   bench_detection [--seconds S] [--runs N] [--block-samples B]
#include <hwy/targets.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "twinloop/acquisition/spike_detector.hpp"
#include "twinloop/hil/simulated_subject.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace twinloop;

struct Options {
  double seconds = 4.0;
  int runs = 7;
  std::size_t block_samples = 3000;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The recording, already cut into blocks, so that timing sees detection and not copying.
struct Recording {
  drivers::ProbeInfo info;
  std::vector<drivers::SampleBlock> blocks;
  std::size_t rows = 0;
};

Recording simulate(double seconds, std::size_t block_samples) {
  hil::SimulationConfig config;
  config.seed = 42;
  config.pace = drivers::Pace::kMax;
  hil::SimulatedSubject subject(config);
  Recording rec;
  rec.info = subject.probe_info();
  rec.rows = static_cast<std::size_t>(seconds * rec.info.sample_rate_hz);
  std::size_t done = 0;
  while (done < rec.rows) {
    drivers::SampleBlock& block = rec.blocks.emplace_back();
    block.allocate(block_samples, rec.info.stored_channels);
    done += subject.generate(block, std::min(block_samples, rec.rows - done));
  }
  return rec;
}

// One pass of the detector over the whole recording; the stream continues across passes (sample
// indices keep increasing) so the detector stays armed and its state warm, as in a live session.
double detection_pass(acquisition::SpikeDetector& detector, Recording& rec,
                      std::int64_t& next_sample, std::uint64_t& events) {
  std::vector<acquisition::SpikeEvent> out(1 << 16);
  for (drivers::SampleBlock& block : rec.blocks) {
    block.first_sample = next_sample;
    next_sample += static_cast<std::int64_t>(block.sample_count);
  }
  const auto start = Clock::now();
  for (const drivers::SampleBlock& block : rec.blocks) events += detector.process(block, out);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Reads every int16 once, widening into int32 lanes the compiler vectorises.
double stream_pass(const Recording& rec, long long& sink) {
  const auto start = Clock::now();
  long long total = 0;
  for (const drivers::SampleBlock& block : rec.blocks) {
    std::int32_t sum = 0;
    const std::size_t n = block.sample_count * block.stored_channels;
    for (std::size_t i = 0; i < n; ++i) sum += block.samples[i];
    total += sum;
  }
  sink += total;
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The plain loop the detector has to compete with: biquad high-pass, mean reference and a
// threshold count, written straightforwardly and left to the compiler's auto-vectoriser for the
// portable baseline instruction set (no dispatch). No de-duplication, no noise estimate.
double plain_loop_pass(const Recording& rec, std::uint64_t& crossings) {
  const std::size_t channels = rec.info.neural_channels;
  std::vector<float> z1(channels, 0.f), z2(channels, 0.f), y(channels, 0.f);
  const float b0 = 0.956f, b1 = -1.912f, b2 = 0.956f, a1 = -1.910f, a2 = 0.914f, thr = -40.f;
  const auto start = Clock::now();
  for (const drivers::SampleBlock& block : rec.blocks) {
    for (std::size_t r = 0; r < block.sample_count; ++r) {
      const std::int16_t* x = block.row(r);
      float sum = 0.f;
      for (std::size_t c = 0; c < channels; ++c) {
        const float in = static_cast<float>(x[c]);
        const float out = b0 * in + z1[c];
        z1[c] = b1 * in - a1 * out + z2[c];
        z2[c] = b2 * in - a2 * out;
        y[c] = out;
        sum += out;
      }
      const float reference = sum / static_cast<float>(channels);
      std::uint32_t below = 0;
      for (std::size_t c = 0; c < channels; ++c) below += (y[c] - reference < thr) ? 1u : 0u;
      crossings += below;
    }
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void run_target(const char* label, Recording& rec, const Options& options, double data_seconds) {
  acquisition::SpikeDetector detector(rec.info, acquisition::DetectorConfig{});
  std::int64_t next_sample = 0;
  std::uint64_t events = 0;
  detection_pass(detector, rec, next_sample, events);  // arms, warms up
  std::vector<double> factors;
  events = 0;
  for (int i = 0; i < options.runs; ++i) {
    factors.push_back(data_seconds / detection_pass(detector, rec, next_sample, events));
  }
  std::printf("  %-9s (%s): median %.0fx real time  [min %.0fx, max %.0fx]  %.0f events/s\n", label,
              acquisition::active_simd_target(), median(factors),
              *std::min_element(factors.begin(), factors.end()),
              *std::max_element(factors.begin(), factors.end()),
              static_cast<double>(events) / (data_seconds * options.runs));
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--seconds")
      options.seconds = std::atof(value());
    else if (arg == "--runs")
      options.runs = std::atoi(value());
    else if (arg == "--block-samples")
      options.block_samples = static_cast<std::size_t>(std::atoll(value()));
    else {
      std::printf(
          "usage: bench_detection [--seconds S (4)] [--runs N (7)] [--block-samples B (3000)]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (options.seconds <= 0 || options.runs < 1 || options.block_samples < 1) {
    std::fprintf(stderr,
                 "bench_detection: --seconds, --runs and --block-samples must be positive\n");
    return 2;
  }
  std::printf("simulating %.1f s of 384-channel 30 kHz data...\n", options.seconds);
  Recording rec = simulate(options.seconds, options.block_samples);
  const double data_seconds = static_cast<double>(rec.rows) / rec.info.sample_rate_hz;

  long long sink = 0;
  std::vector<double> stream;
  for (int i = 0; i < options.runs; ++i) stream.push_back(data_seconds / stream_pass(rec, sink));
  const double stream_factor = median(stream);

  std::printf("spike detection, one core, %zu-sample blocks, median of %d passes over %.1f s:\n",
              options.block_samples, options.runs, data_seconds);
  std::printf("  reference: summing the int16 samples from memory: median %.0fx real time%s\n",
              stream_factor, sink == 42 ? " " : "");
  std::uint64_t crossings = 0;
  std::vector<double> plain;
  for (int i = 0; i < options.runs; ++i)
    plain.push_back(data_seconds / plain_loop_pass(rec, crossings));
  std::printf(
      "  reference: plain biquad + mean reference + threshold loop, auto-vectorised for the "
      "baseline ISA: median %.0fx real time%s\n",
      median(plain), crossings == 42 ? " " : "");
  run_target("dispatch", rec, options, data_seconds);
  // Every other instruction set this binary carries, down to the portable baseline, as a rig PC
  // with that CPU would run it.
  const std::vector<std::int64_t> targets = hwy::SupportedAndGeneratedTargets();
  for (std::size_t i = 1; i < targets.size(); ++i) {
    hwy::SetSupportedTargetsForTest(targets[i]);
    run_target(targets[i] == HWY_STATIC_TARGET ? "baseline" : "forced", rec, options, data_seconds);
  }
  acquisition::restore_best_simd();
  return 0;
}

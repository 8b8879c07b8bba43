#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "src/progress.hpp"
#include "src/recording_source.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/spike_files.hpp"

namespace twinloop::daemon {

int detect(const DetectOptions& options) {
  // The path chooses the format: an Open Ephys binary recording or a SpikeGLX .bin.
  internal::RecordingSource recording(options.recording, {options.block_samples, options.pace,
                                                          options.probeinterface, std::nullopt});
  drivers::ProbeSource& source = recording.source();

  acquisition::AcquisitionConfig config;
  config.block_samples = options.block_samples;
  config.detector.threshold_sigma = options.threshold_sigma;
  acquisition::AcquisitionLoop loop(source, config);

  const auto started = std::chrono::steady_clock::now();
  if (!loop.start()) {
    std::fprintf(stderr, "twinloop %s: %s\n", options.command.c_str(), loop.error().c_str());
    return kExitRefused;
  }
  for (const std::string& warning : recording.warnings()) {
    std::fprintf(stderr, "twinloop %s: warning: %s\n", options.command.c_str(), warning.c_str());
  }
  const drivers::ProbeInfo& info = loop.probe();
  const std::uint64_t total_samples = recording.total_samples();
  const std::int64_t first_sample = recording.first_sample();
  std::printf("%s\n", recording.describe().c_str());
  const double total = static_cast<double>(total_samples);
  internal::Progress progress(!options.quiet);
  std::vector<acquisition::SpikeEvent> events;
  std::vector<acquisition::SpikeEvent> batch(1 << 14);
  std::vector<acquisition::GapEvent> gaps(64);
  std::uint64_t gap_count = 0;
  for (;;) {
    const acquisition::AcquisitionCounters counters = loop.counters();
    std::size_t n = 0;
    while ((n = loop.drain_events(batch)) > 0)
      events.insert(events.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
    while ((n = loop.drain_gaps(gaps)) > 0) {
      for (std::size_t i = 0; i < n; ++i) {
        std::fprintf(stderr, "twinloop %s: gap: expected sample %lld, found %lld\n",
                     options.command.c_str(), static_cast<long long>(gaps[i].expected_sample),
                     static_cast<long long>(gaps[i].found_sample));
      }
      gap_count += n;
    }
    if (counters.finished) {
      // Drain what was published between the snapshot and the thread's exit.
      while ((n = loop.drain_events(batch)) > 0)
        events.insert(events.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
      break;
    }
    progress.update(total > 0 ? static_cast<double>(counters.samples) / total : -1.0,
                    std::to_string(events.size()) + " spikes");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  loop.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const acquisition::AcquisitionCounters counters = loop.counters();
  progress.finish(std::to_string(events.size()) + " spikes");
  if (counters.failed) {
    std::fprintf(stderr, "twinloop %s: reading %s failed: %s\n", options.command.c_str(),
                 options.recording.string().c_str(), source.last_error().c_str());
    return kExitRefused;
  }
  const double seconds = static_cast<double>(counters.samples) / info.sample_rate_hz;
  {
    std::printf("read %llu of %llu samples (%.4f s at %.10g Hz)\n",
                static_cast<unsigned long long>(counters.samples),
                static_cast<unsigned long long>(total_samples), seconds, info.sample_rate_hz);
  }
  try {
    if (!options.out.empty()) {
      write_detected_spikes(options.out, events, info.geometry, loop.detector().noise_uv(),
                            seconds);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop %s: %s\n", options.command.c_str(), e.what());
    return kExitRefused;
  }
  std::printf("detected %zu spikes in %.1f s of %zu-channel recording (%.1f Hz per channel)\n",
              events.size(), seconds, info.neural_channels,
              seconds > 0 ? static_cast<double>(events.size()) / seconds /
                                static_cast<double>(info.neural_channels)
                          : 0.0);
  std::printf("throughput: %.1fx real time (%.2f s wall, SIMD target %s, pace %s)\n",
              seconds / elapsed, elapsed, acquisition::active_simd_target(),
              options.pace == drivers::Pace::kMax ? "max" : "realtime");
  std::printf(
      "gaps: %llu, missing samples: %lld, events dropped: %llu; detection armed from "
      "sample %lld\n",
      static_cast<unsigned long long>(gap_count), static_cast<long long>(counters.missing_samples),
      static_cast<unsigned long long>(counters.events_dropped),
      static_cast<long long>(loop.detector().armed_from_sample()));
  if (!options.out.empty()) {
    std::printf(
        "wrote %s/{spike_times,spike_clusters,amplitudes,channel_positions,channel_map}.npy "
        "and cluster_info.tsv\n",
        options.out.string().c_str());
  }

  if (options.truth) {
    try {
      const GroundTruthFiles truth = read_ground_truth(*options.truth);
      acquisition::ScoreOptions score_options;
      score_options.tolerance_samples = std::llround(0.5e-3 * info.sample_rate_hz);
      score_options.from_sample = loop.detector().armed_from_sample();
      score_options.to_sample = first_sample + static_cast<std::int64_t>(counters.samples) -
                                loop.detector().delay_samples() - 1;
      const acquisition::DetectionScore score = acquisition::score_detection(
          events, truth.spikes, truth.units, info.geometry, score_options);
      std::printf(
          "against ground truth (units with SNR >= %.0f, +-0.5 ms, within %.0f um): "
          "recall %.3f (%llu of %llu), precision %.3f (%llu of %llu)\n",
          score_options.min_snr, score_options.radius_um, score.recall(),
          static_cast<unsigned long long>(score.truth_matched),
          static_cast<unsigned long long>(score.truth_spikes), score.precision(),
          static_cast<unsigned long long>(score.detected_matched),
          static_cast<unsigned long long>(score.detected));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "twinloop %s: ground truth: %s\n", options.command.c_str(), e.what());
      return kExitRefused;
    }
  }
  return kExitOk;
}

}  // namespace twinloop::daemon

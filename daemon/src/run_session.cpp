// `twinloop run` on the simulated rig: the acquisition thread detects spikes live while this
// (session) thread schedules trials from the protocol, delivers stimuli through the rig's
// stimulus sink, and counts spikes per detection channel in each trial's response window.
//
// Twins and the discriminating designer are not wired in yet: stimuli are drawn uniformly from
// the protocol's candidates with the protocol's seed, and the summary says so.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <exception>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "src/progress.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/acquisition/window_counter.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/spike_files.hpp"
#include "twinloop/designer/random_strategy.hpp"
#include "twinloop/drivers/safety_gate.hpp"
#include "twinloop/hil/simulated_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

struct TrialRecord {
  std::uint64_t trial = 0;
  std::uint32_t candidate = 0;
  protocols::Stimulus stimulus;
  std::int64_t onset_sample = 0;
  std::int64_t window_start = 0;
  std::int64_t window_end = 0;
  std::uint64_t detected_count = 0;  ///< all detection channels
  std::uint64_t truth_count = 0;     ///< all ground-truth units, same window
  std::size_t window = 0;            ///< WindowCounter handle while open
  bool complete = false;
};

double percentile(std::vector<std::uint32_t> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t i =
      std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  return static_cast<double>(v[i]);
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  if (n < 3) return std::nan("");
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : std::nan("");
}

std::string stimulus_text(const protocols::StimulusSpace& space, const protocols::Stimulus& s) {
  std::string text;
  for (std::size_t d = 0; d < space.dimension_count(); ++d) {
    char value[64];
    std::snprintf(value, sizeof value, "%s%s=%g %s", d ? ", " : "",
                  space.dimensions[d].name.c_str(), s.values[d], space.dimensions[d].unit.c_str());
    text += value;
  }
  return text;
}

}  // namespace

int run_session(const RunOptions& options) {
  const protocols::ProtocolLoadResult loaded = protocols::load_protocol_file(options.protocol);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop run: %s refused; nothing was started\n",
                 options.protocol.string().c_str());
    return kExitRefused;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  const protocols::ProbeSpec& probe_spec = protocol.probes.front();
  if (protocol.probes.size() > 1) {
    std::fprintf(stderr, "twinloop run: the simulated rig drives one probe; using '%s'\n",
                 probe_spec.name.c_str());
  }

  hil::SimulationConfig sim;
  sim.seed = options.seed;
  sim.name = probe_spec.name;
  sim.channels = static_cast<std::size_t>(probe_spec.channels);
  sim.sample_rate_hz = probe_spec.sample_rate_hz;
  sim.seconds = options.seconds;
  sim.pace = options.pace;
  sim.block_samples = 30;  // 1 ms blocks, as a live rig delivers them
  const auto direction = protocol.stimulus.dimension_index("direction");
  const auto contrast = protocol.stimulus.dimension_index("contrast");
  sim.direction_dimension = direction ? static_cast<int>(*direction) : -1;
  sim.contrast_dimension = contrast ? static_cast<int>(*contrast) : -1;

  hil::SimulatedRig rig;
  try {
    rig = hil::make_simulated_rig(sim);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: simulated rig: %s\n", e.what());
    return kExitRefused;
  }
  acquisition::AcquisitionConfig acq;
  acq.block_samples = sim.block_samples;
  acq.latency_capacity = static_cast<std::size_t>(options.seconds * 1000.0) + 1000;
  acquisition::AcquisitionLoop loop(*rig.probe, acq);
  if (!loop.start()) {
    std::fprintf(stderr, "twinloop run: %s\n", loop.error().c_str());
    return kExitRefused;
  }
  const drivers::ProbeInfo& info = loop.probe();
  const double rate = info.sample_rate_hz;
  auto ms_to_samples = [rate](double ms) {
    return static_cast<std::int64_t>(std::llround(ms * 1e-3 * rate));
  };
  const protocols::TrialTiming& timing = protocol.timing;
  const std::int64_t interval = ms_to_samples(timing.onset_interval_ms());
  const std::int64_t lead = ms_to_samples(20.0);  // deliver this far ahead of the planned onset

  std::printf(
      "twinloop run: protocol '%s' (%zu candidates), simulated rig: %zu-channel %s probe, "
      "%zu units, seed %llu, %.0f s at %s pace\n",
      protocol.name.c_str(), protocol.stimulus.candidate_count(), info.neural_channels,
      to_string(probe_spec.type).data(), rig.subject->units().size(),
      static_cast<unsigned long long>(options.seed), options.seconds,
      options.pace == drivers::Pace::kRealtime ? "real-time" : "maximum");
  std::printf("designer: random candidates (strategy '%s' needs the twins, not wired in yet)\n",
              to_string(protocol.designer.strategy).data());

  designer::RandomStrategy designer(protocol.designer.seed);
  const auto candidate_count = static_cast<std::uint32_t>(protocol.stimulus.candidate_count());
  // Every stimulus passes the protocol's safety limits on its way to the rig, below the designer.
  std::unique_ptr<drivers::SafetyGate> gate;
  try {
    gate = std::make_unique<drivers::SafetyGate>(*rig.stimulator, protocol.safety,
                                                 protocol.stimulus, protocol.timing, rate);
  } catch (const std::exception& e) {
    loop.stop();
    std::fprintf(stderr, "twinloop run: %s\n", e.what());
    return kExitRefused;
  }
  acquisition::WindowCounter windows(info.neural_channels, 64);
  std::vector<TrialRecord> trials;
  std::vector<acquisition::SpikeEvent> events;
  std::vector<acquisition::SpikeEvent> batch(1 << 14);
  std::vector<acquisition::GapEvent> gap_batch(64);
  std::uint64_t gaps = 0, refused = 0;
  std::int64_t next_onset = -1;
  internal::Progress progress(!options.quiet, 5.0);
  const auto started = std::chrono::steady_clock::now();

  auto drain = [&] {
    std::size_t n = 0;
    while ((n = loop.drain_events(batch)) > 0) {
      const std::span<const acquisition::SpikeEvent> got(batch.data(), n);
      windows.add_events(got);
      events.insert(events.end(), got.begin(), got.end());
    }
    while ((n = loop.drain_gaps(gap_batch)) > 0) gaps += n;
  };

  for (;;) {
    const acquisition::AcquisitionCounters c = loop.counters();
    drain();
    const std::int64_t now_sample = static_cast<std::int64_t>(c.samples);
    if (c.armed && next_onset < 0)
      next_onset = now_sample + ms_to_samples(timing.baseline_ms) + lead;
    if (next_onset >= 0 && now_sample >= next_onset - lead &&
        trials.size() < protocol.stop.max_trials) {
      TrialRecord t;
      t.trial = trials.size();
      t.candidate = designer.choose(candidate_count);
      t.stimulus = protocol.stimulus.stimulus(t.candidate);
      drivers::StimulusCommand command{t.trial, t.stimulus, next_onset,
                                       ms_to_samples(timing.stimulus_ms)};
      const drivers::StimulusOnset onset = gate->deliver(command);
      if (!onset.delivered) {
        ++refused;
        std::fprintf(stderr, "twinloop run: trial %llu not delivered: %s\n",
                     static_cast<unsigned long long>(t.trial), gate->last_error().c_str());
      } else {
        t.onset_sample = onset.onset_sample;
        t.window_start = onset.onset_sample + ms_to_samples(timing.response_start_ms);
        t.window_end = onset.onset_sample + ms_to_samples(timing.response_end_ms);
        const auto handle = windows.open(t.window_start, t.window_end);
        if (handle) {
          t.window = *handle;
          trials.push_back(t);
        } else {
          ++refused;
        }
      }
      next_onset = std::max(next_onset, onset.onset_sample) + interval;
    }
    for (TrialRecord& t : trials) {
      if (t.complete || !windows.complete(t.window, c.final_before_sample)) continue;
      for (std::uint32_t v : windows.counts(t.window)) t.detected_count += v;
      windows.close(t.window);
      t.complete = true;
    }
    const std::size_t completed = static_cast<std::size_t>(std::count_if(
        trials.begin(), trials.end(), [](const TrialRecord& t) { return t.complete; }));
    const double t_s = static_cast<double>(now_sample) / rate;
    char line[256];
    std::snprintf(line, sizeof line,
                  "%5.1f / %.0f s | trial %zu (%zu counted) | %zu spikes, %.0f/s | gaps %llu | "
                  "dropped %llu%s",
                  t_s, options.seconds, trials.size(), completed, events.size(),
                  t_s > 0 ? static_cast<double>(events.size()) / t_s : 0.0,
                  static_cast<unsigned long long>(gaps),
                  static_cast<unsigned long long>(c.events_dropped),
                  c.armed ? "" : " | estimating noise");
    progress.update(t_s / options.seconds, line);
    if (c.finished) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  loop.join();
  drain();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const acquisition::AcquisitionCounters counters = loop.counters();
  progress.finish("session ended");

  // Ground truth of the simulated subject, scored over the armed part of the session.
  const hil::GroundTruth truth = rig.subject->ground_truth();
  std::vector<acquisition::TruthUnit> units;
  for (const hil::UnitTruth& u : truth.units) {
    units.push_back({static_cast<std::uint32_t>(u.peak_channel), u.snr});
  }
  std::vector<acquisition::TruthSpike> truth_spikes;
  truth_spikes.reserve(truth.spikes.size());
  for (const hil::SpikeTruth& s : truth.spikes) {
    truth_spikes.push_back({s.sample, static_cast<std::int32_t>(s.unit)});
  }
  std::sort(truth_spikes.begin(), truth_spikes.end(),
            [](const auto& a, const auto& b) { return a.sample < b.sample; });
  acquisition::ScoreOptions score_options;
  score_options.tolerance_samples = ms_to_samples(0.5);
  score_options.from_sample = loop.detector().armed_from_sample();
  score_options.to_sample = counters.final_before_sample;
  const acquisition::DetectionScore score =
      acquisition::score_detection(events, truth_spikes, units, info.geometry, score_options);
  std::size_t detectable = 0, units_found = 0;
  for (std::size_t i = 0; i < units.size(); ++i) {
    if (units[i].snr < score_options.min_snr) continue;
    ++detectable;
    const auto& us = score.units[i];
    if (us.spikes > 0 && 2 * us.matched >= us.spikes) ++units_found;
  }

  // Trial counts against ground truth: do the windows see what the subject did?
  std::vector<double> detected_counts, truth_counts;
  std::size_t incomplete = 0;
  for (TrialRecord& t : trials) {
    if (!t.complete) {
      ++incomplete;
      continue;
    }
    const auto lo = std::lower_bound(truth_spikes.begin(), truth_spikes.end(), t.window_start,
                                     [](const auto& s, std::int64_t v) { return s.sample < v; });
    const auto hi = std::lower_bound(truth_spikes.begin(), truth_spikes.end(), t.window_end,
                                     [](const auto& s, std::int64_t v) { return s.sample < v; });
    t.truth_count = static_cast<std::uint64_t>(hi - lo);
    detected_counts.push_back(static_cast<double>(t.detected_count));
    truth_counts.push_back(static_cast<double>(t.truth_count));
  }
  const double r = pearson(detected_counts, truth_counts);
  const auto latencies = loop.block_latencies_ns();
  const std::vector<std::uint32_t> latency(latencies.begin(), latencies.end());
  const double seconds = static_cast<double>(counters.samples) / rate;

  std::printf("\n== session summary ==\n");
  std::printf(
      "recorded     %.1f s (%llu samples x %zu channels) in %.1f s wall; gaps %llu, "
      "missing samples %lld, events dropped %llu\n",
      seconds, static_cast<unsigned long long>(counters.samples), info.neural_channels, wall,
      static_cast<unsigned long long>(gaps), static_cast<long long>(counters.missing_samples),
      static_cast<unsigned long long>(counters.events_dropped));
  std::printf(
      "detection    %zu spikes (%.1f per channel per s), threshold %.1f x MAD noise, armed "
      "after %.2f s, SIMD %s\n",
      events.size(),
      seconds > 0
          ? static_cast<double>(events.size()) / seconds / static_cast<double>(info.neural_channels)
          : 0.0,
      acq.detector.threshold_sigma, static_cast<double>(loop.detector().armed_from_sample()) / rate,
      acquisition::active_simd_target());
  std::printf(
      "latency      block arrival -> spikes published: p50 %.0f us, p99 %.0f us, max %.0f "
      "us over %zu 1-ms blocks\n",
      percentile(latency, 0.5) / 1e3, percentile(latency, 0.99) / 1e3,
      latency.empty() ? 0.0 : *std::max_element(latency.begin(), latency.end()) / 1e3,
      latency.size());
  std::printf("trials       %zu delivered, %zu counted, %zu cut off by the end, %llu refused\n",
              trials.size(), detected_counts.size(), incomplete,
              static_cast<unsigned long long>(refused));
  for (std::size_t i = 0; i < trials.size() && i < 5; ++i) {
    const TrialRecord& t = trials[i];
    std::printf("  trial %llu: %s, onset sample %lld, window %llu spikes detected / %llu true\n",
                static_cast<unsigned long long>(t.trial),
                stimulus_text(protocol.stimulus, t.stimulus).c_str(),
                static_cast<long long>(t.onset_sample),
                static_cast<unsigned long long>(t.detected_count),
                static_cast<unsigned long long>(t.truth_count));
  }
  std::printf("ground truth %zu units, %zu with peak SNR >= 5: %zu of them found (recall >= 0.5)\n",
              units.size(), detectable, units_found);
  std::printf(
      "             recall %.3f (%llu of %llu spikes of SNR >= 5 units), precision %.3f "
      "(%llu of %llu events match a true spike; +-0.5 ms, <= 50 um)\n",
      score.recall(), static_cast<unsigned long long>(score.truth_matched),
      static_cast<unsigned long long>(score.truth_spikes), score.precision(),
      static_cast<unsigned long long>(score.detected_matched),
      static_cast<unsigned long long>(score.detected));
  if (!std::isnan(r)) {
    std::printf(
        "             per-trial window counts vs true counts: Pearson r = %.3f over %zu "
        "trials\n",
        r, detected_counts.size());
  }

  if (options.out) {
    try {
      const std::filesystem::path dir = *options.out;
      std::filesystem::create_directories(dir / "ground_truth");
      write_detected_spikes(dir, events, info.geometry, loop.detector().noise_uv(), seconds);
      rig.subject->write_ground_truth(dir / "ground_truth");
      std::ofstream tsv(dir / "trials.tsv");
      tsv << "trial\tcandidate";
      for (const auto& d : protocol.stimulus.dimensions) tsv << '\t' << d.name;
      tsv << "\tonset_sample\twindow_start\twindow_end\tcomplete\tdetected_count\ttruth_count\n";
      for (const TrialRecord& t : trials) {
        tsv << t.trial << '\t' << t.candidate;
        for (std::size_t d = 0; d < protocol.stimulus.dimension_count(); ++d) {
          tsv << '\t' << t.stimulus.values[d];
        }
        tsv << '\t' << t.onset_sample << '\t' << t.window_start << '\t' << t.window_end << '\t'
            << (t.complete ? 1 : 0) << '\t' << t.detected_count << '\t' << t.truth_count << '\n';
      }
      nlohmann::json summary = {
          {"protocol", protocol.name},
          {"rig", options.rig},
          {"seed", options.seed},
          {"seconds", seconds},
          {"samples", counters.samples},
          {"gaps", gaps},
          {"missing_samples", counters.missing_samples},
          {"events_dropped", counters.events_dropped},
          {"spikes_detected", events.size()},
          {"trials_delivered", trials.size()},
          {"trials_counted", detected_counts.size()},
          {"latency_us",
           {{"p50", percentile(latency, 0.5) / 1e3}, {"p99", percentile(latency, 0.99) / 1e3}}},
          {"truth",
           {{"units", units.size()},
            {"units_snr_ge_5", detectable},
            {"units_found", units_found},
            {"recall", score.recall()},
            {"precision", score.precision()},
            {"trial_count_pearson_r",
             std::isnan(r) ? nlohmann::json(nullptr) : nlohmann::json(r)}}}};
      std::ofstream(dir / "summary.json") << summary.dump(2) << '\n';
      std::printf(
          "session files in %s (spikes in Phy layout, trials.tsv, ground_truth/, "
          "summary.json)\n",
          dir.string().c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "twinloop run: writing the session files failed: %s\n", e.what());
      return kExitRefused;
    }
  }
  return counters.failed ? kExitRefused : kExitOk;
}

}  // namespace twinloop::daemon

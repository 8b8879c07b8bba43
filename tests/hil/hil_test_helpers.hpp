// Shared helpers for the hil tests: configs with parts of the simulation switched off, and loops
// that read a simulated probe (max pace) and present stimuli through the simulated stimulator.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/hil/simulated_rig.hpp"

namespace twinloop::hil::testing {

/// A fast, finite, max-pace config; callers switch parts off as the test needs.
inline SimulationConfig fast_config(double seconds = 1.0, std::uint64_t seed = 7) {
  SimulationConfig c;
  c.seed = seed;
  c.seconds = seconds;
  c.pace = drivers::Pace::kMax;
  c.block_samples = 300;
  return c;
}

/// Only white noise and (optionally) units: no common mode, LFP or drift.
inline SimulationConfig white_only(SimulationConfig c) {
  c.common_mode_uv_rms = 0.0;
  c.lfp_uv_rms = 0.0;
  c.drift_amplitude_um = 0.0;
  return c;
}

/// Reads the whole (finite) stream into one sample-major vector.
inline std::vector<std::int16_t> read_all(SimulatedProbe& probe, std::size_t block_rows = 300) {
  drivers::SampleBlock block;
  block.allocate(block_rows, probe.info().stored_channels);
  std::vector<std::int16_t> all;
  while (probe.read(block) == drivers::ReadStatus::kOk) {
    all.insert(all.end(), block.samples.begin(),
               block.samples.begin() +
                   static_cast<std::ptrdiff_t>(block.sample_count * block.stored_channels));
  }
  return all;
}

/// Reads the whole (finite) stream, handing each block to `fn` (for long streams: nothing kept).
template <typename Fn>
void for_each_block(SimulatedProbe& probe, Fn&& fn, std::size_t block_rows = 3000) {
  drivers::SampleBlock block;
  block.allocate(block_rows, probe.info().stored_channels);
  while (probe.read(block) == drivers::ReadStatus::kOk) fn(block);
}

/// Reads blocks until the subject has generated at least `sample`.
inline void read_until(SimulatedRig& rig, drivers::SampleBlock& block, std::int64_t sample) {
  while (rig.subject->generated_until() < sample) {
    if (rig.probe->read(block) != drivers::ReadStatus::kOk) return;
  }
}

inline std::int64_t latency_samples(const UnitTruth& u, double fs) {
  return std::llround(u.response.latency_ms * 1e-3 * fs);
}

/// Presents `stimuli` one per `period` samples (single thread: deliver, then read past the
/// trial). Returns the onsets.
inline std::vector<std::int64_t> present(SimulatedRig& rig,
                                         const std::vector<protocols::Stimulus>& stimuli,
                                         std::int64_t duration, std::int64_t period) {
  drivers::SampleBlock block;
  block.allocate(300, rig.probe->info().stored_channels);
  std::vector<std::int64_t> onsets;
  std::int64_t next = period;
  for (std::size_t i = 0; i < stimuli.size(); ++i) {
    drivers::StimulusCommand cmd;
    cmd.trial = i;
    cmd.stimulus = stimuli[i];
    cmd.earliest_onset_sample = next;
    cmd.duration_samples = duration;
    const auto onset = rig.stimulator->deliver(cmd);
    onsets.push_back(onset.onset_sample);
    next = onset.onset_sample + period;
    read_until(rig, block, next - period / 2);
  }
  read_until(rig, block, next);
  return onsets;
}

inline protocols::Stimulus grating(double direction_deg, double contrast) {
  protocols::Stimulus s;
  s.dimension_count = 2;
  s.values[0] = direction_deg;
  s.values[1] = contrast;
  return s;
}

inline double fano(const std::vector<double>& counts) {
  double mean = 0.0;
  for (double c : counts) mean += c;
  mean /= static_cast<double>(counts.size());
  double var = 0.0;
  for (double c : counts) var += (c - mean) * (c - mean);
  var /= static_cast<double>(counts.size() - 1);
  return mean > 0.0 ? var / mean : 0.0;
}

}  // namespace twinloop::hil::testing

// SimulationConfig: everything that defines a simulated subject and its Neuropixels 1.0 probe.
//
// One seed fixes the whole simulation: unit placement, waveforms, model parameters, noise and
// spike trains. The same config (seed, block size and stimulus schedule included) always yields
// the same samples and the same ground truth. All fields have defaults that look like a real NP1.0
// AP-band recording of a cortical column; tests shrink or silence parts of it.
//
// Plain value type; validate() is cheap and has no side effects.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::hil {

/// Relative weights of the response-model kinds; they need not sum to 1. Unit kinds are assigned
/// in these proportions (largest remainder), then shuffled over depth by the seed.
struct ResponseMix {
  double direction_tuned = 0.40;
  double bimodal = 0.15;
  double adapting = 0.15;
  double gain_fluctuating = 0.15;
  double untuned = 0.15;
  double orientation_tuned = 0.0;  ///< last, so that five-number mixes keep their meaning
};

struct SimulationConfig {
  std::uint64_t seed = 1;
  std::string name = "sim0";

  // Probe and digitisation (Neuropixels 1.0, bank 0, SpikeGLX layout).
  std::size_t channels = 384;  ///< neural channels (sites of neuropixels1_geometry)
  bool has_sync_word = true;   ///< append the SpikeGLX SY word: stored_channels = channels + 1
  int sync_bit = 6;            ///< SpikeGLX puts the imec sync input on bit 6 of SY
  double sync_period_s = 1.0;  ///< square wave: high for the first half of each period
  double sample_rate_hz = 30000.0;
  double microvolts_per_bit = 0.6 / 512.0 / 500.0 * 1e6;  ///< NP1.0: +-0.6 V, 10 bit, gain 500
  int adc_bits = 10;  ///< samples saturate at [-2^(adc_bits-1), 2^(adc_bits-1) - 1] counts

  // Units.
  std::size_t unit_count = 64;
  double min_baseline_hz = 2.0;  ///< baseline rates are log-uniform in [min, max]
  double max_baseline_hz = 15.0;
  double refractory_ms = 2.0;  ///< absolute refractory period
  double min_snr = 2.5;        ///< peak SNRs: low_snr_fraction uniform in [min_snr, 5) ...
  double max_snr = 25.0;       ///< ... the rest log-uniform in [5, max_snr]
  double low_snr_fraction = 0.15;
  double spatial_decay_um = 25.0;       ///< d0 in amplitude = A0 / (1 + (d / d0)^2)
  double min_plane_distance_um = 10.0;  ///< unit distance from the probe plane, uniform
  double max_plane_distance_um = 60.0;
  double amplitude_jitter = 0.05;  ///< per-spike amplitude sd, fraction of the mean
  ResponseMix mix;

  // Background (all in microvolts rms on each neural channel).
  double noise_uv_rms = 7.0;        ///< white thermal + amplifier noise, independent per channel
  double common_mode_uv_rms = 2.5;  ///< identical on every channel (a common reference removes it)
  double common_mode_corner_hz = 2000.0;
  double lfp_uv_rms = 25.0;  ///< slow, depth-varying fluctuation (a 300 Hz high-pass removes it)
  double lfp_corner_hz = 4.0;

  // Probe drift along the shank: z offset(t) = amplitude * sin(2 pi t / period) (0 at t = 0).
  double drift_amplitude_um = 6.0;
  double drift_period_s = 60.0;

  // Stream.
  double seconds = 0.0;            ///< duration; 0 = endless
  std::size_t block_samples = 30;  ///< rows per read (30 = 1 ms)
  drivers::Pace pace = drivers::Pace::kRealtime;
  int direction_dimension = 0;  ///< Stimulus value index holding direction (degrees); -1 absent
  int contrast_dimension = 1;   ///< Stimulus value index holding contrast (0..1); -1 absent
  /// Stimulus value index holding spatial frequency (cycles/deg); -1: absent, and no unit is
  /// tuned to it. Otherwise every tuned unit gets a log2-Gaussian SF tuning (response_models.hpp)
  /// sf_sigma_octaves wide around a preference log-uniform in [min, max]_preferred_sf_cpd, drawn
  /// from a stream of its own (every other parameter stays as drawn).
  int spatial_frequency_dimension = -1;
  double sf_sigma_octaves = 0.6;  ///< 1.4 octaves full width at half height (V1's median)
  double min_preferred_sf_cpd = 0.02;
  double max_preferred_sf_cpd = 0.16;
  double stimulator_latency_ms =
      1.0;  ///< onset is at least this far past the last generated sample

  // Ground-truth storage (allocated up front so the generator never allocates).
  std::size_t max_recorded_spikes = 0;  ///< 0: sized from `seconds` (endless: 4 million)
  std::size_t max_recorded_trials = 10000;

  [[nodiscard]] std::size_t stored_channels() const noexcept {
    return channels + (has_sync_word ? 1 : 0);
  }
  /// Empty when usable; otherwise names the first bad field and what was expected.
  [[nodiscard]] std::string validate() const;
};

}  // namespace twinloop::hil

// Ground truth of a simulated session: every spike the subject fired, every unit's position,
// waveform and model, and every stimulus it was shown, in the layout spike sorters use.
//
// write_ground_truth() produces the Phy / Kilosort files (spike_times.npy, spike_clusters.npy,
// cluster_info.tsv) plus units.tsv (all model parameters), trials.tsv and unit_waveforms.npy, so a
// sorter's output or twinloop's own detector can be scored against them with standard tools.
//
// Plain value types; writing does file I/O and throws std::runtime_error naming the file. Not for
// the real-time path.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "twinloop/hil/response_models.hpp"
#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil {

/// Spike waveform template length: 2 ms at 30 kHz, trough at sample kTroughIndex (0.5 ms), so a
/// ~1.5 ms biphasic spike fits with a tapered tail.
inline constexpr std::size_t kTemplateSamples = 60;
inline constexpr std::size_t kTroughIndex = 15;

struct SpikeTruth {
  std::int64_t sample = 0;  ///< trough sample on the probe clock
  std::uint32_t unit = 0;   ///< unit id (= cluster id)
};

struct UnitTruth {
  std::uint32_t id = 0;
  ResponseParams response;
  double x_um = 0.0;                  ///< across the shank, probe coordinates
  double z_um = 0.0;                  ///< along the shank, 0 at the tip row
  double plane_distance_um = 0.0;     ///< distance from the probe plane (10..60 um)
  std::size_t peak_channel = 0;       ///< nearest site at the starting probe position
  double peak_distance_um = 0.0;      ///< 3-D distance to that site
  double amplitude0_uv = 0.0;         ///< A0 of A0 / (1 + (d / d0)^2)
  double spatial_decay_um = 0.0;      ///< d0
  double peak_amplitude_uv = 0.0;     ///< |trough| on the peak channel at the starting position
  double noise_uv = 0.0;              ///< white-noise sigma per channel
  double snr = 0.0;                   ///< peak_amplitude_uv / noise_uv
  double trough_width_ms = 0.0;       ///< sigma of the trough's Gaussian
  double repolarisation_ratio = 0.0;  ///< positive peak / |trough| of the template
  std::array<float, kTemplateSamples> waveform{};  ///< normalised: trough = -1 at kTroughIndex
};

struct TrialTruth {
  std::uint64_t trial = 0;
  protocols::Stimulus stimulus;
  std::int64_t onset_sample = 0;
  std::int64_t duration_samples = 0;
  bool late = false;  ///< reached the generator after its onset had been generated
};

/// A consistent snapshot: spikes in generation order (sorted per unit, not globally).
struct GroundTruth {
  double sample_rate_hz = 0.0;
  std::int64_t samples_generated = 0;
  std::vector<UnitTruth> units;
  std::vector<SpikeTruth> spikes;
  std::vector<TrialTruth> trials;
  std::vector<float> trial_rates_hz;  ///< trials x units: each unit's in-window rate per trial
  std::uint64_t dropped_spike_records = 0;  ///< spikes fired but not recorded (storage full)

  /// Spike count of `unit` with trough in [begin, end) samples. Linear scan; for tests and tools.
  [[nodiscard]] std::size_t count_spikes(std::uint32_t unit, std::int64_t begin,
                                         std::int64_t end) const noexcept;
};

/// Writes spike_times.npy (int64 samples, sorted), spike_clusters.npy (int32, same order),
/// cluster_info.tsv (cluster_id, ch, depth, x, snr, amplitude_uv, model, firing_rate_hz, ...),
/// units.tsv, trials.tsv and unit_waveforms.npy (units x kTemplateSamples float32) into `dir`
/// (created if missing).
/// \throws std::runtime_error on I/O failure.
void write_ground_truth(const GroundTruth& truth, const std::filesystem::path& dir);

}  // namespace twinloop::hil

// SpikeDetector: the streaming spike path for one probe, from raw int16 blocks to spike events.
//
// Per sample row: causal 2nd-order Butterworth high-pass and one-pole low-pass per channel (the
// 300-6000 Hz spike band), common average reference
// across channels, then a negative threshold at `threshold_sigma` times a robust noise estimate
// (median absolute deviation / 0.6745, re-estimated continuously). A threshold crossing becomes a
// spike when it is the deepest value within `dedup_radius_um` and ±`dedup_window_ms` (one event per
// spike across neighbouring sites) and not a shallower trough within `refractory_ms` after an event
// in its neighbourhood (the echo a high-pass filter makes of a spike's repolarisation).
//
// The arithmetic runs in SIMD kernels chosen at run time (Highway dynamic dispatch), so a portable
// build uses AVX2/AVX-512 where the rig PC has them. Events leave with a fixed delay of
// `delay_samples()` (the detector must see the samples after a trough before it can call it one).
//
// Thread safety: one thread calls process(); everything is allocated in the constructor.
// process() does not allocate, lock, log or throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "twinloop/acquisition/spike_event.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::acquisition {

struct DetectorConfig {
  double highpass_hz = 300.0;            ///< high-pass corner (2nd-order Butterworth, causal)
  double lowpass_hz = 6000.0;            ///< one-pole low-pass above the spike band (0 = none)
  bool common_reference = true;          ///< subtract the mean across channels from each sample row
  double threshold_sigma = 5.0;          ///< negative threshold in units of the MAD noise estimate
  double refractory_ms = 2.0;            ///< after an event, shallower troughs nearby are its echo
  double dedup_radius_um = 50.0;         ///< sites closer than this see the same spike
  double dedup_window_ms = 0.4;          ///< ± time within which only the deepest trough counts
  double warmup_ms = 20.0;               ///< filter settling time before noise is sampled
  std::size_t noise_window_rows = 1024;  ///< samples per channel kept for the MAD estimate
  std::size_t noise_stride_rows = 16;    ///< take every n-th row into the noise window
  double noise_update_seconds = 30.0;    ///< every channel's threshold refreshed this often
  std::size_t max_pending = 8192;        ///< candidate troughs awaiting their neighbours
};

/// Counters since construction. Read from the processing thread, or copy out through an atomic
/// snapshot owned by the caller (AcquisitionLoop does).
struct DetectorStats {
  std::uint64_t rows = 0;
  std::uint64_t events = 0;
  std::uint64_t events_overflowed = 0;  ///< output span full: events lost (counted, never silent)
  std::uint64_t candidates_overflowed = 0;  ///< pending-candidate buffer full
  std::uint64_t threshold_updates = 0;
};

class SpikeDetector {
 public:
  /// \param info  the probe: neural channel count, sample rate, µV/bit, geometry (one site each)
  /// \throws std::invalid_argument on an inconsistent config (e.g. high-pass above Nyquist)
  SpikeDetector(const drivers::ProbeInfo& info, const DetectorConfig& config);
  ~SpikeDetector();
  SpikeDetector(const SpikeDetector&) = delete;
  SpikeDetector& operator=(const SpikeDetector&) = delete;

  /// Processes every row of `block`; writes finished events to `out` in sample order.
  /// \return number of events written; events that do not fit are counted in stats().
  /// \note Real-time safe: no allocation, locks, logging or exceptions.
  std::size_t process(const drivers::SampleBlock& block, std::span<SpikeEvent> out) noexcept;

  /// Samples between a trough and the row that confirms it (its event's latency in samples).
  [[nodiscard]] std::int64_t delay_samples() const noexcept;
  /// True once the first noise estimate is done; no event is emitted before it.
  [[nodiscard]] bool armed() const noexcept;
  /// First sample at which detection was armed (-1 before).
  [[nodiscard]] std::int64_t armed_from_sample() const noexcept;
  /// Current per-channel noise estimate in µV (0 before armed).
  [[nodiscard]] std::vector<double> noise_uv() const;
  [[nodiscard]] const DetectorStats& stats() const noexcept;
  [[nodiscard]] std::size_t channel_count() const noexcept;

 private:
  struct State;
  State* state_;  // owned; pimpl keeps the SIMD kernels' types out of this header
};

/// Name of the SIMD instruction set the kernels dispatch to on this CPU (e.g. "AVX3", "AVX2").
[[nodiscard]] const char* active_simd_target();
/// Restricts dispatch to the baseline instruction set the binary was compiled for (SSE2 on
/// x86-64), to measure what a rig PC without AVX would get. Affects the whole process.
void force_baseline_simd();
/// Undoes force_baseline_simd(): dispatch to the best instruction set the CPU supports.
void restore_best_simd();

}  // namespace twinloop::acquisition

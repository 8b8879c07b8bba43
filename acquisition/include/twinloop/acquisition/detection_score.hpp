// Detection scoring: how well detected spike events match known ground-truth spikes (the
// simulated rig's, or a sorter's). Used by the demo's summary, the accuracy test and benchmarks.
//
// A detected event matches a ground-truth spike when it lies within ±`tolerance_samples` of it and
// on a site within `radius_um` of the unit's peak site; each spike and each event is matched at
// most once (greedy, nearest in time first). Recall counts the spikes of units with peak SNR at
// least `min_snr`; precision counts every detected event, matched to a spike of any unit.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "twinloop/acquisition/spike_event.hpp"
#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::acquisition {

struct TruthSpike {
  std::int64_t sample = 0;
  std::int32_t unit = 0;  ///< index into the units span
};

struct TruthUnit {
  std::uint32_t peak_channel = 0;
  double snr = 0.0;
};

struct ScoreOptions {
  std::int64_t tolerance_samples = 15;  ///< ±0.5 ms at 30 kHz
  double radius_um = 50.0;
  double min_snr = 5.0;
  std::int64_t from_sample = 0;  ///< score only [from_sample, to_sample)
  std::int64_t to_sample = INT64_MAX;
};

struct UnitScore {
  std::uint64_t spikes = 0;
  std::uint64_t matched = 0;
};

struct DetectionScore {
  std::uint64_t detected = 0;          ///< events in range
  std::uint64_t detected_matched = 0;  ///< events matched to any unit's spike
  std::uint64_t truth_spikes = 0;      ///< spikes of units with snr >= min_snr
  std::uint64_t truth_matched = 0;
  std::vector<UnitScore> units;  ///< per truth unit, whatever its SNR

  [[nodiscard]] double recall() const noexcept {
    return truth_spikes ? static_cast<double>(truth_matched) / static_cast<double>(truth_spikes)
                        : 0.0;
  }
  [[nodiscard]] double precision() const noexcept {
    return detected ? static_cast<double>(detected_matched) / static_cast<double>(detected) : 0.0;
  }
};

/// Both spans must be sorted by sample.
[[nodiscard]] DetectionScore score_detection(std::span<const SpikeEvent> detected,
                                             std::span<const TruthSpike> truth,
                                             std::span<const TruthUnit> units,
                                             const drivers::ProbeGeometry& geometry,
                                             const ScoreOptions& options);

}  // namespace twinloop::acquisition

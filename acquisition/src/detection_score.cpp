#include "twinloop/acquisition/detection_score.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>

namespace twinloop::acquisition {

DetectionScore score_detection(std::span<const SpikeEvent> detected,
                               std::span<const TruthSpike> truth, std::span<const TruthUnit> units,
                               const drivers::ProbeGeometry& geometry,
                               const ScoreOptions& options) {
  DetectionScore score;
  score.units.resize(units.size());
  std::vector<bool> used(detected.size(), false);
  auto in_range = [&](std::int64_t s) { return s >= options.from_sample && s < options.to_sample; };

  std::size_t first_candidate = 0;
  for (const TruthSpike& spike : truth) {
    if (!in_range(spike.sample) || spike.unit < 0 ||
        static_cast<std::size_t>(spike.unit) >= units.size()) {
      continue;
    }
    const TruthUnit& unit = units[static_cast<std::size_t>(spike.unit)];
    UnitScore& unit_score = score.units[static_cast<std::size_t>(spike.unit)];
    const bool counted = unit.snr >= options.min_snr;
    ++unit_score.spikes;
    if (counted) ++score.truth_spikes;
    while (first_candidate < detected.size() &&
           detected[first_candidate].sample < spike.sample - options.tolerance_samples) {
      ++first_candidate;
    }
    std::size_t best = detected.size();
    std::int64_t best_dt = std::numeric_limits<std::int64_t>::max();
    for (std::size_t i = first_candidate;
         i < detected.size() && detected[i].sample <= spike.sample + options.tolerance_samples;
         ++i) {
      if (used[i]) continue;
      if (geometry.distance_um(detected[i].channel, unit.peak_channel) > options.radius_um)
        continue;
      const std::int64_t dt = std::llabs(detected[i].sample - spike.sample);
      if (dt < best_dt) {
        best_dt = dt;
        best = i;
      }
    }
    if (best == detected.size()) continue;
    used[best] = true;
    ++unit_score.matched;
    if (counted) ++score.truth_matched;
  }
  for (std::size_t i = 0; i < detected.size(); ++i) {
    if (!in_range(detected[i].sample)) continue;
    ++score.detected;
    if (used[i]) ++score.detected_matched;
  }
  return score;
}

}  // namespace twinloop::acquisition

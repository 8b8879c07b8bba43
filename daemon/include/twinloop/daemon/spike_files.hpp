// Spike files in the Phy/Kilosort array layout: what `twinloop detect` and `twinloop run` write,
// and the ground truth that `twinloop simulate` writes and scoring reads back.
//
// Layout (Phy's "template-gui" input, the one Kilosort writes): spike_times.npy (int64, samples),
// spike_clusters.npy (int32), amplitudes.npy (float32, µV here), channel_positions.npy
// (float32 [channels x 2], µm), channel_map.npy (int32), cluster_info.tsv (tab-separated,
// header row; at least cluster_id, ch, depth).
#pragma once

#include <filesystem>
#include <span>
#include <vector>

#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/acquisition/spike_event.hpp"
#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::daemon {

/// Writes detected events with one cluster per detection channel (until spike sorting exists).
/// \param noise_uv        per-channel noise estimate, written to cluster_info.tsv
/// \param duration_s      recording span, for firing rates
void write_detected_spikes(const std::filesystem::path& dir,
                           std::span<const acquisition::SpikeEvent> events,
                           const drivers::ProbeGeometry& geometry, std::span<const double> noise_uv,
                           double duration_s);

/// Ground truth read back from spike_times.npy, spike_clusters.npy and cluster_info.tsv (which
/// must have cluster_id, ch and snr columns). Units are indexed in cluster_info order.
struct GroundTruthFiles {
  std::vector<acquisition::TruthSpike> spikes;
  std::vector<acquisition::TruthUnit> units;
  std::vector<int> cluster_ids;
};
/// \throws std::runtime_error naming the file and what is wrong
[[nodiscard]] GroundTruthFiles read_ground_truth(const std::filesystem::path& dir);

}  // namespace twinloop::daemon

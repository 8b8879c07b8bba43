// Probe geometry: where each recorded channel's site sits on the probe, in micrometres.
//
// Used by acquisition (which sites are neighbours, for spatial de-duplication of spikes) and by the
// simulated probe (how far each unit is from each site). Plain value type; no I/O here. Parsers
// that fill it from a SpikeGLX .meta or a probeinterface JSON live beside their formats.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace twinloop::drivers {

/// One recording site, in the probe's plane: x across the shank, z along it (0 at the tip row).
struct Site {
  double x_um = 0.0;
  double z_um = 0.0;
  int shank = 0;
  int electrode = 0;  ///< physical electrode index on the probe (bank * 384 + channel for NP1.0)
};

/// Sites of the recorded (neural) channels, indexed by channel in stored order.
struct ProbeGeometry {
  std::string model;  ///< e.g. "NP1000"
  std::vector<Site> sites;

  [[nodiscard]] std::size_t channel_count() const noexcept { return sites.size(); }
  /// Euclidean distance between two channels' sites; infinite across shanks.
  [[nodiscard]] double distance_um(std::size_t a, std::size_t b) const noexcept;
};

/// Neuropixels 1.0 bank 0 (electrodes 0..channels-1): 4-column staggered layout, 20 µm row pitch,
/// x in {16, 48, 0, 32} µm by electrode % 4, z = 20 µm * (electrode / 2). Source: the
/// probeinterface NP1000 description (../shared/data/probes/NP1000.json).
[[nodiscard]] ProbeGeometry neuropixels1_geometry(std::size_t channels = 384);

}  // namespace twinloop::drivers

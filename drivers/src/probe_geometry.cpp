#include "twinloop/drivers/probe_geometry.hpp"

#include <array>
#include <cmath>
#include <limits>

namespace twinloop::drivers {

double ProbeGeometry::distance_um(std::size_t a, std::size_t b) const noexcept {
  const Site& sa = sites[a];
  const Site& sb = sites[b];
  if (sa.shank != sb.shank) return std::numeric_limits<double>::infinity();
  return std::hypot(sa.x_um - sb.x_um, sa.z_um - sb.z_um);
}

ProbeGeometry neuropixels1_geometry(std::size_t channels) {
  static constexpr std::array<double, 4> kColumnX{16.0, 48.0, 0.0, 32.0};
  ProbeGeometry geometry;
  geometry.model = "NP1000";
  geometry.sites.reserve(channels);
  for (std::size_t e = 0; e < channels; ++e) {
    geometry.sites.push_back(
        Site{kColumnX[e % 4], 20.0 * static_cast<double>(e / 2), 0, static_cast<int>(e)});
  }
  return geometry;
}

}  // namespace twinloop::drivers

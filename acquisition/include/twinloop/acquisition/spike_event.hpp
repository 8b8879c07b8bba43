// SpikeEvent: one detected spike, the unit of data the acquisition path publishes.
//
// Times are samples on the probe's own clock (the session's master clock), never host time.
#pragma once

#include <cstdint>

namespace twinloop::acquisition {

struct SpikeEvent {
  std::int64_t sample = 0;    ///< sample index of the trough on the probe clock
  std::uint32_t channel = 0;  ///< neural channel (stored order) where the trough is deepest
  float amplitude_uv = 0.0f;  ///< filtered, referenced trough value in µV (negative)
};

}  // namespace twinloop::acquisition

// Stimulus values: one point of a protocol's stimulus space.
//
// A Stimulus is a fixed-size value (no heap) so that the designer and the stimulus path can pass
// it around on the real-time path. Its meaning (which dimension is which, units) comes from the
// StimulusSpace it was drawn from; `candidate` is its index in that space's candidate list.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace twinloop::protocols {

/// Most dimensions a stimulus space may have (e.g. direction, contrast, spatial frequency, ...).
inline constexpr std::size_t kMaxStimulusDimensions = 8;

/// One stimulus: the value on each dimension of its space, in the dimension's declared unit.
struct Stimulus {
  std::uint32_t candidate = 0;  ///< index in StimulusSpace::candidates
  std::uint8_t dimension_count = 0;
  std::array<double, kMaxStimulusDimensions> values{};

  [[nodiscard]] double value(std::size_t dimension) const noexcept { return values[dimension]; }
};

}  // namespace twinloop::protocols

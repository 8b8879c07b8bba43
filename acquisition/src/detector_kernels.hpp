// Internal: the SIMD kernels behind SpikeDetector, dispatched at run time by Highway.
#pragma once

#include <cstddef>
#include <cstdint>

namespace twinloop::acquisition::internal {

/// Everything one call of the row kernel reads and writes. Arrays indexed by channel have at
/// least `channels` entries; ring rows are `ring_stride` floats apart.
struct RowKernelArgs {
  const std::int16_t* samples = nullptr;  ///< row-major int16, `stride` words per row
  std::size_t stride = 0;
  std::size_t rows = 0;
  std::size_t channels = 0;
  float b0 = 0, b1 = 0, b2 = 0, a1 = 0, a2 = 0;  ///< biquad, a0 normalised to 1
  float* z1 = nullptr;                           ///< transposed direct form II state, per channel
  float* z2 = nullptr;
  float alpha = 1.0f;       ///< one-pole low-pass smoothing factor (1 = off)
  float* smooth = nullptr;  ///< its state, per channel
  bool common_reference = true;
  const float* neg_threshold = nullptr;  ///< per channel, negative; -inf disables detection
  float* ring = nullptr;                 ///< referenced rows, (row & ring_mask) * ring_stride
  std::size_t ring_stride = 0;
  std::uint64_t ring_mask = 0;
  std::uint64_t first_row = 0;             ///< global index of the block's row 0
  std::uint64_t* crossing_bits = nullptr;  ///< per ring row, bit c set when channel c crossed
  std::size_t bit_words = 0;
  std::uint8_t* row_crossed = nullptr;  ///< per ring row, any bit set
};

/// Filters, references and thresholds `rows` rows; fills the ring, bits and flags.
void process_rows(const RowKernelArgs& args);

}  // namespace twinloop::acquisition::internal

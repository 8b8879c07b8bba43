// Internal: the read step shared by the file sources whose data is a headerless, little-endian,
// sample-major int16 file (SpikeGLX .bin, Open Ephys continuous.dat): up to a block of whole rows,
// stamped on the recording's clock, paced at its sample rate or as fast as possible.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers::internal {

/// What a file source reads from (fixed after start()).
struct PacedFile {
  std::FILE* file = nullptr;
  const char* name = "the file";  ///< for messages, e.g. "the .bin"
  std::size_t stored_channels = 0;
  double sample_rate_hz = 0.0;
  Pace pace = Pace::kMax;
  std::size_t block_samples = 0;    ///< rows per read at most
  std::int64_t first_sample = 0;    ///< the recording's first sample on its clock
  std::uint64_t total_samples = 0;  ///< whole rows to replay
};

/// Reads the rows from `next_row` on and advances it; with Pace::kRealtime the first read starts
/// the clock (`clock_started`, `start_ns` on steady_clock). Real-time safe: no allocation (given
/// `error`'s reserved capacity), no exceptions. On kError, `error` says why.
[[nodiscard]] ReadStatus read_paced_rows(const PacedFile& f, std::uint64_t& next_row,
                                         bool& clock_started, std::int64_t& start_ns,
                                         SampleBlock& block, std::string& error) noexcept;

}  // namespace twinloop::drivers::internal

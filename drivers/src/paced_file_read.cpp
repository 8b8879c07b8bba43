#include "paced_file_read.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <thread>

namespace twinloop::drivers::internal {

ReadStatus read_paced_rows(const PacedFile& f, std::uint64_t& next_row, bool& clock_started,
                           std::int64_t& start_ns, SampleBlock& block,
                           std::string& error) noexcept {
  if (f.file == nullptr) {
    error = "read before start()";
    return ReadStatus::kError;
  }
  if (block.stored_channels != f.stored_channels) {
    error = "block allocated with the wrong number of stored channels";
    return ReadStatus::kError;
  }
  if (next_row >= f.total_samples) return ReadStatus::kEndOfStream;
  const std::size_t rows = static_cast<std::size_t>(std::min<std::uint64_t>(
      f.total_samples - next_row, std::min(block.capacity_samples(), f.block_samples)));
  if (rows == 0) {
    error = "block has no capacity";
    return ReadStatus::kError;
  }
  if (f.pace == Pace::kRealtime) {
    const auto now_ns = [] {
      return std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
    if (!clock_started) {
      clock_started = true;
      start_ns = now_ns();
    }
    // Due when its last sample would have been acquired.
    const double due_s = static_cast<double>(next_row + rows) / f.sample_rate_hz;
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(start_ns + static_cast<std::int64_t>(due_s * 1e9))));
  }
  static_assert(std::endian::native == std::endian::little,
                "the recordings are little-endian; add byte swapping for this host");
  const std::size_t words = rows * f.stored_channels;
  if (std::fread(block.samples.data(), sizeof(std::int16_t), words, f.file) != words) {
    error = std::ferror(f.file) != 0 ? "read error on " : "unexpected end of ";
    error += f.name;
    return ReadStatus::kError;
  }
  block.first_sample = f.first_sample + static_cast<std::int64_t>(next_row);
  block.sample_count = rows;
  next_row += rows;
  return ReadStatus::kOk;
}

}  // namespace twinloop::drivers::internal

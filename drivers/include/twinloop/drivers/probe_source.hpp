// ProbeSource: the one interface through which raw probe samples enter twinloop.
//
// A source yields blocks of int16 samples, sample-major ([sample][stored channel]), each stamped
// with the index of its first sample on the probe's own clock (the master clock of a session).
// Real hardware, file replay, network streams and the simulated probe all implement it, so nothing
// above can tell them apart.
//
// Lifecycle: construct (parse configuration, may throw) -> start() (open device/file, allocate;
// may fail) -> read() repeatedly on ONE thread (the acquisition thread; real-time safe: no
// allocation, no exceptions) -> stop(). A source object owns a device or file: it is neither
// copyable nor movable, so that no second handle to the hardware can exist.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::drivers {

/// How a file or simulated source is paced: as the hardware would deliver it, or as fast as the
/// consumer can take it (offline processing, benchmarks).
enum class Pace { kRealtime, kMax };

/// Parses "realtime" / "max"; returns false on anything else.
[[nodiscard]] bool parse_pace(const std::string& text, Pace& out) noexcept;

/// What a source records: fixed for its lifetime once start() succeeded.
struct ProbeInfo {
  std::string name;                 ///< e.g. "imec0" or "sim0"
  std::size_t stored_channels = 0;  ///< int16 words per sample in a block (e.g. 385)
  std::size_t neural_channels = 0;  ///< the first neural_channels words are electrode sites
  bool has_sync_word = false;       ///< if true, word [neural_channels] is the SpikeGLX SY word
  double sample_rate_hz = 0.0;      ///< calibrated rate (SpikeGLX imSampRate)
  double microvolts_per_bit = 0.0;  ///< AP band conversion for the neural channels
  ProbeGeometry geometry;           ///< one site per neural channel
};

/// A block of samples. The buffer is allocated once (by the consumer, at start-up, with
/// `allocate`) and refilled by every read(); `sample_count` tells how many rows are valid.
struct SampleBlock {
  std::int64_t first_sample = 0;  ///< index of row 0 on the probe's sample clock
  std::size_t sample_count = 0;   ///< valid rows
  std::size_t stored_channels = 0;
  std::vector<std::int16_t> samples;  ///< sample-major: samples[row * stored_channels + channel]

  void allocate(std::size_t max_samples, std::size_t channels) {
    stored_channels = channels;
    samples.assign(max_samples * channels, 0);
    sample_count = 0;
  }
  [[nodiscard]] std::size_t capacity_samples() const noexcept {
    return stored_channels == 0 ? 0 : samples.size() / stored_channels;
  }
  [[nodiscard]] const std::int16_t* row(std::size_t r) const noexcept {
    return samples.data() + r * stored_channels;
  }
};

/// Outcome of one read. kWouldBlock: nothing yet (non-blocking sources); kEndOfStream: a file or
/// finite simulation is exhausted; kError: see last_error().
enum class ReadStatus { kOk, kWouldBlock, kEndOfStream, kError };

class ProbeSource {
 public:
  ProbeSource() = default;
  ProbeSource(const ProbeSource&) = delete;
  ProbeSource& operator=(const ProbeSource&) = delete;
  ProbeSource(ProbeSource&&) = delete;
  ProbeSource& operator=(ProbeSource&&) = delete;
  virtual ~ProbeSource() = default;

  /// Opens the device or file and allocates. Returns false with last_error() set on failure.
  [[nodiscard]] virtual bool start() = 0;
  /// Valid after a successful start().
  [[nodiscard]] virtual const ProbeInfo& info() const noexcept = 0;
  /// Fills `block` with up to block.capacity_samples() rows.
  /// \note Real-time safe after start(): no allocation, no locks, no exceptions. A realtime-paced
  ///       source may sleep until its data is due, as hardware would.
  [[nodiscard]] virtual ReadStatus read(SampleBlock& block) noexcept = 0;
  virtual void stop() noexcept {}
  [[nodiscard]] virtual const std::string& last_error() const noexcept { return last_error_; }

 protected:
  std::string last_error_;
};

/// Detects discontinuities of the sample index between consecutive blocks. Gaps are counted and
/// reported, never bridged (no samples are invented). Real-time safe.
class GapDetector {
 public:
  struct Gap {
    std::int64_t expected_sample = 0;  ///< where the previous block ended
    std::int64_t found_sample = 0;     ///< where this block starts
  };

  /// Checks a block; returns true (and fills `gap`) when it does not continue the previous one.
  /// A block that starts earlier than expected (overlap or reordering) is a gap too, with
  /// found_sample < expected_sample.
  bool check(std::int64_t first_sample, std::size_t sample_count, Gap& gap) noexcept {
    bool discontinuous = false;
    if (started_ && first_sample != next_expected_) {
      gap = Gap{next_expected_, first_sample};
      ++gap_count_;
      if (first_sample > next_expected_) missing_samples_ += first_sample - next_expected_;
      discontinuous = true;
    }
    started_ = true;
    next_expected_ = first_sample + static_cast<std::int64_t>(sample_count);
    return discontinuous;
  }
  [[nodiscard]] std::uint64_t gap_count() const noexcept { return gap_count_; }
  [[nodiscard]] std::int64_t missing_samples() const noexcept { return missing_samples_; }

 private:
  bool started_ = false;
  std::int64_t next_expected_ = 0;
  std::uint64_t gap_count_ = 0;
  std::int64_t missing_samples_ = 0;
};

}  // namespace twinloop::drivers

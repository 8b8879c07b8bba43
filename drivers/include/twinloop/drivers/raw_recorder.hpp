// RawRecorder: records a session's raw probe stream in SpikeGLX format while passing it on, so the
// session can later be replayed through the same acquisition code (`twinloop replay`).
//
// It is a ProbeSource that wraps another: the acquisition thread reads through it as before, and
// each block is copied into a ring of slots allocated at start(); a recording thread writes the
// slots to `<base>.ap.bin` (+ .ap.meta on stop()). The file may be named after start() with
// open_file() (a session's directory is created only once the probe has said what it records);
// until then the ring holds the stream. The acquisition thread never touches the disk,
// allocates, locks or throws: when the disk falls so far behind that the ring is full, the block
// is not recorded and counted (or, for a source with no deadline, the reader waits) (the recording
// then has a zero-filled stretch, reported as such). The ring holds `ring_seconds` of data, so that
// only a disk stalled for that long loses samples.
//
// A SpikeGLX file holds no gaps: a stretch of samples the source skipped (a dropped network
// block) is written as zeros and counted; rows a source repeats (duplicated or reordered blocks)
// are not written twice. Both are reported by counters() so the record can say where the raw
// file is not the stream the session saw.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {

struct RawRecorderConfig {
  /// e.g. SESSION_DIR/raw/session_g0_t0.imec0 (.ap.bin/.ap.meta); empty: open_file() names it
  std::filesystem::path base;
  std::size_t max_block_samples = 300;  ///< largest block the consumer reads (its allocation)
  double ring_seconds = 2.0;            ///< how long a stalled disk is absorbed
  /// For sources with no deadline (files, a simulation at maximum pace): when the ring is full the
  /// reader waits for the disk instead of losing the block. Never for a live probe.
  bool wait_when_full = false;
};

struct RawRecorderCounters {
  std::uint64_t samples_written = 0;       ///< rows in the .bin, zero-filled ones included
  std::uint64_t samples_not_recorded = 0;  ///< rows lost because the ring was full
  std::uint64_t samples_zero_filled = 0;   ///< rows written as zeros (source gaps, ring overflow)
  std::uint64_t samples_repeated = 0;      ///< rows the source delivered again (not written)
  bool failed = false;                     ///< the writer failed (e.g. disk full); see error()
};

class RawRecorder final : public ProbeSource {
 public:
  RawRecorder(ProbeSource& inner, RawRecorderConfig config);
  ~RawRecorder() override;

  /// Starts the wrapped source, then the recording thread, and creates the SpikeGLX files when
  /// the configuration names them.
  /// \return false with last_error() set when either fails (the wrapped source is stopped).
  [[nodiscard]] bool start() override;
  /// Creates `<base>.ap.bin` after start(), when the configuration named no file. Call once.
  /// \return false with `error` naming the file when it cannot be created (nothing is recorded).
  [[nodiscard]] bool open_file(const std::filesystem::path& base, std::string& error);
  [[nodiscard]] const ProbeInfo& info() const noexcept override { return inner_.info(); }
  /// Reads from the wrapped source and queues a copy of the block. Real-time safe.
  [[nodiscard]] ReadStatus read(SampleBlock& block) noexcept override;
  /// Stops the wrapped source, writes what is queued, closes the .bin and writes the .meta.
  void stop() noexcept override;
  [[nodiscard]] const std::string& last_error() const noexcept override;

  /// Safe from any thread.
  [[nodiscard]] RawRecorderCounters counters() const noexcept;
  [[nodiscard]] std::filesystem::path bin_path() const;
  /// The writer's failure, if any (valid after stop()).
  [[nodiscard]] std::string error() const;

  /// Bytes a recording of `seconds` of this probe takes on disk (the .bin; the .meta is small).
  [[nodiscard]] static std::uint64_t bytes_needed(std::size_t neural_channels,
                                                  double sample_rate_hz, double seconds) noexcept;

 private:
  struct Slot {
    std::int64_t first_sample = 0;
    std::size_t sample_count = 0;
    std::vector<std::int16_t> samples;  // source layout: sample_count x stored channels
  };
  void create_writer(const std::filesystem::path& base);
  void write_loop();
  void write_slot(const Slot& slot);
  void write_rows(std::int64_t first_sample, std::size_t rows, const std::int16_t* source);
  void write_zeros(std::int64_t first_sample, std::uint64_t rows);

  ProbeSource& inner_;
  RawRecorderConfig config_;
  std::unique_ptr<SpikeGlxWriter> writer_;
  std::vector<Slot> slots_;
  std::atomic<std::uint64_t> head_{0};  // next slot the producer fills
  std::atomic<std::uint64_t> tail_{0};  // next slot the recording thread writes
  std::atomic<bool> stopping_{false};
  std::atomic<bool> file_ready_{false};  // the recording thread writes only once the file exists
  std::thread thread_;
  SampleBlock staging_;  // recording thread: one block in the writer's layout
  std::int64_t next_sample_ = -1;
  std::size_t source_stored_ = 0, neural_ = 0;
  bool started_ = false;
  std::atomic<std::uint64_t> not_recorded_{0};
  std::atomic<std::uint64_t> zero_filled_{0};
  std::atomic<std::uint64_t> repeated_{0};
  std::atomic<std::uint64_t> written_{0};
  std::atomic<bool> failed_{false};
  std::string error_;  // written by the recording thread before failed_ is set
};

}  // namespace twinloop::drivers

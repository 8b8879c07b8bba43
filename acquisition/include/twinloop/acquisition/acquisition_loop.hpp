// AcquisitionLoop: the acquisition thread of one probe. It reads blocks from a ProbeSource, runs
// the SpikeDetector, and publishes spike events and gap events into lock-free single-producer /
// single-consumer queues for one consumer thread (the session engine, a recorder, a monitor).
//
// After start() returns, the loop thread does not allocate, lock, log or throw: every buffer is
// sized in start(); a full queue drops the newest items and counts them (never silent, never
// blocking). Per-block latency (block returned by the source -> its events published) is written
// into a preallocated array when latency recording is enabled, for benchmarks.
//
// Thread safety: start()/stop()/join() from one controlling thread; drain_*() from one consumer
// thread; counters() from any thread.
#pragma once

#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/acquisition/spike_detector.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::acquisition {

struct AcquisitionConfig {
  DetectorConfig detector;
  std::size_t block_samples = 30;  ///< rows per read (30 = 1 ms at 30 kHz)
  std::size_t event_queue_capacity = 1 << 18;
  std::size_t gap_queue_capacity = 1024;
  std::size_t latency_capacity = 0;  ///< blocks whose latency is kept (0 = off)
};

/// A discontinuity of the sample index between two blocks (see drivers::GapDetector).
struct GapEvent {
  std::int64_t expected_sample = 0;
  std::int64_t found_sample = 0;
};

/// A copy of the loop's counters, safe to take from any thread.
struct AcquisitionCounters {
  std::uint64_t blocks = 0;
  std::uint64_t samples = 0;
  std::uint64_t events = 0;
  std::uint64_t events_dropped = 0;  ///< queue full or detector output full
  std::uint64_t gaps = 0;
  std::int64_t missing_samples = 0;
  std::uint64_t gaps_dropped = 0;
  std::int64_t final_before_sample = 0;  ///< every event before this sample has been published
  /// One past the newest sample read, in the source's sample numbers: the stream's clock now. Not
  /// `samples` (a count), which lags it by the samples a gap lost and by the first sample number
  /// of a stream that does not start at 0 (the Open Ephys GUI's, acquiring for an hour).
  std::int64_t next_sample = 0;
  bool armed = false;
  bool finished = false;  ///< the source ended (or failed) and the thread left its loop
  bool failed = false;
};

class AcquisitionLoop {
 public:
  /// The source must outlive the loop. Nothing starts until start().
  AcquisitionLoop(drivers::ProbeSource& source, AcquisitionConfig config);
  ~AcquisitionLoop();
  AcquisitionLoop(const AcquisitionLoop&) = delete;
  AcquisitionLoop& operator=(const AcquisitionLoop&) = delete;

  /// Starts the source, allocates everything, spawns the thread. False with error() on failure.
  [[nodiscard]] bool start();
  /// Asks the thread to leave after its current block; join() waits for it.
  void stop() noexcept;
  void join();

  /// Consumer side: moves up to out.size() events / gaps out of the queues.
  std::size_t drain_events(std::span<SpikeEvent> out) noexcept;
  std::size_t drain_gaps(std::span<GapEvent> out) noexcept;

  [[nodiscard]] AcquisitionCounters counters() const noexcept;
  [[nodiscard]] const drivers::ProbeInfo& probe() const noexcept { return source_.info(); }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  /// The detector; inspect only after join().
  [[nodiscard]] const SpikeDetector& detector() const noexcept { return *detector_; }
  /// Block latencies in nanoseconds (after join()); empty unless latency_capacity > 0.
  [[nodiscard]] std::span<const std::uint32_t> block_latencies_ns() const noexcept;

 private:
  void run() noexcept;

  drivers::ProbeSource& source_;
  AcquisitionConfig config_;
  std::string error_;
  std::unique_ptr<SpikeDetector> detector_;
  drivers::SampleBlock block_;
  std::vector<SpikeEvent> block_events_;
  std::unique_ptr<boost::lockfree::spsc_queue<SpikeEvent>> events_;
  std::unique_ptr<boost::lockfree::spsc_queue<GapEvent>> gaps_;
  std::vector<std::uint32_t> latencies_ns_;
  std::size_t latency_count_ = 0;
  std::uint64_t queue_dropped_ = 0;  // loop thread only
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};

  std::atomic<std::uint64_t> blocks_{0}, samples_{0}, events_published_{0}, events_dropped_{0};
  std::atomic<std::uint64_t> gaps_seen_{0}, gaps_dropped_{0};
  std::atomic<std::int64_t> missing_samples_{0}, final_before_{0}, next_sample_{0};
  std::atomic<bool> armed_{false}, finished_{false}, failed_{false};
};

}  // namespace twinloop::acquisition

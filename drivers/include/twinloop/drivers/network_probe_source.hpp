// NetworkProbeSource: a ProbeSource fed by twinloop's probe stream over ZeroMQ (SUB socket), from
// the hil bench (`twinloop-hil`) or a networked rig. Wire format: docs/wire-format.md.
//
// Every message is validated (size, magic, version, checksum, type, channel count, probe id);
// malformed ones are dropped and counted, with last_error() naming what was wrong. Blocks whose
// sequence was already delivered are duplicates, blocks that start before the end of the last
// delivered block are out of order: both are dropped and counted, so the stream never runs
// backwards. Lost blocks are passed through as gaps: the next block keeps its true first_sample, so
// the acquisition loop's GapDetector sees the discontinuity too. A disconnect (socket monitor
// event, or no data for data_timeout_ms) is counted once per outage, the reconnect when data flows
// again; libzmq reconnects by itself (heartbeats catch half-open TCP links).
//
//   NetworkProbeSource source({.endpoint = "tcp://127.0.0.1:5555"});
//   if (!source.start()) fail(source.last_error());   // waits for the stream-info message
//   block.allocate(30, source.info().stored_channels);
//   while (source.read(block) != ReadStatus::kEndOfStream) { ... }   // acquisition thread
//   source.fault_counters();  source.drain_fault_events(events);     // any / session thread
//
// Threads: start()/stop() on a controlling thread, read() on one acquisition thread, last_error()
// on the reading thread, fault_counters() from any thread, drain_fault_events() from one consumer
// thread. Not copyable or movable (owns sockets that other threads' pointers refer to).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "twinloop/drivers/network_faults.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers {

struct NetworkProbeConfig {
  std::string endpoint;        ///< ZeroMQ endpoint to connect to, e.g. tcp://rig:5555
  std::int64_t probe_id = -1;  ///< accept only this probe id; -1: the stream info's
  /// Largest block accepted (bigger ones are malformed). start() allocates and touches a receive
  /// buffer of this many rows, so that read() never page-faults on a fresh page.
  std::size_t max_block_samples = 3000;
  int connect_timeout_ms = 2000;    ///< start(): how long to wait for the stream info
  int poll_timeout_ms = 5;          ///< read(): longest wait before returning kWouldBlock
  int data_timeout_ms = 250;        ///< no valid block this long while up: a disconnect
  int heartbeat_interval_ms = 100;  ///< ZMTP PING interval (detects half-open TCP links)
  int heartbeat_timeout_ms = 500;   ///< no traffic this long: libzmq drops and reconnects
  int reconnect_interval_ms = 50;   ///< libzmq's retry interval while the peer is away
  int receive_hwm = 1000;           ///< messages queued before libzmq drops (1 s of 1 ms blocks)
  std::size_t fault_queue_capacity = 1024;
};

/// Timing of the last delivered block, for latency measurements over one host's loopback.
struct BlockTiming {
  std::uint64_t sequence = 0;
  std::int64_t first_sample = 0;
  std::int64_t send_time_ns = 0;     ///< sender's CLOCK_MONOTONIC (wire header)
  std::int64_t receive_time_ns = 0;  ///< ours, when the message was taken off the socket
};

class NetworkProbeSource final : public ProbeSource {
 public:
  /// \throws std::invalid_argument for an empty endpoint or non-positive timeouts/sizes.
  explicit NetworkProbeSource(NetworkProbeConfig config);
  ~NetworkProbeSource() override;

  /// Connects, waits up to connect_timeout_ms for a stream-info message and allocates every buffer
  /// read() uses. Returns false with last_error() set (unreachable, no or bad stream info).
  [[nodiscard]] bool start() override;
  [[nodiscard]] const ProbeInfo& info() const noexcept override;
  /// Delivers the next valid block (or the next rows of it when `block` is smaller than the block
  /// sent). kWouldBlock when nothing valid arrived within poll_timeout_ms; kEndOfStream after the
  /// sender's stream-end message; kError when not started or `block` has the wrong channel count.
  /// \note Real-time safe after start(): no allocation, no locks, no exceptions in twinloop code
  ///       (messages are copied from libzmq into buffers sized in start()).
  [[nodiscard]] ReadStatus read(SampleBlock& block) noexcept override;
  /// Closes the sockets. Call only when no read() is in progress (join the reader first). A later
  /// start() reconnects from scratch; the counters keep counting.
  void stop() noexcept override;

  /// \note Any thread; lock-free.
  [[nodiscard]] NetworkFaultCounters fault_counters() const noexcept;
  /// Moves up to out.size() fault events out of the queue, oldest first.
  /// \note One consumer thread; lock-free, no allocation.
  std::size_t drain_fault_events(std::span<FaultEvent> out) noexcept;
  /// The reading thread only.
  [[nodiscard]] const BlockTiming& last_block_timing() const noexcept;
  /// The id from the stream info (valid after start()).
  [[nodiscard]] std::uint32_t probe_id() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::drivers

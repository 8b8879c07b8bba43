// What the network transports (NetworkProbeSource, NetworkStimulusSink) saw go wrong: counters any
// thread may read, and fault events with sample positions so the session can flag the trials a
// fault touched (and exclude them from scoring) instead of silently using them.
//
// Plain value types. The transports keep the counters in atomics and hand out copies; events go
// through a bounded single-consumer queue per transport (full queue: the event is dropped and
// counted in events_dropped, never blocking the producer).
#pragma once

#include <cstdint>

namespace twinloop::drivers {

/// A snapshot of a transport's counters. A probe source fills the stream fields, a stimulus sink
/// the stimulus fields; the others stay 0, so the daemon may add snapshots of several transports.
struct NetworkFaultCounters {
  // Probe stream.
  std::uint64_t blocks = 0;             ///< blocks delivered to the reader
  std::uint64_t samples = 0;            ///< rows delivered to the reader
  std::uint64_t malformed = 0;          ///< dropped: size, magic, version, type or field wrong
  std::uint64_t checksum_failures = 0;  ///< dropped: CRC-32 mismatch (not counted as malformed)
  std::uint64_t duplicates = 0;         ///< dropped: a block sequence already delivered
  std::uint64_t out_of_order = 0;       ///< dropped: arrived after a later block was delivered
  std::uint64_t gaps = 0;               ///< delivered blocks that did not continue the previous one
  std::int64_t missing_samples = 0;     ///< samples skipped by those gaps
  std::uint64_t disconnects = 0;        ///< link lost (socket disconnected, or data timeout)
  std::uint64_t reconnects = 0;         ///< data flowing again after a disconnect
  std::uint64_t data_timeouts = 0;      ///< disconnects noticed by the data timeout
  std::uint64_t stream_infos = 0;       ///< stream-info messages received (one per (re)connect)
  // Stimulus endpoint.
  std::uint64_t commands = 0;        ///< commands sent
  std::uint64_t delivered = 0;       ///< acknowledged on time
  std::uint64_t late_onsets = 0;     ///< acknowledged, onset beyond the tolerance
  std::uint64_t missing_onsets = 0;  ///< no acknowledgement within the reply timeout
  std::uint64_t refused = 0;         ///< the device refused (reason in the reply)
  std::uint64_t not_connected = 0;   ///< no connection to send on within the timeout
  std::uint64_t stale_replies = 0;   ///< replies to requests that had already timed out
  // Both.
  std::uint64_t events_dropped = 0;  ///< fault events lost because the event queue was full
};

enum class FaultKind : std::uint8_t {
  kMalformed,     ///< at: next expected sample
  kChecksum,      ///< at: next expected sample (the lost samples show up as the next gap)
  kDuplicate,     ///< range: the duplicate's samples (nothing lost)
  kOutOfOrder,    ///< range: the late block's samples (already reported missing by a gap)
  kGap,           ///< range: [expected, found) samples missing; value = missing samples
  kDisconnect,    ///< at: next expected sample; value = 1 socket closed, 0 data timeout
  kReconnect,     ///< at: first sample after the outage
  kStreamEnd,     ///< at: end sample announced by the sender
  kLateOnset,     ///< range: [requested, actual onset); value = samples late; trial set
  kMissingOnset,  ///< range: [requested, requested + duration); trial set; delivery unknown
  kRefused,       ///< range: [requested, requested + duration); trial set; not delivered
  kNotConnected,  ///< as kRefused: the command could not be sent
};

/// Static text naming the kind; never null.
[[nodiscard]] const char* describe(FaultKind kind) noexcept;

/// One fault with the samples it touches on the probe clock: a trial whose window intersects
/// [first_sample, end_sample) is affected. For point faults end_sample == first_sample.
struct FaultEvent {
  FaultKind kind = FaultKind::kMalformed;
  std::int64_t first_sample = -1;  ///< -1: no position known yet (before the first block)
  std::int64_t end_sample = -1;
  std::int64_t value = 0;         ///< kind-specific, see FaultKind
  std::uint64_t sequence = 0;     ///< block sequence (stream) or request id (stimulus)
  std::uint64_t trial = 0;        ///< stimulus faults only
  std::int64_t host_time_ns = 0;  ///< steady clock when it was noticed
};

}  // namespace twinloop::drivers

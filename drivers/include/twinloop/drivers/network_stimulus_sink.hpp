// NetworkStimulusSink: a StimulusSink that sends each command to a networked stimulator (the hil
// bench or a rig) over ZeroMQ (DEALER socket) and waits, with a timeout, for its onset
// acknowledgement. Wire format: docs/wire-format.md.
//
// Each command carries a fresh request id; a reply with another id (one that arrived after its
// request had timed out) is dropped and counted, so one lost reply never shifts later ones. The
// outcome of every delivery is one of: on time, late (the reported onset is more than
// late_tolerance_samples past the requested earliest onset), refused (the device's reason is in
// last_error()), missing (no acknowledgement in time: whether the stimulus happened is unknown),
// not connected. Each is counted and, except on-time, queued as a FaultEvent with its trial and
// sample range so the session can flag the trial.
//
// Threads: start()/deliver() on one session thread; fault_counters() from any thread;
// drain_fault_events() from one consumer thread. Not copyable or movable (owns a socket).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "twinloop/drivers/network_faults.hpp"
#include "twinloop/drivers/stimulus_sink.hpp"

namespace twinloop::drivers {

struct NetworkStimulusConfig {
  std::string endpoint;                      ///< ZeroMQ endpoint to connect to
  int reply_timeout_ms = 100;                ///< wait this long for the acknowledgement
  int connect_timeout_ms = 2000;             ///< start(): wait this long for a connection
  std::int64_t late_tolerance_samples = 30;  ///< onset later than requested + this: late
  int heartbeat_interval_ms = 100;
  int heartbeat_timeout_ms = 500;
  int reconnect_interval_ms = 50;
  std::size_t fault_queue_capacity = 256;
};

enum class DeliveryOutcome : std::uint8_t {
  kDelivered,     ///< acknowledged within tolerance
  kLate,          ///< acknowledged, but the onset is late (still delivered: flag the trial)
  kRefused,       ///< the device said no (reason in last_error())
  kMissing,       ///< no acknowledgement within reply_timeout_ms
  kNotConnected,  ///< no connection within reply_timeout_ms; nothing was sent
  kNotStarted,    ///< deliver() before a successful start()
};

[[nodiscard]] const char* describe(DeliveryOutcome outcome) noexcept;

struct DeliveryResult {
  DeliveryOutcome outcome = DeliveryOutcome::kNotStarted;
  std::uint64_t request_id = 0;
  std::int64_t requested_sample = 0;  ///< the command's earliest onset
  std::int64_t onset_sample = -1;     ///< the device's onset (kDelivered, kLate), else -1
  std::int64_t round_trip_ns = 0;     ///< send -> acknowledgement (or -> timeout)

  [[nodiscard]] bool delivered() const noexcept {
    return outcome == DeliveryOutcome::kDelivered || outcome == DeliveryOutcome::kLate;
  }
};

class NetworkStimulusSink final : public StimulusSink {
 public:
  /// \throws std::invalid_argument for an empty endpoint or non-positive timeouts.
  explicit NetworkStimulusSink(NetworkStimulusConfig config);
  ~NetworkStimulusSink() override;

  /// Connects and waits up to connect_timeout_ms until the connection is up. False with
  /// last_error() when it is not.
  [[nodiscard]] bool start();
  void stop() noexcept;

  /// deliver_with_result(), reduced to the StimulusSink contract: delivered for on-time and late
  /// onsets (the onset is real either way); use last_result() to tell them apart.
  [[nodiscard]] StimulusOnset deliver(const StimulusCommand& command) override;
  /// Sends the command and blocks up to reply_timeout_ms for its acknowledgement.
  /// \note Not real-time: blocks; no allocation except last_error() growing past 512 bytes.
  [[nodiscard]] DeliveryResult deliver_with_result(const StimulusCommand& command);
  [[nodiscard]] const DeliveryResult& last_result() const noexcept;

  /// \note Any thread; lock-free.
  [[nodiscard]] NetworkFaultCounters fault_counters() const noexcept;
  /// \note One consumer thread; lock-free, no allocation.
  std::size_t drain_fault_events(std::span<FaultEvent> out) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::drivers

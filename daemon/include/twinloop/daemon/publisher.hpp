// Publisher: the daemon's read-only monitoring stream (docs/monitoring.md) on a ZeroMQ PUB socket.
// Topics: spikes, trial, posterior, health, session.
//
// Producers call the publish_* methods; each copies its message into a bounded, preallocated
// queue and returns at once. A sender thread owned by the Publisher serialises and sends. Nothing
// a subscriber does (read slowly, never read, vanish) can make a publish_* call wait: a full
// queue drops the message, and so does a full subscriber pipe (the socket's high-water mark);
// every drop is counted per topic, reported in counters() and in every health message, and
// leaves a hole in the topic's sequence numbers so a client sees it too.
//
// Thread safety: every publish_* method may be called from any thread. publish_spikes is meant
// for one producer (the thread that drains acquisition): it never allocates, never locks; a
// second thread calling it while a call is in progress has its batch dropped and counted rather
// than wait. counters() may be read from any thread.
//
// Example:
//   Publisher pub({.endpoint = "tcp://*:5560"});
//   pub.publish_session({.name = "s1", .protocol = "orientation", .state = "running"});
//   pub.publish_spikes(first, end, events);  // from the drain loop
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "twinloop/acquisition/spike_event.hpp"

namespace twinloop::daemon {

/// Version written in every message header; see docs/monitoring.md "Versioning".
inline constexpr std::uint16_t kMonitorWireVersion = 1;
/// Bytes of the fixed header in front of every payload.
inline constexpr std::size_t kMonitorHeaderBytes = 24;
/// Bytes of one packed spike record (sample i64, channel u32, amplitude f32).
inline constexpr std::size_t kMonitorSpikeRecordBytes = 16;

enum class Topic : std::uint8_t { kSpikes = 0, kTrial, kPosterior, kHealth, kSession };
inline constexpr std::size_t kTopicCount = 5;
/// The topic frame's text ("spikes", "trial", "posterior", "health", "session").
[[nodiscard]] const char* topic_name(Topic topic) noexcept;

enum class TrialStage : std::uint8_t {
  kDesigned,
  kPreregistered,
  kDelivered,
  kOutcome,
  kScored,
  kFlagged,
  kAborted
};
/// "designed", "preregistered", "delivered", "outcome", "scored", "flagged", "aborted".
[[nodiscard]] const char* trial_stage_name(TrialStage stage) noexcept;

/// One step of one trial, as the session engine sees it.
struct TrialEvent {
  std::uint64_t trial = 0;
  TrialStage stage = TrialStage::kDesigned;
  std::uint32_t candidate = 0;  ///< index in the protocol's stimulus space
  bool validation = false;      ///< a random validation trial rather than a designed one
  std::string strategy;         ///< designer strategy, e.g. "discriminate"; may be empty
  std::vector<std::pair<std::string, double>> stimulus;  ///< dimension name, value (protocol units)
  std::int64_t onset_sample = -1;                 ///< on the acquisition clock; -1 until delivered
  std::int64_t window_start = 0, window_end = 0;  ///< response window, samples [start, end)
  /// Counts summary, meaningful from the outcome stage on: spikes in the response window.
  std::uint64_t total_count = 0;
  std::uint32_t units = 0;           ///< units counted
  std::uint32_t max_count = 0;       ///< the largest count of any unit
  std::int64_t max_count_unit = -1;  ///< which unit; -1 when none
  std::string note;                  ///< why flagged or aborted; free text
};

/// What the session is, and how far along. Sent when it changes; re-sent periodically (a
/// subscriber that joins late learns it within `session_repeat_s`).
struct SessionInfo {
  std::string name;      ///< session directory name
  std::string protocol;  ///< protocol name
  std::string rig;       ///< "sim", …
  std::string designer;  ///< strategy
  std::string state;     ///< "starting", "running", "stopping", "finished", "failed"
  std::vector<std::string> hypotheses;
  double sample_rate_hz = 0.0;  ///< acquisition clock; 0 when unknown
  std::uint32_t channels = 0;   ///< neural channels spikes are reported on
  std::uint64_t trials = 0;     ///< trials so far
};

/// The engine's own health, filled by the session engine; the publisher adds its own counters.
struct HealthReport {
  double uptime_s = 0.0;
  std::uint64_t samples = 0;            ///< acquired so far (master clock)
  std::uint64_t dropped_samples = 0;    ///< samples lost (gaps) so far
  std::uint64_t event_queue_depth = 0;  ///< acquisition → engine spike queue, events
  std::uint64_t event_queue_capacity = 0;
  std::uint64_t event_queue_dropped = 0;  ///< spike events lost because that queue was full
  double block_latency_p50_ms = -1.0;     ///< acquisition block latency; -1 unknown
  double block_latency_p99_ms = -1.0;
  double designer_latency_ms = -1.0;  ///< last design call; -1 unknown
  double designer_latency_p99_ms = -1.0;
  std::uint64_t deadline_misses = 0;
  double cpu_percent = -1.0;  ///< process CPU, 100 = one core; negative: the publisher measures it
};

struct PublisherOptions {
  std::string endpoint = "tcp://127.0.0.1:*";  ///< tcp://host:port; port * picks a free one
  int send_hwm = 1000;                         ///< ZMQ_SNDHWM, messages per subscriber
  /// false: a full subscriber pipe loses the message for that subscriber only (libzmq drops it
  /// silently; the subscriber sees the sequence gap). true (ZMQ_XPUB_NODROP): the send fails when
  /// any subscriber's pipe is full, so the message is lost for every subscriber but counted as
  /// `hwm_dropped` here. Default false: one stalled client must not blind the others.
  bool count_hwm_drops = false;
  std::size_t spike_batches = 1024;           ///< spike messages queued at most
  std::size_t spike_records = 1 << 16;        ///< spikes queued at most, over all queued batches
  std::size_t max_spikes_per_message = 4096;  ///< longer batches are split
  std::size_t json_messages = 256;            ///< per JSON topic, queued at most
  double session_repeat_s = 1.0;              ///< re-send the last session message this often
};

/// Per topic, since construction. published: handed to ZeroMQ. queue_dropped: lost because the
/// publisher's own queue was full (or, spikes only, a concurrent producer). hwm_dropped: refused
/// by the socket (count_hwm_drops only) or failed to send.
struct TopicCounters {
  std::uint64_t published = 0;
  std::uint64_t queue_dropped = 0;
  std::uint64_t hwm_dropped = 0;
  std::uint64_t queue_depth = 0;  ///< messages waiting now
  [[nodiscard]] std::uint64_t dropped() const noexcept { return queue_dropped + hwm_dropped; }
};
struct PublisherCounters {
  std::array<TopicCounters, kTopicCount> topics{};
  std::uint64_t spikes_published = 0;  ///< spike records (not messages) sent
  std::uint64_t spikes_dropped = 0;    ///< spike records lost at the queue or the socket
  [[nodiscard]] const TopicCounters& operator[](Topic t) const noexcept {
    return topics[static_cast<std::size_t>(t)];
  }
};

class Publisher {
 public:
  /// Binds the socket and starts the sender thread.
  /// \throws std::runtime_error when the endpoint cannot be bound (message names it)
  explicit Publisher(const PublisherOptions& options);
  /// Stops the sender thread after it sent what is queued (bounded: at most ~100 ms more).
  ~Publisher();
  // Owns a socket and a thread that points back into it.
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  /// The bound endpoint, with the port resolved (e.g. "tcp://127.0.0.1:40123").
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }

  /// Spike events detected in samples [first_sample, end_sample) of the master clock.
  /// \return false when (part of) the batch was dropped (and counted)
  /// \note real-time safe: no allocation, no lock, no system call, bounded time.
  bool publish_spikes(std::int64_t first_sample, std::int64_t end_sample,
                      std::span<const acquisition::SpikeEvent> events) noexcept;
  /// \return false when dropped (and counted). \note allocates; never blocks.
  bool publish_trial_event(const TrialEvent& event) noexcept;
  /// Posterior after `trial`; names and probabilities aligned. \return false when dropped.
  bool publish_posterior(std::uint64_t trial, std::span<const std::string> names,
                         std::span<const double> probabilities) noexcept;
  /// \return false when dropped. The publisher adds its own counters to the message.
  bool publish_health(const HealthReport& report) noexcept;
  /// \return false when dropped. Also remembered and re-sent every `session_repeat_s`.
  bool publish_session(const SessionInfo& info) noexcept;

  [[nodiscard]] PublisherCounters counters() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  std::string endpoint_;
};

}  // namespace twinloop::daemon

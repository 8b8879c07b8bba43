// OpenEphysZmqEmulator: stands in for the Open Ephys GUI's ZMQ Interface plugin, so the
// OpenEphysZmqSource (and a bench or CLI) can be exercised without the GUI.
//
// Written from the documented wire format (../shared/data/FORMATS.md §3), not from the plugin's
// code: a data socket bound like the plugin's PUB (an XPUB here: the same wire protocol for
// subscribers, and it lets wait_for_subscriber() see a subscription arrive instead of sleeping)
// and a REP socket for client heartbeats, answered on a background thread. Data goes out as
// the plugin sends it: one three-frame message per channel per buffer ("DATA\0", JSON header,
// float32 samples = int16 value * µV per bit), message_num counting every message sent. Faults
// can be injected: malformed messages of each kind, a lost buffer (skip), a duplicate buffer, a
// channel missing from a buffer, an acquisition restart, events and spikes.
//
// Thread safety: the publishing calls belong to one thread (the data socket is not thread-safe);
// heartbeats() may be called from any thread. Not for the real-time path (allocates per message).
// Neither copyable nor movable: it owns bound sockets and a thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "twinloop/drivers/openephys_zmq_source.hpp"

namespace twinloop::drivers {

struct OpenEphysZmqEmulatorConfig {
  /// Where the data socket binds. The plugin binds tcp://*:5556; tests use tcp://127.0.0.1:*
  /// (an ephemeral port; read the real one back with data_endpoint()).
  std::string data_endpoint = "tcp://127.0.0.1:5556";
  /// Where the heartbeat REP socket binds; empty: data port + 1 (as the plugin), or an ephemeral
  /// port when the data port is "*".
  std::string heartbeat_endpoint;
  std::string stream = "ProbeA";
  std::size_t channels = 384;
  double sample_rate_hz = 30000.0;
  double microvolts_per_bit = 0.195;  ///< float value sent = int16 sample * this
  std::int64_t first_sample = 0;      ///< sample_num of the first buffer publish() sends
  /// Data socket send queue in messages; 0: unlimited, so a burst is never dropped by libzmq.
  int send_high_water_mark = 0;
};

/// What the heartbeat socket has seen. Copies: safe to keep.
struct OpenEphysHeartbeatLog {
  std::uint64_t heartbeats = 0;  ///< requests with "type": "heartbeat"
  std::uint64_t events = 0;      ///< requests with "type": "event"
  std::uint64_t unreadable = 0;  ///< requests that were not JSON objects of a known type
  std::string last_application;  ///< "application" of the last heartbeat
  std::string last_uuid;         ///< "uuid" of the last heartbeat
};

class OpenEphysZmqEmulator {
 public:
  /// Fills `rows` x channels int16 values (sample-major) for samples starting at first_sample.
  using Generator =
      std::function<void(std::int64_t first_sample, std::size_t rows, std::span<std::int16_t>)>;

  /// Binds both sockets and starts the heartbeat thread.
  /// \throws std::runtime_error naming the endpoint when a socket cannot bind;
  ///         std::invalid_argument for zero channels or a non-positive rate or scale.
  explicit OpenEphysZmqEmulator(OpenEphysZmqEmulatorConfig config);
  ~OpenEphysZmqEmulator();
  OpenEphysZmqEmulator(const OpenEphysZmqEmulator&) = delete;
  OpenEphysZmqEmulator& operator=(const OpenEphysZmqEmulator&) = delete;
  OpenEphysZmqEmulator(OpenEphysZmqEmulator&&) = delete;
  OpenEphysZmqEmulator& operator=(OpenEphysZmqEmulator&&) = delete;

  /// The bound endpoints, with real port numbers (ZMQ_LAST_ENDPOINT).
  [[nodiscard]] const std::string& data_endpoint() const noexcept;
  [[nodiscard]] const std::string& heartbeat_endpoint() const noexcept;
  [[nodiscard]] const OpenEphysZmqEmulatorConfig& config() const noexcept;

  /// Waits until `count` subscriptions have reached the data socket (each SUB that subscribes
  /// counts once per subscription). \return false when `timeout` passed first.
  [[nodiscard]] bool wait_for_subscribers(std::size_t count, std::chrono::milliseconds timeout);

  /// Publishes a buffer (sample-major, rows = samples.size() / channels) at the cursor, one
  /// message per channel, and advances the cursor.
  /// \throws std::invalid_argument when samples.size() is not a whole number of rows.
  void publish(std::span<const std::int16_t> samples);
  /// Publishes `rows` rows made by `generator` at the cursor, and advances the cursor.
  void publish_generated(std::size_t rows, const Generator& generator);
  /// Publishes a buffer at `first_sample` without moving the cursor; `only_channels` (channel
  /// numbers) limits which channels are sent, for an incomplete buffer. Empty: all.
  void publish_at(std::int64_t first_sample, std::span<const std::int16_t> samples,
                  std::span<const std::size_t> only_channels = {});
  /// A buffer lost on the way: the cursor moves `rows` on, and message_num moves on by one per
  /// channel as if the messages had been sent and dropped. Nothing is sent.
  void skip(std::size_t rows);
  /// Sends the last buffer publish() or publish_generated() sent again, with new message numbers.
  void repeat_last();
  /// Acquisition stopped and started again: message_num starts over at 1, the cursor at
  /// `first_sample`.
  void restart(std::int64_t first_sample = 0);
  /// A TTL event ("EVENT\0", event header, optional payload frame).
  void publish_event(std::int64_t sample_num, std::span<const std::uint8_t> payload = {});
  /// A spike ("EVENT\0", spike header, float32 waveform of channels x samples).
  void publish_spike(std::int64_t sample_num, std::size_t channels, std::size_t samples);
  /// One malformed message of `kind` (kOversize is not made here: it depends on the client's
  /// limit; build one with data_message()).
  void inject_malformed(OpenEphysMalformed kind);
  /// Sends arbitrary frames as one multipart message.
  void publish_raw(const std::vector<std::string>& frames);
  /// The frames of one data message, using and advancing message_num; `stream` empty: config's.
  [[nodiscard]] std::vector<std::string> data_message(std::size_t channel_num,
                                                      std::int64_t first_sample,
                                                      std::span<const float> values,
                                                      const std::string& stream = {});

  /// Sample number the next publish() starts at.
  [[nodiscard]] std::int64_t next_sample() const noexcept;
  /// message_num the next message gets (1 after construction and restart(), as the plugin).
  [[nodiscard]] std::int64_t next_message_num() const noexcept;
  /// Any thread.
  [[nodiscard]] OpenEphysHeartbeatLog heartbeats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::drivers

// OpenEphysZmqSource: a ProbeSource fed by the Open Ephys GUI's ZMQ Interface plugin, so a lab
// already running Open Ephys (e.g. with a Neuropixels probe) can drive twinloop live.
//
// Wire format (facts in ../shared/data/FORMATS.md §3, after open-ephys-plugins/zmq-interface
// Source/ZmqInterface.cpp and its python client): the plugin PUBlishes multipart messages
// [envelope "DATA\0" | "EVENT\0"][JSON header][payload]; a data message carries ONE channel's
// float32 samples (already scaled, µV for headstage channels) of one processing buffer, so a
// buffer of N channels arrives as N messages sharing `sample_num`/`num_samples`. This source
// gathers the selected channels of a buffer into one int16 sample-major block (value / µV-per-bit,
// rounded), stamped with the header's `sample_num`. Clients also send a JSON heartbeat to a REP
// socket on data port + 1 so the GUI lists them as alive; a background thread does that here.
//
// Continuity is never bridged: a buffer that does not continue the previous one is delivered with
// its true first_sample (the acquisition loop's GapDetector then sees the gap); a buffer whose
// samples were already delivered is dropped and counted; a buffer whose channels did not all
// arrive is dropped and reported (no sample is invented). Events and spikes are counted and
// skipped; malformed messages are counted by kind and skipped, last_error() says what was wrong.
//
// Thread safety: construct, start(), read(), stop() from one thread (the acquisition thread for
// read()). counters() may be called from any thread (relaxed atomics). read() is real-time safe
// after start(): no allocation by this code, no locks, no exceptions (libzmq itself allocates
// and frees message bodies on receive; see the .cpp).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers {

/// Why a message was dropped as unusable. Each kind has its own counter.
enum class OpenEphysMalformed : std::uint8_t {
  kPartCount,    ///< frame count wrong for the message type (e.g. DATA without its payload)
  kEnvelope,     ///< first frame is neither "DATA" nor "EVENT"
  kJson,         ///< header frame is not valid JSON (or not an object)
  kField,        ///< a required header field is missing, of the wrong type or out of range
  kUnknownType,  ///< "type" is not data/event/spike, or does not match the envelope
  kDataSize,     ///< payload bytes disagree with num_samples * 4 or with data_size
  kSampleRate,   ///< header sample_rate differs from the configured rate
  kOversize,     ///< num_samples exceeds the configured max_block_samples
};
inline constexpr std::size_t kOpenEphysMalformedKinds = 8;
[[nodiscard]] std::string_view to_string(OpenEphysMalformed kind) noexcept;

/// A snapshot of the source's counters. Message counts are per ZMQ multipart message.
struct OpenEphysZmqCounters {
  std::uint64_t messages = 0;       ///< multipart messages received, of any kind
  std::uint64_t data_messages = 0;  ///< channel messages that went into a block
  std::uint64_t blocks = 0;         ///< complete buffers accepted (all selected channels)
  std::uint64_t samples = 0;        ///< rows in those buffers
  std::uint64_t ignored = 0;        ///< events, spikes, other streams, unselected channels
  std::uint64_t malformed = 0;      ///< sum of malformed_by_kind
  std::array<std::uint64_t, kOpenEphysMalformedKinds> malformed_by_kind{};
  std::uint64_t duplicates = 0;  ///< channel messages dropped: their samples were already received
  std::uint64_t incomplete_blocks = 0;  ///< buffers dropped because a selected channel was missing
  std::uint64_t gaps = 0;               ///< accepted buffers starting later than expected
  std::uint64_t missing_samples = 0;    ///< samples skipped by those gaps
  std::uint64_t overlaps = 0;  ///< accepted buffers starting earlier than expected (partly old)
  std::uint64_t restarts = 0;  ///< message_num did not increase: the GUI restarted acquisition
  std::uint64_t lost_messages = 0;    ///< message_num jumps (lost before reaching this socket)
  std::uint64_t clipped_samples = 0;  ///< values outside int16 after scaling (or NaN), saturated
  std::uint64_t heartbeats_sent = 0;
  std::uint64_t heartbeat_replies = 0;
  std::uint64_t heartbeats_unanswered = 0;  ///< no reply within the timeout (socket then reset)

  [[nodiscard]] std::uint64_t malformed_of(OpenEphysMalformed kind) const noexcept {
    return malformed_by_kind[static_cast<std::size_t>(kind)];
  }
};

struct OpenEphysZmqSourceConfig {
  /// The plugin's data (PUB) port. The plugin binds tcp://*:<port>, default 5556.
  std::string endpoint = "tcp://127.0.0.1:5556";
  /// The plugin's REP port for heartbeats; empty: derived from `endpoint` (data port + 1).
  std::string heartbeat_endpoint;
  std::string application = "twinloop";  ///< name the GUI lists for this client
  std::string uuid;                      ///< empty: a random one is made at construction
  /// Zero disables the heartbeat. The GUI drops a client not heard from for > 5 s.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_reply_timeout{1000};
  /// Stream name to take ("ProbeA-AP"...); empty: the stream of the first data message seen.
  std::string stream;
  /// Channel numbers (the header's local `channel_num`) in output column order. Empty:
  /// 0..channel_count-1.
  std::vector<int> channels;
  std::size_t channel_count = 384;  ///< used only when `channels` is empty
  double sample_rate_hz = 30000.0;  ///< must match the header's sample_rate (relative 1e-6)
  /// Scale from the GUI's float values (µV) back to int16: Neuropixels in Open Ephys 0.195.
  double microvolts_per_bit = 0.195;
  /// One site per selected channel. Empty: Neuropixels 1.0 bank-0 sites of the channel numbers.
  ProbeGeometry geometry;
  std::string name = "oe0";
  std::size_t max_block_samples = 8192;  ///< largest buffer accepted (memory is sized by it)
  /// How long read() waits for a complete buffer before returning kWouldBlock; zero: no wait.
  std::chrono::milliseconds receive_timeout{100};
  /// SUB receive queue in messages; 0: 256 buffers' worth (256 * channels). libzmq drops the
  /// newest messages beyond it (seen here as lost_messages and gaps).
  int receive_high_water_mark = 0;
};

/// The heartbeat endpoint the plugin uses for a data endpoint: same host, port + 1.
/// Returns nullopt when `data_endpoint` is not tcp://host:port with a numeric port.
[[nodiscard]] std::optional<std::string> openephys_heartbeat_endpoint(
    std::string_view data_endpoint);

class OpenEphysZmqSource final : public ProbeSource {
 public:
  /// Checks the configuration (no sockets yet).
  /// \throws std::invalid_argument naming the field: empty endpoint, no channels, a negative or
  ///         repeated channel number, rate or µV/bit not positive, geometry of the wrong size,
  ///         max_block_samples zero, a heartbeat endpoint that cannot be derived.
  explicit OpenEphysZmqSource(OpenEphysZmqSourceConfig config);
  ~OpenEphysZmqSource() override;

  /// Creates the ZMQ context, connects the SUB socket (subscribed to everything, so events can be
  /// counted), allocates the block buffers and starts the heartbeat thread. Connecting succeeds
  /// even when the GUI is not running yet; data flows once it is.
  /// \return false with last_error() set when a socket cannot be created or connected.
  [[nodiscard]] bool start() override;
  [[nodiscard]] const ProbeInfo& info() const noexcept override { return info_; }
  /// Returns the next rows of a complete buffer (a large buffer is returned over several reads,
  /// first_sample advancing), waiting up to receive_timeout for one.
  /// \return kOk; kWouldBlock when no complete buffer arrived in time; kError before start(), on
  ///         a block of the wrong channel count or zero capacity, or when the socket fails.
  /// \note Real-time safe after start(): no allocation here, no locks, no exceptions.
  [[nodiscard]] ReadStatus read(SampleBlock& block) noexcept override;
  /// Stops the heartbeat and closes the sockets. Idempotent. Counters stay readable; the next
  /// start() resets them.
  void stop() noexcept override;

  /// Any thread, but not concurrently with start(). All zero before the first start().
  [[nodiscard]] OpenEphysZmqCounters counters() const noexcept;
  /// The uuid sent in heartbeats (the configured one, or the one made at construction).
  [[nodiscard]] const std::string& uuid() const noexcept { return config_.uuid; }
  /// The heartbeat endpoint in use (empty when the heartbeat is disabled).
  [[nodiscard]] const std::string& heartbeat_endpoint() const noexcept {
    return config_.heartbeat_endpoint;
  }
  /// Selected channel numbers in output column order.
  [[nodiscard]] const std::vector<int>& channels() const noexcept { return config_.channels; }

 private:
  struct Impl;
  OpenEphysZmqSourceConfig config_;
  ProbeInfo info_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::drivers

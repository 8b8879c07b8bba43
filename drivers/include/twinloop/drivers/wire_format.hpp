// twinloop's network wire format (version 1): encode/decode of probe blocks, stream info, stream
// end, stimulus commands and their onset acknowledgements. docs/wire-format.md is the normative
// text.
//
// Every message is one ZeroMQ frame: an 8-byte prefix (magic "TWLN", version, type), a
// type-specific body, and a trailing CRC-32 (zlib polynomial) over all preceding bytes. Integers
// and IEEE-754 doubles are little-endian. This header knows nothing about sockets, so the bench,
// the drivers and tests share one codec without pulling in ZeroMQ.
//
// Thread safety: free functions on caller-owned buffers. The block and stimulus codecs neither
// allocate nor throw (usable on the acquisition thread); the stream-info codec allocates
// (geometry).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/drivers/stimulus_sink.hpp"

namespace twinloop::drivers::wire {

/// "TWLN" in byte order on the wire (read as a little-endian u32).
inline constexpr std::uint32_t kMagic = 0x4E4C5754u;
inline constexpr std::uint16_t kVersion = 1;

enum class MessageType : std::uint16_t {
  kProbeBlock = 1,
  kStreamInfo = 2,
  kStreamInfoRequest = 3,
  kStimulusCommand = 4,
  kStimulusReply = 5,
  kStreamEnd = 6,
};

inline constexpr std::size_t kPrefixBytes = 8;
inline constexpr std::size_t kChecksumBytes = 4;
inline constexpr std::size_t kBlockHeaderBytes = 48;
inline constexpr std::size_t kStreamInfoHeaderBytes = 56;
inline constexpr std::size_t kSiteBytes = 24;
inline constexpr std::size_t kStreamInfoRequestBytes = 16 + kChecksumBytes;
inline constexpr std::size_t kStreamEndBytes = 32 + kChecksumBytes;
inline constexpr std::size_t kStimulusCommandHeaderBytes = 48;
inline constexpr std::size_t kStimulusCommandMaxBytes =
    kStimulusCommandHeaderBytes + 8 * protocols::kMaxStimulusDimensions + kChecksumBytes;
inline constexpr std::size_t kStimulusReplyHeaderBytes = 36;
inline constexpr std::size_t kMaxReasonBytes = 256;
inline constexpr std::size_t kStimulusReplyMaxBytes =
    kStimulusReplyHeaderBytes + kMaxReasonBytes + kChecksumBytes;

/// What was wrong with a received message. Classified so that counters can tell line noise
/// (checksum) from a peer speaking something else (magic, version) or a buggy peer (fields).
enum class DecodeError {
  kNone,
  kTruncated,     ///< shorter than its prefix + checksum, or than its own header says
  kBadMagic,      ///< not a twinloop message
  kBadVersion,    ///< a twinloop message of a version this build does not speak
  kWrongType,     ///< a valid message of a type the caller did not expect
  kChecksum,      ///< CRC-32 mismatch: corrupted in transit
  kSizeMismatch,  ///< length disagrees with the counts in the header
  kBadField,      ///< a field out of range (dimension count, reason length, status)
};

/// Static text naming the error; never null.
[[nodiscard]] const char* describe(DecodeError error) noexcept;

/// zlib CRC-32 of `bytes`.
[[nodiscard]] std::uint32_t crc32(std::span<const std::byte> bytes) noexcept;

/// Checks size, magic and version (not the checksum) and returns the message type.
[[nodiscard]] DecodeError peek(std::span<const std::byte> message, MessageType& type) noexcept;

/// True when the trailing CRC-32 matches the bytes before it (message at least 4 bytes).
[[nodiscard]] bool checksum_ok(std::span<const std::byte> message) noexcept;

// ---- Probe blocks -------------------------------------------------------------------------------

struct BlockHeader {
  std::uint32_t probe_id = 0;
  std::uint32_t channel_count = 0;  ///< stored channels (int16 words per sample)
  std::uint64_t sequence = 0;       ///< +1 per block the sender produced (lost ones leave holes)
  std::int64_t first_sample = 0;    ///< index of row 0 on the probe's sample clock
  std::uint32_t sample_count = 0;
  std::uint32_t flags = 0;        ///< 0 in version 1; receivers ignore unknown bits
  std::int64_t send_time_ns = 0;  ///< sender's CLOCK_MONOTONIC at send (same-host latency only)
};

[[nodiscard]] constexpr std::size_t block_message_bytes(std::size_t samples,
                                                        std::size_t channels) noexcept {
  return kBlockHeaderBytes + samples * channels * 2 + kChecksumBytes;
}

/// Writes a block message (payload sample-major, header.sample_count x header.channel_count int16)
/// into `out`. Returns the bytes written, 0 when `out` is too small.
[[nodiscard]] std::size_t encode_block(const BlockHeader& header, const std::int16_t* samples,
                                       std::span<std::byte> out) noexcept;

/// Validates a block message completely (prefix, type, checksum, length vs counts) and reads its
/// header. The payload starts at message.data() + kBlockHeaderBytes.
[[nodiscard]] DecodeError decode_block(std::span<const std::byte> message,
                                       BlockHeader& header) noexcept;

/// Copies `rows` rows starting at row `first_row` of a decoded block's payload into `out`
/// (host order). The caller has checked the bounds against the header.
void copy_block_rows(std::span<const std::byte> message, const BlockHeader& header,
                     std::size_t first_row, std::size_t rows, std::int16_t* out) noexcept;

// ---- Stream info and stream end -----------------------------------------------------------------

/// What a subscriber needs to interpret blocks: the probe's ProbeInfo plus the sender's nominal
/// block size.
struct StreamInfo {
  std::uint32_t probe_id = 0;
  std::uint32_t block_samples = 0;
  ProbeInfo probe;
};

/// The fixed-size part of a stream-info message, readable without allocation.
struct StreamInfoSummary {
  std::uint32_t probe_id = 0;
  std::uint32_t stored_channels = 0;
  std::uint32_t neural_channels = 0;
  bool has_sync_word = false;
  double sample_rate_hz = 0.0;
  double microvolts_per_bit = 0.0;
  std::uint32_t block_samples = 0;
};

/// Allocates the message. Name and model are truncated to 65535 bytes.
[[nodiscard]] std::vector<std::byte> encode_stream_info(const StreamInfo& info);
/// Full decode (allocates the name, model and sites).
[[nodiscard]] DecodeError decode_stream_info(std::span<const std::byte> message, StreamInfo& info);
/// Validates the whole message but reads only the fixed fields; no allocation.
[[nodiscard]] DecodeError decode_stream_info_summary(std::span<const std::byte> message,
                                                     StreamInfoSummary& summary) noexcept;

[[nodiscard]] std::size_t encode_stream_info_request(std::uint64_t request_id,
                                                     std::span<std::byte> out) noexcept;
[[nodiscard]] DecodeError decode_stream_info_request(std::span<const std::byte> message,
                                                     std::uint64_t& request_id) noexcept;

/// Sent once after the last block of a finite stream: no block will follow.
struct StreamEnd {
  std::uint32_t probe_id = 0;
  std::int64_t end_sample = 0;  ///< one past the last sample the sender produced
  std::uint64_t sequence = 0;   ///< the sequence number the next block would have had
};
[[nodiscard]] std::size_t encode_stream_end(const StreamEnd& end,
                                            std::span<std::byte> out) noexcept;
[[nodiscard]] DecodeError decode_stream_end(std::span<const std::byte> message,
                                            StreamEnd& end) noexcept;

// ---- Stimulus endpoint --------------------------------------------------------------------------

[[nodiscard]] std::size_t encode_stimulus_command(std::uint64_t request_id,
                                                  const StimulusCommand& command,
                                                  std::span<std::byte> out) noexcept;
[[nodiscard]] DecodeError decode_stimulus_command(std::span<const std::byte> message,
                                                  std::uint64_t& request_id,
                                                  StimulusCommand& command) noexcept;

enum class ReplyStatus : std::uint8_t { kDelivered = 0, kRefused = 1 };

struct StimulusReply {
  std::uint64_t request_id = 0;
  std::uint64_t trial = 0;
  ReplyStatus status = ReplyStatus::kRefused;
  std::int64_t onset_sample = -1;  ///< first stimulus sample on the probe clock; -1 when refused
  std::size_t reason_length = 0;   ///< bytes of `reason` in use (UTF-8, not terminated)
  std::array<char, kMaxReasonBytes> reason{};
};

/// Reasons longer than kMaxReasonBytes are truncated.
[[nodiscard]] std::size_t encode_stimulus_reply(const StimulusReply& reply,
                                                std::span<std::byte> out) noexcept;
[[nodiscard]] DecodeError decode_stimulus_reply(std::span<const std::byte> message,
                                                StimulusReply& reply) noexcept;

}  // namespace twinloop::drivers::wire

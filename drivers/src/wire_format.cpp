#include "twinloop/drivers/wire_format.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace twinloop::drivers::wire {
namespace {

// Explicit byte order: the wire is little-endian whatever the host is.
template <typename T>
void put(std::byte* at, T value) noexcept {
  using U = std::make_unsigned_t<T>;
  auto u = static_cast<U>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    at[i] = static_cast<std::byte>(u & 0xFFu);
    u = static_cast<U>(u >> 8);
  }
}

template <typename T>
T get(const std::byte* at) noexcept {
  using U = std::make_unsigned_t<T>;
  U u = 0;
  for (std::size_t i = sizeof(T); i-- > 0;) u = static_cast<U>((u << 8) | static_cast<U>(at[i]));
  return static_cast<T>(u);
}

void put_f64(std::byte* at, double value) noexcept {
  put<std::uint64_t>(at, std::bit_cast<std::uint64_t>(value));
}
double get_f64(const std::byte* at) noexcept {
  return std::bit_cast<double>(get<std::uint64_t>(at));
}

void put_prefix(std::byte* at, MessageType type) noexcept {
  put<std::uint32_t>(at, kMagic);
  put<std::uint16_t>(at + 4, kVersion);
  put<std::uint16_t>(at + 6, static_cast<std::uint16_t>(type));
}

// Appends the CRC over [0, body_end) and returns the total size.
std::size_t seal(std::span<std::byte> out, std::size_t body_end) noexcept {
  put<std::uint32_t>(out.data() + body_end, crc32(out.first(body_end)));
  return body_end + kChecksumBytes;
}

// Prefix, type and checksum: the checks every typed decoder starts with.
DecodeError check_envelope(std::span<const std::byte> message, MessageType expected,
                           std::size_t min_size) noexcept {
  MessageType type{};
  if (const DecodeError e = peek(message, type); e != DecodeError::kNone) return e;
  if (type != expected) return DecodeError::kWrongType;
  if (message.size() < min_size) return DecodeError::kTruncated;
  if (!checksum_ok(message)) return DecodeError::kChecksum;
  return DecodeError::kNone;
}

}  // namespace

const char* describe(DecodeError error) noexcept {
  switch (error) {
    case DecodeError::kNone:
      return "ok";
    case DecodeError::kTruncated:
      return "truncated message";
    case DecodeError::kBadMagic:
      return "bad magic (not a twinloop message)";
    case DecodeError::kBadVersion:
      return "unsupported wire-format version";
    case DecodeError::kWrongType:
      return "unexpected message type";
    case DecodeError::kChecksum:
      return "checksum mismatch (corrupted in transit)";
    case DecodeError::kSizeMismatch:
      return "message length disagrees with its header";
    case DecodeError::kBadField:
      return "header field out of range";
  }
  return "unknown decode error";
}

std::uint32_t crc32(std::span<const std::byte> bytes) noexcept {
  // zlib takes uInt lengths; feed large buffers in pieces.
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

DecodeError peek(std::span<const std::byte> message, MessageType& type) noexcept {
  if (message.size() < kPrefixBytes + kChecksumBytes) return DecodeError::kTruncated;
  if (get<std::uint32_t>(message.data()) != kMagic) return DecodeError::kBadMagic;
  if (get<std::uint16_t>(message.data() + 4) != kVersion) return DecodeError::kBadVersion;
  type = static_cast<MessageType>(get<std::uint16_t>(message.data() + 6));
  return DecodeError::kNone;
}

bool checksum_ok(std::span<const std::byte> message) noexcept {
  if (message.size() < kChecksumBytes) return false;
  const std::size_t body = message.size() - kChecksumBytes;
  return get<std::uint32_t>(message.data() + body) == crc32(message.first(body));
}

// ---- Probe blocks -------------------------------------------------------------------------------

std::size_t encode_block(const BlockHeader& header, const std::int16_t* samples,
                         std::span<std::byte> out) noexcept {
  const std::size_t words = std::size_t{header.sample_count} * header.channel_count;
  const std::size_t total = block_message_bytes(header.sample_count, header.channel_count);
  if (out.size() < total) return 0;
  std::byte* p = out.data();
  put_prefix(p, MessageType::kProbeBlock);
  put<std::uint32_t>(p + 8, header.probe_id);
  put<std::uint32_t>(p + 12, header.channel_count);
  put<std::uint64_t>(p + 16, header.sequence);
  put<std::int64_t>(p + 24, header.first_sample);
  put<std::uint32_t>(p + 32, header.sample_count);
  put<std::uint32_t>(p + 36, header.flags);
  put<std::int64_t>(p + 40, header.send_time_ns);
  std::byte* payload = p + kBlockHeaderBytes;
  if constexpr (std::endian::native == std::endian::little) {
    if (words > 0) std::memcpy(payload, samples, words * 2);
  } else {
    for (std::size_t i = 0; i < words; ++i) put<std::int16_t>(payload + 2 * i, samples[i]);
  }
  return seal(out, kBlockHeaderBytes + words * 2);
}

DecodeError decode_block(std::span<const std::byte> message, BlockHeader& header) noexcept {
  if (const DecodeError e =
          check_envelope(message, MessageType::kProbeBlock, kBlockHeaderBytes + kChecksumBytes);
      e != DecodeError::kNone) {
    return e;
  }
  const std::byte* p = message.data();
  BlockHeader h;
  h.probe_id = get<std::uint32_t>(p + 8);
  h.channel_count = get<std::uint32_t>(p + 12);
  h.sequence = get<std::uint64_t>(p + 16);
  h.first_sample = get<std::int64_t>(p + 24);
  h.sample_count = get<std::uint32_t>(p + 32);
  h.flags = get<std::uint32_t>(p + 36);
  h.send_time_ns = get<std::int64_t>(p + 40);
  // 64-bit arithmetic: two u32 counts cannot overflow it.
  if (message.size() != block_message_bytes(h.sample_count, h.channel_count)) {
    return DecodeError::kSizeMismatch;
  }
  if (h.first_sample < 0) return DecodeError::kBadField;
  header = h;
  return DecodeError::kNone;
}

void copy_block_rows(std::span<const std::byte> message, const BlockHeader& header,
                     std::size_t first_row, std::size_t rows, std::int16_t* out) noexcept {
  const std::size_t words = rows * header.channel_count;
  const std::byte* src = message.data() + kBlockHeaderBytes + first_row * header.channel_count * 2;
  if constexpr (std::endian::native == std::endian::little) {
    if (words > 0) std::memcpy(out, src, words * 2);
  } else {
    for (std::size_t i = 0; i < words; ++i) out[i] = get<std::int16_t>(src + 2 * i);
  }
}

// ---- Stream info and stream end -----------------------------------------------------------------

std::vector<std::byte> encode_stream_info(const StreamInfo& info) {
  const ProbeInfo& probe = info.probe;
  const std::size_t name_len = std::min<std::size_t>(probe.name.size(), 0xFFFF);
  const std::size_t model_len = std::min<std::size_t>(probe.geometry.model.size(), 0xFFFF);
  const std::size_t sites = probe.geometry.sites.size();
  const std::size_t body = kStreamInfoHeaderBytes + name_len + model_len + sites * kSiteBytes;
  std::vector<std::byte> out(body + kChecksumBytes);
  std::byte* p = out.data();
  put_prefix(p, MessageType::kStreamInfo);
  put<std::uint32_t>(p + 8, info.probe_id);
  put<std::uint32_t>(p + 12, static_cast<std::uint32_t>(probe.stored_channels));
  put<std::uint32_t>(p + 16, static_cast<std::uint32_t>(probe.neural_channels));
  put<std::uint32_t>(p + 20, probe.has_sync_word ? 1u : 0u);
  put_f64(p + 24, probe.sample_rate_hz);
  put_f64(p + 32, probe.microvolts_per_bit);
  put<std::uint32_t>(p + 40, info.block_samples);
  put<std::uint32_t>(p + 44, static_cast<std::uint32_t>(sites));
  put<std::uint16_t>(p + 48, static_cast<std::uint16_t>(name_len));
  put<std::uint16_t>(p + 50, static_cast<std::uint16_t>(model_len));
  put<std::uint32_t>(p + 52, 0);
  std::byte* q = p + kStreamInfoHeaderBytes;
  if (name_len > 0) std::memcpy(q, probe.name.data(), name_len);
  q += name_len;
  if (model_len > 0) std::memcpy(q, probe.geometry.model.data(), model_len);
  q += model_len;
  for (const Site& s : probe.geometry.sites) {
    put_f64(q, s.x_um);
    put_f64(q + 8, s.z_um);
    put<std::int32_t>(q + 16, s.shank);
    put<std::int32_t>(q + 20, s.electrode);
    q += kSiteBytes;
  }
  (void)seal(out, body);
  return out;
}

DecodeError decode_stream_info_summary(std::span<const std::byte> message,
                                       StreamInfoSummary& summary) noexcept {
  if (const DecodeError e = check_envelope(message, MessageType::kStreamInfo,
                                           kStreamInfoHeaderBytes + kChecksumBytes);
      e != DecodeError::kNone) {
    return e;
  }
  const std::byte* p = message.data();
  const std::size_t sites = get<std::uint32_t>(p + 44);
  const std::size_t name_len = get<std::uint16_t>(p + 48);
  const std::size_t model_len = get<std::uint16_t>(p + 50);
  if (message.size() !=
      kStreamInfoHeaderBytes + name_len + model_len + sites * kSiteBytes + kChecksumBytes) {
    return DecodeError::kSizeMismatch;
  }
  StreamInfoSummary s;
  s.probe_id = get<std::uint32_t>(p + 8);
  s.stored_channels = get<std::uint32_t>(p + 12);
  s.neural_channels = get<std::uint32_t>(p + 16);
  s.has_sync_word = (get<std::uint32_t>(p + 20) & 1u) != 0;
  s.sample_rate_hz = get_f64(p + 24);
  s.microvolts_per_bit = get_f64(p + 32);
  s.block_samples = get<std::uint32_t>(p + 40);
  if (s.stored_channels == 0 || s.neural_channels > s.stored_channels ||
      !(s.sample_rate_hz > 0.0) || s.sample_rate_hz > 1e9 || sites != s.neural_channels) {
    return DecodeError::kBadField;
  }
  summary = s;
  return DecodeError::kNone;
}

DecodeError decode_stream_info(std::span<const std::byte> message, StreamInfo& info) {
  StreamInfoSummary s;
  if (const DecodeError e = decode_stream_info_summary(message, s); e != DecodeError::kNone) {
    return e;
  }
  const std::byte* p = message.data();
  const std::size_t name_len = get<std::uint16_t>(p + 48);
  const std::size_t model_len = get<std::uint16_t>(p + 50);
  StreamInfo out;
  out.probe_id = s.probe_id;
  out.block_samples = s.block_samples;
  out.probe.stored_channels = s.stored_channels;
  out.probe.neural_channels = s.neural_channels;
  out.probe.has_sync_word = s.has_sync_word;
  out.probe.sample_rate_hz = s.sample_rate_hz;
  out.probe.microvolts_per_bit = s.microvolts_per_bit;
  const auto* q = reinterpret_cast<const char*>(p + kStreamInfoHeaderBytes);
  out.probe.name.assign(q, name_len);
  out.probe.geometry.model.assign(q + name_len, model_len);
  const std::byte* site = p + kStreamInfoHeaderBytes + name_len + model_len;
  out.probe.geometry.sites.resize(s.neural_channels);
  for (Site& st : out.probe.geometry.sites) {
    st.x_um = get_f64(site);
    st.z_um = get_f64(site + 8);
    st.shank = get<std::int32_t>(site + 16);
    st.electrode = get<std::int32_t>(site + 20);
    site += kSiteBytes;
  }
  info = std::move(out);
  return DecodeError::kNone;
}

std::size_t encode_stream_info_request(std::uint64_t request_id,
                                       std::span<std::byte> out) noexcept {
  if (out.size() < kStreamInfoRequestBytes) return 0;
  put_prefix(out.data(), MessageType::kStreamInfoRequest);
  put<std::uint64_t>(out.data() + 8, request_id);
  return seal(out, 16);
}

DecodeError decode_stream_info_request(std::span<const std::byte> message,
                                       std::uint64_t& request_id) noexcept {
  if (const DecodeError e =
          check_envelope(message, MessageType::kStreamInfoRequest, kStreamInfoRequestBytes);
      e != DecodeError::kNone) {
    return e;
  }
  if (message.size() != kStreamInfoRequestBytes) return DecodeError::kSizeMismatch;
  request_id = get<std::uint64_t>(message.data() + 8);
  return DecodeError::kNone;
}

std::size_t encode_stream_end(const StreamEnd& end, std::span<std::byte> out) noexcept {
  if (out.size() < kStreamEndBytes) return 0;
  std::byte* p = out.data();
  put_prefix(p, MessageType::kStreamEnd);
  put<std::uint32_t>(p + 8, end.probe_id);
  put<std::uint32_t>(p + 12, 0);
  put<std::int64_t>(p + 16, end.end_sample);
  put<std::uint64_t>(p + 24, end.sequence);
  return seal(out, 32);
}

DecodeError decode_stream_end(std::span<const std::byte> message, StreamEnd& end) noexcept {
  if (const DecodeError e = check_envelope(message, MessageType::kStreamEnd, kStreamEndBytes);
      e != DecodeError::kNone) {
    return e;
  }
  if (message.size() != kStreamEndBytes) return DecodeError::kSizeMismatch;
  const std::byte* p = message.data();
  end.probe_id = get<std::uint32_t>(p + 8);
  end.end_sample = get<std::int64_t>(p + 16);
  end.sequence = get<std::uint64_t>(p + 24);
  return DecodeError::kNone;
}

// ---- Stimulus endpoint --------------------------------------------------------------------------

std::size_t encode_stimulus_command(std::uint64_t request_id, const StimulusCommand& command,
                                    std::span<std::byte> out) noexcept {
  const std::size_t dims = command.stimulus.dimension_count;
  if (dims > protocols::kMaxStimulusDimensions) return 0;
  const std::size_t body = kStimulusCommandHeaderBytes + 8 * dims;
  if (out.size() < body + kChecksumBytes) return 0;
  std::byte* p = out.data();
  put_prefix(p, MessageType::kStimulusCommand);
  put<std::uint64_t>(p + 8, request_id);
  put<std::uint64_t>(p + 16, command.trial);
  put<std::int64_t>(p + 24, command.earliest_onset_sample);
  put<std::int64_t>(p + 32, command.duration_samples);
  put<std::uint32_t>(p + 40, command.stimulus.candidate);
  put<std::uint8_t>(p + 44, static_cast<std::uint8_t>(dims));
  p[45] = p[46] = p[47] = std::byte{0};
  for (std::size_t d = 0; d < dims; ++d) {
    put_f64(p + kStimulusCommandHeaderBytes + 8 * d, command.stimulus.values[d]);
  }
  return seal(out, body);
}

DecodeError decode_stimulus_command(std::span<const std::byte> message, std::uint64_t& request_id,
                                    StimulusCommand& command) noexcept {
  if (const DecodeError e = check_envelope(message, MessageType::kStimulusCommand,
                                           kStimulusCommandHeaderBytes + kChecksumBytes);
      e != DecodeError::kNone) {
    return e;
  }
  const std::byte* p = message.data();
  const std::size_t dims = get<std::uint8_t>(p + 44);
  if (dims > protocols::kMaxStimulusDimensions) return DecodeError::kBadField;
  if (message.size() != kStimulusCommandHeaderBytes + 8 * dims + kChecksumBytes) {
    return DecodeError::kSizeMismatch;
  }
  StimulusCommand c;
  request_id = get<std::uint64_t>(p + 8);
  c.trial = get<std::uint64_t>(p + 16);
  c.earliest_onset_sample = get<std::int64_t>(p + 24);
  c.duration_samples = get<std::int64_t>(p + 32);
  c.stimulus.candidate = get<std::uint32_t>(p + 40);
  c.stimulus.dimension_count = static_cast<std::uint8_t>(dims);
  for (std::size_t d = 0; d < dims; ++d) {
    c.stimulus.values[d] = get_f64(p + kStimulusCommandHeaderBytes + 8 * d);
  }
  command = c;
  return DecodeError::kNone;
}

std::size_t encode_stimulus_reply(const StimulusReply& reply, std::span<std::byte> out) noexcept {
  const std::size_t reason_len = std::min(reply.reason_length, kMaxReasonBytes);
  const std::size_t body = kStimulusReplyHeaderBytes + reason_len;
  if (out.size() < body + kChecksumBytes) return 0;
  std::byte* p = out.data();
  put_prefix(p, MessageType::kStimulusReply);
  put<std::uint64_t>(p + 8, reply.request_id);
  put<std::uint64_t>(p + 16, reply.trial);
  put<std::int64_t>(p + 24, reply.onset_sample);
  put<std::uint8_t>(p + 32, static_cast<std::uint8_t>(reply.status));
  p[33] = std::byte{0};
  put<std::uint16_t>(p + 34, static_cast<std::uint16_t>(reason_len));
  if (reason_len > 0) std::memcpy(p + kStimulusReplyHeaderBytes, reply.reason.data(), reason_len);
  return seal(out, body);
}

DecodeError decode_stimulus_reply(std::span<const std::byte> message,
                                  StimulusReply& reply) noexcept {
  if (const DecodeError e = check_envelope(message, MessageType::kStimulusReply,
                                           kStimulusReplyHeaderBytes + kChecksumBytes);
      e != DecodeError::kNone) {
    return e;
  }
  const std::byte* p = message.data();
  const std::size_t reason_len = get<std::uint16_t>(p + 34);
  if (reason_len > kMaxReasonBytes) return DecodeError::kBadField;
  if (message.size() != kStimulusReplyHeaderBytes + reason_len + kChecksumBytes) {
    return DecodeError::kSizeMismatch;
  }
  const auto status = get<std::uint8_t>(p + 32);
  if (status > 1) return DecodeError::kBadField;
  reply.request_id = get<std::uint64_t>(p + 8);
  reply.trial = get<std::uint64_t>(p + 16);
  reply.onset_sample = get<std::int64_t>(p + 24);
  reply.status = static_cast<ReplyStatus>(status);
  reply.reason_length = reason_len;
  if (reason_len > 0) std::memcpy(reply.reason.data(), p + kStimulusReplyHeaderBytes, reason_len);
  return DecodeError::kNone;
}

}  // namespace twinloop::drivers::wire

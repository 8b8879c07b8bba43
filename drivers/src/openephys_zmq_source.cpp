// OpenEphysZmqSource: Open Ephys ZMQ Interface stream -> int16 SampleBlocks.
//
// Wire format: ../shared/data/FORMATS.md §3 (open-ephys-plugins/zmq-interface @ 38513917,
// Source/ZmqInterface.cpp, "format of output packets"). Written from that description only.
//
// Real-time notes for read(): the header is parsed by a small JSON scanner over the received
// frame (string_views into it, numbers through std::from_chars), samples are converted into
// buffers sized in start(), error texts are formatted with snprintf into a string whose capacity
// was reserved in start(). What libzmq does underneath is outside this code's control: its I/O
// thread allocates message bodies larger than 33 bytes (or slices them from a shared,
// reference-counted receive buffer), zmq_msg_recv() into a reused zmq_msg_t frees the
// previous body on this thread, and the socket's internal commands (processed inside recv and
// poll) can allocate when the connection's bookkeeping changes (start() flushes the ones that
// connect() queues; a reconnection may queue more). zmq_poll() on one item uses a stack array.
#include "twinloop/drivers/openephys_zmq_source.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

namespace twinloop::drivers {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the plugin sends little-endian float32; add byte swapping for this host");
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4);

constexpr int kMaxJsonDepth = 16;
constexpr std::size_t kMaxStreamName = 255;
constexpr std::int64_t kMaxSampleNum = std::int64_t{1} << 62;  // far from overflow when adding

bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}
bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Validating JSON scanner that never allocates: strings come back as raw views (escapes left in
// place but checked), numbers as views of their text. Enough for the plugin's flat headers.
class JsonScanner {
 public:
  explicit JsonScanner(std::string_view text) noexcept
      : p_(text.data()), end_(text.data() + text.size()) {}

  char peek() noexcept {
    skip_ws();
    return p_ == end_ ? '\0' : *p_;
  }
  bool at_end() noexcept {
    skip_ws();
    return p_ == end_;
  }
  bool consume(char c) noexcept {
    skip_ws();
    if (p_ != end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  bool string(std::string_view& out) noexcept {
    if (!consume('"')) return false;
    const char* start = p_;
    while (p_ != end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        out = std::string_view(start, static_cast<std::size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++p_ == end_) return false;
        const char e = *p_;
        if (e == 'u') {
          for (int i = 0; i < 4; ++i) {
            if (++p_ == end_ || !is_hex(*p_)) return false;
          }
        } else if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                   e != 'r' && e != 't') {
          return false;
        }
      }
      ++p_;
    }
    return false;
  }

  bool number(std::string_view& out) noexcept {
    skip_ws();
    const char* start = p_;
    if (p_ != end_ && *p_ == '-') ++p_;
    if (p_ == end_) return false;
    if (*p_ == '0') {
      ++p_;
    } else if (is_digit(*p_)) {
      while (p_ != end_ && is_digit(*p_)) ++p_;
    } else {
      return false;
    }
    if (p_ != end_ && *p_ == '.') {
      if (++p_ == end_ || !is_digit(*p_)) return false;
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return false;
      while (p_ != end_ && is_digit(*p_)) ++p_;
    }
    out = std::string_view(start, static_cast<std::size_t>(p_ - start));
    return true;
  }

  bool skip_value(int depth) noexcept {
    if (depth > kMaxJsonDepth) return false;
    std::string_view ignored;
    switch (peek()) {
      case '{':
        return object(depth, [&](std::string_view) { return skip_value(depth + 1); });
      case '[':
        return array(depth);
      case '"':
        return string(ignored);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number(ignored);
    }
  }

  /// Calls on_member(key) with the scanner positioned at the member's value; on_member must
  /// consume the value and return false on a syntax error.
  template <class OnMember>
  bool object(int depth, OnMember&& on_member) noexcept {
    if (depth > kMaxJsonDepth || !consume('{')) return false;
    if (consume('}')) return true;
    for (;;) {
      std::string_view key;
      if (!string(key) || !consume(':') || !on_member(key)) return false;
      if (consume(',')) continue;
      return consume('}');
    }
  }

 private:
  void skip_ws() noexcept {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(std::string_view word) noexcept {
    skip_ws();
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }
  bool array(int depth) noexcept {
    if (depth > kMaxJsonDepth || !consume('[')) return false;
    if (consume(']')) return true;
    for (;;) {
      if (!skip_value(depth + 1)) return false;
      if (consume(',')) continue;
      return consume(']');
    }
  }

  const char* p_;
  const char* end_;
};

// The fields of a header this source uses. Views point into the received frame.
struct Header {
  std::optional<std::string_view> type;
  std::optional<std::int64_t> message_num;
  std::optional<std::int64_t> data_size;
  bool has_content = false;
  std::optional<std::string_view> stream;
  std::optional<std::int64_t> channel_num;
  std::optional<std::int64_t> num_samples;
  std::optional<std::int64_t> sample_num;
  std::optional<double> sample_rate;
  std::string_view bad_field;  ///< first known field present with the wrong JSON type
};

class HeaderParser {
 public:
  HeaderParser(std::string_view text, Header& h) noexcept : s_(text), h_(h) {}

  /// False on a JSON syntax error (or a top level that is not an object).
  bool parse() noexcept {
    if (s_.peek() != '{') return false;
    const bool ok = s_.object(0, [&](std::string_view key) { return top_member(key); });
    return ok && s_.at_end();
  }

 private:
  bool top_member(std::string_view key) noexcept {
    if (key == "type") return read_string(key, h_.type, 1);
    if (key == "message_num") return read_int(key, h_.message_num, 1);
    if (key == "data_size") return read_int(key, h_.data_size, 1);
    if (key == "content") {
      if (s_.peek() != '{') return wrong_type(key, 1);
      h_.has_content = true;
      return s_.object(1, [&](std::string_view k) { return content_member(k); });
    }
    return s_.skip_value(1);
  }
  bool content_member(std::string_view key) noexcept {
    if (key == "stream") return read_string(key, h_.stream, 2);
    if (key == "channel_num") return read_int(key, h_.channel_num, 2);
    if (key == "num_samples") return read_int(key, h_.num_samples, 2);
    if (key == "sample_num") return read_int(key, h_.sample_num, 2);
    if (key == "sample_rate") return read_double(key, h_.sample_rate, 2);
    return s_.skip_value(2);
  }
  bool wrong_type(std::string_view key, int depth) noexcept {
    if (h_.bad_field.empty()) h_.bad_field = key;
    return s_.skip_value(depth);
  }
  bool read_string(std::string_view key, std::optional<std::string_view>& out, int depth) noexcept {
    if (s_.peek() != '"') return wrong_type(key, depth);
    std::string_view v;
    if (!s_.string(v)) return false;
    out = v;
    return true;
  }
  bool read_int(std::string_view key, std::optional<std::int64_t>& out, int depth) noexcept {
    const char c = s_.peek();
    if (c != '-' && !is_digit(c)) return wrong_type(key, depth);
    std::string_view text;
    if (!s_.number(text)) return false;
    std::int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      if (h_.bad_field.empty()) h_.bad_field = key;  // fractional, exponent or out of range
      return true;
    }
    out = v;
    return true;
  }
  bool read_double(std::string_view key, std::optional<double>& out, int depth) noexcept {
    const char c = s_.peek();
    if (c != '-' && !is_digit(c)) return wrong_type(key, depth);
    std::string_view text;
    if (!s_.number(text)) return false;
    double v = 0.0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      if (h_.bad_field.empty()) h_.bad_field = key;
      return true;
    }
    out = v;
    return true;
  }

  JsonScanner s_;
  Header& h_;
};

std::string_view view_of(const zmq::message_t& m) noexcept {
  return std::string_view(static_cast<const char*>(m.data()), m.size());
}

// Printable, bounded copy of untrusted bytes for an error text.
struct Printable {
  char text[40];
  int length;
  explicit Printable(std::string_view raw) noexcept {
    std::size_t n = 0;
    for (char c : raw) {
      if (n + 1 >= sizeof(text)) break;
      text[n++] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    text[n] = '\0';
    length = static_cast<int>(n);
  }
};

std::string random_uuid() {
  std::random_device rd;
  std::uniform_int_distribution<int> nibble(0, 15);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out.push_back('-');
    int v = nibble(rd);
    if (i == 12) v = 4;            // version 4 (random)
    if (i == 16) v = 8 | (v & 3);  // RFC 4122 variant
    out.push_back(kHex[v]);
  }
  return out;
}

// Counter slots; the malformed kinds occupy kMalformedBase .. kMalformedBase + kinds - 1.
enum Counter : std::size_t {
  kMessages,
  kDataMessages,
  kBlocks,
  kSamples,
  kIgnored,
  kMalformedBase,
  kDuplicates = kMalformedBase + kOpenEphysMalformedKinds,
  kIncomplete,
  kGaps,
  kMissing,
  kOverlaps,
  kRestarts,
  kLost,
  kClipped,
  kHeartbeatsSent,
  kHeartbeatReplies,
  kHeartbeatsUnanswered,
  kCounterCount
};

}  // namespace

std::string_view to_string(OpenEphysMalformed kind) noexcept {
  switch (kind) {
    case OpenEphysMalformed::kPartCount:
      return "wrong part count";
    case OpenEphysMalformed::kEnvelope:
      return "bad envelope";
    case OpenEphysMalformed::kJson:
      return "bad JSON";
    case OpenEphysMalformed::kField:
      return "bad header field";
    case OpenEphysMalformed::kUnknownType:
      return "unknown type";
    case OpenEphysMalformed::kDataSize:
      return "wrong data size";
    case OpenEphysMalformed::kSampleRate:
      return "sample rate mismatch";
    case OpenEphysMalformed::kOversize:
      return "buffer too large";
  }
  return "unknown";
}

std::optional<std::string> openephys_heartbeat_endpoint(std::string_view data_endpoint) {
  constexpr std::string_view kTcp = "tcp://";
  if (data_endpoint.substr(0, kTcp.size()) != kTcp) return std::nullopt;
  const std::size_t colon = data_endpoint.rfind(':');
  if (colon == std::string_view::npos || colon < kTcp.size()) return std::nullopt;
  const std::string_view port_text = data_endpoint.substr(colon + 1);
  int port = 0;
  const auto [ptr, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port <= 0 ||
      port >= 65535) {
    return std::nullopt;
  }
  return std::string(data_endpoint.substr(0, colon + 1)) + std::to_string(port + 1);
}

// ---------------------------------------------------------------------------------------------

struct OpenEphysZmqSource::Impl {
  Impl(const OpenEphysZmqSourceConfig& c, std::string& error) : config(c), last_error(error) {
    for (auto& counter : counters) counter.store(0, std::memory_order_relaxed);
  }

  const OpenEphysZmqSourceConfig& config;
  std::string& last_error;
  std::size_t channels = 0;
  double bits_per_microvolt = 0.0;

  std::optional<zmq::context_t> context;
  std::optional<zmq::socket_t> sub;
  std::array<zmq::message_t, 4> parts;  // envelope, header, payload, overflow of extra frames
  std::size_t part_count = 0;

  std::vector<std::int32_t> column_of;  // by channel_num; -1: not selected
  std::string stream;                   // capacity kMaxStreamName, reserved in start()
  bool stream_locked = false;

  // The buffer being gathered, channel-major (column c at c * max_block_samples): each message
  // is one channel, so converting it writes contiguously; complete() transposes once.
  std::vector<std::int16_t> assembly;
  std::vector<std::int16_t> ready;     // the last complete buffer, drained by read()
  std::vector<std::uint8_t> received;  // per column: arrived for the buffer being gathered
  std::size_t received_count = 0;
  bool assembling = false;
  std::int64_t assembly_first = 0;
  std::size_t assembly_rows = 0;
  std::int64_t ready_first = 0;
  std::size_t ready_rows = 0;
  std::size_t ready_offset = 0;

  bool continuity_known = false;
  std::int64_t accepted_end = 0;  // one past the last sample of the last accepted buffer
  bool message_num_known = false;
  std::int64_t last_message_num = 0;

  std::array<std::atomic<std::uint64_t>, kCounterCount> counters;

  std::string heartbeat_json;
  std::jthread heartbeat_thread;

  void bump(Counter c, std::uint64_t n = 1) noexcept {
    counters[c].fetch_add(n, std::memory_order_relaxed);
  }

  [[gnu::format(printf, 2, 3)]] void set_error(const char* format, ...) noexcept {
    char text[320];
    va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(text, sizeof(text), format, args);
    va_end(args);
    if (n < 0) return;
    const std::size_t length = std::min<std::size_t>(static_cast<std::size_t>(n), sizeof(text) - 1);
    // Capacity was reserved in start(), so this assign does not allocate.
    last_error.assign(text, std::min(length, last_error.capacity()));
  }

  void malformed(OpenEphysMalformed kind) noexcept {
    bump(static_cast<Counter>(kMalformedBase + static_cast<std::size_t>(kind)));
  }

  /// Receives one whole multipart message (non-blocking). 1: got one; 0: none; -1: socket error.
  int receive() noexcept {
    void* socket = sub->handle();
    for (;;) {
      if (zmq_msg_recv(parts[0].handle(), socket, ZMQ_DONTWAIT) >= 0) break;
      const int e = zmq_errno();
      if (e == EINTR) continue;
      if (e == EAGAIN) return 0;
      set_error("ZMQ receive failed: %s", zmq_strerror(e));
      return -1;
    }
    part_count = 1;
    // The remaining frames of a multipart message arrive together with the first.
    while (zmq_msg_more(parts[std::min<std::size_t>(part_count - 1, 3)].handle()) != 0) {
      zmq_msg_t* dst = parts[std::min<std::size_t>(part_count, 3)].handle();
      if (zmq_msg_recv(dst, socket, 0) < 0) {
        const int e = zmq_errno();
        if (e == EINTR) continue;
        set_error("ZMQ receive failed inside a multipart message: %s", zmq_strerror(e));
        return -1;
      }
      ++part_count;
    }
    return 1;
  }

  /// Handles the message in `parts`; may complete a buffer (then ready_rows > ready_offset).
  void handle() noexcept {
    bump(kMessages);
    const std::string_view envelope = view_of(parts[0]);
    using namespace std::string_view_literals;
    // FORMATS.md: the envelope includes its terminating NUL; accept it without, too.
    const bool is_data = envelope == "DATA\0"sv || envelope == "DATA"sv;
    const bool is_event = envelope == "EVENT\0"sv || envelope == "EVENT"sv;
    if (!is_data && !is_event) {
      malformed(OpenEphysMalformed::kEnvelope);
      const Printable shown(envelope);
      set_error(
          "malformed message (bad envelope): first frame \"%.*s\" (%zu bytes), expected "
          "\"DATA\" or \"EVENT\"",
          shown.length, shown.text, envelope.size());
      return;
    }
    const char* kind_name = is_data ? "DATA" : "EVENT";
    if (part_count < 2) {
      malformed(OpenEphysMalformed::kPartCount);
      set_error(
          "malformed message (wrong part count): %s message has 1 frame, expected a JSON "
          "header after the envelope",
          kind_name);
      return;
    }
    Header h;
    const std::string_view header_text = view_of(parts[1]);
    if (!HeaderParser(header_text, h).parse()) {
      malformed(OpenEphysMalformed::kJson);
      const Printable shown(header_text);
      set_error(
          "malformed message (bad JSON): %s header of %zu bytes is not a valid JSON "
          "object: \"%.*s\"",
          kind_name, header_text.size(), shown.length, shown.text);
      return;
    }
    if (!h.bad_field.empty()) {
      malformed(OpenEphysMalformed::kField);
      const Printable shown(h.bad_field);
      set_error("malformed message (bad header field): \"%.*s\" has the wrong type", shown.length,
                shown.text);
      return;
    }
    if (!h.type) {
      malformed(OpenEphysMalformed::kField);
      set_error("malformed message (bad header field): %s header has no \"type\"", kind_name);
      return;
    }
    const std::string_view type = *h.type;
    if (type == "data") {
      if (!is_data) {
        malformed(OpenEphysMalformed::kUnknownType);
        set_error("malformed message (unknown type): type \"data\" under envelope EVENT");
        return;
      }
      handle_data(h);
      return;
    }
    if (type == "event" || type == "spike") {
      if (!is_event) {
        malformed(OpenEphysMalformed::kUnknownType);
        set_error("malformed message (unknown type): type \"%s\" under envelope DATA",
                  type == "event" ? "event" : "spike");
        return;
      }
      if (part_count > 3) {
        malformed(OpenEphysMalformed::kPartCount);
        set_error("malformed message (wrong part count): EVENT message has %zu frames, at most 3",
                  part_count);
        return;
      }
      track_message_num(h);
      bump(kIgnored);
      return;
    }
    malformed(OpenEphysMalformed::kUnknownType);
    const Printable shown(type);
    set_error("malformed message (unknown type): \"%.*s\" (expected data, event or spike)",
              shown.length, shown.text);
  }

  void handle_data(const Header& h) noexcept {
    if (!h.has_content) {
      malformed(OpenEphysMalformed::kField);
      set_error("malformed message (bad header field): data header has no \"content\" object");
      return;
    }
    const char* missing = !h.channel_num   ? "channel_num"
                          : !h.num_samples ? "num_samples"
                          : !h.sample_num  ? "sample_num"
                          : !h.sample_rate ? "sample_rate"
                                           : nullptr;
    if (missing != nullptr) {
      malformed(OpenEphysMalformed::kField);
      set_error("malformed message (bad header field): data header lacks content.%s", missing);
      return;
    }
    const std::int64_t channel_num = *h.channel_num;
    const std::int64_t num_samples = *h.num_samples;
    const std::int64_t sample_num = *h.sample_num;
    if (channel_num < 0 || num_samples < 0 || sample_num < 0 || sample_num > kMaxSampleNum) {
      malformed(OpenEphysMalformed::kField);
      set_error(
          "malformed message (bad header field): channel_num %lld, num_samples %lld, "
          "sample_num %lld out of range",
          static_cast<long long>(channel_num), static_cast<long long>(num_samples),
          static_cast<long long>(sample_num));
      return;
    }
    if (num_samples == 0) {  // an empty buffer carries nothing to place
      track_message_num(h);
      bump(kIgnored);
      return;
    }
    if (part_count != 3) {
      malformed(OpenEphysMalformed::kPartCount);
      set_error(
          "malformed message (wrong part count): DATA message has %zu frames, expected 3 "
          "(envelope, JSON header, float32 samples)",
          part_count);
      return;
    }
    if (static_cast<std::uint64_t>(num_samples) > config.max_block_samples) {
      malformed(OpenEphysMalformed::kOversize);
      set_error("buffer too large: num_samples %lld exceeds max_block_samples %zu",
                static_cast<long long>(num_samples), config.max_block_samples);
      return;
    }
    const std::size_t rows = static_cast<std::size_t>(num_samples);
    const std::size_t payload = parts[2].size();
    if ((h.data_size && *h.data_size != num_samples * 4) || payload != rows * 4) {
      malformed(OpenEphysMalformed::kDataSize);
      set_error(
          "malformed message (wrong data size): num_samples %lld needs %zu bytes; "
          "data_size %lld, payload %zu bytes",
          static_cast<long long>(num_samples), rows * 4,
          static_cast<long long>(h.data_size.value_or(-1)), payload);
      return;
    }
    const double rate = *h.sample_rate;
    if (!(std::fabs(rate - config.sample_rate_hz) <= 1e-6 * config.sample_rate_hz)) {
      malformed(OpenEphysMalformed::kSampleRate);
      set_error("sample rate mismatch: header says %.6g Hz, configured %.6g Hz", rate,
                config.sample_rate_hz);
      return;
    }
    track_message_num(h);

    const std::string_view msg_stream = h.stream.value_or(std::string_view{});
    if (stream_locked) {
      if (msg_stream != stream) {
        bump(kIgnored);
        return;
      }
    } else {
      if (msg_stream.size() > kMaxStreamName) {
        malformed(OpenEphysMalformed::kField);
        set_error("malformed message (bad header field): stream name of %zu bytes (max %zu)",
                  msg_stream.size(), kMaxStreamName);
        return;
      }
      stream.assign(msg_stream);  // within the reserved capacity
      stream_locked = true;
    }
    if (static_cast<std::uint64_t>(channel_num) >= column_of.size() ||
        column_of[static_cast<std::size_t>(channel_num)] < 0) {
      bump(kIgnored);
      return;
    }
    const auto column = static_cast<std::size_t>(column_of[static_cast<std::size_t>(channel_num)]);
    if (continuity_known && sample_num + num_samples <= accepted_end) {
      bump(kDuplicates);
      set_error("duplicate: channel_num %lld samples [%lld, %lld) were already delivered; dropped",
                static_cast<long long>(channel_num), static_cast<long long>(sample_num),
                static_cast<long long>(sample_num + num_samples));
      return;
    }
    if (assembling && (sample_num != assembly_first || rows != assembly_rows)) abandon();
    if (!assembling) {
      assembling = true;
      assembly_first = sample_num;
      assembly_rows = rows;
      std::fill(received.begin(), received.end(), std::uint8_t{0});
      received_count = 0;
    }
    if (received[column] != 0) {
      bump(kDuplicates);
      set_error("duplicate: channel_num %lld of the buffer at sample %lld arrived twice; dropped",
                static_cast<long long>(channel_num), static_cast<long long>(sample_num));
      return;
    }
    convert(column, rows);
    received[column] = 1;
    ++received_count;
    bump(kDataMessages);
    if (received_count == channels) complete();
  }

  void convert(std::size_t column, std::size_t rows) noexcept {
    const auto* src = static_cast<const unsigned char*>(parts[2].data());
    std::int16_t* dst = assembly.data() + column * config.max_block_samples;
    std::uint64_t clipped = 0;
    for (std::size_t r = 0; r < rows; ++r, ++dst) {
      float f;
      std::memcpy(&f, src + 4 * r, sizeof(f));  // frames carry no alignment guarantee
      const double x = static_cast<double>(f) * bits_per_microvolt;
      std::int16_t v;
      if (std::isnan(x)) {
        v = 0;
        ++clipped;
      } else if (x >= 32767.5) {
        v = std::numeric_limits<std::int16_t>::max();
        ++clipped;
      } else if (x < -32768.5) {
        v = std::numeric_limits<std::int16_t>::min();
        ++clipped;
      } else {
        v = static_cast<std::int16_t>(std::floor(x + 0.5));
      }
      *dst = v;
    }
    if (clipped != 0) bump(kClipped, clipped);
  }

  void abandon() noexcept {
    std::size_t first_missing = 0;
    while (first_missing < channels && received[first_missing] != 0) ++first_missing;
    bump(kIncomplete);
    set_error(
        "incomplete buffer at sample %lld (%zu samples): %zu of %zu channels arrived, "
        "first missing channel_num %d; dropped, not bridged",
        static_cast<long long>(assembly_first), assembly_rows, received_count, channels,
        config.channels[first_missing]);
    assembling = false;
  }

  void complete() noexcept {
    if (continuity_known) {
      if (assembly_first > accepted_end) {
        bump(kGaps);
        bump(kMissing, static_cast<std::uint64_t>(assembly_first - accepted_end));
        set_error("gap: expected sample %lld, buffer starts at %lld (%lld samples missing)",
                  static_cast<long long>(accepted_end), static_cast<long long>(assembly_first),
                  static_cast<long long>(assembly_first - accepted_end));
      } else if (assembly_first < accepted_end) {
        bump(kOverlaps);
        set_error("overlap: expected sample %lld, buffer starts at %lld (delivered as is)",
                  static_cast<long long>(accepted_end), static_cast<long long>(assembly_first));
      }
    }
    accepted_end = assembly_first + static_cast<std::int64_t>(assembly_rows);
    continuity_known = true;
    bump(kBlocks);
    bump(kSamples, assembly_rows);
    transpose_to_ready();
    ready_first = assembly_first;
    ready_rows = assembly_rows;
    ready_offset = 0;
    assembling = false;
  }

  // Channel-major assembly -> sample-major ready buffer, in tiles that stay in L1.
  void transpose_to_ready() noexcept {
    constexpr std::size_t kTile = 32;
    const std::size_t stride = config.max_block_samples;
    for (std::size_t r0 = 0; r0 < assembly_rows; r0 += kTile) {
      const std::size_t r1 = std::min(r0 + kTile, assembly_rows);
      for (std::size_t c0 = 0; c0 < channels; c0 += kTile) {
        const std::size_t c1 = std::min(c0 + kTile, channels);
        for (std::size_t r = r0; r < r1; ++r) {
          std::int16_t* out = ready.data() + r * channels;
          for (std::size_t c = c0; c < c1; ++c) out[c] = assembly[c * stride + r];
        }
      }
    }
  }

  void track_message_num(const Header& h) noexcept {
    if (!h.message_num) return;
    const std::int64_t n = *h.message_num;
    if (message_num_known) {
      if (n > last_message_num + 1) {
        bump(kLost, static_cast<std::uint64_t>(n - last_message_num - 1));
      } else if (n <= last_message_num) {
        // The plugin resets message_num when acquisition starts again (and never repeats one
        // otherwise); sample numbers restart too, so continuity starts afresh (the consumer's
        // GapDetector sees the jump back).
        bump(kRestarts);
        set_error("acquisition restarted: message_num went from %lld to %lld",
                  static_cast<long long>(last_message_num), static_cast<long long>(n));
        continuity_known = false;
        assembling = false;
      }
    }
    last_message_num = n;
    message_num_known = true;
  }

  ReadStatus drain(SampleBlock& block) noexcept {
    const std::size_t rows = std::min(block.capacity_samples(), ready_rows - ready_offset);
    std::memcpy(block.samples.data(), ready.data() + ready_offset * channels,
                rows * channels * sizeof(std::int16_t));
    block.first_sample = ready_first + static_cast<std::int64_t>(ready_offset);
    block.sample_count = rows;
    ready_offset += rows;
    return ReadStatus::kOk;
  }

  void heartbeat_loop(const std::stop_token& stop) {
    std::optional<zmq::socket_t> req;
    std::mutex mutex;  // only for the interruptible wait below; this thread is not real-time
    std::condition_variable_any wake;
    auto next = std::chrono::steady_clock::now();
    while (!stop.stop_requested()) {
      try {
        if (!req) {
          req.emplace(*context, zmq::socket_type::req);
          req->set(zmq::sockopt::linger, 0);
          req->connect(config.heartbeat_endpoint);
        }
        bool answered = false;
        if (req->send(zmq::buffer(heartbeat_json), zmq::send_flags::dontwait)) {
          bump(kHeartbeatsSent);
          const auto deadline = std::chrono::steady_clock::now() + config.heartbeat_reply_timeout;
          while (!stop.stop_requested() && std::chrono::steady_clock::now() < deadline) {
            zmq_pollitem_t item{req->handle(), 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, 20) > 0 && (item.revents & ZMQ_POLLIN) != 0) {
              zmq::message_t reply;
              if (req->recv(reply, zmq::recv_flags::dontwait)) {
                bump(kHeartbeatReplies);
                answered = true;
              }
              break;
            }
          }
        }
        // A REQ socket that got no reply cannot send again: start a fresh one (lazy pirate).
        if (!answered && !stop.stop_requested()) {
          bump(kHeartbeatsUnanswered);
          req.reset();
        }
      } catch (const zmq::error_t&) {
        req.reset();
        if (stop.stop_requested()) break;
      }
      next += config.heartbeat_interval;
      const auto now = std::chrono::steady_clock::now();
      if (next < now) next = now;
      std::unique_lock lock(mutex);
      wake.wait_until(lock, stop, next, [] { return false; });
    }
  }
};

// ---------------------------------------------------------------------------------------------

OpenEphysZmqSource::OpenEphysZmqSource(OpenEphysZmqSourceConfig config)
    : config_(std::move(config)) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("OpenEphysZmqSource: " + what);
  };
  if (config_.endpoint.empty()) fail("endpoint is empty");
  if (config_.channels.empty()) {
    if (config_.channel_count == 0) fail("no channels selected (channel_count is 0)");
    if (config_.channel_count > 65536) fail("channel_count above 65536");
    for (std::size_t c = 0; c < config_.channel_count; ++c) {
      config_.channels.push_back(static_cast<int>(c));
    }
  }
  int max_channel = 0;
  {
    std::vector<int> sorted = config_.channels;
    std::sort(sorted.begin(), sorted.end());
    if (sorted.front() < 0) fail("channel number " + std::to_string(sorted.front()) + " < 0");
    if (sorted.back() >= 65536)
      fail("channel number " + std::to_string(sorted.back()) + " >= 65536");
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) fail("channel number " + std::to_string(*dup) + " selected twice");
    max_channel = sorted.back();
  }
  if (!(config_.sample_rate_hz > 0.0) || !std::isfinite(config_.sample_rate_hz)) {
    fail("sample_rate_hz must be positive");
  }
  if (!(config_.microvolts_per_bit > 0.0) || !std::isfinite(config_.microvolts_per_bit)) {
    fail("microvolts_per_bit must be positive");
  }
  if (config_.max_block_samples == 0 || config_.max_block_samples > (std::size_t{1} << 22)) {
    fail("max_block_samples must be in 1..4194304");
  }
  if (config_.receive_timeout.count() < 0) fail("receive_timeout is negative");
  if (config_.heartbeat_interval.count() < 0) fail("heartbeat_interval is negative");
  if (config_.receive_high_water_mark < 0) fail("receive_high_water_mark is negative");
  if (config_.stream.size() > kMaxStreamName) fail("stream name longer than 255 bytes");
  if (config_.geometry.sites.empty()) {
    const ProbeGeometry np1 = neuropixels1_geometry(static_cast<std::size_t>(max_channel) + 1);
    config_.geometry.model = np1.model;
    for (int c : config_.channels) config_.geometry.sites.push_back(np1.sites[c]);
  } else if (config_.geometry.sites.size() != config_.channels.size()) {
    fail("geometry has " + std::to_string(config_.geometry.sites.size()) + " sites for " +
         std::to_string(config_.channels.size()) + " selected channels");
  }
  if (config_.heartbeat_interval.count() > 0) {
    if (config_.heartbeat_endpoint.empty()) {
      auto derived = openephys_heartbeat_endpoint(config_.endpoint);
      if (!derived) {
        fail("cannot derive the heartbeat endpoint from '" + config_.endpoint +
             "' (not tcp://host:port): set heartbeat_endpoint, or heartbeat_interval 0");
      }
      config_.heartbeat_endpoint = std::move(*derived);
    }
    if (config_.heartbeat_reply_timeout.count() <= 0) fail("heartbeat_reply_timeout must be > 0");
  } else {
    config_.heartbeat_endpoint.clear();
  }
  if (config_.uuid.empty()) config_.uuid = random_uuid();

  info_.name = config_.name;
  info_.stored_channels = config_.channels.size();
  info_.neural_channels = config_.channels.size();
  info_.has_sync_word = false;
  info_.sample_rate_hz = config_.sample_rate_hz;
  info_.microvolts_per_bit = config_.microvolts_per_bit;
  info_.geometry = config_.geometry;
}

OpenEphysZmqSource::~OpenEphysZmqSource() {
  stop();
}

bool OpenEphysZmqSource::start() {
  stop();
  last_error_.clear();
  last_error_.reserve(512);
  auto impl = std::make_unique<Impl>(config_, last_error_);
  Impl& m = *impl;
  m.channels = config_.channels.size();
  m.bits_per_microvolt = 1.0 / config_.microvolts_per_bit;
  const int max_channel = *std::max_element(config_.channels.begin(), config_.channels.end());
  m.column_of.assign(static_cast<std::size_t>(max_channel) + 1, -1);
  for (std::size_t i = 0; i < config_.channels.size(); ++i) {
    m.column_of[static_cast<std::size_t>(config_.channels[i])] = static_cast<std::int32_t>(i);
  }
  m.stream.reserve(kMaxStreamName);
  m.stream = config_.stream;
  m.stream_locked = !config_.stream.empty();
  m.assembly.assign(config_.max_block_samples * m.channels, 0);
  m.ready.assign(config_.max_block_samples * m.channels, 0);
  m.received.assign(m.channels, 0);
  m.heartbeat_json = nlohmann::json{
      {"application", config_.application},
      {"uuid", config_.uuid},
      {"type",
       "heartbeat"}}.dump();
  try {
    m.context.emplace(1);
    m.sub.emplace(*m.context, zmq::socket_type::sub);
    m.sub->set(zmq::sockopt::linger, 0);
    const int hwm = config_.receive_high_water_mark > 0
                        ? config_.receive_high_water_mark
                        : static_cast<int>(std::min<std::size_t>(256 * m.channels, 1 << 24));
    m.sub->set(zmq::sockopt::rcvhwm, hwm);
    // Bound what one untrusted message may make libzmq allocate: the largest accepted buffer
    // plus room for headers, events and spike waveforms. A bigger message drops the connection.
    m.sub->set(zmq::sockopt::maxmsgsize,
               static_cast<std::int64_t>(config_.max_block_samples * 4 + (std::size_t{1} << 20)));
    m.sub->set(zmq::sockopt::subscribe, "");
    m.sub->connect(config_.endpoint);
    // Querying ZMQ_EVENTS makes libzmq process the socket's pending internal commands now. One
    // of them, queued by connect(), records the new session in a std::set (a heap allocation);
    // left pending, it would run inside some later read(), only every 100 messages or so.
    (void)m.sub->get(zmq::sockopt::events);
  } catch (const zmq::error_t& e) {
    last_error_ = "cannot connect to '" + config_.endpoint + "': " + e.what();
    m.sub.reset();
    m.context.reset();
    return false;
  }
  if (config_.heartbeat_interval.count() > 0) {
    m.heartbeat_thread =
        std::jthread([&m](const std::stop_token& stop) { m.heartbeat_loop(stop); });
  }
  impl_ = std::move(impl);
  return true;
}

ReadStatus OpenEphysZmqSource::read(SampleBlock& block) noexcept {
  Impl* m = impl_.get();
  if (m == nullptr || !m->sub) {
    last_error_ = "read while not started (call start() first)";
    return ReadStatus::kError;
  }
  if (block.stored_channels != m->channels) {
    m->set_error("block allocated with %zu channels, source delivers %zu", block.stored_channels,
                 m->channels);
    return ReadStatus::kError;
  }
  if (block.capacity_samples() == 0) {
    m->set_error("block has no capacity");
    return ReadStatus::kError;
  }
  if (m->ready_offset < m->ready_rows) return m->drain(block);

  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + config_.receive_timeout;
  // Keeps a flood of messages that never completes a buffer from holding read() past the timeout.
  const std::size_t budget = 4 * m->channels + 64;
  std::size_t handled = 0;
  for (;;) {
    const int got = m->receive();
    if (got < 0) return ReadStatus::kError;
    if (got > 0) {
      m->handle();
      if (m->ready_offset < m->ready_rows) return m->drain(block);
      if (++handled < budget) continue;
      handled = 0;
      if (Clock::now() >= deadline) return ReadStatus::kWouldBlock;
      continue;
    }
    const auto remaining = deadline - Clock::now();
    if (remaining <= Clock::duration::zero()) return ReadStatus::kWouldBlock;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(remaining).count();
    zmq_pollitem_t item{m->sub->handle(), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, static_cast<long>(ms)) < 0 && zmq_errno() != EINTR) {
      m->set_error("ZMQ poll failed: %s", zmq_strerror(zmq_errno()));
      return ReadStatus::kError;
    }
  }
}

void OpenEphysZmqSource::stop() noexcept {
  if (!impl_) return;
  if (impl_->heartbeat_thread.joinable()) {
    impl_->heartbeat_thread.request_stop();
    impl_->heartbeat_thread.join();
  }
  impl_->sub.reset();
  impl_->context.reset();  // counters stay readable until the next start()
}

OpenEphysZmqCounters OpenEphysZmqSource::counters() const noexcept {
  OpenEphysZmqCounters out;
  const Impl* m = impl_.get();
  if (m == nullptr) return out;
  auto get = [&](std::size_t c) { return m->counters[c].load(std::memory_order_relaxed); };
  out.messages = get(kMessages);
  out.data_messages = get(kDataMessages);
  out.blocks = get(kBlocks);
  out.samples = get(kSamples);
  out.ignored = get(kIgnored);
  for (std::size_t k = 0; k < kOpenEphysMalformedKinds; ++k) {
    out.malformed_by_kind[k] = get(kMalformedBase + k);
    out.malformed += out.malformed_by_kind[k];
  }
  out.duplicates = get(kDuplicates);
  out.incomplete_blocks = get(kIncomplete);
  out.gaps = get(kGaps);
  out.missing_samples = get(kMissing);
  out.overlaps = get(kOverlaps);
  out.restarts = get(kRestarts);
  out.lost_messages = get(kLost);
  out.clipped_samples = get(kClipped);
  out.heartbeats_sent = get(kHeartbeatsSent);
  out.heartbeat_replies = get(kHeartbeatReplies);
  out.heartbeats_unanswered = get(kHeartbeatsUnanswered);
  return out;
}

}  // namespace twinloop::drivers

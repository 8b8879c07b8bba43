#include "twinloop/drivers/network_probe_source.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "network_common.hpp"
#include "twinloop/drivers/wire_format.hpp"

namespace twinloop::drivers {

const char* describe(FaultKind kind) noexcept {
  switch (kind) {
    case FaultKind::kMalformed:
      return "malformed message";
    case FaultKind::kChecksum:
      return "checksum failure";
    case FaultKind::kDuplicate:
      return "duplicate block";
    case FaultKind::kOutOfOrder:
      return "out-of-order block";
    case FaultKind::kGap:
      return "gap";
    case FaultKind::kDisconnect:
      return "disconnect";
    case FaultKind::kReconnect:
      return "reconnect";
    case FaultKind::kStreamEnd:
      return "stream end";
    case FaultKind::kLateOnset:
      return "late onset";
    case FaultKind::kMissingOnset:
      return "missing onset";
    case FaultKind::kRefused:
      return "stimulus refused";
    case FaultKind::kNotConnected:
      return "stimulus endpoint not connected";
  }
  return "unknown fault";
}

namespace {

using internal::AtomicFaultCounters;
using internal::now_ns;

// libzmq's own bound on what it will buffer for one message: far above any block we accept, so
// that an oversized message reaches us (and is counted) instead of tearing the link down, yet a
// hostile peer cannot make the I/O thread allocate gigabytes.
constexpr std::int64_t kMaxMessageBytesLibzmq = 256ll << 20;
constexpr std::size_t kMinReceiveBuffer = 1u << 20;  // stream info with thousands of sites
constexpr std::size_t kErrorCapacity = 512;

std::atomic<std::uint64_t> monitor_counter{0};

}  // namespace

struct NetworkProbeSource::Impl {
  enum class Handled { kNothing, kBlock, kEnd };

  Impl(NetworkProbeConfig c, std::string& error_text)
      : config(std::move(c)), error(error_text), events(config.fault_queue_capacity) {
    error.reserve(kErrorCapacity);
  }
  ~Impl() { close(); }

  NetworkProbeConfig config;
  std::string& error;
  void* context = nullptr;
  void* sub = nullptr;
  void* monitor = nullptr;
  bool started = false;
  bool ended = false;
  ProbeInfo info;
  std::uint32_t probe_id = 0;
  std::vector<std::byte> rx;
  std::size_t rx_size = 0;  // bytes of the message in rx

  // The block being handed out (possibly over several reads).
  bool pending = false;
  wire::BlockHeader header;
  std::size_t pending_row = 0;

  // Sequencing: a 64-bit window of recently delivered sequences tells duplicates from late blocks.
  bool have_last = false;
  std::uint64_t last_sequence = 0;
  std::uint64_t seen_bits = 0;
  std::int64_t next_expected = -1;

  bool link_up = false;
  bool socket_closed = false;  // monitor saw a disconnect; applied once the queue is drained
  std::int64_t last_data_ns = 0;
  BlockTiming timing;

  AtomicFaultCounters counters;
  internal::FaultEventQueue events;

  [[gnu::format(printf, 2, 3)]] void fail(const char* format, ...) noexcept {
    char buffer[kErrorCapacity];
    va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    // Capacity was reserved up front, so this assign does not allocate.
    error.assign(buffer, static_cast<std::size_t>(std::clamp(n, 0, int{kErrorCapacity} - 1)));
  }

  void emit(FaultKind kind, std::int64_t first, std::int64_t end, std::int64_t value,
            std::uint64_t sequence) noexcept {
    FaultEvent e;
    e.kind = kind;
    e.first_sample = first;
    e.end_sample = end;
    e.value = value;
    e.sequence = sequence;
    e.host_time_ns = now_ns();
    events.push(e, counters);
  }

  void close() noexcept {
    if (sub != nullptr && monitor != nullptr) (void)zmq_socket_monitor(sub, nullptr, 0);
    if (monitor != nullptr) zmq_close(monitor);
    if (sub != nullptr) zmq_close(sub);
    if (context != nullptr) zmq_ctx_term(context);
    monitor = sub = context = nullptr;
  }

  bool open() {
    context = zmq_ctx_new();
    if (context == nullptr) {
      fail("cannot create a ZeroMQ context: %s", zmq_strerror(errno));
      return false;
    }
    sub = zmq_socket(context, ZMQ_SUB);
    monitor = zmq_socket(context, ZMQ_PAIR);
    const std::int64_t max_message = kMaxMessageBytesLibzmq;
    if (sub == nullptr || monitor == nullptr ||
        !internal::set_link_options(sub, config.reconnect_interval_ms, config.heartbeat_interval_ms,
                                    config.heartbeat_timeout_ms) ||
        !internal::set_int(sub, ZMQ_RCVHWM, config.receive_hwm) ||
        zmq_setsockopt(sub, ZMQ_MAXMSGSIZE, &max_message, sizeof max_message) != 0 ||
        zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0) != 0 ||
        !internal::set_int(monitor, ZMQ_LINGER, 0)) {
      fail("cannot set up the probe stream socket: %s", zmq_strerror(errno));
      return false;
    }
    const std::string monitor_endpoint =
        "inproc://twinloop-probe-monitor-" + std::to_string(monitor_counter.fetch_add(1));
    if (zmq_socket_monitor(sub, monitor_endpoint.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0 ||
        zmq_connect(monitor, monitor_endpoint.c_str()) != 0) {
      fail("cannot monitor the probe stream socket: %s", zmq_strerror(errno));
      return false;
    }
    if (zmq_connect(sub, config.endpoint.c_str()) != 0) {
      fail("cannot connect to probe stream %s: %s", config.endpoint.c_str(), zmq_strerror(errno));
      return false;
    }
    return true;
  }

  // Monitor messages are two frames: 6 bytes (u16 event, u32 value, host order) and the address.
  void drain_monitor() noexcept {
    for (;;) {
      std::array<std::byte, 16> head{};
      const int n = zmq_recv(monitor, head.data(), head.size(), ZMQ_DONTWAIT);
      if (n < 0) return;
      int more = 0;
      std::size_t more_size = sizeof more;
      while (zmq_getsockopt(monitor, ZMQ_RCVMORE, &more, &more_size) == 0 && more != 0) {
        std::array<char, 64> discard{};
        if (zmq_recv(monitor, discard.data(), discard.size(), ZMQ_DONTWAIT) < 0) break;
      }
      if (n < 2) continue;
      std::uint16_t event = 0;
      std::memcpy(&event, head.data(), sizeof event);
      // Blocks queued before the link went down are still good: take them first, so that the
      // disconnect is placed where the data really stopped.
      if (event == ZMQ_EVENT_DISCONNECTED) socket_closed = true;
    }
  }

  void link_lost(std::int64_t cause) noexcept {
    if (!link_up) return;
    link_up = false;
    AtomicFaultCounters::bump(counters.disconnects);
    if (cause == 0) AtomicFaultCounters::bump(counters.data_timeouts);
    emit(FaultKind::kDisconnect, next_expected, next_expected, cause, last_sequence);
  }

  void alive(std::int64_t now) noexcept {
    last_data_ns = now;
    if (link_up) return;
    link_up = true;
    AtomicFaultCounters::bump(counters.reconnects);
    emit(FaultKind::kReconnect, next_expected, next_expected, 0, last_sequence);
  }

  void malformed(FaultKind kind) noexcept {
    AtomicFaultCounters::bump(kind == FaultKind::kChecksum ? counters.checksum_failures
                                                           : counters.malformed);
    emit(kind, next_expected, next_expected, 0, last_sequence);
  }

  Handled handle_message(std::size_t size, std::int64_t now) noexcept {
    if (size > rx.size()) {
      fail("probe stream: message of %zu bytes exceeds the %zu-byte limit (max_block_samples %zu)",
           size, rx.size(), config.max_block_samples);
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    const std::span<const std::byte> message(rx.data(), size);
    wire::MessageType type{};
    if (const wire::DecodeError e = wire::peek(message, type); e != wire::DecodeError::kNone) {
      fail("probe stream: %s (%zu bytes)", wire::describe(e), size);
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    switch (type) {
      case wire::MessageType::kProbeBlock:
        return handle_block(message, now);
      case wire::MessageType::kStreamInfo: {
        wire::StreamInfoSummary s;
        if (const wire::DecodeError e = wire::decode_stream_info_summary(message, s);
            e != wire::DecodeError::kNone) {
          fail("probe stream: stream info: %s", wire::describe(e));
          malformed(e == wire::DecodeError::kChecksum ? FaultKind::kChecksum
                                                      : FaultKind::kMalformed);
          return Handled::kNothing;
        }
        if (s.probe_id != probe_id || s.stored_channels != info.stored_channels ||
            s.sample_rate_hz != info.sample_rate_hz) {
          fail(
              "probe stream: stream info changed (probe %u, %u channels, %.3f Hz; expected "
              "probe %u, %zu channels, %.3f Hz)",
              s.probe_id, s.stored_channels, s.sample_rate_hz, probe_id, info.stored_channels,
              info.sample_rate_hz);
          malformed(FaultKind::kMalformed);
          return Handled::kNothing;
        }
        AtomicFaultCounters::bump(counters.stream_infos);
        alive(now);
        return Handled::kNothing;
      }
      case wire::MessageType::kStreamEnd: {
        wire::StreamEnd end;
        if (const wire::DecodeError e = wire::decode_stream_end(message, end);
            e != wire::DecodeError::kNone) {
          fail("probe stream: stream end: %s", wire::describe(e));
          malformed(e == wire::DecodeError::kChecksum ? FaultKind::kChecksum
                                                      : FaultKind::kMalformed);
          return Handled::kNothing;
        }
        if (end.probe_id != probe_id) {
          fail("probe stream: stream end of probe %u, stream is probe %u", end.probe_id, probe_id);
          malformed(FaultKind::kMalformed);
          return Handled::kNothing;
        }
        ended = true;
        emit(FaultKind::kStreamEnd, end.end_sample, end.end_sample, 0, end.sequence);
        return Handled::kEnd;
      }
      default:
        fail("probe stream: unexpected message type %u", static_cast<unsigned>(type));
        malformed(FaultKind::kMalformed);
        return Handled::kNothing;
    }
  }

  Handled handle_block(std::span<const std::byte> message, std::int64_t now) noexcept {
    wire::BlockHeader h;
    if (const wire::DecodeError e = wire::decode_block(message, h); e != wire::DecodeError::kNone) {
      fail("probe stream: block: %s (%zu bytes)", wire::describe(e), message.size());
      malformed(e == wire::DecodeError::kChecksum ? FaultKind::kChecksum : FaultKind::kMalformed);
      return Handled::kNothing;
    }
    if (h.channel_count != info.stored_channels) {
      fail("probe stream: block %llu has %u channels, the stream has %zu",
           static_cast<unsigned long long>(h.sequence), h.channel_count, info.stored_channels);
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    if (h.probe_id != probe_id) {
      fail("probe stream: block %llu from probe %u, the stream is probe %u",
           static_cast<unsigned long long>(h.sequence), h.probe_id, probe_id);
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    if (h.sample_count > config.max_block_samples) {
      fail("probe stream: block %llu of %u samples exceeds max_block_samples %zu",
           static_cast<unsigned long long>(h.sequence), h.sample_count, config.max_block_samples);
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    if (h.sample_count == 0) {
      fail("probe stream: block %llu is empty", static_cast<unsigned long long>(h.sequence));
      malformed(FaultKind::kMalformed);
      return Handled::kNothing;
    }
    const auto end_sample = h.first_sample + static_cast<std::int64_t>(h.sample_count);
    if (have_last) {
      if (h.sequence <= last_sequence) {
        const std::uint64_t age = last_sequence - h.sequence;
        const bool seen = age < 64 && ((seen_bits >> age) & 1u) != 0;
        if (seen) {
          fail("probe stream: duplicate block %llu", static_cast<unsigned long long>(h.sequence));
          AtomicFaultCounters::bump(counters.duplicates);
          emit(FaultKind::kDuplicate, h.first_sample, end_sample, 0, h.sequence);
        } else {
          fail("probe stream: block %llu arrived after block %llu",
               static_cast<unsigned long long>(h.sequence),
               static_cast<unsigned long long>(last_sequence));
          AtomicFaultCounters::bump(counters.out_of_order);
          emit(FaultKind::kOutOfOrder, h.first_sample, end_sample, 0, h.sequence);
        }
        alive(now);
        return Handled::kNothing;
      }
      if (h.first_sample < next_expected) {
        fail("probe stream: block %llu starts at sample %lld, before %lld already delivered",
             static_cast<unsigned long long>(h.sequence), static_cast<long long>(h.first_sample),
             static_cast<long long>(next_expected));
        AtomicFaultCounters::bump(counters.out_of_order);
        emit(FaultKind::kOutOfOrder, h.first_sample, end_sample, 0, h.sequence);
        alive(now);
        return Handled::kNothing;
      }
    }
    alive(now);
    if (have_last && h.first_sample > next_expected) {
      const std::int64_t missing = h.first_sample - next_expected;
      AtomicFaultCounters::bump(counters.gaps);
      counters.missing_samples.fetch_add(missing, std::memory_order_relaxed);
      emit(FaultKind::kGap, next_expected, h.first_sample, missing, h.sequence);
    }
    if (have_last) {
      const std::uint64_t shift = h.sequence - last_sequence;
      seen_bits = shift >= 64 ? 0 : seen_bits << shift;
    }
    seen_bits |= 1u;
    have_last = true;
    last_sequence = h.sequence;
    next_expected = end_sample;
    header = h;
    pending = true;
    pending_row = 0;
    timing = BlockTiming{h.sequence, h.first_sample, h.send_time_ns, now};
    AtomicFaultCounters::bump(counters.blocks);
    AtomicFaultCounters::bump(counters.samples, h.sample_count);
    return Handled::kBlock;
  }

  ReadStatus deliver_pending(SampleBlock& block) noexcept {
    const std::size_t rows =
        std::min(block.capacity_samples(), std::size_t{header.sample_count} - pending_row);
    wire::copy_block_rows(std::span<const std::byte>(rx.data(), rx_size), header, pending_row, rows,
                          block.samples.data());
    block.first_sample = header.first_sample + static_cast<std::int64_t>(pending_row);
    block.sample_count = rows;
    pending_row += rows;
    if (pending_row >= header.sample_count) pending = false;
    return ReadStatus::kOk;
  }
};

NetworkProbeSource::NetworkProbeSource(NetworkProbeConfig config) {
  if (config.endpoint.empty()) throw std::invalid_argument("NetworkProbeSource: empty endpoint");
  if (config.connect_timeout_ms <= 0 || config.poll_timeout_ms < 0 || config.data_timeout_ms <= 0 ||
      config.max_block_samples == 0 || config.fault_queue_capacity == 0 || config.receive_hwm < 0) {
    throw std::invalid_argument(
        "NetworkProbeSource: connect/data timeouts, max_block_samples and fault_queue_capacity "
        "must be positive");
  }
  impl_ = std::make_unique<Impl>(std::move(config), last_error_);
}

NetworkProbeSource::~NetworkProbeSource() = default;

bool NetworkProbeSource::start() {
  Impl& m = *impl_;
  if (m.started) return true;
  if (!m.open()) {
    m.close();
    return false;
  }
  // The stream info arrives on subscription (the sender's XPUB sees it); blocks that overtake it
  // are discarded, since they cannot be validated yet.
  m.rx.assign(kMinReceiveBuffer, std::byte{0});
  const std::int64_t deadline =
      internal::now_ns() + std::int64_t{m.config.connect_timeout_ms} * 1000000;
  bool have_info = false;
  std::string problem = "nothing received";
  while (!have_info) {
    const std::int64_t left_ms = (deadline - internal::now_ns()) / 1000000;
    if (left_ms <= 0) break;
    zmq_pollitem_t item{m.sub, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, static_cast<long>(left_ms)) <= 0) continue;
    const int n = zmq_recv(m.sub, m.rx.data(), m.rx.size(), ZMQ_DONTWAIT);
    if (n < 0) continue;
    const auto size = static_cast<std::size_t>(n);
    if (size > m.rx.size()) {
      problem = "oversized message";
      continue;
    }
    const std::span<const std::byte> message(m.rx.data(), size);
    wire::MessageType type{};
    if (wire::peek(message, type) != wire::DecodeError::kNone ||
        type != wire::MessageType::kStreamInfo) {
      continue;
    }
    wire::StreamInfo info;
    if (const wire::DecodeError e = wire::decode_stream_info(message, info);
        e != wire::DecodeError::kNone) {
      problem = std::string("bad stream info: ") + wire::describe(e);
      continue;
    }
    if (m.config.probe_id >= 0 && info.probe_id != m.config.probe_id) {
      problem = "stream info of probe " + std::to_string(info.probe_id) + ", expected probe " +
                std::to_string(m.config.probe_id);
      continue;
    }
    m.info = std::move(info.probe);
    m.probe_id = info.probe_id;
    have_info = true;
  }
  m.drain_monitor();
  if (!have_info) {
    last_error_ = "no stream info from " + m.config.endpoint + " within " +
                  std::to_string(m.config.connect_timeout_ms) + " ms (" + problem + ")";
    m.close();
    return false;
  }
  m.rx.assign(std::max(kMinReceiveBuffer, wire::block_message_bytes(m.config.max_block_samples,
                                                                    m.info.stored_channels)),
              std::byte{0});
  m.started = true;
  m.ended = false;
  m.pending = false;
  m.have_last = false;
  m.seen_bits = 0;
  m.next_expected = -1;
  m.link_up = true;
  m.socket_closed = false;
  m.last_data_ns = internal::now_ns();
  AtomicFaultCounters::bump(m.counters.stream_infos);
  return true;
}

const ProbeInfo& NetworkProbeSource::info() const noexcept {
  return impl_->info;
}

ReadStatus NetworkProbeSource::read(SampleBlock& block) noexcept {
  Impl& m = *impl_;
  if (!m.started) {
    m.fail("read() before start()");
    return ReadStatus::kError;
  }
  if (block.stored_channels != m.info.stored_channels || block.capacity_samples() == 0) {
    m.fail("block allocated for %zu channels, the stream has %zu", block.stored_channels,
           m.info.stored_channels);
    return ReadStatus::kError;
  }
  if (m.pending) return m.deliver_pending(block);
  if (m.ended) return ReadStatus::kEndOfStream;
  const std::int64_t deadline =
      internal::now_ns() + std::int64_t{m.config.poll_timeout_ms} * 1000000;
  const std::int64_t data_timeout_ns = std::int64_t{m.config.data_timeout_ms} * 1000000;
  for (;;) {
    m.drain_monitor();
    const int n = zmq_recv(m.sub, m.rx.data(), m.rx.size(), ZMQ_DONTWAIT);
    const std::int64_t now = internal::now_ns();
    if (n >= 0) {
      m.rx_size = std::min(static_cast<std::size_t>(n), m.rx.size());
      switch (m.handle_message(static_cast<std::size_t>(n), now)) {
        case Impl::Handled::kBlock:
          return m.deliver_pending(block);
        case Impl::Handled::kEnd:
          return ReadStatus::kEndOfStream;
        case Impl::Handled::kNothing:
          continue;
      }
    }
    if (errno != EAGAIN && errno != EINTR) {
      m.fail("probe stream receive failed: %s", zmq_strerror(errno));
      return ReadStatus::kError;
    }
    if (m.socket_closed) {
      m.socket_closed = false;
      m.link_lost(1);
    }
    if (m.link_up && now - m.last_data_ns > data_timeout_ns) m.link_lost(0);
    const std::int64_t left_ns = deadline - now;
    if (left_ns <= 0) return ReadStatus::kWouldBlock;
    std::array<zmq_pollitem_t, 2> items{{{m.sub, 0, ZMQ_POLLIN, 0}, {m.monitor, 0, ZMQ_POLLIN, 0}}};
    const long wait_ms = static_cast<long>(std::max<std::int64_t>(1, (left_ns + 999999) / 1000000));
    if (zmq_poll(items.data(), 2, wait_ms) < 0 && errno != EINTR) {
      m.fail("probe stream poll failed: %s", zmq_strerror(errno));
      return ReadStatus::kError;
    }
  }
}

void NetworkProbeSource::stop() noexcept {
  impl_->close();
  impl_->started = false;
  impl_->pending = false;
}

NetworkFaultCounters NetworkProbeSource::fault_counters() const noexcept {
  return impl_->counters.snapshot();
}

std::size_t NetworkProbeSource::drain_fault_events(std::span<FaultEvent> out) noexcept {
  return impl_->events.drain(out);
}

const BlockTiming& NetworkProbeSource::last_block_timing() const noexcept {
  return impl_->timing;
}

std::uint32_t NetworkProbeSource::probe_id() const noexcept {
  return impl_->probe_id;
}

}  // namespace twinloop::drivers

#include "twinloop/drivers/network_stimulus_sink.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <stdexcept>

#include "network_common.hpp"
#include "twinloop/drivers/wire_format.hpp"

namespace twinloop::drivers {

const char* describe(DeliveryOutcome outcome) noexcept {
  switch (outcome) {
    case DeliveryOutcome::kDelivered:
      return "delivered";
    case DeliveryOutcome::kLate:
      return "delivered late";
    case DeliveryOutcome::kRefused:
      return "refused";
    case DeliveryOutcome::kMissing:
      return "no onset acknowledgement";
    case DeliveryOutcome::kNotConnected:
      return "not connected";
    case DeliveryOutcome::kNotStarted:
      return "not started";
  }
  return "unknown outcome";
}

namespace {

using internal::AtomicFaultCounters;
using internal::now_ns;

constexpr std::size_t kErrorCapacity = 512;

// Milliseconds left until `deadline_ns`, rounded up so that a poll never returns early.
long ms_until(std::int64_t deadline_ns) noexcept {
  const std::int64_t left = deadline_ns - now_ns();
  return left <= 0 ? 0 : static_cast<long>((left + 999999) / 1000000);
}

}  // namespace

struct NetworkStimulusSink::Impl {
  Impl(NetworkStimulusConfig c, std::string& error_text)
      : config(std::move(c)), error(error_text), events(config.fault_queue_capacity) {
    error.reserve(kErrorCapacity);
  }
  ~Impl() { close(); }

  NetworkStimulusConfig config;
  std::string& error;
  void* context = nullptr;
  void* dealer = nullptr;
  bool started = false;
  std::uint64_t next_request_id = 1;
  std::array<std::byte, wire::kStimulusCommandMaxBytes> tx{};
  // One byte more than the largest valid reply, so that an oversized reply is recognised.
  std::array<std::byte, wire::kStimulusReplyMaxBytes + 1> rx{};
  DeliveryResult last;
  AtomicFaultCounters counters;
  internal::FaultEventQueue events;

  [[gnu::format(printf, 2, 3)]] void fail(const char* format, ...) noexcept {
    char buffer[kErrorCapacity];
    va_list args;
    va_start(args, format);
    const int n = std::vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    error.assign(buffer, static_cast<std::size_t>(std::clamp(n, 0, int{kErrorCapacity} - 1)));
  }

  void emit(FaultKind kind, const StimulusCommand& command, std::int64_t end, std::int64_t value,
            std::uint64_t request_id) noexcept {
    FaultEvent e;
    e.kind = kind;
    e.first_sample = command.earliest_onset_sample;
    e.end_sample = end;
    e.value = value;
    e.sequence = request_id;
    e.trial = command.trial;
    e.host_time_ns = now_ns();
    events.push(e, counters);
  }

  void close() noexcept {
    if (dealer != nullptr) zmq_close(dealer);
    if (context != nullptr) zmq_ctx_term(context);
    dealer = context = nullptr;
    started = false;
  }
};

NetworkStimulusSink::NetworkStimulusSink(NetworkStimulusConfig config) {
  if (config.endpoint.empty()) throw std::invalid_argument("NetworkStimulusSink: empty endpoint");
  if (config.reply_timeout_ms <= 0 || config.connect_timeout_ms <= 0 ||
      config.late_tolerance_samples < 0 || config.fault_queue_capacity == 0) {
    throw std::invalid_argument(
        "NetworkStimulusSink: timeouts and fault_queue_capacity must be positive, "
        "late_tolerance_samples non-negative");
  }
  impl_ = std::make_unique<Impl>(std::move(config), last_error_);
}

NetworkStimulusSink::~NetworkStimulusSink() = default;

bool NetworkStimulusSink::start() {
  Impl& m = *impl_;
  if (m.started) return true;
  m.context = zmq_ctx_new();
  m.dealer = m.context != nullptr ? zmq_socket(m.context, ZMQ_DEALER) : nullptr;
  // ZMQ_IMMEDIATE: a command is only queued on a live connection. Without it libzmq would hold a
  // command while the stimulator is away and deliver it on reconnect, long after its onset was due.
  if (m.dealer == nullptr ||
      !internal::set_link_options(m.dealer, m.config.reconnect_interval_ms,
                                  m.config.heartbeat_interval_ms, m.config.heartbeat_timeout_ms) ||
      !internal::set_int(m.dealer, ZMQ_IMMEDIATE, 1) ||
      !internal::set_int(m.dealer, ZMQ_SNDHWM, 16) ||
      !internal::set_int(m.dealer, ZMQ_RCVHWM, 256) ||
      zmq_connect(m.dealer, m.config.endpoint.c_str()) != 0) {
    m.fail("cannot connect to stimulus endpoint %s: %s", m.config.endpoint.c_str(),
           zmq_strerror(errno));
    m.close();
    return false;
  }
  // With ZMQ_IMMEDIATE, POLLOUT means "a connection is up".
  zmq_pollitem_t item{m.dealer, 0, ZMQ_POLLOUT, 0};
  if (zmq_poll(&item, 1, m.config.connect_timeout_ms) <= 0) {
    m.fail("no connection to stimulus endpoint %s within %d ms", m.config.endpoint.c_str(),
           m.config.connect_timeout_ms);
    m.close();
    return false;
  }
  m.started = true;
  return true;
}

void NetworkStimulusSink::stop() noexcept {
  impl_->close();
}

StimulusOnset NetworkStimulusSink::deliver(const StimulusCommand& command) {
  const DeliveryResult r = deliver_with_result(command);
  return StimulusOnset{r.delivered(), r.onset_sample};
}

DeliveryResult NetworkStimulusSink::deliver_with_result(const StimulusCommand& command) {
  Impl& m = *impl_;
  DeliveryResult& r = m.last;
  r = DeliveryResult{};
  r.requested_sample = command.earliest_onset_sample;
  const std::int64_t window_end =
      command.earliest_onset_sample + std::max<std::int64_t>(command.duration_samples, 0);
  if (!m.started) {
    r.outcome = DeliveryOutcome::kNotStarted;
    m.fail("deliver() before start()");
    return r;
  }
  r.request_id = m.next_request_id++;
  const std::size_t size = wire::encode_stimulus_command(r.request_id, command, m.tx);
  if (size == 0) {
    r.outcome = DeliveryOutcome::kRefused;
    m.fail("trial %llu: stimulus has %u dimensions, the wire carries at most %zu",
           static_cast<unsigned long long>(command.trial), command.stimulus.dimension_count,
           protocols::kMaxStimulusDimensions);
    AtomicFaultCounters::bump(m.counters.refused);
    m.emit(FaultKind::kRefused, command, window_end, 0, r.request_id);
    return r;
  }
  const std::int64_t sent_at = now_ns();
  const std::int64_t deadline = sent_at + std::int64_t{m.config.reply_timeout_ms} * 1000000;

  zmq_pollitem_t out_item{m.dealer, 0, ZMQ_POLLOUT, 0};
  bool sent = false;
  while (!sent) {
    if (zmq_send(m.dealer, m.tx.data(), size, ZMQ_DONTWAIT) >= 0) {
      sent = true;
      break;
    }
    if (errno != EAGAIN && errno != EINTR) break;
    const long left = ms_until(deadline);
    if (left <= 0 || zmq_poll(&out_item, 1, left) < 0) break;
  }
  if (!sent) {
    r.outcome = DeliveryOutcome::kNotConnected;
    r.round_trip_ns = now_ns() - sent_at;
    m.fail("trial %llu: no connection to stimulus endpoint %s within %d ms; nothing was sent",
           static_cast<unsigned long long>(command.trial), m.config.endpoint.c_str(),
           m.config.reply_timeout_ms);
    AtomicFaultCounters::bump(m.counters.not_connected);
    m.emit(FaultKind::kNotConnected, command, window_end, 0, r.request_id);
    return r;
  }
  AtomicFaultCounters::bump(m.counters.commands);

  zmq_pollitem_t in_item{m.dealer, 0, ZMQ_POLLIN, 0};
  for (;;) {
    const int n = zmq_recv(m.dealer, m.rx.data(), m.rx.size(), ZMQ_DONTWAIT);
    if (n < 0) {
      const long left = ms_until(deadline);
      if (left > 0 && (zmq_poll(&in_item, 1, left) >= 0 || errno == EINTR)) continue;
      break;  // timed out
    }
    const auto received = std::min(static_cast<std::size_t>(n), m.rx.size());
    wire::StimulusReply reply;
    const wire::DecodeError e =
        static_cast<std::size_t>(n) > wire::kStimulusReplyMaxBytes
            ? wire::DecodeError::kSizeMismatch
            : wire::decode_stimulus_reply(std::span<const std::byte>(m.rx.data(), received), reply);
    if (e != wire::DecodeError::kNone) {
      // The reply's request id cannot be trusted; keep waiting for a good one.
      AtomicFaultCounters::bump(e == wire::DecodeError::kChecksum ? m.counters.checksum_failures
                                                                  : m.counters.malformed);
      continue;
    }
    if (reply.request_id != r.request_id) {
      AtomicFaultCounters::bump(m.counters.stale_replies);
      continue;
    }
    r.round_trip_ns = now_ns() - sent_at;
    if (reply.status == wire::ReplyStatus::kRefused) {
      r.outcome = DeliveryOutcome::kRefused;
      m.fail("trial %llu refused by the stimulator: %.*s",
             static_cast<unsigned long long>(command.trial), static_cast<int>(reply.reason_length),
             reply.reason.data());
      AtomicFaultCounters::bump(m.counters.refused);
      m.emit(FaultKind::kRefused, command, window_end, 0, r.request_id);
      return r;
    }
    r.onset_sample = reply.onset_sample;
    const std::int64_t late_by = reply.onset_sample - command.earliest_onset_sample;
    if (late_by > m.config.late_tolerance_samples) {
      r.outcome = DeliveryOutcome::kLate;
      m.fail(
          "trial %llu: late onset at sample %lld, requested %lld (+%lld samples, tolerance %lld)",
          static_cast<unsigned long long>(command.trial),
          static_cast<long long>(reply.onset_sample),
          static_cast<long long>(command.earliest_onset_sample), static_cast<long long>(late_by),
          static_cast<long long>(m.config.late_tolerance_samples));
      AtomicFaultCounters::bump(m.counters.late_onsets);
      m.emit(FaultKind::kLateOnset, command, reply.onset_sample, late_by, r.request_id);
      return r;
    }
    r.outcome = DeliveryOutcome::kDelivered;
    AtomicFaultCounters::bump(m.counters.delivered);
    return r;
  }
  r.outcome = DeliveryOutcome::kMissing;
  r.round_trip_ns = now_ns() - sent_at;
  m.fail("trial %llu: no onset acknowledgement within %d ms (request %llu); delivery unknown",
         static_cast<unsigned long long>(command.trial), m.config.reply_timeout_ms,
         static_cast<unsigned long long>(r.request_id));
  AtomicFaultCounters::bump(m.counters.missing_onsets);
  m.emit(FaultKind::kMissingOnset, command, window_end, 0, r.request_id);
  return r;
}

const DeliveryResult& NetworkStimulusSink::last_result() const noexcept {
  return impl_->last;
}

NetworkFaultCounters NetworkStimulusSink::fault_counters() const noexcept {
  return impl_->counters.snapshot();
}

std::size_t NetworkStimulusSink::drain_fault_events(std::span<FaultEvent> out) noexcept {
  return impl_->events.drain(out);
}

}  // namespace twinloop::drivers

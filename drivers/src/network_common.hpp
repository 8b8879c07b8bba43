// Internal to the network transports: atomic fault counters, the bounded fault-event queue and the
// socket options both transports set. Keeps zmq.hpp and Boost out of the public headers.
#pragma once

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <chrono>
#include <cstdint>
#include <span>

#include "twinloop/drivers/network_faults.hpp"

namespace twinloop::drivers::internal {

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Counters written by one thread, read by any (relaxed: each is an independent tally).
struct AtomicFaultCounters {
  using C = std::atomic<std::uint64_t>;
  C blocks{0}, samples{0}, malformed{0}, checksum_failures{0}, duplicates{0}, out_of_order{0},
      gaps{0}, disconnects{0}, reconnects{0}, data_timeouts{0}, stream_infos{0}, commands{0},
      delivered{0}, late_onsets{0}, missing_onsets{0}, refused{0}, not_connected{0},
      stale_replies{0}, events_dropped{0};
  std::atomic<std::int64_t> missing_samples{0};

  static void bump(C& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  [[nodiscard]] NetworkFaultCounters snapshot() const noexcept {
    constexpr auto r = std::memory_order_relaxed;
    NetworkFaultCounters s;
    s.blocks = blocks.load(r);
    s.samples = samples.load(r);
    s.malformed = malformed.load(r);
    s.checksum_failures = checksum_failures.load(r);
    s.duplicates = duplicates.load(r);
    s.out_of_order = out_of_order.load(r);
    s.gaps = gaps.load(r);
    s.missing_samples = missing_samples.load(r);
    s.disconnects = disconnects.load(r);
    s.reconnects = reconnects.load(r);
    s.data_timeouts = data_timeouts.load(r);
    s.stream_infos = stream_infos.load(r);
    s.commands = commands.load(r);
    s.delivered = delivered.load(r);
    s.late_onsets = late_onsets.load(r);
    s.missing_onsets = missing_onsets.load(r);
    s.refused = refused.load(r);
    s.not_connected = not_connected.load(r);
    s.stale_replies = stale_replies.load(r);
    s.events_dropped = events_dropped.load(r);
    return s;
  }
};

/// Single-producer (the transport's thread) / single-consumer (the session) event queue; a full
/// queue drops the new event and counts it.
class FaultEventQueue {
 public:
  explicit FaultEventQueue(std::size_t capacity) : queue_(capacity) {}

  void push(const FaultEvent& event, AtomicFaultCounters& counters) noexcept {
    if (!queue_.push(event)) AtomicFaultCounters::bump(counters.events_dropped);
  }
  std::size_t drain(std::span<FaultEvent> out) noexcept {
    return queue_.pop(out.data(), out.size());
  }

 private:
  boost::lockfree::spsc_queue<FaultEvent> queue_;
};

/// Sets an int socket option; returns false on failure (the caller reports zmq_strerror).
inline bool set_int(void* socket, int option, int value) noexcept {
  return zmq_setsockopt(socket, option, &value, sizeof value) == 0;
}

/// Options both transports want on a connecting socket: never linger on close (a stale command
/// must not go out after stop()), fast reconnects, and ZMTP heartbeats so that a half-open TCP
/// link is noticed within heartbeat_timeout_ms instead of never. libzmq sets TCP_NODELAY on every
/// TCP socket itself, so there is no Nagle batching to switch off.
inline bool set_link_options(void* socket, int reconnect_ms, int heartbeat_ms,
                             int heartbeat_timeout_ms) noexcept {
  return set_int(socket, ZMQ_LINGER, 0) && set_int(socket, ZMQ_RECONNECT_IVL, reconnect_ms) &&
         set_int(socket, ZMQ_RECONNECT_IVL_MAX, std::max(reconnect_ms, 1000)) &&
         set_int(socket, ZMQ_HEARTBEAT_IVL, heartbeat_ms) &&
         set_int(socket, ZMQ_HEARTBEAT_TIMEOUT, heartbeat_timeout_ms) &&
         set_int(socket, ZMQ_HEARTBEAT_TTL, heartbeat_timeout_ms);
}

}  // namespace twinloop::drivers::internal

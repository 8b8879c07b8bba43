#include "twinloop/hil/bench_server.hpp"

#include <zmq.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "twinloop/drivers/openephys_zmq_emulator.hpp"
#include "twinloop/drivers/wire_format.hpp"
#include "twinloop/hil/details/random.hpp"

namespace twinloop::hil {
namespace {

namespace wire = drivers::wire;
using Clock = std::chrono::steady_clock;

using namespace fault_salt;  // NOLINT: the salts read as the fault kinds below

std::uint64_t mix(std::uint64_t seed, std::uint64_t salt, std::uint64_t index) noexcept {
  std::uint64_t state = details::derive_seed(seed, 0xFA17000000000000ULL + salt);
  state ^= index * 0xD1B54A32D192ED03ULL;
  (void)details::splitmix64(state);
  return details::splitmix64(state);
}

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

void set_int(void* socket, int option, int value) noexcept {
  (void)zmq_setsockopt(socket, option, &value, sizeof value);
}

std::string validate_selection(const char* name, const FaultSelection& s) {
  if (!(s.rate >= 0.0 && s.rate <= 1.0)) {
    return std::string(name) + ": rate must be in [0, 1]";
  }
  return {};
}

}  // namespace

bool FaultSelection::hits(std::uint64_t index, std::uint64_t seed,
                          std::uint64_t salt) const noexcept {
  if (std::find(indices.begin(), indices.end(), index) != indices.end()) return true;
  if (rate <= 0.0) return false;
  if (rate >= 1.0) return true;
  return static_cast<double>(mix(seed, salt, index) >> 11) * 0x1.0p-53 < rate;
}

std::string parse_fault_selection(const std::string& text, FaultSelection& out) {
  FaultSelection s;
  if (text.empty()) return "empty fault selection";
  if (text.front() == '@') {
    std::size_t pos = 1;
    while (pos <= text.size()) {
      const std::size_t comma = std::min(text.find(',', pos), text.size());
      const std::string item = text.substr(pos, comma - pos);
      if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos) {
        return "'" + text + "': expected '@' and comma-separated non-negative integers";
      }
      try {
        s.indices.push_back(std::stoull(item));
      } catch (const std::exception&) {
        return "'" + text + "': index '" + item + "' out of range";
      }
      pos = comma + 1;
    }
  } else {
    std::size_t used = 0;
    try {
      s.rate = std::stod(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != text.size() || !(s.rate >= 0.0 && s.rate <= 1.0)) {
      return "'" + text + "': expected a probability in [0, 1] or '@' and a list of indices";
    }
  }
  out = std::move(s);
  return {};
}

struct BenchServer::Impl {
  explicit Impl(BenchServerConfig c)
      : config(std::move(c)), rig(make_simulated_rig(config.simulation)) {}

  BenchServerConfig config;
  SimulatedRig rig;
  std::string error;
  std::string probe_endpoint;
  std::string stimulus_endpoint;
  void* context = nullptr;
  void* pub = nullptr;     // owned by the stream thread once started
  void* router = nullptr;  // owned by the stimulus thread once started
  std::unique_ptr<drivers::OpenEphysZmqEmulator> openephys;  // kOpenEphys: the stream thread's
  std::vector<std::byte> stream_info;
  std::thread stream_thread;
  std::thread stimulus_thread;
  std::atomic<bool> stop_requested{false};
  std::atomic<bool> link_down{false};
  std::atomic<bool> finished{false};

  using Counter = std::atomic<std::uint64_t>;
  Counter generated{0}, sent{0}, dropped{0}, duplicated{0}, reordered{0}, corrupted{0}, lost{0},
      disconnects{0}, infos{0}, commands{0}, delivered{0}, late{0}, missing{0}, refused{0},
      malformed{0};
  std::atomic<std::int64_t> end_sample{0};

  static void bump(Counter& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }
  [[nodiscard]] bool stopping() const noexcept {
    return stop_requested.load(std::memory_order_acquire);
  }

  // Binds a socket; on success stores the resolved endpoint in `resolved` (if given).
  void* bind(int type, const std::string& endpoint, std::string* resolved) {
    void* s = zmq_socket(context, type);
    if (s == nullptr) return nullptr;
    set_int(s, ZMQ_LINGER, 0);
    if (type == ZMQ_XPUB) {
      // Every subscription reaches us (not only the first per topic), so every (re)connecting
      // subscriber gets the stream info.
      set_int(s, ZMQ_XPUB_VERBOSE, 1);
      set_int(s, ZMQ_SNDHWM, config.send_hwm);
    }
    if (zmq_bind(s, endpoint.c_str()) != 0) {
      if (resolved != nullptr) {
        error = "cannot bind " + endpoint + ": " + zmq_strerror(errno);
      }
      zmq_close(s);
      return nullptr;
    }
    if (resolved != nullptr) {
      std::array<char, 512> buffer{};
      std::size_t size = buffer.size();
      if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buffer.data(), &size) == 0) {
        *resolved = buffer.data();
      } else {
        *resolved = endpoint;
      }
    }
    return s;
  }

  // Answers every pending subscription with the stream info. Returns true if one arrived.
  bool serve_subscriptions() {
    bool subscribed = false;
    for (;;) {
      std::array<std::byte, 256> buffer{};
      const int n = zmq_recv(pub, buffer.data(), buffer.size(), ZMQ_DONTWAIT);
      if (n < 0) return subscribed;
      if (n >= 1 && buffer[0] == std::byte{1}) {
        subscribed = true;
        if (zmq_send(pub, stream_info.data(), stream_info.size(), ZMQ_DONTWAIT) >= 0) bump(infos);
      }
    }
  }

  void send(const std::byte* data, std::size_t size) noexcept {
    if (zmq_send(pub, data, size, ZMQ_DONTWAIT) >= 0) bump(sent);
  }

  void run_stream() noexcept {
    const SimulationConfig& sim = config.simulation;
    const BenchFaults& faults = config.faults;
    const std::uint64_t seed = sim.seed;
    const std::size_t channels = sim.stored_channels();
    drivers::SampleBlock block;
    std::vector<std::byte> tx, held;
    try {
      block.allocate(sim.block_samples, channels);
      tx.resize(wire::block_message_bytes(sim.block_samples, channels));
      held.resize(tx.size());
    } catch (const std::bad_alloc&) {
      finished.store(true, std::memory_order_release);
      return;
    }
    if (config.wait_for_subscriber) {
      while (!stopping()) {
        zmq_pollitem_t item{pub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 10) > 0 && serve_subscriptions()) break;
      }
    }
    (void)rig.probe->start();
    const std::int64_t disconnect_sample =
        faults.disconnect_at_s >= 0.0 ? std::llround(faults.disconnect_at_s * sim.sample_rate_hz)
                                      : -1;
    bool disconnect_done = false;
    Clock::time_point up_at{};
    std::size_t held_size = 0;
    std::uint64_t sequence = 0;
    while (!stopping()) {
      if (pub == nullptr && Clock::now() >= up_at) {
        pub = bind(ZMQ_XPUB, probe_endpoint, nullptr);  // may fail while the old port closes
        if (pub != nullptr) link_down.store(false, std::memory_order_release);
      }
      if (pub != nullptr) (void)serve_subscriptions();
      const drivers::ReadStatus status = rig.probe->read(block);
      if (status != drivers::ReadStatus::kOk) break;
      const std::uint64_t seq = sequence++;
      bump(generated);
      end_sample.store(block.first_sample + static_cast<std::int64_t>(block.sample_count),
                       std::memory_order_relaxed);
      if (!disconnect_done && disconnect_sample >= 0 &&
          block.first_sample + static_cast<std::int64_t>(block.sample_count) > disconnect_sample) {
        disconnect_done = true;
        if (pub != nullptr) zmq_close(pub);
        pub = nullptr;
        held_size = 0;
        link_down.store(true, std::memory_order_release);
        up_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(faults.disconnect_for_s));
        bump(disconnects);
      }
      if (pub == nullptr) {
        bump(lost);
        continue;
      }
      if (faults.drop.hits(seq, seed, kDrop)) {
        bump(dropped);
        continue;
      }
      wire::BlockHeader h;
      h.probe_id = config.probe_id;
      h.channel_count = static_cast<std::uint32_t>(channels);
      h.sequence = seq;
      h.first_sample = block.first_sample + config.sample_offset;
      h.sample_count = static_cast<std::uint32_t>(block.sample_count);
      h.send_time_ns = now_ns();
      const std::size_t size = wire::encode_block(h, block.samples.data(), tx);
      if (faults.corrupt.hits(seq, seed, kCorrupt)) {
        // Damage the payload after the checksum was computed: bit rot on the way.
        const std::size_t payload = size - wire::kBlockHeaderBytes - wire::kChecksumBytes;
        if (payload > 0) {
          const std::size_t at = wire::kBlockHeaderBytes + mix(seed, kCorruptByte, seq) % payload;
          tx[at] ^= std::byte{0x10};
          bump(corrupted);
        }
      }
      if (held_size == 0 && faults.reorder.hits(seq, seed, kReorder)) {
        std::copy_n(tx.begin(), size, held.begin());
        held_size = size;
        bump(reordered);
        continue;
      }
      send(tx.data(), size);
      if (faults.duplicate.hits(seq, seed, kDuplicate)) {
        send(tx.data(), size);
        bump(duplicated);
      }
      if (held_size > 0) {
        send(held.data(), held_size);
        held_size = 0;
      }
    }
    if (pub != nullptr && !stopping()) {
      if (held_size > 0) send(held.data(), held_size);
      std::array<std::byte, wire::kStreamEndBytes> end_message{};
      wire::StreamEnd end;
      end.probe_id = config.probe_id;
      end.end_sample = end_sample.load(std::memory_order_relaxed) + config.sample_offset;
      end.sequence = sequence;
      const std::size_t size = wire::encode_stream_end(end, end_message);
      (void)zmq_send(pub, end_message.data(), size, ZMQ_DONTWAIT);
    }
    finished.store(true, std::memory_order_release);
    // Stay reachable: late subscribers still learn the stream info (and then its end).
    while (!stopping()) {
      if (pub == nullptr) {
        pub = bind(ZMQ_XPUB, probe_endpoint, nullptr);
        if (pub != nullptr) link_down.store(false, std::memory_order_release);
        if (pub == nullptr) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      zmq_pollitem_t item{pub, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 10) > 0) (void)serve_subscriptions();
    }
    if (pub != nullptr) zmq_close(pub);
    pub = nullptr;
  }

  // The Open Ephys GUI's stream: one message per channel per block, neural channels only.
  void run_stream_openephys() noexcept {
    const SimulationConfig& sim = config.simulation;
    const BenchFaults& faults = config.faults;
    const std::size_t stored = sim.stored_channels();
    const std::size_t neural = sim.channels;
    drivers::SampleBlock block;
    std::vector<std::int16_t> rows;
    try {
      block.allocate(sim.block_samples, stored);
      rows.resize(sim.block_samples * neural);
    } catch (const std::bad_alloc&) {
      finished.store(true, std::memory_order_release);
      return;
    }
    if (config.wait_for_subscriber) {
      while (!stopping() && !openephys->wait_for_subscribers(1, std::chrono::milliseconds(10))) {
      }
    }
    (void)rig.probe->start();
    std::uint64_t sequence = 0;
    while (!stopping()) {
      if (rig.probe->read(block) != drivers::ReadStatus::kOk) break;
      const std::uint64_t seq = sequence++;
      bump(generated);
      end_sample.store(block.first_sample + static_cast<std::int64_t>(block.sample_count),
                       std::memory_order_relaxed);
      if (faults.drop.hits(seq, config.simulation.seed, kDrop)) {
        openephys->skip(block.sample_count);  // the GUI's message numbers move on regardless
        bump(dropped);
        continue;
      }
      for (std::size_t r = 0; r < block.sample_count; ++r) {
        std::copy_n(block.samples.data() + r * stored, neural, rows.data() + r * neural);
      }
      try {
        openephys->publish(std::span<const std::int16_t>(rows.data(), block.sample_count * neural));
        bump(sent);
        if (faults.duplicate.hits(seq, config.simulation.seed, kDuplicate)) {
          openephys->repeat_last();
          bump(sent);
          bump(duplicated);
        }
      } catch (const std::exception&) {
        break;  // the socket failed: the stream ends here, as a GUI that stopped would
      }
    }
    finished.store(true, std::memory_order_release);
    // The GUI's stream has no end message: it just stops; heartbeats are still answered.
    while (!stopping()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  void reply(const std::array<std::byte, 256>& identity, std::size_t identity_size,
             const wire::StimulusReply& r) noexcept {
    std::array<std::byte, wire::kStimulusReplyMaxBytes> out{};
    const std::size_t size = wire::encode_stimulus_reply(r, out);
    if (zmq_send(router, identity.data(), identity_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
      (void)zmq_send(router, out.data(), size, ZMQ_DONTWAIT);
    }
  }

  static void set_reason(wire::StimulusReply& r, const std::string& text) noexcept {
    r.reason_length = std::min(text.size(), r.reason.size());
    std::copy_n(text.data(), r.reason_length, r.reason.data());
  }

  void handle_request(const std::array<std::byte, 256>& identity, std::size_t identity_size,
                      std::span<const std::byte> message) {
    const SimulationConfig& sim = config.simulation;
    const BenchFaults& faults = config.faults;
    wire::MessageType type{};
    if (wire::peek(message, type) != wire::DecodeError::kNone) {
      bump(malformed);
      return;
    }
    if (type == wire::MessageType::kStreamInfoRequest) {
      std::uint64_t request_id = 0;
      if (wire::decode_stream_info_request(message, request_id) != wire::DecodeError::kNone) {
        bump(malformed);
        return;
      }
      if (zmq_send(router, identity.data(), identity_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
        (void)zmq_send(router, stream_info.data(), stream_info.size(), ZMQ_DONTWAIT);
      }
      return;
    }
    std::uint64_t request_id = 0;
    drivers::StimulusCommand command;
    if (type != wire::MessageType::kStimulusCommand ||
        wire::decode_stimulus_command(message, request_id, command) != wire::DecodeError::kNone) {
      bump(malformed);  // its request id cannot be trusted, so there is no one to answer
      return;
    }
    command.earliest_onset_sample -= config.sample_offset;  // to the simulation's clock
    const std::uint64_t index = commands.fetch_add(1, std::memory_order_relaxed);
    if (faults.missing_onsets.hits(index, sim.seed, kMissingOnset)) {
      bump(missing);
      return;
    }
    wire::StimulusReply r;
    r.request_id = request_id;
    r.trial = command.trial;
    if (finished.load(std::memory_order_acquire)) {
      r.status = wire::ReplyStatus::kRefused;
      set_reason(r, "the probe stream has ended");
      bump(refused);
      reply(identity, identity_size, r);
      return;
    }
    if (faults.late_onset_ms > 0.0 && faults.late_onsets.hits(index, sim.seed, kLateOnset)) {
      const std::int64_t natural =
          std::max(command.earliest_onset_sample,
                   rig.subject->generated_until() + rig.subject->onset_latency_samples());
      command.earliest_onset_sample =
          natural + std::llround(faults.late_onset_ms * 1e-3 * sim.sample_rate_hz);
      bump(late);
    }
    const drivers::StimulusOnset onset = rig.stimulator->deliver(command);
    if (!onset.delivered) {
      r.status = wire::ReplyStatus::kRefused;
      set_reason(r, rig.stimulator->last_error());
      bump(refused);
    } else {
      r.status = wire::ReplyStatus::kDelivered;
      r.onset_sample = onset.onset_sample + config.sample_offset;
      bump(delivered);
    }
    reply(identity, identity_size, r);
  }

  void run_stimulus() noexcept {
    std::array<std::byte, 256> identity{};
    std::array<std::byte, 1024> message{};
    while (!stopping()) {
      const bool down = link_down.load(std::memory_order_acquire);
      if (down && router != nullptr) {
        zmq_close(router);
        router = nullptr;
      }
      if (!down && router == nullptr) router = bind(ZMQ_ROUTER, stimulus_endpoint, nullptr);
      if (router == nullptr) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      zmq_pollitem_t item{router, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 5) <= 0) continue;
      const int id_size = zmq_recv(router, identity.data(), identity.size(), ZMQ_DONTWAIT);
      if (id_size < 0) continue;
      int more = 0;
      std::size_t more_size = sizeof more;
      (void)zmq_getsockopt(router, ZMQ_RCVMORE, &more, &more_size);
      if (more == 0) continue;
      const int size = zmq_recv(router, message.data(), message.size(), ZMQ_DONTWAIT);
      bool extra = false;
      while (zmq_getsockopt(router, ZMQ_RCVMORE, &more, &more_size) == 0 && more != 0) {
        extra = true;  // a multi-frame request is not ours; drain it
        std::array<std::byte, 64> discard{};
        if (zmq_recv(router, discard.data(), discard.size(), ZMQ_DONTWAIT) < 0) break;
      }
      if (size < 0) continue;
      if (extra || static_cast<std::size_t>(size) > message.size() ||
          static_cast<std::size_t>(id_size) > identity.size()) {
        bump(malformed);
        continue;
      }
      try {
        handle_request(identity, static_cast<std::size_t>(id_size),
                       std::span<const std::byte>(message.data(), static_cast<std::size_t>(size)));
      } catch (const std::exception&) {
        bump(malformed);  // the stimulator's error text could not be copied; keep serving
      }
    }
    if (router != nullptr) zmq_close(router);
    router = nullptr;
  }
};

BenchServer::BenchServer(BenchServerConfig config) {
  const BenchFaults& f = config.faults;
  for (const std::string& problem :
       {validate_selection("drop", f.drop), validate_selection("duplicate", f.duplicate),
        validate_selection("reorder", f.reorder), validate_selection("corrupt", f.corrupt),
        validate_selection("late onsets", f.late_onsets),
        validate_selection("missing onsets", f.missing_onsets)}) {
    if (!problem.empty()) throw std::invalid_argument("BenchServer: " + problem);
  }
  if (!(f.late_onset_ms >= 0.0)) throw std::invalid_argument("BenchServer: late_onset_ms < 0");
  if (f.disconnect_at_s >= 0.0 && !(f.disconnect_for_s > 0.0)) {
    throw std::invalid_argument("BenchServer: disconnect_for_s must be positive");
  }
  if (config.send_hwm < 0) throw std::invalid_argument("BenchServer: send_hwm < 0");
  if (config.probe_format == ProbeFormat::kOpenEphys &&
      (f.reorder.enabled() || f.corrupt.enabled() || f.disconnect_at_s >= 0.0)) {
    throw std::invalid_argument(
        "BenchServer: the Open Ephys stream injects dropped and duplicated blocks only (reordered "
        "and corrupted blocks and disconnects belong to twinloop's own stream format)");
  }
  if (config.probe_format == ProbeFormat::kOpenEphys &&
      config.probe_endpoint.find('*') != std::string::npos && config.heartbeat_endpoint.empty()) {
    throw std::invalid_argument(
        "BenchServer: an Open Ephys stream on a wildcard port needs an explicit heartbeat "
        "endpoint (a client derives it as the data port + 1)");
  }
  impl_ = std::make_unique<Impl>(std::move(config));
  wire::StreamInfo info;
  info.probe_id = impl_->config.probe_id;
  info.block_samples = static_cast<std::uint32_t>(impl_->config.simulation.block_samples);
  info.probe = impl_->rig.probe->info();
  impl_->stream_info = wire::encode_stream_info(info);
}

BenchServer::~BenchServer() {
  stop();
}

bool BenchServer::start() {
  Impl& m = *impl_;
  if (m.context != nullptr) return true;
  m.context = zmq_ctx_new();
  if (m.context == nullptr) {
    m.error = std::string("cannot create a ZeroMQ context: ") + zmq_strerror(errno);
    return false;
  }
  const bool openephys = m.config.probe_format == ProbeFormat::kOpenEphys;
  if (openephys) {
    drivers::OpenEphysZmqEmulatorConfig oe;
    oe.data_endpoint = m.config.probe_endpoint;
    oe.heartbeat_endpoint = m.config.heartbeat_endpoint;
    oe.stream = m.config.simulation.name;
    oe.channels = m.config.simulation.channels;
    oe.sample_rate_hz = m.config.simulation.sample_rate_hz;
    oe.first_sample = m.config.sample_offset;
    try {
      m.openephys = std::make_unique<drivers::OpenEphysZmqEmulator>(oe);
      m.probe_endpoint = m.openephys->data_endpoint();
    } catch (const std::exception& e) {
      m.error = e.what();
      zmq_ctx_term(m.context);
      m.context = nullptr;
      return false;
    }
  } else {
    m.pub = m.bind(ZMQ_XPUB, m.config.probe_endpoint, &m.probe_endpoint);
  }
  m.router = m.pub == nullptr && !openephys
                 ? nullptr
                 : m.bind(ZMQ_ROUTER, m.config.stimulus_endpoint, &m.stimulus_endpoint);
  if ((m.pub == nullptr && !openephys) || m.router == nullptr) {
    m.openephys.reset();
    if (m.pub != nullptr) zmq_close(m.pub);
    m.pub = nullptr;
    zmq_ctx_term(m.context);
    m.context = nullptr;
    return false;
  }
  m.stop_requested.store(false);
  m.stream_thread = std::thread([&m, openephys] {
    if (openephys) {
      m.run_stream_openephys();
    } else {
      m.run_stream();
    }
  });
  m.stimulus_thread = std::thread([&m] { m.run_stimulus(); });
  return true;
}

void BenchServer::stop() noexcept {
  Impl& m = *impl_;
  if (m.context == nullptr) return;
  m.stop_requested.store(true, std::memory_order_release);
  if (m.stream_thread.joinable()) m.stream_thread.join();
  if (m.stimulus_thread.joinable()) m.stimulus_thread.join();
  m.openephys.reset();
  zmq_ctx_term(m.context);
  m.context = nullptr;
}

bool BenchServer::wait_finished(std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (!impl_->finished.load(std::memory_order_acquire)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

const std::string& BenchServer::probe_endpoint() const noexcept {
  return impl_->probe_endpoint;
}
const std::string& BenchServer::heartbeat_endpoint() const noexcept {
  static const std::string none;
  return impl_->openephys ? impl_->openephys->heartbeat_endpoint() : none;
}
const std::string& BenchServer::stimulus_endpoint() const noexcept {
  return impl_->stimulus_endpoint;
}

BenchCounters BenchServer::counters() const noexcept {
  const Impl& m = *impl_;
  constexpr auto r = std::memory_order_relaxed;
  BenchCounters c;
  c.blocks_generated = m.generated.load(r);
  c.blocks_sent = m.sent.load(r);
  c.dropped = m.dropped.load(r);
  c.duplicated = m.duplicated.load(r);
  c.reordered = m.reordered.load(r);
  c.corrupted = m.corrupted.load(r);
  c.lost_while_disconnected = m.lost.load(r);
  c.disconnects = m.disconnects.load(r);
  c.stream_infos_sent = m.infos.load(r);
  c.commands = m.commands.load(r);
  c.delivered = m.delivered.load(r);
  c.late = m.late.load(r);
  c.missing = m.missing.load(r);
  c.refused = m.refused.load(r);
  c.malformed_requests = m.malformed.load(r);
  c.end_sample = m.end_sample.load(r);
  c.stream_finished = m.finished.load(std::memory_order_acquire);
  return c;
}

SimulatedRig& BenchServer::rig() noexcept {
  return impl_->rig;
}
const std::string& BenchServer::error() const noexcept {
  return impl_->error;
}

}  // namespace twinloop::hil

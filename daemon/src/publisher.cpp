// The monitoring publisher: bounded lock-free queues in front of one sender thread that owns the
// ZeroMQ socket (ZeroMQ sockets are not thread-safe, and the sender must be the only one that
// may wait on anything). Spikes travel as a batch descriptor plus its records in two
// preallocated single-producer rings; the other topics as heap items through fixed-capacity
// lock-free queues, serialised to JSON on the sender thread.
#include "twinloop/daemon/publisher.hpp"

#include <sys/resource.h>
#include <zmq.h>

#include <algorithm>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <chrono>
#include <cstring>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <variant>

namespace twinloop::daemon {

const char* topic_name(Topic topic) noexcept {
  switch (topic) {
    case Topic::kSpikes:
      return "spikes";
    case Topic::kTrial:
      return "trial";
    case Topic::kPosterior:
      return "posterior";
    case Topic::kHealth:
      return "health";
    case Topic::kSession:
      return "session";
  }
  return "?";
}

const char* trial_stage_name(TrialStage stage) noexcept {
  switch (stage) {
    case TrialStage::kDesigned:
      return "designed";
    case TrialStage::kPreregistered:
      return "preregistered";
    case TrialStage::kDelivered:
      return "delivered";
    case TrialStage::kOutcome:
      return "outcome";
    case TrialStage::kScored:
      return "scored";
    case TrialStage::kFlagged:
      return "flagged";
    case TrialStage::kAborted:
      return "aborted";
  }
  return "?";
}

namespace {

constexpr std::array<std::uint8_t, 4> kMagic{'T', 'W', 'M', 'N'};
constexpr std::uint16_t kEncodingJson = 1;
constexpr std::uint16_t kEncodingSpikes = 2;
constexpr std::uint32_t kSpikeFlagContinued = 1;
constexpr std::size_t kSpikeBodyHeaderBytes = 24;
// The sender's most items per topic per pass, so one busy topic cannot starve the others.
constexpr int kMaxPerPass = 256;

std::size_t index(Topic t) {
  return static_cast<std::size_t>(t);
}

std::int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

template <typename T>
void put_le(std::uint8_t* out, T value) {
  static_assert(std::is_integral_v<T>);
  using U = std::make_unsigned_t<T>;
  const U u = static_cast<U>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<std::uint8_t>(u >> (8 * i));
}

void put_header(std::uint8_t* out, std::uint16_t encoding, std::uint64_t sequence) {
  std::memcpy(out, kMagic.data(), 4);
  put_le(out + 4, kMonitorWireVersion);
  put_le(out + 6, encoding);
  put_le(out + 8, sequence);
  put_le(out + 16, unix_ns());
}

struct SpikeBatch {
  std::int64_t first_sample = 0;
  std::int64_t end_sample = 0;
  std::uint64_t sequence = 0;
  std::uint32_t count = 0;
  std::uint32_t flags = 0;
};

struct PosteriorMessage {
  std::uint64_t trial = 0;
  std::vector<std::string> names;
  std::vector<double> probabilities;
};

struct Pending {
  Topic topic;
  std::uint64_t sequence;
  std::variant<TrialEvent, PosteriorMessage, HealthReport, SessionInfo> message;
};

struct AtomicTopic {
  std::atomic<std::uint64_t> published{0}, queue_dropped{0}, hwm_dropped{0}, depth{0};
  std::atomic<std::uint64_t> next_sequence{0};
};

nlohmann::json to_json(const TrialEvent& e) {
  nlohmann::json stimulus = nlohmann::json::object();
  for (const auto& [name, value] : e.stimulus) stimulus[name] = value;
  return {{"trial", e.trial},
          {"stage", trial_stage_name(e.stage)},
          {"candidate", e.candidate},
          {"validation", e.validation},
          {"strategy", e.strategy},
          {"stimulus", std::move(stimulus)},
          {"onset_sample", e.onset_sample},
          {"window_start", e.window_start},
          {"window_end", e.window_end},
          {"counts",
           {{"total", e.total_count},
            {"units", e.units},
            {"max", e.max_count},
            {"max_unit", e.max_count_unit}}},
          {"note", e.note}};
}

nlohmann::json to_json(const PosteriorMessage& p) {
  nlohmann::json hyps = nlohmann::json::array();
  for (std::size_t i = 0; i < p.names.size(); ++i)
    hyps.push_back({{"name", p.names[i]}, {"probability", p.probabilities[i]}});
  return {{"trial", p.trial}, {"hypotheses", std::move(hyps)}};
}

nlohmann::json to_json(const SessionInfo& s) {
  return {{"name", s.name},
          {"protocol", s.protocol},
          {"rig", s.rig},
          {"designer", s.designer},
          {"state", s.state},
          {"hypotheses", s.hypotheses},
          {"sample_rate_hz", s.sample_rate_hz},
          {"channels", s.channels},
          {"trials", s.trials}};
}

}  // namespace

struct Publisher::Impl {
  explicit Impl(const PublisherOptions& o)
      : options(o),
        batches(std::max<std::size_t>(o.spike_batches, 1)),
        records(std::max<std::size_t>(o.spike_records, 1)) {
    options.max_spikes_per_message = std::max<std::size_t>(options.max_spikes_per_message, 1);
    for (auto& q : json) q = std::make_unique<boost::lockfree::queue<Pending*>>(o.json_messages);
    send_buffer.resize(kMonitorHeaderBytes + kSpikeBodyHeaderBytes +
                       options.max_spikes_per_message * kMonitorSpikeRecordBytes);
    record_buffer.resize(options.max_spikes_per_message);
  }

  ~Impl() {
    for (auto& q : json) {
      Pending* p = nullptr;
      while (q && q->pop(p)) delete p;
    }
  }

  void bind() {
    context = zmq_ctx_new();
    if (context == nullptr) throw std::runtime_error("monitor: cannot create a ZeroMQ context");
    socket = zmq_socket(context, ZMQ_XPUB);
    if (socket == nullptr) fail("cannot create the socket");
    const int hwm = options.send_hwm;
    const int linger = 100;
    const int nodrop = options.count_hwm_drops ? 1 : 0;
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_XPUB_NODROP, &nodrop, sizeof nodrop);
    if (zmq_bind(socket, options.endpoint.c_str()) != 0)
      fail("cannot bind " + options.endpoint + ": " + zmq_strerror(zmq_errno()));
    char last[256] = {};
    std::size_t size = sizeof last;
    zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, last, &size);
    endpoint = last;
  }

  [[noreturn]] void fail(const std::string& what) {
    if (socket != nullptr) zmq_close(socket);
    if (context != nullptr) zmq_ctx_term(context);
    socket = context = nullptr;
    throw std::runtime_error("monitor: " + what);
  }

  bool push(Topic topic, Pending* item) noexcept {
    AtomicTopic& t = topics[index(topic)];
    if (!json[index(topic)]->bounded_push(item)) {
      delete item;
      t.queue_dropped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    t.depth.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  template <typename Message>
  bool enqueue(Topic topic, Message&& message) noexcept {
    AtomicTopic& t = topics[index(topic)];
    const std::uint64_t sequence = t.next_sequence.fetch_add(1, std::memory_order_relaxed);
    try {
      return push(topic, new Pending{topic, sequence, std::forward<Message>(message)});
    } catch (...) {  // bad_alloc, or a copy that threw: the message is lost, and counted
      t.queue_dropped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }

  // Sends [topic, payload]; false when the socket refused (counted by the caller).
  bool send(Topic topic, const void* payload, std::size_t size) {
    const char* name = topic_name(topic);
    if (zmq_send(socket, name, std::strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return false;
    // Once the first frame is accepted libzmq takes the rest of the message whole.
    return zmq_send(socket, payload, size, ZMQ_DONTWAIT) >= 0;
  }

  void account(Topic topic, bool sent) {
    AtomicTopic& t = topics[index(topic)];
    (sent ? t.published : t.hwm_dropped).fetch_add(1, std::memory_order_relaxed);
  }

  bool send_json(Topic topic, std::uint64_t sequence, const nlohmann::json& body) {
    const std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    json_buffer.resize(kMonitorHeaderBytes + text.size());
    put_header(json_buffer.data(), kEncodingJson, sequence);
    std::memcpy(json_buffer.data() + kMonitorHeaderBytes, text.data(), text.size());
    const bool sent = send(topic, json_buffer.data(), json_buffer.size());
    account(topic, sent);
    return sent;
  }

  bool send_spikes() {
    SpikeBatch batch;
    if (!batches.pop(batch)) return false;
    // The producer pushed the records before their descriptor, so they are all there.
    const std::size_t got = records.pop(record_buffer.data(), batch.count);
    std::uint8_t* out = send_buffer.data();
    put_header(out, kEncodingSpikes, batch.sequence);
    std::uint8_t* body = out + kMonitorHeaderBytes;
    put_le(body, batch.first_sample);
    put_le(body + 8, batch.end_sample);
    put_le(body + 16, static_cast<std::uint32_t>(got));
    put_le(body + 20, batch.flags);
    std::uint8_t* rec = body + kSpikeBodyHeaderBytes;
    for (std::size_t i = 0; i < got; ++i, rec += kMonitorSpikeRecordBytes) {
      const acquisition::SpikeEvent& e = record_buffer[i];
      std::uint32_t amplitude_bits = 0;
      std::memcpy(&amplitude_bits, &e.amplitude_uv, 4);
      put_le(rec, e.sample);
      put_le(rec + 8, e.channel);
      put_le(rec + 12, amplitude_bits);
    }
    const std::size_t size = static_cast<std::size_t>(rec - out);
    const bool sent = send(Topic::kSpikes, out, size);
    account(Topic::kSpikes, sent);
    (sent ? spikes_published : spikes_dropped).fetch_add(got, std::memory_order_relaxed);
    topics[index(Topic::kSpikes)].depth.fetch_sub(1, std::memory_order_relaxed);
    return true;
  }

  nlohmann::json publisher_json() {
    nlohmann::json topics_json = nlohmann::json::object();
    for (std::size_t i = 0; i < kTopicCount; ++i) {
      const AtomicTopic& t = topics[i];
      const std::size_t capacity =
          i == index(Topic::kSpikes) ? options.spike_batches : options.json_messages;
      topics_json[topic_name(static_cast<Topic>(i))] = {{"published", t.published.load()},
                                                        {"queue_dropped", t.queue_dropped.load()},
                                                        {"hwm_dropped", t.hwm_dropped.load()},
                                                        {"queue_depth", t.depth.load()},
                                                        {"queue_capacity", capacity}};
    }
    return {{"topics", std::move(topics_json)},
            {"spikes_published", spikes_published.load()},
            {"spikes_dropped", spikes_dropped.load()},
            {"send_hwm", options.send_hwm},
            {"count_hwm_drops", options.count_hwm_drops}};
  }

  double measure_cpu() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                       1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
    const auto now = std::chrono::steady_clock::now();
    double percent = 0.0;
    if (cpu_mark) {
      const double wall = std::chrono::duration<double>(now - cpu_mark->first).count();
      if (wall > 0) percent = 100.0 * (cpu - cpu_mark->second) / wall;
    }
    cpu_mark = std::make_pair(now, cpu);
    return percent;
  }

  nlohmann::json to_json_health(const HealthReport& h) {
    return {
        {"uptime_s", h.uptime_s},
        {"samples", h.samples},
        {"dropped_samples", h.dropped_samples},
        {"event_queue",
         {{"depth", h.event_queue_depth},
          {"capacity", h.event_queue_capacity},
          {"dropped", h.event_queue_dropped}}},
        {"block_latency_ms", {{"p50", h.block_latency_p50_ms}, {"p99", h.block_latency_p99_ms}}},
        {"designer_latency_ms",
         {{"last", h.designer_latency_ms}, {"p99", h.designer_latency_p99_ms}}},
        {"deadline_misses", h.deadline_misses},
        {"cpu_percent", h.cpu_percent < 0 ? measure_cpu() : h.cpu_percent},
        {"publisher", publisher_json()}};
  }

  bool send_one_json(Topic topic) {
    Pending* raw = nullptr;
    if (!json[index(topic)]->pop(raw)) return false;
    std::unique_ptr<Pending> item(raw);
    topics[index(topic)].depth.fetch_sub(1, std::memory_order_relaxed);
    nlohmann::json body;
    if (auto* e = std::get_if<TrialEvent>(&item->message)) body = to_json(*e);
    if (auto* p = std::get_if<PosteriorMessage>(&item->message)) body = to_json(*p);
    if (auto* h = std::get_if<HealthReport>(&item->message)) body = to_json_health(*h);
    if (auto* s = std::get_if<SessionInfo>(&item->message)) {
      body = to_json(*s);
      last_session = body;
      last_session_sent = std::chrono::steady_clock::now();
    }
    send_json(topic, item->sequence, body);
    return true;
  }

  // One pass over every queue; true when it found anything to do.
  bool pass() {
    bool busy = false;
    for (int i = 0; i < kMaxPerPass && send_spikes(); ++i) busy = true;
    for (Topic topic : {Topic::kSession, Topic::kTrial, Topic::kPosterior, Topic::kHealth})
      for (int i = 0; i < kMaxPerPass && send_one_json(topic); ++i) busy = true;
    // Subscription frames arrive on an XPUB; read them so they never pile up.
    char frame[256];
    while (zmq_recv(socket, frame, sizeof frame, ZMQ_DONTWAIT) >= 0) busy = true;
    if (last_session && std::chrono::steady_clock::now() - last_session_sent >=
                            std::chrono::duration<double>(options.session_repeat_s)) {
      // A repeat takes a fresh sequence number: the stream stays gap-free for clients.
      const std::uint64_t sequence =
          topics[index(Topic::kSession)].next_sequence.fetch_add(1, std::memory_order_relaxed);
      send_json(Topic::kSession, sequence, *last_session);
      last_session_sent = std::chrono::steady_clock::now();
    }
    return busy;
  }

  void run() {
    while (!stopping.load(std::memory_order_acquire)) {
      bool busy = false;
      try {
        busy = pass();
      } catch (const std::exception&) {
        // A message that cannot be serialised is lost, not the stream; the pass is retried.
        busy = true;
      }
      if (!busy) std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    try {
      while (pass()) {
      }
    } catch (const std::exception&) {
    }
  }

  PublisherOptions options;
  void* context = nullptr;
  void* socket = nullptr;
  std::string endpoint;
  std::array<AtomicTopic, kTopicCount> topics;
  std::atomic<std::uint64_t> spikes_published{0}, spikes_dropped{0};
  std::atomic_flag spike_producer = ATOMIC_FLAG_INIT;
  boost::lockfree::spsc_queue<SpikeBatch> batches;
  boost::lockfree::spsc_queue<acquisition::SpikeEvent> records;
  std::array<std::unique_ptr<boost::lockfree::queue<Pending*>>, kTopicCount> json;
  std::vector<std::uint8_t> send_buffer, json_buffer;
  std::vector<acquisition::SpikeEvent> record_buffer;
  std::optional<nlohmann::json> last_session;
  std::chrono::steady_clock::time_point last_session_sent;
  std::optional<std::pair<std::chrono::steady_clock::time_point, double>> cpu_mark;
  std::atomic<bool> stopping{false};
  std::thread sender;
};

Publisher::Publisher(const PublisherOptions& options) : impl_(std::make_unique<Impl>(options)) {
  impl_->bind();
  endpoint_ = impl_->endpoint;
  impl_->sender = std::thread([impl = impl_.get()] { impl->run(); });
}

Publisher::~Publisher() {
  impl_->stopping.store(true, std::memory_order_release);
  if (impl_->sender.joinable()) impl_->sender.join();
  zmq_close(impl_->socket);
  zmq_ctx_term(impl_->context);
}

bool Publisher::publish_spikes(std::int64_t first_sample, std::int64_t end_sample,
                               std::span<const acquisition::SpikeEvent> events) noexcept {
  Impl& im = *impl_;
  AtomicTopic& t = im.topics[index(Topic::kSpikes)];
  const std::size_t per = im.options.max_spikes_per_message;
  const std::size_t messages = events.empty() ? 1 : (events.size() + per - 1) / per;
  if (im.spike_producer.test_and_set(std::memory_order_acquire)) {
    // Another thread is mid-call; the rings take one producer, and waiting is not allowed.
    t.next_sequence.fetch_add(messages, std::memory_order_relaxed);
    t.queue_dropped.fetch_add(messages, std::memory_order_relaxed);
    im.spikes_dropped.fetch_add(events.size(), std::memory_order_relaxed);
    return false;
  }
  bool all = true;
  for (std::size_t m = 0; m < messages; ++m) {
    const std::span<const acquisition::SpikeEvent> chunk =
        events.subspan(m * per, std::min(per, events.size() - std::min(events.size(), m * per)));
    SpikeBatch batch{
        first_sample, end_sample, t.next_sequence.fetch_add(1, std::memory_order_relaxed),
        static_cast<std::uint32_t>(chunk.size()), m + 1 < messages ? kSpikeFlagContinued : 0u};
    if (im.batches.write_available() == 0 || im.records.write_available() < chunk.size()) {
      t.queue_dropped.fetch_add(1, std::memory_order_relaxed);
      im.spikes_dropped.fetch_add(chunk.size(), std::memory_order_relaxed);
      all = false;
      continue;
    }
    im.records.push(chunk.data(), chunk.size());
    im.batches.push(batch);
    t.depth.fetch_add(1, std::memory_order_relaxed);
  }
  im.spike_producer.clear(std::memory_order_release);
  return all;
}

bool Publisher::publish_trial_event(const TrialEvent& event) noexcept {
  return impl_->enqueue(Topic::kTrial, event);
}

bool Publisher::publish_posterior(std::uint64_t trial, std::span<const std::string> names,
                                  std::span<const double> probabilities) noexcept {
  try {
    const std::size_t n = std::min(names.size(), probabilities.size());
    return impl_->enqueue(Topic::kPosterior,
                          PosteriorMessage{trial,
                                           {names.begin(), names.begin() + n},
                                           {probabilities.begin(), probabilities.begin() + n}});
  } catch (...) {
    impl_->topics[index(Topic::kPosterior)].next_sequence.fetch_add(1);
    impl_->topics[index(Topic::kPosterior)].queue_dropped.fetch_add(1);
    return false;
  }
}

bool Publisher::publish_health(const HealthReport& report) noexcept {
  return impl_->enqueue(Topic::kHealth, report);
}

bool Publisher::publish_session(const SessionInfo& info) noexcept {
  return impl_->enqueue(Topic::kSession, info);
}

PublisherCounters Publisher::counters() const noexcept {
  PublisherCounters out;
  for (std::size_t i = 0; i < kTopicCount; ++i) {
    const AtomicTopic& t = impl_->topics[i];
    out.topics[i] = {t.published.load(std::memory_order_relaxed),
                     t.queue_dropped.load(std::memory_order_relaxed),
                     t.hwm_dropped.load(std::memory_order_relaxed),
                     t.depth.load(std::memory_order_relaxed)};
  }
  out.spikes_published = impl_->spikes_published.load(std::memory_order_relaxed);
  out.spikes_dropped = impl_->spikes_dropped.load(std::memory_order_relaxed);
  return out;
}

}  // namespace twinloop::daemon

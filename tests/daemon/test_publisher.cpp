// The monitoring stream: every topic reaches a subscriber with the fields docs/monitoring.md
// documents and per-topic sequence numbers; a subscriber that never reads cannot make a
// publish_* call wait, and what is lost is counted; the spikes path allocates nothing; the
// terminal monitor and the Python example decode a live stream.
//
// This file includes tests/support/allocation_counter.hpp, which replaces the global operator
// new of the whole test_daemon executable; no other file of test_daemon may include it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/monitor.hpp"
#include "twinloop/daemon/publisher.hpp"

namespace {

using namespace twinloop::daemon;
using twinloop::acquisition::SpikeEvent;
using Clock = std::chrono::steady_clock;

std::uint64_t le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint32_t le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
std::uint16_t le16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}

struct Message {
  std::string topic;
  std::uint16_t version = 0, encoding = 0;
  std::uint64_t sequence = 0;
  std::int64_t send_ns = 0;
  std::vector<std::uint8_t> body;
};

// A SUB socket on its own context; closes on destruction.
class Subscriber {
 public:
  explicit Subscriber(const std::string& endpoint, int rcvhwm = 10000) {
    context_ = zmq_ctx_new();
    socket_ = zmq_socket(context_, ZMQ_SUB);
    const int linger = 0;
    zmq_setsockopt(socket_, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket_, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    zmq_setsockopt(socket_, ZMQ_SUBSCRIBE, "", 0);
    EXPECT_EQ(zmq_connect(socket_, endpoint.c_str()), 0);
  }
  ~Subscriber() {
    zmq_close(socket_);
    zmq_ctx_term(context_);
  }
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;

  std::optional<Message> receive(int timeout_ms) {
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0) return std::nullopt;
    std::array<std::vector<std::uint8_t>, 2> frames;
    for (std::size_t i = 0; i < 2; ++i) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, socket_, 0) < 0) return std::nullopt;
      const auto* data = static_cast<const std::uint8_t*>(zmq_msg_data(&msg));
      frames[i].assign(data, data + zmq_msg_size(&msg));
      const bool more = zmq_msg_more(&msg) != 0;
      zmq_msg_close(&msg);
      EXPECT_EQ(more, i == 0) << "a message is exactly two frames";
    }
    Message m;
    m.topic.assign(frames[0].begin(), frames[0].end());
    const std::vector<std::uint8_t>& p = frames[1];
    EXPECT_GE(p.size(), kMonitorHeaderBytes);
    if (p.size() < kMonitorHeaderBytes) return std::nullopt;
    EXPECT_EQ(std::memcmp(p.data(), "TWMN", 4), 0);
    m.version = le16(p.data() + 4);
    m.encoding = le16(p.data() + 6);
    m.sequence = le64(p.data() + 8);
    m.send_ns = static_cast<std::int64_t>(le64(p.data() + 16));
    m.body.assign(p.begin() + kMonitorHeaderBytes, p.end());
    return m;
  }

 private:
  void* context_ = nullptr;
  void* socket_ = nullptr;
};

SessionInfo session_info() {
  SessionInfo s;
  s.name = "bench-session-42";
  s.protocol = "orientation";
  s.rig = "sim";
  s.designer = "discriminate";
  s.state = "running";
  s.hypotheses = {"tuned", "untuned"};
  s.sample_rate_hz = 30000.0;
  s.channels = 384;
  s.trials = 7;
  return s;
}

TrialEvent trial_event(std::uint64_t trial) {
  TrialEvent e;
  e.trial = trial;
  e.stage = TrialStage::kOutcome;
  e.candidate = 3;
  e.validation = true;
  e.strategy = "discriminate";
  e.stimulus = {{"direction_deg", 90.0}, {"contrast", 0.5}};
  e.onset_sample = 123456;
  e.window_start = 124000;
  e.window_end = 130000;
  e.total_count = 321;
  e.units = 64;
  e.max_count = 17;
  e.max_count_unit = 5;
  e.note = "";
  return e;
}

const std::vector<std::string> kNames{"tuned", "untuned"};
const std::vector<double> kProbabilities{0.75, 0.25};
const std::vector<SpikeEvent> kSpikes{{1000, 3, -80.5f}, {1010, 7, -120.0f}, {2999, 3, -60.25f}};

void publish_all(Publisher& pub, std::uint64_t trial) {
  pub.publish_session(session_info());
  pub.publish_trial_event(trial_event(trial));
  pub.publish_posterior(trial, kNames, kProbabilities);
  HealthReport h;
  h.uptime_s = 12.5;
  h.samples = 375000;
  h.event_queue_capacity = 65536;
  h.block_latency_p50_ms = 0.4;
  h.block_latency_p99_ms = 1.1;
  h.designer_latency_ms = 3.0;
  pub.publish_health(h);
  pub.publish_spikes(0, 3000, kSpikes);
}

nlohmann::json body_json(const Message& m) {
  EXPECT_EQ(m.encoding, 1) << m.topic;
  return nlohmann::json::parse(m.body.begin(), m.body.end());
}

void expect_keys(const nlohmann::json& j, std::initializer_list<const char*> keys,
                 const std::string& where) {
  for (const char* k : keys) EXPECT_TRUE(j.contains(k)) << where << " lacks " << k;
}

TEST(Publisher, ResolvesAnEphemeralPortAndRefusesABadEndpoint) {
  Publisher pub({.endpoint = "tcp://127.0.0.1:*"});
  EXPECT_EQ(pub.endpoint().rfind("tcp://127.0.0.1:", 0), 0u) << pub.endpoint();
  EXPECT_EQ(pub.endpoint().find('*'), std::string::npos);
  EXPECT_THROW(Publisher({.endpoint = "nonsense://x"}), std::runtime_error);
}

TEST(Publisher, SubscriberReceivesEveryTopicWithDocumentedFieldsAndSequences) {
  Publisher pub({.endpoint = "tcp://127.0.0.1:*"});
  Subscriber sub(pub.endpoint());
  std::map<std::string, Message> first;
  std::map<std::string, std::vector<std::uint64_t>> sequences;
  // PUB/SUB slow joiner: keep publishing until every topic has arrived once.
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  std::uint64_t trial = 0;
  while (first.size() < kTopicCount && Clock::now() < deadline) {
    publish_all(pub, trial++);
    while (auto m = sub.receive(10)) first.emplace(m->topic, *m);
  }
  ASSERT_EQ(first.size(), kTopicCount);
  // A fast subscriber now sees every message of a burst, in order, without gaps.
  for (int i = 0; i < 20; ++i) publish_all(pub, trial++);
  std::map<std::string, std::size_t> burst;
  const auto burst_deadline = Clock::now() + std::chrono::seconds(2);
  while (burst["trial"] < 20 && Clock::now() < burst_deadline)
    if (auto m = sub.receive(20)) {
      sequences[m->topic].push_back(m->sequence);
      ++burst[m->topic];
    }
  EXPECT_GE(burst["trial"], 20u);
  for (const auto& [topic, seqs] : sequences)
    for (std::size_t i = 1; i < seqs.size(); ++i)
      EXPECT_EQ(seqs[i], seqs[i - 1] + 1) << topic << " sequence has a gap or runs backwards";

  for (const auto& [topic, m] : first) {
    EXPECT_EQ(m.version, kMonitorWireVersion) << topic;
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    EXPECT_NEAR(static_cast<double>(m.send_ns), static_cast<double>(now_ns), 60e9) << topic;
  }

  const Message& spikes = first.at("spikes");
  ASSERT_EQ(spikes.encoding, 2);
  ASSERT_EQ(spikes.body.size(), 24 + kSpikes.size() * kMonitorSpikeRecordBytes);
  EXPECT_EQ(le64(spikes.body.data()), 0u);
  EXPECT_EQ(le64(spikes.body.data() + 8), 3000u);
  EXPECT_EQ(le32(spikes.body.data() + 16), kSpikes.size());
  for (std::size_t i = 0; i < kSpikes.size(); ++i) {
    const std::uint8_t* r = spikes.body.data() + 24 + i * kMonitorSpikeRecordBytes;
    float amplitude = 0;
    std::memcpy(&amplitude, r + 12, 4);
    EXPECT_EQ(static_cast<std::int64_t>(le64(r)), kSpikes[i].sample);
    EXPECT_EQ(le32(r + 8), kSpikes[i].channel);
    EXPECT_EQ(amplitude, kSpikes[i].amplitude_uv);
  }

  const nlohmann::json t = body_json(first.at("trial"));
  expect_keys(t,
              {"trial", "stage", "candidate", "validation", "strategy", "stimulus", "onset_sample",
               "window_start", "window_end", "counts", "note"},
              "trial");
  EXPECT_EQ(t["stage"], "outcome");
  EXPECT_EQ(t["stimulus"]["direction_deg"], 90.0);
  EXPECT_EQ(t["counts"]["total"], 321);
  EXPECT_EQ(t["counts"]["max_unit"], 5);

  const nlohmann::json p = body_json(first.at("posterior"));
  ASSERT_EQ(p["hypotheses"].size(), 2u);
  EXPECT_EQ(p["hypotheses"][0]["name"], "tuned");
  EXPECT_DOUBLE_EQ(p["hypotheses"][0]["probability"].get<double>(), 0.75);

  const nlohmann::json h = body_json(first.at("health"));
  expect_keys(h,
              {"uptime_s", "samples", "dropped_samples", "event_queue", "block_latency_ms",
               "designer_latency_ms", "deadline_misses", "cpu_percent", "publisher"},
              "health");
  EXPECT_DOUBLE_EQ(h["block_latency_ms"]["p99"].get<double>(), 1.1);
  EXPECT_GE(h["cpu_percent"].get<double>(), 0.0) << "the publisher measures CPU when asked";
  for (const char* topic : {"spikes", "trial", "posterior", "health", "session"})
    expect_keys(h["publisher"]["topics"][topic],
                {"published", "queue_dropped", "hwm_dropped", "queue_depth", "queue_capacity"},
                std::string("health.publisher.topics.") + topic);

  const nlohmann::json s = body_json(first.at("session"));
  EXPECT_EQ(s["name"], "bench-session-42");
  EXPECT_EQ(s["hypotheses"], nlohmann::json::array({"tuned", "untuned"}));
  EXPECT_EQ(s["sample_rate_hz"], 30000.0);
}

// A subscriber that connects, proves it is attached, then never reads again.
// Parameter: whether the publisher counts drops at a full subscriber pipe (count_hwm_drops).
class NeverReadingSubscriber : public ::testing::TestWithParam<bool> {};

TEST_P(NeverReadingSubscriber, NeverBlocksPublishAndDropsAreCounted) {
  const bool count_hwm_drops = GetParam();
  Publisher pub({.endpoint = "tcp://127.0.0.1:*",
                 .send_hwm = 10,
                 .count_hwm_drops = count_hwm_drops,
                 .spike_batches = 64,
                 .spike_records = 4096});
  Subscriber stalled(pub.endpoint(), 10);
  std::uint64_t attempts = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  bool attached = false;
  while (!attached && Clock::now() < deadline) {
    pub.publish_spikes(0, 1, kSpikes);
    ++attempts;
    attached = stalled.receive(5).has_value();
  }
  ASSERT_TRUE(attached);
  // 100k messages of 64 spikes (~100 MB) cannot all fit the pipes and socket buffers of a
  // subscriber that does not read; each call must still come straight back.
  std::vector<SpikeEvent> batch(64, SpikeEvent{5, 1, -50.0f});
  const int kCalls = 100000;
  for (int i = 0; i < kCalls; ++i) pub.publish_spikes(i * 30, i * 30 + 30, batch);
  attempts += kCalls;
  SUCCEED() << "100k publish_spikes calls returned";
  // Every attempt ends up published or dropped, once the sender has emptied its queue.
  PublisherCounters c;
  const auto settle = Clock::now() + std::chrono::seconds(2);
  do {
    c = pub.counters();
    if (c[Topic::kSpikes].queue_depth == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  } while (Clock::now() < settle);
  const TopicCounters& s = c[Topic::kSpikes];
  EXPECT_EQ(s.queue_depth, 0u);
  EXPECT_EQ(s.published + s.dropped(), attempts);
  EXPECT_GT(s.dropped(), 0u);
  EXPECT_GT(c.spikes_dropped, 0u);
  if (count_hwm_drops) {
    EXPECT_GT(s.hwm_dropped, 0u) << "a full subscriber pipe is counted";
  }
}

INSTANTIATE_TEST_SUITE_P(Publisher, NeverReadingSubscriber, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "CountingHwmDrops" : "PerSubscriberDrops";
                         });

TEST(Publisher, PublishSpikesDoesNotAllocate) {
  Publisher pub({.endpoint = "tcp://127.0.0.1:*",
                 .spike_batches = 16,
                 .spike_records = 1024,
                 .max_spikes_per_message = 100});
  std::vector<SpikeEvent> batch(250, SpikeEvent{7, 2, -70.0f});  // split in three messages
  namespace ts = twinloop::test_support;
  const std::size_t before = ts::allocations.load();
  ts::count_allocations_on_this_thread = true;
  // Enough calls to run the rings full, so the drop path is exercised too.
  for (int i = 0; i < 2000; ++i) (void)pub.publish_spikes(i * 10, i * 10 + 10, batch);
  (void)pub.publish_spikes(0, 0, {});
  ts::count_allocations_on_this_thread = false;
  EXPECT_EQ(ts::allocations.load() - before, 0u);
  EXPECT_GT(pub.counters()[Topic::kSpikes].queue_dropped, 0u);
}

// Publishes every topic every few ms on its own thread until destroyed.
class LiveDaemon {
 public:
  LiveDaemon() : pub_({.endpoint = "tcp://127.0.0.1:*"}) {
    thread_ = std::thread([this] {
      std::uint64_t trial = 0;
      while (!stop_.load()) {
        publish_all(pub_, trial++);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  ~LiveDaemon() {
    stop_ = true;
    thread_.join();
  }
  LiveDaemon(const LiveDaemon&) = delete;
  LiveDaemon& operator=(const LiveDaemon&) = delete;
  const std::string& endpoint() const { return pub_.endpoint(); }

 private:
  Publisher pub_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(Monitor, ShowsSessionNameAndPosteriorBars) {
  LiveDaemon daemon;
  const std::filesystem::path out = std::filesystem::temp_directory_path() /
                                    ("twinloop_monitor_" + std::to_string(::getpid()) + ".txt");
  std::fflush(stdout);
  const int saved = dup(STDOUT_FILENO);
  const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  dup2(fd, STDOUT_FILENO);
  ::close(fd);
  const int status = monitor({.endpoint = daemon.endpoint(), .seconds = 1.0});
  std::fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  ::close(saved);
  std::ifstream in(out);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(out);
  EXPECT_EQ(status, kExitOk);
  EXPECT_EQ(text.find("\x1b["), std::string::npos) << "no ANSI codes when stdout is a file";
  // The last frame is the one drawn at the end.
  const std::string last = text.substr(text.rfind("twinloop monitor"));
  EXPECT_NE(last.find("bench-session-42"), std::string::npos) << last;
  EXPECT_NE(last.find("state running"), std::string::npos) << last;
  const std::string bar = "tuned   |" + std::string(30, '#') + std::string(10, ' ') + "| 0.750";
  EXPECT_NE(last.find(bar), std::string::npos) << last;
  EXPECT_NE(last.find("untuned |" + std::string(10, '#')), std::string::npos) << last;
  EXPECT_NE(last.find("block p50/p99 0.40/1.10 ms"), std::string::npos) << last;
  EXPECT_NE(last.find("ch3"), std::string::npos) << "top channels from the spikes topic\n" << last;
}

TEST(Monitor, RefusesBadUsage) {
  EXPECT_EQ(monitor({.endpoint = ""}), kExitUsage);
  EXPECT_EQ(monitor({.endpoint = "not-an-endpoint", .seconds = 0.1}), kExitRefused);
}

struct Ran {
  int status = -1;
  std::string output;
};
Ran run(const std::string& command) {
  Ran r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) r.output += buffer.data();
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

TEST(MonitorClientPython, DecodesEveryTopicFromALiveDaemon) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 missing";
  if (run("/usr/bin/python3 -c 'import zmq'").status != 0)
    GTEST_SKIP() << "the zmq module is missing (Debian package python3-zmq)";
  const std::string script =
      std::string(TWINLOOP_SOURCE_DIR) + "/examples/python/monitor_client.py";
  const Ran help = run("/usr/bin/python3 " + script + " --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--until-all-topics"), std::string::npos) << help.output;

  LiveDaemon daemon;
  const Ran r = run("/usr/bin/python3 " + script + " " + daemon.endpoint() +
                    " --until-all-topics --seconds 4");
  EXPECT_EQ(r.status, 0) << r.output;
  for (const char* topic : {"spikes", "trial", "posterior", "health", "session"}) {
    const std::string line = std::string("summary ") + topic + " messages ";
    const auto at = r.output.find(line);
    ASSERT_NE(at, std::string::npos) << r.output;
    EXPECT_GE(std::stoul(r.output.substr(at + line.size())), 1u) << topic << "\n" << r.output;
  }
  EXPECT_NE(r.output.find("bench-session-42 protocol orientation state running"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("tuned=0.750 untuned=0.250"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("3 spikes on 2 channels"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("summary total"), std::string::npos) << r.output;
}

}  // namespace

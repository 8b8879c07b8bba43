// Closed-loop latency over loopback, end to end: the hil bench publishes 1 ms blocks (30 samples x
// 385 words, real-time pace) of a simulated Neuropixels probe; a NetworkProbeSource feeds an
// AcquisitionLoop on its own thread (as in the daemon); a session thread drains the detected
// spikes, counts them into trial windows (WindowCounter), asks the designer for the next stimulus
// (DiscriminateStrategy::decide on synthetic predictions built once at start, 48 candidates x 384
// units x 3 hypotheses, all Monte Carlo tables cached after warm-up) and sends the command through
// NetworkStimulusSink. All in one process, one host, one clock (CLOCK_MONOTONIC).
//
// One loop = one spike-bearing block: every time the session finds newly published spike events
// it runs one count + decision + command. The loop's trigger block is the block whose processing
// published the earliest of those events, so a session that fell behind is charged from the older
// block, never hidden. Blocks without a detected spike start no loop.
//
// Where each timestamp comes from (all steady_clock, nanoseconds):
//   sent      bench: the block's wire header send_time_ns (taken just before its zmq_send)
//   received  NetworkProbeSource::last_block_timing().receive_time_ns (off the socket)
//   returned  a ProbeSource wrapper around the network source, as its read() returns
//   published returned + AcquisitionLoop::block_latencies_ns() (its clock stops right after the
//             events are pushed into the queue)
//   drained   session thread, when drain_events() first returns the loop's events
//   counted   after the window counting; decided: after decide()
//   cmd sent  the moment NetworkStimulusSink called zmq_send: its return time minus its
//             round_trip_ns (the sink starts that clock right before sending)
//   cmd recv  the bench side: BenchServer exposes no reception time, so the commands go to this
//             bench's own ROUTER (same wire format, replies at once with onset = earliest onset),
//             which takes the time when the command frame comes off its socket
// End to end = cmd recv - block sent. Software share = cmd sent - block received, minus the
// decision (decided - counted): what twinloop adds besides the designer's computation. "Spike age"
// is how old the earliest spike already was when its block was sent (block end minus trough, on
// the sample clock: the block formation and detector look-ahead that no software can remove);
// "from spike trough" adds it to end to end. The floor is the bare block transit (bench send ->
// source receive, nothing else running) measured first in the same run; ratios are p50 / floor p50.
//
// The bench server's own two threads cannot be pinned (no API for it); --cpu-* pin ours.
//
//   bench_loop_latency [--loops N (10000)] [--seconds S (120)] [--help for the rest]
#include <pthread.h>
#include <sched.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/acquisition/spike_event.hpp"
#include "twinloop/acquisition/window_counter.hpp"
#include "twinloop/designer/discriminate_strategy.hpp"
#include "twinloop/drivers/network_probe_source.hpp"
#include "twinloop/drivers/network_stimulus_sink.hpp"
#include "twinloop/drivers/wire_format.hpp"
#include "twinloop/hil/bench_server.hpp"

namespace {

using namespace twinloop;
namespace wire = drivers::wire;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kBlockSamples = 30;
constexpr std::size_t kChannels = 384;
constexpr std::size_t kCandidates = 48;
constexpr std::size_t kHypotheses = 3;
constexpr std::size_t kPosteriorVariants = 64;
constexpr std::int64_t kWindowSamples = 1500;  // 50 ms trial windows
constexpr int kStallSeconds = 5;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

enum class Wait { kSpin, kYield, kSleep };

struct Options {
  std::size_t loops = 10000;
  double seconds = 120.0;
  double baseline_seconds = 3.0;
  std::size_t warmup = 200;
  std::size_t units = 64;
  std::uint64_t seed = 7;
  int cpu_acquisition = -1;
  int cpu_session = -1;
  int cpu_receiver = -1;
  Wait wait = Wait::kYield;
  int poll_us = 50;
};

void print_help() {
  std::printf(
      "usage: bench_loop_latency [options]\n"
      "Closed loop over tcp loopback in one process: hil bench (1 ms blocks, 384 channels,\n"
      "real time) -> NetworkProbeSource -> AcquisitionLoop -> session thread (count, designer\n"
      "decision, NetworkStimulusSink) -> command received by a ROUTER in this process.\n"
      "One loop per block whose processing published at least one spike.\n"
      "  --loops N             measured loops (default 10000), after the warm-up loops\n"
      "  --seconds S           cap on the closed-loop phase (default 120); fewer loops are\n"
      "                        reported, with a warning, when it runs out\n"
      "  --warmup N            loops discarded at the start (default 200)\n"
      "  --baseline-seconds S  bare block transit measured first as the floor (default 3, >= 1)\n"
      "  --units N             simulated units (default 64; more units, more spike-bearing\n"
      "                        blocks per second)\n"
      "  --seed N              simulation seed (default 7)\n"
      "  --cpu-acq N           pin the acquisition thread to CPU N (default: not pinned)\n"
      "  --cpu-session N       pin the session thread to CPU N\n"
      "  --cpu-stim N          pin the command receiver thread to CPU N\n"
      "                        (the bench server's two threads are never pinned)\n"
      "  --wait spin|yield|sleep  how the session waits for events (default yield: busy-poll\n"
      "                        that gives the core away when another thread is runnable)\n"
      "  --poll-us N           sleep per poll with --wait sleep (default 50)\n"
      "  --help                this text\n"
      "Prints p50/p99/max per stage, end to end, the software share, and ratios to the floor.\n");
}

bool parse_count(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') return false;
  out = v;
  return true;
}

bool parse_seconds(const char* text, double& out) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(v > 0.0) || !std::isfinite(v)) return false;
  out = v;
  return true;
}

// Returns "" or what was wrong.
std::string parse_options(int argc, char** argv, Options& o, bool& help) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      return "";
    }
    if (i + 1 >= argc) return arg + " needs a value (or is unknown)";
    const char* value = argv[++i];
    std::uint64_t n = 0;
    if (arg == "--loops") {
      if (!parse_count(value, n) || n == 0) return "--loops: a positive integer";
      o.loops = n;
    } else if (arg == "--seconds") {
      if (!parse_seconds(value, o.seconds)) return "--seconds: a positive number";
    } else if (arg == "--warmup") {
      if (!parse_count(value, n)) return "--warmup: a non-negative integer";
      o.warmup = n;
    } else if (arg == "--baseline-seconds") {
      if (!parse_seconds(value, o.baseline_seconds) || o.baseline_seconds < 1.0) {
        return "--baseline-seconds: at least 1";
      }
    } else if (arg == "--units") {
      if (!parse_count(value, n) || n == 0 || n > 4096) return "--units: 1 ... 4096";
      o.units = n;
    } else if (arg == "--seed") {
      if (!parse_count(value, n)) return "--seed: a non-negative integer";
      o.seed = n;
    } else if (arg == "--cpu-acq" || arg == "--cpu-session" || arg == "--cpu-stim") {
      if (!parse_count(value, n) || n >= CPU_SETSIZE) return arg + ": a CPU number";
      (arg == "--cpu-acq"       ? o.cpu_acquisition
       : arg == "--cpu-session" ? o.cpu_session
                                : o.cpu_receiver) = static_cast<int>(n);
    } else if (arg == "--wait") {
      const std::string w = value;
      if (w == "spin") {
        o.wait = Wait::kSpin;
      } else if (w == "yield") {
        o.wait = Wait::kYield;
      } else if (w == "sleep") {
        o.wait = Wait::kSleep;
      } else {
        return "--wait: spin, yield or sleep";
      }
    } else if (arg == "--poll-us") {
      if (!parse_count(value, n) || n > 100000) return "--poll-us: 0 ... 100000";
      o.poll_us = static_cast<int>(n);
    } else {
      return "unknown option " + arg;
    }
  }
  return "";
}

// False (never fatal: pinning is optional) when the kernel refuses.
bool pin_this_thread(int cpu) noexcept {
  if (cpu < 0) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

hil::BenchServerConfig bench_config(const Options& o, double seconds) {
  hil::BenchServerConfig c;
  c.simulation.seed = o.seed;
  c.simulation.channels = kChannels;
  c.simulation.unit_count = o.units;
  c.simulation.block_samples = kBlockSamples;
  c.simulation.pace = drivers::Pace::kRealtime;
  c.simulation.seconds = seconds;
  c.probe_endpoint = "tcp://127.0.0.1:*";
  c.stimulus_endpoint = "tcp://127.0.0.1:*";
  // Block 0 reaches the reader: the sample clock and the block index then agree from the start.
  c.wait_for_subscriber = true;
  return c;
}

struct BlockRecord {
  std::int64_t first_sample = 0;
  std::int64_t end_sample = 0;
  std::int64_t send_ns = 0;
  std::int64_t receive_ns = 0;
  std::int64_t return_ns = 0;
};

// The acquisition thread's view of each block: NetworkProbeSource's timing is readable only on
// the reading thread, so this wrapper, which runs on it, copies it into a preallocated array.
class TimedSource final : public drivers::ProbeSource {
 public:
  TimedSource(drivers::NetworkProbeSource& inner, std::size_t capacity, int cpu)
      : inner_(inner), records_(capacity), cpu_(cpu) {}

  [[nodiscard]] bool start() override { return inner_.start(); }
  [[nodiscard]] const drivers::ProbeInfo& info() const noexcept override { return inner_.info(); }
  [[nodiscard]] drivers::ReadStatus read(drivers::SampleBlock& block) noexcept override {
    if (!pin_tried_) {
      pin_tried_ = true;
      if (!pin_this_thread(cpu_)) pin_failed_.store(true, std::memory_order_relaxed);
    }
    const drivers::ReadStatus status = inner_.read(block);
    if (status != drivers::ReadStatus::kOk) return status;
    const std::int64_t t = now_ns();
    const std::size_t n = count_.load(std::memory_order_relaxed);
    if (n < records_.size()) {
      const drivers::BlockTiming& timing = inner_.last_block_timing();
      records_[n] = {block.first_sample,
                     block.first_sample + static_cast<std::int64_t>(block.sample_count),
                     timing.send_time_ns, timing.receive_time_ns, t};
      count_.store(n + 1, std::memory_order_release);
    }
    return status;
  }
  void stop() noexcept override { inner_.stop(); }
  [[nodiscard]] const std::string& last_error() const noexcept override {
    return inner_.last_error();
  }

  [[nodiscard]] std::size_t count() const noexcept {
    return count_.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::span<const BlockRecord> records() const noexcept {
    return {records_.data(), count()};
  }
  [[nodiscard]] bool pin_failed() const noexcept {
    return pin_failed_.load(std::memory_order_relaxed);
  }

 private:
  drivers::NetworkProbeSource& inner_;
  std::vector<BlockRecord> records_;
  std::atomic<std::size_t> count_{0};
  int cpu_;
  bool pin_tried_ = false;
  std::atomic<bool> pin_failed_{false};
};

// The stimulator's side of the command path with a reception clock: a ROUTER that timestamps each
// command as it comes off the socket (indexed by the command's trial number) and acknowledges it
// at once, so the sink's wait for the acknowledgement is one loopback round trip.
class CommandReceiver {
 public:
  explicit CommandReceiver(std::size_t capacity) : received_ns_(capacity, -1) {}
  ~CommandReceiver() { stop(); }
  CommandReceiver(const CommandReceiver&) = delete;
  CommandReceiver& operator=(const CommandReceiver&) = delete;

  // "" or what failed.
  std::string start(int cpu) {
    context_ = zmq_ctx_new();
    if (context_ == nullptr) return std::string("zmq_ctx_new: ") + zmq_strerror(errno);
    router_ = zmq_socket(context_, ZMQ_ROUTER);
    if (router_ == nullptr) return std::string("zmq_socket: ") + zmq_strerror(errno);
    const int linger = 0;
    (void)zmq_setsockopt(router_, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(router_, "tcp://127.0.0.1:*") != 0) {
      return std::string("cannot bind the command receiver: ") + zmq_strerror(errno);
    }
    std::array<char, 256> name{};
    std::size_t size = name.size();
    if (zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, name.data(), &size) != 0) {
      return std::string("ZMQ_LAST_ENDPOINT: ") + zmq_strerror(errno);
    }
    endpoint_ = name.data();
    thread_ = std::thread([this, cpu] { run(cpu); });
    return "";
  }

  void stop() noexcept {
    stop_.store(true, std::memory_order_relaxed);
    if (thread_.joinable()) thread_.join();
    if (router_ != nullptr) zmq_close(router_);
    router_ = nullptr;
    if (context_ != nullptr) zmq_ctx_term(context_);
    context_ = nullptr;
  }

  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  /// After stop(): when the command of `trial` arrived, -1 if it never did.
  [[nodiscard]] std::int64_t received_ns(std::uint64_t trial) const noexcept {
    return trial < received_ns_.size() ? received_ns_[trial] : -1;
  }
  [[nodiscard]] std::uint64_t received() const noexcept {
    return received_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t malformed() const noexcept {
    return malformed_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] bool pin_failed() const noexcept {
    return pin_failed_.load(std::memory_order_relaxed);
  }

 private:
  void run(int cpu) noexcept {
    if (!pin_this_thread(cpu)) pin_failed_.store(true, std::memory_order_relaxed);
    std::array<std::byte, 256> identity{};
    std::array<std::byte, wire::kStimulusCommandMaxBytes> message{};
    std::array<std::byte, wire::kStimulusReplyMaxBytes> reply{};
    while (!stop_.load(std::memory_order_relaxed)) {
      zmq_pollitem_t item{router_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 10) <= 0) continue;
      const int id_size = zmq_recv(router_, identity.data(), identity.size(), ZMQ_DONTWAIT);
      if (id_size < 0) continue;
      int more = 0;
      std::size_t more_size = sizeof more;
      (void)zmq_getsockopt(router_, ZMQ_RCVMORE, &more, &more_size);
      if (more == 0) {
        malformed_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const int size = zmq_recv(router_, message.data(), message.size(), ZMQ_DONTWAIT);
      const std::int64_t arrived = now_ns();
      bool extra = false;
      while (zmq_getsockopt(router_, ZMQ_RCVMORE, &more, &more_size) == 0 && more != 0) {
        extra = true;
        std::array<std::byte, 64> discard{};
        if (zmq_recv(router_, discard.data(), discard.size(), ZMQ_DONTWAIT) < 0) break;
      }
      std::uint64_t request_id = 0;
      drivers::StimulusCommand command;
      if (size < 0 || extra || static_cast<std::size_t>(size) > message.size() ||
          static_cast<std::size_t>(id_size) > identity.size() ||
          wire::decode_stimulus_command(
              std::span<const std::byte>(message.data(), static_cast<std::size_t>(size)),
              request_id, command) != wire::DecodeError::kNone) {
        malformed_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (command.trial < received_ns_.size()) received_ns_[command.trial] = arrived;
      received_.fetch_add(1, std::memory_order_relaxed);
      wire::StimulusReply r;
      r.request_id = request_id;
      r.trial = command.trial;
      r.status = wire::ReplyStatus::kDelivered;
      r.onset_sample = command.earliest_onset_sample;
      const std::size_t out = wire::encode_stimulus_reply(r, reply);
      if (zmq_send(router_, identity.data(), static_cast<std::size_t>(id_size),
                   ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
        (void)zmq_send(router_, reply.data(), out, ZMQ_DONTWAIT);
      }
    }
  }

  void* context_ = nullptr;
  void* router_ = nullptr;
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<std::int64_t> received_ns_;  // written by the receiver thread, read after stop()
  std::atomic<std::uint64_t> received_{0}, malformed_{0};
  std::atomic<bool> pin_failed_{false};
};

struct Figures {
  double p50_us = 0, p99_us = 0, max_us = 0;
  std::size_t n = 0;
};

Figures summarize(std::vector<std::int64_t> ns) {
  Figures f;
  f.n = ns.size();
  if (ns.empty()) return f;
  std::sort(ns.begin(), ns.end());
  f.p50_us = static_cast<double>(ns[ns.size() / 2]) * 1e-3;
  f.p99_us = static_cast<double>(ns[std::min(ns.size() - 1, ns.size() * 99 / 100)]) * 1e-3;
  f.max_us = static_cast<double>(ns.back()) * 1e-3;
  return f;
}

// Bare block transit (bench send -> NetworkProbeSource receive), nothing else running: the floor.
// "" or what failed.
std::string measure_floor(const Options& o, std::vector<std::int64_t>& transit_ns) {
  hil::BenchServer bench(bench_config(o, o.baseline_seconds + 1.0));
  if (!bench.start()) return "baseline: bench server: " + bench.error();
  drivers::NetworkProbeSource source({.endpoint = bench.probe_endpoint()});
  if (!source.start()) return "baseline: probe source: " + source.last_error();
  drivers::SampleBlock block;
  block.allocate(kBlockSamples, source.info().stored_channels);
  transit_ns.reserve(static_cast<std::size_t>(o.baseline_seconds * 1000.0) + 100);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.baseline_seconds + 5.0));
  const auto skip = static_cast<std::int64_t>(0.1 * 30000.0);  // start-up allocations
  const auto until = static_cast<std::int64_t>(o.baseline_seconds * 30000.0);
  while (Clock::now() < deadline) {
    const drivers::ReadStatus s = source.read(block);
    if (s == drivers::ReadStatus::kEndOfStream) break;
    if (s == drivers::ReadStatus::kError) return "baseline: probe source: " + source.last_error();
    if (s != drivers::ReadStatus::kOk) continue;
    const drivers::BlockTiming& t = source.last_block_timing();
    if (t.first_sample >= until) break;
    if (t.first_sample >= skip) transit_ns.push_back(t.receive_time_ns - t.send_time_ns);
  }
  source.stop();
  bench.stop();
  if (transit_ns.size() < 100) return "baseline: fewer than 100 blocks arrived in time";
  return "";
}

struct LoopRecord {
  std::int64_t earliest_sample = 0;  // trough of the earliest spike in the loop
  std::uint32_t events = 0;
  std::int64_t drained_ns = 0, counted_ns = 0, decided_ns = 0, sent_ns = 0, acked_ns = 0;
  drivers::DeliveryOutcome outcome = drivers::DeliveryOutcome::kNotStarted;
};

enum class SessionEnd {
  kRunning,
  kDone,
  kDeadline,
  kAcquisitionEnded,
  kNoDecision,
  kSinkFailing,
  kAborted
};

// Everything the session thread touches, allocated before it starts.
struct Session {
  acquisition::AcquisitionLoop* loop = nullptr;
  drivers::NetworkStimulusSink* sink = nullptr;
  designer::DiscriminateStrategy* strategy = nullptr;
  std::vector<std::array<double, kHypotheses>> posteriors;
  std::vector<protocols::Stimulus> stimuli;
  std::unique_ptr<bool[]> allowed;
  std::vector<acquisition::SpikeEvent> batch;
  std::vector<LoopRecord> records;
  std::unique_ptr<acquisition::WindowCounter> windows;
  Options options;
  std::int64_t deadline_ns = 0;

  std::atomic<std::size_t> done{0};
  std::atomic<bool> abort{false};
  std::atomic<SessionEnd> end{SessionEnd::kRunning};
  std::atomic<bool> pin_failed{false};
  std::uint64_t window_spikes = 0;  // spikes counted in completed windows
  std::uint64_t windows_completed = 0;

  void run() noexcept {
    if (!pin_this_thread(options.cpu_session)) pin_failed.store(true, std::memory_order_relaxed);
    std::optional<std::size_t> window;
    std::int64_t window_end = 0;
    std::uint32_t previous = 0;
    int failures_in_a_row = 0;
    const std::span<acquisition::SpikeEvent> out(batch);
    std::size_t n_done = 0;
    std::uint64_t idle = 0;
    for (;;) {
      if (n_done >= records.size()) return finish(SessionEnd::kDone);
      if (abort.load(std::memory_order_relaxed)) return finish(SessionEnd::kAborted);
      std::size_t n = loop->drain_events(out);
      if (n == 0) {
        // The clock and the counters only while idle: each costs tens of nanoseconds.
        if ((++idle & 63u) == 0 || options.wait != Wait::kSpin) {
          if (now_ns() > deadline_ns) return finish(SessionEnd::kDeadline);
          if (loop->counters().finished) return finish(SessionEnd::kAcquisitionEnded);
        }
        if (options.wait == Wait::kYield) {
          std::this_thread::yield();
        } else if (options.wait == Wait::kSleep) {
          std::this_thread::sleep_for(std::chrono::microseconds(options.poll_us));
        }
        continue;
      }
      LoopRecord& r = records[n_done];
      r.drained_ns = now_ns();
      std::int64_t earliest = out[0].sample;
      std::int64_t latest = out[0].sample;
      std::uint32_t events = 0;
      do {
        for (std::size_t i = 0; i < n; ++i) {
          earliest = std::min(earliest, out[i].sample);
          latest = std::max(latest, out[i].sample);
        }
        if (!window) {
          window = windows->open(earliest, earliest + kWindowSamples);
          window_end = earliest + kWindowSamples;
        }
        windows->add_events(out.first(n));
        events += static_cast<std::uint32_t>(n);
      } while ((n = loop->drain_events(out)) > 0);
      if (window && windows->complete(*window, loop->counters().final_before_sample)) {
        for (const std::uint32_t c : windows->counts(*window)) window_spikes += c;
        ++windows_completed;
        windows->close(*window);
        window = windows->open(window_end, window_end + kWindowSamples);
        window_end += kWindowSamples;
      }
      r.counted_ns = now_ns();
      const std::optional<designer::Decision> decision =
          strategy->decide(posteriors[n_done % posteriors.size()],
                           std::span<const bool>(allowed.get(), kCandidates));
      r.decided_ns = now_ns();
      if (!decision) return finish(SessionEnd::kNoDecision);
      drivers::StimulusCommand command;
      command.trial = n_done;
      command.stimulus = stimuli[decision->candidate];
      command.earliest_onset_sample = latest + static_cast<std::int64_t>(kBlockSamples);
      command.duration_samples = 15000;
      const drivers::DeliveryResult result = sink->deliver_with_result(command);
      r.acked_ns = now_ns();
      r.sent_ns = r.acked_ns - result.round_trip_ns;
      r.outcome = result.outcome;
      r.earliest_sample = earliest;
      r.events = events;
      // No immediate repeat of a stimulus, as a protocol would ask: the allowed set changes.
      allowed[previous] = true;
      allowed[decision->candidate] = false;
      previous = decision->candidate;
      failures_in_a_row = result.delivered() ? 0 : failures_in_a_row + 1;
      done.store(++n_done, std::memory_order_release);
      if (failures_in_a_row >= 20) return finish(SessionEnd::kSinkFailing);
    }
  }

  void finish(SessionEnd why) noexcept { end.store(why, std::memory_order_release); }
};

// Synthetic twin predictions: direction-tuned units; the hypotheses differ in preferred
// direction, gain and dispersion, so the candidates' information gains differ.
std::vector<twin::PredictionBatch> make_predictions(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<twin::PredictionBatch> batches(kHypotheses);
  for (auto& b : batches) b.resize(kCandidates, kChannels);
  constexpr double kWindowS = 0.05;
  constexpr double kPi = 3.14159265358979323846;
  for (std::size_t u = 0; u < kChannels; ++u) {
    const double base_hz = 2.0 * std::pow(7.5, uniform(rng));
    const double preferred = 2.0 * kPi * uniform(rng);
    const double depth = 0.3 + 0.6 * uniform(rng);
    for (std::size_t h = 0; h < kHypotheses; ++h) {
      const double shift = 0.4 * static_cast<double>(h);
      const double gain = 1.0 + 0.2 * static_cast<double>(h);
      for (std::size_t c = 0; c < kCandidates; ++c) {
        const double direction = 2.0 * kPi * static_cast<double>(c) / kCandidates;
        const double rate =
            base_hz * gain * (1.0 + depth * std::cos(direction - preferred - shift));
        batches[h].mean[c * kChannels + u] = std::max(rate, 0.1) * kWindowS * 10.0;
        batches[h].dispersion[c * kChannels + u] = h == 2 ? 0.1 : 0.0;
      }
    }
  }
  return batches;
}

const char* describe(SessionEnd end) {
  switch (end) {
    case SessionEnd::kRunning:
      return "still running";
    case SessionEnd::kDone:
      return "all loops done";
    case SessionEnd::kDeadline:
      return "--seconds ran out";
    case SessionEnd::kAcquisitionEnded:
      return "the acquisition loop ended";
    case SessionEnd::kNoDecision:
      return "the designer returned no decision";
    case SessionEnd::kSinkFailing:
      return "20 commands in a row were not acknowledged";
    case SessionEnd::kAborted:
      return "aborted (no progress)";
  }
  return "?";
}

void print_row(const char* label, const Figures& f, double floor_p50_us) {
  std::printf("  %-46s %9.1f %9.1f %9.1f %8.2fx\n", label, f.p50_us, f.p99_us, f.max_us,
              floor_p50_us > 0 ? f.p50_us / floor_p50_us : 0.0);
}

int fail(const std::string& text) {
  std::fprintf(stderr, "bench_loop_latency: %s\n", text.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool help = false;
  if (const std::string problem = parse_options(argc, argv, o, help); !problem.empty()) {
    std::fprintf(stderr, "bench_loop_latency: %s (see --help)\n", problem.c_str());
    return 2;
  }
  if (help) {
    print_help();
    return 0;
  }
  std::printf(
      "closed loop over tcp loopback: 1 ms blocks, %zu channels, %zu units, seed %llu; "
      "designer %zu candidates x %zu units x %zu hypotheses; %s SIMD\n",
      kChannels, o.units, static_cast<unsigned long long>(o.seed), kCandidates, kChannels,
      kHypotheses, acquisition::active_simd_target());
  std::fflush(stdout);

  // ---- Floor: bare block transit.
  std::vector<std::int64_t> floor_ns;
  std::printf("floor: bare block transit for %.0f s ...\n", o.baseline_seconds);
  std::fflush(stdout);
  if (const std::string problem = measure_floor(o, floor_ns); !problem.empty())
    return fail(problem);
  const Figures floor = summarize(floor_ns);

  // ---- Everything the loop needs, allocated before it starts.
  Session session;
  session.options = o;
  std::unique_ptr<designer::DiscriminateStrategy> strategy;
  try {
    designer::DiscriminateConfig dc;
    dc.seed = o.seed;
    strategy =
        std::make_unique<designer::DiscriminateStrategy>(kCandidates, kChannels, kHypotheses, dc);
    const std::vector<twin::PredictionBatch> predictions = make_predictions(o.seed);
    if (!strategy->set_predictions(predictions)) return fail("designer refused the predictions");
    std::mt19937_64 rng(o.seed + 1);
    std::uniform_real_distribution<double> uniform(0.05, 1.0);
    session.posteriors.resize(kPosteriorVariants);
    for (auto& p : session.posteriors) {
      for (double& w : p) w = uniform(rng);
    }
    session.stimuli.resize(kCandidates);
    for (std::size_t c = 0; c < kCandidates; ++c) {
      session.stimuli[c].candidate = static_cast<std::uint32_t>(c);
      session.stimuli[c].dimension_count = 2;
      session.stimuli[c].values[0] = 360.0 * static_cast<double>(c) / kCandidates;
      session.stimuli[c].values[1] = 1.0;
    }
    session.allowed = std::make_unique<bool[]>(kCandidates);
    std::fill_n(session.allowed.get(), kCandidates, true);
    // Build the Monte Carlo tables the posteriors reach, so decisions in the loop are the
    // steady-state ones (after a twin update the first decision also builds tables).
    for (std::size_t i = 0; i < 4 * kPosteriorVariants; ++i) {
      if (!strategy->decide(session.posteriors[i % kPosteriorVariants],
                            std::span<const bool>(session.allowed.get(), kCandidates))) {
        return fail("designer returned no decision during warm-up");
      }
    }
    session.batch.resize(1 << 14);
    session.records.resize(o.warmup + o.loops);
    session.windows = std::make_unique<acquisition::WindowCounter>(kChannels, 2);
  } catch (const std::exception& e) {
    return fail(std::string("setup: ") + e.what());
  }
  session.strategy = strategy.get();

  const double stream_seconds = o.seconds + 10.0;
  const std::size_t block_capacity = static_cast<std::size_t>(stream_seconds * 1000.0) + 1000;
  hil::BenchServer bench(bench_config(o, stream_seconds));
  if (!bench.start()) return fail("bench server: " + bench.error());
  CommandReceiver receiver(o.warmup + o.loops);
  if (const std::string problem = receiver.start(o.cpu_receiver); !problem.empty()) {
    return fail("command receiver: " + problem);
  }
  drivers::NetworkStimulusSink sink({.endpoint = receiver.endpoint()});
  if (!sink.start()) return fail("stimulus sink: " + sink.last_error());
  drivers::NetworkProbeSource network({.endpoint = bench.probe_endpoint()});
  TimedSource timed(network, block_capacity, o.cpu_acquisition);
  acquisition::AcquisitionConfig ac;
  ac.block_samples = kBlockSamples;
  ac.latency_capacity = block_capacity;
  acquisition::AcquisitionLoop loop(timed, ac);
  session.loop = &loop;
  session.sink = &sink;

  std::printf("closed loop: %zu warm-up + %zu measured loops, at most %.0f s ...\n", o.warmup,
              o.loops, o.seconds);
  std::fflush(stdout);
  if (!loop.start()) return fail("acquisition: " + loop.error());
  const auto started = Clock::now();
  session.deadline_ns = now_ns() + static_cast<std::int64_t>(o.seconds * 1e9);
  std::thread session_thread([&session] { session.run(); });

  // Progress, and the watchdog: a loop that stops advancing is ended with a reason, never waited
  // on forever.
  std::size_t last_done = 0;
  auto last_progress = Clock::now();
  auto next_print = Clock::now() + std::chrono::seconds(2);
  while (session.end.load(std::memory_order_acquire) == SessionEnd::kRunning) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::size_t done = session.done.load(std::memory_order_acquire);
    const auto now = Clock::now();
    if (done != last_done) {
      last_done = done;
      last_progress = now;
    } else if (now - last_progress > std::chrono::seconds(kStallSeconds)) {
      session.abort.store(true, std::memory_order_relaxed);
    }
    if (now >= next_print) {
      next_print += std::chrono::seconds(2);
      const acquisition::AcquisitionCounters c = loop.counters();
      std::printf("  %5.1f s: %zu / %zu loops, %llu blocks, %llu spikes detected%s\n",
                  std::chrono::duration<double>(now - started).count(), done, o.warmup + o.loops,
                  static_cast<unsigned long long>(c.blocks),
                  static_cast<unsigned long long>(c.events), c.armed ? "" : " (detector arming)");
      std::fflush(stdout);
    }
  }
  session_thread.join();
  loop.stop();
  loop.join();
  receiver.stop();
  sink.stop();
  bench.stop();

  const SessionEnd end = session.end.load();
  const std::size_t done = session.done.load();
  const acquisition::AcquisitionCounters ac_counters = loop.counters();
  const drivers::NetworkFaultCounters net = network.fault_counters();
  const drivers::NetworkFaultCounters cmd = sink.fault_counters();
  if (timed.pin_failed() || session.pin_failed.load() || receiver.pin_failed()) {
    std::fprintf(stderr, "bench_loop_latency: warning: a --cpu-* pin was refused; unpinned\n");
  }
  if (end != SessionEnd::kDone) {
    std::string why = describe(end);
    if (end == SessionEnd::kAcquisitionEnded && ac_counters.failed) {
      why += ": " + network.last_error();
    }
    if (end == SessionEnd::kSinkFailing) why += ": " + sink.last_error();
    if (end == SessionEnd::kAborted) {
      why += ": no loop for " + std::to_string(kStallSeconds) + " s (" +
             std::to_string(ac_counters.blocks) + " blocks, " + std::to_string(ac_counters.events) +
             " spikes, armed " + (ac_counters.armed ? "yes" : "no") + ")";
    }
    if (done <= o.warmup) return fail("no measured loop: " + why);
    std::fprintf(stderr, "bench_loop_latency: warning: %s after %zu of %zu measured loops\n",
                 why.c_str(), done - o.warmup, o.loops);
  }

  // ---- Per loop: find its trigger block and the stage times.
  const std::span<const BlockRecord> blocks = timed.records();
  const std::span<const std::uint32_t> latencies = loop.block_latencies_ns();
  const std::size_t block_count = std::min(blocks.size(), latencies.size());
  // An event at sample s is published by the first block whose end - (delay + 1) > s (the
  // acquisition loop's final_before_sample).
  const std::int64_t publish_lag = loop.detector().delay_samples() + 1;
  const double sample_rate = loop.probe().sample_rate_hz;
  std::vector<std::int64_t> transit, source, detect, wait, count, decide, send, command, e2e,
      software, age, from_trough, round_trip;
  std::size_t unmapped = 0, not_received = 0, behind = 0, behind_ack = 0, not_acknowledged = 0;
  std::uint64_t events = 0;
  for (std::size_t j = o.warmup; j < done; ++j) {
    const LoopRecord& r = session.records[j];
    const auto it = std::upper_bound(
        blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(block_count),
        r.earliest_sample,
        [&](std::int64_t s, const BlockRecord& b) { return s < b.end_sample - publish_lag; });
    const auto k = static_cast<std::size_t>(it - blocks.begin());
    if (k >= block_count || it->first_sample - publish_lag > r.earliest_sample) {
      ++unmapped;  // its block was not recorded (or a gap hid it): no honest start time
      continue;
    }
    const BlockRecord& b = blocks[k];
    const std::int64_t published = b.return_ns + latencies[k];
    if (k + 1 < block_count && blocks[k + 1].return_ns + latencies[k + 1] <= r.drained_ns) {
      ++behind;
    }
    // Its spikes were ready while the session still waited for the previous acknowledgement:
    // the sink's blocking delivery, not the polling, delayed this loop.
    if (j > 0 && published < session.records[j - 1].acked_ns) ++behind_ack;
    events += r.events;
    if (r.outcome != drivers::DeliveryOutcome::kDelivered) ++not_acknowledged;
    transit.push_back(b.receive_ns - b.send_ns);
    source.push_back(b.return_ns - b.receive_ns);
    detect.push_back(published - b.return_ns);
    wait.push_back(r.drained_ns - published);
    count.push_back(r.counted_ns - r.drained_ns);
    decide.push_back(r.decided_ns - r.counted_ns);
    send.push_back(r.sent_ns - r.decided_ns);
    round_trip.push_back(r.acked_ns - r.sent_ns);
    software.push_back((r.sent_ns - b.receive_ns) - (r.decided_ns - r.counted_ns));
    const std::int64_t received = receiver.received_ns(j);
    if (received < 0) {
      ++not_received;
      continue;
    }
    command.push_back(received - r.sent_ns);
    e2e.push_back(received - b.send_ns);
    const auto spike_age = static_cast<std::int64_t>(
        static_cast<double>(b.end_sample - r.earliest_sample) / sample_rate * 1e9);
    age.push_back(spike_age);
    from_trough.push_back(spike_age + received - b.send_ns);
  }
  if (transit.empty()) return fail("no measured loop could be matched to its block");

  const double f50 = floor.p50_us;
  const Figures e2e_f = summarize(e2e);
  const Figures software_f = summarize(software);
  std::printf(
      "\nfloor (bare block transit, nothing else running): p50 %.1f us  p99 %.1f us  "
      "max %.1f us  (%zu blocks)\n",
      floor.p50_us, floor.p99_us, floor.max_us, floor.n);
  std::printf(
      "\n%zu loops measured (%zu warm-up discarded; %zu not matched to a block), "
      "%llu spikes in them, %.1f s:\n",
      transit.size(), std::min(done, o.warmup), unmapped, static_cast<unsigned long long>(events),
      std::chrono::duration<double>(Clock::now() - started).count());
  std::printf("  %-46s %9s %9s %9s %9s\n", "stage (microseconds)", "p50", "p99", "max",
              "p50/floor");
  print_row("block transit (bench send -> source recv)", summarize(transit), f50);
  print_row("source (recv -> read() returned)", summarize(source), f50);
  print_row("detect (returned -> spikes published)", summarize(detect), f50);
  print_row("session wait (published -> drained)", summarize(wait), f50);
  print_row("count (drained -> counted)", summarize(count), f50);
  print_row("designer decision (counted -> decided)", summarize(decide), f50);
  print_row("command out (decided -> zmq_send)", summarize(send), f50);
  print_row("command transit (zmq_send -> bench recv)", summarize(command), f50);
  print_row("[acknowledgement round trip]", summarize(round_trip), f50);
  print_row("END TO END (block sent -> command recv)", e2e_f, f50);
  print_row("SOFTWARE SHARE (recv -> sent, - decision)", software_f, f50);
  print_row("[spike age at block send, sample clock]", summarize(age), f50);
  print_row("[from spike trough -> command recv]", summarize(from_trough), f50);
  std::printf(
      "goals: end to end p99 %.1f us (< 2000: %s); software share p99 %.1f us "
      "(< 150: %s)\n",
      e2e_f.p99_us, e2e_f.p99_us < 2000.0 ? "met" : "NOT met", software_f.p99_us,
      software_f.p99_us < 150.0 ? "met" : "NOT met");
  std::printf(
      "loops whose spikes waited for the previous acknowledgement: %zu; with the session more "
      "than one block behind: %zu; commands without reception time: %zu; not acknowledged on "
      "time: %zu\n",
      behind_ack, behind, not_received, not_acknowledged);
  std::printf(
      "stream: %llu blocks, %llu gaps (%lld samples missing), %llu disconnects; "
      "acquisition: %llu spikes, %llu dropped; commands: %llu sent, %llu received, "
      "%llu malformed; windows completed: %llu (%llu spikes)\n",
      static_cast<unsigned long long>(net.blocks), static_cast<unsigned long long>(net.gaps),
      static_cast<long long>(net.missing_samples), static_cast<unsigned long long>(net.disconnects),
      static_cast<unsigned long long>(ac_counters.events),
      static_cast<unsigned long long>(ac_counters.events_dropped),
      static_cast<unsigned long long>(cmd.commands),
      static_cast<unsigned long long>(receiver.received()),
      static_cast<unsigned long long>(receiver.malformed()),
      static_cast<unsigned long long>(session.windows_completed),
      static_cast<unsigned long long>(session.window_spikes));
  return 0;
}

// BenchServer: the simulated rig served over the network, as a networked real rig would be. It
// publishes the SimulatedProbe's blocks on the probe stream (XPUB) and answers stimulus commands
// on the stimulus endpoint (ROUTER) with the SimulatedStimulator's onsets, in twinloop's wire
// format (docs/wire-format.md). The daemon reaches it through drivers::NetworkProbeSource and
// drivers::NetworkStimulusSink, the same code path as real hardware.
//
// Faults are injected on purpose, all deterministic from the simulation seed: dropped, duplicated,
// reordered and corrupted blocks (chosen by block sequence number), late and missing onsets
// (chosen by command index), and one disconnect (both sockets closed, then re-bound on the same
// endpoints). counters() says what was injected, so tests compare it with what the daemon saw.
//
//   BenchServerConfig c;  c.probe_endpoint = "tcp://127.0.0.1:*";  c.faults.drop = {.rate = 0.01};
//   BenchServer bench(c);
//   if (!bench.start()) fail(bench.error());
//   connect to bench.probe_endpoint() / bench.stimulus_endpoint() (wildcards resolved)
//
// With ProbeFormat::kOpenEphys the probe stream is the Open Ephys GUI's ZMQ Interface instead
// (drivers::OpenEphysZmqEmulator), for drivers::OpenEphysZmqSource; dropped and duplicated
// blocks are the stream faults it injects (the others belong to twinloop's own format).
//
// Threads: the server runs two threads of its own (stream publisher; stimulus endpoint).
// start()/stop()/wait_finished() from one controlling thread; counters() from any thread.
// Not copyable or movable (its threads point into it).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "twinloop/hil/simulated_rig.hpp"
#include "twinloop/hil/simulation_config.hpp"

namespace twinloop::hil {

/// Which blocks (by sequence number) or commands (by index, from 0) a fault hits: those listed,
/// plus each other one with probability `rate`, drawn from the seed (so a run is reproducible).
struct FaultSelection {
  double rate = 0.0;
  std::vector<std::uint64_t> indices;

  [[nodiscard]] bool enabled() const noexcept { return rate > 0.0 || !indices.empty(); }
  /// Whether item `index` is hit; `salt` separates the fault kinds' random draws.
  [[nodiscard]] bool hits(std::uint64_t index, std::uint64_t seed,
                          std::uint64_t salt) const noexcept;
};

/// Parses a selection: a probability in [0, 1] ("0.01", "1") or '@' and a comma-separated list of
/// indices ("@10,25,26"). Returns "" on success, else what was wrong.
[[nodiscard]] std::string parse_fault_selection(const std::string& text, FaultSelection& out);

/// The salt each fault kind draws with (FaultSelection::hits), so that a test or an offline
/// analysis can tell from the seed alone which blocks and commands a run hit.
namespace fault_salt {
inline constexpr std::uint64_t kDrop = 1;
inline constexpr std::uint64_t kDuplicate = 2;
inline constexpr std::uint64_t kReorder = 3;
inline constexpr std::uint64_t kCorrupt = 4;
inline constexpr std::uint64_t kCorruptByte = 5;  ///< which payload byte is flipped
inline constexpr std::uint64_t kLateOnset = 6;
inline constexpr std::uint64_t kMissingOnset = 7;
}  // namespace fault_salt

struct BenchFaults {
  FaultSelection drop;         ///< the block is not sent (its sequence number is skipped)
  FaultSelection duplicate;    ///< the block is sent twice in a row
  FaultSelection reorder;      ///< the block is held back and sent after the next one
  FaultSelection corrupt;      ///< one payload byte of the block is flipped after the checksum
  double late_onset_ms = 0.0;  ///< onsets chosen by late_onsets are moved this much later
  FaultSelection late_onsets{1.0, {}};  ///< which commands late_onset_ms applies to
  FaultSelection missing_onsets;        ///< not delivered and never acknowledged
  double disconnect_at_s = -1.0;        ///< stream time at which both sockets close; < 0: never
  double disconnect_for_s = 1.0;        ///< wall-clock seconds before they are bound again
};

/// How the probe stream goes out.
enum class ProbeFormat {
  kTwinloop,   ///< twinloop's block messages (docs/wire-format.md), for NetworkProbeSource
  kOpenEphys,  ///< the Open Ephys GUI's ZMQ Interface (neural channels only, float µV at 0.195
               ///< µV/bit, heartbeats answered), for OpenEphysZmqSource: a lab's GUI stand-in
};

struct BenchServerConfig {
  SimulationConfig simulation;  ///< seed, units, seconds, pace, block_samples ...
  ProbeFormat probe_format = ProbeFormat::kTwinloop;
  std::string probe_endpoint = "tcp://127.0.0.1:5555";  ///< bind; '*' port allowed
  /// kOpenEphys: where heartbeats are answered; empty: the data port + 1, as the GUI does.
  std::string heartbeat_endpoint;
  /// Added to every sample number the bench sends (blocks, onsets) and taken off those it
  /// receives (commands): a stream whose clock did not start at 0, like a GUI acquiring for an
  /// hour before the session.
  std::int64_t sample_offset = 0;
  std::string stimulus_endpoint = "tcp://127.0.0.1:5556";  ///< bind; '*' port allowed
  std::uint32_t probe_id = 0;
  int send_hwm = 1000;  ///< blocks queued per subscriber before libzmq drops (1 s at 1 ms blocks)
  /// Hold the stream (and its clock) until the first subscriber has subscribed, so that it sees
  /// every block from sequence 0 on; otherwise blocks published before it joined are lost to it.
  bool wait_for_subscriber = false;
  BenchFaults faults;
};

/// What the server did, for comparison with what a client saw.
struct BenchCounters {
  std::uint64_t blocks_generated = 0;
  std::uint64_t blocks_sent = 0;  ///< messages, duplicates included
  std::uint64_t dropped = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t reordered = 0;
  std::uint64_t corrupted = 0;
  std::uint64_t lost_while_disconnected = 0;
  std::uint64_t disconnects = 0;
  std::uint64_t stream_infos_sent = 0;
  std::uint64_t commands = 0;  ///< valid commands received
  std::uint64_t delivered = 0;
  std::uint64_t late = 0;
  std::uint64_t missing = 0;
  std::uint64_t refused = 0;
  std::uint64_t malformed_requests = 0;
  std::int64_t end_sample = 0;  ///< one past the last sample generated
  bool stream_finished = false;
};

class BenchServer {
 public:
  /// Builds the simulated rig (allocates it all).
  /// \throws std::invalid_argument when the simulation config or a fault setting is invalid.
  explicit BenchServer(BenchServerConfig config);
  ~BenchServer();
  BenchServer(const BenchServer&) = delete;
  BenchServer& operator=(const BenchServer&) = delete;
  BenchServer(BenchServer&&) = delete;
  BenchServer& operator=(BenchServer&&) = delete;

  /// Binds both endpoints and starts the threads. False with error() when an endpoint cannot be
  /// bound.
  [[nodiscard]] bool start();
  /// Stops and joins the threads, closes the sockets. Idempotent.
  void stop() noexcept;
  /// Waits until a finite stream has been published to its end (true) or `timeout` passed.
  [[nodiscard]] bool wait_finished(std::chrono::milliseconds timeout) const;

  /// The bound endpoints, wildcards resolved (valid after start()).
  [[nodiscard]] const std::string& probe_endpoint() const noexcept;
  /// kOpenEphys: where heartbeats are answered; empty otherwise.
  [[nodiscard]] const std::string& heartbeat_endpoint() const noexcept;
  [[nodiscard]] const std::string& stimulus_endpoint() const noexcept;
  [[nodiscard]] BenchCounters counters() const noexcept;
  /// The simulated rig (ground truth: rig().subject->ground_truth()).
  [[nodiscard]] SimulatedRig& rig() noexcept;
  [[nodiscard]] const std::string& error() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::hil

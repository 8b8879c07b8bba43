// twinloop-hil: serves a simulated subject and probe over the network (twinloop's wire format on
// ZeroMQ), with deterministic fault injection, so that the daemon can be tested through the same
// network driver path a networked rig would use.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>

#include "twinloop/hil/bench_server.hpp"

namespace {

volatile std::sig_atomic_t stop_signal = 0;

extern "C" void on_signal(int) {
  stop_signal = 1;
}

// CLI11 validator for fault selections, so that bad text is refused before anything starts.
CLI::Validator selection_validator() {
  return CLI::Validator(
      [](std::string& text) {
        twinloop::hil::FaultSelection s;
        return twinloop::hil::parse_fault_selection(text, s);
      },
      "RATE|@LIST");
}

}  // namespace

int main(int argc, char** argv) {
  using twinloop::hil::BenchServer;
  using twinloop::hil::BenchServerConfig;
  CLI::App app{
      "twinloop-hil: a simulated Neuropixels 1.0 subject served as a networked rig. Publishes the "
      "probe stream and answers stimulus commands in twinloop's wire format "
      "(docs/wire-format.md), optionally with injected faults. Fault selections (SPEC) are a "
      "probability in [0, 1] drawn per item from --seed (e.g. 0.01), or '@' and a list of indices "
      "(e.g. @100,250): block sequence numbers for block faults, command indices (from 0) for "
      "onset faults. With --probe-format openephys the probe stream is the Open Ephys GUI's ZMQ "
      "Interface instead (docs/openephys-zmq.md), for `twinloop run --rig openephys`. Runs until "
      "a finite stream (--seconds) has been sent, or until SIGINT/SIGTERM."};
  BenchServerConfig config;
  config.simulation.pace = twinloop::drivers::Pace::kRealtime;
  std::string pace = "realtime";
  std::string probe_format = "twinloop";
  std::string drop, duplicate, reorder, corrupt, late_which, missing;
  bool quiet = false;

  app.add_option("--seed", config.simulation.seed, "Seed of the simulation and of every fault draw")
      ->capture_default_str();
  app.add_option("--units", config.simulation.unit_count, "Simulated units")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--channels", config.simulation.channels, "Neural channels (plus the sync word)")
      ->capture_default_str()
      ->check(CLI::Range(1, 384));
  app.add_option("--seconds", config.simulation.seconds,
                 "Stream duration in probe seconds; 0 streams until stopped")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--probe-endpoint", config.probe_endpoint,
                 "ZeroMQ endpoint to bind the probe stream (XPUB) on; tcp port '*' picks a free "
                 "one (printed at start)")
      ->capture_default_str();
  app.add_option("--probe-format", probe_format,
                 "twinloop: twinloop's block messages (--rig net); openephys: the Open Ephys GUI's "
                 "ZMQ Interface, neural channels only, heartbeats answered (--rig openephys)")
      ->capture_default_str()
      ->check(CLI::IsMember({"twinloop", "openephys"}));
  app.add_option("--heartbeat-endpoint", config.heartbeat_endpoint,
                 "openephys: endpoint to answer heartbeats on (default: the data port + 1, as the "
                 "GUI)");
  app.add_option("--sample-offset", config.sample_offset,
                 "Added to every sample number sent (blocks, onsets) and taken off those received: "
                 "a stream whose clock did not start at 0")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 50));
  app.add_option("--stimulus-endpoint", config.stimulus_endpoint,
                 "ZeroMQ endpoint to bind the stimulus endpoint (ROUTER) on")
      ->capture_default_str();
  app.add_option("--probe-id", config.probe_id, "Probe id written into every message")
      ->capture_default_str();
  app.add_option("--pace", pace,
                 "realtime: blocks as the probe digitises them; max: as fast as possible")
      ->capture_default_str()
      ->check(CLI::IsMember({"realtime", "max"}));
  app.add_option("--block-samples", config.simulation.block_samples,
                 "Samples per block (30 = 1 ms at 30 kHz)")
      ->capture_default_str()
      ->check(CLI::Range(1, 30000));
  app.add_flag("--wait-for-subscriber", config.wait_for_subscriber,
               "Start the stream (and its clock) only when the first subscriber has joined");
  app.add_option("--drop-blocks", drop, "Blocks not sent (SPEC)")->check(selection_validator());
  app.add_option("--duplicate-blocks", duplicate, "Blocks sent twice in a row (SPEC)")
      ->check(selection_validator());
  app.add_option("--reorder-blocks", reorder, "Blocks held back and sent after the next one (SPEC)")
      ->check(selection_validator());
  app.add_option("--corrupt", corrupt,
                 "Blocks with one payload byte flipped after the checksum was computed (SPEC)")
      ->check(selection_validator());
  app.add_option("--late-onset-ms", config.faults.late_onset_ms,
                 "Move the onsets chosen by --late-onsets this many ms past the earliest onset the "
                 "stimulator could have met; the acknowledgement reports the real (late) onset")
      ->check(CLI::Range(0.0, 60000.0));
  app.add_option("--late-onsets", late_which,
                 "Which commands --late-onset-ms applies to (SPEC; default every command)")
      ->check(selection_validator());
  app.add_option("--missing-onset", missing, "Commands neither delivered nor acknowledged (SPEC)")
      ->check(selection_validator());
  app.add_option("--disconnect-at", config.faults.disconnect_at_s,
                 "Close both sockets once the stream reaches this many probe seconds; blocks "
                 "generated meanwhile are lost")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--disconnect-for", config.faults.disconnect_for_s,
                 "Wall-clock seconds until both sockets are bound again on the same endpoints")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_flag("--quiet", quiet, "Print only errors");
  CLI11_PARSE(app, argc, argv);

  if (probe_format == "openephys") config.probe_format = twinloop::hil::ProbeFormat::kOpenEphys;
  config.simulation.pace =
      pace == "max" ? twinloop::drivers::Pace::kMax : twinloop::drivers::Pace::kRealtime;
  auto& f = config.faults;
  // The validators accepted these already, so parsing cannot fail here.
  if (!drop.empty()) (void)twinloop::hil::parse_fault_selection(drop, f.drop);
  if (!duplicate.empty()) (void)twinloop::hil::parse_fault_selection(duplicate, f.duplicate);
  if (!reorder.empty()) (void)twinloop::hil::parse_fault_selection(reorder, f.reorder);
  if (!corrupt.empty()) (void)twinloop::hil::parse_fault_selection(corrupt, f.corrupt);
  if (!late_which.empty()) (void)twinloop::hil::parse_fault_selection(late_which, f.late_onsets);
  if (!missing.empty()) (void)twinloop::hil::parse_fault_selection(missing, f.missing_onsets);

  try {
    BenchServer server(config);
    if (!server.start()) {
      std::fprintf(stderr, "twinloop-hil: %s\n", server.error().c_str());
      return 2;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (!quiet) {
      std::printf("probe stream (%s format) on %s\n", probe_format.c_str(),
                  server.probe_endpoint().c_str());
      if (!server.heartbeat_endpoint().empty()) {
        std::printf("heartbeats answered on %s\n", server.heartbeat_endpoint().c_str());
      }
      std::printf("stimulus endpoint on %s\n", server.stimulus_endpoint().c_str());
      std::fflush(stdout);
    }
    bool finished = false;
    while (stop_signal == 0 && !finished) {
      finished = server.wait_finished(std::chrono::milliseconds(100));
    }
    if (finished) {
      // Let subscribers take the last blocks and the stream-end message off the wire.
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    server.stop();
    if (!quiet) {
      const twinloop::hil::BenchCounters c = server.counters();
      std::printf(
          "blocks generated %llu, sent %llu (dropped %llu, duplicated %llu, reordered %llu, "
          "corrupted %llu, lost while disconnected %llu); disconnects %llu; commands %llu "
          "(delivered %llu, late %llu, missing %llu, refused %llu, malformed %llu)\n",
          static_cast<unsigned long long>(c.blocks_generated),
          static_cast<unsigned long long>(c.blocks_sent),
          static_cast<unsigned long long>(c.dropped), static_cast<unsigned long long>(c.duplicated),
          static_cast<unsigned long long>(c.reordered),
          static_cast<unsigned long long>(c.corrupted),
          static_cast<unsigned long long>(c.lost_while_disconnected),
          static_cast<unsigned long long>(c.disconnects),
          static_cast<unsigned long long>(c.commands), static_cast<unsigned long long>(c.delivered),
          static_cast<unsigned long long>(c.late), static_cast<unsigned long long>(c.missing),
          static_cast<unsigned long long>(c.refused),
          static_cast<unsigned long long>(c.malformed_requests));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop-hil: %s\n", e.what());
    return 2;
  }
  return 0;
}

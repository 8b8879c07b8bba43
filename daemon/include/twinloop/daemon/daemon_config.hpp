// DaemonConfig: what `twinloop daemon` reads from its YAML file (config/twinloopd.yaml documents
// every field), and the loader that checks it as strictly as protocols are checked: every problem
// is reported as "file:line:column: error: field.path: found X, expected Y", unknown keys included.
// Plain values; the loader is pure apart from reading the file and is thread safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/protocols/diagnostic.hpp"

namespace twinloop::daemon {

/// Which rig sessions run on, and how it is reached.
struct DaemonRigConfig {
  /// "sim" (simulated subject and probe in process), "net" (a rig over ZeroMQ) or "openephys"
  /// (the probe from the Open Ephys GUI's ZMQ Interface, stimuli to a twinloop endpoint)
  std::string kind = "sim";
  std::string probe_endpoint = "tcp://127.0.0.1:5555";     ///< net, openephys: the probe stream
  std::string stimulus_endpoint = "tcp://127.0.0.1:5556";  ///< net, openephys: the stimuli
  std::string heartbeat_endpoint;  ///< openephys: the GUI's REP port; empty: data port + 1
  std::uint64_t seed = 1;          ///< sim: subject and random choices
  drivers::Pace pace = drivers::Pace::kRealtime;  ///< sim: realtime or max
  std::string sim_model = "direction_tuning";     ///< sim: direction_tuning, null, mixed
  std::size_t sim_units = 64;                     ///< sim: units of the simulated subject
};

/// Optional real-time settings. Each is attempted only when asked for; when the system does not
/// permit it the daemon logs a warning and carries on without it.
struct RealtimeConfig {
  bool sched_fifo = false;  ///< the acquisition thread runs SCHED_FIFO
  int priority = 50;        ///< SCHED_FIFO priority, 1..99
  bool mlockall = false;    ///< lock current and future pages into memory
};

struct DaemonThreadsConfig {
  std::optional<int> acquisition_cpu;  ///< pin the acquisition thread to this CPU
  std::optional<int> session_cpu;      ///< pin the session (event loop) thread to this CPU
  /// pin the twins' refit thread to this CPU; default: every CPU the daemon started with (never
  /// the session's pinned one alone, where a refit would hold the event loop back)
  std::optional<int> refit_cpu;
  RealtimeConfig realtime;
};

struct DaemonConfig {
  DaemonRigConfig rig;
  DaemonThreadsConfig threads;
  std::filesystem::path sessions_dir;   ///< each session in sessions_dir/<protocol>-<UTC time>
  std::string publish_endpoint;         ///< monitoring stream; empty: none
  std::string control_endpoint;         ///< where `submit` and the session commands arrive
  std::filesystem::path control_key;    ///< the control socket's secret key file
  std::filesystem::path control_allow;  ///< allow-list of client public keys
  std::size_t control_queue = 16;       ///< control requests waiting for the engine
  std::size_t control_max_request_bytes = 2U << 20;  ///< larger requests are refused
  std::size_t publish_queue = 256;                   ///< per JSON topic of the monitoring stream
  int publish_hwm = 1000;               ///< messages per subscriber before ZeroMQ drops
  double max_session_seconds = 3600.0;  ///< longest session; its stop rules may end it sooner
};

struct DaemonConfigLoadResult {
  std::optional<DaemonConfig> config;              ///< set only when there is no diagnostic
  std::vector<protocols::Diagnostic> diagnostics;  ///< sorted by line, then column
  [[nodiscard]] bool ok() const noexcept { return config.has_value(); }
};

/// Checks a configuration's text. Relative paths in it are taken relative to `base_dir` (the
/// folder of the file), so a unit file can start the daemon from anywhere.
/// \param[in] display_name  the name diagnostics carry (usually the path)
[[nodiscard]] DaemonConfigLoadResult load_daemon_config_text(std::string_view text,
                                                             const std::string& display_name,
                                                             const std::filesystem::path& base_dir);
/// Reads and checks a configuration file; an unreadable file is one whole-file diagnostic.
[[nodiscard]] DaemonConfigLoadResult load_daemon_config_file(const std::filesystem::path& path);

}  // namespace twinloop::daemon

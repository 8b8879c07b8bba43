// The `twinloop` command-line tool's subcommands, as functions that the CLI front end (main.cpp)
// and the tests call. Each returns a process exit status: 0 success, 1 the input was refused or
// the work failed (a message on stderr says where and what), 2 bad usage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::daemon {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;

/// `twinloop check PROTOCOL...`: validates protocols without running anything.
int check_protocols(const std::vector<std::filesystem::path>& paths);

struct SimulateOptions {
  double seconds = 10.0;
  std::uint64_t seed = 1;
  std::size_t units = 64;
  std::filesystem::path out;
  drivers::Pace pace = drivers::Pace::kMax;
  bool quiet = false;
};
/// `twinloop simulate`: a simulated recording in SpikeGLX format plus its ground truth.
int simulate(const SimulateOptions& options);

struct DetectOptions {
  std::filesystem::path recording;       ///< a SpikeGLX .ap.bin, or an Open Ephys binary recording
  std::filesystem::path out;             ///< Phy-layout output folder; empty: nothing is written
  std::filesystem::path probeinterface;  ///< Open Ephys: site positions (default: a linear column)
  std::string command = "detect";        ///< the subcommand named in messages
  std::optional<std::filesystem::path> truth;  ///< folder with spike_times.npy etc. to score
  drivers::Pace pace = drivers::Pace::kMax;
  double threshold_sigma = 5.0;  ///< as acquisition::DetectorConfig
  std::size_t block_samples = 3000;
  bool quiet = false;
};
/// `twinloop detect`: the acquisition pipeline over a recording; detected spikes in Phy layout.
int detect(const DetectOptions& options);

struct RunOptions {
  std::filesystem::path protocol;
  /// "sim" (in process), "net" (twinloop-hil or a networked rig), "openephys" (the Open Ephys
  /// GUI's ZMQ Interface for the probe, a twinloop stimulus endpoint) or "recorded"
  std::string rig = "sim";
  std::string probe_endpoint = "tcp://127.0.0.1:5555";     ///< --rig net: the probe stream
  std::string stimulus_endpoint = "tcp://127.0.0.1:5556";  ///< --rig net: the stimulus endpoint
  std::string heartbeat_endpoint;     ///< --rig openephys: the GUI's REP port; empty: data port + 1
  std::string publish_endpoint;       ///< monitoring stream (docs/monitoring.md); empty: none
  std::string control_endpoint;       ///< control socket (docs/control.md); empty: none
  std::filesystem::path control_key;  ///< the server's secret key file (twinloop keygen)
  std::filesystem::path control_allow;  ///< allow-list of client public keys
  double seconds = 30.0;  ///< longest session; the protocol's stop rules may end it sooner
  std::uint64_t seed = 1;
  drivers::Pace pace = drivers::Pace::kRealtime;
  std::optional<std::filesystem::path> out;    ///< default: sessions/<protocol>-<time>
  std::optional<std::string> designer;         ///< "random" or "discriminate"; default: protocol's
  std::string sim_model = "direction_tuning";  ///< the simulated units' generative model
  std::size_t sim_units = 64;                  ///< how many units the simulated subject has
  /// --rig recorded: real neurons' recorded responses (hil/recorded_responses.hpp), a MATLAB v5
  /// file read unmodified, and the 0-based session in it.
  std::filesystem::path dataset;
  std::size_t dataset_session = 0;
  bool quiet = false;
  bool record_raw = false;  ///< also the protocol's record_raw: the raw stream to SESSION_DIR/raw
};
/// `twinloop run`: a closed-loop session on a rig: each trial designed, every twin's prediction
/// pre-registered in the session record, the stimulus delivered, spikes detected live and counted
/// in the response window, predictions scored; then the verdict, and (on the simulated rig) how
/// detection and the verdict compare with ground truth.
int run_session(const RunOptions& options);

struct ResumeOptions {
  std::filesystem::path dir;          ///< the interrupted session's directory
  std::optional<double> seconds;      ///< default: the session's own --seconds
  std::optional<drivers::Pace> pace;  ///< default: the session's own --pace
  bool quiet = false;
};
/// `twinloop resume DIR`: continues an interrupted session from its record. Scored trials are
/// rescored from what was recorded, trials in flight at the interruption are aborted on record,
/// and the session goes on with the configuration it was started with.
int resume_session(const ResumeOptions& options);

struct ControlClientOptions {
  std::string endpoint;
  std::filesystem::path server_key;  ///< the server's public key file
  std::filesystem::path key;         ///< this client's secret key file
  std::string command;               ///< status, pause, resume, abort, set_stop_rule
  std::optional<double> posterior_threshold;
  std::optional<std::uint32_t> max_trials;
  std::optional<double> max_minutes;
  std::string reason;
  double timeout_s = 5.0;
};
/// `twinloop control ENDPOINT COMMAND`: one authenticated request; prints the reply (JSON).
/// 0 when the reply says ok, 1 when it refuses or no reply came (e.g. the key is not allowed).
int control_client(const ControlClientOptions& options);

struct DaemonOptions {
  std::filesystem::path config;  ///< the daemon's YAML configuration (config/twinloopd.yaml)
};
/// `twinloop daemon --config FILE`: the long-running daemon (docs/twinloopd.md). Serves the
/// control socket, runs submitted protocols one at a time on the configured rig, and on
/// SIGINT/SIGTERM ends the running session after its trial in flight and returns kExitOk.
/// kExitRefused when the configuration is refused (file:line:column diagnostics on stderr) or
/// its sockets or keys cannot be set up.
int run_daemon(const DaemonOptions& options);

struct SubmitOptions {
  std::string endpoint;              ///< the daemon's control endpoint
  std::filesystem::path protocol;    ///< YAML protocol file, sent as text
  std::filesystem::path server_key;  ///< the daemon's public key file
  std::filesystem::path key;         ///< this client's secret key file
  double timeout_s = 10.0;
};
/// `twinloop run --daemon ENDPOINT PROTOCOL`: submits a protocol to a daemon. Prints the session
/// directory the daemon will write; kExitRefused with the daemon's reason (e.g. the protocol's
/// file:line errors, or "busy") when it refuses, or when no reply came.
int submit_protocol(const SubmitOptions& options);

struct ReplayOptions {
  /// A session recorded with record_raw (or any session, with `raw`); or a bare recording (Open
  /// Ephys binary, SpikeGLX .bin), which then runs through the acquisition path only
  std::filesystem::path dir;
  /// The session's raw stream from elsewhere: a SpikeGLX .bin or an Open Ephys binary recording
  /// whose sample numbers are the session's sample clock. Default: DIR/raw/
  std::optional<std::filesystem::path> raw;
  /// Site positions for an Open Ephys stream (default for a session: its protocol's probe layout)
  std::filesystem::path probeinterface;
  drivers::Pace pace = drivers::Pace::kMax;
  std::optional<std::filesystem::path> out;  ///< the replay's own record; default DIR/replay-N
  /// "random" or "discriminate": also ask whether that designer would have reached the verdict
  /// sooner (observed responses where they exist, the reference twin's draws elsewhere)
  std::optional<std::string> designer;
  std::size_t counterfactual_runs = 10;  ///< seeded runs per designer in the counterfactual world
  bool quiet = false;
};
/// `twinloop replay DIR`: re-runs a recorded session (its raw stream and its record)
/// through the same acquisition, twin and scoring code, writes the replay's own record, and
/// reports every difference from the original. 0 when the replay reproduces the record exactly.
int replay_session(const ReplayOptions& options);

/// `twinloop verify DIR`: checks a session record (hash chain intact, every prediction committed
/// before its trial's delivery) and prints a report; 0 when clean, 1 naming each violation.
int verify_session(const std::filesystem::path& dir);

}  // namespace twinloop::daemon

// twinloop: the command-line front end. Parses arguments with CLI11 and calls the subcommands in
// twinloop/daemon/commands.hpp, which hold all behaviour (and are what the tests call).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/keys.hpp"
#include "twinloop/daemon/monitor.hpp"
#include "twinloop/daemon/nwb_export.hpp"
#include "twinloop/daemon/report.hpp"

namespace {

using twinloop::drivers::Pace;

Pace pace_from(const std::string& text) {
  Pace pace = Pace::kMax;
  (void)twinloop::drivers::parse_pace(text, pace);  // CLI11 already restricted the text
  return pace;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "twinloop: closed-loop experiment controller. Streams spikes from a probe, tests competing "
      "models of the recorded neurons, and logs every prediction before its stimulus."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "twinloop 0.1.0");

  std::vector<std::string> check_paths;
  auto* check = app.add_subcommand(
      "check", "Validate protocol files and build their twins, without running anything");
  check->add_option("PROTOCOL", check_paths, "YAML protocol file(s)")->required();

  twinloop::daemon::SimulateOptions sim;
  std::string sim_pace = "max";
  auto* simulate = app.add_subcommand(
      "simulate",
      "Write a simulated Neuropixels 1.0 recording (SpikeGLX .ap.bin/.ap.meta) and its ground "
      "truth (spike_times.npy, spike_clusters.npy, cluster_info.tsv)");
  simulate->add_option("--seconds", sim.seconds, "Duration in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  simulate->add_option("--seed", sim.seed, "Random seed (same seed, same recording)")
      ->capture_default_str();
  simulate->add_option("--units", sim.units, "Number of simulated units")
      ->capture_default_str()
      ->check(CLI::Range(1, 2000));
  simulate->add_option("--out", sim.out, "Output folder (created)")->required();
  simulate
      ->add_option("--pace", sim_pace,
                   "realtime: as a probe would deliver; max: as fast as possible")
      ->capture_default_str()
      ->check(CLI::IsMember({"realtime", "max"}));
  simulate->add_flag("--quiet", sim.quiet, "No progress display");

  twinloop::daemon::DetectOptions det;
  std::string det_pace = "max";
  std::string truth;
  auto* detect = app.add_subcommand(
      "detect",
      "Run the spike-detection pipeline over a SpikeGLX or Open Ephys binary recording; write "
      "detected spikes in the Phy/Kilosort layout (one cluster per detection channel) and print "
      "throughput");
  detect
      ->add_option("RECORDING", det.recording,
                   "A SpikeGLX .ap.bin (its .meta beside it), or an Open Ephys structure.oebin or "
                   "its folder (the first stream with more than one channel)")
      ->required();
  detect->add_option("--out", det.out, "Output folder (created)")->required();
  detect->add_option("--truth", truth,
                     "Folder with ground-truth spike_times.npy, spike_clusters.npy and "
                     "cluster_info.tsv (with an snr column) to score against");
  detect->add_option("--threshold", det.threshold_sigma, "Threshold in MAD noise units")
      ->capture_default_str()
      ->check(CLI::Range(2.0, 20.0));
  detect->add_option("--block-samples", det.block_samples, "Samples per block read")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  detect->add_option("--pace", det_pace, "realtime or max")
      ->capture_default_str()
      ->check(CLI::IsMember({"realtime", "max"}));
  detect->add_option("--probeinterface", det.probeinterface,
                     "Open Ephys: a probeinterface JSON with the sites (default: a straight "
                     "column, 100 um apart)");
  detect->add_flag("--quiet", det.quiet, "No progress display");

  twinloop::daemon::RunOptions run;
  std::string run_pace = "realtime";
  std::string run_out;
  auto* run_cmd = app.add_subcommand(
      "run",
      "Run a closed-loop session: each trial designed to tell the protocol's hypotheses apart, "
      "their predictions pre-registered in the session record before the stimulus, spikes "
      "detected live and counted, predictions scored; ends with the verdict (and, on the "
      "simulated rig, a comparison with ground truth)");
  run_cmd->add_option("PROTOCOL", run.protocol, "YAML protocol file")->required();
  twinloop::daemon::SubmitOptions submit;
  run_cmd->add_option("--daemon", submit.endpoint,
                      "Submit the protocol to a running daemon's control endpoint instead of "
                      "running it here (docs/twinloopd.md); needs --server-key and --key");
  run_cmd->add_option("--server-key", submit.server_key, "--daemon: the daemon's public key file");
  run_cmd->add_option("--key", submit.key, "--daemon: this client's secret key file");
  run_cmd
      ->add_option("--rig", run.rig,
                   "Which rig: sim (the built-in simulated subject and probe, in this process), "
                   "net (a rig served over ZeroMQ, e.g. by twinloop-hil; see docs/wire-format.md), "
                   "openephys (the probe from the Open Ephys GUI's ZMQ Interface, stimuli to a "
                   "twinloop stimulus endpoint; docs/openephys-zmq.md) or recorded (real "
                   "neurons' recorded responses: --dataset)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sim", "net", "openephys", "recorded"}));
  run_cmd
      ->add_option("--probe-endpoint", run.probe_endpoint,
                   "--rig net: the probe stream; --rig openephys: the GUI's data port (its ZMQ "
                   "Interface binds tcp://*:5556)")
      ->capture_default_str();
  run_cmd->add_option("--heartbeat-endpoint", run.heartbeat_endpoint,
                      "--rig openephys: the GUI's heartbeat port (default: the data port + 1)");
  run_cmd
      ->add_option("--stimulus-endpoint", run.stimulus_endpoint,
                   "--rig net and openephys: the stimulus endpoint")
      ->capture_default_str();
  run_cmd->add_option("--dataset", run.dataset,
                      "--rig recorded: MATLAB v5 file of recorded responses, read unmodified "
                      "(e.g. ../shared/data/v1_gratings_ecker2010/data_v1_binned_moving.mat)");
  run_cmd
      ->add_option("--dataset-session", run.dataset_session,
                   "--rig recorded: which session of the file (0-based)")
      ->capture_default_str();
  run_cmd
      ->add_option("--seconds", run.seconds,
                   "Session length in seconds of the probe's stream; no trial starts whose "
                   "response window would end after it")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  run_cmd->add_option("--seed", run.seed, "Seed of the simulated subject and of random choices")
      ->capture_default_str();
  run_cmd
      ->add_option("--pace", run_pace,
                   "realtime, or max: the simulated stream as fast as this machine runs it, "
                   "but only as far as the trial in flight needs, so design and refits spend "
                   "none of --seconds, every onset is the one planned, and a --seed gives "
                   "the same session on this machine unless a decision misses its deadline")
      ->capture_default_str()
      ->check(CLI::IsMember({"realtime", "max"}));
  run_cmd->add_option("--out", run_out,
                      "Session folder to create (must not exist; default: "
                      "sessions/<protocol>-<UTC time>)");
  std::string run_designer;
  run_cmd->add_option("--designer", run_designer, "Override the protocol's designer strategy")
      ->check(CLI::IsMember({"random", "discriminate"}));
  run_cmd
      ->add_option("--sim-model", run.sim_model,
                   "Generative model of the simulated units: direction_tuning, null (so that "
                   "hypothesis is true) or mixed (none of the built-in families is)")
      ->capture_default_str()
      ->check(CLI::IsMember({"direction_tuning", "null", "mixed"}));
  run_cmd
      ->add_option("--sim-units", run.sim_units,
                   "Units of the simulated subject along the probe; the more, the more detection "
                   "channels pool several of them")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}));
  run_cmd->add_flag("--quiet", run.quiet, "No live progress");
  run_cmd->add_flag("--record-raw", run.record_raw,
                    "Record the raw probe stream in SpikeGLX format in SESSION_DIR/raw/ for "
                    "`twinloop replay` (refused when the disk cannot hold --seconds of it)");
  run_cmd->add_option("--publish", run.publish_endpoint,
                      "Publish the monitoring stream (spikes, trials, posterior, health) on this "
                      "ZeroMQ endpoint, e.g. tcp://*:5560 (docs/monitoring.md)");
  run_cmd->add_option("--control", run.control_endpoint,
                      "Accept authenticated commands (status, pause, resume, abort, stop rules) "
                      "on this ZeroMQ endpoint (docs/control.md); needs --control-key and "
                      "--control-allow");
  run_cmd->add_option("--control-key", run.control_key,
                      "The control socket's secret key file (from twinloop keygen)");
  run_cmd->add_option("--control-allow", run.control_allow,
                      "Allow-list of client public keys, one per line");

  twinloop::daemon::DaemonOptions daemon_options;
  auto* daemon_cmd = app.add_subcommand(
      "daemon",
      "Run the long-running daemon: serves its control socket, runs protocols submitted with "
      "`twinloop run --daemon` one at a time on its rig, stops cleanly on SIGTERM "
      "(docs/twinloopd.md)");
  daemon_cmd->add_option("--config", daemon_options.config, "Daemon configuration (YAML)")
      ->required();

  twinloop::daemon::ResumeOptions resume;
  double resume_seconds = 0.0;
  std::string resume_pace;
  auto* resume_cmd = app.add_subcommand(
      "resume",
      "Continue a session that was interrupted (crash, power cut, kill -9) from its record: scored "
      "trials are rescored from what was recorded, trials in flight are aborted on record, and "
      "the session goes on with the configuration it was started with");
  resume_cmd->add_option("SESSION_DIR", resume.dir, "Session directory (holds session.sqlite)")
      ->required();
  resume_cmd
      ->add_option("--seconds", resume_seconds,
                   "Longest continuation in seconds (default: the session's own --seconds)")
      ->check(CLI::Range(1.0, 86400.0));
  resume_cmd
      ->add_option("--pace", resume_pace, "realtime or max (default: the session's own --pace)")
      ->check(CLI::IsMember({"realtime", "max"}));
  resume_cmd->add_flag("--quiet", resume.quiet, "No live progress");

  twinloop::daemon::MonitorOptions monitor_options;
  auto* monitor_cmd = app.add_subcommand(
      "monitor", "Live terminal view of a session's monitoring stream (read-only)");
  monitor_cmd->add_option("ENDPOINT", monitor_options.endpoint, "The session's --publish endpoint")
      ->required();
  monitor_cmd->add_option("--seconds", monitor_options.seconds, "Stop after this long (0: Ctrl-C)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  monitor_cmd->add_flag("--once", monitor_options.once_plain,
                        "Draw nothing while running; print one plain snapshot at the end");

  twinloop::daemon::KeygenOptions keygen_options;
  auto* keygen_cmd = app.add_subcommand(
      "keygen",
      "Write a CURVE key pair for the control socket: PREFIX.key_secret (mode 0600) "
      "and PREFIX.key (public; append it to a session's allow-list)");
  keygen_cmd->add_option("--out", keygen_options.out_prefix, "Path prefix of the two files")
      ->required();
  keygen_cmd->add_flag("--force", keygen_options.force, "Overwrite existing key files");

  twinloop::daemon::ControlClientOptions control_options;
  double control_threshold = 0.0, control_minutes = 0.0;
  std::uint32_t control_trials = 0;
  auto* control_cmd =
      app.add_subcommand("control", "Send one authenticated command to a session's control socket");
  control_cmd->add_option("ENDPOINT", control_options.endpoint, "The session's --control endpoint")
      ->required();
  control_cmd
      ->add_option("COMMAND", control_options.command,
                   "status, pause, resume, abort or "
                   "set_stop_rule")
      ->required()
      ->check(CLI::IsMember({"status", "pause", "resume", "abort", "set_stop_rule"}));
  control_cmd
      ->add_option("--server-key", control_options.server_key, "The session's public key file")
      ->required();
  control_cmd->add_option("--key", control_options.key, "This client's secret key file")
      ->required();
  control_cmd->add_option("--posterior-threshold", control_threshold,
                          "set_stop_rule: new posterior threshold, in (0.5, 1)");
  control_cmd->add_option("--max-trials", control_trials, "set_stop_rule: new trial budget");
  control_cmd->add_option("--max-minutes", control_minutes, "set_stop_rule: new time budget");
  control_cmd->add_option("--reason", control_options.reason, "abort: the operator's words");
  control_cmd->add_option("--timeout", control_options.timeout_s, "Seconds to wait for the reply")
      ->capture_default_str();

  twinloop::daemon::ReplayOptions replay_options;
  std::string replay_pace = "max";
  std::string replay_out;
  auto* replay_cmd = app.add_subcommand(
      "replay",
      "Re-run a recorded session (run with --record-raw, or with its stream given by --raw) "
      "through the same acquisition, twin and scoring code: spikes re-detected from its raw "
      "stream, every trial re-designed, predicted and scored; reports each difference from the "
      "record (exit 0 only when it reproduces it). Given a bare SpikeGLX or Open Ephys "
      "recording instead, runs it through the acquisition path only");
  replay_cmd
      ->add_option("SESSION_DIR", replay_options.dir,
                   "Session directory; or a recording (SpikeGLX .ap.bin, Open Ephys "
                   "structure.oebin or its folder) to run through acquisition alone")
      ->required();
  std::string replay_raw;
  replay_cmd->add_option("--raw", replay_raw,
                         "The session's raw stream from elsewhere: a SpikeGLX .ap.bin or an Open "
                         "Ephys binary recording whose sample numbers are the session's clock "
                         "(default SESSION_DIR/raw/)");
  replay_cmd->add_option("--probeinterface", replay_options.probeinterface,
                         "Site positions for an Open Ephys stream (a probeinterface JSON; "
                         "default: the protocol's probe layout)");
  replay_cmd
      ->add_option("--pace", replay_pace,
                   "realtime: re-read the raw stream at the probe's rate; max: as fast as possible")
      ->capture_default_str()
      ->check(CLI::IsMember({"realtime", "max"}));
  replay_cmd->add_option("--out", replay_out,
                         "Folder for the replay's own record (default SESSION_DIR/replay-N); for "
                         "a bare recording, where to write its detected spikes (default: none)");
  std::string replay_designer;
  replay_cmd
      ->add_option("--designer", replay_designer,
                   "Also ask, at each recorded trial, what this designer would have chosen given "
                   "the real history (with both choices' expected information gain), and whether "
                   "it would have reached the verdict sooner: both designers run where recorded "
                   "responses answer the stimuli they cover and a twin fitted to the session "
                   "answers the rest; the report says which is which")
      ->check(CLI::IsMember({"random", "discriminate"}));
  replay_cmd
      ->add_option("--counterfactual-runs", replay_options.counterfactual_runs,
                   "Seeded runs per designer for --designer")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  replay_cmd->add_flag("--quiet", replay_options.quiet, "No progress display");

  std::string verify_dir;
  auto* verify = app.add_subcommand(
      "verify",
      "Check a session record: the hash chain over predictions and outcomes is intact and every "
      "prediction was committed before its stimulus was delivered");
  verify->add_option("SESSION_DIR", verify_dir, "Session directory (holds session.sqlite)")
      ->required();

  twinloop::daemon::ReportOptions report_options;
  std::string report_out;
  auto* report_cmd = app.add_subcommand(
      "report",
      "Write a self-contained HTML validation report of a session (verify result, verdict and "
      "posterior, predictions against outcomes, calibration, stimuli, information gain, events) "
      "to SESSION_DIR/report.html (docs/report.md)");
  report_cmd
      ->add_option("SESSION_DIR", report_options.dir, "Session directory (holds session.sqlite)")
      ->required();
  report_cmd->add_option("--out", report_out, "Write the report here instead");

  twinloop::daemon::ExportOptions export_options;
  auto* export_cmd = app.add_subcommand(
      "export",
      "Write a finished session's trials, stimuli, units and spike times to an NWB 2.x file "
      "(docs/export.md)");
  export_cmd->add_option("SESSION_DIR", export_options.session_dir, "Session directory")
      ->required();
  export_cmd->add_option("--nwb", export_options.nwb, "The NWB file to write")->required();
  export_cmd->add_flag("--force", export_options.force, "Replace the NWB file if it exists");
  export_cmd->add_flag("--quiet", export_options.quiet, "No summary line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int status = app.exit(e);
    return status == 0 ? 0 : twinloop::daemon::kExitUsage;
  }

  if (check->parsed()) {
    std::vector<std::filesystem::path> paths(check_paths.begin(), check_paths.end());
    return twinloop::daemon::check_protocols(paths);
  }
  if (simulate->parsed()) {
    sim.pace = pace_from(sim_pace);
    return twinloop::daemon::simulate(sim);
  }
  if (detect->parsed()) {
    det.pace = pace_from(det_pace);
    if (!truth.empty()) det.truth = truth;
    return twinloop::daemon::detect(det);
  }
  if (daemon_cmd->parsed()) return twinloop::daemon::run_daemon(daemon_options);
  if (run_cmd->parsed() && !submit.endpoint.empty()) {
    if (submit.server_key.empty() || submit.key.empty()) {
      std::fprintf(stderr, "twinloop run: --daemon needs --server-key and --key\n");
      return twinloop::daemon::kExitUsage;
    }
    submit.protocol = run.protocol;
    return twinloop::daemon::submit_protocol(submit);
  }
  if (run_cmd->parsed()) {
    run.pace = pace_from(run_pace);
    if (!run_out.empty()) run.out = run_out;
    if (!run_designer.empty()) run.designer = run_designer;
    return twinloop::daemon::run_session(run);
  }
  if (resume_cmd->parsed()) {
    if (resume_seconds > 0.0) resume.seconds = resume_seconds;
    if (!resume_pace.empty()) resume.pace = pace_from(resume_pace);
    return twinloop::daemon::resume_session(resume);
  }
  if (monitor_cmd->parsed()) return twinloop::daemon::monitor(monitor_options);
  if (keygen_cmd->parsed()) return twinloop::daemon::keygen(keygen_options);
  if (control_cmd->parsed()) {
    if (control_threshold > 0.0) control_options.posterior_threshold = control_threshold;
    if (control_trials > 0) control_options.max_trials = control_trials;
    if (control_minutes > 0.0) control_options.max_minutes = control_minutes;
    return twinloop::daemon::control_client(control_options);
  }
  if (replay_cmd->parsed()) {
    replay_options.pace = pace_from(replay_pace);
    if (!replay_out.empty()) replay_options.out = replay_out;
    if (!replay_raw.empty()) replay_options.raw = replay_raw;
    if (!replay_designer.empty()) replay_options.designer = replay_designer;
    return twinloop::daemon::replay_session(replay_options);
  }
  if (verify->parsed()) return twinloop::daemon::verify_session(verify_dir);
  if (report_cmd->parsed()) {
    if (!report_out.empty()) report_options.out = report_out;
    return twinloop::daemon::write_report(report_options);
  }
  if (export_cmd->parsed()) return twinloop::daemon::export_session(export_options);
  return twinloop::daemon::kExitUsage;
}

// The long-running daemon: its configuration refused with file:line:column and the field when
// wrong, and a live daemon on the simulated rig that takes submitted protocols one at a time,
// refuses what it cannot run, and on SIGTERM closes the running session's record and exits 0.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "daemon_test_support.hpp"
#include "twinloop/daemon/daemon_config.hpp"

namespace {

namespace fs = std::filesystem;
using twinloop::daemon::load_daemon_config_text;
using twinloop::protocols::format_diagnostics;

using Result = twinloop::test_support::ShellResult;
using twinloop::test_support::shell;

const std::string kTwinloop = TWINLOOP_BINARY;

constexpr const char* kGoodConfig = R"(rig:
  kind: sim
  seed: 3
  pace: realtime
sessions_dir: sessions
control:
  endpoint: ipc:///tmp/x
  secret_key: server.key_secret
  allow_list: allow
)";

std::string refused(const std::string& text) {
  const auto result = load_daemon_config_text(text, "d.yaml", "/etc/twinloop");
  EXPECT_FALSE(result.ok()) << text;
  return format_diagnostics(result.diagnostics);
}

TEST(DaemonConfig, AcceptsAMinimalConfigAndResolvesPathsAgainstItsFolder) {
  const auto result = load_daemon_config_text(kGoodConfig, "d.yaml", "/etc/twinloop");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.config->rig.seed, 3U);
  EXPECT_EQ(result.config->rig.sim_units, 64U);
  EXPECT_EQ(result.config->sessions_dir, fs::path("/etc/twinloop/sessions"));
  EXPECT_EQ(result.config->control_key, fs::path("/etc/twinloop/server.key_secret"));
  EXPECT_FALSE(result.config->threads.realtime.sched_fifo);
  EXPECT_FALSE(result.config->threads.refit_cpu.has_value());
  const auto placed = load_daemon_config_text(
      std::string(kGoodConfig) + "threads: {session_cpu: 3, refit_cpu: 1}\n", "d.yaml", "/etc");
  ASSERT_TRUE(placed.ok()) << format_diagnostics(placed.diagnostics);
  EXPECT_EQ(placed.config->threads.refit_cpu, 1);
  EXPECT_EQ(placed.config->threads.session_cpu, 3);
  std::string smaller(kGoodConfig);
  smaller.replace(smaller.find("  pace:"), 0, "  sim_units: 8\n");
  const auto few = load_daemon_config_text(smaller, "d.yaml", "/etc");
  ASSERT_TRUE(few.ok()) << format_diagnostics(few.diagnostics);
  EXPECT_EQ(few.config->rig.sim_units, 8U);
  smaller.replace(smaller.find("sim_units: 8"), 12, "sim_units: 0");
  EXPECT_NE(refused(smaller).find("d.yaml:4:14: error: rig.sim_units: found '0'"),
            std::string::npos)
      << refused(smaller);
}

TEST(DaemonConfig, TheShippedExampleIsValid) {
  const fs::path example = fs::path(TWINLOOP_SOURCE_DIR) / "config" / "twinloopd.yaml";
  const auto result = twinloop::daemon::load_daemon_config_file(example);
  EXPECT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
}

TEST(DaemonConfig, EveryProblemNamesFileLineColumnAndField) {
  // An unknown key, at the key itself.
  EXPECT_NE(refused(std::string(kGoodConfig) + "threads:\n  acquisition_cpu: 2\n  sesion_cpu: 3\n")
                .find("d.yaml:12:3: error: threads.sesion_cpu: found an unknown key"),
            std::string::npos);
  // A wrong value, a number out of range and a wrong type, all reported in one pass.
  const std::string many = refused(R"(rig: {kind: fpga}
sessions_dir: s
control: {endpoint: e, secret_key: k, allow_list: a, queue: -1}
threads:
  realtime: {sched_fifo: maybe, priority: 200}
limits: {max_session_seconds: [1]}
)");
  EXPECT_NE(
      many.find("d.yaml:1:13: error: rig.kind: found 'fpga', expected one of sim, net, openephys"),
      std::string::npos)
      << many;
  EXPECT_NE(many.find("d.yaml:3:61: error: control.queue: found '-1', expected an integer in"),
            std::string::npos)
      << many;
  EXPECT_NE(many.find("d.yaml:5:26: error: threads.realtime.sched_fifo: found 'maybe', expected "
                      "true or false"),
            std::string::npos)
      << many;
  EXPECT_NE(many.find("d.yaml:5:43: error: threads.realtime.priority: found '200'"),
            std::string::npos)
      << many;
  EXPECT_NE(many.find("d.yaml:6:31: error: limits.max_session_seconds: found a list"),
            std::string::npos)
      << many;
  // A missing required section, and a net rig without its endpoints.
  const std::string missing = refused("rig: {kind: net}\nsessions_dir: s\n");
  EXPECT_NE(missing.find("error: control: found nothing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("error: rig.probe_endpoint: found nothing"), std::string::npos) << missing;
  const std::string gui = refused("rig: {kind: openephys, probe_endpoint: tcp://gui:5556}\n");
  EXPECT_NE(gui.find("error: rig.stimulus_endpoint: found nothing"), std::string::npos) << gui;
  EXPECT_NE(gui.find("(rig.kind is openephys)"), std::string::npos) << gui;
  // Broken YAML still gets a position.
  EXPECT_NE(refused("rig: {kind: sim\n").find("d.yaml:2:"), std::string::npos);
}

TEST(DaemonConfig, TheDaemonRefusesABadConfigBeforeStarting) {
  const fs::path dir = fs::temp_directory_path() / ("twinloopd_cfg_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "bad.yaml") << std::string(kGoodConfig) << "limits: {max_seconds: 5}\n";
  const Result r = shell(kTwinloop + " daemon --config " + (dir / "bad.yaml").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("bad.yaml:10:10: error: limits.max_seconds: found an unknown key"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(dir / "sessions"));
  fs::remove_all(dir);
}

std::string protocol_text(const std::string& name, int max_trials) {
  return twinloop::test_support::short_trials_protocol(name, max_trials, false);
}

// The session directory named by `twinloop run --daemon`'s reply.
fs::path accepted_dir(const std::string& output) {
  const std::string marker = "accepted; session ";
  const auto at = output.find(marker);
  if (at == std::string::npos) return {};
  const auto start = at + marker.size();
  return output.substr(start, output.find('\n', start) - start);
}

// Runs `command` under sh in a child process; its pid.
pid_t spawn(const std::string& command) {
  const pid_t child = fork();
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

// A daemon's folder with a server key and an operator key on its allow-list, and the operator's
// side of it: submit, status, waiting for a state.
class DaemonFolder {
 public:
  explicit DaemonFolder(const std::string& stem)
      : dir_(fs::temp_directory_path() / (stem + "_" + std::to_string(::getpid()))),
        control_("ipc://" + (dir_ / "ctl").string()),
        keys_(" --server-key " + (dir_ / "server.key").string() + " --key " +
              (dir_ / "operator.key_secret").string()) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const char* who : {"server", "operator"}) {
      const Result r = shell(kTwinloop + " keygen --out " + (dir_ / who).string());
      EXPECT_EQ(r.status, 0) << r.output;
    }
    fs::copy_file(dir_ / "operator.key", dir_ / "allow");
  }
  [[nodiscard]] const fs::path& dir() const { return dir_; }
  /// The config's control section, for this folder's keys.
  [[nodiscard]] std::string control_yaml() const {
    return "control: {endpoint: '" + control_ +
           "', secret_key: server.key_secret, allow_list: allow}\n";
  }
  /// `twinloop daemon` on dir/twinloopd.yaml, its output in dir/daemon.log.
  [[nodiscard]] pid_t start_daemon() const {
    return spawn(kTwinloop + " daemon --config " + (dir_ / "twinloopd.yaml").string() + " > " +
                 (dir_ / "daemon.log").string() + " 2>&1");
  }
  [[nodiscard]] Result submit(const std::string& file) const {
    return shell(kTwinloop + " run --daemon " + control_ + " " + (dir_ / file).string() + keys_);
  }
  [[nodiscard]] nlohmann::json status() const {
    const Result r = shell(kTwinloop + " control " + control_ + " status" + keys_ + " --timeout 2");
    const auto brace = r.output.find('{');
    if (r.status != 0 || brace == std::string::npos) return nullptr;
    return nlohmann::json::parse(r.output.substr(brace), nullptr, false);
  }
  /// Polls status() until `done` holds (true) or `seconds` pass (false).
  template <class Done>
  [[nodiscard]] bool wait_for(const Done& done, int seconds) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      const nlohmann::json s = status();
      if (s.is_object() && done(s)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ / "daemon.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  fs::path dir_;
  std::string control_;
  std::string keys_;
};

bool idle(const nlohmann::json& s) {
  return s.value("state", "") == "idle";
}

TEST(Twinloopd, RunsSubmittedSessionsOneAtATimeAndStopsCleanlyOnSigterm) {
  const DaemonFolder folder("twinloopd");
  const fs::path& dir = folder.dir();
  std::ofstream(dir / "twinloopd.yaml")
      << "rig: {kind: sim, seed: 2, pace: realtime}\n"
      << "sessions_dir: sessions\n"
      << "publish: {endpoint: 'ipc://" << (dir / "pub").string() << "'}\n"
      << folder.control_yaml() << "limits: {max_session_seconds: 60}\n";
  std::ofstream(dir / "short.yaml") << protocol_text("daemon_short", 30);
  std::ofstream(dir / "long.yaml") << protocol_text("daemon_long", 500);
  std::ofstream(dir / "bad.yaml") << "twinloop_protocol: 1\nname: bad\nstop: {max_trials: -3}\n";

  const pid_t child = folder.start_daemon();
  ASSERT_GE(child, 0);
  const auto submit = [&](const char* file) { return folder.submit(file); };
  const auto wait_for = [&](const auto& done, int seconds) {
    return folder.wait_for(done, seconds);
  };
  const auto log = [&] { return folder.log(); };
  const auto stop_daemon = [&] {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
  };

  if (!wait_for(idle, 20)) {
    stop_daemon();
    FAIL() << "the daemon did not answer\n" << log();
  }

  // First session: accepted; a second submit while it runs is refused as busy.
  const Result first = submit("short.yaml");
  EXPECT_EQ(first.status, 0) << first.output;
  const fs::path first_dir = accepted_dir(first.output);
  EXPECT_EQ(first_dir.parent_path(), dir / "sessions") << first.output;
  EXPECT_EQ(first_dir.filename().string().rfind("daemon_short-", 0), 0U) << first.output;
  const Result busy = submit("long.yaml");
  EXPECT_EQ(busy.status, 1) << busy.output;
  EXPECT_NE(busy.output.find("busy: session daemon_short-"), std::string::npos) << busy.output;
  // A malformed protocol is refused with its file:line diagnostics.
  const Result bad = submit("bad.yaml");
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("bad.yaml:3:"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("stop.max_trials"), std::string::npos) << bad.output;

  // It runs to its trial budget, then the daemon is idle again.
  const bool first_done = wait_for(
      [](const nlohmann::json& s) {
        return s.value("state", "") == "idle" && s.value("sessions_run", 0) == 1;
      },
      30);
  if (!first_done) {
    stop_daemon();
    FAIL() << "the first session did not end\n" << log();
  }
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(first_dir / "summary.json"));
  // Its trial budget, or fewer when the posterior stop came first (possible from trial 20 on).
  EXPECT_LE(summary["trials"].get<int>(), 30);
  EXPECT_GE(summary["trials"].get<int>(), 20);
  const Result verified = shell(kTwinloop + " verify " + first_dir.string());
  EXPECT_EQ(verified.status, 0) << verified.output;

  // Second session: SIGTERM once it is under way.
  const Result second = submit("long.yaml");
  ASSERT_EQ(second.status, 0) << second.output;
  const fs::path second_dir = accepted_dir(second.output);
  const bool running = wait_for(
      [](const nlohmann::json& s) {
        return s.value("state", "") == "running" && s.value("trials", 0) >= 2;
      },
      30);
  if (!running) {
    stop_daemon();
    FAIL() << "the second session did not get going\n" << log();
  }
  ::kill(child, SIGTERM);
  int raw = 0;
  pid_t done = 0;
  for (int i = 0; i < 200 && done == 0; ++i) {
    done = ::waitpid(child, &raw, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (done == 0) {
    stop_daemon();
    FAIL() << "the daemon did not stop on SIGTERM\n" << log();
  }
  EXPECT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << log();
  ASSERT_TRUE(fs::exists(second_dir / "summary.json")) << log();
  const nlohmann::json stopped = nlohmann::json::parse(std::ifstream(second_dir / "summary.json"));
  EXPECT_GE(stopped["trials"].get<int>(), 2);
  EXPECT_LT(stopped["trials"].get<int>(), 500);
  const Result verified_second = shell(kTwinloop + " verify " + second_dir.string());
  EXPECT_EQ(verified_second.status, 0) << verified_second.output;
  fs::remove_all(dir);
}

// The daemon on a lab's rig rather than its own simulation: rig.kind openephys, the probe
// streamed by the Open Ephys GUI (twinloop-hil playing it) and stimuli to the bench's endpoint.
TEST(Twinloopd, RunsASubmittedSessionOnAnOpenEphysRig) {
  const DaemonFolder folder("twinloopd_oe");
  const fs::path& dir = folder.dir();
  const std::string data = "ipc://" + (dir / "data").string();
  const std::string heartbeat = "ipc://" + (dir / "heartbeat").string();
  const std::string stimulus = "ipc://" + (dir / "stimulus").string();
  std::ofstream(dir / "twinloopd.yaml")
      << "rig: {kind: openephys, probe_endpoint: '" << data << "', heartbeat_endpoint: '"
      << heartbeat << "', stimulus_endpoint: '" << stimulus << "'}\n"
      << "sessions_dir: sessions\n"
      << folder.control_yaml() << "limits: {max_session_seconds: 40}\n";
  std::ofstream(dir / "short.yaml") << protocol_text("daemon_gui", 14);

  const pid_t bench =
      spawn(std::string(TWINLOOP_HIL_BINARY) +
            " --seed 3 --units 24 --channels 64 --seconds 45 --probe-format openephys" +
            " --probe-endpoint " + data + " --heartbeat-endpoint " + heartbeat +
            " --stimulus-endpoint " + stimulus + " --sample-offset 5000000 --wait-for-subscriber" +
            " --quiet > " + (dir / "bench.log").string() + " 2>&1");
  const pid_t daemon = folder.start_daemon();
  ASSERT_GT(bench, 0);
  ASSERT_GT(daemon, 0);
  const auto stop_all = [&] {
    for (const pid_t child : {daemon, bench}) {
      ::kill(child, SIGKILL);
      ::waitpid(child, nullptr, 0);
    }
  };
  if (!folder.wait_for(idle, 20)) {
    stop_all();
    FAIL() << "the daemon did not answer\n" << folder.log();
  }
  const Result submitted = folder.submit("short.yaml");
  ASSERT_EQ(submitted.status, 0) << submitted.output;
  const fs::path session = accepted_dir(submitted.output);
  const bool done = folder.wait_for(
      [](const nlohmann::json& s) { return idle(s) && s.value("sessions_run", 0) == 1; }, 40);
  stop_all();
  ASSERT_TRUE(done) << "the session did not end\n" << folder.log();
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  EXPECT_EQ(summary["rig"], "openephys");
  EXPECT_EQ(summary["trials"].get<int>(), 14) << summary.dump();
  EXPECT_EQ(summary["openephys_stream"]["gaps"].get<int>(), 0) << summary.dump();
  EXPECT_GE(summary["openephys_stream"]["heartbeats_answered"].get<int>(), 1) << summary.dump();
  const Result verified = shell(kTwinloop + " verify " + session.string());
  EXPECT_EQ(verified.status, 0) << verified.output;
  fs::remove_all(dir);
}

}  // namespace

// A running session watched and steered from outside, as an operator at home would: the
// monitoring stream read by the Python example client, commands over the CURVE control socket
// from an allowed key, silence for a key that is not on the allow-list, and a stop-rule change
// that the session obeys and writes to its record.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "daemon_test_support.hpp"

namespace {

namespace fs = std::filesystem;

using Result = twinloop::test_support::ShellResult;
using twinloop::test_support::shell;

const std::string kTwinloop = TWINLOOP_BINARY;

TEST(Remote, MonitoredAndSteeredOverTheNetworkWithAuthenticatedCommands) {
  const fs::path dir =
      fs::temp_directory_path() / ("twinloop_remote_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* who : {"server", "operator", "stranger"}) {
    const Result r = shell(kTwinloop + " keygen --out " + (dir / who).string());
    ASSERT_EQ(r.status, 0) << r.output;
  }
  fs::copy_file(dir / "operator.key", dir / "allow");

  const fs::path protocol = dir / "short.yaml";
  std::ofstream(protocol) << twinloop::test_support::short_trials_protocol("remote_short", 500);
  const std::string publish = "ipc://" + (dir / "pub").string();
  const std::string control = "ipc://" + (dir / "ctl").string();
  const fs::path session = dir / "session";
  // Untuned units: the flat twin is nested in the others, so no posterior stop comes early and
  // the session is still running when its budget is changed (refits run beside the session
  // thread, so a tuned subject would reach the threshold in about 5 s).
  const std::string run = kTwinloop + " run " + protocol.string() +
                          " --rig sim --sim-model null --seconds 60 --seed 2 --pace realtime "
                          "--quiet --publish " +
                          publish + " --control " + control + " --control-key " +
                          (dir / "server.key_secret").string() + " --control-allow " +
                          (dir / "allow").string() + " --out " + session.string() + " > " +
                          (dir / "run.log").string() + " 2>&1";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + run).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Commands are served between trials; a refit of the twins (seconds on a loaded machine) delays
  // the answer, so allowed clients wait long. A refused key never gets an answer at all.
  const auto as = [&](const std::string& who, const std::string& command, int timeout_s = 20) {
    return shell(kTwinloop + " control " + control + " " + command + " --server-key " +
                 (dir / "server.key").string() + " --key " +
                 (dir / (who + ".key_secret")).string() + " --timeout " +
                 std::to_string(timeout_s));
  };

  // The session answers its operator once it is up.
  Result status;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    status = as("operator", "status", 2);
    if (status.status == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find("\"posterior\""), std::string::npos) << status.output;

  // The Python example client decodes the live stream.
  const Result client = shell("/usr/bin/python3 " + std::string(TWINLOOP_SOURCE_DIR) +
                              "/examples/python/monitor_client.py " + publish +
                              " --topic trial --topic posterior --topic health --topic session"
                              " --until-all-topics --seconds 20");
  EXPECT_EQ(client.status, 0) << client.output;
  for (const char* topic : {"trial", "posterior", "health", "session"}) {
    EXPECT_NE(client.output.find(topic), std::string::npos) << topic << "\n" << client.output;
  }

  // A key that is not on the allow-list gets nothing back.
  const Result stranger = as("stranger", "status", 2);
  EXPECT_EQ(stranger.status, 1) << stranger.output;
  EXPECT_NE(stranger.output.find("no reply"), std::string::npos) << stranger.output;

  // Shrink the trial budget; the session must end on its own soon after.
  status = as("operator", "status");
  ASSERT_EQ(status.status, 0) << status.output;
  const auto json_start = status.output.find('{');
  const int trials_now = nlohmann::json::parse(status.output.substr(json_start))["trials"];
  const int budget = trials_now + 2;
  const Result change = as("operator", "set_stop_rule --max-trials " + std::to_string(budget));
  ASSERT_EQ(change.status, 0) << change.output;
  // The reply is the status after the change: trials may have gone on while the command
  // travelled (a loaded machine starts the client slowly), and then the session stops at once.
  const int trials_at_change =
      nlohmann::json::parse(change.output.substr(change.output.find('{')))["trials"];
  int raw = 0;
  pid_t done = 0;
  for (int i = 0; i < 300 && done == 0; ++i) {
    done = ::waitpid(child, &raw, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (done == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &raw, 0);
    FAIL() << "the session did not stop after its budget was shrunk";
  }
  EXPECT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0);
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  // At most the trial in flight when the new budget took effect runs past it.
  EXPECT_LE(summary["trials"].get<int>(), std::max(budget, trials_at_change) + 1);
  const Result verified = shell(kTwinloop + " verify " + session.string());
  EXPECT_EQ(verified.status, 0) << verified.output;
  fs::remove_all(dir);
}

}  // namespace

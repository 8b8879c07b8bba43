// A session against the bench as a separate rig: twinloop-hil serves the simulated probe and the
// stimulus endpoint over ZeroMQ with injected faults, and `twinloop run --rig net` reaches it
// through the network probe source and stimulus sink. Every fault must be on record as an event,
// the trials it touched flagged or aborted (never scored), and the session must go on to its end.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "daemon_test_support.hpp"

namespace {

namespace fs = std::filesystem;

struct Record {
  std::map<std::int64_t, std::string> trial_status;
  std::multiset<std::string> fault_kinds;
  std::map<std::int64_t, std::string> trial_events;  // trial -> detail of flag/abort events
};

Record read_record(const fs::path& session) {
  Record r;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2((session / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return r;
  }
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "SELECT trial, status FROM trials", -1, &s, nullptr);
  while (sqlite3_step(s) == SQLITE_ROW) {
    r.trial_status[sqlite3_column_int64(s, 0)] =
        reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
  }
  sqlite3_finalize(s);
  sqlite3_prepare_v2(db, "SELECT kind, trial, detail_json FROM events", -1, &s, nullptr);
  while (sqlite3_step(s) == SQLITE_ROW) {
    const std::string kind = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    const std::string detail = reinterpret_cast<const char*>(sqlite3_column_text(s, 2));
    if (kind == "fault") {
      r.fault_kinds.insert(nlohmann::json::parse(detail).value("kind", std::string()));
    } else if (sqlite3_column_type(s, 1) != SQLITE_NULL) {
      r.trial_events[sqlite3_column_int64(s, 1)] += kind + " " + detail + "; ";
    }
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return r;
}

// twinloop-hil (its command line in `bench`) in a child process, its output in `log`.
pid_t start_bench(const std::string& bench, const fs::path& log) {
  const pid_t child = fork();
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + bench + " > " + log.string()).c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

TEST(NetworkSession, EveryBenchFaultIsRecordedAndItsTrialsAreNeverScored) {
  const fs::path dir =
      fs::temp_directory_path() / ("twinloop_netsession_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path protocol = dir / "short.yaml";
  std::ofstream(protocol) << twinloop::test_support::short_trials_protocol("short_trials_net", 14);
  // ipc endpoints in a private folder: parallel test runs never share a port.
  const std::string probe = "ipc://" + (dir / "probe").string();
  const std::string stimulus = "ipc://" + (dir / "stimulus").string();
  // Command 3 answered late, command 5 never answered; stream faults at fixed blocks while trials
  // run (trials start once detection is armed, about 1 s in); a 0.3 s outage at 3.2 s.
  const std::string bench =
      std::string(TWINLOOP_HIL_BINARY) + " --seed 4 --units 24 --channels 64 --seconds 30" +
      " --probe-endpoint " + probe + " --stimulus-endpoint " + stimulus +
      " --wait-for-subscriber --quiet --drop-blocks @1500,2450 --duplicate-blocks @1700" +
      " --reorder-blocks @1900 --corrupt @2100,2700 --late-onset-ms 40 --late-onsets @3" +
      " --missing-onset @5 --disconnect-at 3.2 --disconnect-for 0.3";
  const pid_t child = start_bench(bench, dir / "bench.log");
  ASSERT_GE(child, 0);
  const fs::path session = dir / "session";
  const twinloop::test_support::ShellResult run = twinloop::test_support::shell(
      std::string(TWINLOOP_BINARY) + " run " + protocol.string() + " --rig net --probe-endpoint " +
      probe + " --stimulus-endpoint " + stimulus + " --seconds 20 --quiet --out " +
      session.string());
  const std::string& output = run.output;
  ::kill(child, SIGTERM);
  int raw = 0;
  ::waitpid(child, &raw, 0);
  ASSERT_EQ(run.status, 0) << output;
  EXPECT_NE(output.find("networked rig"), std::string::npos) << output;

  const Record record = read_record(session);
  for (const char* kind : {"gap", "duplicate", "out-of-order", "checksum", "disconnect",
                           "reconnect", "late onset", "missing onset"}) {
    bool found = false;
    for (const std::string& k : record.fault_kinds) found |= k.find(kind) != std::string::npos;
    EXPECT_TRUE(found) << "no '" << kind << "' fault on record; output:\n" << output;
  }
  ASSERT_TRUE(record.trial_status.count(3) && record.trial_status.count(5)) << output;
  EXPECT_EQ(record.trial_status.at(3), "flagged") << record.trial_events.count(3);
  EXPECT_EQ(record.trial_status.at(5), "aborted");
  // The session went on to its budget after every fault.
  EXPECT_EQ(record.trial_status.size(), 14u) << output;
  std::size_t scored = 0, settled = 0;
  for (const auto& [t, s] : record.trial_status) {
    scored += s == "scored" ? 1 : 0;
    settled += s == "scored" || s == "flagged" || s == "aborted" ? 1 : 0;
  }
  EXPECT_EQ(settled, record.trial_status.size()) << "a trial was left in flight";
  EXPECT_GE(scored, 3u) << output;

  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  EXPECT_EQ(summary["rig"], "net");
  EXPECT_GE(summary["flagged_trials"].get<int>(), 1);
  EXPECT_GE(summary["aborted_trials"].get<int>(), 1);
  EXPECT_GE(summary["faults_recorded"].get<int>(), 8);
  EXPECT_FALSE(summary.contains("truth"));

  const twinloop::test_support::ShellResult verified =
      twinloop::test_support::shell(std::string(TWINLOOP_BINARY) + " verify " + session.string());
  EXPECT_EQ(verified.status, 0) << verified.output;
  fs::remove_all(dir);
}

// A lab's rig that runs the Open Ephys GUI: twinloop-hil stands in for the GUI's ZMQ Interface
// (its three-part messages, heartbeats) on a clock an hour into acquisition, and `twinloop run
// --rig openephys` reads it through the Open Ephys source, with stimuli to the bench's endpoint.
TEST(OpenEphysSession, TheGuiStreamDrivesASessionOnItsOwnClock) {
  const fs::path dir =
      fs::temp_directory_path() / ("twinloop_oesession_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path protocol = dir / "short.yaml";
  std::ofstream(protocol) << twinloop::test_support::short_trials_protocol("short_trials_oe", 14);
  const std::string data = "ipc://" + (dir / "data").string();
  const std::string heartbeat = "ipc://" + (dir / "heartbeat").string();
  const std::string stimulus = "ipc://" + (dir / "stimulus").string();
  constexpr long long kHourOfSamples = 108000000;  // 1 h at 30 kHz
  const std::string bench =
      std::string(TWINLOOP_HIL_BINARY) +
      " --seed 4 --units 24 --channels 64 --seconds 30 --probe-format openephys" +
      " --probe-endpoint " + data + " --heartbeat-endpoint " + heartbeat + " --stimulus-endpoint " +
      stimulus + " --sample-offset " + std::to_string(kHourOfSamples) +
      " --wait-for-subscriber --quiet --drop-blocks @1500,2450 --duplicate-blocks @1700";
  const pid_t child = start_bench(bench, dir / "bench.log");
  ASSERT_GE(child, 0);
  const fs::path session = dir / "session";
  const twinloop::test_support::ShellResult run = twinloop::test_support::shell(
      std::string(TWINLOOP_BINARY) + " run " + protocol.string() +
      " --rig openephys --probe-endpoint " + data + " --heartbeat-endpoint " + heartbeat +
      " --stimulus-endpoint " + stimulus + " --seconds 20 --quiet --out " + session.string());
  const std::string& output = run.output;
  ::kill(child, SIGTERM);
  int raw = 0;
  ::waitpid(child, &raw, 0);
  ASSERT_EQ(run.status, 0) << output;
  EXPECT_NE(output.find("Open Ephys rig"), std::string::npos) << output;

  const Record record = read_record(session);
  EXPECT_EQ(record.trial_status.size(), 14u) << output;
  std::size_t scored = 0;
  for (const auto& [t, s] : record.trial_status) scored += s == "scored" ? 1 : 0;
  EXPECT_GE(scored, 10u) << output;

  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  EXPECT_EQ(summary["rig"], "openephys");
  EXPECT_FALSE(summary.contains("truth"));
  const nlohmann::json& stream = summary.at("openephys_stream");
  // Both dropped buffers are gaps of one 1 ms block each; the repeated one is dropped as such.
  EXPECT_EQ(stream.at("gaps").get<int>(), 2) << stream.dump();
  EXPECT_EQ(stream.at("missing_samples").get<int>(), 60) << stream.dump();
  EXPECT_GE(stream.at("duplicates").get<int>(), 1) << stream.dump();
  EXPECT_GE(stream.at("heartbeats_answered").get<int>(), 1) << stream.dump();
  EXPECT_EQ(summary.at("gaps").get<int>(), 2) << output;

  // Onsets are on the GUI's clock, as the bench acknowledged them.
  sqlite3* db = nullptr;
  ASSERT_EQ(
      sqlite3_open_v2((session / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
      SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "SELECT min(onset_sample), max(onset_sample) FROM deliveries", -1, &s,
                     nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_GE(sqlite3_column_int64(s, 0), kHourOfSamples);
  EXPECT_LT(sqlite3_column_int64(s, 1), kHourOfSamples + 30 * 30000);
  sqlite3_finalize(s);
  sqlite3_close(db);

  const twinloop::test_support::ShellResult verified =
      twinloop::test_support::shell(std::string(TWINLOOP_BINARY) + " verify " + session.string());
  EXPECT_EQ(verified.status, 0) << verified.output;
  fs::remove_all(dir);
}

}  // namespace

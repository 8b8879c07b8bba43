// A session killed with SIGKILL loses at most the trial in flight and continues with `twinloop
// resume DIR`. The kills are real: a failpoint makes the process SIGKILL itself exactly after a
// chosen stage of a chosen trial (pre-registered, delivered, scored), and one test kills it from
// outside at a moment it does not choose. After each, `verify` must find the record intact,
// `resume` must continue it, and the completed trials before the kill must all be on record,
// scored as they were.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "daemon_test_support.hpp"
#include "twinloop/daemon/session_record.hpp"

namespace {

namespace fs = std::filesystem;

std::string twinloop() {
  return TWINLOOP_BINARY;
}

using Result = twinloop::test_support::ShellResult;
using twinloop::test_support::shell;

fs::path temp_dir(const std::string& name) {
  return twinloop::test_support::fresh_temp_dir("resume_" + name);
}

// Short trials (0.25 s apart) on a 64-channel probe, so a dozen trials take a few seconds at
// real-time pace (at maximum pace the simulated probe would outrun the trials).
fs::path write_protocol(const fs::path& dir) {
  const fs::path path = dir / "short.yaml";
  std::ofstream(path) << twinloop::test_support::short_trials_protocol("short_trials", 10);
  return path;
}

struct TrialRow {
  std::string status;
  std::string strategy;
  bool has_posterior = false;
  std::vector<double> posterior;
};

// Reads the record as a reviewer would, with nothing but SQLite.
std::map<std::int64_t, TrialRow> read_trials(const fs::path& session) {
  std::map<std::int64_t, TrialRow> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2((session / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return rows;
  }
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "SELECT trial, status, strategy FROM trials ORDER BY trial", -1, &s,
                     nullptr);
  while (sqlite3_step(s) == SQLITE_ROW) {
    TrialRow& row = rows[sqlite3_column_int64(s, 0)];
    row.status = reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
    row.strategy = reinterpret_cast<const char*>(sqlite3_column_text(s, 2));
  }
  sqlite3_finalize(s);
  sqlite3_prepare_v2(db, "SELECT trial, probability FROM posteriors ORDER BY trial, hypothesis", -1,
                     &s, nullptr);
  while (sqlite3_step(s) == SQLITE_ROW) {
    TrialRow& row = rows[sqlite3_column_int64(s, 0)];
    row.has_posterior = true;
    row.posterior.push_back(sqlite3_column_double(s, 1));
  }
  sqlite3_finalize(s);
  sqlite3_close(db);
  return rows;
}

std::size_t count_events(const fs::path& session, const std::string& kind) {
  sqlite3* db = nullptr;
  std::size_t n = 0;
  if (sqlite3_open_v2((session / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "SELECT count(*) FROM events WHERE kind = ?1", -1, &s, nullptr);
    sqlite3_bind_text(s, 1, kind.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s) == SQLITE_ROW) n = static_cast<std::size_t>(sqlite3_column_int64(s, 0));
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return n;
}

std::string run_command(const fs::path& protocol, const fs::path& session) {
  return twinloop() + " run " + protocol.string() +
         " --rig sim --seconds 30 --seed 4 --pace realtime --sim-units 24 --quiet --out " +
         session.string();
}

// Kills a session at `point` of trial `trial`, then checks the record and resumes it.
void kill_and_resume(const std::string& point, int trial) {
  SCOPED_TRACE(point + ":" + std::to_string(trial));
  const fs::path dir = temp_dir(point);
  const fs::path protocol = write_protocol(dir);
  const fs::path session = dir / "session";

  Result r = shell("TWINLOOP_FAILPOINT=" + point + ":" + std::to_string(trial) + " " +
                   run_command(protocol, session));
  ASSERT_EQ(r.signal(), SIGKILL) << "the failpoint should have killed the run: " << r.output;
  const auto before = read_trials(session);
  ASSERT_FALSE(before.empty());
  // Every trial before the killed one completed and is on record with its posterior.
  for (int t = 0; t < trial; ++t) {
    ASSERT_TRUE(before.count(t)) << t;
    EXPECT_TRUE(before.at(t).status == "scored" || before.at(t).status == "flagged" ||
                before.at(t).status == "aborted")
        << t << " " << before.at(t).status;
  }
  ASSERT_TRUE(before.count(trial));
  const std::string killed_status = before.at(trial).status;
  const std::map<std::string, std::string> expected_status = {
      {"after_preregister", "preregistered"},
      {"after_delivery", "delivered"},
      {"after_score", "scored"}};
  EXPECT_EQ(killed_status, expected_status.at(point));

  // The record of a killed session verifies: the chain holds everything committed.
  r = shell(twinloop() + " verify " + session.string());
  EXPECT_EQ(r.status, 0) << r.output;

  r = shell(twinloop() + " resume " + session.string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resumed:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rebuilt exactly"), std::string::npos) << r.output;

  const auto after = read_trials(session);
  // Nothing completed before the kill was lost or changed.
  for (const auto& [t, row] : before) {
    if (row.status == "scored") {
      ASSERT_TRUE(after.count(t));
      EXPECT_EQ(after.at(t).status, "scored") << t;
      EXPECT_EQ(after.at(t).posterior, row.posterior) << t;
    }
  }
  // The trial in flight (if the kill caught one) is aborted, never scored late.
  if (killed_status != "scored") {
    EXPECT_EQ(after.at(trial).status, "aborted");
  }
  // The session went on past the kill, to its trial budget.
  std::size_t scored = 0;
  for (const auto& [t, row] : after) scored += row.status == "scored" ? 1 : 0;
  EXPECT_GT(after.rbegin()->first, trial);
  EXPECT_GE(scored, 8u);
  EXPECT_EQ(count_events(session, "resumed"), 1u);
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  EXPECT_TRUE(summary["resumed"].get<bool>());
  EXPECT_EQ(summary["trials"].get<std::size_t>(), after.size());
  EXPECT_EQ(summary["truth"]["units"].get<std::size_t>(), 24u) << "the subject resumed as it was";

  r = shell(twinloop() + " verify " + session.string());
  EXPECT_EQ(r.status, 0) << r.output;
  // The record says which defaults its protocol ran with, so a later build resumes it as it ran.
  const twinloop::protocols::DesignerDefaults recorded =
      twinloop::daemon::recorded_protocol_defaults(
          twinloop::daemon::SessionRecord::open_existing(session).config_json());
  EXPECT_EQ(recorded.criticism_trials, twinloop::protocols::DesignerDefaults{}.criticism_trials);
  EXPECT_EQ(recorded.criticism_power, twinloop::protocols::DesignerDefaults{}.criticism_power);
  fs::remove_all(dir);
}

TEST(Resume, AfterAKillWhileTheStimulusWaitsForItsOnset) {
  ASSERT_NO_FATAL_FAILURE(kill_and_resume("after_preregister", 2));
}

TEST(Resume, AfterAKillWhileTheResponseWindowIsCounted) {
  ASSERT_NO_FATAL_FAILURE(kill_and_resume("after_delivery", 4));
}

TEST(Resume, AfterAKillBetweenTrials) {
  ASSERT_NO_FATAL_FAILURE(kill_and_resume("after_score", 7));
}

TEST(Resume, AfterAKillFromOutsideAtAnUnchosenMoment) {
  const fs::path dir = temp_dir("outside");
  const fs::path protocol = write_protocol(dir);
  const fs::path session = dir / "session";
  // Real-time pace, so the run is still going when the kill arrives; it lands wherever the
  // session happens to be once the record holds a few trials.
  const std::string command = twinloop() + " run " + protocol.string() +
                              " --rig sim --seconds 30 --seed 4 --pace realtime --quiet --out " +
                              session.string() + " > " + (dir / "run.log").string() + " 2>&1";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::size_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(session / "session.sqlite")) seen = read_trials(session).size();
    if (seen >= 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(child, SIGKILL);
  int raw = 0;
  ::waitpid(child, &raw, 0);
  ASSERT_TRUE(WIFSIGNALED(raw) && WTERMSIG(raw) == SIGKILL) << "the run ended before the kill";
  ASSERT_GE(seen, 3u);
  const auto before = read_trials(session);

  Result r = shell(twinloop() + " verify " + session.string());
  EXPECT_EQ(r.status, 0) << r.output;
  r = shell(twinloop() + " resume " + session.string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto after = read_trials(session);
  std::size_t in_flight = 0;
  for (const auto& [t, row] : before) {
    if (row.status == "scored") {
      EXPECT_EQ(after.at(t).status, "scored") << t;
      EXPECT_EQ(after.at(t).posterior, row.posterior) << t;
    } else if (row.status != "flagged" && row.status != "aborted") {
      ++in_flight;
      EXPECT_EQ(after.at(t).status, "aborted") << t;
    }
  }
  EXPECT_LE(in_flight, 1u) << "at most the trial in flight is lost";
  EXPECT_GT(after.size(), before.size());
  r = shell(twinloop() + " verify " + session.string());
  EXPECT_EQ(r.status, 0) << r.output;
  fs::remove_all(dir);
}

TEST(Resume, RefusesAFolderWithoutARecord) {
  const fs::path dir = temp_dir("norecord");
  const Result r = shell(twinloop() + " resume " + dir.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no session record"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace

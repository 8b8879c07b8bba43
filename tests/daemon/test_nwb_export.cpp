// `twinloop export SESSION_DIR --nwb OUT.nwb` on a real short session, checked from outside with
// h5py (tests/daemon/check_nwb.py: the NWB structure, and trials, units and spike times against
// the record and the spike files); every refused input exits 1 with a message naming the file and
// leaves neither OUT nor OUT.partial behind. The same session feeds examples/python/
// read_session.py, which must read it with sqlite3 + pandas alone.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "daemon_test_support.hpp"
#include "twinloop/daemon/nwb_export.hpp"
#include "twinloop/drivers/npy.hpp"

namespace {

namespace fs = std::filesystem;
using twinloop::test_support::shell;
using Result = twinloop::test_support::ShellResult;

const std::string kPython = "/usr/bin/python3";
const fs::path kSource = TWINLOOP_SOURCE_DIR;

std::string twinloop() {
  return TWINLOOP_BINARY;
}

std::string quoted(const fs::path& p) {
  return "'" + p.string() + "'";
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs one SQL statement that returns one integer (or executes one that returns nothing).
std::int64_t sql(const fs::path& session, const std::string& statement, bool write = false) {
  sqlite3* db = nullptr;
  std::int64_t value = -1;
  if (sqlite3_open_v2((session / "session.sqlite").c_str(), &db,
                      write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, statement.c_str(), -1, &s, nullptr) == SQLITE_OK) {
      const int rc = sqlite3_step(s);
      if (rc == SQLITE_ROW) value = sqlite3_column_int64(s, 0);
      if (rc == SQLITE_DONE) value = 0;
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return value;
}

class NwbExport : public ::testing::Test {
 protected:
  // One real session for every test here: 64 channels, trials 0.25 s apart, 4 s at real-time
  // pace (about a dozen trials).
  static void SetUpTestSuite() {
    dir_ = new fs::path(twinloop::test_support::fresh_temp_dir("nwb_export"));
    const fs::path protocol = *dir_ / "short.yaml";
    std::ofstream(protocol) << twinloop::test_support::short_trials_protocol("nwb_short", 40);
    session_ = new fs::path(*dir_ / "session");
    const Result r = shell(twinloop() + " run " + quoted(protocol) +
                           " --rig sim --pace realtime --seconds 4 --seed 11 --quiet --out " +
                           quoted(*session_));
    run_status_ = r.status;
    run_output_ = new std::string(r.output);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete session_;
    delete run_output_;
  }
  void SetUp() override { ASSERT_EQ(run_status_, 0) << *run_output_; }

  static fs::path copy_session(const std::string& name) {
    const fs::path copy = *dir_ / name;
    fs::remove_all(copy);
    fs::copy(*session_, copy, fs::copy_options::recursive);
    return copy;
  }

  static inline fs::path* dir_ = nullptr;
  static inline fs::path* session_ = nullptr;
  static inline int run_status_ = -1;
  static inline std::string* run_output_ = nullptr;
};

TEST_F(NwbExport, WritesAnNwbFileThatMatchesTheRecordAndTheSpikeFiles) {
  const fs::path out = *dir_ / "session.nwb";
  fs::remove(out);
  const Result r = shell(twinloop() + " export " + quoted(*session_) + " --nwb " + quoted(out));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("wrote " + out.string()), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_regular_file(out));
  EXPECT_FALSE(fs::exists(out.string() + ".partial"));

  const std::int64_t delivered = sql(*session_, "SELECT count(*) FROM deliveries");
  ASSERT_GT(delivered, 3) << "the session should have delivered a few trials";
  // The rate is the protocol's (short_trials_protocol: 30 kHz).
  const Result check = shell(kPython + " " + quoted(kSource / "tests/daemon/check_nwb.py") + " " +
                             quoted(out) + " " + quoted(*session_) + " 30000");
  ASSERT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("NWB OK: " + std::to_string(delivered) + " trials, 64 units"),
            std::string::npos)
      << check.output;
}

TEST_F(NwbExport, LeavesOutTrialsThatWereNeverDelivered) {
  const fs::path session = copy_session("undelivered");
  const std::int64_t delivered = sql(session, "SELECT count(*) FROM deliveries");
  // A trial designed after the last delivery (as if the session had stopped before its
  // stimulus): on record, but not exported.
  ASSERT_EQ(sql(session,
                "INSERT INTO trials(trial, candidate, stimulus_json, strategy, is_validation,"
                " designed_at_ns, expected_information_gain, status) SELECT max(trial) + 1, 0,"
                " '{\"direction\":0.0,\"contrast\":0.5}', 'discriminate', 0, 0, NULL, 'designed'"
                " FROM trials",
                true),
            0);
  const fs::path out = *dir_ / "undelivered.nwb";
  const Result r = shell(twinloop() + " export " + quoted(session) + " --nwb " + quoted(out));
  ASSERT_EQ(r.status, 0) << r.output;
  const Result check = shell(kPython + " " + quoted(kSource / "tests/daemon/check_nwb.py") + " " +
                             quoted(out) + " " + quoted(session) + " 30000");
  ASSERT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("NWB OK: " + std::to_string(delivered) + " trials"),
            std::string::npos)
      << check.output;
}

// The refusals run in process (export_session, as the CLI calls it): each `twinloop` start loads
// LibTorch, about a second. The CLI itself is run for the exit statuses a user sees.
TEST_F(NwbExport, RefusesBadInputWithAMessageNamingTheFile) {
  const fs::path out = *dir_ / "refused.nwb";
  fs::remove(out);
  auto refused = [&](const fs::path& session, const fs::path& nwb, const std::string& names) {
    SCOPED_TRACE(session.string() + " -> " + nwb.string());
    testing::internal::CaptureStderr();
    const int status = twinloop::daemon::export_session({session, nwb, false, true});
    const std::string message = testing::internal::GetCapturedStderr();
    EXPECT_EQ(status, 1) << message;
    EXPECT_NE(message.find(names), std::string::npos) << message;
    EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 1) << "one line: " << message;
    EXPECT_FALSE(fs::exists(nwb.string() + ".partial"));
  };
  // No such directory; a directory that is not a session; a file that is not a session record.
  const fs::path missing = *dir_ / "no_such_session";
  refused(missing, out, missing.string());
  const fs::path empty = *dir_ / "empty";
  fs::create_directories(empty);
  refused(empty, out, "not a session directory");
  const fs::path bogus = *dir_ / "bogus";
  fs::create_directories(bogus);
  std::ofstream(bogus / "session.sqlite") << "not a database at all";
  refused(bogus, out, (bogus / "session.sqlite").string());
  EXPECT_FALSE(fs::exists(out));

  // Spike files missing (an interrupted session has none yet).
  const fs::path no_spikes = copy_session("no_spikes");
  fs::remove(no_spikes / "spike_times.npy");
  refused(no_spikes, out, (no_spikes / "spike_times.npy").string());
  // A spike of a cluster that is no unit of the record.
  const fs::path stray = copy_session("stray_cluster");
  fs::remove(stray / "spike_times.npy");
  fs::remove(stray / "spike_clusters.npy");
  twinloop::drivers::write_npy(stray / "spike_times.npy", std::vector<std::int64_t>{100});
  twinloop::drivers::write_npy(stray / "spike_clusters.npy", std::vector<std::int32_t>{999});
  refused(stray, out, "cluster 999");
  EXPECT_FALSE(fs::exists(out));

  // A resumed session: its sample clock restarted, so it is refused rather than mis-timed.
  const fs::path resumed = copy_session("resumed");
  ASSERT_EQ(sql(resumed,
                "INSERT INTO events(at_ns, monotonic_ns, kind, trial, detail_json)"
                " VALUES (1, 1, 'resumed', NULL, '{}')",
                true),
            0);
  refused(resumed, out, "resumed");
  EXPECT_FALSE(fs::exists(out));

  // Nowhere to write: the folder does not exist, or is a file.
  refused(*session_, *dir_ / "no_folder" / "x.nwb", (*dir_ / "no_folder").string());
  refused(*session_, bogus / "session.sqlite" / "x.nwb", (bogus / "session.sqlite").string());

  // An existing OUT is kept, byte for byte, unless --force; through the CLI, as a user runs it.
  std::ofstream(out) << "precious";
  const Result kept = shell(twinloop() + " export " + quoted(*session_) + " --nwb " + quoted(out));
  EXPECT_EQ(kept.status, 1) << kept.output;
  EXPECT_NE(kept.output.find(out.string() + ": exists"), std::string::npos) << kept.output;
  EXPECT_EQ(read_file(out), "precious");
  const Result forced =
      shell(twinloop() + " export " + quoted(*session_) + " --nwb " + quoted(out) + " --force");
  EXPECT_EQ(forced.status, 0) << forced.output;
  EXPECT_NE(read_file(out), "precious");
  EXPECT_FALSE(fs::exists(out.string() + ".partial"));

  // Usage errors are CLI11's: exit 2.
  EXPECT_EQ(shell(twinloop() + " export " + quoted(*session_)).status, 2);
}

// examples/python/read_session.py reads the record with sqlite3 + pandas only (read-only URI).
TEST_F(NwbExport, PythonExampleReadsTheSessionWithPandas) {
  const Result r = shell(kPython + " " + quoted(kSource / "examples/python/read_session.py") + " " +
                         quoted(*session_));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::int64_t trials = sql(*session_, "SELECT count(*) FROM trials");
  const std::int64_t validation = sql(*session_, "SELECT count(*) FROM trials WHERE is_validation");
  EXPECT_NE(r.output.find("trials      " + std::to_string(trials) + " trials on record"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(std::to_string(validation) + " validation"), std::string::npos)
      << r.output;
  for (const char* h : {"tuned (direction_tuning)", "lnp (lnp)", "flat (null)"}) {
    EXPECT_NE(r.output.find(h), std::string::npos) << h << "\n" << r.output;
  }
  EXPECT_NE(r.output.find("posterior trajectory"), std::string::npos) << r.output;
  for (const char* h : {"  tuned ", "  lnp ", "  flat "}) {
    EXPECT_NE(r.output.find(std::string(h)), std::string::npos) << h;
  }
  EXPECT_NE(r.output.find("validation trials"), std::string::npos) << r.output;
  // The record is untouched: still verifies.
  EXPECT_EQ(shell(twinloop() + " verify " + quoted(*session_)).status, 0);

  const Result bad = shell(kPython + " " + quoted(kSource / "examples/python/read_session.py") +
                           " " + quoted(*dir_ / "no_such_session"));
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("no session record"), std::string::npos) << bad.output;
}

}  // namespace

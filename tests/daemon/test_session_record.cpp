// The session record as a sceptical reviewer would test it: a clean session verifies; any edit,
// deletion, insertion or reordering made with plain sqlite3 afterwards is caught; a delivery that
// was not pre-registered is caught; a record survives its writer being SIGKILLed right after a
// pre-registration; and a reopened record knows which trial was in flight.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/session_record.hpp"

namespace {

namespace fs = std::filesystem;
using namespace twinloop::daemon;

constexpr std::size_t kHypotheses = 3;
constexpr std::size_t kUnits = 10;
constexpr std::uint64_t kTrials = 5;

// A fresh, unique parent folder per test; the session directory inside it does not exist yet,
// because create() refuses an existing one.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device random;
    base_ =
        fs::temp_directory_path() / ("twinloop_record_" + std::to_string(::getpid()) + "_" +
                                     std::to_string(counter++) + "_" + std::to_string(random()));
    fs::create_directories(base_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] fs::path session() const { return base_ / "session"; }
  [[nodiscard]] const fs::path& base() const { return base_; }

 private:
  fs::path base_;
};

SessionSetup make_setup(std::size_t hypotheses = kHypotheses, std::size_t units = kUnits) {
  SessionSetup setup;
  setup.protocol_text = "name: record-test\nstimulus:\n  contrast: [0.1, 0.5, 1.0]\n";
  setup.config_json = R"({"rig":"sim","seed":7})";
  for (std::size_t h = 0; h < hypotheses; ++h) {
    setup.hypotheses.push_back({"h" + std::to_string(h), h == 0 ? "null" : "lnp"});
  }
  for (std::size_t u = 0; u < units; ++u) {
    setup.units.push_back({0, static_cast<std::int64_t>(u * 3), "cluster " + std::to_string(u)});
  }
  setup.candidates_json = {R"({"contrast":0.1})", R"({"contrast":0.5})", R"({"contrast":1.0})"};
  return setup;
}

double mean_value(std::uint64_t trial, std::size_t h, std::size_t u) {
  return 1.0 + 0.1 * static_cast<double>(h) + 0.01 * static_cast<double>(u) +
         static_cast<double>(trial);
}

struct Predictions {
  std::vector<std::vector<double>> mean, dispersion, rival_differences;
  std::vector<HypothesisPrediction> spans;
};
/// Hypothesis h's direction toward its rival r for unit u (as remove_own_directions leaves it).
double difference_value(std::uint64_t trial, std::size_t h, std::size_t r, std::size_t u) {
  return -0.5 + 0.1 * static_cast<double>(h) + 0.02 * static_cast<double>(r) +
         0.001 * static_cast<double>(u) + 0.0001 * static_cast<double>(trial);
}
Predictions make_predictions(std::uint64_t trial, std::size_t hypotheses, std::size_t units) {
  Predictions p;
  p.mean.resize(hypotheses);
  p.dispersion.resize(hypotheses);
  p.rival_differences.resize(hypotheses);
  for (std::size_t h = 0; h < hypotheses; ++h) {
    for (std::size_t u = 0; u < units; ++u) {
      p.mean[h].push_back(mean_value(trial, h, u));
      p.dispersion[h].push_back(0.05 * static_cast<double>(h));
    }
    for (std::size_t r = 0; r + 1 < hypotheses; ++r) {
      for (std::size_t u = 0; u < units; ++u) {
        p.rival_differences[h].push_back(difference_value(trial, h, r, u));
      }
    }
  }
  for (std::size_t h = 0; h < hypotheses; ++h) {
    p.spans.push_back({p.mean[h], p.dispersion[h], p.rival_differences[h]});
  }
  return p;
}

TrialDesign make_design(std::uint64_t trial) {
  TrialDesign d;
  d.trial = trial;
  d.candidate = static_cast<std::int64_t>(trial % 3);
  d.stimulus_json = R"({"contrast":)" + std::to_string(0.1 * static_cast<double>(trial + 1)) + "}";
  d.strategy = trial == 2 ? "validation_random" : "max_information";
  d.is_validation = trial == 2;
  d.expected_information_gain = 0.25 + 0.01 * static_cast<double>(trial);
  return d;
}

void design_and_preregister(SessionRecord& record, std::uint64_t trial) {
  record.begin_trial(make_design(trial));
  const Predictions p = make_predictions(trial, record.hypothesis_count(), record.unit_count());
  record.preregister(trial, p.spans);
}

void finish_trial(SessionRecord& record, std::uint64_t trial) {
  const auto onset = static_cast<std::int64_t>(30000 * (trial + 1));
  record.record_delivery(trial, onset);
  std::vector<std::uint32_t> counts(record.unit_count());
  for (std::size_t u = 0; u < counts.size(); ++u) counts[u] = static_cast<std::uint32_t>(u + trial);
  record.record_outcome(trial, counts, onset, onset + 9000);
  std::vector<double> probability(record.hypothesis_count(),
                                  1.0 / static_cast<double>(record.hypothesis_count()));
  std::vector<double> log_evidence(record.hypothesis_count(), -1.5 * static_cast<double>(trial));
  record.record_posterior(trial, probability, log_evidence);
}

// The small session of the brief: 3 hypotheses, 10 units, 5 trials, some events.
void write_full_session(const fs::path& dir) {
  SessionRecord record = SessionRecord::create(dir, make_setup());
  record.record_event(event_kind::kGap, std::nullopt, R"({"lost_samples":120,"at":4500})");
  for (std::uint64_t t = 0; t < kTrials; ++t) {
    design_and_preregister(record, t);
    finish_trial(record, t);
  }
  record.record_event(event_kind::kDeadlineMiss, 3, R"({"stage":"designer","late_us":850})");
  record.mark_trial(4, TrialStatus::kFlagged, R"({"reason":"gap in window"})");
}

// Plain sqlite3, as someone editing the file by hand would.
void tamper_sql(const fs::path& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / SessionRecord::kFileName).c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  const std::string message = error != nullptr ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message << " in " << sql;
}

std::vector<std::uint8_t> read_blob(const fs::path& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(
      sqlite3_open_v2((dir / SessionRecord::kFileName).c_str(), &db, SQLITE_OPEN_READONLY, nullptr),
      SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
  std::vector<std::uint8_t> out;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt, 0));
    out.assign(p, p + sqlite3_column_bytes(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

// Overwrites bytes inside a BLOB cell, leaving everything else alone: the subtlest edit.
void patch_blob(const fs::path& dir, const std::string& table, const std::string& column,
                std::int64_t id, std::size_t offset, const void* bytes, std::size_t size) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / SessionRecord::kFileName).c_str(), &db), SQLITE_OK);
  sqlite3_blob* blob = nullptr;
  ASSERT_EQ(sqlite3_blob_open(db, "main", table.c_str(), column.c_str(), id, 1, &blob), SQLITE_OK)
      << sqlite3_errmsg(db);
  ASSERT_EQ(sqlite3_blob_write(blob, bytes, static_cast<int>(size), static_cast<int>(offset)),
            SQLITE_OK);
  sqlite3_blob_close(blob);
  sqlite3_close(db);
}

bool names(const VerifyReport& report, const std::string& table) {
  return std::any_of(report.violations.begin(), report.violations.end(),
                     [&](const Violation& v) { return v.table == table; });
}

std::string describe(const VerifyReport& report) {
  std::string out;
  for (const auto& v : report.violations) {
    out += v.table + " row " + std::to_string(v.row) + ": " + v.what + "\n";
  }
  return out;
}

TEST(SessionRecord, FullSessionVerifiesClean) {
  TempDir tmp;
  write_full_session(tmp.session());
  const VerifyReport report = verify(tmp.session());
  EXPECT_TRUE(report.clean()) << describe(report);
  EXPECT_TRUE(report.chain_intact);
  EXPECT_EQ(report.trials, kTrials);
  EXPECT_EQ(report.predictions, kTrials * kHypotheses);
  EXPECT_EQ(report.deliveries, kTrials);
  EXPECT_EQ(report.outcomes, kTrials);
  EXPECT_EQ(report.posteriors, kTrials * kHypotheses);
  EXPECT_EQ(report.events, 3U);  // gap, deadline miss, trial_flagged
  // genesis + every chained row
  EXPECT_EQ(report.chain_links, 1 + kTrials * (2 * kHypotheses + 2) + 3);
  EXPECT_EQ(report.head_hash_hex.size(), 64U);
  EXPECT_EQ(verify_session(tmp.session()), kExitOk);
}

// A record without the defaults its protocol ran with was written before criticism trials were
// the default; a malformed entry is an error, not a guess.
TEST(SessionRecord, ProtocolDefaultsOnRecordLoadTheProtocolAsItRan) {
  namespace protocols = twinloop::protocols;
  const protocols::DesignerDefaults old = recorded_protocol_defaults(R"({"rig":"sim"})");
  EXPECT_EQ(old.criticism_trials, 0u);
  EXPECT_FALSE(old.criticism_power.has_value());
  const protocols::DesignerDefaults now = recorded_protocol_defaults(
      R"({"protocol_defaults":{"criticism_trials":20,"criticism_power":0.8}})");
  EXPECT_EQ(now.criticism_trials, 20u);
  EXPECT_EQ(now.criticism_power, 0.8);
  const protocols::DesignerDefaults untargeted = recorded_protocol_defaults(
      R"({"protocol_defaults":{"criticism_trials":5,"criticism_power":null}})");
  EXPECT_EQ(untargeted.criticism_trials, 5u);
  EXPECT_FALSE(untargeted.criticism_power.has_value());
  for (const char* bad :
       {R"({"protocol_defaults":{"criticism_trials":-1,"criticism_power":0.8}})",
        R"({"protocol_defaults":{"criticism_trials":20,"criticism_power":1.5}})",
        R"({"protocol_defaults":{"criticism_trials":20}})", R"({"protocol_defaults":"20"})"}) {
    EXPECT_THROW((void)recorded_protocol_defaults(bad), RecordError) << bad;
  }
}

TEST(SessionRecord, PredictionsAreLittleEndianFloat64PerUnit) {
  TempDir tmp;
  write_full_session(tmp.session());
  const auto blob =
      read_blob(tmp.session(), "SELECT mean FROM predictions WHERE trial = 3 AND hypothesis = 2");
  ASSERT_EQ(blob.size(), kUnits * 8);
  for (std::size_t u = 0; u < kUnits; ++u) {
    std::uint64_t bits = 0;
    for (int b = 7; b >= 0; --b) bits = (bits << 8) | blob[u * 8 + static_cast<std::size_t>(b)];
    EXPECT_EQ(std::bit_cast<double>(bits), mean_value(3, 2, u));
  }
}

// The encompassing test's directions come back as written, per hypothesis and rival, for
// resume and report to judge the trials as the live session did; a prediction without them
// (a lone hypothesis) reads back empty and is refused at any other size.
TEST(SessionRecord, RivalDifferencesReadBackAsWritten) {
  TempDir tmp;
  write_full_session(tmp.session());
  SessionRecord record = SessionRecord::open_existing(tmp.session());
  const std::vector<RecordedTrial> trials = record.trials();
  ASSERT_EQ(trials.size(), kTrials);
  for (const RecordedTrial& t : trials) {
    ASSERT_EQ(t.rival_differences.size(), kHypotheses) << "trial " << t.trial;
    for (std::size_t h = 0; h < kHypotheses; ++h) {
      ASSERT_EQ(t.rival_differences[h].size(), (kHypotheses - 1) * kUnits);
      for (std::size_t r = 0; r + 1 < kHypotheses; ++r) {
        for (std::size_t u = 0; u < kUnits; ++u) {
          EXPECT_EQ(t.rival_differences[h][r * kUnits + u], difference_value(t.trial, h, r, u));
        }
      }
    }
  }
  record.begin_trial(make_design(kTrials));
  Predictions p = make_predictions(kTrials, kHypotheses, kUnits);
  p.spans[1].rival_differences = std::span<const double>(p.rival_differences[1]).first(kUnits);
  EXPECT_THROW(record.preregister(kTrials, p.spans), RecordError);
  p.spans[1].rival_differences = {};
  record.preregister(kTrials, p.spans);
  EXPECT_TRUE(record.trials().back().rival_differences[1].empty());
  EXPECT_EQ(record.trials().back().rival_differences[0].size(), (kHypotheses - 1) * kUnits);
}

TEST(SessionRecord, HeadHashMatchesTheVerifiedChain) {
  TempDir tmp;
  SessionRecord record = SessionRecord::create(tmp.session(), make_setup());
  design_and_preregister(record, 0);
  finish_trial(record, 0);
  const auto head = record.head_hash();
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (auto b : head) {
    hex.push_back(kDigits[b >> 4]);
    hex.push_back(kDigits[b & 15]);
  }
  EXPECT_EQ(verify(tmp.session()).head_hash_hex, hex);
}

struct TamperCase {
  std::string name;
  std::function<void(const fs::path&)> edit;
  std::string table;  // a violation must name this table
};

class Tampering : public ::testing::TestWithParam<TamperCase> {};

TEST_P(Tampering, Detected) {
  TempDir tmp;
  write_full_session(tmp.session());
  ASSERT_TRUE(verify(tmp.session()).clean());
  GetParam().edit(tmp.session());
  const VerifyReport report = verify(tmp.session());
  EXPECT_FALSE(report.clean());
  EXPECT_TRUE(names(report, GetParam().table)) << describe(report);
  EXPECT_EQ(verify_session(tmp.session()), kExitRefused);
}

const std::vector<TamperCase> kTamperCases = {
    {"PredictionMeanLastBit",
     [](const fs::path& dir) {
       // Flip the lowest mantissa bit of one unit's mean: a change of about 1e-16.
       auto blob = read_blob(dir, "SELECT mean FROM predictions WHERE id = 5");
       blob[3 * 8] ^= 1;
       patch_blob(dir, "predictions", "mean", 5, 3 * 8, &blob[3 * 8], 1);
     },
     "predictions"},
    {"PredictionRivalDifferences",
     [](const fs::path& dir) {
       auto blob = read_blob(dir, "SELECT rival_differences FROM predictions WHERE id = 4");
       blob[2 * 8 + 7] ^= 0x80;  // one direction's sign
       patch_blob(dir, "predictions", "rival_differences", 4, 2 * 8 + 7, &blob[2 * 8 + 7], 1);
     },
     "predictions"},
    {"PredictionRivalDifferencesDropped",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE predictions SET rival_differences = NULL WHERE id = 3");
     },
     "predictions"},
    {"PredictionDispersion",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE predictions SET dispersion = zeroblob(80) WHERE id = 6");
     },
     "predictions"},
    {"OutcomeCount",
     [](const fs::path& dir) {
       const std::uint32_t count = 99;
       patch_blob(dir, "outcomes", "counts", 2, 4 * 4, &count, sizeof count);
     },
     "outcomes"},
    {"PosteriorProbability",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE posteriors SET probability = 0.9 WHERE id = 4");
     },
     "posteriors"},
    {"EventDetail",
     [](const fs::path& dir) {
       tamper_sql(dir,
                  "UPDATE events SET detail_json = '{\"lost_samples\":0,\"at\":4500}' "
                  "WHERE id = 1");
     },
     "events"},
    {"DeliveryOnset",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE deliveries SET onset_sample = onset_sample + 1 WHERE id = 3");
     },
     "deliveries"},
    {"TrialStimulusAfterPrediction",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE trials SET stimulus_json = '{\"contrast\":0.9}' WHERE trial = 1");
     },
     "predictions"},
    {"ProtocolText",
     [](const fs::path& dir) {
       tamper_sql(dir, "UPDATE session SET protocol_text = protocol_text || '# edited'");
     },
     "session"},
    {"HypothesisName",
     [](const fs::path& dir) { tamper_sql(dir, "UPDATE hypotheses SET name = 'x' WHERE id = 1"); },
     "chain"},
    {"DeletePrediction",
     [](const fs::path& dir) { tamper_sql(dir, "DELETE FROM predictions WHERE id = 7"); },
     "predictions"},
    {"DeleteDelivery",
     [](const fs::path& dir) { tamper_sql(dir, "DELETE FROM deliveries WHERE trial = 2"); },
     "deliveries"},
    {"DeleteEventAndItsLink",
     [](const fs::path& dir) {
       tamper_sql(dir,
                  "DELETE FROM events WHERE id = 2; DELETE FROM chain WHERE table_name = "
                  "'events' AND row_id = 2;");
     },
     "chain"},
    {"InsertEvent",
     [](const fs::path& dir) {
       tamper_sql(dir,
                  "INSERT INTO events(at_ns, monotonic_ns, kind, trial, detail_json) "
                  "VALUES (1, 1, 'fault', NULL, '{}')");
     },
     "events"},
    {"ReorderChainLinks",
     [](const fs::path& dir) {
       tamper_sql(dir,
                  "UPDATE chain SET seq = -1 WHERE seq = 5; UPDATE chain SET seq = 5 WHERE seq = "
                  "6; UPDATE chain SET seq = 6 WHERE seq = -1;");
     },
     "chain"},
    {"SwapPredictionsBetweenHypotheses",
     [](const fs::path& dir) {
       tamper_sql(dir,
                  "UPDATE predictions SET hypothesis = -1 WHERE id = 1; "
                  "UPDATE predictions SET hypothesis = 0 WHERE id = 2; "
                  "UPDATE predictions SET hypothesis = 1 WHERE id = 1;");
     },
     "predictions"},
    {"RenumberRow",
     [](const fs::path& dir) { tamper_sql(dir, "UPDATE outcomes SET id = 100 WHERE id = 1"); },
     "outcomes"},
};

INSTANTIATE_TEST_SUITE_P(VerifyTamper, Tampering, ::testing::ValuesIn(kTamperCases),
                         [](const auto& info) { return info.param.name; });

TEST(SessionRecord, DeliveryWithoutPreregistrationIsFlagged) {
  TempDir tmp;
  {
    SessionRecord record = SessionRecord::create(tmp.session(), make_setup());
    design_and_preregister(record, 0);
    finish_trial(record, 0);
    record.begin_trial(make_design(1));
    // The record is a witness: the delivery happened, so it is recorded...
    record.record_delivery(1, 60000);
    // ...and pre-registering afterwards is refused.
    const Predictions p = make_predictions(1, kHypotheses, kUnits);
    EXPECT_THROW(record.preregister(1, p.spans), RecordError);
  }
  const VerifyReport report = verify(tmp.session());
  ASSERT_FALSE(report.clean());
  ASSERT_EQ(report.violations.size(), 1U) << describe(report);
  EXPECT_EQ(report.violations[0].table, "deliveries");
  EXPECT_NE(report.violations[0].what.find("without pre-registered"), std::string::npos);
  EXPECT_TRUE(report.chain_intact);
  EXPECT_EQ(verify_session(tmp.session()), kExitRefused);
}

TEST(SessionRecord, DeliveryStampedBeforeCommitIsFlagged) {
  TempDir tmp;
  {
    SessionRecord record = SessionRecord::create(tmp.session(), make_setup());
    record.begin_trial(make_design(0));
    const Predictions p = make_predictions(0, kHypotheses, kUnits);
    const Timestamp committed = record.preregister(0, p.spans);
    // The driver says the stimulus went out a millisecond before the predictions were durable.
    record.record_delivery(0, 30000, Timestamp{committed.wall_ns - 1'000'000, 0});
  }
  const VerifyReport report = verify(tmp.session());
  EXPECT_EQ(report.violations.size(), kHypotheses) << describe(report);
  EXPECT_TRUE(names(report, "predictions"));
}

TEST(SessionRecord, ExistingDirectoryIsRefused) {
  TempDir tmp;
  { SessionRecord record = SessionRecord::create(tmp.session(), make_setup()); }
  try {
    SessionRecord again = SessionRecord::create(tmp.session(), make_setup());
    FAIL() << "an existing record was overwritten";
  } catch (const RecordError& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.session().string()), std::string::npos) << e.what();
  }
  // Any existing directory, even an empty one: a session never shares a folder.
  fs::create_directories(tmp.base() / "empty");
  EXPECT_THROW((void)SessionRecord::create(tmp.base() / "empty", make_setup()), RecordError);
  EXPECT_TRUE(verify(tmp.session()).clean());
}

TEST(SessionRecord, ErrorsNameTheFileAndSqliteMessage) {
  TempDir tmp;
  SessionRecord record = SessionRecord::create(tmp.session(), make_setup());
  record.begin_trial(make_design(0));
  try {
    record.begin_trial(make_design(0));
    FAIL() << "a duplicate trial was accepted";
  } catch (const RecordError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("session.sqlite"), std::string::npos) << what;
    EXPECT_NE(what.find("UNIQUE constraint failed"), std::string::npos) << what;
  }
  const Predictions wrong = make_predictions(0, kHypotheses - 1, kUnits);
  EXPECT_THROW(record.preregister(0, wrong.spans), RecordError);
  const Predictions short_units = make_predictions(0, kHypotheses, kUnits - 1);
  EXPECT_THROW(record.preregister(0, short_units.spans), RecordError);
  EXPECT_THROW(record.record_event("Bad Kind", std::nullopt), RecordError);
  EXPECT_THROW(record.record_event(event_kind::kFault, std::nullopt, "{not json"), RecordError);
  EXPECT_THROW(record.record_outcome(0, std::vector<std::uint32_t>(kUnits), 0, 10), RecordError);
  EXPECT_THROW(record.mark_trial(0, TrialStatus::kDesigned), RecordError);
  EXPECT_THROW(record.record_delivery(7, 0), RecordError);
  // Refusals roll back: the record is still consistent and usable.
  design_and_preregister(record, 1);
  finish_trial(record, 1);
  EXPECT_TRUE(verify(tmp.session()).clean()) << describe(verify(tmp.session()));
  EXPECT_THROW((void)verify(tmp.base() / "nothing"), RecordError);
  EXPECT_EQ(verify_session(tmp.base() / "nothing"), kExitRefused);
}

TEST(SessionRecord, ReopenFindsTrialInFlightAndResumes) {
  TempDir tmp;
  {
    SessionRecord record = SessionRecord::create(tmp.session(), make_setup());
    for (std::uint64_t t = 0; t < 3; ++t) {
      design_and_preregister(record, t);
      finish_trial(record, t);
    }
    design_and_preregister(record, 3);  // the crash comes here
  }
  ResumeState state;
  SessionRecord record = SessionRecord::open_existing(tmp.session(), &state);
  EXPECT_EQ(state.trials, 4U);
  ASSERT_TRUE(state.last_complete_trial.has_value());
  EXPECT_EQ(*state.last_complete_trial, 2U);
  ASSERT_EQ(state.in_flight, std::vector<std::uint64_t>{3});
  EXPECT_EQ(record.hypothesis_count(), kHypotheses);
  EXPECT_EQ(record.unit_count(), kUnits);

  for (std::uint64_t t : state.in_flight) {
    record.mark_trial(t, TrialStatus::kAborted, R"({"reason":"in flight at restart"})");
  }
  record.record_event(event_kind::kResumed, std::nullopt, R"({"after_trial":2})");
  design_and_preregister(record, 4);
  finish_trial(record, 4);

  const ResumeState after = record.resume_state();
  EXPECT_TRUE(after.in_flight.empty());
  EXPECT_EQ(after.last_complete_trial.value_or(0), 4U);
  const VerifyReport report = verify(tmp.session());
  EXPECT_TRUE(report.clean()) << describe(report);
  EXPECT_EQ(report.events, 2U);  // trial_aborted, resumed
}

TEST(SessionRecord, SurvivesSigkillRightAfterPreregister) {
  TempDir tmp;
  const fs::path dir = tmp.session();
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      SessionRecord record = SessionRecord::create(dir, make_setup());
      for (std::uint64_t t = 0; t < 2; ++t) {
        design_and_preregister(record, t);
        finish_trial(record, t);
      }
      design_and_preregister(record, 2);
      ::raise(SIGKILL);  // no destructors, no close, no checkpoint
    } catch (...) {
    }
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);

  // verify first: read-only, straight from the WAL the killed writer left behind.
  const VerifyReport report = verify(dir);
  EXPECT_TRUE(report.clean()) << describe(report);
  EXPECT_EQ(report.predictions, 3 * kHypotheses);

  ResumeState state;
  SessionRecord record = SessionRecord::open_existing(dir, &state);
  EXPECT_EQ(state.last_complete_trial.value_or(99), 1U);
  ASSERT_EQ(state.in_flight, std::vector<std::uint64_t>{2});
  for (std::size_t h = 0; h < kHypotheses; ++h) {
    const auto blob = read_blob(
        dir, "SELECT mean FROM predictions WHERE trial = 2 AND hypothesis = " + std::to_string(h));
    ASSERT_EQ(blob.size(), kUnits * 8);
    for (std::size_t u = 0; u < kUnits; ++u) {
      double value = 0;
      std::memcpy(&value, &blob[u * 8], 8);  // little-endian host
      EXPECT_EQ(value, mean_value(2, h, u));
    }
  }
  record.mark_trial(2, TrialStatus::kAborted, R"({"reason":"writer killed"})");
  EXPECT_TRUE(verify(dir).clean());
}

// The cost the session thread pays between choosing a stimulus and being allowed to deliver it.
TEST(SessionRecord, PreregisterCost) {
  constexpr std::size_t kH = 4, kU = 384, kRuns = 60;
  TempDir tmp;
  SessionRecord record = SessionRecord::create(tmp.session(), make_setup(kH, kU));
  std::vector<double> micros;
  for (std::uint64_t t = 0; t < kRuns; ++t) {
    record.begin_trial(make_design(t));
    const Predictions p = make_predictions(t, kH, kU);
    const auto start = std::chrono::steady_clock::now();
    record.preregister(t, p.spans);
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    finish_trial(record, t);
  }
  std::sort(micros.begin(), micros.end());
  const double median = micros[micros.size() / 2];
  const double p90 = micros[micros.size() * 9 / 10];
  std::printf("preregister(%zu hypotheses x %zu units): median %.0f us, p90 %.0f us, max %.0f us\n",
              kH, kU, median, p90, micros.back());
  RecordProperty("preregister_median_us", std::to_string(median));
  EXPECT_TRUE(verify(tmp.session()).clean());
}

}  // namespace

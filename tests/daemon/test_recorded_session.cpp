// Sessions whose subject has a finite supply of responses: the closed loop never designs a trial
// for a candidate the rig says is exhausted (discriminating, random and validation draws alike),
// stops with "the recorded data are exhausted" and records it; and `twinloop run --rig recorded`
// runs the example protocol on real V1 neurons (Ecker et al. 2010, read unmodified from the shared
// data folder) to a summary and a record that verifies, refusing bad datasets with a clear error.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon_test_support.hpp"
#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/recorded_rig.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/hil/count_subject.hpp"
#include "twinloop/hil/recorded_responses.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

namespace fs = std::filesystem;
using test_support::shell;

const fs::path kDataset =
    fs::path(TWINLOOP_SHARED_DATA) / "v1_gratings_ecker2010" / "data_v1_binned_moving.mat";
const fs::path kExample =
    fs::path(TWINLOOP_SOURCE_DIR) / "config/examples/protocol_v1_ecker2010.yaml";

constexpr const char* kProtocol = R"(twinloop_protocol: 1
name: finite_supply
subject: {id: SIM, species: Mus musculus}
probes:
  - {name: imec0, type: sim, channels: 16, sample_rate_hz: 30000, source: sim}
stimulus:
  kind: grating
  space:
    direction: {unit: deg, grid: {start: 0, stop: 315, step: 45}}
timing: {baseline_ms: 200, stimulus_ms: 500, response_start_ms: 0, response_end_ms: 500,
         inter_trial_ms: 1000}
safety: {amplitude_dimension: direction, max_amplitude: 360, max_duty_cycle: 0.5,
         min_interval_ms: 1000}
designer: {strategy: discriminate, validation_fraction: 0.2, decision_deadline_ms: 1000, seed: 3}
stop: {posterior_threshold: 0.99, max_trials: 500}
hypotheses:
  - {name: tuned, family: direction_tuning}
  - {name: flat, family: "null"}
)";

// A count-level subject with a fixed number of responses per candidate. A trial for a candidate
// whose supply is spent is counted as a violation (the loop must never ask for one).
class FiniteRig final : public TrialRig {
 public:
  FiniteRig(hil::CountSubject& subject, std::vector<int> supply)
      : subject_(subject), supply_(std::move(supply)) {
    delivered_.assign(supply_.size(), 0);
  }

  Result run_trial(std::uint64_t, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result result;
    const std::uint32_t c = stimulus.candidate;
    if (c >= supply_.size() || supply_[c] == 0) {
      ++violations_;
      result.problem = "exhausted";
      return result;
    }
    --supply_[c];
    ++delivered_[c];
    subject_.respond(stimulus, counts);
    result.delivered = true;
    result.onset_sample = next_onset_;
    result.window_start = next_onset_;
    result.window_end = next_onset_ + 500;
    next_onset_ += 1000;
    return result;
  }
  [[nodiscard]] bool available(std::uint32_t candidate) const noexcept override {
    return candidate < supply_.size() && supply_[candidate] > 0;
  }

  int violations_ = 0;
  std::vector<int> delivered_;

 private:
  hil::CountSubject& subject_;
  std::vector<int> supply_;
  std::int64_t next_onset_ = 0;
};

std::map<std::string, int> event_counts(const fs::path& dir) {
  std::map<std::string, int> counts;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2((dir / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    sqlite3_prepare_v2(db, "SELECT kind FROM events", -1, &s, nullptr);
    while (sqlite3_step(s) == SQLITE_ROW) {
      ++counts[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))];
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return counts;
}

TEST(ClosedLoopAvailability, NeverDesignsAnExhaustedCandidateAndStopsWhenNoneIsLeft) {
  auto loaded = protocols::load_protocol_text(kProtocol, "finite_supply.yaml");
  ASSERT_TRUE(loaded.ok()) << protocols::format_diagnostics(loaded.diagnostics);
  const protocols::Protocol& protocol = *loaded.protocol;
  // Candidate 3 has nothing from the start; the others 2..11 responses.
  const std::vector<int> supply = {2, 5, 8, 0, 11, 2, 5, 8};
  int total = 0;
  for (int s : supply) total += s;
  for (const auto strategy :
       {protocols::DesignerStrategy::kDiscriminate, protocols::DesignerStrategy::kRandom}) {
    SCOPED_TRACE(std::string(protocols::to_string(strategy)));
    hil::CountSubjectConfig config;
    config.seed = 11;
    config.unit_count = 8;
    config.mix = hil::ResponseMix{1, 0, 0, 0, 0};
    config.contrast_dimension = -1;
    hil::CountSubject subject(config);
    FiniteRig rig(subject, supply);
    const fs::path dir = test_support::fresh_temp_dir(std::string("finite_") +
                                                      std::string(protocols::to_string(strategy)));
    fs::remove_all(dir);
    SessionSetup setup;
    setup.protocol_text = protocol.source_text;
    for (const auto& h : protocol.hypotheses) {
      setup.hypotheses.push_back({h.name, std::string(protocols::to_string(h.family))});
    }
    for (std::size_t u = 0; u < 8; ++u)
      setup.units.push_back({0, static_cast<std::int64_t>(u), ""});
    for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
      setup.candidates_json.push_back("{}");
    }
    {
      SessionRecord record = SessionRecord::create(dir, setup);
      ClosedLoopOptions options;
      options.strategy = strategy;
      options.twin.window_seconds = 0.5;
      options.refit_every = 4;
      options.min_trials_before_stop = 1000;  // no posterior stop: the supply must run out
      ClosedLoop loop(protocol, 8, rig, &record, options);
      while (loop.step()) {
      }
      EXPECT_EQ(rig.violations_, 0);
      EXPECT_EQ(rig.delivered_, supply);  // every response used, none asked for twice
      EXPECT_EQ(loop.trials(), static_cast<std::size_t>(total));
      EXPECT_TRUE(loop.data_exhausted());
      EXPECT_EQ(loop.available_candidates(), 0u);
      EXPECT_TRUE(loop.stop_decision().stop());
      const SessionSummary summary = loop.summary();
      EXPECT_NE(summary.stop_reason.find("exhausted"), std::string::npos) << summary.stop_reason;
      EXPECT_EQ(summary.aborted_trials, 0u);
      EXPECT_FALSE(loop.plan().has_value());  // stays stopped
    }
    const std::map<std::string, int> events = event_counts(dir);
    EXPECT_EQ(
        events.count(std::string(event_kind::kDataExhausted)) ? events.at("data_exhausted") : 0, 1);
    EXPECT_EQ(events.count("candidate_exhausted") ? events.at("candidate_exhausted") : 0, 8);
    const VerifyReport report = verify(dir);
    EXPECT_TRUE(report.clean());
    fs::remove_all(dir);
  }
}

TEST(RecordedRig, AnswersWithRecordedRepeatsAndRefusesWhatWasNotRecorded) {
  auto loaded = protocols::load_protocol_file(kExample);
  ASSERT_TRUE(loaded.ok()) << protocols::format_diagnostics(loaded.diagnostics);
  const protocols::Protocol& protocol = *loaded.protocol;
  hil::RecordedSubject subject(hil::RecordedResponses::load(kDataset, 23), {.seed = 2});
  RecordedRig rig(subject, protocol.stimulus, protocol.timing);
  ASSERT_EQ(rig.conditions().size(), 16u);
  std::vector<std::uint32_t> counts(subject.unit_count());
  const protocols::Stimulus s = protocol.stimulus.stimulus(4);  // 90 deg
  for (int i = 0; i < 5; ++i) {  // session 23 has 5 repeats per direction
    EXPECT_TRUE(rig.available(4));
    const TrialRig::Result r = rig.run_trial(static_cast<std::uint64_t>(i), s, counts);
    EXPECT_TRUE(r.delivered);
    EXPECT_EQ(r.window_end - r.window_start, 500);
  }
  EXPECT_FALSE(rig.available(4));
  EXPECT_TRUE(rig.available(5));
  const TrialRig::Result r = rig.run_trial(5, s, counts);
  EXPECT_FALSE(r.delivered);  // not resampled
  EXPECT_NE(r.problem.find("every recorded repeat"), std::string::npos) << r.problem;

  // A direction between the recorded ones, or a contrast never shown, is refused up front.
  std::string text = protocol.source_text;
  const std::string grid = "grid: {start: 0, stop: 337.5, step: 22.5}";
  ASSERT_NE(text.find(grid), std::string::npos);
  auto off_grid = protocols::load_protocol_text(
      std::string(text).replace(text.find(grid), grid.size(),
                                "grid: {start: 0, stop: 350, step: 10}"),
      "off_grid.yaml");
  ASSERT_TRUE(off_grid.ok()) << protocols::format_diagnostics(off_grid.diagnostics);
  try {
    RecordedRig bad(subject, off_grid.protocol->stimulus, protocol.timing);
    ADD_FAILURE() << "a direction not in the data was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("(direction 10 deg) has no recorded condition"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(kDataset.string()), std::string::npos) << e.what();
  }
  const std::string contrast = "values: [1.0]";
  auto half = protocols::load_protocol_text(
      std::string(text).replace(text.find(contrast), contrast.size(), "values: [0.5, 1.0]"),
      "half.yaml");
  ASSERT_TRUE(half.ok()) << protocols::format_diagnostics(half.diagnostics);
  EXPECT_THROW(RecordedRig(subject, half.protocol->stimulus, protocol.timing),
               std::invalid_argument);
}

TEST(RecordedSession, RunsTheExampleOnRealNeuronsAndVerifies) {
  const fs::path dir = test_support::fresh_temp_dir("recorded_session");
  const fs::path out = dir / "session";
  const std::string twinloop = TWINLOOP_BINARY;
  const auto check = shell(twinloop + " check " + kExample.string());
  EXPECT_EQ(check.status, 0) << check.output;

  const auto run =
      shell(twinloop + " run " + kExample.string() + " --rig recorded --dataset " +
            kDataset.string() + " --dataset-session 0 --out " + out.string() + " --quiet");
  ASSERT_EQ(run.status, 0) << run.output;
  EXPECT_NE(run.output.find("no ground truth"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("verdict matches"), std::string::npos) << run.output;
  std::ifstream in(out / "summary.json");
  ASSERT_TRUE(in) << run.output;
  const nlohmann::json summary = nlohmann::json::parse(in);
  ASSERT_TRUE(summary.contains("verdict")) << summary.dump(2);
  EXPECT_FALSE(summary["verdict"].get<std::string>().empty());
  EXPECT_GT(summary["trials"].get<int>(), 0);
  EXPECT_EQ(summary["rig"], "recorded");
  EXPECT_FALSE(summary.contains("truth"));  // real neurons: no ground truth to compare with
  EXPECT_EQ(summary["dataset"]["session"], 0);
  EXPECT_EQ(summary["dataset"]["units"], 38);
  EXPECT_EQ(summary["hypotheses"].size(), 4u);
  EXPECT_LE(summary["dataset"]["repeats_used"].get<int>(), 16 * 13);
  const auto verified = shell(twinloop + " verify " + out.string());
  EXPECT_EQ(verified.status, 0) << verified.output;

  // Bad datasets are refused before a record exists, naming the file and what is wrong (a
  // session out of range and malformed files: test_recorded_responses.cpp).
  const auto missing =
      shell(twinloop + " run " + kExample.string() + " --rig recorded --dataset " +
            (dir / "none.mat").string() + " --out " + (dir / "s2").string() + " --quiet");
  EXPECT_EQ(missing.status, 1) << missing.output;
  EXPECT_NE(missing.output.find((dir / "none.mat").string() + ": no such file"), std::string::npos)
      << missing.output;
  const auto no_dataset = shell(twinloop + " run " + kExample.string() + " --rig recorded --out " +
                                (dir / "s3").string() + " --quiet");
  EXPECT_EQ(no_dataset.status, 2) << no_dataset.output;
  EXPECT_NE(no_dataset.output.find("needs --dataset"), std::string::npos) << no_dataset.output;
  EXPECT_FALSE(fs::exists(dir / "s2"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace twinloop::daemon

// The closed loop on a count-level simulated subject whose generative model is known: the true
// hypothesis wins, a subject no hypothesis describes ends "none", and the session record of the
// run verifies.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/count_rig.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

protocols::Protocol load() {
  auto result =
      protocols::load_protocol_file(TWINLOOP_SOURCE_DIR "/tests/fixtures/closed_loop_test.yaml");
  if (!result.ok()) ADD_FAILURE() << protocols::format_diagnostics(result.diagnostics);
  return *result.protocol;
}

/// The same with an LNP hypothesis as a third: one the tuned twin does not contain, so that its
/// encompassing test has a rival to judge it against (it contains the null near its fits).
protocols::Protocol load_with_lnp() {
  protocols::Protocol protocol = load();
  protocols::HypothesisSpec lnp;
  lnp.name = "lnp";
  lnp.family = protocols::HypothesisFamily::kLnp;
  protocol.hypotheses.push_back(lnp);
  return protocol;
}

/// A protocol whose sessions end at the posterior threshold, as they did before criticism trials
/// were the default: the baseline the criticism tests compare with.
protocols::Protocol without_criticism(protocols::Protocol protocol) {
  protocol.designer.criticism_trials = 0;
  protocol.designer.criticism_power.reset();
  return protocol;
}

hil::CountSubjectConfig subject_config(const hil::ResponseMix& mix, std::uint64_t seed) {
  hil::CountSubjectConfig config;
  config.seed = seed;
  config.unit_count = 16;
  config.mix = mix;
  config.window_seconds = 0.5;
  return config;
}

ClosedLoopOptions options() {
  ClosedLoopOptions o;
  o.twin.window_seconds = 0.5;
  o.refit_every = 2;
  return o;
}

/// What a session record of `protocol` on 16 units holds before its first trial.
SessionSetup record_setup(const protocols::Protocol& protocol) {
  SessionSetup setup;
  setup.protocol_text = protocol.source_text;
  for (const auto& h : protocol.hypotheses) {
    setup.hypotheses.push_back({h.name, std::string(protocols::to_string(h.family))});
  }
  for (std::size_t u = 0; u < 16; ++u) setup.units.push_back({0, static_cast<std::int64_t>(u), ""});
  for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
    setup.candidates_json.push_back("{}");
  }
  return setup;
}

/// A session without a record on a simulated column of `mix`, run to its end.
SessionSummary run_to_end(const protocols::Protocol& protocol, const hil::ResponseMix& mix,
                          std::uint64_t seed, const ClosedLoopOptions& loop_options) {
  hil::CountSubject subject(subject_config(mix, seed));
  CountRig rig(subject);
  ClosedLoop loop(protocol, 16, rig, nullptr, loop_options);
  while (loop.step()) {
  }
  return loop.summary();
}

TEST(ClosedLoop, TrueHypothesisWinsAndTheRecordVerifies) {
  const protocols::Protocol protocol = load();
  hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 3));
  CountRig rig(subject);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("twinloop_closed_loop_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SessionRecord record = SessionRecord::create(dir, record_setup(protocol));
  ClosedLoop loop(protocol, 16, rig, &record, options());
  while (loop.step()) {
  }
  const SessionSummary summary = loop.summary();
  EXPECT_EQ(summary.verdict.name, "tuned") << summary.verdict.reason;
  EXPECT_GE(summary.validation_trials, 5u);
  EXPECT_LE(summary.trials, 60u);
  EXPECT_GT(summary.hypotheses[0].log_bayes_factor, std::log(99.0));
  // Out of sample on the validation trials, the true twin predicts better than the null.
  EXPECT_EQ(summary.hypotheses[0].bits_per_spike_against, "flat");
  EXPECT_GT(summary.hypotheses[0].bits_per_spike, 0.0);
  EXPECT_EQ(summary.hypotheses[1].bits_per_spike, 0.0);
  // The encompassing test judges the designed trials too: the null's errors lean toward the
  // tuned twin's predictions. The tuned twin contains the null near its fits (a lower amplitude
  // is one of its own directions), so the null has nothing to show it: no test.
  for (const HypothesisSummary& h : summary.hypotheses) {
    ASSERT_EQ(h.check.encompassing_z.size(), 1u) << h.name;
  }
  EXPECT_TRUE(std::isnan(summary.hypotheses[0].check.encompassing_z[0]));
  EXPECT_EQ(summary.hypotheses[0].check.encompassing_trials, 0u);
  EXPECT_GT(summary.hypotheses[1].check.encompassing_trials, summary.hypotheses[1].check.trials);
  EXPECT_GT(summary.hypotheses[1].check.encompassing_z[0], 3.0);
  const VerifyReport report = verify(dir);
  EXPECT_TRUE(report.clean()) << (report.violations.empty() ? "" : report.violations[0].what);
  EXPECT_EQ(report.trials, summary.trials);
  std::filesystem::remove_all(dir);
}

// The summary takes each log Bayes factor apart by unit; the parts add up to it, and a session
// resumed from its record (which rescores every trial) takes it apart the same way.
TEST(ClosedLoop, TheLogBayesFactorIsTakenApartByUnitAndSurvivesAResume) {
  const protocols::Protocol protocol = load();
  const auto dir =
      std::filesystem::temp_directory_path() / ("twinloop_by_unit_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SessionSummary summary;
  {
    SessionRecord record = SessionRecord::create(dir, record_setup(protocol));
    hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 3));
    CountRig rig(subject);
    ClosedLoop loop(protocol, 16, rig, &record, options());
    while (loop.step()) {
    }
    summary = loop.summary();
  }
  ASSERT_EQ(summary.verdict.name, "tuned") << summary.verdict.reason;
  for (const HypothesisSummary& h : summary.hypotheses) {
    const twin::UnitEvidence& e = h.by_unit;
    EXPECT_EQ(e.units_for + e.units_against + e.silent_units, 16u) << h.name;
    EXPECT_NEAR(e.log_bayes_factor_for + e.log_bayes_factor_against + e.silent_log_bayes_factor,
                h.log_bayes_factor, 1e-9 * std::abs(h.log_bayes_factor))
        << h.name;
    ASSERT_EQ(e.strongest.size(), std::min<std::size_t>(3, e.units_for)) << h.name;
    for (std::size_t i = 1; i < e.strongest.size(); ++i) {
      EXPECT_GE(e.strongest[i - 1].log_bayes_factor, e.strongest[i].log_bayes_factor);
    }
  }
  // Every unit of this column is tuned: most favour the tuned twin.
  EXPECT_GE(summary.hypotheses[0].by_unit.units_for, 12u);
  EXPECT_EQ(summary.hypotheses[0].by_unit.silent_units, 0u);

  SessionRecord reopened = SessionRecord::open_existing(dir);
  hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 3));
  CountRig rig(subject);
  ClosedLoop resumed(protocol, 16, rig, &reopened, options());
  (void)resumed.restore();
  const SessionSummary again = resumed.summary();
  for (std::size_t k = 0; k < summary.hypotheses.size(); ++k) {
    const twin::UnitEvidence& a = summary.hypotheses[k].by_unit;
    const twin::UnitEvidence& b = again.hypotheses[k].by_unit;
    EXPECT_EQ(a.units_for, b.units_for);
    EXPECT_EQ(a.units_against, b.units_against);
    EXPECT_DOUBLE_EQ(a.log_bayes_factor_for, b.log_bayes_factor_for);
    EXPECT_DOUBLE_EQ(a.log_bayes_factor_against, b.log_bayes_factor_against);
    ASSERT_EQ(a.strongest.size(), b.strongest.size());
    for (std::size_t i = 0; i < a.strongest.size(); ++i) {
      EXPECT_EQ(a.strongest[i].unit, b.strongest[i].unit);
    }
  }
  std::filesystem::remove_all(dir);
}

// replay --designer asks, at each trial, what a designer would choose given the loop's history.
// The question must not change the session, and asked of the session's own designer it must
// name the trial the designer planned.
TEST(ClosedLoop, AskingAnotherDesignerLeavesTheSessionAsItWas) {
  const protocols::Protocol protocol = load();
  hil::CountSubject asked_subject(subject_config({1, 0, 0, 0, 0}, 5));
  hil::CountSubject plain_subject(subject_config({1, 0, 0, 0, 0}, 5));
  CountRig asked_rig(asked_subject);
  CountRig plain_rig(plain_subject);
  ClosedLoop asked(protocol, 16, asked_rig, nullptr, options());
  ClosedLoop plain(protocol, 16, plain_rig, nullptr, options());
  std::vector<std::uint32_t> counts(16);
  std::size_t designed = 0, random_differs = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const std::optional<PlannedTrial> a = asked.plan();
    const std::optional<PlannedTrial> p = plain.plan();
    ASSERT_EQ(a.has_value(), p.has_value());
    if (!a) break;
    const auto same = asked.alternative(protocols::DesignerStrategy::kDiscriminate, *a);
    const auto random = asked.alternative(protocols::DesignerStrategy::kRandom, *a);
    ASSERT_TRUE(same && random);
    EXPECT_GE(same->eig, 0.0);
    EXPECT_GE(random->eig_planned, 0.0);
    EXPECT_EQ(same->eig_planned, random->eig_planned) << "one estimate for the planned trial";
    if (!a->validation) {
      ++designed;
      EXPECT_EQ(same->candidate, a->candidate) << "trial " << trial;
      EXPECT_EQ(same->eig, same->eig_planned);
    }
    random_differs += random->candidate != a->candidate ? 1 : 0;
    EXPECT_EQ(a->candidate, p->candidate) << "trial " << trial;
    EXPECT_EQ(a->validation, p->validation) << "trial " << trial;
    TrialRig::Result result = asked_rig.run_trial(a->trial, a->stimulus, counts);
    asked.complete(*a, result, counts);
    result = plain_rig.run_trial(p->trial, p->stimulus, counts);
    plain.complete(*p, result, counts);
  }
  EXPECT_GT(designed, 0u);
  EXPECT_GT(random_differs, 0u);
  for (std::size_t h = 0; h < 2; ++h) {
    EXPECT_EQ(asked.posterior().probability(h), plain.posterior().probability(h));
  }
}

// Refits run on a worker thread and are adopted at a fixed point (the next plan(), waiting for
// the refit if need be), so two runs of one session design and score exactly alike however the
// threads are scheduled: what replay relies on.
TEST(ClosedLoop, BackgroundRefitsGiveTheSameSessionEveryTime) {
  const protocols::Protocol protocol = load();
  std::vector<std::vector<std::uint32_t>> designs(2);
  std::vector<std::vector<double>> posteriors(2);
  std::vector<RefitStats> stats(2);
  std::vector<std::string> verdicts(2);
  for (int run = 0; run < 2; ++run) {
    hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 8));
    CountRig rig(subject);
    ClosedLoopOptions o = options();
    o.refit_every = 1;
    ASSERT_TRUE(o.background_refit);
    ClosedLoop loop(protocol, 16, rig, nullptr, o);
    std::vector<std::uint32_t> counts(16);
    while (const std::optional<PlannedTrial> p = loop.plan()) {
      designs[run].push_back(p->candidate);
      const TrialRig::Result result = rig.run_trial(p->trial, p->stimulus, counts);
      if (run == 1) std::this_thread::sleep_for(std::chrono::milliseconds(p->trial % 3));
      loop.complete(*p, result, counts);
      posteriors[run].push_back(loop.posterior().probability(0));
    }
    stats[run] = loop.refit_stats();
    verdicts[run] = loop.summary().verdict.name;
    EXPECT_EQ(verdicts[run], "tuned") << loop.summary().verdict.reason;
  }
  EXPECT_EQ(verdicts[0], verdicts[1]);
  EXPECT_EQ(designs[0], designs[1]);
  EXPECT_EQ(posteriors[0], posteriors[1]);
  // One refit per scored trial from the eighth on, each adopted (the last one may be in flight).
  EXPECT_GE(stats[0].refits + 1, designs[0].size() - 8);
  EXPECT_GT(stats[0].total_ms, 0.0);
  EXPECT_EQ(stats[0].refits, stats[1].refits);
}

// A host places the refit thread (off a pinned session CPU) through a hook run on that thread.
TEST(ClosedLoop, TheRefitThreadIsPlacedByItsHostOnItsOwnThread) {
  const protocols::Protocol protocol = load();
  hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 9));
  CountRig rig(subject);
  ClosedLoopOptions o = options();
  std::atomic<int> calls{0};
  std::thread::id placed;
  o.on_refit_thread_start = [&] {
    placed = std::this_thread::get_id();
    calls.fetch_add(1);
  };
  {
    ClosedLoop loop(protocol, 16, rig, nullptr, o);
    for (int i = 0; i < 12 && loop.step(); ++i) {
    }
    EXPECT_GT(loop.refit_stats().refits, 0u);
  }  // joins the refit thread, so `placed` is safe to read
  EXPECT_EQ(calls.load(), 1);
  EXPECT_NE(placed, std::this_thread::get_id());
}

// Without a null hypothesis there is no registered baseline: bits per spike fall back to a
// constant rate per unit, and the summary says so.
TEST(ClosedLoop, WithoutANullBitsPerSpikeAreAgainstAConstantRate) {
  protocols::Protocol protocol = load();
  ASSERT_EQ(protocol.hypotheses.at(1).family, protocols::HypothesisFamily::kNull);
  protocol.hypotheses[1] = {"orientation", protocols::HypothesisFamily::kOrientationTuning, {}, {}};
  ClosedLoopOptions o = options();
  o.max_trials = 40;
  const SessionSummary summary = run_to_end(protocol, {1, 0, 0, 0, 0}, 6, o);
  ASSERT_GT(summary.validation_trials, 0u);
  for (const HypothesisSummary& h : summary.hypotheses) {
    EXPECT_EQ(h.bits_per_spike_against, kConstantRateReference) << h.name;
    EXPECT_TRUE(std::isfinite(h.bits_per_spike)) << h.name;
    EXPECT_EQ(h.bits_per_spike, h.check.bits_per_spike_vs_constant_rate) << h.name;
  }
}

TEST(ClosedLoop, FlatSubjectIsFoundFlat) {
  const SessionSummary summary = run_to_end(load(), {0, 0, 0, 0, 1}, 4, options());
  // The null is nested in direction tuning (amplitude 0), so "flat" may not reach 0.99 within
  // the budget; what must not happen is a confident "tuned".
  EXPECT_NE(summary.verdict.name, "tuned") << summary.verdict.reason;
}

TEST(ClosedLoop, NoHypothesisFitsABimodalSubject) {
  ClosedLoopOptions o = options();
  o.max_trials = 60;
  const SessionSummary summary = run_to_end(load(), {0, 1, 0, 0, 0}, 5, o);
  EXPECT_NE(summary.verdict.name, "flat") << summary.verdict.reason;
  // Two-lobed tuning is not a von Mises: either the check refutes the leader or nothing wins.
  EXPECT_TRUE(summary.verdict.kind != twin::VerdictKind::winner || summary.verdict.name == "tuned")
      << summary.verdict.reason;
}

// designer.criticism_trials: once the posterior reaches its threshold, that many more designed
// trials, marked 'criticism', feed the leader's encompassing test; up to the threshold the session
// is the one it would have been without them.
TEST(ClosedLoop, CriticismTrialsComeAfterTheThresholdAndFeedTheEncompassingTest) {
  const protocols::Protocol plain_protocol = without_criticism(load_with_lnp());
  protocols::Protocol protocol = plain_protocol;
  protocol.designer.criticism_trials = 6;
  const auto dir =
      std::filesystem::temp_directory_path() / ("twinloop_criticism_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SessionRecord record = SessionRecord::create(dir, record_setup(protocol));
  hil::CountSubject subject(subject_config({1, 0, 0, 0, 0}, 3));
  CountRig rig(subject);
  ClosedLoop loop(protocol, 16, rig, &record, options());
  while (loop.step()) {
  }
  const SessionSummary summary = loop.summary();
  const SessionSummary plain = run_to_end(plain_protocol, {1, 0, 0, 0, 0}, 3, options());
  ASSERT_EQ(summary.verdict.name, "tuned") << summary.verdict.reason;
  ASSERT_EQ(plain.verdict.name, "tuned") << plain.verdict.reason;

  const std::optional<std::size_t> reached = loop.trials_to_reach(0, 0.99);
  ASSERT_TRUE(reached.has_value());
  std::size_t criticism = 0;
  for (const RecordedTrial& t : record.trials()) {
    if (t.strategy != "criticism") continue;
    ++criticism;
    EXPECT_FALSE(t.is_validation) << "trial " << t.trial;
    EXPECT_GE(t.trial, *reached) << "a criticism trial before the posterior reached 0.99";
  }
  EXPECT_EQ(criticism, 6u);
  EXPECT_EQ(summary.criticism_trials, 6u);
  EXPECT_EQ(plain.criticism_trials, 0u);
  // The tuned twin stays above the threshold, so the session is the plain one plus 6 trials,
  // each judged by the encompassing test and by no PIT test.
  EXPECT_EQ(summary.trials, plain.trials + 6);
  for (std::size_t h = 0; h < summary.hypotheses.size(); ++h) {
    EXPECT_EQ(summary.hypotheses[h].check.encompassing_trials,
              plain.hypotheses[h].check.encompassing_trials + 6);
    EXPECT_EQ(summary.hypotheses[h].check.trials, plain.hypotheses[h].check.trials);
  }

  // Resumed, the session counts the criticism trials on record and plans no more.
  {
    SessionRecord reopened = SessionRecord::open_existing(dir);
    hil::CountSubject resumed_subject(subject_config({1, 0, 0, 0, 0}, 3));
    CountRig resumed_rig(resumed_subject);
    ClosedLoop resumed(protocol, 16, resumed_rig, &reopened, options());
    (void)resumed.restore();
    EXPECT_FALSE(resumed.needs_criticism());
    EXPECT_FALSE(resumed.plan().has_value());
  }
  std::filesystem::remove_all(dir);
}

}  // namespace

// designer.criticism_power: criticism trials stop once the leader's check could have caught
// counts halfway toward every rival with that probability, criticism_trials being the budget.
// The target is checked before each one, so a session takes criticism trials only while its
// leader's power is below the target.
TEST(ClosedLoop, ACriticismPowerTargetEndsCriticismOnceTheCheckCouldSeeAMisfit) {
  const protocols::Protocol plain_protocol = without_criticism(load_with_lnp());
  const SessionSummary plain = run_to_end(plain_protocol, {1, 0, 0, 0, 0}, 3, options());
  ASSERT_EQ(plain.verdict.name, "tuned") << plain.verdict.reason;
  // The tuned twin contains the null (no power against it, NaN); LNP is the rival it is
  // judged against.
  const auto weakest = [](const SessionSummary& s) {
    const std::vector<double>& power = s.hypotheses[0].check.encompassing_power;
    EXPECT_EQ(power.size(), 2u);
    EXPECT_TRUE(std::isnan(power[0]));  // rival 0 is 'flat'
    return power.size() == 2 ? power[1] : std::nan("");
  };
  const double power_at_threshold = weakest(plain);
  // A winner's reason says what its pass is worth, against the rival it sees least of.
  char worth[96];
  std::snprintf(worth, sizeof worth,
                "; it would have caught counts halfway toward 'lnp' with probability %.2f",
                power_at_threshold);
  EXPECT_GT(power_at_threshold, 0.0);
  EXPECT_NE(plain.verdict.reason.find(worth), std::string::npos) << plain.verdict.reason;
  const auto criticism_taken = [&](double target) {
    protocols::Protocol protocol = plain_protocol;
    protocol.designer.criticism_trials = 6;
    protocol.designer.criticism_power = target;
    const SessionSummary s = run_to_end(protocol, {1, 0, 0, 0, 0}, 3, options());
    EXPECT_EQ(s.verdict.name, "tuned") << s.verdict.reason;
    const double power = weakest(s);
    return std::pair{
        s.hypotheses[0].check.encompassing_trials - plain.hypotheses[0].check.encompassing_trials,
        power};
  };
  // Already there (any power meets a target this small): none taken.
  EXPECT_EQ(criticism_taken(1e-6).first, 0u);
  // Out of reach: the whole budget.
  const auto [all, power_after_all] = criticism_taken(std::nextafter(1.0, 0.0));
  EXPECT_EQ(all, 6u);
  // Between the two: the session stops as soon as the power reaches it.
  const double between = 0.5 * (power_at_threshold + power_after_all);
  const auto [some, power_reached] = criticism_taken(between);
  EXPECT_GT(some, 0u);
  EXPECT_LT(some, 6u);
  EXPECT_GE(power_reached, between);
}

}  // namespace twinloop::daemon

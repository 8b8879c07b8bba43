// Posterior over hypotheses: against hand-computed Bayes updates, against data simulated from a
// known Poisson model (the true hypothesis wins, its log Bayes factor grows like trials x KL),
// and for the properties the session relies on (invariance, stability, no allocation); and the
// unit ledger, which takes the posterior's evidence apart by unit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "twinloop/twin/posterior.hpp"
#include "twinloop/twin/unit_ledger.hpp"

namespace twinloop::twin {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Direction tuning: unit u prefers direction 2 pi u / units.
std::vector<double> tuned_means(std::size_t units, double direction, double gain) {
  std::vector<double> means(units);
  for (std::size_t u = 0; u < units; ++u) {
    const double preferred = 2.0 * std::numbers::pi * static_cast<double>(u) / units;
    means[u] = gain * (1.0 + 6.0 * std::exp(2.0 * (std::cos(direction - preferred) - 1.0)));
  }
  return means;
}

std::vector<CountDistribution> poisson(const std::vector<double>& means) {
  std::vector<CountDistribution> out;
  for (const double m : means) out.push_back({m, 0.0});
  return out;
}

TEST(Posterior, UniformPriorAndHandComputedUpdate) {
  Posterior posterior({"slow", "fast"});
  EXPECT_DOUBLE_EQ(posterior.probability(0), 0.5);
  EXPECT_EQ(posterior.trials(), 0u);
  // One unit, counts 3 then 5, Poisson rates 2 and 4: the posterior odds are the likelihood
  // ratio, prod (2/4)^k e^(4-2).
  for (const std::uint32_t k : {3u, 5u}) {
    const std::vector<std::uint32_t> counts{k};
    const std::vector<CountDistribution> slow{{2.0, 0.0}}, fast{{4.0, 0.0}};
    const double ll[] = {log_likelihood(slow, counts), log_likelihood(fast, counts)};
    posterior.add_trial(ll);
  }
  const double log_odds = 8.0 * std::log(0.5) + 2.0 * 2.0;
  EXPECT_NEAR(posterior.log_bayes_factor(0, 1), log_odds, 1e-12);
  EXPECT_NEAR(posterior.probability(0), 1.0 / (1.0 + std::exp(-log_odds)), 1e-12);
  EXPECT_NEAR(posterior.probability(0) + posterior.probability(1), 1.0, 1e-15);
  EXPECT_EQ(posterior.leader_name(), "fast");
  EXPECT_EQ(posterior.trials(), 2u);
  EXPECT_EQ(posterior.index_of("fast"), 1u);
  EXPECT_FALSE(posterior.index_of("nope").has_value());
}

TEST(Posterior, PriorWeightsAreNormalisedAndDoNotEnterTheBayesFactor) {
  const double prior[] = {1.0, 3.0};
  Posterior posterior({"a", "b"}, prior);
  EXPECT_DOUBLE_EQ(posterior.probability(1), 0.75);
  EXPECT_NEAR(posterior.log_prior(0), std::log(0.25), 1e-15);
  const double ll[] = {-1.0, -2.0};
  posterior.add_trial(ll);
  EXPECT_DOUBLE_EQ(posterior.log_bayes_factor(0, 1), 1.0);
  // posterior odds = prior odds x Bayes factor
  EXPECT_NEAR(posterior.log_probability(0) - posterior.log_probability(1),
              std::log(1.0 / 3.0) + 1.0, 1e-12);
  posterior.reset();
  EXPECT_EQ(posterior.trials(), 0u);
  EXPECT_DOUBLE_EQ(posterior.probability(1), 0.75);
}

TEST(Posterior, TruePoissonHypothesisWinsAndLogBayesFactorGrowsLinearly) {
  constexpr std::size_t units = 16;
  std::mt19937_64 rng(20240611);
  std::uniform_int_distribution<int> pick(0, 7);
  Posterior posterior({"flat", "true", "too_strong"});
  double expected_increment_sum = 0.0;  // sum over trials of KL(true || too_strong)
  std::vector<double> bf_at;
  for (int trial = 1; trial <= 400; ++trial) {
    const double direction = 2.0 * std::numbers::pi * pick(rng) / 8.0;
    const auto truth = tuned_means(units, direction, 1.0);
    const auto strong = tuned_means(units, direction, 1.5);
    std::vector<double> flat(units, 4.0);
    std::vector<std::uint32_t> counts(units);
    for (std::size_t u = 0; u < units; ++u) {
      counts[u] = std::poisson_distribution<std::uint32_t>(truth[u])(rng);
      // KL(Poisson(m) || Poisson(c m)) = m (c - 1 - log c)
      expected_increment_sum += truth[u] * (0.5 - std::log(1.5));
    }
    const double ll[] = {log_likelihood(poisson(flat), counts),
                         log_likelihood(poisson(truth), counts),
                         log_likelihood(poisson(strong), counts)};
    posterior.add_trial(ll);
    if (trial % 100 == 0) {
      bf_at.push_back(posterior.log_bayes_factor(1, 2));
      // The log Bayes factor tracks its expectation, trials x KL, within sampling noise.
      EXPECT_NEAR(bf_at.back() / expected_increment_sum, 1.0, 0.15) << "trial " << trial;
    }
    if (trial == 20) {
      EXPECT_GT(posterior.probability(1), 0.99);
    }
  }
  EXPECT_EQ(posterior.leader_name(), "true");
  EXPECT_GT(posterior.probability(1), 1.0 - 1e-12);
  EXPECT_GT(posterior.log_bayes_factor(1, 0), 0.0);
  // Linear growth: equal increments over equal blocks of trials (ratio of the 400 to the 100
  // trial value ~ 4).
  ASSERT_EQ(bf_at.size(), 4u);
  EXPECT_NEAR(bf_at[3] / bf_at[0], 4.0, 0.6);
  for (std::size_t i = 1; i < bf_at.size(); ++i) EXPECT_GT(bf_at[i], bf_at[i - 1]);
}

TEST(Posterior, InvariantToAConstantAddedToAllLogLikelihoods) {
  Posterior plain({"a", "b", "c"});
  Posterior shifted({"a", "b", "c"});
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(-20.0, 5.0);
  for (int t = 0; t < 50; ++t) {
    const double ll[] = {noise(rng), noise(rng), noise(rng)};
    const double shift = (t % 2 == 0 ? 1.0e4 : -3.7e3) * (t + 1);
    const double moved[] = {ll[0] + shift, ll[1] + shift, ll[2] + shift};
    plain.add_trial(ll);
    shifted.add_trial(moved);
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_NEAR(plain.probability(i), shifted.probability(i), 1e-9);
    }
  }
  EXPECT_EQ(plain.leader(), shifted.leader());
  EXPECT_NEAR(plain.log_bayes_factor(0, 2), shifted.log_bayes_factor(0, 2), 1e-6);
}

TEST(Posterior, StableWhenEvidenceDiffersByThousandsOfNats) {
  Posterior posterior({"a", "b"});
  const double ll[] = {-1.0e6, -1.0e6 - 5000.0};
  posterior.add_trial(ll);
  EXPECT_DOUBLE_EQ(posterior.probability(0), 1.0);
  EXPECT_EQ(posterior.probability(1), 0.0);
  EXPECT_NEAR(posterior.log_probability(1), -5000.0, 1e-9);  // exact, though exp underflows
  EXPECT_NEAR(posterior.log_bayes_factor(0, 1), 5000.0, 1e-9);
  EXPECT_FALSE(std::isnan(posterior.log_probability(0)));
}

TEST(Posterior, ImpossibleObservationRefutesAndAllRefutedIsReported) {
  Posterior posterior({"silent", "active"});
  // A unit predicted silent (mean 0) fired.
  const std::vector<std::uint32_t> counts{2};
  const std::vector<CountDistribution> silent{{0.0, 0.0}}, active{{2.0, 0.0}};
  const double ll[] = {log_likelihood(silent, counts), log_likelihood(active, counts)};
  EXPECT_EQ(ll[0], -kInf);
  posterior.add_trial(ll);
  EXPECT_EQ(posterior.probability(0), 0.0);
  EXPECT_DOUBLE_EQ(posterior.probability(1), 1.0);
  EXPECT_EQ(posterior.log_bayes_factor(1, 0), kInf);
  EXPECT_FALSE(posterior.all_refuted());
  const double both[] = {-1.0, -kInf};
  posterior.add_trial(both);
  EXPECT_TRUE(posterior.all_refuted());
  EXPECT_EQ(posterior.probability(0) + posterior.probability(1), 0.0);
  EXPECT_TRUE(std::isnan(posterior.log_bayes_factor(0, 1)));
}

TEST(Posterior, RefusesBadInputAndStaysUnchanged) {
  EXPECT_THROW(Posterior({}), std::invalid_argument);
  EXPECT_THROW(Posterior({"a", "a"}), std::invalid_argument);
  const double bad_prior[] = {1.0, 0.0};
  EXPECT_THROW(Posterior({"a", "b"}, bad_prior), std::invalid_argument);
  const double short_prior[] = {1.0};
  EXPECT_THROW(Posterior({"a", "b"}, short_prior), std::invalid_argument);

  Posterior posterior({"a", "b"});
  const double one[] = {-1.0};
  const double nan[] = {-1.0, std::numeric_limits<double>::quiet_NaN()};
  const double plus_inf[] = {kInf, -1.0};
  EXPECT_THROW(posterior.add_trial(one), std::invalid_argument);
  EXPECT_THROW(posterior.add_trial(nan), std::invalid_argument);
  EXPECT_THROW(posterior.add_trial(plus_inf), std::invalid_argument);
  EXPECT_EQ(posterior.trials(), 0u);
  EXPECT_DOUBLE_EQ(posterior.log_evidence(0), 0.0);
  EXPECT_DOUBLE_EQ(posterior.probability(1), 0.5);
}

TEST(Posterior, LogLikelihoodOfAPredictionRowAndItsChecks) {
  const std::vector<CountDistribution> row{{4.0, 0.0}, {5.0, 0.3}, {6.0, 0.0}};
  const std::vector<std::uint32_t> counts{4, 0, 7};
  double expected = 0.0;
  for (std::size_t u = 0; u < 3; ++u) expected += log_probability(row[u], counts[u]);
  EXPECT_DOUBLE_EQ(log_likelihood(row, counts), expected);
  const std::vector<std::uint32_t> two{1, 2};
  EXPECT_THROW((void)log_likelihood(row, two), std::invalid_argument);
}

TEST(Posterior, AddTrialAndReadersDoNotAllocate) {
  Posterior posterior({"a", "b", "c", "d"});
  const double ll[] = {-3.0, -2.5, -7.0, -1.0};
  const std::vector<std::uint32_t> counts{1, 2, 3};
  const std::vector<CountDistribution> predictions{{1.0, 0.0}, {2.0, 0.4}, {3.0, 0.0}};
  test_support::allocations = 0;
  test_support::count_allocations_on_this_thread = true;
  double sink = 0.0;
  for (int t = 0; t < 100; ++t) {
    sink += log_likelihood(predictions, counts);
    posterior.add_trial(ll);
    sink += posterior.probabilities()[0] + posterior.log_bayes_factor(1, 3) +
            posterior.log_probability(2) + static_cast<double>(posterior.leader());
  }
  test_support::count_allocations_on_this_thread = false;
  EXPECT_EQ(test_support::allocations.load(), 0u);
  EXPECT_TRUE(std::isfinite(sink));
  EXPECT_EQ(posterior.leader_name(), "d");
}

std::vector<CountDistribution> row_of(const PredictionBatch& batch, std::size_t candidate) {
  std::vector<CountDistribution> row;
  for (std::size_t u = 0; u < batch.units; ++u) row.push_back(batch.at(candidate, u));
  return row;
}

// The ledger's trial log-likelihood is log_likelihood()'s, to the bit, so a session that keeps a
// ledger scores exactly as one that does not; its units' shares add up to the log Bayes factor;
// and it names the units that carry the evidence and what the silent ones add.
TEST(UnitLedger, TakesTheLogBayesFactorApartByUnit) {
  // Unit 0 is tuned, as 'tuned' says; unit 1 fires at a constant rate, as 'flat' says;
  // unit 2 never fires, and 'tuned' predicts it a little above 'flat'.
  const std::vector<double> tuned_low{1.0, 2.0, 0.02}, tuned_high{6.0, 3.0, 0.02};
  const std::vector<double> flat{3.5, 2.5, 0.01}, alpha{0.0, 0.3, 0.0};
  PredictionBatch tuned;
  tuned.resize(2, 3);
  PredictionBatch constant;
  constant.resize(2, 3);
  for (std::size_t u = 0; u < 3; ++u) {
    tuned.mean[u] = tuned_low[u];
    tuned.mean[3 + u] = tuned_high[u];
    constant.mean[u] = constant.mean[3 + u] = flat[u];
    tuned.dispersion[u] = tuned.dispersion[3 + u] = alpha[u];
    constant.dispersion[u] = constant.dispersion[3 + u] = alpha[u];
  }
  std::mt19937_64 rng(7);
  UnitLedger ledger(2, 3);
  Posterior posterior({"tuned", "flat"});
  for (int t = 0; t < 60; ++t) {
    const std::size_t c = static_cast<std::size_t>(t % 2);
    std::poisson_distribution<std::uint32_t> unit0(c == 0 ? 1.0 : 6.0), unit1(2.6);
    const std::vector<std::uint32_t> counts{unit0(rng), unit1(rng), 0};
    const double ll[] = {ledger.add(0, tuned, c, counts), ledger.add(1, constant, c, counts)};
    EXPECT_EQ(ll[0], log_likelihood(row_of(tuned, c), counts));
    EXPECT_EQ(ll[1], log_likelihood(row_of(constant, c), counts));
    ledger.add_counts(counts);
    posterior.add_trial(ll);
  }
  const UnitEvidence e = ledger.compare(0, 1, 2);
  EXPECT_EQ(e.units_for, 1u);
  EXPECT_EQ(e.units_against, 1u);
  EXPECT_EQ(e.silent_units, 1u);
  EXPECT_GT(e.log_bayes_factor_for, 20.0);
  EXPECT_LT(e.log_bayes_factor_against, 0.0);
  // 60 silent trials at 0.02 against 0.01: 60 x -0.01 nats.
  EXPECT_NEAR(e.silent_log_bayes_factor, -0.6, 1e-9);
  EXPECT_NEAR(e.log_bayes_factor_for + e.log_bayes_factor_against + e.silent_log_bayes_factor,
              posterior.log_bayes_factor(0, 1), 1e-9);
  ASSERT_EQ(e.strongest.size(), 1u);  // asked for 2, one unit is in favour
  EXPECT_EQ(e.strongest[0].unit, 0u);
  EXPECT_DOUBLE_EQ(e.strongest[0].log_bayes_factor, e.log_bayes_factor_for);
  EXPECT_DOUBLE_EQ(e.strongest[0].log_bayes_factor,
                   ledger.log_evidence(0, 0) - ledger.log_evidence(1, 0));
  // The other way round, the signs swap and the silent unit is now in favour of 'flat'.
  const UnitEvidence back = ledger.compare(1, 0);
  EXPECT_EQ(back.strongest.size(), 1u);
  EXPECT_EQ(back.strongest[0].unit, 1u);
  EXPECT_NEAR(back.silent_log_bayes_factor, 0.6, 1e-9);
  EXPECT_EQ(ledger.count(2), 0u);
  EXPECT_GT(ledger.count(0), 0u);
}

TEST(UnitLedger, RefusesWhatDoesNotMatchAndAddsNothingThen) {
  UnitLedger ledger(2, 3);
  PredictionBatch batch;
  batch.resize(2, 3);
  for (double& m : batch.mean) m = 1.0;
  const std::vector<std::uint32_t> counts{1, 0, 2}, two{1, 0};
  EXPECT_THROW((void)ledger.add(2, batch, 0, counts), std::invalid_argument);
  EXPECT_THROW((void)ledger.add(0, batch, 2, counts), std::invalid_argument);
  EXPECT_THROW((void)ledger.add(0, batch, 0, two), std::invalid_argument);
  EXPECT_THROW(ledger.add_counts(two), std::invalid_argument);
  EXPECT_THROW((void)ledger.compare(0, 2), std::invalid_argument);
  for (std::size_t u = 0; u < 3; ++u) {
    EXPECT_EQ(ledger.log_evidence(0, u), 0.0);
    EXPECT_EQ(ledger.count(u), 0u);
  }
  // A count the prediction calls impossible (mean 0) makes that unit -inf for good; a unit
  // that refutes both sides says nothing about which is better.
  PredictionBatch zero = batch;
  zero.mean[0] = 0.0;
  (void)ledger.add(0, zero, 0, counts);
  (void)ledger.add(1, zero, 0, counts);
  ledger.add_counts(counts);
  const UnitEvidence e = ledger.compare(0, 1);
  EXPECT_TRUE(std::isinf(ledger.log_evidence(0, 0)));
  EXPECT_EQ(e.units_for + e.units_against, 0u);
  EXPECT_EQ(e.log_bayes_factor_for, 0.0);
}

TEST(UnitLedger, AddingATrialDoesNotAllocate) {
  UnitLedger ledger(3, 384);
  PredictionBatch batch;
  batch.resize(4, 384);
  for (double& m : batch.mean) m = 0.5;
  const std::vector<std::uint32_t> counts(384, 1);
  test_support::allocations = 0;
  test_support::count_allocations_on_this_thread = true;
  double sink = 0.0;
  for (int t = 0; t < 50; ++t) {
    for (std::size_t k = 0; k < 3; ++k) sink += ledger.add(k, batch, 2, counts);
    ledger.add_counts(counts);
  }
  test_support::count_allocations_on_this_thread = false;
  EXPECT_EQ(test_support::allocations.load(), 0u);
  EXPECT_TRUE(std::isfinite(sink));
}

}  // namespace
}  // namespace twinloop::twin

// Posterior over hypotheses: against hand-computed Bayes updates, against data simulated from a
// known Poisson model (the true hypothesis wins, its log Bayes factor grows like trials x KL),
// and for the properties the session relies on (invariance, stability, no allocation).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "twinloop/twin/posterior.hpp"

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
  PredictionBatch batch;
  batch.resize(2, 3);
  for (std::size_t i = 0; i < 6; ++i) {
    batch.mean[i] = 1.0 + static_cast<double>(i);
    batch.dispersion[i] = i % 2 == 0 ? 0.0 : 0.3;
  }
  const std::vector<std::uint32_t> counts{4, 0, 7};
  double expected = 0.0;
  for (std::size_t u = 0; u < 3; ++u) expected += log_probability(batch.at(1, u), counts[u]);
  EXPECT_DOUBLE_EQ(log_likelihood(batch, 1, counts), expected);
  const std::vector<CountDistribution> row{batch.at(1, 0), batch.at(1, 1), batch.at(1, 2)};
  EXPECT_DOUBLE_EQ(log_likelihood(row, counts), expected);
  EXPECT_THROW((void)log_likelihood(batch, 2, counts), std::invalid_argument);
  const std::vector<std::uint32_t> two{1, 2};
  EXPECT_THROW((void)log_likelihood(batch, 0, two), std::invalid_argument);
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

}  // namespace
}  // namespace twinloop::twin

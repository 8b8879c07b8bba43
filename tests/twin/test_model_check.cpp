// Model criticism and the verdict: the distribution functions against direct sums and tabulated
// critical values; PIT uniformity, coverage, bits per spike and Spearman's rho on data simulated
// from known Poisson / negative binomial models (right models pass, wrong ones fail; the
// trial-coherence test catches models wrong only at some stimuli); and the
// verdict naming the true hypothesis, or "none" when every hypothesis is wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "twinloop/twin/model_check.hpp"
#include "twinloop/twin/posterior.hpp"

namespace twinloop::twin {
namespace {

std::uint32_t sample(const CountDistribution& d, std::mt19937_64& rng) {
  double rate = d.mean;
  if (!(rate > 0.0)) return 0;
  if (d.dispersion > 0.0) {  // NB2 = Poisson with a gamma(1/dispersion, dispersion*mean) rate
    rate = std::gamma_distribution<double>(1.0 / d.dispersion, d.dispersion * d.mean)(rng);
    if (!(rate > 0.0)) return 0;
  }
  return std::poisson_distribution<std::uint32_t>(rate)(rng);
}

/// A small population of direction-tuned units, like the protocols' direction_tuning family.
struct Population {
  std::size_t units = 12;
  double dispersion = 0.0;  ///< of the truth

  [[nodiscard]] std::vector<CountDistribution> truth(int direction_index) const {
    return predict(direction_index, 1.0, dispersion);
  }
  [[nodiscard]] std::vector<CountDistribution> predict(int direction_index, double gain,
                                                       double model_dispersion) const {
    const double direction = 2.0 * std::numbers::pi * direction_index / 8.0;
    std::vector<CountDistribution> out(units);
    for (std::size_t u = 0; u < units; ++u) {
      const double preferred = 2.0 * std::numbers::pi * static_cast<double>(u) / units;
      out[u] = {gain * (1.0 + 8.0 * std::exp(2.0 * (std::cos(direction - preferred) - 1.0))),
                model_dispersion};
    }
    return out;
  }
};

std::vector<std::uint32_t> draw(const std::vector<CountDistribution>& truth, std::mt19937_64& rng) {
  std::vector<std::uint32_t> counts;
  for (const auto& d : truth) counts.push_back(sample(d, rng));
  return counts;
}

TEST(ModelCheck, CumulativeProbabilityMatchesTheSumOfThePmf) {
  for (const CountDistribution d : {CountDistribution{3.5, 0.0}, CountDistribution{3.5, 0.7},
                                    CountDistribution{0.2, 0.0}, CountDistribution{40.0, 0.05}}) {
    double sum = 0.0;
    for (std::int64_t k = 0; k < 80; ++k) {
      sum += std::exp(log_probability(d, static_cast<std::uint32_t>(k)));
      EXPECT_NEAR(cumulative_probability(d, k), sum, 1e-12) << d.mean << " " << d.dispersion;
    }
  }
  EXPECT_EQ(cumulative_probability({3.0, 0.0}, -1), 0.0);
  EXPECT_EQ(cumulative_probability({0.0, 0.0}, 0), 1.0);
  // Mean 1000: e^-1000 underflows, the recurrence in log space does not. Median ~ mean.
  const double f = cumulative_probability({1000.0, 0.0}, 1000);
  EXPECT_GT(f, 0.5);
  EXPECT_LT(f, 0.52);
  EXPECT_EQ(count_quantile({1000.0, 0.0}, 0.5), 1000u);
  EXPECT_EQ(count_quantile({0.0, 0.0}, 0.95), 0u);
  // Smallest k with F(k) >= p.
  const CountDistribution d{5.0, 0.0};
  const auto q = count_quantile(d, 0.95);
  EXPECT_GE(cumulative_probability(d, q), 0.95);
  EXPECT_LT(cumulative_probability(d, static_cast<std::int64_t>(q) - 1), 0.95);
}

TEST(ModelCheck, RandomizedPitSpansTheJumpOfTheCdf) {
  const CountDistribution d{2.0, 0.0};
  EXPECT_DOUBLE_EQ(randomized_pit(d, 3, 0.0), cumulative_probability(d, 2));
  EXPECT_NEAR(randomized_pit(d, 3, 1.0), cumulative_probability(d, 3), 1e-15);
  EXPECT_DOUBLE_EQ(randomized_pit(d, 0, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(randomized_pit({0.0, 0.0}, 0, 0.5), 0.5);
  EXPECT_DOUBLE_EQ(randomized_pit({0.0, 0.0}, 4, 0.5), 1.0);
}

TEST(ModelCheck, TestDistributionsMatchTabulatedValues) {
  // Chi-square upper 5% points (any statistics table): df 1: 3.841, df 9: 16.919, df 9 1%: 21.666.
  EXPECT_NEAR(chi_square_survival(3.841459, 1.0), 0.05, 1e-6);
  EXPECT_NEAR(chi_square_survival(16.918978, 9.0), 0.05, 1e-6);
  EXPECT_NEAR(chi_square_survival(21.665994, 9.0), 0.01, 1e-6);
  EXPECT_NEAR(chi_square_survival(4.0, 2.0), std::exp(-2.0), 1e-13);  // df 2: e^(-x/2)
  EXPECT_NEAR(chi_square_survival(60.0, 2.0), std::exp(-30.0), 1e-20);
  EXPECT_DOUBLE_EQ(chi_square_survival(0.0, 9.0), 1.0);
  // Kolmogorov distribution: Q(1.3581) = 0.05, Q(1.6276) = 0.01, Q(0.8276) = 0.5 (n large, so
  // Stephens's correction is negligible); both branches of the series agree at the switch.
  constexpr std::size_t big = 100000000;
  const double rn = std::sqrt(static_cast<double>(big));
  EXPECT_NEAR(kolmogorov_survival(1.3581 / rn, big), 0.05, 2e-4);
  EXPECT_NEAR(kolmogorov_survival(1.6276 / rn, big), 0.01, 1e-4);
  EXPECT_NEAR(kolmogorov_survival(0.8276 / rn, big), 0.5, 2e-4);
  EXPECT_NEAR(kolmogorov_survival(1.17999 / rn, big), kolmogorov_survival(1.18001 / rn, big), 1e-4);
  EXPECT_DOUBLE_EQ(kolmogorov_survival(0.0, 10), 1.0);
  // Student's t: df 1 is Cauchy, P(T > 1) = 1/4; upper points from any table: df 5, 2.015 (5%);
  // df 10, 2.228 (2.5%); df 30, 2.457 (1%); a huge df is the normal, P(Z > 1.959964) = 0.025.
  EXPECT_NEAR(student_t_survival(1.0, 1.0), 0.25, 1e-12);
  EXPECT_NEAR(student_t_survival(-1.0, 1.0), 0.75, 1e-12);
  EXPECT_NEAR(student_t_survival(2.015048, 5.0), 0.05, 1e-6);
  EXPECT_NEAR(student_t_survival(2.228139, 10.0), 0.025, 1e-6);
  EXPECT_NEAR(student_t_survival(2.457262, 30.0), 0.01, 1e-6);
  EXPECT_NEAR(student_t_survival(1.959964, 1e7), 0.025, 1e-6);
  EXPECT_DOUBLE_EQ(student_t_survival(0.0, 7.0), 0.5);
  EXPECT_TRUE(std::isnan(student_t_survival(1.0, 0.0)));
}

TEST(ModelCheck, SpearmanOfMonotoneRelationsAndTies) {
  const std::vector<double> x{0.5, 1.0, 2.0, 4.0, 8.0, 16.0};
  std::vector<double> y;
  for (const double v : x) y.push_back(std::exp(v / 4.0));  // monotone, not linear
  EXPECT_DOUBLE_EQ(spearman_correlation(x, y), 1.0);
  std::vector<double> reversed(y.rbegin(), y.rend());
  EXPECT_DOUBLE_EQ(spearman_correlation(x, reversed), -1.0);
  // Ties take midranks: y ranks (1.5, 1.5, 3.5, 3.5) against (1, 2, 3, 4): 4 / sqrt(20).
  const std::vector<double> a{1, 2, 3, 4}, b{1, 1, 2, 2};
  EXPECT_NEAR(spearman_correlation(a, b), 4.0 / std::sqrt(20.0), 1e-15);
  const std::vector<double> constant{3, 3, 3, 3};
  EXPECT_TRUE(std::isnan(spearman_correlation(a, constant)));
  EXPECT_THROW((void)spearman_correlation(a, x), std::invalid_argument);
}

ModelCheckResult check(const Population& population, double gain, double model_dispersion,
                       int trials, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ModelCheck model_check(population.units);
  for (int t = 0; t < trials; ++t) {
    const int direction = static_cast<int>(rng() % 8);
    const auto counts = draw(population.truth(direction), rng);
    model_check.add_trial(population.predict(direction, gain, model_dispersion), counts);
  }
  return model_check.result();
}

TEST(ModelCheck, CorrectPoissonModelIsCalibratedWithNinetyPercentCoverage) {
  const Population population;
  const auto r = check(population, 1.0, 0.0, 400, 11);
  EXPECT_EQ(r.values, 400u * population.units);
  EXPECT_TRUE(r.enough_data);
  EXPECT_TRUE(r.fits) << "p = " << r.p_value;
  EXPECT_GE(r.p_value, 0.01);
  EXPECT_NEAR(r.coverage, 0.90, 0.015);
  // The integer interval covers at least 90%, and as often as the model says it should.
  EXPECT_GE(r.expected_interval_coverage, 0.90);
  EXPECT_NEAR(r.interval_coverage, r.expected_interval_coverage, 0.015);
  ASSERT_EQ(r.histogram.size(), 10u);
  for (const auto bin : r.histogram) EXPECT_NEAR(static_cast<double>(bin), 480.0, 80.0);
}

TEST(ModelCheck, CorrectNegativeBinomialModelIsCalibrated) {
  Population population;
  population.dispersion = 0.5;
  const auto r = check(population, 1.0, 0.5, 400, 12);
  EXPECT_TRUE(r.fits) << "p = " << r.p_value;
  EXPECT_NEAR(r.coverage, 0.90, 0.015);
}

TEST(ModelCheck, CalibratedModelPassesAtAboutTheNominalRate) {
  // Under a right model the p-value is ~uniform: with alpha 0.01 about 1 in 100 sessions fail.
  const Population population;
  int fails = 0;
  for (std::uint64_t seed = 100; seed < 140; ++seed) {
    if (!check(population, 1.0, 0.0, 60, seed).fits) ++fails;
  }
  EXPECT_LE(fails, 3);
}

TEST(ModelCheck, MeansScaledByTwoFailTheUniformityTest) {
  const Population population;
  const auto r = check(population, 2.0, 0.0, 200, 13);
  EXPECT_TRUE(r.enough_data);
  EXPECT_FALSE(r.fits);
  EXPECT_LT(r.p_value, 1e-6);
  // Over-prediction piles the PIT up near 0.
  EXPECT_GT(r.histogram.front(), 3 * r.histogram.back());
}

TEST(ModelCheck, PoissonOnOverDispersedDataFailsWithAUShapedPit) {
  Population population;
  population.dispersion = 0.6;
  const auto r = check(population, 1.0, 0.0, 200, 14);  // right means, wrong variance
  EXPECT_FALSE(r.fits);
  EXPECT_LT(r.p_value, 1e-6);
  const double middle = static_cast<double>(r.histogram[4] + r.histogram[5]) / 2.0;
  EXPECT_GT(static_cast<double>(r.histogram.front()), 1.5 * middle);
  EXPECT_GT(static_cast<double>(r.histogram.back()), 1.5 * middle);
  EXPECT_LT(r.coverage, 0.85);  // the predictive interval is too narrow
}

// A column: 4 units with nearly the same preferred direction, one lobe each; a model that
// claims an equal second lobe at the opposite direction is wrong only on the trials that show
// the opposite direction, and wrong the same way for every unit. Random stimuli from 16
// directions, 25 trials (100 values, the least a session judges): the pooled PIT tests rarely
// notice, the trial-coherence test often does; under the right model it rejects no more often
// than alpha says.
struct Column {
  [[nodiscard]] static std::vector<CountDistribution> at(int direction_index, double second_lobe) {
    const double direction = 2.0 * std::numbers::pi * direction_index / 16.0;
    std::vector<CountDistribution> out(4);
    for (std::size_t u = 0; u < out.size(); ++u) {
      const double preferred = 0.1 * static_cast<double>(u);
      const double lobe = std::exp(2.0 * (std::cos(direction - preferred) - 1.0)) +
                          second_lobe * std::exp(2.0 * (-std::cos(direction - preferred) - 1.0));
      out[u] = {2.0 + 8.0 * lobe, 0.0};
    }
    return out;
  }
};

int rejections(double model_second_lobe, bool coherence, int sessions) {
  int rejected = 0;
  for (int s = 0; s < sessions; ++s) {
    std::mt19937_64 rng(5000 + static_cast<std::uint64_t>(s));
    ModelCheckOptions options;
    options.trial_coherence = coherence;
    options.bootstrap_resamples = 0;
    options.seed = 77 + static_cast<std::uint64_t>(s);
    ModelCheck model_check(4, options);
    for (int t = 0; t < 25; ++t) {
      const int direction = static_cast<int>(rng() % 16);
      const auto counts = draw(Column::at(direction, 0.0), rng);
      model_check.add_trial(Column::at(direction, model_second_lobe), counts);
    }
    rejected += model_check.result().fits ? 0 : 1;
  }
  return rejected;
}

TEST(ModelCheck, TrialCoherenceCatchesAModelWrongOnlyAtSomeStimuli) {
  constexpr int kSessions = 200;
  // The model's second lobe is a quarter of the first: wrong by 2 counts at the opposite
  // direction, on about one trial in five.
  const int pooled = rejections(0.25, false, kSessions);
  const int with_coherence = rejections(0.25, true, kSessions);
  std::cout << "wrong second lobe rejected in " << pooled << " of " << kSessions
            << " sessions by the pooled PIT tests, " << with_coherence << " with coherence\n";
  EXPECT_GT(with_coherence, pooled);
  // The right model: no more rejections than alpha (1%) allows, with sampling slack.
  EXPECT_LE(rejections(0.0, true, kSessions), 6);
}

// The encompassing test. A column whose units have a second lobe 3/4 of the first: one hypothesis
// says "no second lobe" (direction-like), its rival "an equal one" (orientation-like), both
// wrong. Each session has 25 validation trials at random directions and 25 designed trials at
// the preferred direction or its opposite (where the two disagree). The counts at the opposite
// direction lie between the two, so each one's errors lean toward the other.
struct EncompassingSession {
  ModelCheckResult equal_lobes;  ///< checked against the one-lobe rival
  ModelCheckResult pit_only;     ///< the same hypothesis and validation trials, no rival
};

EncompassingSession encompassing_session(double true_second_lobe, double model_second_lobe,
                                         double rival_second_lobe, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ModelCheckOptions options;
  options.bootstrap_resamples = 0;
  options.seed = seed;
  ModelCheck with_rival(4, options), without(4, options);
  std::vector<double> rival(4);
  const auto trial = [&](int direction, bool validation) {
    const auto counts = draw(Column::at(direction, true_second_lobe), rng);
    const auto model = Column::at(direction, model_second_lobe);
    const auto other = Column::at(direction, rival_second_lobe);
    for (std::size_t u = 0; u < 4; ++u) rival[u] = other[u].mean;
    if (validation) {
      with_rival.add_trial(model, counts, rival);
      without.add_trial(model, counts);
    } else {
      with_rival.add_designed_trial(model, counts, rival);
    }
  };
  for (int t = 0; t < 50; ++t) {
    if (t % 2 == 0) {
      trial(static_cast<int>(rng() % 16), true);
    } else {
      trial(t % 4 == 1 ? 0 : 8, false);
    }
  }
  return {with_rival.result(), without.result()};
}

TEST(ModelCheck, EncompassingCatchesASecondLobeTheRivalDescribesBetter) {
  int by_pit = 0, by_encompassing = 0, fails = 0;
  for (std::uint64_t s = 0; s < 100; ++s) {
    const EncompassingSession r = encompassing_session(0.75, 1.0, 0.0, 900 + s);
    ASSERT_EQ(r.equal_lobes.encompassing_z.size(), 1u);
    EXPECT_EQ(r.equal_lobes.encompassing_trials, 50u);
    EXPECT_EQ(r.equal_lobes.trials, 25u);
    by_pit += r.pit_only.fits ? 0 : 1;
    by_encompassing += r.equal_lobes.encompassing_p_value < 0.01 ? 1 : 0;
    fails += r.equal_lobes.fits ? 0 : 1;
  }
  std::cout << "equal lobes on a 3/4 second lobe: rejected in " << by_pit
            << " of 100 sessions by the PIT tests alone, " << fails
            << " with the encompassing test (which alone has p < 0.01 in " << by_encompassing
            << ")\n";
  EXPECT_GE(fails, 80);
  EXPECT_GT(fails, 2 * by_pit);
}

// The power a check reports is what it delivers. Two units, each predicted Poisson(3) by the
// hypothesis and 3.6 by its rival; the counts come from halfway, Poisson(3.3). Over many sessions
// the check fails through its encompassing test about as often as the mean reported power says;
// within one, the power grows with every trial.
TEST(ModelCheck, EncompassingPowerPredictsHowOftenAHalfwayMisfitIsCaught) {
  constexpr int kSessions = 400;
  constexpr int kTrials = 100;
  const std::vector<CountDistribution> model{{3.0, 0.0}, {3.0, 0.0}};
  const std::vector<double> rival{3.6, 3.6};
  int caught = 0;
  double predicted = 0.0;
  std::vector<double> last_session_power;
  for (std::uint64_t s = 0; s < kSessions; ++s) {
    std::mt19937_64 rng(12000 + s);
    std::poisson_distribution<std::uint32_t> halfway(3.3);
    ModelCheckOptions options;
    options.seed = s;
    options.bootstrap_resamples = 0;
    ModelCheck check(2, options);
    for (int t = 0; t < kTrials; ++t) {
      const std::vector<std::uint32_t> counts{halfway(rng), halfway(rng)};
      check.add_designed_trial(model, counts, rival);
      if (s == 0 && t >= 1) last_session_power.push_back(check.result().encompassing_power.at(0));
    }
    const ModelCheckResult r = check.result();
    ASSERT_EQ(r.encompassing_power.size(), 1u);
    EXPECT_DOUBLE_EQ(check.weakest_encompassing_power(), r.encompassing_power[0]);
    // Chi-square, KS and encompassing: the check fails through the last at p < alpha / 3.
    caught += 3.0 * r.encompassing_p_value < 0.01 ? 1 : 0;
    predicted += r.encompassing_power[0];
  }
  predicted /= kSessions;
  const double observed = static_cast<double>(caught) / kSessions;
  std::cout << "halfway misfit: caught in " << observed << " of sessions, mean reported power "
            << predicted << "\n";
  // sum w^2 = 100 trials x 2 units x 0.36 / 3; noncentrality 0.5 sqrt(24) = 2.45 against
  // Student's t critical value for p = 0.01 / 3 at 99 degrees of freedom, 2.77: Phi(-0.32).
  EXPECT_NEAR(predicted, 0.374, 0.003);
  // The normal approximation is a little optimistic at small counts (a randomised PIT moves
  // less than the standardised count, 0.96 of it at a mean of 3): 0.30 caught here.
  EXPECT_NEAR(observed, predicted, 0.1);
  EXPECT_LT(observed, predicted + 0.03);
  EXPECT_TRUE(std::is_sorted(last_session_power.begin(), last_session_power.end()));
  EXPECT_LT(last_session_power.front(), 0.01);
  EXPECT_GT(last_session_power.back(), last_session_power.front());

  // Without rivals there is nothing to report.
  ModelCheck lone(2);
  lone.add_trial(model, std::vector<std::uint32_t>{3, 4});
  EXPECT_TRUE(lone.result().encompassing_power.empty());
  EXPECT_TRUE(std::isnan(lone.weakest_encompassing_power()));
}

// The lean is the effect size beside the statistic: how far toward the rival's means the counts
// sat. Counts from the model's own means lean ~0, from halfway ~0.5, from the rival's ~1 (a
// randomised PIT at a Poisson mean of 3 moves about 0.96 of the standardised count, so a little
// less).
TEST(ModelCheck, EncompassingLeanSaysHowFarTowardTheRivalTheCountsSat) {
  const std::vector<CountDistribution> model(4, CountDistribution{3.0, 0.0});
  const std::vector<double> rival(4, 4.0);
  for (const double toward : {0.0, 0.5, 1.0}) {
    std::mt19937_64 rng(777);
    std::poisson_distribution<std::uint32_t> counts_at(3.0 + toward);
    ModelCheckOptions options;
    options.bootstrap_resamples = 0;
    ModelCheck check(4, options);
    for (int t = 0; t < 400; ++t) {
      const std::vector<std::uint32_t> counts{counts_at(rng), counts_at(rng), counts_at(rng),
                                              counts_at(rng)};
      check.add_designed_trial(model, counts, rival);
    }
    const ModelCheckResult r = check.result();
    ASSERT_EQ(r.encompassing_lean.size(), 1u);
    EXPECT_NEAR(r.encompassing_lean[0], 0.96 * toward, 0.1) << "counts from " << toward;
    EXPECT_EQ(r.tests, 3.0);  // chi-square, KS and encompassing, for the Bonferroni
  }
  ModelCheck lone(4);
  lone.add_trial(model, std::vector<std::uint32_t>{3, 4, 2, 3});
  EXPECT_TRUE(lone.result().encompassing_lean.empty());
  EXPECT_EQ(lone.result().tests, 2.0);
}

// Sessions mix trials that say much about a rival with trials that say nothing (validation
// draws, candidates where the two agree). When the counts do lean toward the rival, the scores'
// spread then grows with the shift itself, and the power must say so: 16 units predicted
// Poisson(3), the rival 3.2 on two trials in three and 4.2 on the third (16 times the
// information), the counts from halfway.
TEST(ModelCheck, EncompassingPowerHoldsWhenTrialsCarryUnequalInformation) {
  constexpr int kSessions = 1000;
  const std::vector<CountDistribution> model(16, CountDistribution{3.0, 0.0});
  int caught = 0;
  double predicted = 0.0;
  for (std::uint64_t s = 0; s < kSessions; ++s) {
    std::mt19937_64 rng(31000 + s);
    ModelCheckOptions options;
    options.seed = s;
    options.bootstrap_resamples = 0;
    ModelCheck check(16, options);
    for (int t = 0; t < 30; ++t) {
      const double rival_mean = t % 3 == 2 ? 4.2 : 3.2;
      const std::vector<double> rival(16, rival_mean);
      std::poisson_distribution<std::uint32_t> halfway(0.5 * (3.0 + rival_mean));
      std::vector<std::uint32_t> counts(16);
      for (auto& c : counts) c = halfway(rng);
      check.add_designed_trial(model, counts, rival);
    }
    const ModelCheckResult r = check.result();
    caught += 3.0 * r.encompassing_p_value < 0.01 ? 1 : 0;
    predicted += r.encompassing_power.at(0);
  }
  predicted /= kSessions;
  const double observed = static_cast<double>(caught) / kSessions;
  std::cout << "unequal trials: caught in " << observed << " of sessions, mean reported power "
            << predicted << "\n";
  // Counted as if every trial were alike, sum(W_t) alone, the power would read 1.00.
  EXPECT_LT(predicted, 0.9);
  EXPECT_NEAR(observed, predicted, 0.12);
}

TEST(ModelCheck, EncompassingHoldsItsSizeUnderTheRightModelWhateverChoseTheStimuli) {
  // The right model (one lobe) against the equal-lobe rival; the designed trials still go where
  // the two disagree. z is N(0, 1): over 400 sessions about 1% fall below p = 0.01.
  int rejected = 0;
  double sum = 0.0, sum_of_squares = 0.0;
  constexpr int kSessions = 400;
  for (std::uint64_t s = 0; s < kSessions; ++s) {
    const ModelCheckResult r = encompassing_session(0.0, 0.0, 1.0, 4000 + s).equal_lobes;
    rejected += r.encompassing_p_value < 0.01 ? 1 : 0;
    sum += r.encompassing_z.at(0);
    sum_of_squares += r.encompassing_z.at(0) * r.encompassing_z.at(0);
  }
  const double mean = sum / kSessions;
  EXPECT_LE(rejected, 10);
  EXPECT_NEAR(mean, 0.0, 0.2);
  EXPECT_NEAR(sum_of_squares / kSessions - mean * mean, 1.0, 0.2);
}

TEST(ModelCheck, EncompassingHoldsItsSizeWhenTheUnitsOfATrialShareTheirNoise) {
  // Every unit of a trial x the same gamma gain (a shared state, or neighbouring channels that
  // see the same spikes); the model's negative binomial matches each unit's marginal, and the
  // rival predicts 30% more everywhere, so every unit's weight has the same sign and the shared
  // noise adds up within a trial. Scored per trial, the test still rejects about 1% of sessions.
  const Population population;  // 12 units
  int rejected = 0;
  for (std::uint64_t s = 0; s < 200; ++s) {
    std::mt19937_64 rng(7000 + s);
    ModelCheckOptions options;
    options.bootstrap_resamples = 0;
    options.seed = s;
    ModelCheck model_check(population.units, options);
    std::vector<double> rival(population.units);
    for (int t = 0; t < 40; ++t) {
      const int direction = static_cast<int>(rng() % 8);
      const double gain = std::gamma_distribution<double>(10.0, 0.1)(rng);
      const auto counts = draw(population.predict(direction, gain, 0.0), rng);
      const auto model = population.predict(direction, 1.0, 0.1);
      for (std::size_t u = 0; u < population.units; ++u) rival[u] = 1.3 * model[u].mean;
      model_check.add_designed_trial(model, counts, rival);
    }
    rejected += model_check.result().encompassing_p_value < 0.01 ? 1 : 0;
  }
  EXPECT_LE(rejected, 6);
}

TEST(ModelCheck, EncompassingIsOneSidedAndLeavesThePitValuesAlone) {
  // A right-shaped model shrunk toward its rival (a flat mean, as a prior pulls a young fit):
  // its counts lean away from the rival, z < 0, and the test does not reject.
  const Population population;
  std::mt19937_64 rng(21);
  ModelCheck shrunk(population.units), same(population.units);
  std::vector<double> flat(population.units, 3.0);
  for (int t = 0; t < 200; ++t) {
    const int direction = static_cast<int>(rng() % 8);
    const auto counts = draw(population.truth(direction), rng);
    auto model = population.truth(direction);
    for (auto& d : model) d.mean = 0.7 * d.mean + 0.3 * 3.0;
    shrunk.add_trial(model, counts, flat);
    same.add_trial(model, counts);
    shrunk.add_designed_trial(model, counts, flat);  // a designed trial: not a PIT value
  }
  const ModelCheckResult r = shrunk.result();
  EXPECT_LT(r.encompassing_z.at(0), -3.0);
  EXPECT_GT(r.encompassing_p_value, 0.99);
  EXPECT_EQ(r.encompassing_trials, 400u);
  ASSERT_EQ(shrunk.pit_values().size(), same.pit_values().size());
  EXPECT_TRUE(std::equal(shrunk.pit_values().begin(), shrunk.pit_values().end(),
                         same.pit_values().begin()));
  // Without rivals there is no encompassing test and the p-value is the PIT tests' alone.
  EXPECT_TRUE(same.result().encompassing_z.empty());
  EXPECT_EQ(same.result().encompassing_p_value, 1.0);
  EXPECT_EQ(same.result().encompassing_trials, 0u);
  same.add_designed_trial(population.truth(0), draw(population.truth(0), rng), {});
  EXPECT_EQ(same.result().encompassing_trials, 0u);
}

TEST(ModelCheck, EncompassingRefusesRivalMeansThatDoNotFit) {
  ModelCheck model_check(2);
  const std::vector<CountDistribution> row{{1.0, 0.0}, {2.0, 0.0}};
  const std::vector<std::uint32_t> counts{1, 2};
  const std::vector<double> three{1.0, 2.0, 3.0}, one_rival{1.0, 2.0}, two_rivals{1, 2, 3, 4};
  // A point to lean toward may lie below zero (a mean plus a direction); it must be finite.
  const std::vector<double> not_finite{1.0, std::numeric_limits<double>::quiet_NaN()};
  EXPECT_THROW(model_check.add_trial(row, counts, three), std::invalid_argument);
  EXPECT_THROW(model_check.add_designed_trial(row, counts, not_finite), std::invalid_argument);
  EXPECT_NO_THROW(model_check.add_designed_trial(row, counts, std::vector<double>{1.0, -2.0}));
  model_check.add_trial(row, counts, one_rival);
  EXPECT_THROW(model_check.add_trial(row, counts, two_rivals), std::invalid_argument);
  EXPECT_THROW(model_check.add_designed_trial(row, counts, two_rivals), std::invalid_argument);
  EXPECT_EQ(model_check.result().encompassing_z.size(), 1u);
}

// A rival whose every direction is zero (a hypothesis that contains it near its fits: the
// session passes mean + 0) has nothing to lean toward: no statistic, not counted by Bonferroni,
// and the check against the other rival is exactly the check with that rival alone.
TEST(ModelCheck, ARivalWithNothingToLeanTowardIsNotTested) {
  std::mt19937_64 rng(17);
  ModelCheck both(3), alone(3);
  const std::vector<CountDistribution> row{{2.0, 0.0}, {4.0, 0.0}, {6.0, 0.0}};
  std::vector<std::uint32_t> counts(3);
  for (int t = 0; t < 60; ++t) {
    // Counts drawn toward the second rival's means, so its test has something to find.
    for (std::size_t u = 0; u < 3; ++u) {
      counts[u] = std::poisson_distribution<std::uint32_t>(1.4 * row[u].mean)(rng);
    }
    const std::vector<double> other{3.0, 6.0, 9.0};
    std::vector<double> rivals{2.0, 4.0, 6.0};  // the contained rival: its own means
    rivals.insert(rivals.end(), other.begin(), other.end());
    both.add_trial(row, counts, rivals);
    alone.add_trial(row, counts, other);
  }
  const ModelCheckResult with_contained = both.result();
  const ModelCheckResult single = alone.result();
  ASSERT_EQ(with_contained.encompassing_z.size(), 2u);
  EXPECT_TRUE(std::isnan(with_contained.encompassing_z[0]));
  EXPECT_TRUE(std::isnan(with_contained.encompassing_lean[0]));
  EXPECT_TRUE(std::isnan(with_contained.encompassing_power[0]));
  EXPECT_GT(with_contained.encompassing_z[1], 3.0);
  EXPECT_DOUBLE_EQ(with_contained.encompassing_z[1], single.encompassing_z[0]);
  EXPECT_DOUBLE_EQ(with_contained.encompassing_p_value, single.encompassing_p_value);
  EXPECT_DOUBLE_EQ(with_contained.p_value, single.p_value);
  EXPECT_DOUBLE_EQ(both.weakest_encompassing_power(), alone.weakest_encompassing_power());
}

// Where a criticism trial looks: the squared encompassing weights summed over units, one row per
// (leader, rival turn), with the variance floor of a near-silent prediction. Values by hand.
TEST(ModelCheck, CriticismScoresEveryLeaderAgainstEachRivalInTurn) {
  const auto batch = [](std::vector<double> mean, double dispersion) {
    PredictionBatch b;
    b.resize(2, 2);
    b.mean = std::move(mean);
    b.dispersion.assign(4, dispersion);
    return b;
  };
  // Candidate-major: {candidate 0: unit 0, unit 1; candidate 1: unit 0, unit 1}.
  const std::vector<PredictionBatch> predictions{
      batch({1, 1, 4, 1}, 0.0), batch({1, 1, 1, 0.01}, 0.0), batch({2, 2, 2, 2}, 0.5)};
  std::vector<double> scores(3 * 2 * 2, -7.0);
  score_criticism_candidates(predictions, scores);
  const auto at = [&](std::size_t leader, std::size_t turn, std::size_t candidate) {
    return scores[(leader * 2 + turn) * 2 + candidate];
  };
  // Leader 0 against hypothesis 1: (1 - 4)^2 / 4 + (0.01 - 1)^2 / 1.
  EXPECT_NEAR(at(0, 0, 1), 2.25 + 0.9801, 1e-12);
  EXPECT_NEAR(at(0, 0, 0), 0.0, 1e-12);
  // Leader 1 against hypothesis 0: unit 1's variance 0.01 is floored at 1/4.
  EXPECT_NEAR(at(1, 0, 1), 9.0 + 0.99 * 0.99 / 0.25, 1e-12);
  // Leader 1's second turn is hypothesis 2.
  EXPECT_NEAR(at(1, 1, 0), 2.0, 1e-12);
  // Leader 2 (NB, variance 2 + 0.5 * 4 = 4) against hypothesis 0.
  EXPECT_NEAR(at(2, 0, 1), 1.0 + 0.25, 1e-12);
  EXPECT_NEAR(at(2, 1, 0), 0.25 + 0.25, 1e-12);

  // A buffer of another size (a session without criticism trials keeps it empty) is left alone.
  std::vector<double> wrong(5, -7.0);
  score_criticism_candidates(predictions, wrong);
  EXPECT_EQ(wrong, std::vector<double>(5, -7.0));
  score_criticism_candidates(std::span<const PredictionBatch>(predictions.data(), 1), wrong);
  EXPECT_EQ(wrong, std::vector<double>(5, -7.0));
  // So is a right-sized buffer when one batch has another shape.
  std::vector<PredictionBatch> mismatched = predictions;
  mismatched[2].resize(2, 3);
  std::vector<double> right_size(12, -7.0);
  score_criticism_candidates(mismatched, right_size);
  EXPECT_EQ(right_size, std::vector<double>(12, -7.0));
}

TEST(ModelCheck, TrialCoherenceIsChiSquareOverTrialsForARightModel) {
  const Population population;  // 12 units, independent Poisson given the stimulus
  std::mt19937_64 draws(31);
  ModelCheckOptions on;
  on.trial_coherence = true;
  ModelCheck right(population.units, on);
  for (int t = 0; t < 400; ++t) {
    const int direction = static_cast<int>(draws() % 8);
    right.add_trial(population.predict(direction, 1.0, 0.0),
                    draw(population.truth(direction), draws));
  }
  const auto r = right.result();
  // Mean of chi-square(400) is 400, sd sqrt(800) = 28.
  EXPECT_NEAR(r.coherence_chi_square, 400.0, 4.0 * 28.3);
  EXPECT_GT(r.coherence_p_value, 0.001);
  // A shared gain (every unit of a trial x the same gamma draw) is a correlation the model
  // ignores: the coherence test sees it even when each unit's marginal is nearly right.
  std::mt19937_64 rng(32);
  ModelCheck shared(population.units, on);
  for (int t = 0; t < 400; ++t) {
    const int direction = static_cast<int>(rng() % 8);
    const double gain = std::gamma_distribution<double>(10.0, 0.1)(rng);
    auto truth = population.predict(direction, gain, 0.0);
    std::vector<CountDistribution> model = population.predict(direction, 1.0, 0.1);
    shared.add_trial(model, draw(truth, rng));
  }
  EXPECT_LT(shared.result().coherence_p_value, 1e-6);
  // Off by default (see model_check.hpp): the p-value then combines the two PIT tests only.
  ModelCheck off(population.units);
  EXPECT_FALSE(ModelCheckOptions{}.trial_coherence);
  off.add_trial(population.predict(0, 1.0, 0.0), draw(population.truth(0), rng));
  EXPECT_EQ(off.result().coherence_p_value, 1.0);
}

TEST(ModelCheck, TooFewValuesIsNotEnoughDataToJudge) {
  const Population population;  // 12 units x 5 trials = 60 < 100
  const auto r = check(population, 1.0, 0.0, 5, 15);
  EXPECT_FALSE(r.enough_data);
  EXPECT_FALSE(r.fits);
}

TEST(ModelCheck, BitsPerSpikeOfTheTrueModelIsPositiveAndOfTheNullIsZero) {
  const Population population;
  std::mt19937_64 rng(16);
  std::vector<int> directions;
  std::vector<std::vector<std::uint32_t>> counts;
  for (int t = 0; t < 300; ++t) {
    directions.push_back(static_cast<int>(rng() % 8));
    counts.push_back(draw(population.truth(directions.back()), rng));
  }
  // The null model: each unit's mean count over these trials, Poisson.
  std::vector<CountDistribution> null(population.units);
  for (std::size_t u = 0; u < population.units; ++u) {
    double s = 0.0;
    for (const auto& c : counts) s += c[u];
    null[u] = {s / static_cast<double>(counts.size()), 0.0};
  }
  ModelCheck truth(population.units), wrong(population.units), baseline(population.units);
  for (std::size_t t = 0; t < counts.size(); ++t) {
    truth.add_trial(population.truth(directions[t]), counts[t]);
    wrong.add_trial(population.predict(directions[t], 2.0, 0.0), counts[t]);
    baseline.add_trial(null, counts[t]);
  }
  const auto rt = truth.result(), rw = wrong.result(), rn = baseline.result();
  EXPECT_GT(rt.bits_per_spike_vs_constant_rate, 0.2);
  EXPECT_NEAR(rn.bits_per_spike_vs_constant_rate, 0.0, 1e-9);
  EXPECT_LT(rw.bits_per_spike_vs_constant_rate, rt.bits_per_spike_vs_constant_rate);
  EXPECT_EQ(rt.spikes, rn.spikes);
  EXPECT_NEAR(rt.constant_rate_log_likelihood, rn.log_likelihood, 1e-6);

  // Against another checked model on the same trials: the constant-rate model here is that
  // reference itself, so both figures agree; the reference scores 0 against itself.
  EXPECT_NEAR(bits_per_spike_against(rt, rn), rt.bits_per_spike_vs_constant_rate, 1e-9);
  EXPECT_NEAR(bits_per_spike_against(rw, rn), rw.bits_per_spike_vs_constant_rate, 1e-9);
  EXPECT_EQ(bits_per_spike_against(rn, rn), 0.0);
  EXPECT_NEAR(bits_per_spike_against(rt, rw), -bits_per_spike_against(rw, rt), 1e-12);
  EXPECT_GT(bits_per_spike_against(rt, rw), 0.0);
}

TEST(ModelCheck, BitsPerSpikeAgainstAModelCheckedOnOtherTrialsIsUndefined) {
  const Population population;
  std::mt19937_64 rng(18);
  ModelCheck longer(population.units), shorter(population.units), silent(population.units);
  for (int t = 0; t < 40; ++t) {
    const std::vector<std::uint32_t> counts = draw(population.truth(t % 8), rng);
    longer.add_trial(population.truth(t % 8), counts);
    if (t < 39) shorter.add_trial(population.truth(t % 8), counts);
  }
  const std::vector<std::uint32_t> none(population.units, 0);
  silent.add_trial(population.truth(0), none);
  EXPECT_TRUE(std::isfinite(bits_per_spike_against(longer.result(), longer.result())));
  EXPECT_TRUE(std::isnan(bits_per_spike_against(longer.result(), shorter.result())));
  EXPECT_TRUE(std::isnan(bits_per_spike_against(silent.result(), silent.result())));
}

TEST(ModelCheck, SpearmanOfADeterministicMonotoneRelationIsOneWithADegenerateInterval) {
  ModelCheck model_check(3);
  std::mt19937_64 rng(17);
  for (int t = 0; t < 50; ++t) {
    std::vector<CountDistribution> predictions;
    std::vector<std::uint32_t> counts;
    for (int u = 0; u < 3; ++u) {
      const auto k = static_cast<std::uint32_t>(rng() % 1000);
      const double mean = 0.5 + static_cast<double>(k) / 37.0;
      predictions.push_back({mean, 0.0});
      counts.push_back(k * k);  // strictly increasing in the mean
    }
    model_check.add_trial(predictions, counts);
  }
  const auto r = model_check.result();
  EXPECT_NEAR(r.spearman, 1.0, 1e-12);
  EXPECT_NEAR(r.spearman_ci_low, 1.0, 1e-12);
  EXPECT_NEAR(r.spearman_ci_high, 1.0, 1e-12);
}

TEST(ModelCheck, SpearmanBootstrapIntervalCoversTheTrueValue) {
  // Predicted mean ~ U(1, 20), count ~ Poisson(mean): the population rho, from one huge sample.
  std::mt19937_64 rng(18);
  std::uniform_real_distribution<double> mean_of(1.0, 20.0);
  std::vector<double> big_x, big_y;
  for (int i = 0; i < 200000; ++i) {
    big_x.push_back(mean_of(rng));
    big_y.push_back(std::poisson_distribution<int>(big_x.back())(rng));
  }
  const double truth = spearman_correlation(big_x, big_y);
  EXPECT_GT(truth, 0.7);
  EXPECT_LT(truth, 0.95);

  int covered = 0;
  constexpr int sessions = 40;
  for (int s = 0; s < sessions; ++s) {
    ModelCheckOptions options;
    options.seed = 1000 + static_cast<std::uint64_t>(s);
    ModelCheck model_check(2, options);
    for (int t = 0; t < 60; ++t) {
      const std::vector<CountDistribution> p{{mean_of(rng), 0.0}, {mean_of(rng), 0.0}};
      model_check.add_trial(p, draw(p, rng));
    }
    const auto r = model_check.result();
    EXPECT_LE(r.spearman_ci_low, r.spearman);
    EXPECT_GE(r.spearman_ci_high, r.spearman);
    if (r.spearman_ci_low <= truth && truth <= r.spearman_ci_high) ++covered;
    if (s == 0) {
      EXPECT_NEAR(r.spearman, truth, 0.1);
    }
  }
  // A 95% interval: expect ~38 of 40; 34 allows for sampling noise (P(<= 33) < 0.5%).
  EXPECT_GE(covered, 34);
}

TEST(ModelCheck, DeterministicForASeedAndTheBatchRowIsTheSameAsTheSpan) {
  const Population population;
  EXPECT_EQ(check(population, 1.0, 0.0, 30, 19).p_value,
            check(population, 1.0, 0.0, 30, 19).p_value);
  EXPECT_EQ(check(population, 1.0, 0.0, 30, 19).spearman_ci_low,
            check(population, 1.0, 0.0, 30, 19).spearman_ci_low);

  PredictionBatch batch;
  batch.resize(2, population.units);
  const auto row = population.predict(3, 1.0, 0.2);
  for (std::size_t u = 0; u < population.units; ++u) {
    batch.mean[population.units + u] = row[u].mean;
    batch.dispersion[population.units + u] = row[u].dispersion;
  }
  std::mt19937_64 rng(20);
  const auto counts = draw(row, rng);
  ModelCheck from_batch(population.units), from_span(population.units);
  from_batch.add_trial(batch, 1, counts);
  from_span.add_trial(row, counts);
  ASSERT_EQ(from_batch.pit_values().size(), population.units);
  for (std::size_t u = 0; u < population.units; ++u) {
    EXPECT_EQ(from_batch.pit_values()[u], from_span.pit_values()[u]);
  }
  EXPECT_THROW(from_batch.add_trial(batch, 2, counts), std::invalid_argument);
}

TEST(ModelCheck, RefusesBadInput) {
  EXPECT_THROW(ModelCheck(0), std::invalid_argument);
  ModelCheckOptions options;
  options.bins = 1;
  EXPECT_THROW(ModelCheck(2, options), std::invalid_argument);
  ModelCheck model_check(2);
  const std::vector<CountDistribution> negative{{-1.0, 0.0}, {1.0, 0.0}};
  const std::vector<CountDistribution> one{{1.0, 0.0}};
  const std::vector<std::uint32_t> counts{1, 2};
  EXPECT_THROW(model_check.add_trial(negative, counts), std::invalid_argument);
  EXPECT_THROW(model_check.add_trial(one, counts), std::invalid_argument);
  EXPECT_EQ(model_check.trials(), 0u);
}

/// A whole session: every hypothesis predicts every trial before it happens; the posterior and
/// each hypothesis's model check see the same trials.
struct Session {
  Posterior posterior;
  std::vector<ModelCheck> checks;
  std::vector<ModelCheckResult> results;
};

struct Candidate {
  std::string name;
  double gain;
  double dispersion;
};

Session run_session(const Population& population, const std::vector<Candidate>& candidates,
                    int trials, std::uint64_t seed) {
  std::vector<std::string> names;
  for (const auto& c : candidates) names.push_back(c.name);
  Session session{Posterior(names), {}, {}};
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    session.checks.emplace_back(population.units);
  }
  std::mt19937_64 rng(seed);
  std::vector<double> ll(candidates.size());
  for (int t = 0; t < trials; ++t) {
    const int direction = static_cast<int>(rng() % 8);
    std::vector<std::vector<CountDistribution>> registered;
    for (const auto& c : candidates) {
      registered.push_back(population.predict(direction, c.gain, c.dispersion));
    }
    const auto counts = draw(population.truth(direction), rng);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      ll[i] = log_likelihood(registered[i], counts);
      session.checks[i].add_trial(registered[i], counts);
    }
    session.posterior.add_trial(ll);
  }
  for (const auto& c : session.checks) session.results.push_back(c.result());
  return session;
}

TEST(Verdict, NamesTheTrueHypothesisWhenItIsInTheSet) {
  Population population;
  population.dispersion = 0.4;
  const auto s = run_session(
      population, {{"weak", 0.6, 0.4}, {"true", 1.0, 0.4}, {"poisson", 1.0, 0.0}}, 200, 21);
  const Verdict v = decide(s.posterior, s.results, 0.99);
  EXPECT_EQ(v.kind, VerdictKind::winner) << v.reason;
  EXPECT_EQ(v.name, "true");
  EXPECT_GT(v.leader_probability, 0.99);
  EXPECT_TRUE(s.results[1].fits);
  EXPECT_FALSE(s.results[2].fits);
}

TEST(Verdict, SaysNoneWhenEveryHypothesisIsWrongThoughOneLeadsDecisively) {
  Population population;
  population.dispersion = 0.4;
  const auto s = run_session(
      population, {{"weak", 0.6, 0.4}, {"strong", 1.6, 0.4}, {"poisson", 1.0, 0.0}}, 200, 22);
  // The posterior alone would crown a false winner...
  EXPECT_GT(s.posterior.probability(s.posterior.leader()), 0.99);
  // ...the model checks do not.
  const Verdict v = decide(s.posterior, s.results, 0.99);
  EXPECT_EQ(v.kind, VerdictKind::none_fits) << v.reason;
  EXPECT_EQ(v.name, "none");
}

TEST(Verdict, UndecidedBeforeTheEvidenceIsIn) {
  const Population population;
  const auto s = run_session(population, {{"true", 1.0, 0.0}, {"close", 1.03, 0.0}}, 3, 23);
  const Verdict v = decide(s.posterior, s.results, 0.99);
  EXPECT_EQ(v.kind, VerdictKind::undecided) << v.reason;
  EXPECT_EQ(v.name, "undecided");
}

TEST(Verdict, DecisionRuleOnHandMadeChecks) {
  Posterior posterior({"a", "b"});
  const double ll[] = {0.0, -20.0};
  posterior.add_trial(ll);  // a leads with probability ~1
  ModelCheckResult fits, fails, unknown;
  fits.enough_data = fails.enough_data = true;
  fits.fits = true;
  fails.fits = false;
  unknown.enough_data = false;

  std::vector<ModelCheckResult> checks{fits, fails};
  EXPECT_EQ(decide(posterior, checks, 0.99).name, "a");
  checks = {fails, fits};  // the leader fails, the runner-up fits: still nothing to name
  EXPECT_EQ(decide(posterior, checks, 0.99).kind, VerdictKind::none_fits);
  // The reason says which test failed, and for the encompassing test, toward which rival.
  ModelCheckResult leans = fails;
  leans.chi_square_p_value = leans.ks_p_value = 0.5;
  leans.encompassing_z = {3.4};
  leans.encompassing_lean = {0.123};
  leans.encompassing_p_value = 3e-4;
  checks = {leans, fits};
  EXPECT_NE(
      decide(posterior, checks, 0.99)
          .reason.find("lean toward what 'b' predicted (encompassing z = 3.4, 12% of the way)"),
      std::string::npos)
      << decide(posterior, checks, 0.99).reason;
  leans.encompassing_p_value = 0.9;
  leans.ks_p_value = 1e-5;
  checks = {leans, fits};
  EXPECT_NE(decide(posterior, checks, 0.99).reason.find("PIT values are not uniform"),
            std::string::npos);
  checks = {unknown, fits};  // the leader has not been checked enough
  EXPECT_EQ(decide(posterior, checks, 0.99).kind, VerdictKind::undecided);
  checks = {fits, fails};  // threshold not reached
  EXPECT_EQ(decide(posterior, checks, 1.0).kind, VerdictKind::undecided);
  checks = {fails, fails};  // all wrong: none, whatever the posterior
  EXPECT_EQ(decide(posterior, checks, 1.0).kind, VerdictKind::none_fits);

  const double refute[] = {-std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()};
  posterior.add_trial(refute);
  checks = {fits, fits};
  EXPECT_EQ(decide(posterior, checks, 0.99).kind, VerdictKind::none_fits);

  EXPECT_THROW((void)decide(posterior, std::span<const ModelCheckResult>(checks).first(1), 0.9),
               std::invalid_argument);
  EXPECT_THROW((void)decide(posterior, checks, 0.0), std::invalid_argument);
}

}  // namespace
}  // namespace twinloop::twin

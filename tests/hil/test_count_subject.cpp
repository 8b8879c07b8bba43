// CountSubject: deterministic from the seed; the same units as SimulatedSubject for the same seed;
// count means match expected_counts; tuning, untuned and over-dispersed kinds behave as claimed;
// clustered preferences stay within their spread and move nothing else.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "twinloop/hil/count_subject.hpp"
#include "twinloop/hil/simulated_subject.hpp"

namespace twinloop::hil {
namespace {

protocols::Stimulus grating(double direction_deg, double contrast = 1.0) {
  protocols::Stimulus s;
  s.dimension_count = 2;
  s.values[0] = direction_deg;
  s.values[1] = contrast;
  return s;
}

ResponseMix only(ResponseKind kind) {
  ResponseMix m{0.0, 0.0, 0.0, 0.0, 0.0};
  switch (kind) {
    case ResponseKind::kDirectionTuned:
      m.direction_tuned = 1.0;
      break;
    case ResponseKind::kBimodal:
      m.bimodal = 1.0;
      break;
    case ResponseKind::kAdapting:
      m.adapting = 1.0;
      break;
    case ResponseKind::kGainFluctuating:
      m.gain_fluctuating = 1.0;
      break;
    case ResponseKind::kUntuned:
      m.untuned = 1.0;
      break;
    case ResponseKind::kOrientationTuned:
      m.orientation_tuned = 1.0;
      break;
  }
  return m;
}

CountSubjectConfig config_with(ResponseMix mix, std::size_t units = 32, std::uint64_t seed = 11) {
  CountSubjectConfig c;
  c.seed = seed;
  c.unit_count = units;
  c.mix = mix;
  return c;
}

// Running mean and variance of each unit's counts.
struct Moments {
  explicit Moments(std::size_t n) : sum(n, 0.0), sum_sq(n, 0.0) {}
  void add(const std::vector<std::uint32_t>& counts) {
    for (std::size_t u = 0; u < counts.size(); ++u) {
      sum[u] += counts[u];
      sum_sq[u] += static_cast<double>(counts[u]) * counts[u];
    }
    ++trials;
  }
  [[nodiscard]] double mean(std::size_t u) const { return sum[u] / trials; }
  [[nodiscard]] double variance(std::size_t u) const {
    const double m = mean(u);
    return (sum_sq[u] - trials * m * m) / (trials - 1.0);
  }
  std::vector<double> sum, sum_sq;
  double trials = 0.0;
};

TEST(CountSubject, DeterministicFromSeedAndCallSequence) {
  auto c = config_with(ResponseMix{}, 40);  // the default mixture: five kinds
  CountSubject a(c), b(c);
  c.seed += 1;
  CountSubject other(c);
  bool any_difference = false;
  std::vector<std::vector<std::uint32_t>> first_run;
  for (int t = 0; t < 50; ++t) {
    const auto s = grating(7.5 * t, 0.2 + 0.015 * t);
    const auto ca = a.respond(s);
    EXPECT_EQ(ca, b.respond(s)) << "trial " << t;
    any_difference = any_difference || ca != other.respond(s);
    first_run.push_back(ca);
  }
  EXPECT_TRUE(any_difference);
  EXPECT_EQ(a.trial_count(), 50U);
  a.reset();
  EXPECT_EQ(a.trial_count(), 0U);
  for (int t = 0; t < 50; ++t) {
    std::vector<std::uint32_t> counts(a.unit_count());
    a.respond(grating(7.5 * t, 0.2 + 0.015 * t), counts);  // the non-allocating form
    EXPECT_EQ(counts, first_run[static_cast<std::size_t>(t)]) << "trial " << t;
  }
}

TEST(CountSubject, DrawsTheSameUnitsAsSimulatedSubject) {
  SimulationConfig sim;
  sim.seed = 23;
  sim.unit_count = 24;
  sim.seconds = 1.0;
  sim.max_recorded_spikes = 1000;
  sim.max_recorded_trials = 10;
  sim.min_baseline_hz = 3.0;
  sim.max_baseline_hz = 9.0;
  const SimulatedSubject subject(sim);

  CountSubjectConfig c;
  c.seed = sim.seed;
  c.unit_count = sim.unit_count;
  c.mix = sim.mix;
  c.min_baseline_hz = sim.min_baseline_hz;
  c.max_baseline_hz = sim.max_baseline_hz;
  const CountSubject counts(c);

  ASSERT_EQ(counts.unit_count(), subject.units().size());
  for (std::size_t u = 0; u < counts.unit_count(); ++u) {
    const ResponseParams& x = counts.units()[u];
    const ResponseParams& y = subject.units()[u].response;
    EXPECT_EQ(x.kind, y.kind) << u;
    EXPECT_EQ(x.baseline_hz, y.baseline_hz) << u;
    EXPECT_EQ(x.latency_ms, y.latency_ms) << u;
    EXPECT_EQ(x.preferred_deg, y.preferred_deg) << u;
    EXPECT_EQ(x.kappa, y.kappa) << u;
    EXPECT_EQ(x.peak_evoked_hz, y.peak_evoked_hz) << u;
    EXPECT_EQ(x.c50, y.c50) << u;
    EXPECT_EQ(x.nr_exponent, y.nr_exponent) << u;
    EXPECT_EQ(x.second_preferred_deg, y.second_preferred_deg) << u;
    EXPECT_EQ(x.second_kappa, y.second_kappa) << u;
    EXPECT_EQ(x.second_peak_evoked_hz, y.second_peak_evoked_hz) << u;
    EXPECT_EQ(x.adaptation_tau_s, y.adaptation_tau_s) << u;
    EXPECT_EQ(x.adaptation_strength, y.adaptation_strength) << u;
    EXPECT_EQ(x.gain_shape, y.gain_shape) << u;
  }
}

TEST(CountSubject, MixDecidesTheKinds) {
  for (int k = 0; k < kResponseKindCount; ++k) {
    const auto kind = static_cast<ResponseKind>(k);
    const CountSubject s(config_with(only(kind), 10));
    for (const auto& p : s.units()) EXPECT_EQ(p.kind, kind) << to_string(kind);
  }
}

double angle_between_deg(double a, double b) {
  const double d = std::fmod(std::abs(a - b), 360.0);
  return std::min(d, 360.0 - d);
}

TEST(CountSubject, ClusteredPreferencesStayWithinTheSpreadAndMoveNothingElse) {
  auto free = config_with(ResponseMix{}, 40, 21);  // every kind, bimodal second lobes included
  auto clustered = free;
  clustered.preference_spread_deg = 15.0;
  const CountSubject a(free), b(clustered);
  EXPECT_TRUE(std::isnan(a.column_preferred_deg()));
  const double column = b.column_preferred_deg();
  ASSERT_GE(column, 0.0);
  ASSERT_LT(column, 360.0);
  double widest = 0.0, widest_free = 0.0;
  for (std::size_t u = 0; u < a.unit_count(); ++u) {
    const ResponseParams& x = a.units()[u];
    const ResponseParams& y = b.units()[u];
    widest = std::max(widest, angle_between_deg(y.preferred_deg, column));
    widest_free = std::max(widest_free, angle_between_deg(x.preferred_deg, column));
    EXPECT_EQ(x.kind, y.kind) << u;
    EXPECT_EQ(x.kappa, y.kappa) << u;
    EXPECT_EQ(x.peak_evoked_hz, y.peak_evoked_hz) << u;
    EXPECT_EQ(x.baseline_hz, y.baseline_hz) << u;
    EXPECT_EQ(x.c50, y.c50) << u;
    // A bimodal unit's second lobe keeps its place relative to the first.
    const double gap_free = std::fmod(x.second_preferred_deg - x.preferred_deg + 720.0, 360.0);
    const double gap = std::fmod(y.second_preferred_deg - y.preferred_deg + 720.0, 360.0);
    EXPECT_NEAR(gap, gap_free, 1e-9) << u;
  }
  EXPECT_LE(widest, 15.0 + 1e-9);
  EXPECT_GT(widest, 10.0);        // the spread is used, not collapsed onto one direction
  EXPECT_GT(widest_free, 100.0);  // without clustering preferences cover the circle
  // The column direction comes from the seed alone.
  EXPECT_EQ(CountSubject(clustered).column_preferred_deg(), column);
  clustered.seed += 1;
  EXPECT_NE(CountSubject(clustered).column_preferred_deg(), column);
}

TEST(CountSubject, SpatialFrequencyTuningSharesAColumnPreferenceAndMovesNothingElse) {
  auto plain = config_with(ResponseMix{}, 24, 31);
  plain.preference_spread_deg = 15.0;
  auto tuned = plain;
  tuned.spatial_frequency_dimension = 2;
  const CountSubject a(plain), b(tuned);
  EXPECT_TRUE(std::isnan(a.column_preferred_sf_cpd()));
  const double column = b.column_preferred_sf_cpd();
  ASSERT_GE(column, tuned.min_preferred_sf_cpd);
  ASSERT_LE(column, tuned.max_preferred_sf_cpd);
  for (std::size_t u = 0; u < a.unit_count(); ++u) {
    const ResponseParams& x = a.units()[u];
    const ResponseParams& y = b.units()[u];
    EXPECT_EQ(x.sf_sigma_octaves, 0.0) << u;  // without the dimension: not tuned
    EXPECT_EQ(y.sf_sigma_octaves, tuned.sf_sigma_octaves) << u;
    EXPECT_LE(std::abs(std::log2(y.preferred_sf_cpd / column)), 0.25 + 1e-12) << u;
    EXPECT_EQ(x.preferred_deg, y.preferred_deg) << u;
    EXPECT_EQ(x.peak_evoked_hz, y.peak_evoked_hz) << u;
    EXPECT_EQ(x.baseline_hz, y.baseline_hz) << u;
    EXPECT_EQ(x.kind, y.kind) << u;
  }
  // The stimulus's third value is read as cycles/deg: a tuned unit answers its preferred
  // frequency far more than one 3 octaves away, an untuned one alike.
  auto at = [](double direction, double sf) {
    protocols::Stimulus s = grating(direction);
    s.dimension_count = 3;
    s.values[2] = sf;
    return s;
  };
  for (std::size_t u = 0; u < b.unit_count(); ++u) {
    const ResponseParams& y = b.units()[u];
    const double near = b.fresh_expected_counts(at(y.preferred_deg, y.preferred_sf_cpd))[u];
    const double far = b.fresh_expected_counts(at(y.preferred_deg, 8.0 * y.preferred_sf_cpd))[u];
    const double floor = y.baseline_hz * tuned.window_seconds;
    if (y.kind == ResponseKind::kUntuned) {
      EXPECT_DOUBLE_EQ(near, far) << u;
    } else {
      EXPECT_LT(far - floor, 0.01 * (near - floor)) << u;
    }
  }
  tuned.sf_sigma_octaves = 0.0;
  EXPECT_NE(tuned.validate().find("sf_sigma_octaves"), std::string::npos);
  tuned.sf_sigma_octaves = 0.6;
  tuned.max_preferred_sf_cpd = 0.01;  // below the minimum
  EXPECT_NE(tuned.validate().find("max_preferred_sf_cpd"), std::string::npos);
  tuned.spatial_frequency_dimension = 9;
  EXPECT_NE(tuned.validate().find("spatial_frequency_dimension"), std::string::npos);
}

TEST(CountSubject, OrientationTunedUnitsAnswerADirectionAndItsOppositeAlike) {
  auto c = config_with(only(ResponseKind::kOrientationTuned), 8, 13);
  c.window_seconds = 1.0;
  const CountSubject subject(c);
  for (std::size_t u = 0; u < subject.unit_count(); ++u) {
    const ResponseParams& p = subject.units()[u];
    EXPECT_EQ(p.kind, ResponseKind::kOrientationTuned);
    const double at_pref = subject.fresh_expected_counts(grating(p.preferred_deg))[u];
    const double opposite = subject.fresh_expected_counts(grating(p.preferred_deg + 180.0))[u];
    const double orthogonal = subject.fresh_expected_counts(grating(p.preferred_deg + 90.0))[u];
    EXPECT_NEAR(opposite, at_pref, 1e-9 * at_pref) << u;
    EXPECT_NEAR(at_pref - p.baseline_hz, p.peak_evoked_hz * naka_rushton(1.0, p.c50, p.nr_exponent),
                1e-9)
        << u;
    // Orthogonal: exp(-2 kappa) of the peak's evoked part, kappa >= 1.
    EXPECT_LT(orthogonal - p.baseline_hz, 0.14 * (at_pref - p.baseline_hz)) << u;
  }
}

TEST(CountSubject, MeanCountsMatchExpectedCounts) {
  // Every kind, adaptation included: expected_counts() is the conditional mean of the next trial,
  // so sum(count - expected) over trials is a martingale with known variance.
  auto c = config_with(ResponseMix{}, 40, 5);
  c.window_seconds = 0.4;
  c.trial_interval_seconds = 1.5;
  CountSubject subject(c);
  const std::size_t n = subject.unit_count();
  std::vector<double> observed(n, 0.0), expected(n, 0.0), variance(n, 0.0);
  std::vector<double> means(n);
  std::vector<std::uint32_t> counts(n);
  constexpr int kTrials = 3000;
  for (int t = 0; t < kTrials; ++t) {
    const auto s = grating(45.0 * (t % 8), t % 3 == 0 ? 0.15 : 0.8);
    subject.expected_counts(s, means);
    subject.respond(s, counts);
    for (std::size_t u = 0; u < n; ++u) {
      const ResponseParams& p = subject.units()[u];
      const double gain_var = p.kind == ResponseKind::kGainFluctuating ? 1.0 / p.gain_shape : 0.0;
      observed[u] += counts[u];
      expected[u] += means[u];
      variance[u] += means[u] + gain_var * means[u] * means[u];
    }
  }
  for (std::size_t u = 0; u < n; ++u) {
    const double z = (observed[u] - expected[u]) / std::sqrt(variance[u]);
    EXPECT_LT(std::abs(z), 4.5) << "unit " << u << " (" << to_string(subject.units()[u].kind)
                                << "): observed " << observed[u] << " expected " << expected[u];
  }
}

TEST(CountSubject, DirectionTunedUnitsPreferTheirPreferredDirection) {
  auto c = config_with(only(ResponseKind::kDirectionTuned), 12, 3);
  c.window_seconds = 0.5;
  CountSubject subject(c);
  constexpr int kTrials = 200;
  for (std::size_t u = 0; u < subject.unit_count(); ++u) {
    const double preferred = subject.units()[u].preferred_deg;
    const auto at_pref = grating(preferred);
    const auto at_null = grating(std::fmod(preferred + 180.0, 360.0));
    EXPECT_GT(subject.expected_counts(at_pref)[u], subject.expected_counts(at_null)[u]);
    double pref_sum = 0.0, null_sum = 0.0;
    for (int t = 0; t < kTrials; ++t) {
      pref_sum += subject.respond(at_pref)[u];
      null_sum += subject.respond(at_null)[u];
    }
    EXPECT_GT(pref_sum / kTrials, null_sum / kTrials + 1.0) << "unit " << u;
  }
}

TEST(CountSubject, UntunedMeansDoNotDependOnTheStimulus) {
  auto c = config_with(only(ResponseKind::kUntuned), 16, 9);
  CountSubject subject(c);
  const std::vector<protocols::Stimulus> stimuli{grating(0.0, 1.0), grating(90.0, 0.05),
                                                 grating(200.0, 0.5), grating(315.0, 0.0)};
  const auto reference = subject.expected_counts(stimuli[0]);
  for (const auto& s : stimuli) {
    EXPECT_EQ(subject.expected_counts(s), reference);
    EXPECT_EQ(subject.fresh_expected_counts(s), reference);
  }
  // Empirically: the first and the last stimulus give the same mean count (two-sample z test).
  Moments a(subject.unit_count()), b(subject.unit_count());
  for (int t = 0; t < 1500; ++t) {
    a.add(subject.respond(stimuli[0]));
    b.add(subject.respond(stimuli[3]));
  }
  for (std::size_t u = 0; u < subject.unit_count(); ++u) {
    const double se = std::sqrt((a.variance(u) + b.variance(u)) / a.trials);
    EXPECT_LT(std::abs(a.mean(u) - b.mean(u)), 4.5 * se) << "unit " << u;
    EXPECT_NEAR(a.mean(u), reference[u], 4.5 * std::sqrt(reference[u] / a.trials)) << u;
  }
}

TEST(CountSubject, GainFluctuatingUnitsAreOverDispersedAndTunedUnitsArePoisson) {
  constexpr int kTrials = 2000;
  auto gain_cfg = config_with(only(ResponseKind::kGainFluctuating), 12, 4);
  gain_cfg.window_seconds = 2.0;
  CountSubject gain(gain_cfg);
  auto poisson_cfg = config_with(only(ResponseKind::kDirectionTuned), 12, 4);
  poisson_cfg.window_seconds = 2.0;
  CountSubject poisson(poisson_cfg);
  const auto s = grating(30.0, 0.9);
  Moments g(gain.unit_count()), p(poisson.unit_count());
  for (int t = 0; t < kTrials; ++t) {
    g.add(gain.respond(s));
    p.add(poisson.respond(s));
  }
  for (std::size_t u = 0; u < gain.unit_count(); ++u) {
    EXPECT_GT(g.variance(u) / g.mean(u), 1.3) << "unit " << u << " mean " << g.mean(u);
  }
  for (std::size_t u = 0; u < poisson.unit_count(); ++u) {
    EXPECT_NEAR(p.variance(u) / p.mean(u), 1.0, 0.15) << "unit " << u << " mean " << p.mean(u);
  }
}

TEST(CountSubject, GammaPoissonNoiseOverDispersesEveryUnit) {
  auto c = config_with(only(ResponseKind::kUntuned), 8, 6);
  c.window_seconds = 2.0;
  c.noise = CountNoise::kGammaPoisson;
  c.dispersion_shape = 2.0;
  CountSubject subject(c);
  Moments m(subject.unit_count());
  const auto s = grating(0.0);
  const auto expected = subject.expected_counts(s);
  for (int t = 0; t < 3000; ++t) m.add(subject.respond(s));
  for (std::size_t u = 0; u < subject.unit_count(); ++u) {
    const double fano = m.variance(u) / m.mean(u);
    EXPECT_NEAR(fano, 1.0 + expected[u] / c.dispersion_shape, 0.25 * fano) << u;
    EXPECT_GT(fano, 1.3) << u;
  }
}

TEST(CountSubject, AdaptingUnitsRespondLessAfterRepeatedStimulation) {
  auto c = config_with(only(ResponseKind::kAdapting), 8, 2);
  c.trial_interval_seconds = 0.5;
  CountSubject subject(c);
  const auto s = grating(0.0);
  const auto fresh = subject.fresh_expected_counts(s);
  EXPECT_EQ(subject.expected_counts(s), fresh);  // nothing shown yet
  for (int t = 0; t < 20; ++t) (void)subject.respond(s);
  const auto adapted = subject.expected_counts(s);
  for (std::size_t u = 0; u < subject.unit_count(); ++u) {
    const double baseline = subject.units()[u].baseline_hz * c.window_seconds;
    EXPECT_LT(adapted[u], fresh[u]) << u;
    EXPECT_GE(adapted[u], baseline - 1e-12) << u;
  }
  subject.reset();
  EXPECT_EQ(subject.expected_counts(s), fresh);
}

TEST(CountSubject, PoissonSamplerHasPoissonMoments) {
  details::Xoshiro256pp rng(99);
  for (const double mean : {0.3, 4.0, 9.9, 10.0, 37.0, 400.0}) {
    constexpr int kDraws = 40000;
    double sum = 0.0, sum_sq = 0.0;
    for (int i = 0; i < kDraws; ++i) {
      const double k = poisson_count(rng, mean);
      sum += k;
      sum_sq += k * k;
    }
    const double m = sum / kDraws;
    const double var = sum_sq / kDraws - m * m;
    EXPECT_NEAR(m, mean, 5.0 * std::sqrt(mean / kDraws)) << mean;
    EXPECT_NEAR(var / mean, 1.0, 0.05) << mean;
  }
  EXPECT_EQ(poisson_count(rng, 0.0), 0U);
  EXPECT_EQ(poisson_count(rng, -1.0), 0U);
  EXPECT_EQ(poisson_count(rng, std::nan("")), 0U);
}

TEST(CountSubject, RejectsBadConfigAndWrongSpanSizes) {
  auto c = config_with(ResponseMix{}, 4);
  c.window_seconds = 0.0;
  EXPECT_THROW(CountSubject{c}, std::invalid_argument);
  c = config_with(ResponseMix{0.0, 0.0, 0.0, 0.0, 0.0}, 4);
  EXPECT_THROW(CountSubject{c}, std::invalid_argument);
  c = config_with(ResponseMix{}, 4);
  c.preference_spread_deg = 181.0;
  EXPECT_NE(c.validate().find("preference_spread_deg"), std::string::npos);
  c.preference_spread_deg = std::nan("");
  EXPECT_NE(c.validate().find("preference_spread_deg"), std::string::npos);
  c.preference_spread_deg = 0.0;
  EXPECT_EQ(c.validate(), "");
  c = config_with(ResponseMix{0, 0, 0, 0, 0, -1.0}, 4);
  EXPECT_NE(c.validate().find("mix"), std::string::npos);
  c = config_with(ResponseMix{}, 0);
  EXPECT_FALSE(c.validate().empty());
  c = config_with(ResponseMix{}, 4);
  c.direction_dimension = 8;
  EXPECT_FALSE(c.validate().empty());

  CountSubject subject(config_with(ResponseMix{}, 4));
  std::vector<std::uint32_t> short_counts(3);
  EXPECT_THROW(subject.respond(grating(0.0), short_counts), std::invalid_argument);
  EXPECT_EQ(subject.trial_count(), 0U);
  std::vector<double> short_means(5);
  EXPECT_THROW(subject.expected_counts(grating(0.0), short_means), std::invalid_argument);
}

}  // namespace
}  // namespace twinloop::hil

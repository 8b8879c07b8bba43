// The built-in twin families (direction_tuning, orientation_tuning, lnp, null) against synthetic
// units whose true
// tuning is known: the data are drawn in the test itself from a fixed seed, so every fit is
// reproducible. Also the refusals (unknown family, missing file, unknown device, bad sizes),
// determinism, and the cost of predict() on the designer's path.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/model_check.hpp"

namespace twinloop::twin {
namespace {

using protocols::HypothesisFamily;
using protocols::HypothesisSpec;
using protocols::Stimulus;
using protocols::StimulusSpace;

StimulusSpace gratings(std::size_t directions, const std::vector<double>& contrasts) {
  StimulusSpace s;
  s.kind = protocols::StimulusKind::kGrating;
  s.dimensions.push_back({"direction", "deg", {}});
  for (std::size_t i = 0; i < directions; ++i) {
    s.dimensions[0].values.push_back(360.0 * static_cast<double>(i) /
                                     static_cast<double>(directions));
  }
  s.dimensions.push_back({"contrast", "fraction", contrasts});
  for (const double d : s.dimensions[0].values) {
    for (const double c : contrasts) {
      s.candidate_values.push_back(d);
      s.candidate_values.push_back(c);
    }
  }
  return s;
}

StimulusSpace optogenetic() {
  StimulusSpace s;
  s.kind = protocols::StimulusKind::kOptogenetic;
  s.dimensions.push_back({"amplitude_mw", "mW", {1.0, 2.0, 4.0, 8.0}});
  s.dimensions.push_back({"duration_ms", "ms", {10.0, 50.0}});
  for (const double a : s.dimensions[0].values) {
    for (const double d : s.dimensions[1].values) {
      s.candidate_values.push_back(a);
      s.candidate_values.push_back(d);
    }
  }
  return s;
}

HypothesisSpec spec(HypothesisFamily family, std::string name = "h") {
  HypothesisSpec h;
  h.name = std::move(name);
  h.family = family;
  return h;
}

/// Ground truth for one synthetic unit, in hertz.
struct Unit {
  double baseline = 0, amplitude = 0, preferred_deg = 0, kappa = 1, c50 = 0.3, n = 2;
  double nb_dispersion = 0;  ///< > 0: counts are gamma-Poisson (NB2) around the rate
  double cycles = 1;         ///< 2: orientation tuned (von Mises of the doubled angle)

  [[nodiscard]] double rate(double direction_deg, double contrast) const {
    const double d = cycles * (direction_deg - preferred_deg) * std::numbers::pi / 180.0;
    const double cn = std::pow(contrast, n);
    return baseline +
           amplitude * std::exp(kappa * (std::cos(d) - 1.0)) * cn / (cn + std::pow(c50, n));
  }
};

/// The population every fitting test uses: 16 clearly tuned units, 4 untuned Poisson units at
/// 8 Hz, 2 untuned over-dispersed units at 10 Hz, 2 units that never fire.
std::vector<Unit> population() {
  std::mt19937_64 rng(20240501);
  std::uniform_real_distribution<double> unit01(0.0, 1.0);
  std::vector<Unit> units;
  for (int i = 0; i < 16; ++i) {
    Unit u;
    u.baseline = 2.0 + 2.0 * unit01(rng);
    u.amplitude = 15.0 + 15.0 * unit01(rng);
    u.preferred_deg = 360.0 * unit01(rng);
    u.kappa = 1.5 + 1.5 * unit01(rng);
    units.push_back(u);
  }
  for (int i = 0; i < 4; ++i) units.push_back({.baseline = 8.0});
  for (int i = 0; i < 2; ++i) units.push_back({.baseline = 10.0, .nb_dispersion = 0.5});
  for (int i = 0; i < 2; ++i) units.push_back({});
  return units;
}

constexpr std::size_t kTuned = 16;

struct Trials {
  std::vector<Stimulus> stimuli;
  std::vector<std::uint32_t> counts;  ///< trials x units
};

Trials simulate(const StimulusSpace& space, const std::vector<Unit>& units, std::size_t repeats,
                double window_s, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Trials t;
  for (std::size_t r = 0; r < repeats; ++r) {
    for (std::size_t c = 0; c < space.candidate_count(); ++c) {
      const auto s = space.stimulus(c);
      t.stimuli.push_back(s);
      for (const auto& u : units) {
        double mean = u.rate(s.value(0), s.value(1)) * window_s;
        if (u.nb_dispersion > 0) {
          std::gamma_distribution<double> g(1.0 / u.nb_dispersion, u.nb_dispersion);
          mean *= g(rng);
        }
        std::poisson_distribution<std::uint32_t> p(mean);
        t.counts.push_back(mean > 0 ? p(rng) : 0U);
      }
    }
  }
  return t;
}

PredictionBatch predict_all(Hypothesis& h, std::span<const Stimulus> stimuli) {
  PredictionBatch b;
  b.resize(stimuli.size(), h.unit_count());
  h.predict(stimuli, b);
  return b;
}

/// Summed log-likelihood of the trials' counts, units [first, last).
double log_likelihood(Hypothesis& h, const Trials& t, std::size_t first, std::size_t last) {
  const auto b = predict_all(h, t.stimuli);
  double total = 0;
  for (std::size_t i = 0; i < t.stimuli.size(); ++i) {
    for (std::size_t u = first; u < last; ++u) {
      total += log_probability(b.at(i, u), t.counts[i * h.unit_count() + u]);
    }
  }
  return total;
}

double angle_between_deg(double a, double b) {
  const double d = std::fmod(std::abs(a - b), 360.0);
  return std::min(d, 360.0 - d);
}

class Fitted : public ::testing::Test {
 protected:
  static constexpr double kWindow = 1.0;
  StimulusSpace space = gratings(16, {0.25, 0.5, 1.0});
  std::vector<Unit> truth = population();
  Trials train = simulate(space, truth, 10, kWindow, 7);  // 480 trials
  Trials test = simulate(space, truth, 5, kWindow, 8);    // held out
  TwinOptions options{.device = "cpu", .window_seconds = kWindow};

  std::unique_ptr<Hypothesis> fit(HypothesisFamily family) {
    auto h = make_hypothesis(spec(family), space, truth.size(), options);
    h->update(train.stimuli, train.counts);
    return h;
  }
};

TEST_F(Fitted, DirectionTuningRecoversPreferredDirection) {
  auto h = fit(HypothesisFamily::kDirectionTuning);
  EXPECT_EQ(h->family(), "direction_tuning");
  // Read the fitted tuning curve at 1-degree steps (stimuli outside the candidate set take the
  // computed path) and take its peak.
  std::vector<Stimulus> fine;
  for (int d = 0; d < 360; ++d) {
    Stimulus s;
    s.dimension_count = 2;
    s.values[0] = d;
    s.values[1] = 1.0;
    fine.push_back(s);
  }
  const auto b = predict_all(*h, fine);
  for (std::size_t u = 0; u < kTuned; ++u) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < fine.size(); ++i) {
      if (b.at(i, u).mean > b.at(best, u).mean) best = i;
    }
    EXPECT_LT(angle_between_deg(static_cast<double>(best), truth[u].preferred_deg), 15.0)
        << "unit " << u;
    // Peak and trough at full contrast within 20% of the truth.
    const double peak = truth[u].rate(truth[u].preferred_deg, 1.0);
    EXPECT_NEAR(b.at(best, u).mean, peak, 0.2 * peak) << "unit " << u;
  }
}

TEST_F(Fitted, NullFitsTheMeanCount) {
  auto h = fit(HypothesisFamily::kNull);
  const auto b = predict_all(*h, train.stimuli);
  const std::size_t units = truth.size();
  for (std::size_t u = 0; u < units; ++u) {
    double sum = 0;
    for (std::size_t i = 0; i < train.stimuli.size(); ++i) sum += train.counts[i * units + u];
    const double sample_mean = sum / static_cast<double>(train.stimuli.size());
    for (std::size_t i = 0; i < train.stimuli.size(); i += 97) {
      EXPECT_NEAR(b.at(i, u).mean, std::max(sample_mean, 0.01), 1e-9) << "unit " << u;
    }
  }
  for (std::size_t u = kTuned; u < kTuned + 4; ++u) EXPECT_NEAR(b.at(0, u).mean, 8.0, 0.5);
}

TEST_F(Fitted, TunedModelsPredictHeldOutTrialsBetterThanNull) {
  auto null = fit(HypothesisFamily::kNull);
  auto lnp = fit(HypothesisFamily::kLnp);
  auto tuning = fit(HypothesisFamily::kDirectionTuning);
  const double ll_null = log_likelihood(*null, test, 0, kTuned);
  const double ll_lnp = log_likelihood(*lnp, test, 0, kTuned);
  const double ll_tuning = log_likelihood(*tuning, test, 0, kTuned);
  EXPECT_GT(ll_lnp, ll_null + 100.0);
  EXPECT_GT(ll_tuning, ll_lnp);  // the true model family should win
  // On untuned units no family should do much worse than null (no over-fitting disaster).
  const double untuned_null = log_likelihood(*null, test, kTuned, kTuned + 6);
  EXPECT_GT(log_likelihood(*lnp, test, kTuned, kTuned + 6), untuned_null - 10.0);
  EXPECT_GT(log_likelihood(*tuning, test, kTuned, kTuned + 6), untuned_null - 10.0);
}

TEST_F(Fitted, DispersionIsFittedForOverdispersedUnitsOnly) {
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    auto h = fit(family);
    // A second update warm-starts from the first and fits the means under NB2.
    h->update(train.stimuli, train.counts);
    const auto b = predict_all(*h, train.stimuli);
    for (std::size_t u = kTuned; u < kTuned + 4; ++u) {
      EXPECT_LT(b.at(0, u).dispersion, 0.05) << h->family() << " unit " << u;
    }
    for (std::size_t u = kTuned + 4; u < kTuned + 6; ++u) {
      EXPECT_GT(b.at(0, u).dispersion, 0.25) << h->family() << " unit " << u;
      EXPECT_LT(b.at(0, u).dispersion, 1.0) << h->family() << " unit " << u;
    }
  }
}

// The closed loop refits after as few as 8 trials over 48 candidates. Fits are MAP with
// weakly-informative priors, so an untuned unit's few counts must not be turned into a sharp
// tuning curve: the predictions stay near the unit's mean count, and on held-out trials the MAP
// fit scores better than the same family with its prior made flat.
TEST_F(Fitted, FewTrialFitsStayNearTheMeanOfUntunedUnits) {
  Trials few;
  for (std::size_t k = 0; k < 8; ++k) {
    const std::size_t i = k * 6 + k % 3;  // spread over directions and contrasts
    few.stimuli.push_back(train.stimuli[i]);
    for (std::size_t u = 0; u < truth.size(); ++u) {
      few.counts.push_back(train.counts[i * truth.size() + u]);
    }
  }
  auto null = make_hypothesis(spec(HypothesisFamily::kNull), space, truth.size(), options);
  null->update(few.stimuli, few.counts);
  const double null_ll = log_likelihood(*null, test, kTuned, kTuned + 4);
  for (const auto family : {HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    auto h = make_hypothesis(spec(family), space, truth.size(), options);
    h->update(few.stimuli, few.counts);
    // The same family with its prior made ~flat: close to the maximum-likelihood fit.
    auto wide_spec = spec(family);
    wide_spec.params[family == HypothesisFamily::kLnp ? "prior_weight_sd" : "prior_width"] = 1e3;
    auto wide = make_hypothesis(wide_spec, space, truth.size(), options);
    wide->update(few.stimuli, few.counts);
    const auto all = predict_all(*h, test.stimuli);
    for (std::size_t u = kTuned; u < kTuned + 4; ++u) {
      double sum = 0;
      for (std::size_t k = 0; k < few.stimuli.size(); ++k) sum += few.counts[k * truth.size() + u];
      const double sample_mean = sum / static_cast<double>(few.stimuli.size());
      for (std::size_t i = 0; i < test.stimuli.size(); ++i) {
        EXPECT_GT(all.at(i, u).mean, 0.3 * sample_mean) << h->family() << " unit " << u;
        EXPECT_LT(all.at(i, u).mean, 3.0 * sample_mean) << h->family() << " unit " << u;
      }
    }
    const double ll = log_likelihood(*h, test, kTuned, kTuned + 4);
    const double wide_ll = log_likelihood(*wide, test, kTuned, kTuned + 4);
    std::cout << h->family() << " held-out log-likelihood, untuned units: MAP " << ll
              << ", flat prior " << wide_ll << ", null " << null_ll << "\n";
    EXPECT_GT(ll, wide_ll) << h->family();
  }
}

TEST_F(Fitted, SilentUnitsGetSmallFinitePredictions) {
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    auto h = fit(family);
    const auto b = predict_all(*h, train.stimuli);
    for (std::size_t i = 0; i < b.candidates; ++i) {
      for (std::size_t u = 0; u < b.units; ++u) {
        ASSERT_TRUE(std::isfinite(b.at(i, u).mean)) << h->family();
        ASSERT_GE(b.at(i, u).dispersion, 0.0);
      }
      for (std::size_t u = truth.size() - 2; u < truth.size(); ++u) {
        EXPECT_GT(b.at(i, u).mean, 0.0) << h->family();
        EXPECT_LT(b.at(i, u).mean, 0.05) << h->family();
        EXPECT_TRUE(std::isfinite(log_probability(b.at(i, u), 1))) << h->family();
      }
    }
  }
}

// A probe has hundreds of channels that see no unit. Were a tuned family to predict them above
// what the null predicts, every silent trial would cost it a little on each of them, and on a
// sparse probe those costs outweighed one tuned unit's evidence (the null won a session with
// one direction-tuned unit by a log Bayes factor of 61). So a unit that has never fired is
// predicted as the null predicts it, after a few trials and after many.
TEST_F(Fitted, SilentUnitsArePredictedAsTheNullPredictsThem) {
  const double floor = 0.01 * kWindow;  // the families' rate floor, 0.01 Hz
  for (const std::size_t trials : {std::size_t{8}, train.stimuli.size()}) {
    const std::span<const Stimulus> stimuli(train.stimuli.data(), trials);
    const std::span<const std::uint32_t> counts(train.counts.data(), trials * truth.size());
    auto null = make_hypothesis(spec(HypothesisFamily::kNull), space, truth.size(), options);
    null->update(stimuli, counts);
    const auto expected = predict_all(*null, test.stimuli);
    for (const auto family : {HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
      auto h = make_hypothesis(spec(family), space, truth.size(), options);
      h->update(stimuli, counts);
      const auto b = predict_all(*h, test.stimuli);
      for (std::size_t i = 0; i < b.candidates; ++i) {
        for (std::size_t u = truth.size() - 2; u < truth.size(); ++u) {
          EXPECT_NEAR(log_probability(b.at(i, u), 0), log_probability(expected.at(i, u), 0),
                      0.1 * floor)
              << h->family() << " after " << trials << " trials, unit " << u << ": mean "
              << b.at(i, u).mean << " against the null's " << expected.at(i, u).mean;
        }
      }
    }
  }
}

// Most channels of a probe that fire at all fire a spike or two in a session. The tuned
// families' predictions average Laplace draws that are Gaussian in the log of a rate, which
// overstates a rate seen as k spikes by about exp(1 / 2k); uncorrected, direction_tuning
// predicted such units 17% above the null on a sparse probe and lost there much of what its
// tuned units earned. So direction_tuning predicts the overall level of an untuned unit with a
// few spikes close to the null's (1.18 times it before the correction). lnp is not corrected
// and predicts these units at about 1.45 times the null's level (builtin_families.cpp says why).
TEST_F(Fitted, UnitsWithAFewSpikesArePredictedAtTheNullsLevel) {
  constexpr std::size_t kUnits = 48, kTrials = 60;
  std::mt19937_64 rng(20261128);
  std::vector<std::uint32_t> counts(kTrials * kUnits);
  for (std::size_t u = 0; u < kUnits; ++u) {
    // 1 to 6 spikes expected over the trials, with no tuning.
    std::poisson_distribution<std::uint32_t> spikes(static_cast<double>(1 + u % 6) / kTrials);
    for (std::size_t t = 0; t < kTrials; ++t) counts[t * kUnits + u] = spikes(rng);
  }
  const std::span<const Stimulus> stimuli(train.stimuli.data(), kTrials);
  auto fitted = [&](HypothesisFamily family) {
    auto h = make_hypothesis(spec(family), space, kUnits, options);
    h->update(stimuli, counts);
    return predict_all(*h, test.stimuli);
  };
  const auto null = fitted(HypothesisFamily::kNull);
  const auto tuned = fitted(HypothesisFamily::kDirectionTuning);
  double predicted = 0.0, expected = 0.0;
  for (std::size_t i = 0; i < tuned.candidates; ++i) {
    for (std::size_t u = 0; u < kUnits; ++u) {
      predicted += tuned.at(i, u).mean;
      expected += null.at(i, u).mean;
    }
  }
  std::cout << "direction_tuning predicts units with a few spikes at " << predicted / expected
            << " times the null's level\n";
  EXPECT_NEAR(predicted / expected, 1.0, 0.08);
}

// The prior expects little tuning (amplitude a quarter of a unit's mean), which keeps one unit's
// young fit near flat; a population of strongly tuned units teaches it otherwise. After 16 trials,
// refitted after each from the eighth as a session does, 64 such units are predicted closer to
// their true peaks, and held-out trials better, than under the fixed prior
// (prior_ratio_units: 1e9); two units barely move it.
TEST(PooledAmplitudePrior, APopulationOfTunedUnitsTeachesThePriorHowTunedUnitsAre) {
  const StimulusSpace space = gratings(16, {0.25, 0.5, 1.0});
  std::mt19937_64 rng(20261128);
  std::uniform_real_distribution<double> unit01(0.0, 1.0);
  std::vector<Unit> units(64);
  for (Unit& u : units) {
    u.baseline = 2.0 + 2.0 * unit01(rng);
    u.amplitude = 10.0 + 20.0 * unit01(rng);
    u.preferred_deg = 360.0 * unit01(rng);
    u.kappa = 1.5 + 1.5 * unit01(rng);
  }
  const Trials all = simulate(space, units, 1, 1.0, 11);
  const Trials held_out = simulate(space, units, 2, 1.0, 12);
  constexpr std::size_t kTrials = 16, kFirstFit = 8;
  struct Outcome {
    double peak_log_error = 0.0;  ///< mean over units of log(predicted / true) at the peak
    double held_out = 0.0;        ///< log-likelihood of the held-out trials
  };
  const auto session = [&](std::size_t unit_count, double prior_units) {
    HypothesisSpec h = spec(HypothesisFamily::kDirectionTuning);
    if (prior_units > 0.0) h.params["prior_ratio_units"] = prior_units;
    auto twin = make_hypothesis(h, space, unit_count, {.device = "cpu", .window_seconds = 1.0});
    std::vector<Stimulus> stimuli;
    std::vector<std::uint32_t> counts;
    for (std::size_t t = 0; t < kTrials; ++t) {
      const std::size_t k = (t * 17) % space.candidate_count();  // spread over the candidates
      stimuli.push_back(all.stimuli[k]);
      for (std::size_t u = 0; u < unit_count; ++u) {
        counts.push_back(all.counts[k * units.size() + u]);
      }
      if (t + 1 >= kFirstFit) twin->update(stimuli, counts);
    }
    Outcome o;
    std::vector<Stimulus> peaks;
    for (std::size_t u = 0; u < unit_count; ++u) {
      Stimulus peak;
      peak.dimension_count = 2;
      peak.values[0] = units[u].preferred_deg;
      peak.values[1] = 1.0;
      peaks.push_back(peak);
    }
    const auto at_peaks = predict_all(*twin, peaks);
    for (std::size_t u = 0; u < unit_count; ++u) {
      o.peak_log_error +=
          std::log(at_peaks.at(u, u).mean / units[u].rate(units[u].preferred_deg, 1.0)) /
          static_cast<double>(unit_count);
    }
    const auto b = predict_all(*twin, held_out.stimuli);
    for (std::size_t i = 0; i < held_out.stimuli.size(); ++i) {
      for (std::size_t u = 0; u < unit_count; ++u) {
        o.held_out += log_probability(b.at(i, u), held_out.counts[i * units.size() + u]);
      }
    }
    return o;
  };
  const Outcome pooled = session(64, 0.0), fixed = session(64, 1e9);
  std::cout << "64 units after 16 trials: peaks predicted at exp(" << pooled.peak_log_error
            << ") of the truth with the pooled prior, exp(" << fixed.peak_log_error
            << ") with the fixed one; held-out log-likelihood " << pooled.held_out << " against "
            << fixed.held_out << "\n";
  EXPECT_LT(fixed.peak_log_error, -0.2);  // the fixed prior holds the peaks well below the truth
  EXPECT_GT(pooled.peak_log_error, fixed.peak_log_error + 0.1);
  EXPECT_GT(pooled.held_out, fixed.held_out);
  const Outcome two = session(2, 0.0), two_fixed = session(2, 1e9);
  EXPECT_NEAR(two.peak_log_error, two_fixed.peak_log_error, 0.05);
}

TEST_F(Fitted, PredictionsAreDeterministic) {
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    auto a = fit(family);
    auto b = fit(family);
    const auto pa = predict_all(*a, test.stimuli);
    const auto pb = predict_all(*b, test.stimuli);
    const auto again = predict_all(*a, test.stimuli);
    EXPECT_EQ(pa.mean, pb.mean) << a->family();
    EXPECT_EQ(pa.dispersion, pb.dispersion) << a->family();
    EXPECT_EQ(pa.mean, again.mean) << a->family();
  }
}

TEST_F(Fitted, ComputedPathAgreesWithTheCandidateCache) {
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    auto h = fit(family);
    std::vector<Stimulus> cached{space.stimulus(7), space.stimulus(30)};
    std::vector<Stimulus> computed = cached;
    for (auto& s : computed) s.candidate = 1000;  // not an index of this space: computed anew
    const auto a = predict_all(*h, cached);
    const auto b = predict_all(*h, computed);
    for (std::size_t i = 0; i < a.mean.size(); ++i) {
      EXPECT_NEAR(a.mean[i], b.mean[i], 1e-9 * (1.0 + a.mean[i])) << h->family();
      EXPECT_DOUBLE_EQ(a.dispersion[i], b.dispersion[i]) << h->family();
    }
  }
}

// Predictive distributions carry the uncertainty of parameters fitted from few trials (Laplace
// draws for the tuned families and LNP, the sample mean's variance for null): the spread is
// wider than the plug-in's, by much after 24 trials and little after 480, when the predictive
// means (the draws' mean) are also within a few percent of the fit's; and with few trials the
// predictive distributions score held-out trials better (the log score is a proper scoring rule:
// it rewards calibration, not width).
TEST_F(Fitted, PredictionsCarryTheUncertaintyOfFewTrialFits) {
  const auto first = [&](std::size_t n) {
    Trials t;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t k = (i * 17) % train.stimuli.size();  // spread over the candidates
      t.stimuli.push_back(train.stimuli[k]);
      t.counts.insert(t.counts.end(), train.counts.begin() + static_cast<long>(k * truth.size()),
                      train.counts.begin() + static_cast<long>((k + 1) * truth.size()));
    }
    return t;
  };
  const Trials few = first(24);
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning}) {
    double excess[2] = {0.0, 0.0};
    for (int pass = 0; pass < 2; ++pass) {
      const Trials& data = pass == 0 ? few : train;
      auto uncertain = make_hypothesis(spec(family), space, truth.size(), options);
      auto plug_in_spec = spec(family);
      plug_in_spec.params["parameter_uncertainty"] = 0.0;
      auto plug_in = make_hypothesis(plug_in_spec, space, truth.size(), options);
      uncertain->update(data.stimuli, data.counts);
      plug_in->update(data.stimuli, data.counts);
      const auto a = predict_all(*uncertain, test.stimuli);
      const auto b = predict_all(*plug_in, test.stimuli);
      double largest_shift = 0.0;
      for (std::size_t i = 0; i < a.mean.size(); ++i) {
        // Predictive variance m + alpha m^2, the plug-in's subtracted.
        const auto variance = [](double m, double alpha) { return m + alpha * m * m; };
        excess[pass] += variance(a.mean[i], a.dispersion[i]) - variance(b.mean[i], b.dispersion[i]);
        largest_shift =
            std::max(largest_shift, std::abs(a.mean[i] - b.mean[i]) / (b.mean[i] + 0.1));
      }
      if (pass == 1) {
        EXPECT_LT(largest_shift, 0.05) << uncertain->family();
      }
      if (pass == 0 && family != HypothesisFamily::kNull) {
        const double ll = log_likelihood(*uncertain, test, 0, truth.size());
        const double plug_ll = log_likelihood(*plug_in, test, 0, truth.size());
        std::cout << uncertain->family() << " held-out log-likelihood after 24 trials: with "
                  << "parameter uncertainty " << ll << ", plug-in " << plug_ll << "\n";
        EXPECT_GT(ll, plug_ll) << uncertain->family();
      }
    }
    std::cout << protocols::to_string(family) << " predictive variance beyond the plug-in's, "
              << "summed over the held-out predictions: " << excess[0] << " after 24 trials, "
              << excess[1] << " after 480\n";
    EXPECT_GT(excess[0], 0.0) << protocols::to_string(family);
    EXPECT_GT(excess[0], 5.0 * std::abs(excess[1])) << protocols::to_string(family);
  }
}

// Orientation-tuned units (two equal lobes 180 deg apart) and direction-tuned units with the same
// preferences: each tuning family must describe its own kind and lose on the other kind, since
// that is the question a session holding both asks.
class OrientationVsDirection : public ::testing::Test {
 protected:
  static constexpr double kWindow = 0.5;
  static constexpr std::size_t kUnits = 6;
  StimulusSpace space = gratings(16, {0.1, 0.3, 1.0});
  TwinOptions options{.device = "cpu", .window_seconds = kWindow};

  static std::vector<Unit> units(double cycles) {
    std::vector<Unit> v;
    for (std::size_t i = 0; i < kUnits; ++i) {
      v.push_back({.baseline = 3.0 + static_cast<double>(i % 3),
                   .amplitude = 20.0 + 3.0 * static_cast<double>(i),
                   .preferred_deg = 40.0 + 23.0 * static_cast<double>(i),
                   .kappa = 1.5 + 0.3 * static_cast<double>(i),
                   .cycles = cycles});
    }
    return v;
  }

  /// Held-out log-likelihood of a family fitted to `truth`'s trials.
  double held_out(HypothesisFamily family, const std::vector<Unit>& truth) {
    const Trials train = simulate(space, truth, 4, kWindow, 21);  // 192 trials
    const Trials test = simulate(space, truth, 3, kWindow, 22);
    auto h = make_hypothesis(spec(family), space, truth.size(), options);
    h->update(train.stimuli, train.counts);
    return log_likelihood(*h, test, 0, truth.size());
  }
};

TEST_F(OrientationVsDirection, OrientationTuningPredictsTwoEqualLobes) {
  const auto truth = units(2.0);
  const Trials train = simulate(space, truth, 4, kWindow, 21);
  auto h = make_hypothesis(spec(HypothesisFamily::kOrientationTuning), space, kUnits, options);
  EXPECT_EQ(h->family(), "orientation_tuning");
  h->update(train.stimuli, train.counts);
  for (std::size_t u = 0; u < kUnits; ++u) {
    std::vector<Stimulus> probe;
    for (const double offset : {0.0, 180.0, 90.0}) {
      Stimulus s;
      s.dimension_count = 2;
      s.values[0] = std::fmod(truth[u].preferred_deg + offset, 360.0);
      s.values[1] = 1.0;
      probe.push_back(s);
    }
    const auto b = predict_all(*h, probe);
    const double peak = truth[u].rate(truth[u].preferred_deg, 1.0) * kWindow;
    EXPECT_NEAR(b.at(0, u).mean, peak, 0.25 * peak) << "unit " << u;
    EXPECT_NEAR(b.at(1, u).mean, b.at(0, u).mean, 1e-6 * peak) << "unit " << u;  // equal lobes
    EXPECT_LT(b.at(2, u).mean, 0.5 * b.at(0, u).mean) << "unit " << u;           // orthogonal: weak
  }
}

TEST_F(OrientationVsDirection, EachTuningFamilyWinsOnItsOwnKind) {
  const auto orientation = units(2.0);
  const auto direction = units(1.0);
  const double o_on_o = held_out(HypothesisFamily::kOrientationTuning, orientation);
  const double d_on_o = held_out(HypothesisFamily::kDirectionTuning, orientation);
  const double o_on_d = held_out(HypothesisFamily::kOrientationTuning, direction);
  const double d_on_d = held_out(HypothesisFamily::kDirectionTuning, direction);
  std::cout << "held-out log-likelihood: orientation units: orientation " << o_on_o
            << ", direction " << d_on_o << "; direction units: orientation " << o_on_d
            << ", direction " << d_on_d << "\n";
  EXPECT_GT(o_on_o, d_on_o + 50.0);
  EXPECT_GT(d_on_d, o_on_d + 50.0);
}

// A grating space with a spatial-frequency dimension: direction x contrast 1 x SF (cycles/deg).
// The encompassing test's directions (Hypothesis::remove_own_directions): what a rival says
// that no refit of this twin could. Direction-tuned units, all three families fitted to the same
// trials. The null's difference from direction_tuning is one of its own directions (a lower
// amplitude, a level): contained, so nothing is left. Orientation tuning's second lobe is not:
// most of it is left. What is left is left alone by a second removal (a projection). A twin
// with plug-in predictions has no directions to remove and says so.
TEST_F(OrientationVsDirection, ARivalKeepsOnlyWhatTheTwinCouldNotFitItself) {
  const auto truth = units(1.0);
  const Trials train = simulate(space, truth, 2, kWindow, 31);  // 96 trials
  const std::size_t cells = space.candidate_count() * kUnits;
  std::vector<Stimulus> candidates;
  for (std::size_t c = 0; c < space.candidate_count(); ++c) candidates.push_back(space.stimulus(c));
  const auto fitted = [&](HypothesisFamily family, double uncertainty = 1.0) {
    HypothesisSpec h = spec(family);
    h.params["parameter_uncertainty"] = uncertainty;
    auto twin = make_hypothesis(h, space, kUnits, options);
    twin->update(train.stimuli, train.counts);
    return twin;
  };
  auto direction = fitted(HypothesisFamily::kDirectionTuning);
  const PredictionBatch own = predict_all(*direction, candidates);
  const PredictionBatch null = predict_all(*fitted(HypothesisFamily::kNull), candidates);
  const PredictionBatch orientation =
      predict_all(*fitted(HypothesisFamily::kOrientationTuning), candidates);
  std::vector<double> differences(2 * cells);
  for (std::size_t i = 0; i < cells; ++i) {
    differences[i] = null.mean[i] - own.mean[i];
    differences[cells + i] = orientation.mean[i] - own.mean[i];
  }
  const std::vector<double> raw = differences;
  // Weighted as the check weighs them: over the prediction's variance, floored at 1/4.
  const auto norm = [&](std::span<const double> d) {
    double total = 0.0;
    for (std::size_t i = 0; i < cells; ++i) {
      total += d[i] * d[i] /
               std::max(own.at(i / kUnits, i % kUnits).variance(), kEncompassingVarianceFloor);
    }
    return total;
  };
  ASSERT_TRUE(direction->remove_own_directions(differences, 2));
  const std::span<const double> left(differences);
  EXPECT_GT(norm(std::span(raw).first(cells)), 10.0);
  EXPECT_EQ(norm(left.first(cells)), 0.0);  // the null: contained
  const double second_lobe = norm(std::span(raw).last(cells));
  EXPECT_GT(norm(left.last(cells)), 0.3 * second_lobe);
  EXPECT_LT(norm(left.last(cells)), second_lobe);
  std::vector<double> again(left.last(cells).begin(), left.last(cells).end());
  ASSERT_TRUE(direction->remove_own_directions(again, 1));
  // Up to the ridge that keeps the normal equations solvable (1e-6 of their scale).
  double moved = 0.0, size = 0.0;
  for (std::size_t i = 0; i < cells; ++i) {
    moved += std::abs(again[i] - left[cells + i]);
    size += std::abs(left[cells + i]);
  }
  EXPECT_LT(moved, 1e-4 * size);
  std::vector<double> unchanged = raw;
  EXPECT_FALSE(
      fitted(HypothesisFamily::kDirectionTuning, 0.0)->remove_own_directions(unchanged, 2));
  EXPECT_EQ(unchanged, raw);
}

StimulusSpace gratings_with_sf(std::size_t directions, const std::vector<double>& sfs) {
  StimulusSpace s = gratings(directions, {1.0});
  s.dimensions.push_back({"spatial_frequency", "cpd", sfs});
  s.candidate_values.clear();
  for (const double d : s.dimensions[0].values) {
    for (const double f : sfs) {
      s.candidate_values.insert(s.candidate_values.end(), {d, 1.0, f});
    }
  }
  return s;
}

TEST(SpatialFrequency, TunedFamiliesFindEachUnitsPreferredFrequency) {
  // Units tuned to direction and to spatial frequency (a Gaussian on log2 frequency, 0.6
  // octaves wide), preferences spread over the grid's middle three values.
  const std::vector<double> sfs = {0.01, 0.02, 0.04, 0.08, 0.16};
  const StimulusSpace space = gratings_with_sf(8, sfs);
  constexpr double kWindow = 0.5;
  constexpr std::size_t kUnits = 6;
  const TwinOptions options{.device = "cpu", .window_seconds = kWindow};
  struct SfUnit {
    double preferred_deg, preferred_sf;
    [[nodiscard]] double rate(const Stimulus& s) const {
      const double d = (s.value(0) - preferred_deg) * std::numbers::pi / 180.0;
      const double octaves = std::log2(s.value(2) / preferred_sf);
      return 3.0 + 30.0 * std::exp(2.0 * (std::cos(d) - 1.0)) *
                       std::exp(-octaves * octaves / (2.0 * 0.36));
    }
  };
  std::vector<SfUnit> truth;
  for (std::size_t u = 0; u < kUnits; ++u) {
    truth.push_back({45.0 * static_cast<double>(u), sfs[1 + u % 3]});
  }
  auto draw = [&](std::size_t repeats, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    Trials t;
    for (std::size_t r = 0; r < repeats; ++r) {
      for (std::size_t c = 0; c < space.candidate_count(); ++c) {
        t.stimuli.push_back(space.stimulus(c));
        for (const SfUnit& u : truth) {
          std::poisson_distribution<std::uint32_t> p(u.rate(t.stimuli.back()) * kWindow);
          t.counts.push_back(p(rng));
        }
      }
    }
    return t;
  };
  const Trials train = draw(4, 31);  // 160 trials
  const Trials test = draw(3, 32);
  auto tuned = make_hypothesis(spec(HypothesisFamily::kDirectionTuning), space, kUnits, options);
  tuned->update(train.stimuli, train.counts);
  // At each unit's preferred direction, the fitted curve over the grid peaks at its frequency.
  for (std::size_t u = 0; u < kUnits; ++u) {
    std::vector<Stimulus> probe;
    for (const double f : sfs) {
      Stimulus s;
      s.dimension_count = 3;
      s.values = {truth[u].preferred_deg, 1.0, f};
      probe.push_back(s);
    }
    const auto b = predict_all(*tuned, probe);
    std::size_t best = 0;
    for (std::size_t k = 1; k < sfs.size(); ++k) {
      if (b.at(k, u).mean > b.at(best, u).mean) best = k;
    }
    EXPECT_EQ(sfs[best], truth[u].preferred_sf) << "unit " << u;
    const double peak = truth[u].rate(probe[best]) * kWindow;
    EXPECT_NEAR(b.at(best, u).mean, peak, 0.25 * peak) << "unit " << u;
  }
  // Modelling the frequency pays on held-out trials: the same family on the same trials with
  // the frequency hidden from it (a space without that dimension) predicts worse.
  StimulusSpace blind = gratings(8, {1.0});
  auto untuned_sf =
      make_hypothesis(spec(HypothesisFamily::kDirectionTuning), blind, kUnits, options);
  auto without_sf = [](const Trials& t) {
    Trials out = t;
    for (Stimulus& s : out.stimuli) s.dimension_count = 2;
    return out;
  };
  const Trials blind_train = without_sf(train), blind_test = without_sf(test);
  untuned_sf->update(blind_train.stimuli, blind_train.counts);
  const double with = log_likelihood(*tuned, test, 0, kUnits);
  const double without = log_likelihood(*untuned_sf, blind_test, 0, kUnits);
  std::cout << "held-out log-likelihood: with the SF dimension " << with << ", without " << without
            << "\n";
  EXPECT_GT(with, without + 50.0);
}

// One fit covers every unit at once. With newton_iterations it reaches each unit's own optimum,
// the one the same family finds for that unit alone; the joint L-BFGS run alone (the default)
// stops short of it on most units. Compared on plug-in predictions (no Laplace draws, whose
// random numbers depend on the unit count) by each unit's log-likelihood of the trials.
TEST(SpatialFrequency, AFitOfManyUnitsReachesEachUnitsOwnOptimum) {
  const std::vector<double> sfs = {0.01, 0.02, 0.04, 0.08, 0.16};
  const StimulusSpace space = gratings_with_sf(16, sfs);
  constexpr double kWindow = 0.5;
  constexpr std::size_t kUnits = 64, kTrials = 60;
  const TwinOptions options{.device = "cpu", .window_seconds = kWindow};
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<double> unit01(0.0, 1.0);
  struct SfUnit {
    double preferred_rad, log2_sf, baseline, amplitude;
  };
  std::vector<SfUnit> truth;
  for (std::size_t u = 0; u < kUnits; ++u) {
    truth.push_back({2.0 * std::numbers::pi * unit01(rng), std::log2(0.02) + 2.0 * unit01(rng),
                     1.0 + 4.0 * unit01(rng), 5.0 + 15.0 * unit01(rng)});
  }
  Trials t;
  for (std::size_t i = 0; i < kTrials; ++i) {
    t.stimuli.push_back(space.stimulus(rng() % space.candidate_count()));
    const Stimulus& s = t.stimuli.back();
    for (const SfUnit& u : truth) {
      const double octaves = std::log2(s.value(2)) - u.log2_sf;
      const double rate =
          u.baseline +
          u.amplitude *
              std::exp(2.0 *
                       (std::cos(s.value(0) * std::numbers::pi / 180.0 - u.preferred_rad) - 1.0)) *
              std::exp(-octaves * octaves / (2.0 * 0.36));
      std::poisson_distribution<std::uint32_t> p(rate * kWindow);
      t.counts.push_back(p(rng));
    }
  }
  HypothesisSpec plug_in = spec(HypothesisFamily::kDirectionTuning);
  plug_in.params["parameter_uncertainty"] = 0.0;
  HypothesisSpec newton = plug_in;
  newton.params["newton_iterations"] = 20;
  // Each unit alone, and its log-likelihood of the trials.
  std::vector<double> alone(kUnits);
  Trials one;
  one.stimuli = t.stimuli;
  one.counts.resize(kTrials);
  for (std::size_t u = 0; u < kUnits; ++u) {
    for (std::size_t i = 0; i < kTrials; ++i) one.counts[i] = t.counts[i * kUnits + u];
    auto h = make_hypothesis(newton, space, 1, options);
    h->update(one.stimuli, one.counts);
    alone[u] = log_likelihood(*h, one, 0, 1);
  }
  // How much the joint fit loses against the units alone, in nats over all units, and on how
  // many units it loses more than half a nat.
  auto shortfall = [&](const HypothesisSpec& joint_spec) {
    auto h = make_hypothesis(joint_spec, space, kUnits, options);
    h->update(t.stimuli, t.counts);
    double total = 0.0;
    std::size_t behind = 0;
    for (std::size_t u = 0; u < kUnits; ++u) {
      const double gap = alone[u] - log_likelihood(*h, t, u, u + 1);
      total += std::max(gap, 0.0);
      behind += gap > 0.5 ? 1 : 0;
    }
    return std::pair{total, behind};
  };
  // The measure can tell: a joint run cut short, without Newton steps, falls behind on many
  // units; the same short run followed by Newton steps does not.
  HypothesisSpec short_run = plug_in;
  short_run.params["max_iterations"] = 20;
  HypothesisSpec short_run_newton = newton;
  short_run_newton.params["max_iterations"] = 20;
  const auto [cut, cut_behind] = shortfall(short_run);
  const auto [polished, polished_behind] = shortfall(short_run_newton);
  const auto [joint, joint_behind] = shortfall(plug_in);
  std::cout << "shortfall against each unit alone, nats (units behind by > 0.5 of " << kUnits
            << "): 20 L-BFGS iterations " << cut << " (" << cut_behind << "), then 20 Newton steps "
            << polished << " (" << polished_behind << "); 100 L-BFGS iterations " << joint << " ("
            << joint_behind << ")\n";
  EXPECT_GE(cut_behind, kUnits / 4);
  EXPECT_LE(polished_behind, 2U);
  EXPECT_LT(polished, 0.1 * kUnits);
}

TEST(SpatialFrequency, RefusesFrequenciesThatAreNotPositive) {
  const StimulusSpace space = gratings_with_sf(4, {0.0, 0.04});
  try {
    (void)make_hypothesis(spec(HypothesisFamily::kOrientationTuning, "ori"), space, 2, {});
    FAIL() << "a zero spatial frequency accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("spatial_frequency"), std::string::npos) << e.what();
  }
  auto bad_width = spec(HypothesisFamily::kDirectionTuning, "narrow");
  bad_width.params = {{"sf_sigma_octaves", 0.0}};
  EXPECT_THROW((void)make_hypothesis(bad_width, gratings_with_sf(4, {0.02, 0.04}), 2, {}),
               std::invalid_argument);
}

TEST(Families, PriorBeforeAnyTrialIsFiveHertz) {
  const auto space = gratings(8, {0.5, 1.0});
  const TwinOptions options{.device = "cpu", .window_seconds = 0.5};
  for (const auto family :
       {HypothesisFamily::kNull, HypothesisFamily::kLnp, HypothesisFamily::kDirectionTuning,
        HypothesisFamily::kOrientationTuning}) {
    auto h = make_hypothesis(spec(family, "prior"), space, 3, options);
    EXPECT_EQ(h->name(), "prior");
    EXPECT_EQ(h->unit_count(), 3U);
    h->update({}, {});  // no trials: still the prior
    std::vector<Stimulus> all;
    for (std::size_t c = 0; c < space.candidate_count(); ++c) all.push_back(space.stimulus(c));
    const auto b = predict_all(*h, all);
    for (std::size_t i = 0; i < b.mean.size(); ++i) {
      EXPECT_NEAR(b.mean[i], 2.5, 0.01) << h->family();
      EXPECT_EQ(b.dispersion[i], 0.0) << h->family();
    }
  }
}

TEST(Families, StatedTuningShapesThePrior) {
  const auto space = gratings(8, {1.0});
  auto h_spec = spec(HypothesisFamily::kDirectionTuning);
  h_spec.params = {{"preferred_deg", 90.0}, {"amplitude_hz", 20.0}, {"baseline_hz", 2.0}};
  auto h = make_hypothesis(h_spec, space, 1, {});
  const auto b = predict_all(*h, std::vector<Stimulus>{space.stimulus(2), space.stimulus(6)});
  EXPECT_GT(b.at(0, 0).mean, 15.0);  // 90 deg at full contrast
  EXPECT_LT(b.at(1, 0).mean, 3.0);   // 270 deg
}

/// One unit's Poisson counts, 40 trials of every candidate, with mean `mean_count(stimulus)`.
Trials every_candidate_40_times(const StimulusSpace& space,
                                const std::function<double(const Stimulus&)>& mean_count,
                                std::uint64_t seed) {
  Trials t;
  std::mt19937_64 rng(seed);
  for (int r = 0; r < 40; ++r) {
    for (std::size_t c = 0; c < space.candidate_count(); ++c) {
      const auto s = space.stimulus(c);
      t.stimuli.push_back(s);
      std::poisson_distribution<std::uint32_t> p(mean_count(s));
      t.counts.push_back(p(rng));
    }
  }
  return t;
}

TEST(Families, LnpFitsAnOptogeneticSpace) {
  const auto space = optogenetic();
  auto h = make_hypothesis(spec(HypothesisFamily::kLnp), space, 1, {});
  const Trials t = every_candidate_40_times(
      space, [](const Stimulus& s) { return 2.0 + 3.0 * s.value(0); }, 3);  // rises with power
  h->update(t.stimuli, t.counts);
  const auto b = predict_all(*h, std::vector<Stimulus>{space.stimulus(0), space.stimulus(6)});
  EXPECT_GT(b.at(1, 0).mean, 2.0 * b.at(0, 0).mean);
}

TEST(Families, LnpIgnoresTheDimensionsItIsToldTo) {
  const auto space = optogenetic();
  auto power_only_spec = spec(HypothesisFamily::kLnp, "power_only");
  power_only_spec.params = {{"ignore_duration_ms", 1.0}};
  auto power_only = make_hypothesis(power_only_spec, space, 1, {});
  auto both = make_hypothesis(spec(HypothesisFamily::kLnp, "both"), space, 1, {});
  const Trials t = every_candidate_40_times(
      space, [](const Stimulus& s) { return 1.0 + 0.2 * s.value(1); }, 5);  // rises with duration
  power_only->update(t.stimuli, t.counts);
  both->update(t.stimuli, t.counts);
  // Candidates 0 and 1: the same power, 10 and 50 ms (truth: 3 and 11 spikes).
  const std::vector<Stimulus> short_long{space.stimulus(0), space.stimulus(1)};
  const auto blind = predict_all(*power_only, short_long);
  EXPECT_NEAR(blind.at(0, 0).mean, blind.at(1, 0).mean, 1e-9);
  EXPECT_NEAR(blind.at(0, 0).mean, 7.0, 1.0);  // the mean over both durations
  const auto seeing = predict_all(*both, short_long);
  EXPECT_NEAR(seeing.at(0, 0).mean, 3.0, 1.0);
  EXPECT_NEAR(seeing.at(1, 0).mean, 11.0, 2.0);

  auto not_a_flag = spec(HypothesisFamily::kLnp, "half");
  not_a_flag.params = {{"ignore_duration_ms", 0.5}};
  EXPECT_THROW((void)make_hypothesis(not_a_flag, space, 1, {}), std::invalid_argument);
  auto no_such_dimension = spec(HypothesisFamily::kLnp, "typo");
  no_such_dimension.params = {{"ignore_pulse_ms", 1.0}};
  try {
    (void)make_hypothesis(no_such_dimension, space, 1, {});
    FAIL() << "ignore_ of a dimension the space lacks accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("ignore_pulse_ms"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ignore_duration_ms"), std::string::npos) << e.what();
  }
  auto blind_to_all = spec(HypothesisFamily::kLnp, "blind");
  blind_to_all.params = {{"ignore_duration_ms", 1.0}, {"ignore_amplitude_mw", 1.0}};
  try {
    (void)make_hypothesis(blind_to_all, space, 1, {});
    FAIL() << "an lnp with no features accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("null"), std::string::npos) << e.what();
  }
}

TEST(Families, RefusesWhatItCannotBuild) {
  const auto space = gratings(8, {1.0});
  auto bad = spec(static_cast<HypothesisFamily>(42), "mystery");
  try {
    (void)make_hypothesis(bad, space, 4, {});
    FAIL() << "unknown family accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("mystery"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("unknown family"), std::string::npos) << e.what();
  }

  auto script = spec(HypothesisFamily::kTorchScript, "net");
  EXPECT_THROW((void)make_hypothesis(script, space, 4, {}), std::invalid_argument);  // no path
  script.path = "/nonexistent/twin_model.pt";
  try {
    (void)make_hypothesis(script, space, 4, {});
    FAIL() << "missing TorchScript file accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/twin_model.pt"), std::string::npos)
        << e.what();
  }

  auto typo = spec(HypothesisFamily::kDirectionTuning, "typo");
  typo.params = {{"kapa", 2.0}};
  try {
    (void)make_hypothesis(typo, space, 4, {});
    FAIL() << "unknown parameter accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("kapa"), std::string::npos) << e.what();
  }

  // Direction and orientation tuning need a direction.
  EXPECT_THROW(
      (void)make_hypothesis(spec(HypothesisFamily::kDirectionTuning), optogenetic(), 4, {}),
      std::invalid_argument);
  try {
    (void)make_hypothesis(spec(HypothesisFamily::kOrientationTuning, "ori"), optogenetic(), 4, {});
    FAIL() << "orientation tuning without a direction accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("orientation_tuning"), std::string::npos) << e.what();
  }
  auto negative = spec(HypothesisFamily::kOrientationTuning, "neg");
  negative.params = {{"kappa", -1.0}};
  EXPECT_THROW((void)make_hypothesis(negative, space, 4, {}), std::invalid_argument);
  negative.params = {{"newton_iterations", -1.0}};
  try {
    (void)make_hypothesis(negative, space, 4, {});
    FAIL() << "negative newton_iterations accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("newton_iterations >= 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)make_hypothesis(spec(HypothesisFamily::kNull), space, 0, {}),
               std::invalid_argument);
}

TEST(Families, RefusesUnknownOrUnavailableDevices) {
  const auto space = gratings(8, {1.0});
  for (const std::string device : {"banana", "tpu:0", "cuda:-7x"}) {
    try {
      (void)make_hypothesis(spec(HypothesisFamily::kNull, "dev"), space, 4, {.device = device});
      FAIL() << device << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(device), std::string::npos) << e.what();
    }
  }
  try {
    (void)make_hypothesis(spec(HypothesisFamily::kLnp, "gpu"), space, 4, {.device = "cuda:0"});
    GTEST_SKIP() << "this LibTorch has a CUDA device: cuda:0 is legitimately accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not available"), std::string::npos) << e.what();
  }
}

TEST(Families, RefusesMisSizedBatchesAndCounts) {
  const auto space = gratings(8, {1.0});
  auto h = make_hypothesis(spec(HypothesisFamily::kLnp), space, 4, {});
  std::vector<Stimulus> two{space.stimulus(0), space.stimulus(1)};
  PredictionBatch b;
  b.resize(3, 4);
  EXPECT_THROW(h->predict(two, b), std::invalid_argument);
  std::vector<std::uint32_t> counts(7, 1);
  EXPECT_THROW(h->update(two, counts), std::invalid_argument);
}

// The designer's call: every candidate of a 1000-candidate space for 384 units. After a fit the
// predictions of the fixed candidate set are cached, so predict() copies rows.
// The designer's full problem size: every family predicts 1000 candidates x 384 units after a fit
// on 200 trials. How fast it does so is measured by tests/bench/bench_designer, not asserted here.
TEST(Families, PredictsAThousandCandidatesForEveryUnitAfterAFit) {
  const auto space = gratings(40, [] {
    std::vector<double> c;
    for (int i = 1; i <= 25; ++i) c.push_back(i / 25.0);
    return c;
  }());
  ASSERT_EQ(space.candidate_count(), 1000U);
  constexpr std::size_t kUnits = 384;
  std::vector<Unit> truth;
  for (std::size_t u = 0; u < kUnits; ++u) {
    truth.push_back({.baseline = 3.0, .amplitude = 10.0, .preferred_deg = 7.0 * u, .kappa = 2.0});
  }
  // A subset of the candidates: 200 trials.
  Trials t;
  const auto all = simulate(space, truth, 1, 1.0, 11);
  for (std::size_t i = 0; i < all.stimuli.size(); i += 5) {
    t.stimuli.push_back(all.stimuli[i]);
    t.counts.insert(t.counts.end(), all.counts.begin() + i * kUnits,
                    all.counts.begin() + (i + 1) * kUnits);
  }
  std::vector<Stimulus> candidates;
  for (std::size_t c = 0; c < space.candidate_count(); ++c) candidates.push_back(space.stimulus(c));

  for (const auto family : {HypothesisFamily::kDirectionTuning, HypothesisFamily::kLnp}) {
    auto h = make_hypothesis(spec(family), space, kUnits, {});
    h->update(t.stimuli, t.counts);
    PredictionBatch b;
    b.resize(candidates.size(), kUnits);
    h->predict(candidates, b);
    ASSERT_EQ(b.mean.size(), candidates.size() * kUnits) << h->family();
    EXPECT_TRUE(std::all_of(b.mean.begin(), b.mean.end(), [](double m) {
      return std::isfinite(m) && m > 0;
    })) << h->family();
    // The fit saw the tuning: unit 0 prefers 7 deg, so at full contrast it is predicted to fire
    // more at 9 deg (candidate 1 x 25 + 24) than at the opposite 189 deg (candidate 21 x 25 + 24).
    EXPECT_GT(b.at(49, 0).mean, b.at(549, 0).mean) << h->family();
  }
}

}  // namespace
}  // namespace twinloop::twin

// DiscriminateStrategy and stop rules: the Monte Carlo EIG against exact enumeration, the pairwise
// bounds bracketing it, the choice on constructed examples, allowed masks, the validation share
// and no heap allocation in decide(). This file holds the test binary's counting operator new.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "twinloop/designer/discriminate_strategy.hpp"
#include "twinloop/designer/stop_rules.hpp"
#include "twinloop/twin/count_distribution.hpp"

namespace twinloop::designer {
namespace {

using twin::PredictionBatch;

// Batches for K hypotheses from mean(k, c, u) and dispersion(k, c, u).
std::vector<PredictionBatch> make_batches(
    std::size_t k, std::size_t c, std::size_t u,
    const std::function<double(std::size_t, std::size_t, std::size_t)>& mean,
    const std::function<double(std::size_t, std::size_t, std::size_t)>& disp = nullptr) {
  std::vector<PredictionBatch> out(k);
  for (std::size_t h = 0; h < k; ++h) {
    out[h].resize(c, u);
    for (std::size_t i = 0; i < c; ++i) {
      for (std::size_t j = 0; j < u; ++j) {
        out[h].mean[i * u + j] = mean(h, i, j);
        out[h].dispersion[i * u + j] = disp ? disp(h, i, j) : 0.0;
      }
    }
  }
  return out;
}

// Exact I(H; Y) for one candidate by enumerating every joint count vector with each count up to
// `max_count` (chosen so that the left-out tail is < 1e-12).
double exact_eig(const std::vector<PredictionBatch>& b, const std::vector<double>& w,
                 std::size_t candidate, std::uint32_t max_count) {
  const std::size_t units = b[0].units;
  const std::size_t k = b.size();
  std::vector<std::uint32_t> y(units, 0);
  std::vector<double> lp(k);
  double eig = 0.0;
  while (true) {
    double mix = 0.0;
    for (std::size_t h = 0; h < k; ++h) {
      lp[h] = 0.0;
      for (std::size_t u = 0; u < units; ++u) {
        lp[h] += twin::log_probability(b[h].at(candidate, u), y[u]);
      }
      mix += w[h] * std::exp(lp[h]);
    }
    for (std::size_t h = 0; h < k; ++h) {
      if (w[h] > 0.0 && std::isfinite(lp[h])) {
        eig += w[h] * std::exp(lp[h]) * (lp[h] - std::log(mix));
      }
    }
    std::size_t u = 0;
    while (u < units && ++y[u] > max_count) y[u++] = 0;
    if (u == units) break;
  }
  return eig;
}

// std::vector<bool> has no contiguous storage: decide() takes a span of bool.
struct Mask {
  explicit Mask(std::size_t c, bool value = true) : flags(new bool[c]), size(c) {
    for (std::size_t i = 0; i < c; ++i) flags[i] = value;
  }
  std::unique_ptr<bool[]> flags;
  std::size_t size;
  std::span<const bool> span() const { return {flags.get(), size}; }
};

DiscriminateConfig precise(std::uint32_t samples = 40000) {
  DiscriminateConfig cfg;
  cfg.samples_per_hypothesis = samples;
  cfg.seed = 11;
  return cfg;
}

TEST(DiscriminateStrategy, MonteCarloMatchesExactOneUnitPoisson) {
  const std::vector<std::pair<double, double>> cases{{2.0, 5.0}, {0.5, 1.5}, {10.0, 14.0}};
  for (const auto& [m0, m1] : cases) {
    const auto b = make_batches(2, 1, 1, [&](auto h, auto, auto) { return h == 0 ? m0 : m1; });
    for (const std::vector<double>& w :
         {std::vector<double>{0.5, 0.5}, std::vector<double>{0.2, 0.8}}) {
      DiscriminateStrategy s(1, 1, 2, precise());
      const double exact = exact_eig(b, w, 0, 80);
      const double mc = s.estimate_eig(b, w, 0);
      EXPECT_NEAR(mc, exact, 0.02 * exact) << m0 << " vs " << m1 << ", w0 " << w[0];
      const Mask mask(1);
      const auto d = s.decide(b, w, mask.span());
      ASSERT_TRUE(d.has_value());
      EXPECT_LE(d->eig_lower, exact + 1e-6);
      EXPECT_GE(d->eig_upper, exact - 1e-6);
      EXPECT_NEAR(d->eig, exact, 0.02 * exact);
    }
  }
}

TEST(DiscriminateStrategy, MonteCarloMatchesExactTwoUnitsPoisson) {
  // Candidate 0: units disagree in opposite directions; candidate 1: weak difference.
  const double means[2][2][2] = {{{1.0, 3.0}, {4.0, 2.0}}, {{3.0, 3.0}, {3.5, 2.5}}};
  const auto b = make_batches(2, 2, 2, [&](auto h, auto c, auto u) { return means[c][h][u]; });
  const std::vector<double> w{0.4, 0.6};
  // Candidate 1's EIG is small (0.02 nats), so its relative Monte Carlo error needs more samples.
  DiscriminateStrategy s(2, 2, 2, precise(400000));
  for (std::uint32_t c = 0; c < 2; ++c) {
    const double exact = exact_eig(b, w, c, 45);
    EXPECT_NEAR(s.estimate_eig(b, w, c), exact, 0.02 * exact) << "candidate " << c;
  }
}

TEST(DiscriminateStrategy, MonteCarloMatchesExactNegativeBinomialAndThreeHypotheses) {
  const auto b = make_batches(
      3, 1, 2, [](auto h, auto, auto u) { return u == 0 ? 1.0 + 2.0 * h : 4.0 - h; },
      [](auto h, auto, auto u) { return u == 0 ? 0.3 * h : 0.5; });
  const std::vector<double> w{0.5, 0.3, 0.2};
  DiscriminateStrategy s(1, 2, 3, precise());
  const double exact = exact_eig(b, w, 0, 90);
  EXPECT_NEAR(s.estimate_eig(b, w, 0), exact, 0.02 * exact);
}

// One unit of a real session's predictions (a fitted direction twin against a null twin whose
// dispersion was rounding residue, 4.7e-17): the estimate once came out at -74 nats.
TEST(DiscriminateStrategy, ResidueDispersionDoesNotTurnTheEstimateNegative) {
  const auto b = make_batches(
      2, 1, 1, [](auto h, auto, auto) { return h == 0 ? 3.01756 : 2.66667; },
      [](auto h, auto, auto) { return h == 0 ? 0.064 : 4.68375e-17; });
  const std::vector<double> w{0.402, 0.598};
  DiscriminateStrategy s(1, 1, 2, precise());
  const double exact = exact_eig(b, w, 0, 90);
  EXPECT_GT(exact, 0.0);
  EXPECT_NEAR(s.estimate_eig(b, w, 0), exact, 0.02 * exact + 1e-4);
}

TEST(DiscriminateStrategy, BoundsBracketExactOnManyCandidates) {
  // 30 candidates, 2 units, 3 hypotheses with varied Poisson means.
  const auto b = make_batches(3, 30, 2, [](auto h, auto c, auto u) {
    return 0.3 + std::fmod(1.7 * static_cast<double>(c * 3 + h * 7 + u * 5), 9.0);
  });
  const std::vector<double> w{0.2, 0.5, 0.3};
  DiscriminateConfig cfg;
  cfg.top_m = 0;
  DiscriminateStrategy s(30, 2, 3, cfg);
  const Mask mask(30);
  ASSERT_TRUE(s.decide(b, w, mask.span()).has_value());
  for (std::uint32_t c = 0; c < 30; ++c) {
    const double exact = exact_eig(b, w, c, 40);
    EXPECT_LE(s.lower_bounds()[c], exact + 1e-4) << c;
    EXPECT_GE(s.upper_bounds()[c], exact - 1e-4) << c;
    EXPECT_LE(s.upper_bounds()[c],
              -(0.2 * std::log(0.2) + 0.5 * std::log(0.5) + 0.3 * std::log(0.3)) + 1e-9);
  }
}

TEST(DiscriminateStrategy, PicksTheCandidateWhereHypothesesDifferMost) {
  constexpr std::size_t kC = 50, kU = 40;
  // Hypotheses agree up to a small candidate-dependent difference, except on candidate 37.
  const auto b = make_batches(4, kC, kU, [](auto h, auto c, auto u) {
    const double base = 2.0 + static_cast<double>(u % 7);
    const double diff = c == 37 ? 0.6 : 0.02 * static_cast<double>(c % 5);
    return base * (1.0 + diff * static_cast<double>(h));
  });
  const std::vector<double> w{0.25, 0.25, 0.25, 0.25};
  const Mask mask(kC);
  for (std::uint32_t top_m : {0u, 1u, 4u}) {
    DiscriminateConfig cfg;
    cfg.top_m = top_m;
    DiscriminateStrategy s(kC, kU, 4, cfg);
    const auto d = s.decide(b, w, mask.span());
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->candidate, 37u) << "top_m " << top_m;
    EXPECT_FALSE(d->validation);
    EXPECT_LE(d->eig_lower, d->eig_upper);
  }
}

TEST(DiscriminateStrategy, IdenticalHypothesesGiveZeroEverywhere) {
  constexpr std::size_t kC = 12, kU = 20;
  const auto b = make_batches(3, kC, kU, [](auto, auto c, auto u) {
    return 0.1 + static_cast<double>((c * 7 + u * 3) % 11);
  });
  const std::vector<double> w{0.2, 0.3, 0.5};
  DiscriminateStrategy s(kC, kU, 3, precise(256));
  const Mask mask(kC);
  const auto d = s.decide(b, w, mask.span());
  ASSERT_TRUE(d.has_value());
  EXPECT_NEAR(d->eig, 0.0, 1e-9);
  for (std::uint32_t c = 0; c < kC; ++c) {
    EXPECT_NEAR(s.lower_bounds()[c], 0.0, 1e-9);
    EXPECT_NEAR(s.upper_bounds()[c], 0.0, 1e-9);
    EXPECT_NEAR(s.estimate_eig(b, w, c), 0.0, 1e-9);
  }
}

TEST(DiscriminateStrategy, DisallowedCandidatesAreNeverChosen) {
  constexpr std::size_t kC = 10, kU = 5;
  const auto b = make_batches(2, kC, kU, [](auto h, auto c, auto) {
    // EIG grows with c (unsaturated), so the best allowed candidate is 7.
    return 1.0 + 0.04 * static_cast<double>(h) * static_cast<double>(c);
  });
  const std::vector<double> w{0.5, 0.5};
  DiscriminateConfig cfg;
  cfg.validation_fraction = 0.5;
  DiscriminateStrategy s(kC, kU, 2, cfg);
  Mask mask(kC);
  mask.flags[9] = mask.flags[8] = mask.flags[2] = false;
  int seven = 0;
  for (int i = 0; i < 400; ++i) {
    const auto d = s.decide(b, w, mask.span());
    ASSERT_TRUE(d.has_value());
    EXPECT_TRUE(mask.flags[d->candidate]) << d->candidate;
    if (!d->validation) {
      // Monte Carlo (32 samples per hypothesis) ranks the top 4 by lower bound: 4..7 here.
      EXPECT_GE(d->candidate, 4u);
      seven += d->candidate == 7u ? 1 : 0;
    }
    EXPECT_TRUE(std::isnan(s.lower_bounds()[9]));
  }
  EXPECT_GT(seven, 100);
  DiscriminateConfig bounds_only;
  bounds_only.top_m = 0;
  DiscriminateStrategy exact_choice(kC, kU, 2, bounds_only);
  EXPECT_EQ(exact_choice.decide(b, w, mask.span())->candidate, 7u);
  const Mask none(kC, false);
  EXPECT_FALSE(s.decide(b, w, none.span()).has_value());
}

// Two strategies that share `seed` but not `draw_seed` make the same informed choices (the same
// Monte Carlo samples) and different validation draws: how a session's live and spare designers
// trade places without either choice depending on which one is live.
TEST(DiscriminateStrategy, DrawSeedChangesTheValidationDrawsOnly) {
  constexpr std::size_t kC = 12, kU = 5;
  const auto b = make_batches(2, kC, kU, [](auto h, auto c, auto u) {
    return 1.0 + 0.3 * static_cast<double>(u) +
           (h == 1 ? 0.2 * static_cast<double>((c * 7) % kC) : 0.0);
  });
  const std::vector<double> w{0.6, 0.4};
  const Mask mask(kC);
  DiscriminateConfig first;
  first.seed = 5;
  first.validation_fraction = 0.3;
  DiscriminateConfig second = first;
  second.draw_seed = 77;
  DiscriminateStrategy a(kC, kU, 2, first), b2(kC, kU, 2, second);
  int validation_differs = 0;
  for (int i = 0; i < 200; ++i) {
    const auto da = a.decide(b, w, mask.span());
    const auto db = b2.decide(b, w, mask.span());
    ASSERT_TRUE(da && db);
    validation_differs += da->validation != db->validation ? 1 : 0;
    if (!da->validation && !db->validation) {
      EXPECT_EQ(da->candidate, db->candidate);
      EXPECT_EQ(da->eig, db->eig);
    }
  }
  EXPECT_GT(validation_differs, 0);
}

TEST(DiscriminateStrategy, ValidationShareMatchesRequestedFraction) {
  constexpr std::size_t kC = 6, kU = 3;
  const auto b = make_batches(
      2, kC, kU, [](auto h, auto c, auto) { return 1.0 + static_cast<double>(h * c); });
  const std::vector<double> w{0.5, 0.5};
  const Mask mask(kC);
  for (double fraction : {0.1, 0.3}) {
    DiscriminateConfig cfg;
    cfg.validation_fraction = fraction;
    cfg.top_m = 0;
    cfg.seed = 99;
    DiscriminateStrategy s(kC, kU, 2, cfg);
    constexpr int kTrials = 20000;
    int validation = 0;
    std::vector<int> picks(kC, 0);
    for (int i = 0; i < kTrials; ++i) {
      const auto d = s.decide(b, w, mask.span());
      ASSERT_TRUE(d.has_value());
      if (d->validation) {
        ++validation;
        ++picks[d->candidate];
        EXPECT_TRUE(std::isnan(d->eig));
      }
    }
    const double sigma = std::sqrt(kTrials * fraction * (1.0 - fraction));
    EXPECT_NEAR(validation, kTrials * fraction, 5.0 * sigma);
    for (int n : picks) EXPECT_GT(n, validation / static_cast<int>(kC) / 2) << "uniform";
  }
  // Reproducible from the seed.
  DiscriminateConfig cfg;
  cfg.validation_fraction = 0.3;
  DiscriminateStrategy a(kC, kU, 2, cfg), c(kC, kU, 2, cfg);
  for (int i = 0; i < 200; ++i) {
    const auto x = a.decide(b, w, mask.span());
    const auto y = c.decide(b, w, mask.span());
    EXPECT_EQ(x->candidate, y->candidate);
    EXPECT_EQ(x->validation, y->validation);
  }
}

TEST(DiscriminateStrategy, DecideMakesNoHeapAllocation) {
  constexpr std::size_t kC = 64, kU = 50;
  const auto b = make_batches(
      4, kC, kU,
      [](auto h, auto c, auto u) {
        return 0.5 + static_cast<double>((c * 13 + u * 5 + h * 3) % 17);
      },
      [](auto h, auto, auto u) { return (h + u) % 3 == 0 ? 0.2 : 0.0; });
  const std::vector<double> w{0.1, 0.2, 0.3, 0.4};
  DiscriminateConfig cfg;
  cfg.validation_fraction = 0.3;
  DiscriminateStrategy s(kC, kU, 4, cfg);
  const Mask mask(kC);
  ASSERT_TRUE(s.decide(b, w, mask.span()).has_value());
  test_support::allocations = 0;
  test_support::count_allocations_on_this_thread = true;
  for (int i = 0; i < 50; ++i) {
    const auto d = s.decide(b, w, mask.span());
    if (!d) break;
  }
  test_support::count_allocations_on_this_thread = false;
  EXPECT_EQ(test_support::allocations.load(), 0u);
}

TEST(DiscriminateStrategy, StoredPredictionsMatchOneShotAndDoNotAllocate) {
  constexpr std::size_t kC = 40, kU = 30;
  const auto b = make_batches(
      3, kC, kU,
      [](auto h, auto c, auto u) {
        return 0.5 + static_cast<double>((c * 11 + u * 7 + h * 5) % 13);
      },
      [](auto h, auto, auto u) { return (h + u) % 4 == 0 ? 0.3 : 0.0; });
  const std::vector<double> w{0.5, 0.3, 0.2};
  const Mask mask(kC);
  DiscriminateStrategy one_shot(kC, kU, 3, DiscriminateConfig{});
  DiscriminateStrategy stored(kC, kU, 3, DiscriminateConfig{});
  EXPECT_FALSE(stored.decide(w, mask.span()).has_value()) << "no predictions yet";
  ASSERT_TRUE(stored.set_predictions(b));
  for (int i = 0; i < 5; ++i) {
    const auto x = one_shot.decide(b, w, mask.span());
    test_support::allocations = 0;
    test_support::count_allocations_on_this_thread = true;
    const auto y = stored.decide(w, mask.span());
    test_support::count_allocations_on_this_thread = false;
    EXPECT_EQ(test_support::allocations.load(), 0u);
    ASSERT_TRUE(x.has_value() && y.has_value());
    EXPECT_EQ(x->candidate, y->candidate);
    EXPECT_EQ(x->eig, y->eig);
    for (std::uint32_t c = 0; c < kC; ++c) {
      EXPECT_EQ(one_shot.lower_bounds()[c], stored.lower_bounds()[c]);
      EXPECT_EQ(one_shot.upper_bounds()[c], stored.upper_bounds()[c]);
    }
  }
  // One-shot decisions leave nothing stored; mismatched sizes are refused.
  EXPECT_TRUE(stored.decide(b, w, mask.span()).has_value());
  EXPECT_FALSE(stored.decide(w, mask.span()).has_value());
  const auto wrong = make_batches(3, kC, kU - 1, [](auto, auto, auto) { return 1.0; });
  EXPECT_FALSE(stored.set_predictions(wrong));
  test_support::allocations = 0;
  test_support::count_allocations_on_this_thread = true;
  const bool set = stored.set_predictions(b);
  test_support::count_allocations_on_this_thread = false;
  EXPECT_TRUE(set);
  EXPECT_EQ(test_support::allocations.load(), 0u);
  EXPECT_TRUE(stored.decide(w, mask.span()).has_value());
}

TEST(DiscriminateStrategy, MonteCarloTablesAreCachedUntilThePredictionsChange) {
  constexpr std::size_t kC = 30, kU = 25;
  const auto b = make_batches(
      3, kC, kU,
      [](auto h, auto c, auto u) {
        return 1.0 + static_cast<double>((c * 7 + u * 3) % 9) * (1.0 + 0.05 * h * (c % 4));
      },
      [](auto h, auto, auto u) { return (h + u) % 3 == 0 ? 0.2 : 0.0; });
  const std::vector<double> w1{0.5, 0.3, 0.2}, w2{0.2, 0.3, 0.5};
  const Mask mask(kC);
  for (bool prebuild : {true, false}) {
    DiscriminateConfig cfg;
    cfg.prebuild_tables = prebuild;
    DiscriminateStrategy s(kC, kU, 3, cfg);
    ASSERT_TRUE(s.set_predictions(b));
    EXPECT_EQ(s.tables_built(), 0u) << "no posterior seen yet: nothing to prebuild";
    test_support::allocations = 0;
    test_support::count_allocations_on_this_thread = true;
    const auto first = s.decide(w1, mask.span());
    const std::uint64_t built = s.tables_built();
    const auto again = s.decide(w1, mask.span());
    const std::uint64_t after_again = s.tables_built();
    const auto other = s.decide(w2, mask.span());
    const std::uint64_t before_set = s.tables_built();
    const bool set = s.set_predictions(b);
    const std::uint64_t after_set = s.tables_built();
    const auto refreshed = s.decide(w1, mask.span());
    test_support::count_allocations_on_this_thread = false;
    EXPECT_EQ(test_support::allocations.load(), 0u);
    ASSERT_TRUE(first && again && other && refreshed && set);
    EXPECT_GE(built, 1u);
    EXPECT_LE(built, 4u);
    EXPECT_EQ(after_again, built) << "same posterior, same predictions: every table cached";
    EXPECT_EQ(again->candidate, first->candidate);
    EXPECT_EQ(again->eig, first->eig);
    // New predictions (even equal ones) make the tables stale: rebuilt once, by set_predictions()
    // under the last posterior (w2) when prebuilding, else by the next decision.
    EXPECT_EQ(after_set > before_set, prebuild);
    if (!prebuild) {
      EXPECT_GT(s.tables_built(), after_set) << "stale tables were reused";
    }
    EXPECT_EQ(refreshed->candidate, first->candidate);
    EXPECT_EQ(refreshed->eig, first->eig);
    // A cached table serves any posterior: the same estimate as a table built afresh.
    EXPECT_DOUBLE_EQ(other->eig, s.estimate_eig(b, w2, other->candidate));
    EXPECT_DOUBLE_EQ(first->eig, s.estimate_eig(b, w1, first->candidate));
  }
}

TEST(DiscriminateStrategy, RefusesMismatchedInputsAndBadConfig) {
  const auto b = make_batches(2, 4, 3, [](auto h, auto, auto) { return 1.0 + h; });
  DiscriminateStrategy s(4, 3, 2, DiscriminateConfig{});
  const Mask mask(4), short_mask(3);
  EXPECT_FALSE(s.decide(b, std::vector<double>{1.0}, mask.span()).has_value());
  EXPECT_FALSE(s.decide(b, std::vector<double>{0.0, 0.0}, mask.span()).has_value());
  EXPECT_FALSE(s.decide(b, std::vector<double>{0.5, 0.5}, short_mask.span()).has_value());
  const auto wrong = make_batches(2, 4, 2, [](auto, auto, auto) { return 1.0; });
  EXPECT_FALSE(s.decide(wrong, std::vector<double>{0.5, 0.5}, mask.span()).has_value());
  // One hypothesis with all the weight: nothing to learn.
  const auto d = s.decide(b, std::vector<double>{1.0, 0.0}, mask.span());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->eig, 0.0);
  DiscriminateConfig bad;
  bad.validation_fraction = 1.0;
  EXPECT_THROW(DiscriminateStrategy(4, 3, 2, bad), std::invalid_argument);
  EXPECT_THROW(DiscriminateStrategy(0, 3, 2, DiscriminateConfig{}), std::invalid_argument);
}

TEST(StopRules, ReasonsInOrder) {
  protocols::StopRules rules;
  rules.posterior_threshold = 0.95;
  rules.max_trials = 100;
  rules.max_minutes = 30.0;
  const std::vector<double> open{0.5, 0.5}, decisive{0.01, 0.99};
  EXPECT_EQ(evaluate_stop(rules, {open, 10, 1.0, false}).reason, StopReason::kNone);
  EXPECT_FALSE(evaluate_stop(rules, {open, 10, 1.0, false}).stop());
  const auto p = evaluate_stop(rules, {decisive, 10, 1.0, false});
  EXPECT_EQ(p.reason, StopReason::kPosteriorThreshold);
  EXPECT_EQ(p.leading_hypothesis, 1u);
  EXPECT_NEAR(p.leading_posterior, 0.99, 1e-12);
  EXPECT_EQ(evaluate_stop(rules, {open, 100, 1.0, false}).reason, StopReason::kTrialBudget);
  EXPECT_EQ(evaluate_stop(rules, {open, 10, 30.0, false}).reason, StopReason::kTimeBudget);
  const auto op = evaluate_stop(rules, {decisive, 100, 31.0, true});
  EXPECT_EQ(op.reason, StopReason::kOperator);
  EXPECT_EQ(op.text, "stopped by the operator");
  // Unnormalised weights are normalised; NaN never triggers the threshold.
  EXPECT_EQ(evaluate_stop(rules, {std::vector<double>{1.0, 99.0}, 0, 0.0, false}).reason,
            StopReason::kPosteriorThreshold);
  EXPECT_EQ(evaluate_stop(rules, {std::vector<double>{NAN, 1.0}, 0, 0.0, false}).reason,
            StopReason::kNone);
  protocols::StopRules unlimited;
  unlimited.max_trials = 0;
  EXPECT_EQ(evaluate_stop(unlimited, {open, 1000000, 1e6, false}).reason, StopReason::kNone);
}

}  // namespace
}  // namespace twinloop::designer

// bench_designer: time DiscriminateStrategy decisions over 1000 candidates x 384 units x 4
// hypotheses, and the full path with the built-in twins (LibTorch forward passes), on one pinned
// core. Prints median and p99 of every stage and ratios against baselines measured in the same
// run (the machine may be shared and noisy: compare ratios, not absolute figures across runs).
//
// Part 1, designer on synthetic predictions (direction x contrast tuning curves, fixed seed):
//  - baseline: decide() with the bounds stage only (top_m 0), and the naive unfused bounds;
//  - warm decide(): top-4 Monte Carlo with the candidates' tables already cached (the common
//    case: the posterior moved, the predictions did not);
//  - cold decide(): the first decision after set_predictions(), which builds the Monte Carlo
//    tables of all its top candidates (the worst case of the decision path);
//  - quality: on predictions that differ little (EIG far from saturation), the regret of the
//    choice and the error of its EIG against a 64x longer Monte Carlo run.
// Part 2, full path: 4 built-in hypotheses (2 x direction_tuning, lnp, null) made by
// twin::make_hypothesis and refitted once to simulated trials, then: their forward passes over
// all candidates, predict() as the closed loop calls it, set_predictions(), cold and warm
// decide(), and the criticism scores (twin::score_criticism_candidates, for sessions with
// criticism trials). Forward passes, set_predictions() and the criticism scores run after a refit
// (between trials); only predict() (a copy of cached rows) and decide() run on every trial.
//
// Usage: bench_designer [decisions (default 2000)] [cold decisions (default 200)]
//                       [forward passes (default 20)] [cpu to pin to (default: current)]
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numbers>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "twinloop/designer/discriminate_strategy.hpp"
#include "twinloop/protocols/protocol.hpp"
#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/model_check.hpp"

namespace {

using twinloop::designer::Decision;
using twinloop::designer::DiscriminateConfig;
using twinloop::designer::DiscriminateStrategy;
using twinloop::twin::PredictionBatch;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kDirections = 40, kContrasts = 25;
constexpr std::size_t kCandidates = kDirections * kContrasts;  // 1000
constexpr std::size_t kUnits = 384;
constexpr std::size_t kHypotheses = 4;
constexpr double kGoalUs = 1000.0;

double direction_deg(std::size_t c) {
  return 360.0 * static_cast<double>(c / kContrasts) / static_cast<double>(kDirections);
}
double contrast(std::size_t c) {
  return 0.02 + 0.98 * static_cast<double>(c % kContrasts) / (kContrasts - 1);
}

struct Units {
  std::vector<double> preferred, kappa, baseline, gain, c50;
};

Units make_units(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> angle(0.0, 2.0 * std::numbers::pi);
  std::uniform_real_distribution<double> kappa(0.5, 4.0), base(0.2, 3.0), gain(2.0, 20.0),
      c50(0.1, 0.5);
  Units u;
  for (std::size_t i = 0; i < kUnits; ++i) {
    u.preferred.push_back(angle(rng));
    u.kappa.push_back(kappa(rng));
    u.baseline.push_back(base(rng));
    u.gain.push_back(gain(rng));
    u.c50.push_back(c50(rng));
  }
  return u;
}

// Stand-in forward pass: expected counts in a 1 s window. Hypotheses: 0 the reference tuning,
// 1 broader tuning (kappa / 2), 2 preferred direction shifted by 20 degrees, 3 untuned (contrast
// response only). `closeness` in [0, 1) pulls hypotheses 1-3 toward hypothesis 0 (0: as
// defined; 0.97: they differ by 3% of that), so that the EIG is far from saturation.
double stand_in_mean(const Units& units, std::size_t h, std::size_t c, std::size_t u) {
  const double theta = direction_deg(c) * std::numbers::pi / 180.0;
  const double kappa = h == 1 ? 0.5 * units.kappa[u] : units.kappa[u];
  const double shift = h == 2 ? 20.0 * std::numbers::pi / 180.0 : 0.0;
  const double tuning =
      h == 3 ? 0.3 : std::exp(kappa * (std::cos(theta - units.preferred[u] - shift) - 1.0));
  const double c2 = contrast(c) * contrast(c);
  const double drive = c2 / (c2 + units.c50[u] * units.c50[u]);
  return units.baseline[u] + units.gain[u] * tuning * drive;
}

void forward(const Units& units, std::vector<PredictionBatch>& out, double dispersion,
             double closeness) {
  for (std::size_t h = 0; h < kHypotheses; ++h) {
    for (std::size_t c = 0; c < kCandidates; ++c) {
      for (std::size_t u = 0; u < kUnits; ++u) {
        const double m = stand_in_mean(units, h, c, u);
        const double m0 = stand_in_mean(units, 0, c, u);
        out[h].mean[c * kUnits + u] = m0 + (1.0 - closeness) * (m - m0);
        out[h].dispersion[c * kUnits + u] = dispersion;
      }
    }
  }
}

// Baseline: the bounds computed the obvious way, one candidate, pair and unit at a time, in
// double with std::sqrt / std::log; chooses the largest lower bound.
std::uint32_t naive_decision(const std::vector<PredictionBatch>& b, std::span<const double> w,
                             std::vector<double>& lower, std::vector<double>& upper) {
  const std::size_t k = b.size();
  std::uint32_t best = 0;
  for (std::size_t c = 0; c < kCandidates; ++c) {
    double lb = 0.0, ub = 0.0;
    for (std::size_t i = 0; i < k; ++i) {
      double sb = 0.0, sk = 0.0;
      for (std::size_t j = 0; j < k; ++j) {
        double bd = 0.0, kl = 0.0;
        for (std::size_t u = 0; u < kUnits; ++u) {
          const double m1 = std::max(b[i].mean[c * kUnits + u], 1e-6);
          const double m2 = std::max(b[j].mean[c * kUnits + u], 1e-6);
          const double d = std::sqrt(m1) - std::sqrt(m2);
          bd += 0.5 * d * d;
          kl += m1 * std::log(m1 / m2) - m1 + m2;
        }
        sb += w[j] * std::exp(-bd);
        sk += w[j] * std::exp(-kl);
      }
      lb -= w[i] * std::log(sb);
      ub -= w[i] * std::log(sk);
    }
    lower[c] = lb;
    upper[c] = ub;
    if (lb > lower[best]) best = static_cast<std::uint32_t>(c);
  }
  return best;
}

struct Stats {
  double median_us = 0.0, p99_us = 0.0, max_us = 0.0;
  int n = 0;
};

Stats stats(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  const auto at = [&](double q) {
    return us[std::min(us.size() - 1,
                       static_cast<std::size_t>(q * static_cast<double>(us.size())))];
  };
  return {at(0.5), at(0.99), us.back(), static_cast<int>(us.size())};
}

double since_us(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

template <typename F>
Stats time_it(int reps, F&& f) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    us.push_back(since_us(t0));
  }
  return stats(us);
}

// Times only `timed` after an untimed `setup` each repetition.
template <typename S, typename F>
Stats time_after(int reps, S&& setup, F&& timed) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    setup();
    const auto t0 = Clock::now();
    timed();
    us.push_back(since_us(t0));
  }
  return stats(us);
}

void print(const char* name, const Stats& s) {
  std::printf("  %-50s median %9.1f us  p99 %9.1f us  max %9.1f us  (n=%d)\n", name, s.median_us,
              s.p99_us, s.max_us, s.n);
}

void print_ratio(const char* name, const Stats& s, const Stats& base, const char* base_name) {
  std::printf("  %-50s median %6.2fx  p99 %6.2fx  of %s\n", name, s.median_us / base.median_us,
              s.p99_us / base.p99_us, base_name);
}

std::span<const bool> mask_span(const std::unique_ptr<bool[]>& m) {
  return {m.get(), kCandidates};
}

// Posteriors cycled decision by decision (the posterior changes after every trial).
const std::vector<std::vector<double>> kPosteriors{{0.4, 0.3, 0.2, 0.1},
                                                   {0.25, 0.25, 0.25, 0.25},
                                                   {0.7, 0.1, 0.1, 0.1},
                                                   {0.05, 0.05, 0.45, 0.45},
                                                   {0.5, 0.5, 0.0, 0.0}};

struct DecisionTimes {
  Stats warm, cold;
};

// Warm: cycled posteriors on stored predictions (tables cached after the first rounds).
// Cold: set_predictions() (untimed), then one timed decide().
DecisionTimes time_decisions(DiscriminateStrategy& s, const std::vector<PredictionBatch>& preds,
                             std::span<const bool> allowed, int decisions, int cold_reps) {
  std::size_t turn = 0;
  std::uint32_t sink = 0;
  auto decide = [&] {
    const auto d = s.decide(kPosteriors[turn++ % kPosteriors.size()], allowed);
    sink += d ? d->candidate : 0u;
  };
  (void)s.set_predictions(preds);
  for (int i = 0; i < 20; ++i) decide();
  DecisionTimes t;
  t.warm = time_it(decisions, decide);
  t.cold = time_after(
      cold_reps, [&] { (void)s.set_predictions(preds); }, decide);
  if (sink == 0xffffffffu) std::printf(" ");
  return t;
}

// Quality on one prediction set: for each posterior, the candidates that can be the argmax (upper
// bound >= best lower bound, at most `cap` by lower bound) get a reference EIG from a strategy
// with 64x the samples; reported: the regret of the choice (reference EIG of the best minus that
// of the chosen) and the error of the chosen candidate's EIG against its reference.
void quality(const char* label, const std::vector<PredictionBatch>& preds,
             std::span<const bool> allowed, const DiscriminateConfig& cfg) {
  DiscriminateStrategy s(kCandidates, kUnits, kHypotheses, cfg);
  DiscriminateConfig ref_cfg = cfg;
  ref_cfg.samples_per_hypothesis = cfg.samples_per_hypothesis * 64;
  ref_cfg.seed = cfg.seed + 1000;
  DiscriminateStrategy ref(kCandidates, kUnits, kHypotheses, ref_cfg);
  DiscriminateConfig bounds_cfg = cfg;
  bounds_cfg.top_m = 0;
  DiscriminateStrategy bounds(kCandidates, kUnits, kHypotheses, bounds_cfg);
  (void)s.set_predictions(preds);
  (void)bounds.set_predictions(preds);
  constexpr std::size_t kCap = 40;
  double worst_regret = 0.0, sum_regret = 0.0, worst_err = 0.0, bounds_regret = 0.0;
  double eig_lo = 1e9, eig_hi = 0.0;
  for (const auto& w : kPosteriors) {
    const auto d = s.decide(w, allowed);
    const auto b = bounds.decide(w, allowed);
    std::vector<std::uint32_t> order;
    double best_lower = -1.0;
    for (std::uint32_t c = 0; c < kCandidates; ++c) {
      if (allowed[c]) best_lower = std::max(best_lower, bounds.lower_bounds()[c]);
    }
    for (std::uint32_t c = 0; c < kCandidates; ++c) {
      if (allowed[c] && bounds.upper_bounds()[c] >= best_lower) order.push_back(c);
    }
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b2) {
      return bounds.lower_bounds()[a] > bounds.lower_bounds()[b2];
    });
    if (order.size() > kCap) order.resize(kCap);
    if (std::find(order.begin(), order.end(), d->candidate) == order.end()) {
      order.push_back(d->candidate);
    }
    double best = -1.0, chosen = 0.0, for_bounds = -1.0;
    for (const std::uint32_t c : order) {
      const double e = ref.estimate_eig(preds, w, c);
      best = std::max(best, e);
      if (c == d->candidate) chosen = e;
      if (c == b->candidate) for_bounds = e;
    }
    if (for_bounds < 0.0) for_bounds = ref.estimate_eig(preds, w, b->candidate);
    eig_lo = std::min(eig_lo, best);
    eig_hi = std::max(eig_hi, best);
    worst_regret = std::max(worst_regret, (best - chosen) / best);
    sum_regret += (best - chosen) / best;
    worst_err = std::max(worst_err, std::abs(d->eig - chosen) / chosen);
    bounds_regret = std::max(bounds_regret, (best - for_bounds) / best);
  }
  std::printf(
      "  %s: best EIG %.3f-%.3f nats over %zu posteriors; top-%u MC choice regret mean %.2f%%, "
      "worst %.2f%%; its EIG error worst %.2f%%; bounds-only choice regret worst %.2f%%\n",
      label, eig_lo, eig_hi, kPosteriors.size(), cfg.top_m,
      100.0 * sum_regret / static_cast<double>(kPosteriors.size()), 100.0 * worst_regret,
      100.0 * worst_err, 100.0 * bounds_regret);
}

#ifndef TWINLOOP_BENCH_DESIGNER_ONLY  // defined for a LibTorch-free build of Part 1 alone
twinloop::protocols::StimulusSpace make_space() {
  twinloop::protocols::StimulusSpace space;
  twinloop::protocols::StimulusDimension dir{"direction", "deg", {}};
  twinloop::protocols::StimulusDimension con{"contrast", "fraction", {}};
  for (std::size_t i = 0; i < kDirections; ++i) dir.values.push_back(direction_deg(i * kContrasts));
  for (std::size_t i = 0; i < kContrasts; ++i) con.values.push_back(contrast(i));
  space.dimensions = {dir, con};
  for (std::size_t c = 0; c < kCandidates; ++c) {
    space.candidate_values.push_back(direction_deg(c));
    space.candidate_values.push_back(contrast(c));
  }
  return space;
}

void part_two(const Units& units, std::span<const bool> allowed, int decisions, int cold_reps,
              int forward_reps) {
  using twinloop::protocols::HypothesisFamily;
  using twinloop::protocols::HypothesisSpec;
  std::printf("\nPart 2: full path with the built-in twins (LibTorch, CPU, 1 thread)\n");
  const auto space = make_space();
  std::vector<HypothesisSpec> specs{
      {"tuned", HypothesisFamily::kDirectionTuning, std::nullopt, {}},
      {"tuned_poisson", HypothesisFamily::kDirectionTuning, std::nullopt, {{"poisson", 1.0}}},
      {"lnp", HypothesisFamily::kLnp, std::nullopt, {}},
      {"null", HypothesisFamily::kNull, std::nullopt, {}}};
  twinloop::twin::TwinOptions options;
  std::vector<std::unique_ptr<twinloop::twin::Hypothesis>> twins;
  for (const auto& spec : specs) {
    twins.push_back(twinloop::twin::make_hypothesis(spec, space, kUnits, options));
  }
  // Simulated session so far: 2 trials per direction at random contrasts, Poisson counts from
  // the stand-in reference tuning.
  std::mt19937_64 rng(77);
  std::vector<twinloop::protocols::Stimulus> trials;
  std::vector<std::uint32_t> counts;
  for (std::size_t r = 0; r < 2; ++r) {
    for (std::size_t d = 0; d < kDirections; ++d) {
      const std::size_t c = d * kContrasts + rng() % kContrasts;
      trials.push_back(space.stimulus(c));
      for (std::size_t u = 0; u < kUnits; ++u) {
        std::poisson_distribution<std::uint32_t> pd(stand_in_mean(units, 0, c, u));
        counts.push_back(pd(rng));
      }
    }
  }
  std::printf("  refit (update(), %zu trials) per hypothesis, once:", trials.size());
  for (std::size_t h = 0; h < twins.size(); ++h) {
    const auto t0 = Clock::now();
    twins[h]->update(trials, counts);
    std::printf(" %s %.0f ms%s", specs[h].name.c_str(), since_us(t0) / 1000.0,
                h + 1 < twins.size() ? "," : "\n");
  }
  std::vector<twinloop::protocols::Stimulus> candidates, uncached;
  for (std::size_t c = 0; c < kCandidates; ++c) {
    candidates.push_back(space.stimulus(c));
    // Same values, an index no candidate has: predict() evaluates the model instead of copying
    // the rows it cached after the refit. That evaluation is the forward pass, as a refit runs
    // it over all candidates.
    uncached.push_back(space.stimulus(c));
    uncached.back().candidate = static_cast<std::uint32_t>(kCandidates + c);
  }
  std::vector<PredictionBatch> preds(kHypotheses);
  for (auto& b : preds) b.resize(kCandidates, kUnits);
  std::vector<Stats> fwd;
  for (std::size_t h = 0; h < twins.size(); ++h) {
    fwd.push_back(time_it(forward_reps, [&] { twins[h]->predict(uncached, preds[h]); }));
  }
  const Stats fwd_all = time_it(forward_reps, [&] {
    for (std::size_t h = 0; h < twins.size(); ++h) twins[h]->predict(uncached, preds[h]);
  });
  const Stats cached = time_it(forward_reps * 5, [&] {
    for (std::size_t h = 0; h < twins.size(); ++h) twins[h]->predict(candidates, preds[h]);
  });
  DiscriminateStrategy s(kCandidates, kUnits, kHypotheses, DiscriminateConfig{});
  DiscriminateConfig no_prebuild;
  no_prebuild.prebuild_tables = false;
  DiscriminateStrategy sn(kCandidates, kUnits, kHypotheses, no_prebuild);
  const DecisionTimes dt = time_decisions(s, preds, allowed, decisions, cold_reps);
  const DecisionTimes dtn = time_decisions(sn, preds, allowed, decisions / 4, cold_reps);
  const Stats set = time_it(forward_reps * 5, [&] { (void)s.set_predictions(preds); });
  std::vector<double> criticism(kHypotheses * (kHypotheses - 1) * kCandidates);
  const Stats criticism_scores =
      time_it(forward_reps, [&] { twinloop::twin::score_criticism_candidates(preds, criticism); });

  // The encompassing test's directions (Hypothesis::remove_own_directions), per twin, as the
  // closed loop computes them after each refit: every rival's difference, this twin's own
  // directions removed (the null's one, the others' from their Laplace draws).
  std::vector<Stats> directions;
  std::vector<double> differences((kHypotheses - 1) * kCandidates * kUnits);
  for (std::size_t h = 0; h < twins.size(); ++h) {
    directions.push_back(time_it(std::max(forward_reps / 4, 3), [&] {
      for (std::size_t r = 0; r + 1 < kHypotheses; ++r) {
        const PredictionBatch& rival = preds[twinloop::twin::rival_hypothesis(h, r)];
        for (std::size_t i = 0; i < kCandidates * kUnits; ++i) {
          differences[r * kCandidates * kUnits + i] = rival.mean[i] - preds[h].mean[i];
        }
      }
      (void)twins[h]->remove_own_directions(differences, kHypotheses - 1);
    }));
  }

  std::printf("  after a refit (between trials, not per decision):\n");
  for (std::size_t h = 0; h < twins.size(); ++h) {
    const std::string name = "forward pass " + specs[h].name + " (1000 x 384)";
    print(name.c_str(), fwd[h]);
  }
  print("forward passes, all 4", fwd_all);
  print("set_predictions() (with table prebuild)", set);
  print("decide(), cold (first after set_predictions)", dt.cold);
  print("decide(), cold, no table prebuild (worst case)", dtn.cold);
  print("criticism scores, 12 rows (criticism sessions)", criticism_scores);
  for (std::size_t h = 0; h < twins.size(); ++h) {
    const std::string name = "encompassing directions " + specs[h].name + " (3 rivals)";
    print(name.c_str(), directions[h]);
  }
  std::printf("  every trial:\n");
  print("predict() x 4 of cached rows (closed loop's copy)", cached);
  print("decide(), warm", dt.warm);
  const double refit_med = fwd_all.median_us + set.median_us + dt.cold.median_us;
  const double refit_p99 = fwd_all.p99_us + set.p99_us + dt.cold.p99_us;
  std::printf(
      "  total after a refit (forward + set_predictions + cold decide, sums): median %.1f us, "
      "p99 %.1f us: %s (%.1fx the %.0f us goal)\n",
      refit_med, refit_p99, refit_p99 < kGoalUs ? "meets 1 ms" : "misses 1 ms", refit_p99 / kGoalUs,
      kGoalUs);
  const double trial_med = cached.median_us + dt.warm.median_us;
  const double trial_p99 = cached.p99_us + dt.warm.p99_us;
  std::printf(
      "  total per trial (predict() copies + warm decide, sums): median %.1f us, p99 %.1f us: "
      "%s; decide() alone p99 %.1f us\n",
      trial_med, trial_p99, trial_p99 < kGoalUs ? "meets 1 ms" : "misses 1 ms", dt.warm.p99_us);
  std::printf(
      "  shares of the refit median: forward %.0f%%, set_predictions %.0f%%, decide %.0f%%\n",
      100.0 * fwd_all.median_us / refit_med, 100.0 * set.median_us / refit_med,
      100.0 * dt.cold.median_us / refit_med);
}

#endif

}  // namespace

int main(int argc, char** argv) {
  const int decisions = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2000;
  const int cold_reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 200;
  const int forward_reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 20;
  // One core: pin this thread (and LibTorch's intra-op pool, which takes its size from the
  // affinity mask and OMP_NUM_THREADS when it first starts) to one CPU.
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("MKL_NUM_THREADS", "1", 1);
  const int cpu = argc > 4 ? std::atoi(argv[4]) : sched_getcpu();
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const bool pinned = sched_setaffinity(0, sizeof(set), &set) == 0;
  std::printf("bench_designer: %zu candidates x %zu units x %zu hypotheses, one thread%s%d\n",
              kCandidates, kUnits, kHypotheses, pinned ? " pinned to cpu " : " (not pinned) cpu ",
              cpu);

  const Units units = make_units(20240611);
  std::vector<PredictionBatch> poisson(kHypotheses), nb(kHypotheses), subtle(kHypotheses),
      subtle_nb(kHypotheses);
  for (auto* set_of : {&poisson, &nb, &subtle, &subtle_nb}) {
    for (auto& b : *set_of) b.resize(kCandidates, kUnits);
  }
  const Stats fwd = time_it(5, [&] { forward(units, poisson, 0.0, 0.0); });
  forward(units, nb, 0.1, 0.0);
  forward(units, subtle, 0.0, 0.97);
  forward(units, subtle_nb, 0.1, 0.97);

  std::unique_ptr<bool[]> allowed(new bool[kCandidates]);
  for (std::size_t c = 0; c < kCandidates; ++c) allowed[c] = c % 50 != 7;  // a few exhausted
  const auto allowed_span = mask_span(allowed);

  DiscriminateConfig top4;  // defaults: top_m 4, 32 samples per hypothesis
  DiscriminateConfig top8;
  top8.top_m = 8;
  DiscriminateConfig bounds_only;
  bounds_only.top_m = 0;
  DiscriminateConfig no_prebuild;
  no_prebuild.prebuild_tables = false;
  DiscriminateStrategy s4n(kCandidates, kUnits, kHypotheses, no_prebuild);
  DiscriminateStrategy s4(kCandidates, kUnits, kHypotheses, top4);
  DiscriminateStrategy s8(kCandidates, kUnits, kHypotheses, top8);
  DiscriminateStrategy sb(kCandidates, kUnits, kHypotheses, bounds_only);

  const DecisionTimes b_p = time_decisions(sb, poisson, allowed_span, decisions, 20);
  const DecisionTimes p4 = time_decisions(s4, poisson, allowed_span, decisions, cold_reps);
  const DecisionTimes n4 = time_decisions(s4, nb, allowed_span, decisions, cold_reps);
  const DecisionTimes sp4 = time_decisions(s4, subtle, allowed_span, decisions, cold_reps);
  const DecisionTimes sn4 = time_decisions(s4, subtle_nb, allowed_span, decisions, cold_reps);
  const DecisionTimes pn4 = time_decisions(s4n, poisson, allowed_span, decisions, cold_reps);
  const DecisionTimes snn4 = time_decisions(s4n, subtle_nb, allowed_span, decisions, cold_reps);
  // set_predictions() after decisions: with the table prebuild (s4) and without (s4n).
  const int set_reps = std::max(20, cold_reps / 4);
  const Stats t_set = time_it(set_reps, [&] { (void)s4.set_predictions(subtle_nb); });
  const Stats t_set_n = time_it(set_reps, [&] { (void)s4n.set_predictions(subtle_nb); });
  const DecisionTimes sn8 = time_decisions(s8, subtle_nb, allowed_span, decisions, cold_reps);
  const DecisionTimes b_sn = time_decisions(sb, subtle_nb, allowed_span, decisions, 20);
  const double w0[] = {0.4, 0.3, 0.2, 0.1};
  const Stats one_shot = time_it(std::max(10, cold_reps / 10), [&] {
    (void)s4.decide(subtle_nb, std::span<const double>(w0), allowed_span);
  });
  std::vector<double> lower(kCandidates), upper(kCandidates);
  const Stats naive = time_it(3, [&] { naive_decision(poisson, w0, lower, upper); });
  (void)sb.set_predictions(poisson);
  (void)sb.decide(w0, allowed_span);
  double max_dev = 0.0;
  for (std::size_t c = 0; c < kCandidates; ++c) {
    if (!allowed[c]) continue;
    max_dev = std::max(max_dev, std::abs(lower[c] - sb.lower_bounds()[c]));
    max_dev = std::max(max_dev, std::abs(upper[c] - sb.upper_bounds()[c]));
  }

  std::printf("\nPart 1: designer on synthetic predictions (posterior cycled over %zu)\n",
              kPosteriors.size());
  print("stand-in forward (4 x 1000 x 384, plain C++)", fwd);
  print("set_predictions(), subtle NB, with table prebuild", t_set);
  print("set_predictions(), subtle NB, no prebuild", t_set_n);
  print("baseline: decide() bounds only, Poisson", b_p.warm);
  print("baseline: decide() bounds only, subtle NB", b_sn.warm);
  print("baseline: naive unfused bounds (double)", naive);
  print("decide() top-4 MC, Poisson, warm", p4.warm);
  print("decide() top-4 MC, Poisson, cold (prebuilt)", p4.cold);
  print("decide() top-4 MC, Poisson, cold, no prebuild", pn4.cold);
  print("decide() top-4 MC, NB 0.1, warm", n4.warm);
  print("decide() top-4 MC, NB 0.1, cold (prebuilt)", n4.cold);
  print("decide() top-4 MC, subtle Poisson, warm", sp4.warm);
  print("decide() top-4 MC, subtle Poisson, cold (prebuilt)", sp4.cold);
  print("decide() top-4 MC, subtle NB, warm", sn4.warm);
  print("decide() top-4 MC, subtle NB, cold (prebuilt)", sn4.cold);
  print("decide() top-4 MC, subtle NB, cold, no prebuild", snn4.cold);
  print("decide() top-8 MC, subtle NB, warm", sn8.warm);
  print("decide() top-8 MC, subtle NB, cold (prebuilt)", sn8.cold);
  print("one-shot decide(predictions, w, allowed), subtle NB", one_shot);
  std::printf("  ratios against the bounds-only decision of the same predictions:\n");
  print_ratio("top-4 warm, Poisson", p4.warm, b_p.warm, "bounds only");
  print_ratio("top-4 cold, Poisson", p4.cold, b_p.warm, "bounds only");
  print_ratio("top-4 warm, subtle NB", sn4.warm, b_sn.warm, "bounds only");
  print_ratio("top-4 cold, subtle NB", sn4.cold, b_sn.warm, "bounds only");
  print_ratio("top-4 cold no prebuild, subtle NB", snn4.cold, b_sn.warm, "bounds only");
  print_ratio("top-8 cold, subtle NB", sn8.cold, b_sn.warm, "bounds only");
  print_ratio("naive unfused bounds", naive, b_p.warm, "bounds only");
  std::printf("  max |bound(float fused) - bound(naive double)|: %.2e nats\n", max_dev);
  quality("subtle Poisson", subtle, allowed_span, top4);
  quality("subtle NB", subtle_nb, allowed_span, top4);
  const double worst = std::max({p4.cold.p99_us, n4.cold.p99_us, sp4.cold.p99_us, sn4.cold.p99_us,
                                 p4.warm.p99_us, n4.warm.p99_us, sp4.warm.p99_us, sn4.warm.p99_us});
  std::printf("  goal p99 < %.0f us for decide() top-4 MC (worst of warm and cold: %.1f us): %s\n",
              kGoalUs, worst, worst < kGoalUs ? "met" : "NOT met");

#ifndef TWINLOOP_BENCH_DESIGNER_ONLY
  part_two(units, allowed_span, decisions, cold_reps, forward_reps);
#else
  std::printf("\nPart 2 not built (TWINLOOP_BENCH_DESIGNER_ONLY): %d forward passes skipped\n",
              forward_reps);
#endif
  return 0;
}

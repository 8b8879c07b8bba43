// bench_designer: time one DiscriminateStrategy decision over 1000 candidates x 384 units x 4
// hypotheses on synthetic, realistic predictions (direction x contrast tuning curves, fixed
// seed), against a naive unfused per-candidate baseline measured in the same run, and separately
// a stand-in forward pass (von Mises direction tuning x Naka-Rushton contrast response for all
// candidates x units x hypotheses) in place of the built-in twins. Prints median and p99.
//
// The decision path proper is decide(posterior, allowed) on predictions stored once by
// set_predictions() (timed separately: the per-update cost); the one-shot
// decide(predictions, posterior, allowed) is the in-run baseline.
//
// Usage: bench_designer [decisions (default 2000)] [one-shot baseline decisions (default 1000)]
//                       [naive baseline repetitions (default 20)]
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
#include <vector>

#include "twinloop/designer/discriminate_strategy.hpp"

namespace {

using twinloop::designer::DiscriminateConfig;
using twinloop::designer::DiscriminateStrategy;
using twinloop::twin::PredictionBatch;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kDirections = 40, kContrasts = 25;
constexpr std::size_t kCandidates = kDirections * kContrasts;  // 1000
constexpr std::size_t kUnits = 384;
constexpr std::size_t kHypotheses = 4;

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
// response only, same mean drive).
void forward(const Units& units, std::vector<PredictionBatch>& out, double dispersion) {
  for (std::size_t h = 0; h < kHypotheses; ++h) {
    PredictionBatch& b = out[h];
    for (std::size_t c = 0; c < kCandidates; ++c) {
      const double theta = 2.0 * std::numbers::pi * static_cast<double>(c / kContrasts) /
                           static_cast<double>(kDirections);
      const double contrast = 0.02 + 0.98 * static_cast<double>(c % kContrasts) / (kContrasts - 1);
      double* mean = b.mean.data() + c * kUnits;
      double* disp = b.dispersion.data() + c * kUnits;
      for (std::size_t u = 0; u < kUnits; ++u) {
        const double kappa = h == 1 ? 0.5 * units.kappa[u] : units.kappa[u];
        const double shift = h == 2 ? 20.0 * std::numbers::pi / 180.0 : 0.0;
        const double tuning =
            h == 3 ? 0.3 : std::exp(kappa * (std::cos(theta - units.preferred[u] - shift) - 1.0));
        const double c2 = contrast * contrast;
        const double drive = c2 / (c2 + units.c50[u] * units.c50[u]);
        mean[u] = units.baseline[u] + units.gain[u] * tuning * drive;
        disp[u] = dispersion;
      }
    }
  }
}

// Baseline: the same bounds computed the obvious way, one candidate at a time, one pair at a
// time, one unit at a time, in double with std::sqrt / std::log; chooses the largest lower bound.
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
  double median_us, p99_us, max_us;
};

Stats stats(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  const auto at = [&](double q) {
    return us[std::min(us.size() - 1,
                       static_cast<std::size_t>(q * static_cast<double>(us.size())))];
  };
  return {at(0.5), at(0.99), us.back()};
}

template <typename F>
Stats time_it(int reps, F&& f) {
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    f();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return stats(us);
}

void print(const char* name, const Stats& s, int reps) {
  std::printf("%-44s median %9.1f us   p99 %9.1f us   max %9.1f us   (n=%d)\n", name, s.median_us,
              s.p99_us, s.max_us, reps);
}

}  // namespace

int main(int argc, char** argv) {
  const int decisions = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2000;
  const int old_reps = argc > 2 ? std::max(1, std::atoi(argv[2])) : 1000;
  const int naive_reps = argc > 3 ? std::max(1, std::atoi(argv[3])) : 20;
  std::printf("bench_designer: %zu candidates x %zu units x %zu hypotheses, one thread\n",
              kCandidates, kUnits, kHypotheses);

  const Units units = make_units(20240611);
  std::vector<PredictionBatch> poisson(kHypotheses), nb(kHypotheses);
  for (auto& b : poisson) b.resize(kCandidates, kUnits);
  for (auto& b : nb) b.resize(kCandidates, kUnits);
  forward(units, nb, 0.1);
  const int fwd_reps = std::max(20, decisions / 20);
  const Stats fwd = time_it(fwd_reps, [&] { forward(units, poisson, 0.0); });

  // Posteriors cycled through decision by decision (the posterior changes after every trial).
  const std::vector<std::vector<double>> posteriors{{0.4, 0.3, 0.2, 0.1},
                                                    {0.25, 0.25, 0.25, 0.25},
                                                    {0.7, 0.1, 0.1, 0.1},
                                                    {0.05, 0.05, 0.45, 0.45},
                                                    {0.5, 0.5, 0.0, 0.0}};
  const std::vector<double>& w = posteriors[0];
  std::unique_ptr<bool[]> allowed(new bool[kCandidates]);
  for (std::size_t c = 0; c < kCandidates; ++c) allowed[c] = c % 50 != 7;  // a few exhausted
  const std::span<const bool> allowed_span(allowed.get(), kCandidates);

  DiscriminateConfig full;  // defaults: top_m 4, 32 samples per hypothesis
  DiscriminateConfig top1;
  top1.top_m = 1;
  DiscriminateConfig bounds_only;
  bounds_only.top_m = 0;
  DiscriminateStrategy s_full(kCandidates, kUnits, kHypotheses, full);
  DiscriminateStrategy s_top1(kCandidates, kUnits, kHypotheses, top1);
  DiscriminateStrategy s_bounds(kCandidates, kUnits, kHypotheses, bounds_only);
  DiscriminateStrategy s_nb(kCandidates, kUnits, kHypotheses, full);
  DiscriminateStrategy s_old(kCandidates, kUnits, kHypotheses, full);

  // Per twin update: set_predictions (copy + every candidate's pairwise distances).
  const int set_reps = std::max(50, decisions / 10);
  const Stats t_set = time_it(set_reps, [&] { (void)s_full.set_predictions(poisson); });
  (void)s_top1.set_predictions(poisson);
  (void)s_bounds.set_predictions(poisson);
  (void)s_nb.set_predictions(nb);

  std::uint32_t chosen = 0;
  double eig = 0.0, lo = 0.0, hi = 0.0;
  std::size_t turn = 0;
  auto take = [&](const std::optional<twinloop::designer::Decision>& d) {
    chosen = d->candidate;
    eig = d->eig;
    lo = d->eig_lower;
    hi = d->eig_upper;
  };
  auto run = [&](DiscriminateStrategy& s, bool cycle) {
    const auto& p = cycle ? posteriors[turn++ % posteriors.size()] : w;
    take(s.decide(p, allowed_span));
  };
  for (int i = 0; i < 20; ++i) run(s_full, false);  // warm caches
  const Stats t_full = time_it(decisions, [&] { run(s_full, false); });
  const std::uint32_t full_choice = chosen;
  const double full_eig = eig, full_lo = lo, full_hi = hi;
  const Stats t_cycle = time_it(decisions, [&] { run(s_full, true); });
  const Stats t_top1 = time_it(decisions, [&] { run(s_top1, true); });
  const Stats t_bounds = time_it(decisions, [&] { run(s_bounds, false); });
  const std::uint32_t bounds_choice = chosen;
  const Stats t_nb = time_it(decisions, [&] { run(s_nb, true); });

  // In-run baseline: the one-shot path, decide(predictions, posterior, allowed), which recomputes
  // every distance from the predictions on each decision (the path before set_predictions).
  const Stats t_old = time_it(old_reps, [&] { take(s_old.decide(poisson, w, allowed_span)); });
  const std::uint32_t old_choice = chosen;

  std::vector<double> lower(kCandidates), upper(kCandidates);
  const Stats t_naive = time_it(naive_reps, [&] { naive_decision(poisson, w, lower, upper); });
  const std::uint32_t naive_choice = naive_decision(poisson, w, lower, upper);
  double max_dev = 0.0;
  for (std::size_t c = 0; c < kCandidates; ++c) {
    if (!allowed[c]) continue;
    max_dev = std::max(max_dev, std::abs(lower[c] - s_bounds.lower_bounds()[c]));
    max_dev = std::max(max_dev, std::abs(upper[c] - s_bounds.upper_bounds()[c]));
  }

  print("forward stand-in (4 hyps x 1000 x 384)", fwd, fwd_reps);
  print("set_predictions() (per twin update)", t_set, set_reps);
  print("decide(w, allowed): top-4 MC, fixed w", t_full, decisions);
  print("decide(w, allowed): top-4 MC, cycled w", t_cycle, decisions);
  print("decide(w, allowed): top-1 MC, cycled w", t_top1, decisions);
  print("decide(w, allowed): bounds only, fixed w", t_bounds, decisions);
  print("decide(w, allowed): top-4 MC, NB, cycled w", t_nb, decisions);
  print("baseline: decide(predictions, w, allowed)", t_old, old_reps);
  print("baseline: naive unfused bounds (double)", t_naive, naive_reps);
  std::printf("forward + set_predictions + decide (sum of medians / p99s): %.1f us / %.1f us\n",
              fwd.median_us + t_set.median_us + t_full.median_us,
              fwd.p99_us + t_set.p99_us + t_full.p99_us);
  std::printf(
      "speed-up of decide(w, allowed) over decide(predictions, w, allowed): median %.1fx, "
      "p99 %.1fx\n",
      t_old.median_us / t_full.median_us, t_old.p99_us / t_full.p99_us);
  std::printf(
      "choice: full %u (EIG %.4f nats, bounds [%.4f, %.4f]), one-shot %u, bounds-only %u, "
      "naive %u\n",
      full_choice, full_eig, full_lo, full_hi, old_choice, bounds_choice, naive_choice);
  std::printf("max |bound(float fused) - bound(naive double)| over candidates: %.2e nats\n",
              max_dev);
  const double worst_p99 = std::max({t_full.p99_us, t_cycle.p99_us, t_nb.p99_us});
  std::printf("goal p99 < 1000 us for decide(w, allowed) (worst of top-4 runs %.1f us): %s\n",
              worst_p99, worst_p99 < 1000.0 ? "met" : "NOT met");
  return 0;
}

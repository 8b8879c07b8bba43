#include "twinloop/designer/discriminate_strategy.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <memory>
#include <numbers>
#include <stdexcept>

namespace twinloop::designer {
namespace {

constexpr std::size_t kLanes = 16;       // units per block of the bounds kernel
constexpr std::size_t kTableCap = 4096;  // longest log-pmf table (counts) per unit
// Floats of cached Monte Carlo tables (64 MiB): every candidate's table for typical sizes.
constexpr std::size_t kCacheFloats = std::size_t{1} << 24;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Natural log for positive normal floats, written so that loops over it vectorise: split
// x = 2^e f with f in [sqrt(1/2), sqrt(2)), then log f = 2 atanh(t), t = (f - 1) / (f + 1),
// |t| <= 0.1716, by its series to t^9 (truncation below 1e-9 absolute).
inline float fast_log(float x) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const std::uint32_t mant = (bits & 0x007fffffu) | 0x3f800000u;  // f in [1, 2)
  const std::uint32_t high = mant > 0x3fb504f3u ? 1u : 0u;        // f > sqrt(2): halve it
  const float f = std::bit_cast<float>(mant - (high << 23));
  const float e = static_cast<float>(static_cast<std::int32_t>((bits >> 23) + high) - 127);
  const float t = (f - 1.0f) / (f + 1.0f);
  const float t2 = t * t;
  const float series =
      1.0f + t2 * (1.0f / 3.0f + t2 * (1.0f / 5.0f + t2 * (1.0f / 7.0f + t2 * (1.0f / 9.0f))));
  return 2.0f * t * series + e * 0.693147181f;
}

// Per-candidate pairwise distances, fused over pairs x units: BD (without the 1/2), and KL both
// ways, accumulated in kLanes-wide lane arrays so the compiler vectorises without reassociating.
// Layout of `lanes`: m, s = sqrt(m), l = log(m), phi, each [hyp][kLanes]; of `acc`: bd, kl_ij,
// kl_ji, each [pair][kLanes]. Tail lanes carry m = s = l = 0, which contributes exactly 0.
template <bool kNb>
void pair_distances_impl(const double* const* __restrict mean, const double* const* __restrict disp,
                         std::size_t hyps, std::size_t units, const std::uint32_t* pi,
                         const std::uint32_t* pj, std::size_t pairs, float lo, float hi,
                         float* __restrict lanes, float* __restrict acc,
                         double* __restrict out) noexcept {
  float* m = lanes;
  float* s = m + hyps * kLanes;
  float* l = s + hyps * kLanes;
  float* phi = l + hyps * kLanes;
  float* bd = acc;
  float* kf = bd + pairs * kLanes;
  float* kb = kf + pairs * kLanes;
  std::fill(acc, acc + 3 * pairs * kLanes, 0.0f);
  for (std::size_t u0 = 0; u0 < units; u0 += kLanes) {
    const std::size_t n = std::min(kLanes, units - u0);
    for (std::size_t k = 0; k < hyps; ++k) {
      float* mk = m + k * kLanes;
      const double* src = mean[k] + u0;
      if (n == kLanes) {
        for (std::size_t i = 0; i < kLanes; ++i) {
          mk[i] = std::clamp(static_cast<float>(src[i]), lo, hi);
        }
      } else {
        for (std::size_t i = 0; i < kLanes; ++i) {
          mk[i] = i < n ? std::clamp(static_cast<float>(src[i]), lo, hi) : lo;
        }
      }
      float* sk = s + k * kLanes;
      float* lk = l + k * kLanes;
      for (std::size_t i = 0; i < kLanes; ++i) {
        sk[i] = std::sqrt(mk[i]);
        lk[i] = fast_log(mk[i]);
      }
      if (n != kLanes) {
        for (std::size_t i = n; i < kLanes; ++i) mk[i] = sk[i] = lk[i] = 0.0f;
      }
      if constexpr (kNb) {
        float* pk = phi + k * kLanes;
        const double* dsrc = disp[k] + u0;
        for (std::size_t i = 0; i < kLanes; ++i) {
          pk[i] = i < n ? std::max(static_cast<float>(dsrc[i]), 0.0f) : 0.0f;
        }
      }
    }
    for (std::size_t p = 0; p < pairs; ++p) {
      const float* mi = m + pi[p] * kLanes;
      const float* mj = m + pj[p] * kLanes;
      const float* si = s + pi[p] * kLanes;
      const float* sj = s + pj[p] * kLanes;
      const float* li = l + pi[p] * kLanes;
      const float* lj = l + pj[p] * kLanes;
      float* bdp = bd + p * kLanes;
      float* kfp = kf + p * kLanes;
      float* kbp = kb + p * kLanes;
      if constexpr (kNb) {
        const float* fi = phi + pi[p] * kLanes;
        const float* fj = phi + pj[p] * kLanes;
        for (std::size_t i = 0; i < kLanes; ++i) {
          const float f = 1.0f / (1.0f + 0.25f * (fi[i] + fj[i]) * (mi[i] + mj[i]));
          const float ds = si[i] - sj[i];
          const float dl = li[i] - lj[i];
          const float dm = mj[i] - mi[i];
          bdp[i] += f * ds * ds;
          kfp[i] += f * (mi[i] * dl + dm);
          kbp[i] -= f * (mj[i] * dl + dm);
        }
      } else {
        for (std::size_t i = 0; i < kLanes; ++i) {
          const float ds = si[i] - sj[i];
          const float dl = li[i] - lj[i];
          const float dm = mj[i] - mi[i];
          bdp[i] += ds * ds;
          kfp[i] += mi[i] * dl + dm;
          kbp[i] -= mj[i] * dl + dm;
        }
      }
    }
  }
  for (std::size_t p = 0; p < pairs; ++p) {
    double b = 0.0, f = 0.0, r = 0.0;
    for (std::size_t i = 0; i < kLanes; ++i) {
      b += bd[p * kLanes + i];
      f += kf[p * kLanes + i];
      r += kb[p * kLanes + i];
    }
    out[p] = 0.5 * b;
    out[pairs + p] = std::max(f, 0.0);
    out[2 * pairs + p] = std::max(r, 0.0);
  }
}

// Portable build (no -march): on x86-64 compile the kernel also for x86-64-v3 (AVX2 + FMA) and
// pick at load time; elsewhere the default build only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define TWINLOOP_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TWINLOOP_KERNEL_CLONES
#endif

TWINLOOP_KERNEL_CLONES
void pair_distances(bool nb, const double* const* mean, const double* const* disp, std::size_t hyps,
                    std::size_t units, const std::uint32_t* pi, const std::uint32_t* pj,
                    std::size_t pairs, float lo, float hi, float* lanes, float* acc,
                    double* out) noexcept {
  if (nb) {
    pair_distances_impl<true>(mean, disp, hyps, units, pi, pj, pairs, lo, hi, lanes, acc, out);
  } else {
    pair_distances_impl<false>(mean, disp, hyps, units, pi, pj, pairs, lo, hi, lanes, acc, out);
  }
}

// Kolchinsky & Tracey (2017), eq. for the pairwise estimator:
// I_D = -sum_i w_i log sum_j w_j exp(-D(p_i, p_j)), D(p_i, p_i) = 0.
// `fwd` / `bwd` hold exp(-D) for pairs (pi < pj), forward (i -> j) and backward (j -> i), over
// all hypotheses; inactive hypotheses have w = 0.
inline double pairwise_estimate(const double* w, std::size_t k, std::size_t pairs,
                                const std::uint32_t* pi, const std::uint32_t* pj, const double* fwd,
                                const double* bwd, double* inner) noexcept {
  for (std::size_t i = 0; i < k; ++i) inner[i] = w[i];
  for (std::size_t p = 0; p < pairs; ++p) {
    inner[pi[p]] += w[pj[p]] * fwd[p];
    inner[pj[p]] += w[pi[p]] * bwd[p];
  }
  double sum = 0.0;
  for (std::size_t i = 0; i < k; ++i) {
    if (w[i] > 0.0) sum -= w[i] * std::log(inner[i]);
  }
  return std::max(sum, 0.0);
}

// exp(-D); below exp(-50) (1e-22) it cannot change a sum that already holds a weight by more
// than rounding: 0.
inline double kernel_of(double d) noexcept {
  return d < 50.0 ? std::exp(-d) : 0.0;
}

// log Gamma(x), x > 0: shifted to x >= 10, then Stirling's series to x^-7 (error < 1e-12).
double log_gamma(double x) noexcept {
  double shift = 1.0;
  while (x < 10.0) {
    shift *= x;
    x += 1.0;
  }
  const double z = 1.0 / (x * x);
  const double series =
      (1.0 / 12.0 - z * (1.0 / 360.0 - z * (1.0 / 1260.0 - z * (1.0 / 1680.0)))) / x;
  return (x - 0.5) * std::log(x) - x + 0.5 * std::log(2.0 * std::numbers::pi) + series -
         std::log(shift);
}

// SplitMix64 finaliser (Steele, Lea & Flood 2014) to derive per-(stream, unit, stratum) keys.
std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
// Natural log and exp in double precision, written so that loops over them vectorise (the
// library's calls do not). log: x = 2^e f with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh(t),
// t = (f - 1) / (f + 1), |t| <= 0.1716, by its series to t^21 (truncation below 1e-17 relative);
// positive normal x only. exp: x = n log 2 + r, |r| <= log(2) / 2, e^r by its Taylor series to
// r^13 (truncation below 2e-17); x in [-700, 700] (the callers select 0 below).
inline double vlog(double x) noexcept {
  const std::uint64_t bits = std::bit_cast<std::uint64_t>(x);
  const std::uint64_t mant = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
  const std::uint64_t high = mant > 0x3ff6a09e667f3bcdULL ? 1u : 0u;  // f > sqrt(2): halve it
  const double f = std::bit_cast<double>(mant - (high << 52));
  // Exponent to double without an int64 conversion (none in AVX2): 2^52 + e, then subtract.
  const double e = std::bit_cast<double>(((bits >> 52) + high) | 0x4330000000000000ULL) -
                   (4503599627370496.0 + 1023.0);
  const double t = (f - 1.0) / (f + 1.0);
  const double z = t * t;
  double s = 1.0 / 21.0;
  s = s * z + 1.0 / 19.0;
  s = s * z + 1.0 / 17.0;
  s = s * z + 1.0 / 15.0;
  s = s * z + 1.0 / 13.0;
  s = s * z + 1.0 / 11.0;
  s = s * z + 1.0 / 9.0;
  s = s * z + 1.0 / 7.0;
  s = s * z + 1.0 / 5.0;
  s = s * z + 1.0 / 3.0;
  s = s * z + 1.0;
  constexpr double kLn2Hi = 6.93147180369123816490e-01;  // fdlibm's split of log 2
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  return e * kLn2Hi + (2.0 * t * s + e * kLn2Lo);
}

inline double vexp(double x) noexcept {
  constexpr double kShift = 6755399441055744.0;  // 1.5 * 2^52: rounds to an integer
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double kd = x * std::numbers::log2e + kShift;
  const std::uint64_t n = std::bit_cast<std::uint64_t>(kd);
  const double k = kd - kShift;
  const double r = (x - k * kLn2Hi) - k * kLn2Lo;
  double p = 1.0 / 6227020800.0;  // 1 / 13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // 2^k: k + 1023 into the exponent field (the low bits of n hold k in two's complement).
  return p * std::bit_cast<double>((n + 1023u) << 52);
}

// Per (hypothesis, unit) laws of one candidate: clamped mean, its log, NB size r = 1 / phi (0 for
// Poisson), log(r / (r + m)), log(m / (r + m)), m / (r + m) and P(Y = 0) (0 where it is below
// e^-700). Branch-free so that it vectorises; Poisson lanes compute NB terms on r = 1 and discard
// them.
TWINLOOP_KERNEL_CLONES
void unit_laws(const double* __restrict mean, const double* __restrict disp, std::size_t n,
               double lo, double hi, double* __restrict m_out, double* __restrict lm_out,
               double* __restrict r_out, double* __restrict lp_out, double* __restrict lq_out,
               double* __restrict q_out, double* __restrict p0_out) noexcept {
  for (std::size_t u = 0; u < n; ++u) {
    const double m = std::clamp(mean[u], lo, hi);
    const bool nb = disp[u] > twin::kPoissonDispersion;
    const double r = nb ? 1.0 / disp[u] : 1.0;
    const double lp = vlog(r / (r + m));
    const double lq = vlog(m / (r + m));
    const double log_p0 = nb ? r * lp : -m;
    m_out[u] = m;
    lm_out[u] = vlog(m);
    r_out[u] = nb ? r : 0.0;
    lp_out[u] = lp;
    lq_out[u] = lq;
    q_out[u] = vexp(lq);
    p0_out[u] = log_p0 > -700.0 ? vexp(std::max(log_p0, -700.0)) : 0.0;
  }
}

struct UnitLaw {
  double mean = 0.0;
  double r = 0.0;  // NB size 1/phi; 0 = Poisson
  double log_mean = 0.0;
  double log_p = 0.0;  // NB: log(r / (r + m))
  double log_q = 0.0;  // NB: log(m / (r + m))
};

// log P(y) + log y! (the log y! is common to every hypothesis and cancels in the EIG).
double shifted_log_pmf(const UnitLaw& d, double y) noexcept {
  if (d.r == 0.0) return y * d.log_mean - d.mean;
  return log_gamma(y + d.r) - log_gamma(d.r) + d.r * d.log_p + y * d.log_q;
}

// Adds one hypothesis's shifted log-pmf of n drawn counts, Poisson: y log m - m.
TWINLOOP_KERNEL_CLONES
void add_poisson(const std::uint32_t* __restrict y, std::size_t n, double log_mean, double mean,
                 double* __restrict ll) noexcept {
  for (std::size_t t = 0; t < n; ++t) ll[t] += static_cast<double>(y[t]) * log_mean - mean;
}

// Adds table values g[y - lo] of n drawn counts.
TWINLOOP_KERNEL_CLONES
void add_table(const std::uint32_t* __restrict y, std::size_t n, const double* __restrict g,
               std::uint32_t lo, double* __restrict ll) noexcept {
  for (std::size_t t = 0; t < n; ++t) ll[t] += g[y[t] - lo];
}

}  // namespace

DiscriminateStrategy::DiscriminateStrategy(std::size_t candidates, std::size_t units,
                                           std::size_t hypotheses, const DiscriminateConfig& config)
    : config_(config),
      candidates_(candidates),
      units_(units),
      hypotheses_(hypotheses),
      samples_(config.samples_per_hypothesis),
      coin_(mix64(config.draw_seed.value_or(config.seed) ^ 0x636f696eULL)),
      validation_(mix64(config.draw_seed.value_or(config.seed) ^ 0x76616c69ULL)) {
  if (candidates == 0 || units == 0 || hypotheses == 0) {
    throw std::invalid_argument(
        "DiscriminateStrategy: candidates, units and hypotheses must be > 0");
  }
  if (candidates > std::numeric_limits<std::uint32_t>::max() ||
      hypotheses > std::numeric_limits<std::uint32_t>::max() / 2) {
    throw std::invalid_argument("DiscriminateStrategy: too many candidates or hypotheses");
  }
  if (!(config.validation_fraction >= 0.0 && config.validation_fraction < 1.0)) {
    throw std::invalid_argument("DiscriminateStrategy: validation_fraction must be in [0, 1)");
  }
  if (!(config.min_mean > 0.0) || !(config.max_mean >= config.min_mean) ||
      !std::isfinite(config.max_mean)) {
    throw std::invalid_argument("DiscriminateStrategy: need 0 < min_mean <= max_mean < inf");
  }
  if (config.top_m > 0 && config.samples_per_hypothesis == 0) {
    throw std::invalid_argument("DiscriminateStrategy: samples_per_hypothesis must be > 0");
  }
  const std::size_t k = hypotheses;
  const std::size_t pairs = k * (k - 1) / 2;
  const std::size_t n = config.samples_per_hypothesis;
  active_.resize(k);
  mean_ptr_.resize(k);
  disp_ptr_.resize(k);
  weight_.resize(k);
  log_weight_.resize(k);
  all_i_.resize(pairs);
  all_j_.resize(pairs);
  for (std::uint32_t i = 0, p = 0; i < k; ++i) {
    for (std::uint32_t j = i + 1; j < k; ++j, ++p) {
      all_i_[p] = i;
      all_j_[p] = j;
    }
  }
  pred_mean_.resize(candidates * k * units);
  pred_disp_.resize(candidates * k * units);
  kernel_.resize(candidates * 3 * pairs);
  lower_.assign(candidates, kNaN);
  upper_.assign(candidates, kNaN);
  full_weight_.resize(k);
  lanes_.resize(4 * k * kLanes);
  acc_.resize(3 * pairs * kLanes + 1);
  dist_.resize(3 * pairs + k + 1);
  top_.resize(std::min<std::size_t>(config.top_m, candidates));
  last_posterior_.assign(k, 0.0);
  last_allowed_ = std::make_unique<bool[]>(candidates);
  law_m_.resize(k * units);
  law_lm_.resize(k * units);
  law_r_.resize(k * units);
  law_lp_.resize(k * units);
  law_lq_.resize(k * units);
  law_q_.resize(k * units);
  law_p0_.resize(k * units);
  walk_.resize(4 * k);
  walk_start_.resize(k);
  hist_.assign(k * (n + 1), 0u);
  draw_.resize(k * n);
  pmf_table_.resize(k * kTableCap);
  log_step_.resize(kTableCap);
  loglik_.resize(k * k * n);
  recip_.resize(kTableCap);
  for (std::size_t i = 0; i < kTableCap; ++i) recip_[i] = 1.0 / static_cast<double>(i + 1);
  // The Latin hypercube design: offsets and permutations (Fisher-Yates) from the seed.
  offset_.resize(k * units);
  perm_.resize(k * units * n);
  std::uint64_t state = mix64(config.seed ^ 0x6c687364ULL);
  auto next = [&state] { return mix64(state += 0x9e3779b97f4a7c15ULL); };
  for (std::size_t i = 0; i < k * units; ++i) {
    offset_[i] = static_cast<double>(next() >> 11) * 0x1.0p-53;
    std::uint32_t* perm = perm_.data() + i * n;
    for (std::size_t t = 0; t < n; ++t) perm[t] = static_cast<std::uint32_t>(t);
    for (std::size_t t = n; t > 1; --t) {
      const std::size_t j = static_cast<std::size_t>((next() >> 32) * t >> 32);
      std::swap(perm[t - 1], perm[j]);
    }
  }
  // Table cache: every candidate when it fits in kCacheFloats, else as many slots as fit (at
  // least top_m, evicted round-robin).
  const std::size_t per_table = k * k * n;
  std::size_t slots = 0;
  if (config.top_m > 0) {
    slots = std::min(
        candidates,
        std::max<std::size_t>(config.top_m, kCacheFloats / std::max<std::size_t>(per_table, 1)));
  }
  tables_.resize(slots * per_table);
  scratch_table_.resize(per_table);
  slot_of_.assign(candidates, -1);
  slot_owner_.assign(slots, 0);
  slot_generation_.assign(slots, 0);
}

bool DiscriminateStrategy::sizes_match(
    std::span<const twin::PredictionBatch> predictions) const noexcept {
  if (predictions.size() != hypotheses_) return false;
  const std::size_t cells = candidates_ * units_;
  for (const auto& b : predictions) {
    if (b.candidates != candidates_ || b.units != units_ || b.mean.size() != cells ||
        b.dispersion.size() != cells) {
      return false;
    }
  }
  return true;
}

bool DiscriminateStrategy::set_predictions(
    std::span<const twin::PredictionBatch> predictions) noexcept {
  if (!sizes_match(predictions)) return false;
  precompute(predictions, true);
  have_predictions_ = true;
  // Build the tables the next decision most likely needs: those of the top candidates under the
  // last decision's posterior and allowed set (the posterior moves little per trial).
  if (config_.prebuild_tables && have_last_posterior_ && !top_.empty() &&
      load_posterior(last_posterior_) && n_active_ >= 2) {
    const std::span<const bool> allowed(last_allowed_.get(), candidates_);
    compute_bounds(allowed);
    double best = -std::numeric_limits<double>::infinity();
    bool any = false;
    for (std::size_t c = 0; c < candidates_; ++c) {
      if (allowed[c]) {
        best = std::max(best, lower_[c]);
        any = true;
      }
    }
    const std::size_t filled = any ? select_top(allowed, best) : 0;
    for (std::size_t i = 0; i < filled; ++i) (void)table_for(top_[i], nullptr);
  }
  return true;
}

void DiscriminateStrategy::precompute(std::span<const twin::PredictionBatch> predictions,
                                      bool store) noexcept {
  const std::size_t k = hypotheses_;
  const std::size_t units = units_;
  const std::size_t pairs = all_i_.size();
  const double** mean = mean_ptr_.data();
  const double** disp = disp_ptr_.data();
  double* dist = dist_.data();
  const float lo = static_cast<float>(config_.min_mean);
  const float hi = static_cast<float>(std::min(config_.max_mean, 3.0e38));
  ++generation_;  // every cached Monte Carlo table is stale
  for (std::size_t c = 0; c < candidates_; ++c) {
    double* mrow = pred_mean_.data() + c * k * units;
    double* drow = pred_disp_.data() + c * k * units;
    bool nb = false;
    for (std::size_t h = 0; h < k; ++h) {
      mean[h] = predictions[h].mean.data() + c * units;
      disp[h] = predictions[h].dispersion.data() + c * units;
      if (store) {
        std::copy_n(mean[h], units, mrow + h * units);
        std::copy_n(disp[h], units, drow + h * units);
        mean[h] = mrow + h * units;
        disp[h] = drow + h * units;
      }
      bool row_nb = false;
      for (std::size_t u = 0; u < units; ++u) row_nb |= disp[h][u] > 0.0;
      nb = nb || row_nb;
    }
    if (pairs == 0) continue;
    // Per candidate: the NB kernel with every dispersion 0 scales by exactly 1, so the Poisson
    // kernel gives the same distances.
    pair_distances(nb, mean, disp, k, units, all_i_.data(), all_j_.data(), pairs, lo, hi,
                   lanes_.data(), acc_.data(), dist);
    double* kern = kernel_.data() + c * 3 * pairs;
    for (std::size_t p = 0; p < 3 * pairs; ++p) kern[p] = kernel_of(dist[p]);
  }
}

bool DiscriminateStrategy::load_posterior(std::span<const double> posterior) noexcept {
  if (posterior.size() != hypotheses_) return false;
  double total = 0.0;
  for (std::size_t k = 0; k < hypotheses_; ++k) {
    if (std::isfinite(posterior[k]) && posterior[k] > 0.0) total += posterior[k];
  }
  if (!(total > 0.0) || !std::isfinite(total)) return false;
  n_active_ = 0;
  for (std::size_t k = 0; k < hypotheses_; ++k) {
    full_weight_[k] = 0.0;
    if (!(std::isfinite(posterior[k]) && posterior[k] > 0.0)) continue;
    active_[n_active_] = static_cast<std::uint32_t>(k);
    weight_[n_active_] = posterior[k] / total;
    full_weight_[k] = weight_[n_active_];
    log_weight_[n_active_] = std::log(weight_[n_active_]);
    ++n_active_;
  }
  return true;
}

void DiscriminateStrategy::compute_bounds(std::span<const bool> allowed) noexcept {
  const std::size_t k = hypotheses_;
  const std::size_t pairs = all_i_.size();
  const double* w = full_weight_.data();
  double* inner = dist_.data();
  const std::uint32_t* pi = all_i_.data();
  const std::uint32_t* pj = all_j_.data();
  for (std::size_t c = 0; c < candidates_; ++c) {
    if (!allowed[c]) {
      lower_[c] = upper_[c] = kNaN;
      continue;
    }
    if (n_active_ < 2) {
      lower_[c] = upper_[c] = 0.0;
      continue;
    }
    const double* kern = kernel_.data() + c * 3 * pairs;
    // BD is symmetric: the same kernel both ways.
    const double lower = pairwise_estimate(w, k, pairs, pi, pj, kern, kern, inner);
    const double upper =
        pairwise_estimate(w, k, pairs, pi, pj, kern + pairs, kern + 2 * pairs, inner);
    lower_[c] = lower;
    upper_[c] = std::max(upper, lower);
  }
}

// Cloned like the kernels: the walk's floor and conversions are single instructions there.
TWINLOOP_KERNEL_CLONES
void DiscriminateStrategy::build_table(float* out) noexcept {
  const std::size_t k = hypotheses_;
  const std::size_t n = samples_;
  const std::size_t units = units_;
  ++tables_built_;
  for (std::size_t h = 0; h < k; ++h) {
    const std::size_t row = h * units;
    unit_laws(mean_ptr_[h], disp_ptr_[h], units, config_.min_mean, config_.max_mean,
              law_m_.data() + row, law_lm_.data() + row, law_r_.data() + row, law_lp_.data() + row,
              law_lq_.data() + row, law_q_.data() + row, law_p0_.data() + row);
  }
  std::fill(loglik_.begin(), loglik_.end(), 0.0);
  std::uint32_t* draw = draw_.data();
  double* g = pmf_table_.data();
  double* step = log_step_.data();
  const double levels = static_cast<double>(n);
  double* walk_p = walk_.data();
  double* walk_cum = walk_p + k;
  double* walk_q = walk_cum + k;
  double* walk_last = walk_q + k;
  std::uint32_t* walk_y0 = walk_start_.data();
  std::uint32_t* hist = hist_.data();
  for (std::size_t u = 0; u < units; ++u) {
    // Latin hypercube draws of N counts of this unit from each hypothesis (stratum): level t,
    // (t + offset) / N, goes to sample perm[t]; its count is the first y with CDF(y) >= level.
    // One walk up the CDFs of all strata in lockstep (independent chains, so the processor
    // overlaps them) counts per step how many levels the CDF has passed (hist[passed]++); the
    // count of level t is then y0 + the number of steps that had passed no more than t levels.
    // The walk starts at 0, or for large means 8 standard deviations below the mean (the mass
    // below is far under the spacing of the levels), and gives up on rounding 40 sd above it.
    bool all_poisson = true;
    for (std::size_t s = 0; s < k; ++s) {
      const std::size_t i = s * units + u;
      const UnitLaw law{law_m_[i], law_r_[i], law_lm_[i], law_lp_[i], law_lq_[i]};
      all_poisson = all_poisson && law.r == 0.0;
      const double sd = std::sqrt(law.r == 0.0 ? law.mean : law.mean + law.mean * law.mean / law.r);
      const double start = std::floor(law.mean - 8.0 * sd - 4.0);
      walk_y0[s] = 0;
      walk_p[s] = law_p0_[i];
      if (start > 0.0 || walk_p[s] == 0.0) {
        walk_y0[s] = start > 0.0 ? static_cast<std::uint32_t>(start) : 0u;
        const double y0 = walk_y0[s];
        walk_p[s] = std::exp(shifted_log_pmf(law, y0) - log_gamma(y0 + 1.0));
      }
      walk_cum[s] = walk_p[s];
      walk_q[s] = law.r == 0.0 ? law.mean : law_q_[i];
      walk_last[s] = law.mean + 40.0 * sd + 40.0;
    }
    for (std::size_t step_index = 0;; ++step_index) {
      bool done = true;
      for (std::size_t s = 0; s < k; ++s) {
        const std::size_t i = s * units + u;
        const double y = static_cast<double>(walk_y0[s] + step_index);
        // Levels passed, floor(N cum - offset) + 1 clamped to [0, N] (truncation is floor here).
        const double reach = std::max(levels * walk_cum[s] - offset_[i] + 1.0, 0.0);
        const double passed = y >= walk_last[s] ? levels : std::min(reach, levels);
        const auto v = static_cast<std::uint32_t>(passed);
        ++hist[s * (n + 1) + v];
        done = done && v == n;
        const double inv = y < static_cast<double>(kTableCap) ? recip_[static_cast<std::size_t>(y)]
                                                              : 1.0 / (y + 1.0);
        const double r = law_r_[i];
        walk_p[s] *= r == 0.0 ? walk_q[s] * inv : walk_q[s] * (y + r) * inv;
        walk_cum[s] += walk_p[s];
      }
      if (done) break;
    }
    std::uint32_t lo = std::numeric_limits<std::uint32_t>::max(), hi = 0;
    for (std::size_t s = 0; s < k; ++s) {
      std::uint32_t* h = hist + s * (n + 1);
      const std::uint32_t* perm = perm_.data() + (s * units + u) * n;
      std::uint32_t* y = draw + s * n;
      std::uint32_t count = walk_y0[s];
      lo = std::min(lo, count + h[0]);
      for (std::size_t t = 0; t < n; ++t) {
        count += h[t];
        y[perm[t]] = count;
      }
      hi = std::max(hi, count);
      std::fill(h, h + n + 1, 0u);
    }
    // Add every hypothesis's log-likelihood of every drawn count (log y! dropped: common).
    if (all_poisson) {
      for (std::size_t j = 0; j < k; ++j) {
        const double lm = law_lm_[j * units + u];
        const double m = law_m_[j * units + u];
        for (std::size_t s = 0; s < k; ++s) {
          add_poisson(draw + s * n, n, lm, m, loglik_.data() + (s * k + j) * n);
        }
      }
      continue;
    }
    const std::size_t range = static_cast<std::size_t>(hi - lo) + 1;
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t i = j * units + u;
      const UnitLaw law{law_m_[i], law_r_[i], law_lm_[i], law_lp_[i], law_lq_[i]};
      if (range > kTableCap) {
        for (std::size_t s = 0; s < k; ++s) {
          const std::uint32_t* y = draw + s * n;
          double* ll = loglik_.data() + (s * k + j) * n;
          for (std::size_t t = 0; t < n; ++t) ll[t] += shifted_log_pmf(law, y[t]);
        }
        continue;
      }
      // Table over the drawn range: Poisson directly; NB by G(y+1) = G(y) + log(y + r) + log q,
      // its logs computed first in a loop that vectorises.
      double* gj = g + j * kTableCap;
      const double base = lo;
      if (law.r == 0.0) {
        for (std::size_t t = 0; t < range; ++t) {
          gj[t] = (base + static_cast<double>(t)) * law.log_mean - law.mean;
        }
      } else {
        for (std::size_t t = 1; t < range; ++t) {
          step[t] = vlog(base + static_cast<double>(t - 1) + law.r) + law.log_q;
        }
        gj[0] = shifted_log_pmf(law, base);
        for (std::size_t t = 1; t < range; ++t) gj[t] = gj[t - 1] + step[t];
      }
      for (std::size_t s = 0; s < k; ++s) {
        add_table(draw + s * n, n, gj, lo, loglik_.data() + (s * k + j) * n);
      }
    }
  }
  // Posterior-free form: log p_j(y) - log p_s(y) per stratum s, hypothesis j and sample.
  for (std::size_t s = 0; s < k; ++s) {
    const double* own = loglik_.data() + (s * k + s) * n;
    for (std::size_t j = 0; j < k; ++j) {
      const double* ll = loglik_.data() + (s * k + j) * n;
      float* o = out + (s * k + j) * n;
      for (std::size_t t = 0; t < n; ++t) o[t] = static_cast<float>(ll[t] - own[t]);
    }
  }
}

const float* DiscriminateStrategy::table_for(std::uint32_t c,
                                             const twin::PredictionBatch* external) noexcept {
  const std::size_t per_table = hypotheses_ * hypotheses_ * samples_;
  std::int32_t slot = slot_of_[c];
  if (slot >= 0 && slot_generation_[static_cast<std::size_t>(slot)] == generation_ &&
      slot_owner_[static_cast<std::size_t>(slot)] == c) {
    return tables_.data() + static_cast<std::size_t>(slot) * per_table;
  }
  const std::size_t k = hypotheses_;
  for (std::size_t h = 0; h < k; ++h) {
    if (external != nullptr) {
      mean_ptr_[h] = external[h].mean.data() + c * units_;
      disp_ptr_[h] = external[h].dispersion.data() + c * units_;
    } else {
      mean_ptr_[h] = pred_mean_.data() + (c * k + h) * units_;
      disp_ptr_[h] = pred_disp_.data() + (c * k + h) * units_;
    }
  }
  const std::size_t target = next_slot_;
  next_slot_ = (next_slot_ + 1) % slot_owner_.size();
  const std::uint32_t previous = slot_owner_[target];
  if (slot_of_[previous] == static_cast<std::int32_t>(target)) slot_of_[previous] = -1;
  slot_of_[c] = static_cast<std::int32_t>(target);
  slot_owner_[target] = c;
  slot_generation_[target] = generation_;
  float* table = tables_.data() + target * per_table;
  build_table(table);
  return table;
}

double DiscriminateStrategy::eig_from_table(const float* table) const noexcept {
  const std::size_t ka = n_active_;
  if (ka < 2) return 0.0;
  const std::size_t k = hypotheses_;
  const std::size_t n = samples_;
  // EIG = sum_s w_s mean_t [ log p_s(y) - log sum_j w_j p_j(y) ]
  //     = -sum_s w_s mean_t log sum_j exp(log w_j + log p_j(y) - log p_s(y)).
  double eig = 0.0;
  for (std::size_t a = 0; a < ka; ++a) {
    const std::size_t s = active_[a];
    double sum = 0.0;
    for (std::size_t t = 0; t < n; ++t) {
      double top = -std::numeric_limits<double>::infinity();
      for (std::size_t b = 0; b < ka; ++b) {
        top = std::max(top, log_weight_[b] + table[(s * k + active_[b]) * n + t]);
      }
      double acc = 0.0;
      for (std::size_t b = 0; b < ka; ++b) {
        acc += std::exp(log_weight_[b] + table[(s * k + active_[b]) * n + t] - top);
      }
      sum += top + std::log(acc);
    }
    eig -= weight_[a] * sum / static_cast<double>(n);
  }
  return eig;
}

std::size_t DiscriminateStrategy::select_top(std::span<const bool> allowed, double floor) noexcept {
  // Top-m by lower bound (ties: lower index), by insertion, among the allowed candidates that
  // can be the argmax: an upper bound below the best lower bound rules a candidate out.
  std::size_t filled = 0;
  const std::size_t m = top_.size();
  for (std::uint32_t c = 0; c < candidates_; ++c) {
    if (!allowed[c] || upper_[c] < floor) continue;
    if (filled == m && !(lower_[c] > lower_[top_[m - 1]])) continue;
    std::size_t pos = filled < m ? filled++ : m - 1;
    while (pos > 0 && lower_[c] > lower_[top_[pos - 1]]) {
      top_[pos] = top_[pos - 1];
      --pos;
    }
    top_[pos] = c;
  }
  return filled;
}

std::optional<Decision> DiscriminateStrategy::decide(
    std::span<const twin::PredictionBatch> predictions, std::span<const double> posterior,
    std::span<const bool> allowed) noexcept {
  if (!sizes_match(predictions)) return std::nullopt;
  if (allowed.size() != candidates_ || posterior.size() != hypotheses_) return std::nullopt;
  // The caller's predictions serve this call only: no copy, and nothing stored for later.
  have_predictions_ = false;
  precompute(predictions, false);
  return decide_on(predictions.data(), posterior, allowed);
}

std::optional<Decision> DiscriminateStrategy::decide(std::span<const double> posterior,
                                                     std::span<const bool> allowed) noexcept {
  if (!have_predictions_) return std::nullopt;
  return decide_on(nullptr, posterior, allowed);
}

std::optional<Decision> DiscriminateStrategy::decide_on(const twin::PredictionBatch* external,
                                                        std::span<const double> posterior,
                                                        std::span<const bool> allowed) noexcept {
  if (allowed.size() != candidates_) return std::nullopt;
  if (!load_posterior(posterior)) return std::nullopt;
  if (config_.validation_fraction > 0.0) {
    constexpr std::uint32_t kScale = 1u << 31;
    const std::uint32_t draw = coin_.choose(kScale);
    if (static_cast<double>(draw) < config_.validation_fraction * kScale) {
      const auto pick = validation_.choose(allowed);
      if (!pick) return std::nullopt;
      return Decision{*pick, kNaN, kNaN, kNaN, true};
    }
  }
  if (external == nullptr) {
    std::copy(posterior.begin(), posterior.end(), last_posterior_.begin());
    std::copy(allowed.begin(), allowed.end(), last_allowed_.get());
    have_last_posterior_ = true;
  }
  compute_bounds(allowed);
  std::optional<std::uint32_t> best_lb;
  for (std::uint32_t c = 0; c < candidates_; ++c) {
    if (allowed[c] && (!best_lb || lower_[c] > lower_[*best_lb])) best_lb = c;
  }
  if (!best_lb) return std::nullopt;
  const std::size_t m = top_.size();
  if (m == 0 || n_active_ < 2) {
    const std::uint32_t c = *best_lb;
    return Decision{c, lower_[c], lower_[c], upper_[c], false};
  }
  const std::size_t filled = select_top(allowed, lower_[*best_lb]);
  Decision best{top_[0], -std::numeric_limits<double>::infinity(), 0.0, 0.0, false};
  for (std::size_t i = 0; i < filled; ++i) {
    const std::uint32_t c = top_[i];
    const double eig = eig_from_table(table_for(c, external));
    if (eig > best.eig) best = Decision{c, eig, lower_[c], upper_[c], false};
  }
  return best;
}

double DiscriminateStrategy::estimate_eig(std::span<const twin::PredictionBatch> predictions,
                                          std::span<const double> posterior,
                                          std::uint32_t candidate) noexcept {
  if (candidate >= candidates_ || samples_ == 0 || !sizes_match(predictions) ||
      !load_posterior(posterior)) {
    return kNaN;
  }
  if (n_active_ < 2) return 0.0;
  for (std::size_t h = 0; h < hypotheses_; ++h) {
    mean_ptr_[h] = predictions[h].mean.data() + candidate * units_;
    disp_ptr_[h] = predictions[h].dispersion.data() + candidate * units_;
  }
  build_table(scratch_table_.data());
  return eig_from_table(scratch_table_.data());
}

}  // namespace twinloop::designer

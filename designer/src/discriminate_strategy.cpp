#include "twinloop/designer/discriminate_strategy.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>

namespace twinloop::designer {
namespace {

constexpr std::size_t kLanes = 16;          // units per block of the bounds kernel
constexpr std::size_t kTableCap = 4096;     // longest sampling table (counts) per unit
constexpr double kTail = 1.0 / 67108864.0;  // 2^-26: tail mass left out of sampling tables
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

// 32-bit integer hash ("lowbias32", constants published by C. Wellons, 2018): a counter-based
// generator, so uniforms for N samples come from one key and vectorise.
inline std::uint32_t hash32(std::uint32_t x) noexcept {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// y[k] = lo + #{t < len : cdf[t] < uni[k]}: inversion of n uniforms on one table, 16 samples at a
// time in a register accumulator.
TWINLOOP_KERNEL_CLONES
void invert(const float* __restrict cdf, std::uint32_t len, const float* __restrict uni,
            std::size_t n, std::uint32_t lo, std::uint32_t* __restrict y) noexcept {
  constexpr std::size_t kBlock = 16;
  std::size_t k0 = 0;
  for (; k0 + kBlock <= n; k0 += kBlock) {
    std::uint32_t acc[kBlock];
    float u[kBlock];
    for (std::size_t i = 0; i < kBlock; ++i) {
      acc[i] = lo;
      u[i] = uni[k0 + i];
    }
    for (std::uint32_t t = 0; t < len; ++t) {
      const float edge = cdf[t];
      for (std::size_t i = 0; i < kBlock; ++i) acc[i] += u[i] > edge ? 1u : 0u;
    }
    for (std::size_t i = 0; i < kBlock; ++i) y[k0 + i] = acc[i];
  }
  for (std::size_t k = k0; k < n; ++k) {
    std::uint32_t acc = lo;
    for (std::uint32_t t = 0; t < len; ++t) acc += uni[k] > cdf[t] ? 1u : 0u;
    y[k] = acc;
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

// Fills cdf[0..len) with P(Y <= lo + t) from the first count whose left tail reaches kTail
// up to where the right tail falls below kTail (or the table is full).
// Counts past the first whose CDF (in float) reaches `stop` (the largest uniform to invert) can
// never be drawn: the table ends there.
void sampling_table(const UnitLaw& d, float stop, const double* recip, float* cdf,
                    std::uint32_t& lo, std::uint32_t& len) noexcept {
  const double var = d.r == 0.0 ? d.mean : d.mean + d.mean * d.mean / d.r;
  const double start = std::floor(d.mean - 8.0 * std::sqrt(var) - 4.0);
  lo = start > 0.0 ? static_cast<std::uint32_t>(start) : 0u;
  const double y0 = lo;
  double p;
  if (d.r == 0.0) {
    p = std::exp(lo == 0 ? -d.mean : y0 * d.log_mean - d.mean - log_gamma(y0 + 1.0));
  } else {
    p = std::exp(lo == 0 ? d.r * d.log_p : shifted_log_pmf(d, y0) - log_gamma(y0 + 1.0));
  }
  const double q = d.r == 0.0 ? d.mean : std::exp(d.log_q);
  double cum = 0.0;
  len = 0;
  for (double y = y0; len < kTableCap; y += 1.0) {
    cum += p;
    const float edge = static_cast<float>(cum);
    cdf[len++] = edge;
    if ((1.0 - cum < kTail && y >= d.mean) || edge >= stop) break;
    const double inv = y < kTableCap ? recip[static_cast<std::size_t>(y)] : 1.0 / (y + 1.0);
    p *= d.r == 0.0 ? q * inv : q * (y + d.r) * inv;
  }
}

}  // namespace

DiscriminateStrategy::DiscriminateStrategy(std::size_t candidates, std::size_t units,
                                           std::size_t hypotheses, const DiscriminateConfig& config)
    : config_(config),
      candidates_(candidates),
      units_(units),
      hypotheses_(hypotheses),
      coin_(mix64(config.seed ^ 0x636f696eULL)),
      validation_(mix64(config.seed ^ 0x76616c69ULL)) {
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
  mc_mean_.resize(k * units);
  mc_log_mean_.resize(k * units);
  mc_r_.resize(k * units);
  mc_log_p_.resize(k * units);
  mc_log_q_.resize(k * units);
  cdf_.resize(k * kTableCap);
  cdf_lo_.resize(k);
  cdf_len_.resize(k);
  table_.resize(k * 2 * kTableCap);
  y_.resize(k * n);
  loglik_.resize(k * k * n);
  uniform_.resize(n);
  recip_.resize(kTableCap);
  for (std::size_t i = 0; i < kTableCap; ++i) recip_[i] = 1.0 / static_cast<double>(i + 1);
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

double DiscriminateStrategy::monte_carlo(std::uint64_t stream) noexcept {
  const std::size_t ka = n_active_;
  if (ka < 2) return 0.0;
  const std::size_t n = config_.samples_per_hypothesis;
  const std::size_t units = units_;
  const double lo = config_.min_mean;
  const double hi = config_.max_mean;
  // Per-(hypothesis, unit) laws of this candidate.
  for (std::size_t a = 0; a < ka; ++a) {
    const double* mrow = mean_ptr_[a];
    const double* drow = disp_ptr_[a];
    for (std::size_t u = 0; u < units; ++u) {
      const double m = std::clamp(mrow[u], lo, hi);
      const double phi = drow[u];
      const std::size_t i = a * units + u;
      mc_mean_[i] = m;
      mc_log_mean_[i] = std::log(m);
      if (phi > 0.0) {
        const double r = 1.0 / phi;
        mc_r_[i] = r;
        mc_log_p_[i] = std::log(r / (r + m));
        mc_log_q_[i] = std::log(m / (r + m));
      } else {
        mc_r_[i] = 0.0;
      }
    }
  }
  std::fill(loglik_.begin(), loglik_.begin() + static_cast<std::ptrdiff_t>(ka * ka * n), 0.0);
  // Common random numbers: every candidate of one decision is sampled by inversion from the same
  // uniforms, so the estimates of similar candidates are correlated and their comparison is far
  // less noisy than their separate errors.
  const std::uint64_t base = mix64(config_.seed ^ mix64(stream));
  float* uni = uniform_.data();
  for (std::size_t u = 0; u < units; ++u) {
    std::uint32_t ymin = std::numeric_limits<std::uint32_t>::max();
    std::uint32_t ymax = 0;
    // Draw n counts of this unit from each hypothesis (stratum) by inversion on its table.
    for (std::size_t s = 0; s < ka; ++s) {
      const std::size_t i = s * units + u;
      const UnitLaw law{mc_mean_[i], mc_r_[i], mc_log_mean_[i], mc_log_p_[i], mc_log_q_[i]};
      float* cdf = cdf_.data() + s * kTableCap;
      const std::uint32_t key =
          static_cast<std::uint32_t>(mix64(base + (std::uint64_t{u} << 8) + s));
      std::uint32_t hmax = 0;  // integer maximum: vectorises (a float one does not)
      for (std::size_t k = 0; k < n; ++k) {
        const std::uint32_t h = hash32(key + static_cast<std::uint32_t>(k) * 0x9e3779b9U) >> 8;
        uni[k] = (static_cast<float>(h) + 0.5f) * (1.0f / 16777216.0f);
        hmax = std::max(hmax, h);
      }
      const float umax = (static_cast<float>(hmax) + 0.5f) * (1.0f / 16777216.0f);
      std::uint32_t tlo = 0, tlen = 0;
      sampling_table(law, umax, recip_.data(), cdf, tlo, tlen);
      std::uint32_t* y = y_.data() + s * n;
      invert(cdf, tlen, uni, n, tlo, y);
      ymin = std::min(ymin, tlo);
      ymax = std::max(ymax, tlo + tlen);
    }
    // Add each hypothesis's log-likelihood of every drawn count (log y! dropped: common).
    const std::size_t range = static_cast<std::size_t>(ymax - ymin) + 1;
    for (std::size_t j = 0; j < ka; ++j) {
      const std::size_t i = j * units + u;
      const UnitLaw law{mc_mean_[i], mc_r_[i], mc_log_mean_[i], mc_log_p_[i], mc_log_q_[i]};
      if (law.r == 0.0) {
        for (std::size_t s = 0; s < ka; ++s) {
          const std::uint32_t* y = y_.data() + s * n;
          double* ll = loglik_.data() + (s * ka + j) * n;
          for (std::size_t k = 0; k < n; ++k) {
            ll[k] += static_cast<double>(y[k]) * law.log_mean - law.mean;
          }
        }
      } else if (range <= 2 * kTableCap) {
        // Table over the drawn range: G(y+1) = G(y) + log(y + r) + log q.
        double* g = table_.data() + j * 2 * kTableCap;
        g[0] = shifted_log_pmf(law, ymin);
        for (std::size_t t = 1; t < range; ++t) {
          g[t] = g[t - 1] + std::log(static_cast<double>(ymin + t - 1) + law.r) + law.log_q;
        }
        for (std::size_t s = 0; s < ka; ++s) {
          const std::uint32_t* y = y_.data() + s * n;
          double* ll = loglik_.data() + (s * ka + j) * n;
          for (std::size_t k = 0; k < n; ++k) ll[k] += g[y[k] - ymin];
        }
      } else {
        for (std::size_t s = 0; s < ka; ++s) {
          const std::uint32_t* y = y_.data() + s * n;
          double* ll = loglik_.data() + (s * ka + j) * n;
          for (std::size_t k = 0; k < n; ++k) ll[k] += shifted_log_pmf(law, y[k]);
        }
      }
    }
  }
  // EIG = sum_s w_s mean_k [ log p_s(y) - log sum_j w_j p_j(y) ].
  double eig = 0.0;
  for (std::size_t s = 0; s < ka; ++s) {
    double sum = 0.0;
    for (std::size_t k = 0; k < n; ++k) {
      double top = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < ka; ++j) {
        top = std::max(top, log_weight_[j] + loglik_[(s * ka + j) * n + k]);
      }
      double acc = 0.0;
      for (std::size_t j = 0; j < ka; ++j) {
        acc += std::exp(log_weight_[j] + loglik_[(s * ka + j) * n + k] - top);
      }
      sum += loglik_[(s * ka + s) * n + k] - (top + std::log(acc));
    }
    eig += weight_[s] * sum / static_cast<double>(n);
  }
  return eig;
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
  const std::uint64_t stream = decisions_++;
  if (config_.validation_fraction > 0.0) {
    constexpr std::uint32_t kScale = 1u << 31;
    const std::uint32_t draw = coin_.choose(kScale);
    if (static_cast<double>(draw) < config_.validation_fraction * kScale) {
      const auto pick = validation_.choose(allowed);
      if (!pick) return std::nullopt;
      return Decision{*pick, kNaN, kNaN, kNaN, true};
    }
  }
  compute_bounds(allowed);

  // Top-m allowed candidates by lower bound (ties: lower index), by insertion.
  const std::size_t m = top_.size();
  std::size_t filled = 0;
  std::optional<std::uint32_t> best_lb;
  for (std::uint32_t c = 0; c < candidates_; ++c) {
    if (!allowed[c]) continue;
    if (!best_lb || lower_[c] > lower_[*best_lb]) best_lb = c;
    if (m == 0) continue;
    if (filled == m && !(lower_[c] > lower_[top_[m - 1]])) continue;
    std::size_t pos = filled < m ? filled++ : m - 1;
    while (pos > 0 && lower_[c] > lower_[top_[pos - 1]]) {
      top_[pos] = top_[pos - 1];
      --pos;
    }
    top_[pos] = c;
  }
  if (!best_lb) return std::nullopt;
  if (m == 0) {
    const std::uint32_t c = *best_lb;
    return Decision{c, lower_[c], lower_[c], upper_[c], false};
  }
  const std::size_t k = hypotheses_;
  Decision best{top_[0], -std::numeric_limits<double>::infinity(), 0.0, 0.0, false};
  for (std::size_t i = 0; i < filled; ++i) {
    const std::uint32_t c = top_[i];
    // Candidates whose upper bound is below the best lower bound cannot be the argmax.
    if (upper_[c] < lower_[*best_lb]) continue;
    for (std::size_t a = 0; a < n_active_; ++a) {
      if (external != nullptr) {
        mean_ptr_[a] = external[active_[a]].mean.data() + c * units_;
        disp_ptr_[a] = external[active_[a]].dispersion.data() + c * units_;
      } else {
        mean_ptr_[a] = pred_mean_.data() + (c * k + active_[a]) * units_;
        disp_ptr_[a] = pred_disp_.data() + (c * k + active_[a]) * units_;
      }
    }
    const double eig = monte_carlo(stream);
    if (eig > best.eig) best = Decision{c, eig, lower_[c], upper_[c], false};
  }
  return best;
}

double DiscriminateStrategy::estimate_eig(std::span<const twin::PredictionBatch> predictions,
                                          std::span<const double> posterior,
                                          std::uint32_t candidate) noexcept {
  if (candidate >= candidates_ || !sizes_match(predictions) || !load_posterior(posterior)) {
    return kNaN;
  }
  for (std::size_t a = 0; a < n_active_; ++a) {
    mean_ptr_[a] = predictions[active_[a]].mean.data() + candidate * units_;
    disp_ptr_[a] = predictions[active_[a]].dispersion.data() + candidate * units_;
  }
  return monte_carlo(~std::uint64_t{0});
}

}  // namespace twinloop::designer

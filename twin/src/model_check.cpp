#include "twinloop/twin/model_check.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <utility>

namespace twinloop::twin {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Student's t of n trial scores against 0 from their sum and sum of squares, through the
/// self-normalised sum U = sum / sqrt(squares): t = U sqrt((n - 1) / (n - U^2)). NaN when there
/// are fewer than 2 scores or all are 0.
double student_t_of_scores(double sum, double squares, double n) noexcept {
  if (n < 2.0 || !(squares > 0.0)) return kNaN;
  const double u = sum / std::sqrt(squares);
  const double rest = n - u * u;
  return rest > 0.0 ? u * std::sqrt((n - 1.0) / rest)
                    : std::copysign(std::numeric_limits<double>::infinity(), u);
}

/// Uniform in [0, 1) from the top 53 bits: the same on every standard library, unlike
/// std::uniform_real_distribution.
double uniform01(std::mt19937_64& rng) noexcept {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

/// Walks the pmf p(0), p(1), ... by its recurrence in log space, so that p(0) = e^-mean never
/// underflows the sum: Poisson p(j+1)/p(j) = mean/(j+1); NB2 with size r = 1/dispersion,
/// p(j+1)/p(j) = (j+r)/(j+1) * mean/(r+mean).
class PmfWalk {
 public:
  explicit PmfWalk(const CountDistribution& d) noexcept
      : poisson_(is_poisson(d)), log_p_(log_probability(d, 0)) {
    if (poisson_) {
      log_step_ = std::log(d.mean);
    } else {
      r_ = 1.0 / d.dispersion;
      log_step_ = std::log(d.mean / (r_ + d.mean));
    }
    mode_ = d.mean;
  }
  [[nodiscard]] double probability() const noexcept { return std::exp(log_p_); }
  [[nodiscard]] std::uint64_t at() const noexcept { return j_; }
  /// True once past the mean and the terms can no longer move a sum near 1.
  [[nodiscard]] bool negligible_tail() const noexcept {
    return static_cast<double>(j_) > mode_ && log_p_ < -45.0;
  }
  void next() noexcept {
    const double j = static_cast<double>(j_);
    log_p_ += log_step_ - std::log(j + 1.0) + (poisson_ ? 0.0 : std::log(j + r_));
    ++j_;
  }

 private:
  bool poisson_;
  double log_p_;
  double log_step_ = 0.0;
  double r_ = 0.0;
  double mode_ = 0.0;
  std::uint64_t j_ = 0;
};

/// {F(y-1), F(y)}.
std::pair<double, double> cdf_around(const CountDistribution& d, std::uint32_t y) noexcept {
  if (!(d.mean > 0.0)) return y == 0 ? std::pair{0.0, 1.0} : std::pair{1.0, 1.0};
  PmfWalk walk(d);
  double below = 0.0;
  while (walk.at() < y) {
    below += walk.probability();
    if (walk.negligible_tail()) return {std::min(below, 1.0), std::min(below, 1.0)};
    walk.next();
  }
  below = std::min(below, 1.0);
  return {below, std::min(below + walk.probability(), 1.0)};
}

/// Regularized lower incomplete gamma P(a, x) by its power series (A&S 6.5.29), x < a + 1.
double gamma_p_series(double a, double x) noexcept {
  double term = 1.0 / a;
  double sum = term;
  for (int n = 1; n < 1000; ++n) {
    term *= x / (a + n);
    sum += term;
    if (std::abs(term) < std::abs(sum) * 1e-16) break;
  }
  return sum * std::exp(-x + a * std::log(x) - std::lgamma(a));
}

/// Regularized upper incomplete gamma Q(a, x) by its continued fraction (A&S 6.5.31), evaluated
/// with the modified Lentz method, x >= a + 1.
double gamma_q_fraction(double a, double x) noexcept {
  constexpr double tiny = 1e-300;
  double b = x + 1.0 - a;
  double c = 1.0 / tiny;
  double d = 1.0 / b;
  double h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::abs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1.0) < 1e-16) break;
  }
  return std::exp(-x + a * std::log(x) - std::lgamma(a)) * h;
}

/// The continued fraction of the regularized incomplete beta I_x(a, b) (Abramowitz & Stegun
/// 26.5.8), evaluated by the modified Lentz method; converges fast for x < (a + 1) / (a + b + 2).
double beta_fraction(double a, double b, double x) noexcept {
  constexpr double tiny = 1e-300;
  double c = 1.0;
  double d = 1.0 - (a + b) * x / (a + 1.0);
  if (std::abs(d) < tiny) d = tiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m < 1000; ++m) {
    const double m2 = 2.0 * m;
    // Even step: m (b - m) x / ((a + 2m - 1)(a + 2m)); odd step: -(a + m)(a + b + m) x / ((a +
    // 2m)(a + 2m + 1)).
    for (const double coefficient : {m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                                     -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))}) {
      d = 1.0 + coefficient * d;
      if (std::abs(d) < tiny) d = tiny;
      c = 1.0 + coefficient / c;
      if (std::abs(c) < tiny) c = tiny;
      d = 1.0 / d;
      h *= d * c;
    }
    if (std::abs(d * c - 1.0) < 1e-15) break;
  }
  return h;
}

/// I_x(a, b), the regularized incomplete beta function, for x in [0, 1].
double regularized_beta(double a, double b, double x) noexcept {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_fraction(a, b, x) / a;
  return 1.0 - front * beta_fraction(b, a, 1.0 - x) / b;
}

/// Midranks (1-based, ties get their average) of a weighted sample: `order` sorts `values`
/// ascending; item i counts weight[i] times. Items of weight 0 get a rank that is never used.
void weighted_midranks(std::span<const double> values, std::span<const std::size_t> order,
                       std::span<const double> weight, std::span<double> ranks) noexcept {
  double before = 0.0;
  std::size_t start = 0;
  while (start < order.size()) {
    std::size_t end = start;
    double group = 0.0;
    while (end < order.size() && values[order[end]] == values[order[start]]) {
      group += weight[order[end]];
      ++end;
    }
    const double rank = before + (group + 1.0) / 2.0;
    for (std::size_t k = start; k < end; ++k) ranks[order[k]] = rank;
    before += group;
    start = end;
  }
}

double weighted_pearson(std::span<const double> x, std::span<const double> y,
                        std::span<const double> w) noexcept {
  double sw = 0, sx = 0, sy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sw += w[i];
    sx += w[i] * x[i];
    sy += w[i] * y[i];
  }
  if (!(sw > 1.0)) return kNaN;
  const double mx = sx / sw;
  const double my = sy / sw;
  double sxx = 0, syy = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double dx = x[i] - mx;
    const double dy = y[i] - my;
    sxx += w[i] * dx * dx;
    syy += w[i] * dy * dy;
    sxy += w[i] * dx * dy;
  }
  if (!(sxx > 0.0) || !(syy > 0.0)) return kNaN;
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

std::vector<std::size_t> argsort(std::span<const double> values) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  return order;
}

/// Standard normal quantile Phi^-1(p), p in (0, 1): Acklam's rational approximation (relative
/// error < 1.2e-9) refined by one Halley step on erfc, which brings it to double precision.
double normal_quantile(double p) noexcept {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double low = 0.02425;
  double x = 0.0;
  if (p < low) {
    const double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else if (p <= 1.0 - low) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  } else {
    const double q = std::sqrt(-2.0 * std::log(1.0 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  const double e = 0.5 * std::erfc(-x / std::numbers::sqrt2) - p;
  const double u = e * std::sqrt(2.0 * std::numbers::pi) * std::exp(x * x / 2.0);
  return x - u / (1.0 + x * u / 2.0);
}

/// Phi^-1 of a PIT value, clamped so that a PIT of exactly 0 or 1 (a count the model gave no
/// mass) stays finite.
double pit_z(double u01) noexcept {
  return normal_quantile(std::clamp(u01, 1e-15, 1.0 - 1e-15));
}

/// Type-7 (linear interpolation) sample quantile of sorted values.
double sorted_quantile(const std::vector<double>& sorted, double p) noexcept {
  const double h = p * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

void check_prediction(const CountDistribution& d) {
  if (!std::isfinite(d.mean) || d.mean < 0.0 || !std::isfinite(d.dispersion) ||
      d.dispersion < 0.0) {
    throw std::invalid_argument(
        "ModelCheck: a prediction's mean or dispersion is not finite "
        "and >= 0");
  }
}

}  // namespace

double cumulative_probability(const CountDistribution& distribution, std::int64_t k) noexcept {
  if (k < 0) return 0.0;
  const auto y = static_cast<std::uint32_t>(
      std::min<std::int64_t>(k, std::numeric_limits<std::uint32_t>::max()));
  return cdf_around(distribution, y).second;
}

double randomized_pit(const CountDistribution& distribution, std::uint32_t count,
                      double v) noexcept {
  const auto [below, at] = cdf_around(distribution, count);
  return below + v * (at - below);
}

std::uint32_t count_quantile(const CountDistribution& distribution, double p) noexcept {
  if (!(distribution.mean > 0.0)) return 0;
  PmfWalk walk(distribution);
  double sum = 0.0;
  for (;;) {
    sum += walk.probability();
    if (sum >= p || walk.negligible_tail() ||
        walk.at() >= std::numeric_limits<std::uint32_t>::max()) {
      return static_cast<std::uint32_t>(walk.at());
    }
    walk.next();
  }
}

double chi_square_survival(double x, double dof) noexcept {
  if (!(dof > 0.0) || std::isnan(x)) return kNaN;
  if (x <= 0.0) return 1.0;
  const double a = dof / 2.0;
  const double half = x / 2.0;
  if (half < a + 1.0) return std::clamp(1.0 - gamma_p_series(a, half), 0.0, 1.0);
  return std::clamp(gamma_q_fraction(a, half), 0.0, 1.0);
}

double student_t_survival(double t, double dof) noexcept {
  if (!(dof > 0.0) || std::isnan(t)) return kNaN;
  if (std::isinf(t)) return t > 0.0 ? 0.0 : 1.0;
  // P(T > |t|) = I_{dof / (dof + t^2)}(dof / 2, 1/2) / 2.
  const double tail = 0.5 * regularized_beta(0.5 * dof, 0.5, dof / (dof + t * t));
  return t >= 0.0 ? tail : 1.0 - tail;
}

double kolmogorov_survival(double d, std::size_t n) noexcept {
  if (n == 0 || std::isnan(d)) return kNaN;
  const double rn = std::sqrt(static_cast<double>(n));
  const double t = (rn + 0.12 + 0.11 / rn) * d;
  if (t <= 0.0) return 1.0;
  if (t < 1.18) {
    // The same function through the Jacobi theta identity, which converges fast for small t:
    // 1 - Q_KS(t) = sqrt(2 pi)/t sum_{j>=1} exp(-(2j-1)^2 pi^2 / (8 t^2)).
    const double f = -std::numbers::pi * std::numbers::pi / (8.0 * t * t);
    double sum = 0.0;
    for (int j = 1; j <= 50; ++j) {
      const double k = 2.0 * j - 1.0;
      sum += std::exp(f * k * k);
    }
    return std::clamp(1.0 - std::sqrt(2.0 * std::numbers::pi) / t * sum, 0.0, 1.0);
  }
  double sum = 0.0;
  double sign = 1.0;
  for (int j = 1; j <= 100; ++j) {
    sum += sign * std::exp(-2.0 * j * j * t * t);
    sign = -sign;
  }
  return std::clamp(2.0 * sum, 0.0, 1.0);
}

double spearman_correlation(std::span<const double> x, std::span<const double> y) {
  if (x.size() != y.size()) throw std::invalid_argument("spearman_correlation: sizes differ");
  if (x.size() < 2) return kNaN;
  const std::vector<double> ones(x.size(), 1.0);
  std::vector<double> rx(x.size()), ry(y.size());
  weighted_midranks(x, argsort(x), ones, rx);
  weighted_midranks(y, argsort(y), ones, ry);
  return weighted_pearson(rx, ry, ones);
}

double encompassing_weight(double rival_mean, const CountDistribution& prediction) noexcept {
  // The variance is floored at 1/4, so that a near-silent prediction does not take all the
  // weight. With z close to the standardised residual, sum w z is the score statistic for a true
  // mean m + lambda (m_rival - m) at lambda = 0, the locally most powerful direction (with the
  // statistic pooled over units, log-ratio weights gave the leading, wrong twin a smaller one in
  // 15 of 18 two-lobe columns, bench_efficiency).
  return (rival_mean - prediction.mean) /
         std::sqrt(std::max(prediction.variance(), kEncompassingVarianceFloor));
}

void score_criticism_candidates(std::span<const PredictionBatch> predictions, std::span<double> out,
                                std::span<const std::vector<double>> rival_differences) noexcept {
  if (predictions.size() < 2) return;
  const std::size_t rivals = predictions.size() - 1;
  const std::size_t candidates = predictions[0].candidates;
  const std::size_t units = predictions[0].units;
  if (out.size() != predictions.size() * rivals * candidates) return;
  for (const PredictionBatch& batch : predictions) {
    if (batch.candidates != candidates || batch.units != units ||
        batch.mean.size() != candidates * units || batch.dispersion.size() != candidates * units) {
      return;
    }
  }
  const bool directed = !rival_differences.empty();
  if (directed) {
    if (rival_differences.size() != predictions.size()) return;
    for (const std::vector<double>& d : rival_differences) {
      if (d.size() != candidates * rivals * units) return;
    }
  }
  for (std::size_t leader = 0; leader < predictions.size(); ++leader) {
    const PredictionBatch& own = predictions[leader];
    for (std::size_t r = 0; r < rivals; ++r) {
      const PredictionBatch& rival = predictions[rival_hypothesis(leader, r)];
      double* row = out.data() + (leader * rivals + r) * candidates;
      for (std::size_t c = 0; c < candidates; ++c) {
        double score = 0.0;
        for (std::size_t u = 0; u < units; ++u) {
          const CountDistribution prediction = own.at(c, u);
          const double w =
              directed
                  ? encompassing_weight(
                        prediction.mean + rival_differences[leader][(c * rivals + r) * units + u],
                        prediction)
                  : encompassing_weight(rival.mean[c * units + u], prediction);
          score += w * w;
        }
        row[c] = score;
      }
    }
  }
}

ModelCheck::ModelCheck(std::size_t units, ModelCheckOptions options)
    : units_(units),
      options_(options),
      rng_(options.seed),
      designed_rng_(options.seed ^ 0x72697661ULL),
      unit_spikes_(units, 0),
      unit_log_factorials_(units, 0.0) {
  if (units == 0) throw std::invalid_argument("ModelCheck: no units");
  if (options.bins < 2) throw std::invalid_argument("ModelCheck: need at least 2 bins");
  if (!(options.alpha > 0.0 && options.alpha < 1.0)) {
    throw std::invalid_argument("ModelCheck: alpha must be in (0, 1)");
  }
  if (!(options.interval > 0.0 && options.interval < 1.0)) {
    throw std::invalid_argument("ModelCheck: interval must be in (0, 1)");
  }
  if (!(options.confidence > 0.0 && options.confidence < 1.0)) {
    throw std::invalid_argument("ModelCheck: confidence must be in (0, 1)");
  }
}

void ModelCheck::validate_trial(std::span<const CountDistribution> predictions,
                                std::span<const std::uint32_t> counts,
                                std::span<const double> rival_means, const char* caller) const {
  if (predictions.size() != units_ || counts.size() != units_) {
    throw std::invalid_argument(std::string(caller) + ": " + std::to_string(predictions.size()) +
                                " predictions and " + std::to_string(counts.size()) +
                                " counts for " + std::to_string(units_) + " units");
  }
  for (const auto& d : predictions) check_prediction(d);
  const std::size_t rivals = rival_means.size() / units_;
  if (rival_means.size() % units_ != 0 ||
      (!rival_means.empty() && !rival_sum_.empty() && rivals != rival_sum_.size())) {
    throw std::invalid_argument(std::string(caller) + ": " + std::to_string(rival_means.size()) +
                                " rival means for " + std::to_string(units_) + " units and " +
                                std::to_string(rival_sum_.size()) + " rivals so far");
  }
  for (const double m : rival_means) {
    if (!std::isfinite(m)) {
      throw std::invalid_argument(std::string(caller) + ": rival mean " + std::to_string(m) +
                                  " is not finite");
    }
  }
}

void ModelCheck::open_trial_scores(std::size_t rivals) {
  if (rivals > 0 && rival_sum_.empty()) {
    rival_sum_.assign(rivals, 0.0);
    rival_square_.assign(rivals, 0.0);
    rival_information_.assign(rivals, 0.0);
    rival_information_square_.assign(rivals, 0.0);
    trial_score_.assign(rivals, 0.0);
    trial_information_.assign(rivals, 0.0);
  }
  std::fill(trial_score_.begin(), trial_score_.end(), 0.0);
  std::fill(trial_information_.begin(), trial_information_.end(), 0.0);
}

void ModelCheck::add_unit_scores(std::size_t unit, const CountDistribution& prediction, double z,
                                 std::span<const double> rival_means) noexcept {
  for (std::size_t j = 0; j < rival_sum_.size() && !rival_means.empty(); ++j) {
    const double w = encompassing_weight(rival_means[j * units_ + unit], prediction);
    trial_score_[j] += w * z;
    trial_information_[j] += w * w;
  }
}

void ModelCheck::close_trial_scores() noexcept {
  for (std::size_t j = 0; j < trial_score_.size(); ++j) {
    rival_sum_[j] += trial_score_[j];
    rival_square_[j] += trial_score_[j] * trial_score_[j];
    rival_information_[j] += trial_information_[j];
    rival_information_square_[j] += trial_information_[j] * trial_information_[j];
  }
}

void ModelCheck::add_trial(std::span<const CountDistribution> predictions,
                           std::span<const std::uint32_t> counts,
                           std::span<const double> rival_means) {
  validate_trial(predictions, counts, rival_means, "ModelCheck::add_trial");
  open_trial_scores(rival_means.size() / units_);
  const double lo = (1.0 - options_.interval) / 2.0;
  const double hi = 1.0 - lo;
  double z_sum = 0.0;
  for (std::size_t u = 0; u < units_; ++u) {
    const CountDistribution& d = predictions[u];
    const std::uint32_t y = counts[u];
    const double u01 = randomized_pit(d, y, uniform01(rng_));
    pit_.push_back(u01);
    const double z = pit_z(u01);
    z_sum += z;
    add_unit_scores(u, d, z, rival_means);
    predicted_mean_.push_back(d.mean);
    observed_.push_back(static_cast<double>(y));
    const std::uint32_t q_lo = count_quantile(d, lo);
    const std::uint32_t q_hi = count_quantile(d, hi);
    if (y >= q_lo && y <= q_hi) ++in_interval_;
    expected_in_interval_ += cumulative_probability(d, q_hi) -
                             cumulative_probability(d, static_cast<std::int64_t>(q_lo) - 1);
    log_likelihood_ += log_probability(d, y);
    unit_spikes_[u] += y;
    unit_log_factorials_[u] += std::lgamma(static_cast<double>(y) + 1.0);
  }
  coherence_ += z_sum * z_sum / static_cast<double>(units_);
  close_trial_scores();
  ++trials_;
}

void ModelCheck::add_trial(const PredictionBatch& batch, std::size_t candidate,
                           std::span<const std::uint32_t> counts) {
  if (candidate >= batch.candidates || batch.units != units_) {
    throw std::invalid_argument(
        "ModelCheck::add_trial: batch of " + std::to_string(batch.candidates) + " x " +
        std::to_string(batch.units) + " has no candidate " + std::to_string(candidate) + " for " +
        std::to_string(units_) + " units");
  }
  std::vector<CountDistribution> row(units_);
  for (std::size_t u = 0; u < units_; ++u) row[u] = batch.at(candidate, u);
  add_trial(row, counts);
}

void ModelCheck::add_designed_trial(std::span<const CountDistribution> predictions,
                                    std::span<const std::uint32_t> counts,
                                    std::span<const double> rival_means) {
  validate_trial(predictions, counts, rival_means, "ModelCheck::add_designed_trial");
  if (rival_means.empty()) return;  // a lone hypothesis: nothing to lean toward
  open_trial_scores(rival_means.size() / units_);
  for (std::size_t u = 0; u < units_; ++u) {
    const double u01 = randomized_pit(predictions[u], counts[u], uniform01(designed_rng_));
    add_unit_scores(u, predictions[u], pit_z(u01), rival_means);
  }
  close_trial_scores();
  ++designed_trials_;
}

double bits_per_spike_against(const ModelCheckResult& model,
                              const ModelCheckResult& reference) noexcept {
  if (model.spikes == 0 || model.trials != reference.trials || model.spikes != reference.spikes) {
    return kNaN;
  }
  return (model.log_likelihood - reference.log_likelihood) /
         (static_cast<double>(model.spikes) * std::numbers::ln2);
}

double reported_bits_per_spike(const ModelCheckResult& model,
                               const ModelCheckResult* null) noexcept {
  return null != nullptr ? bits_per_spike_against(model, *null)
                         : model.bits_per_spike_vs_constant_rate;
}

std::size_t ModelCheck::informative_rivals() const noexcept {
  return static_cast<std::size_t>(std::count_if(
      rival_information_.begin(), rival_information_.end(), [](double w) { return w > 0.0; }));
}

double ModelCheck::test_count() const noexcept {
  return 2.0 + (options_.trial_coherence && units_ >= 2 ? 1.0 : 0.0) +
         (informative_rivals() == 0 ? 0.0 : 1.0);
}

double ModelCheck::rival_critical_t() const noexcept {
  // The check fails when its Bonferroni p-value over its tests falls below alpha, i.e. when one
  // rival's one-sided p falls below alpha / (tests x rivals): Student's t at the test's degrees
  // of freedom, by bisection.
  const auto scored_trials = static_cast<double>(trials_ + designed_trials_);
  const std::size_t rivals = informative_rivals();
  if (rivals == 0 || scored_trials < 2.0) return kNaN;
  const double tail = options_.alpha / (test_count() * static_cast<double>(rivals));
  // 1e3 is far beyond any critical t this check meets (a tail of 1e-4 at 1 degree of freedom is
  // t = 3183, where the power is 0 either way); 60 halvings reach double precision.
  double lo = 0.0, hi = 1e3;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_survival(mid, scored_trials - 1.0) > tail ? lo : hi) = mid;
  }
  return hi;
}

double ModelCheck::halfway_power(std::size_t rival, double critical_t) const noexcept {
  if (std::isnan(critical_t)) return 0.0;
  // Were each count's mean shifted by lambda (rival - prediction), each unit's z would move by
  // about lambda w, so trial t's score s_t by lambda W_t (W_t = its sum of w^2) with variance
  // W_t. The t statistic's numerator is then lambda sum(W_t); its denominator, the scores'
  // sample spread, holds sum(W_t) plus lambda^2 times the spread of the W_t among trials: trials
  // that say much and trials that say little, as a session mixes them, make the shift itself
  // look like noise.
  constexpr double kHalfway = 0.5;
  const double n = static_cast<double>(trials_ + designed_trials_);
  const double information = rival_information_[rival];
  const double spread_of_information =
      std::max(rival_information_square_[rival] - information * information / n, 0.0);
  const double variance = information + kHalfway * kHalfway * spread_of_information;
  if (!(variance > 0.0)) return 0.0;
  const double noncentrality = kHalfway * information / std::sqrt(variance);
  return 0.5 * std::erfc(-(noncentrality - critical_t) / std::numbers::sqrt2);
}

double ModelCheck::weakest_encompassing_power() const noexcept {
  if (informative_rivals() == 0) return kNaN;
  const double critical_t = rival_critical_t();
  double weakest = 1.0;
  for (std::size_t j = 0; j < rival_sum_.size(); ++j) {
    if (rival_information_[j] > 0.0) weakest = std::min(weakest, halfway_power(j, critical_t));
  }
  return weakest;
}

ModelCheckResult ModelCheck::result() const {
  ModelCheckResult r;
  r.trials = trials_;
  r.values = pit_.size();
  r.encompassing_trials = informative_rivals() == 0 ? 0 : trials_ + designed_trials_;
  double rival_smallest = 1.0;
  const auto scored_trials = static_cast<double>(trials_ + designed_trials_);
  const double tests = test_count();
  r.tests = tests;
  const double critical_t = rival_critical_t();
  for (std::size_t j = 0; j < rival_sum_.size(); ++j) {
    if (!(rival_information_[j] > 0.0)) {
      // Nothing to lean toward on any trial: this hypothesis contains the rival near its fits
      // (or the rival's predictions equal its own). No test, and none counted by Bonferroni.
      r.encompassing_lean.push_back(kNaN);
      r.encompassing_z.push_back(kNaN);
      r.encompassing_power.push_back(kNaN);
      continue;
    }
    // Each trial's score s_t = sum over units of w z; the units of a trial share its stimulus
    // and, on a probe, spikes and noise, so the trial is the independent unit. Student's t of
    // the scores against 0, one-sided: only counts that lean toward the rival say that it knows
    // something this hypothesis does not, and a fit shrunk toward the rival by its prior leans
    // away. The t-test is conservative for symmetric scores of unequal variances (Efron 1969,
    // J. Am. Stat. Assoc. 64:1278). Reported as the normal score of its p-value.
    const double t = student_t_of_scores(rival_sum_[j], rival_square_[j], scored_trials);
    r.encompassing_lean.push_back(rival_sum_[j] / rival_information_[j]);
    const double p = std::isnan(t) ? 1.0 : student_t_survival(t, scored_trials - 1.0);
    r.encompassing_z.push_back(-normal_quantile(std::clamp(p, 1e-300, 1.0 - 1e-16)));
    rival_smallest = std::min(rival_smallest, p);
    r.encompassing_power.push_back(halfway_power(j, critical_t));
  }
  if (const std::size_t rivals = informative_rivals(); rivals > 0) {
    r.encompassing_p_value = std::min(1.0, static_cast<double>(rivals) * rival_smallest);
  }
  r.enough_data = r.values >= options_.min_values && r.values > 0;
  r.histogram.assign(options_.bins, 0);
  const auto n = static_cast<double>(r.values);

  if (r.values > 0) {
    // Uniformity: Pearson chi-square on equal bins and Kolmogorov–Smirnov.
    const double lo = (1.0 - options_.interval) / 2.0;
    const double hi = 1.0 - lo;
    std::size_t covered = 0;
    for (const double u : pit_) {
      const auto bin = std::min(options_.bins - 1,
                                static_cast<std::size_t>(u * static_cast<double>(options_.bins)));
      ++r.histogram[bin];
      if (u >= lo && u <= hi) ++covered;
    }
    const double expected = n / static_cast<double>(options_.bins);
    for (const std::size_t observed : r.histogram) {
      const double diff = static_cast<double>(observed) - expected;
      r.chi_square += diff * diff / expected;
    }
    r.chi_square_p_value =
        chi_square_survival(r.chi_square, static_cast<double>(options_.bins - 1));
    std::vector<double> sorted = pit_;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      const double above = static_cast<double>(i + 1) / n - sorted[i];
      const double below = sorted[i] - static_cast<double>(i) / n;
      r.ks_statistic = std::max({r.ks_statistic, above, below});
    }
    r.ks_p_value = kolmogorov_survival(r.ks_statistic, r.values);
    double smallest = std::min(r.chi_square_p_value, r.ks_p_value);
    if (options_.trial_coherence && units_ >= 2) {
      r.coherence_chi_square = coherence_;
      r.coherence_p_value = chi_square_survival(coherence_, static_cast<double>(trials_));
      smallest = std::min(smallest, r.coherence_p_value);
    }
    if (informative_rivals() > 0) smallest = std::min(smallest, r.encompassing_p_value);
    r.p_value = std::min(1.0, tests * smallest);
    r.fits = r.enough_data && r.p_value >= options_.alpha;

    r.coverage = static_cast<double>(covered) / n;
    r.interval_coverage = static_cast<double>(in_interval_) / n;
    r.expected_interval_coverage = expected_in_interval_ / n;
  }

  // Bits per spike against a constant-rate Poisson per unit at its mean count: for unit u with
  // S_u spikes over T trials, LL_constant = S_u log(S_u / T) - S_u - sum log(y!).
  r.log_likelihood = log_likelihood_;
  const auto t = static_cast<double>(trials_);
  for (std::size_t u = 0; u < units_; ++u) {
    const auto s = static_cast<double>(unit_spikes_[u]);
    if (s > 0.0) r.constant_rate_log_likelihood += s * std::log(s / t) - s;
    r.constant_rate_log_likelihood -= unit_log_factorials_[u];
    r.spikes += unit_spikes_[u];
  }
  r.bits_per_spike_vs_constant_rate = r.spikes == 0
                                          ? kNaN
                                          : (r.log_likelihood - r.constant_rate_log_likelihood) /
                                                (static_cast<double>(r.spikes) * std::numbers::ln2);

  // Spearman rho with a trial-resampling percentile bootstrap.
  r.spearman = spearman_correlation(predicted_mean_, observed_);
  r.spearman_ci_low = kNaN;
  r.spearman_ci_high = kNaN;
  if (!std::isnan(r.spearman) && options_.bootstrap_resamples > 0 && trials_ > 1) {
    const std::vector<std::size_t> order_x = argsort(predicted_mean_);
    const std::vector<std::size_t> order_y = argsort(observed_);
    const std::size_t pairs = predicted_mean_.size();
    std::vector<double> trial_weight(trials_), weight(pairs), rx(pairs), ry(pairs);
    std::vector<double> rhos;
    rhos.reserve(options_.bootstrap_resamples);
    std::mt19937_64 rng(options_.seed ^ 0x9e3779b97f4a7c15ULL);
    for (std::size_t b = 0; b < options_.bootstrap_resamples; ++b) {
      std::fill(trial_weight.begin(), trial_weight.end(), 0.0);
      for (std::size_t k = 0; k < trials_; ++k) {
        const auto pick = std::min(trials_ - 1, static_cast<std::size_t>(uniform01(rng) * t));
        trial_weight[pick] += 1.0;
      }
      for (std::size_t i = 0; i < pairs; ++i) weight[i] = trial_weight[i / units_];
      weighted_midranks(predicted_mean_, order_x, weight, rx);
      weighted_midranks(observed_, order_y, weight, ry);
      const double rho = weighted_pearson(rx, ry, weight);
      if (!std::isnan(rho)) rhos.push_back(rho);
    }
    // A resample with a constant side has no rho; if that is common the interval means little.
    if (rhos.size() * 2 > options_.bootstrap_resamples) {
      std::sort(rhos.begin(), rhos.end());
      const double tail = (1.0 - options_.confidence) / 2.0;
      r.spearman_ci_low = sorted_quantile(rhos, tail);
      r.spearman_ci_high = sorted_quantile(rhos, 1.0 - tail);
    }
  }
  return r;
}

namespace {

/// The name of `hypothesis`'s rival number `rival`, in its check's order.
std::string rival_name(const Posterior& posterior, std::size_t hypothesis, std::size_t rival) {
  const std::size_t j = rival_hypothesis(hypothesis, rival);
  return j < posterior.size() ? posterior.names()[j] : std::string("another");
}

std::string printed(const char* format, double value) {
  std::array<char, 32> text{};
  std::snprintf(text.data(), text.size(), format, value);
  return text.data();
}

/// Which of a failed check's tests gave its smallest p-value, in words: ": its PIT values are not
/// uniform", or ": its counts lean toward what 'other' predicted (encompassing z = 3.4, 12% of the
/// way)".
std::string failing_test(const ModelCheckResult& check, const Posterior& posterior,
                         std::size_t hypothesis) {
  const double pit = std::min(check.chi_square_p_value, check.ks_p_value);
  const double coherence = check.coherence_p_value;
  if (check.encompassing_z.empty() || check.encompassing_p_value > std::min(pit, coherence)) {
    return coherence < pit ? ": its errors are shared across units (trial coherence)"
                           : ": its PIT values are not uniform";
  }
  // Rivals this hypothesis contains have no statistic (NaN) and never fail it.
  std::size_t largest = 0;
  for (std::size_t r = 0; r < check.encompassing_z.size(); ++r) {
    const double z = check.encompassing_z[r];
    if (!std::isnan(z) &&
        (std::isnan(check.encompassing_z[largest]) || z > check.encompassing_z[largest])) {
      largest = r;
    }
  }
  std::string how_far;
  if (largest < check.encompassing_lean.size()) {
    how_far = ", " + printed("%.0f", 100.0 * check.encompassing_lean[largest]) + "% of the way";
  }
  return ": its counts lean toward what '" + rival_name(posterior, hypothesis, largest) +
         "' predicted (encompassing z = " + printed("%.1f", check.encompassing_z[largest]) +
         how_far + ")";
}

/// What a pass is worth where it is worth least: "; it would have caught counts halfway toward
/// 'other' with probability 0.42", for the rival the check could see least of; empty without
/// rivals.
std::string weakest_power_phrase(const ModelCheckResult& check, const Posterior& posterior,
                                 std::size_t hypothesis) {
  std::optional<std::size_t> weakest;
  for (std::size_t r = 0; r < check.encompassing_power.size(); ++r) {
    const double power = check.encompassing_power[r];
    if (!std::isnan(power) && (!weakest || power < check.encompassing_power[*weakest])) weakest = r;
  }
  if (!weakest) return {};
  return "; it would have caught counts halfway toward '" +
         rival_name(posterior, hypothesis, *weakest) + "' with probability " +
         printed("%.2f", check.encompassing_power[*weakest]);
}

}  // namespace

Verdict decide(const Posterior& posterior, std::span<const ModelCheckResult> checks,
               double probability_threshold) {
  if (checks.size() != posterior.size()) {
    throw std::invalid_argument("decide: " + std::to_string(checks.size()) + " model checks for " +
                                std::to_string(posterior.size()) + " hypotheses");
  }
  if (!(probability_threshold > 0.0 && probability_threshold <= 1.0)) {
    throw std::invalid_argument("decide: probability threshold must be in (0, 1]");
  }
  Verdict v;
  v.leader = posterior.leader();
  v.leader_probability = posterior.probability(v.leader);
  const std::string& leader = posterior.leader_name();
  const auto none = [&](std::string reason) {
    v.kind = VerdictKind::none_fits;
    v.name = "none";
    v.reason = std::move(reason);
    return v;
  };
  const auto undecided = [&](std::string reason) {
    v.kind = VerdictKind::undecided;
    v.name = "undecided";
    v.reason = std::move(reason);
    return v;
  };

  if (posterior.all_refuted()) {
    return none("every hypothesis gave zero probability to an observed count");
  }
  const bool all_checked_and_failed =
      std::all_of(checks.begin(), checks.end(),
                  [](const ModelCheckResult& c) { return c.enough_data && !c.fits; });
  if (all_checked_and_failed) {
    return none("no hypothesis passes its model check (each fails its PIT or encompassing test)");
  }
  if (v.leader_probability < probability_threshold) {
    // Enough digits that the two numbers printed differ (0.9999989 < 0.999999, not 0.999999 <
    // 0.999999).
    const auto digits = [](double p) {
      std::array<char, 32> text{};
      std::snprintf(text.data(), text.size(), "%.10g", p);
      return std::string(text.data());
    };
    return undecided("leader '" + leader + "' has posterior probability " +
                     digits(v.leader_probability) + " < threshold " +
                     digits(probability_threshold));
  }
  const ModelCheckResult& check = checks[v.leader];
  if (!check.enough_data) {
    return undecided("leader '" + leader + "' is ahead but has only " +
                     std::to_string(check.values) + " checked values: too few to judge its fit");
  }
  if (!check.fits) {
    return none("leader '" + leader + "' is ahead but fails its model check (p = " +
                std::to_string(check.p_value) + ")" + failing_test(check, posterior, v.leader));
  }
  v.kind = VerdictKind::winner;
  v.name = leader;
  v.reason = "'" + leader + "' has posterior probability " + std::to_string(v.leader_probability) +
             " and passes its model check (p = " + std::to_string(check.p_value) + ")" +
             weakest_power_phrase(check, posterior, v.leader);
  return v;
}

}  // namespace twinloop::twin

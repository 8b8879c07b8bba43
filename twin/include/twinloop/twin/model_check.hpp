// Model criticism for twin hypotheses: does a hypothesis's predictive distribution actually
// describe the counts it predicted, and what does the session summary say about it. The
// posterior only ranks hypotheses against each other; it always has a leader, even when every
// hypothesis is wrong. This file supplies the absolute check, so that such a session ends with
// "none fits" instead of a false winner, and the verdict that combines the two.
//
// Calibration: the randomized probability integral transform for counts (Smith 1985, Ann. Stat.
// 13:1034; Czado, Gneiting & Held 2009, Biometrics 65:1254): u = F(y-1) + v (F(y) - F(y-1)),
// v ~ U(0,1), with F the predictive CDF. If the predictive distribution is right, u is exactly
// U(0,1) and independent across conditionally independent observations. Uniformity of the pooled
// u (every unit of every trial fed in) is tested two ways: Pearson's chi-square on equal bins
// (df = bins - 1) and Kolmogorov–Smirnov (asymptotic Kolmogorov distribution with Stephens's
// finite-n correction, Stephens 1970, J. R. Stat. Soc. B 32:115).
//
// Pooled uniformity is weak against a model that is wrong only at some stimuli (a second lobe it
// cannot have): the few misfitted values drown in the many good ones. The third test uses what a
// population shares: one trial's units all saw the same stimulus, so a model wrong about that
// stimulus tends to be wrong in the same direction for units with similar tuning (one column).
// With z = Phi^-1(u) (standard normal under a right model, independent across units given the
// stimulus), each trial's S_t = sum_u z_tu / sqrt(U) is N(0, 1), and sum_t S_t^2 is chi-square
// with T degrees of freedom (the "trial coherence" test). It is exact under the same assumptions
// as the PIT, and it also rejects predictions that treat correlated units as independent (shared
// gain), which the posterior's sum of per-unit log-likelihoods would otherwise overrate.
// It is OFF by default: it is only as exact as the predictions are calibrated, and the built-in
// twins' predictions from a few dozen trials share their errors across the units of one column
// (the same prior shrinkage, the same trials), which the test reads as a misfit. Carrying the
// parameter uncertainty (posterior predictive twins) does not cure it: on a column of 16
// direction-tuned units, 100 sessions, it rejected the TRUE model in 34 (the check without it:
// 1), `bench_check_size --coherence --spread 15`. It needs twins that model what units share.
//
// Calibration is not enough: a stimulus-blind prediction (the null's, with a dispersion wide enough
// for the whole session's spread) is calibrated on trials drawn at random, and on a column of 8
// tuned units the null passed the PIT tests in most sessions. The encompassing test asks instead
// whether another hypothesis knows something this one does not: whether this one's errors lean
// toward what a rival predicted (forecast encompassing; Chong & Hendry 1986, Rev. Econ. Stud.
// 53:671; Harvey, Leybourne & Newbold 1998, J. Bus. Econ. Stat. 16:254). Each trial scores s = sum
// over units of w z, with w = (m_rival - m) / sd from predictions registered before the trial (sd
// the prediction's, at least 1/2: the score direction for a true mean m + lambda (m_rival - m)) and
// z = Phi^-1(u) as above. When this hypothesis's predictions are right, s has mean 0 given the past
// whatever chose the stimulus, because w is known before the count. The units of a trial are not
// independent on a probe (neighbouring channels see the same spikes; shared gain), so the trial is
// the unit: Student's t of the scores against 0, one-sided (t > 0). A fit shrunk toward a rival by
// its prior (a true twin from few trials) leans away from it, which is no sign of a missing
// structure; a twin that lacks a second lobe which a rival has, or the null against a tuned rival,
// leans toward it. Because any rule may choose the stimuli, designed trials enter this test too
// (add_designed_trial), and they are where rivals disagree most. encompassing_z is the normal score
// of the t-test's p-value; its p-value is Bonferroni over rivals. docs/session.md gives its size
// and power on the benches.
//
// Fitted forecasts lean toward each other even when one is right: its own estimation error is
// part of the difference to any rival fitted to the same trials, so its misses correlate with
// that difference (West 1996, Econometrica 64:1067), and summed over hundreds of units a right
// twin failed the test. What a rival says that this hypothesis could say itself by moving its
// own parameters is no sign of a missing structure. So a session passes, in place of the
// rival's mean, this prediction's mean plus the rival's difference with this twin's own
// directions removed (twin::Hypothesis::remove_own_directions: the difference's least-squares
// part in the span of the twin's slopes with respect to its parameters, weighted as w weighs a
// unit): the effective score of Neyman's C(alpha) test (Neyman 1959, in Probability and
// Statistics: The Harald Cramer Volume, 213), with this twin's parameters as the nuisance. A rival
// the twin contains near its fit (the null, for a tuned twin) keeps nothing. A rival whose every
// trial had nothing to lean toward (sum of W_t = 0) gets no statistic (NaN z, lean and power) and
// is not counted by Bonferroni.
//
// The reported p_value is the Bonferroni combination min(1, k min(p_i)) over the k tests (the two
// PIT tests, plus coherence when on with >= 2 units, plus encompassing when rivals were given); the
// hypothesis FITS when there are at least min_values PIT values and p_value >= alpha (default
// 0.01). Caveats: units are assumed conditionally independent given the stimulus (noise
// correlations make the tests reject more often than alpha), and with very many values even a
// small, harmless miscalibration is detected.
//
// Coverage of the central 90% predictive interval, two ways: `coverage` is the fraction of u in
// [0.05, 0.95] (expectation exactly 0.90 under a right model); `interval_coverage` is the
// fraction of counts inside the integer interval [q(0.05), q(0.95)] of each prediction, beside
// `expected_interval_coverage`, its expectation under the model (>= 0.90, counts being discrete).
//
// Summary statistics: bits per spike, (LL_model - LL_reference) / (n_spikes ln 2) (Pillow et al.
// 2008, Nature 454:995). The result holds it against a constant Poisson rate per unit at its mean
// count over the checked trials: that reference is fitted to the very counts it scores, so a
// model predicting out of sample from few trials often falls below it.
// bits_per_spike_against() measures one hypothesis against another (the protocol's null) on the
// same trials, both out of sample: the comparison a session reports. Spearman's rank correlation
// between predicted mean and observed count over all (trial, unit) pairs (midranks for ties), with
// a 95% percentile bootstrap interval that resamples whole trials (the units of one trial share its
// stimulus) from a seeded generator.
//
// Feed only trials whose predictions were registered before the trial (validation trials in
// particular), so every check is out of sample. Random numbers come from std::mt19937_64 (its
// sequence is fixed by the standard) with our own conversions, so a seed gives the same result
// on every standard library. Not for the real-time path: add_trial() appends to vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "twinloop/twin/count_distribution.hpp"
#include "twinloop/twin/posterior.hpp"
#include "twinloop/twin/prediction.hpp"

namespace twinloop::twin {

/// F(k) = P(X <= k); 0 for k < 0. Summed from 0 by the pmf recurrence in log space (O(k)).
[[nodiscard]] double cumulative_probability(const CountDistribution& distribution,
                                            std::int64_t k) noexcept;

/// Randomized PIT of count y with v in [0, 1): F(y-1) + v (F(y) - F(y-1)).
[[nodiscard]] double randomized_pit(const CountDistribution& distribution, std::uint32_t count,
                                    double v) noexcept;

/// Smallest k with F(k) >= p (p in (0, 1)), the lower-quantile convention.
[[nodiscard]] std::uint32_t count_quantile(const CountDistribution& distribution,
                                           double p) noexcept;

/// P(X > x) for a chi-square variable with `dof` degrees of freedom: the regularized upper
/// incomplete gamma Q(dof/2, x/2) (series / continued fraction, Abramowitz &
/// Stegun 6.5.29, 6.5.31).
[[nodiscard]] double chi_square_survival(double x, double dof) noexcept;

/// P(T > t) for Student's t with `dof` degrees of freedom, from the regularized incomplete beta
/// (Abramowitz & Stegun 26.7.1, 26.5.8). NaN for dof <= 0.
[[nodiscard]] double student_t_survival(double t, double dof) noexcept;

/// P(D_n > d) for the one-sample Kolmogorov–Smirnov statistic, asymptotic with Stephens's
/// correction: Q_KS((sqrt(n) + 0.12 + 0.11 / sqrt(n)) d), Q_KS(t) = 2 sum (-1)^(j-1) e^(-2 j^2
/// t^2).
[[nodiscard]] double kolmogorov_survival(double d, std::size_t n) noexcept;

/// Spearman's rho (Pearson correlation of midranks). NaN when fewer than 2 pairs or either side
/// is constant. \throws std::invalid_argument when the spans differ in length.
[[nodiscard]] double spearman_correlation(std::span<const double> x, std::span<const double> y);

/// The check's rivals of hypothesis `hypothesis`: every other one, in order. Rival `rival` (its
/// index in rival_means and encompassing_z) is hypothesis rival_hypothesis(hypothesis, rival).
/// rival_means need not be the rivals' own means: a session passes the point its check is to
/// lean toward (the file comment), which may even be negative.
[[nodiscard]] constexpr std::size_t rival_hypothesis(std::size_t hypothesis,
                                                     std::size_t rival) noexcept {
  return rival + (rival >= hypothesis ? 1 : 0);
}

/// The floor on a prediction's variance in the encompassing test's weights, so that a
/// near-silent prediction does not take all the weight (encompassing_weight).
inline constexpr double kEncompassingVarianceFloor = 0.25;

/// The encompassing test's weight of one (trial, unit): how far the rival's mean is from this
/// prediction's, in the prediction's standard deviations (floored at 1/2). Its square, summed
/// over units, is what one trial adds to that test's noncentrality when the truth lies toward
/// the rival.
[[nodiscard]] double encompassing_weight(double rival_mean,
                                         const CountDistribution& prediction) noexcept;

/// Where a criticism trial should look: for every leader k and rival turn r (hypothesis
/// rival_hypothesis(k, r)), each candidate's sum over units of encompassing_weight squared, the
/// noncentrality one trial there adds to the leader's test against that rival. `out` holds
/// K (K - 1) rows of `candidates` values, row k (K - 1) + r; `predictions` has one batch per
/// hypothesis, all of the same shape. `rival_differences`, optional: per hypothesis, the
/// directions its check leans toward instead of the rivals' means (Hypothesis::
/// remove_own_directions), candidate-major ([candidate][rival][unit]); a weight is then the
/// direction over the prediction's standard deviation. Fills `out` without allocating; does
/// nothing when `out` is not that size (a session without criticism trials keeps it empty),
/// the batches differ in shape or the differences are not one per hypothesis of that size.
void score_criticism_candidates(
    std::span<const PredictionBatch> predictions, std::span<double> out,
    std::span<const std::vector<double>> rival_differences = {}) noexcept;

struct ModelCheckOptions {
  std::uint64_t seed = 0x7477696e6c6f6f70;  ///< PIT randomisation and bootstrap
  std::size_t bins = 10;                    ///< chi-square bins on [0, 1)
  double alpha = 0.01;                      ///< fits iff p_value >= alpha
  std::size_t min_values = 100;             ///< fewer PIT values: not enough data to judge
  double interval = 0.90;                   ///< central predictive interval mass
  std::size_t bootstrap_resamples = 1000;   ///< for the Spearman interval; 0 skips it
  double confidence = 0.95;                 ///< of the Spearman interval
  bool trial_coherence = false;  ///< the third test (needs >= 2 units; see the file comment)
};

struct ModelCheckResult {
  std::size_t trials = 0;
  std::size_t values = 0;    ///< PIT values = trials x units
  bool enough_data = false;  ///< values >= min_values
  bool fits = false;         ///< enough_data and p_value >= alpha

  double p_value = 0.0;  ///< Bonferroni min(1, k min(chi-square, KS and coherence p-values))
  double tests = 0.0;    ///< k: the tests that Bonferroni counts (PIT two, coherence, encompassing)
  double chi_square = 0.0;
  double chi_square_p_value = 0.0;
  double ks_statistic = 0.0;
  double ks_p_value = 0.0;
  double coherence_chi_square = 0.0;   ///< sum over trials of (sum_u Phi^-1(u) / sqrt(U))^2
  double coherence_p_value = 1.0;      ///< its chi-square (df = trials) survival; 1 when unused
  std::vector<std::size_t> histogram;  ///< PIT counts per equal bin of [0, 1)
  /// Per rival (in the order given to add_trial): the encompassing statistic, the normal score of
  /// its one-sided p-value (about N(0, 1) when this hypothesis's predictions are right; large
  /// when the counts lean toward what the rival predicted). Empty without rivals; NaN, as are
  /// its lean and power, for a rival with nothing to lean toward on any trial.
  std::vector<double> encompassing_z;
  /// Per rival: how far the counts leaned toward it, as a fraction of the way from this
  /// hypothesis's predictions to the rival's (sum of scores / sum of W_t, the estimate of the
  /// shift lambda in encompassing_power's comment). 0: no lean; 1: the counts sat at the rival's
  /// means. Empty without rivals.
  std::vector<double> encompassing_lean;
  double encompassing_p_value = 1.0;    ///< one-sided, Bonferroni over rivals; 1 without rivals
  std::size_t encompassing_trials = 0;  ///< trials it judged: validation and designed
  /// Per rival: the probability that this check would have failed (through its encompassing
  /// test, at alpha) had every checked count's true mean lain halfway from this hypothesis's
  /// prediction to the rival's. What a pass is worth: near 1, the trials could have shown such a
  /// misfit; near 0, they could not. Normal approximation: with W_t a trial's sum over units of
  /// encompassing_weight^2, noncentrality (1/2) sum W_t / sqrt(sum W_t + (1/4) (sum W_t^2 -
  /// (sum W_t)^2 / n)) against the test's Student's t critical value (tests/twin: 0.37 reported,
  /// 0.30 seen, on alike trials at Poisson means of 3; 0.56 and 0.59 on unequal ones). Optimistic
  /// where a shift is large against its counts' spread, since a PIT then saturates. A rival with
  /// nothing to lean toward (means equal to this hypothesis's, or a rival it contains) has NaN
  /// and is not tested. Empty without rivals.
  std::vector<double> encompassing_power;

  double coverage = 0.0;                    ///< fraction of PIT in the central interval
  double interval_coverage = 0.0;           ///< fraction of counts in [q_lo, q_hi]
  double expected_interval_coverage = 0.0;  ///< its expectation under the predictions

  double log_likelihood = 0.0;  ///< of the checked counts under the predictions (nats)
  double constant_rate_log_likelihood = 0.0;  ///< Poisson at each unit's mean count (nats)
  std::uint64_t spikes = 0;
  double bits_per_spike_vs_constant_rate = 0.0;  ///< NaN when spikes == 0

  double spearman = 0.0;  ///< predicted mean vs observed count; NaN when undefined
  double spearman_ci_low = 0.0;
  double spearman_ci_high = 0.0;
};

/// Bits per spike of `model` against `reference`, both checked on the same trials:
/// (LL_model - LL_reference) / (spikes ln 2). NaN when there are no spikes or the two results
/// cover different trials (their trial or spike totals differ).
[[nodiscard]] double bits_per_spike_against(const ModelCheckResult& model,
                                            const ModelCheckResult& reference) noexcept;

/// Bits per spike as a session reports them: against `null`, the protocol's null hypothesis
/// checked on the same trials, or, where the protocol has none (nullptr), against a constant rate.
[[nodiscard]] double reported_bits_per_spike(const ModelCheckResult& model,
                                             const ModelCheckResult* null) noexcept;

/// Accumulates one hypothesis's predictions and the observed counts over checked trials.
class ModelCheck {
 public:
  /// \throws std::invalid_argument when units is 0 or an option is out of range.
  explicit ModelCheck(std::size_t units, ModelCheckOptions options = {});

  /// One trial: the hypothesis's pre-registered prediction per unit and the observed counts.
  /// `rival_means`, optional: for the encompassing test, the points toward which a lean would
  /// show each rival's structure (the rivals' registered means, or this prediction's mean plus
  /// each rival's registered direction), rival-major ([rivals x units], the same rivals in the
  /// same order on every trial; see the file comment).
  /// \throws std::invalid_argument when a span is not units() long, rival_means is not a
  ///         multiple of it or changes its number of rivals, a prediction is not finite and
  ///         >= 0, or a rival mean is not finite.
  void add_trial(std::span<const CountDistribution> predictions,
                 std::span<const std::uint32_t> counts, std::span<const double> rival_means = {});
  /// The same from one candidate row of a prediction batch.
  void add_trial(const PredictionBatch& batch, std::size_t candidate,
                 std::span<const std::uint32_t> counts);
  /// A designed trial: for the encompassing test only, not the PIT tests (see the file comment).
  /// Its PIT randomisation has a stream of its own, so adding these leaves the PIT tests' values
  /// unchanged. \throws std::invalid_argument as add_trial.
  void add_designed_trial(std::span<const CountDistribution> predictions,
                          std::span<const std::uint32_t> counts,
                          std::span<const double> rival_means);

  [[nodiscard]] std::size_t units() const noexcept { return units_; }
  [[nodiscard]] std::size_t trials() const noexcept { return trials_; }
  [[nodiscard]] std::span<const double> pit_values() const noexcept { return pit_; }

  /// Runs the tests and the summary statistics on everything added so far. Deterministic: the
  /// bootstrap uses its own generator seeded from options.seed.
  [[nodiscard]] ModelCheckResult result() const;
  /// The smallest of result().encompassing_power, without the rest of result() and without
  /// allocating (a session asks it before each criticism trial). NaN without rivals.
  [[nodiscard]] double weakest_encompassing_power() const noexcept;

 private:
  std::size_t units_;
  ModelCheckOptions options_;
  std::mt19937_64 rng_;
  std::mt19937_64 designed_rng_;  ///< PIT randomisation of add_designed_trial, apart from rng_
  std::size_t trials_ = 0;
  std::vector<double> pit_;
  double coherence_ = 0.0;  ///< running sum of S_t^2
  // Encompassing test, per rival: sums over trials of the trial's score s = sum over units of
  // w z, and of s^2.
  std::vector<double> rival_sum_;
  std::vector<double> rival_square_;
  // Per rival, sums over trials of W_t = sum over the trial's units of w^2 and of W_t^2: the
  // test's information about a shift toward the rival, and how unevenly the trials hold it.
  std::vector<double> rival_information_;
  std::vector<double> rival_information_square_;
  std::size_t designed_trials_ = 0;        ///< trials added by add_designed_trial
  std::vector<double> trial_score_;        ///< one trial's scores per rival while it is added
  std::vector<double> trial_information_;  ///< one trial's W_t per rival while it is added

  void validate_trial(std::span<const CountDistribution> predictions,
                      std::span<const std::uint32_t> counts, std::span<const double> rival_means,
                      const char* caller) const;
  void open_trial_scores(std::size_t rivals);
  void add_unit_scores(std::size_t unit, const CountDistribution& prediction, double z,
                       std::span<const double> rival_means) noexcept;
  void close_trial_scores() noexcept;
  // Rivals with any information (sum of W_t > 0): the others have nothing to lean toward.
  [[nodiscard]] std::size_t informative_rivals() const noexcept;
  // The tests a failing check is Bonferroni-corrected over.
  [[nodiscard]] double test_count() const noexcept;
  // The encompassing t a rival must exceed for the check to fail; NaN before two trials.
  [[nodiscard]] double rival_critical_t() const noexcept;
  // Power against counts halfway toward `rival` (see ModelCheckResult::encompassing_power).
  [[nodiscard]] double halfway_power(std::size_t rival, double critical_t) const noexcept;
  std::vector<double> predicted_mean_;  ///< trial-major, aligned with observed_
  std::vector<double> observed_;
  std::size_t in_interval_ = 0;
  double expected_in_interval_ = 0.0;
  double log_likelihood_ = 0.0;
  std::vector<std::uint64_t> unit_spikes_;
  std::vector<double> unit_log_factorials_;  ///< sum over trials of log(y!)
};

enum class VerdictKind {
  winner,     ///< a hypothesis is decisively ahead and passes its model check
  none_fits,  ///< the evidence rules the hypotheses out: see decide()
  undecided,  ///< not yet enough evidence either way
};

struct Verdict {
  VerdictKind kind = VerdictKind::undecided;
  std::string name;        ///< the winner's name, "none" or "undecided"
  std::size_t leader = 0;  ///< posterior leader's index
  double leader_probability = 0.0;
  std::string reason;  ///< one sentence for the record and the report
};

/// The session's verdict. Decision rule, in order:
///  1. every hypothesis refuted outright (posterior.all_refuted())          -> none
///  2. every hypothesis has enough check data and none fits                  -> none
///  3. the leader's posterior probability < probability_threshold           -> undecided
///  4. the leader lacks enough check data (enough_data false)               -> undecided
///  5. the leader does not fit (its model check p-value < alpha)             -> none
///  6. otherwise                                                             -> winner = leader
/// So a name is given only when the leader is both decisively ahead of the others and an
/// adequate description of the data on its own; "none" means the best of the set is still
/// wrong, so being ahead does not make it right.
/// \throws std::invalid_argument when checks.size() != posterior.size() or the threshold is not
///         in (0, 1].
[[nodiscard]] Verdict decide(const Posterior& posterior, std::span<const ModelCheckResult> checks,
                             double probability_threshold);

}  // namespace twinloop::twin

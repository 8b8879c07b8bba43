// DiscriminateStrategy: chooses the candidate stimulus on which the competing twin hypotheses
// disagree most, measured as the expected information gain (EIG): the mutual information between
// the hypothesis identity H (distributed as the current posterior w) and the response vector Y
// (spike counts of every unit, conditionally independent given H):
//
//   EIG(c) = I(H; Y | c) = sum_k w_k E_{y ~ p_k(.|c)} [ log p_k(y|c) - log sum_j w_j p_j(y|c) ].
//
// Two stages per decision:
//  1. Pairwise bounds for every allowed candidate (Kolchinsky & Tracey 2017, "Estimating mixture
//     entropy with pairwise distances", Entropy 19(7):361): with D a distance between the
//     hypotheses' response distributions, I_D = -sum_i w_i log sum_j w_j exp(-D_ij) is a lower
//     bound of the EIG for the Bhattacharyya distance and an upper bound for the KL divergence.
//     For independent units both distances add over units. Poisson closed forms:
//     BD = (sqrt(m1) - sqrt(m2))^2 / 2 and KL = m1 log(m1/m2) - m1 + m2. Negative binomial
//     units use the Poisson form scaled by the ratio of the Poisson to the NB Fisher information
//     for the mean, 1 / (1 + phi m) with the pair's average dispersion and mean: exact to second
//     order for small differences, an approximation otherwise (the bounds are then approximate).
//     Computed fused over candidates x pairs x units in single precision, vectorised.
//  2. A Monte Carlo estimate of the EIG above for the top_m allowed candidates by lower bound
//     among those whose upper bound reaches the best lower bound (the others cannot be the
//     argmax); the argmax is chosen. top_m == 0 skips this stage and chooses the largest lower
//     bound. The estimate is stratified over hypotheses (samples_per_hypothesis response vectors
//     drawn from each) with Latin hypercube sampling (McKay, Beckman & Conover 1979): each unit's
//     count is the inverse CDF at one of N equally spaced levels with a random offset, the levels
//     randomly permuted per unit, so every response vector has the exact joint law and each
//     unit's marginal is stratified. Log-likelihoods are exact Poisson / NB ones.
//     The samples are fixed by the seed (common random numbers for every candidate and
//     decision), so what the Monte Carlo stage computes per candidate, the log-likelihood ratios
//     log p_j(y) - log p_s(y) of every sample y of every stratum s, does not depend on the
//     posterior: it is computed once per candidate and predictions, when the candidate first
//     reaches the top, and cached; a decision then only combines cached ratios with the
//     posterior (a log-sum-exp per sample). Repeated decisions on the same predictions and
//     posterior give the same answer; the Monte Carlo error is a fixed, seed-dependent deviation.
// With probability validation_fraction a trial is instead drawn uniformly among the allowed
// candidates by a RandomStrategy with its own seed, independent of the EIG, and flagged.
//
// Means below min_mean are raised to it (a hypothesis predicting exactly zero would be refuted
// with infinite evidence by one spike) and above max_mean lowered to it.
//
// Predictions change only after a twin update, the posterior after every trial: set_predictions()
// copies the predictions (candidate-major), computes every candidate's pairwise distances and
// their exp(-D) once and forgets the cached Monte Carlo tables; decide(posterior, allowed) then
// combines the distances with the posterior (a few flops and logs per candidate), builds the
// tables of top candidates not cached yet (the first decision after set_predictions() builds
// up to top_m of them: its worst case) and combines the tables with the posterior.
// decide(predictions, posterior, allowed) recomputes everything on the caller's predictions for
// that one call (the cost of both stages, uncached, on every decision).
//
// The constructor sizes every buffer for (candidates, units, hypotheses) (about
// 16 * candidates * units * hypotheses bytes for the stored predictions, 4 * K^2 * N bytes per
// cached table, at most 64 MiB of tables) and may throw; after it, set_predictions(), decide()
// and estimate_eig() do not allocate, lock, log or throw (real-time path). One thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "twinloop/designer/random_strategy.hpp"
#include "twinloop/twin/prediction.hpp"

namespace twinloop::designer {

struct DiscriminateConfig {
  std::uint32_t top_m = 4;  ///< candidates refined by Monte Carlo; 0 = bounds only
  std::uint32_t samples_per_hypothesis = 32;  ///< Monte Carlo response vectors per hypothesis
  double validation_fraction = 0.0;           ///< [0, 1): share of random validation trials
  std::uint64_t seed = 1;                     ///< Monte Carlo and validation draws
  /// Seed of the validation draws alone, when they must differ from another strategy's that
  /// shares `seed` (and so its Monte Carlo samples and its choices). Default: `seed`.
  std::optional<std::uint64_t> draw_seed;
  double min_mean = 1e-6;    ///< > 0: floor on predicted means
  double max_mean = 1000.0;  ///< >= min_mean: ceiling on predicted means
  /// set_predictions() builds the Monte Carlo tables of the top candidates under the last
  /// decision's posterior and allowed set, so that the next decision usually finds them cached
  bool prebuild_tables = true;
};

/// One choice of the designer.
struct Decision {
  std::uint32_t candidate = 0;
  double eig = 0.0;         ///< nats; Monte Carlo estimate (lower bound when top_m == 0)
  double eig_lower = 0.0;   ///< Bhattacharyya lower bound, nats
  double eig_upper = 0.0;   ///< KL upper bound, nats
  bool validation = false;  ///< drawn at random; eig fields are NaN then
};

class DiscriminateStrategy {
 public:
  /// \throws std::invalid_argument for zero sizes or a config out of range
  DiscriminateStrategy(std::size_t candidates, std::size_t units, std::size_t hypotheses,
                       const DiscriminateConfig& config);

  /// Stores the predictions and precomputes the per-candidate pairwise distances (the cost that
  /// depends on the predictions only: call after each twin update, off the decision path);
  /// with prebuild_tables, also the Monte Carlo tables of up to top_m candidates (see config).
  /// \param predictions  one batch per hypothesis, each sized (candidates, units)
  /// \return false (state unchanged) when the sizes do not match those given at construction
  bool set_predictions(std::span<const twin::PredictionBatch> predictions) noexcept;

  /// Decision on the predictions stored by the last successful set_predictions().
  /// \param posterior    one weight per hypothesis, >= 0 (normalised here)
  /// \param allowed      one flag per candidate; false ones are never chosen
  /// \return the choice, or nullopt when no predictions are stored, no candidate is allowed, the
  ///         sizes do not match those given at construction or the posterior has no positive
  ///         weight
  [[nodiscard]] std::optional<Decision> decide(std::span<const double> posterior,
                                               std::span<const bool> allowed) noexcept;

  /// One-shot decision on the given predictions (the distances are recomputed, nothing is
  /// copied); afterwards no predictions are stored (call set_predictions() again before
  /// decide(posterior, allowed)).
  /// \param predictions  one batch per hypothesis, each sized (candidates, units)
  /// \param posterior    one weight per hypothesis, >= 0 (normalised here)
  /// \param allowed      one flag per candidate; false ones are never chosen
  /// \return the choice, or nullopt when no candidate is allowed or the inputs do not have the
  ///         sizes given at construction (or the posterior has no positive weight)
  [[nodiscard]] std::optional<Decision> decide(std::span<const twin::PredictionBatch> predictions,
                                               std::span<const double> posterior,
                                               std::span<const bool> allowed) noexcept;

  /// Per-candidate bounds from the last non-validation decide() or table prebuild of
  /// set_predictions() (NaN for disallowed candidates).
  [[nodiscard]] std::span<const double> lower_bounds() const noexcept { return lower_; }
  [[nodiscard]] std::span<const double> upper_bounds() const noexcept { return upper_; }

  /// Monte Carlo EIG estimate for one candidate, with this strategy's sample count and a
  /// stream of its own (does not advance the decision stream). Same preconditions as decide();
  /// NaN when the sizes do not match.
  [[nodiscard]] double estimate_eig(std::span<const twin::PredictionBatch> predictions,
                                    std::span<const double> posterior,
                                    std::uint32_t candidate) noexcept;

  [[nodiscard]] const DiscriminateConfig& config() const noexcept { return config_; }

  /// Monte Carlo tables built so far (decisions and estimate_eig()); a decision whose top
  /// candidates are all cached adds none.
  [[nodiscard]] std::uint64_t tables_built() const noexcept { return tables_built_; }

 private:
  bool sizes_match(std::span<const twin::PredictionBatch> predictions) const noexcept;
  bool load_posterior(std::span<const double> posterior) noexcept;
  void precompute(std::span<const twin::PredictionBatch> predictions, bool store) noexcept;
  // external: the caller's batches (old decide()), or nullptr for the stored copy.
  std::optional<Decision> decide_on(const twin::PredictionBatch* external,
                                    std::span<const double> posterior,
                                    std::span<const bool> allowed) noexcept;
  void compute_bounds(std::span<const bool> allowed) noexcept;
  // Fills top_ with the top_m allowed candidates by lower bound whose upper bound reaches
  // `floor`; returns how many.
  std::size_t select_top(std::span<const bool> allowed, double floor) noexcept;
  // Builds the posterior-free table of candidate c (log-likelihood ratios, [s][j][sample],
  // float) into `out`, reading the rows in mean_ptr_ / disp_ptr_ (every hypothesis).
  void build_table(float* out) noexcept;
  // The cached table of candidate c, built first if needed (external: see decide_on).
  const float* table_for(std::uint32_t c, const twin::PredictionBatch* external) noexcept;
  // EIG of a table under the loaded posterior.
  [[nodiscard]] double eig_from_table(const float* table) const noexcept;

  DiscriminateConfig config_;
  std::size_t candidates_;
  std::size_t units_;
  std::size_t hypotheses_;
  std::size_t samples_;  // N, per hypothesis
  RandomStrategy coin_;
  RandomStrategy validation_;

  // Active hypotheses (positive weight) and their normalised weights.
  std::vector<std::uint32_t> active_;
  std::vector<double> weight_;
  std::vector<double> log_weight_;
  std::size_t n_active_ = 0;

  // Stored predictions, candidate-major: [candidate][hypothesis][unit].
  bool have_predictions_ = false;
  std::vector<double> pred_mean_, pred_disp_;
  // Over all hypotheses: pairs (i < j), and per candidate exp(-D) for BD, KL i->j, KL j->i
  // ([candidate][3][pair], 0 where D >= 50).
  std::vector<std::uint32_t> all_i_, all_j_;
  std::vector<double> kernel_;

  // Bounds stage.
  std::vector<double> lower_, upper_;
  std::vector<double> full_weight_;  // per hypothesis, 0 for inactive ones
  std::vector<const double*> mean_ptr_, disp_ptr_;
  std::vector<float> lanes_;  // per-block lane arrays (means, roots, logs, dispersions)
  std::vector<float> acc_;    // per-pair lane accumulators (BD, KL both ways)
  std::vector<double> dist_;  // per-pair distances of one candidate
  std::vector<std::uint32_t> top_;
  // Posterior and allowed set of the last decision on stored predictions (table prebuild).
  std::vector<double> last_posterior_;
  std::unique_ptr<bool[]> last_allowed_;
  bool have_last_posterior_ = false;

  // Monte Carlo design, fixed by the seed: per (stratum, unit) the level offset in [0, 1) and
  // the permutation of the N levels over the samples ([stratum][unit][level] -> sample).
  std::vector<double> offset_;
  std::vector<std::uint32_t> perm_;
  // Per (hypothesis, unit) laws of the candidate being tabulated: mean, log mean, NB size r
  // (0: Poisson), log(r / (r + m)), log(m / (r + m)), m / (r + m), P(Y = 0).
  std::vector<double> law_m_, law_lm_, law_r_, law_lp_, law_lq_, law_q_, law_p0_;
  // Lockstep CDF walk of one unit over the strata: probability, CDF, ratio factor, last count
  // ([4][K]), start counts, and per stratum how many steps passed each number of levels.
  std::vector<double> walk_;
  std::vector<std::uint32_t> walk_start_;
  std::vector<std::uint32_t> hist_;
  std::vector<std::uint32_t> draw_;  // K x N counts of one unit, by sample
  std::vector<double> pmf_table_;    // K x kTableCap shifted log-pmfs of one unit
  std::vector<double> log_step_;     // kTableCap
  std::vector<double> loglik_;       // K (strata) x K (hypotheses) x N sums over units
  std::vector<double> recip_;        // 1 / (y + 1)
  // Cache of tables: slot_of_[candidate] (-1: none) and per slot its candidate and generation.
  std::vector<float> tables_;  // slots x K x K x N
  std::vector<float> scratch_table_;
  std::vector<std::int32_t> slot_of_;
  std::vector<std::uint32_t> slot_owner_;
  std::vector<std::uint64_t> slot_generation_;
  std::uint64_t generation_ = 1;  // bumped whenever the predictions change
  std::size_t next_slot_ = 0;
  std::uint64_t tables_built_ = 0;
};

}  // namespace twinloop::designer

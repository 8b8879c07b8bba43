// Posterior: the probability of each competing twin hypothesis given the trials so far, and the
// log Bayes factors between them. It is what "decisively ahead" in the stopping rule means.
//
// Each trial adds, per hypothesis, the log-likelihood of the observed counts under the predictions
// that hypothesis REGISTERED BEFORE the trial (and before it was refitted on the trial). By the
// chain rule p(y_1..y_T) = prod_t p(y_t | y_1..y_{t-1}), the running sum is then the log
// marginal likelihood ("log evidence") of the whole sequence, and differences of it are log
// Bayes factors (Kass & Raftery 1995, J. Am. Stat. Assoc. 90:773). This is exact for hypotheses
// whose predictions are fixed or are posterior predictives; for twins that refit by plug-in
// estimates it is the prequential log score (Dawid 1984, J. R. Stat. Soc. A 147:278): still an
// out-of-sample comparison that no after-the-fact tuning can inflate. No tempering, no
// discounting: the update is the exact Bayes rule.
//
// Numerics: log evidence is accumulated in log space and normalised with log-sum-exp, so
// evidence that differs by thousands of nats is handled. A hypothesis that gave an observed count
// zero probability gets log evidence -inf and probability 0 for good; if every hypothesis has
// done so, all_refuted() is true and every probability is 0.
//
// Real-time: the constructor allocates; add_trial() and every reader do not.
// Thread safety: one thread at a time per object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/twin/count_distribution.hpp"

namespace twinloop::twin {

/// log P(counts | predictions) = sum over units of log_probability(predictions[u], counts[u]):
/// units are conditionally independent given the stimulus, as every prediction states.
/// \throws std::invalid_argument when the spans differ in length.
[[nodiscard]] double log_likelihood(std::span<const CountDistribution> predictions,
                                    std::span<const std::uint32_t> counts);

class Posterior {
 public:
  /// Uniform prior over the named hypotheses.
  /// \throws std::invalid_argument when names is empty or holds a duplicate.
  explicit Posterior(std::vector<std::string> names);

  /// Prior probabilities aligned with names; any positive weights, normalised here.
  /// \throws std::invalid_argument when sizes differ, or a weight is not finite and > 0.
  Posterior(std::vector<std::string> names, std::span<const double> prior);

  /// Adds one trial: log_likelihoods[i] = log p_i(counts of this trial | predictions registered
  /// by hypothesis i before the trial), e.g. from log_likelihood() above. -inf is allowed (the
  /// hypothesis said the observation was impossible).
  /// \throws std::invalid_argument when the size is not size(), or a value is NaN or +inf; the
  ///         posterior is then unchanged.
  void add_trial(std::span<const double> log_likelihoods);

  /// Back to the prior, no trials.
  void reset() noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return names_.size(); }
  [[nodiscard]] std::size_t trials() const noexcept { return trials_; }
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }
  [[nodiscard]] std::optional<std::size_t> index_of(std::string_view name) const noexcept;

  /// Posterior probabilities, aligned with names(); sum to 1 unless all_refuted().
  [[nodiscard]] std::span<const double> probabilities() const noexcept { return probabilities_; }
  [[nodiscard]] double probability(std::size_t i) const { return probabilities_.at(i); }
  /// log posterior probability of i (exact even where probability(i) underflows to 0).
  [[nodiscard]] double log_probability(std::size_t i) const;

  /// Index of the most probable hypothesis; ties go to the lowest index (also when
  /// all_refuted()).
  [[nodiscard]] std::size_t leader() const noexcept { return leader_; }
  [[nodiscard]] const std::string& leader_name() const noexcept { return names_[leader_]; }

  /// True when every hypothesis has given some observed count probability zero.
  [[nodiscard]] bool all_refuted() const noexcept { return all_refuted_; }

  /// Accumulated log evidence of hypothesis i: sum of its per-trial log-likelihoods (nats).
  [[nodiscard]] double log_evidence(std::size_t i) const { return log_evidence_.at(i); }
  /// log Bayes factor of i over j = log_evidence(i) - log_evidence(j) (nats; divide by ln 10 for
  /// the Kass–Raftery log10 scale). +inf / -inf when one side is refuted, NaN when both are.
  [[nodiscard]] double log_bayes_factor(std::size_t i, std::size_t j) const;
  [[nodiscard]] double log_prior(std::size_t i) const { return log_prior_.at(i); }

 private:
  void normalise() noexcept;

  std::vector<std::string> names_;
  std::vector<double> log_prior_;
  std::vector<double> log_evidence_;
  std::vector<double> log_posterior_;  ///< normalised
  std::vector<double> probabilities_;
  std::size_t trials_ = 0;
  std::size_t leader_ = 0;
  bool all_refuted_ = false;
};

}  // namespace twinloop::twin

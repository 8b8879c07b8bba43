// UnitLedger: each hypothesis's log evidence unit by unit, so that a verdict can say which units
// its log Bayes factor comes from. The posterior sums every unit's log-likelihood into one number
// per trial; a sceptical reader also asks whether that number rests on a few well-recorded units,
// on many weak ones, or on the hundreds of channels that saw no unit at all (where a twin that
// predicts a little too much loses a little on each, every trial).
//
// Real-time: the constructor allocates; add() and add_counts() do not. compare() allocates its
// result (a few entries) and is meant for the end of a session.
// Thread safety: one thread at a time per object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "twinloop/twin/prediction.hpp"

namespace twinloop::twin {

/// One unit's share of a log Bayes factor.
struct UnitShare {
  std::size_t unit = 0;
  double log_bayes_factor = 0.0;  ///< nats; +-inf where one side gave a count probability 0
};

/// A log Bayes factor of one hypothesis over another, taken apart by unit.
struct UnitEvidence {
  /// Units with a spike on some scored trial whose own log Bayes factor is > 0, and < 0 (where
  /// the two predicted alike a unit counts in neither).
  std::size_t units_for = 0, units_against = 0;
  /// Those units' sums: with silent_log_bayes_factor, they add up to the whole log Bayes factor.
  double log_bayes_factor_for = 0.0, log_bayes_factor_against = 0.0;
  /// The units with the largest log Bayes factors in favour, largest first (at most the number
  /// compare() was asked for; fewer when fewer units are in favour).
  std::vector<UnitShare> strongest;
  std::size_t silent_units = 0;          ///< units without a spike on any scored trial
  double silent_log_bayes_factor = 0.0;  ///< their sum, whatever its sign
};

class UnitLedger {
 public:
  UnitLedger(std::size_t hypotheses, std::size_t units);

  /// Adds hypothesis k's terms for one scored trial: the log-probability, unit by unit, of
  /// `counts` under row `candidate` of the predictions it registered before the trial.
  /// \return their sum, the trial's log-likelihood (as twin::log_likelihood(); NaN terms, from a
  ///         malformed prediction, count as -inf).
  /// \throws std::invalid_argument when k, the candidate or the sizes do not match (nothing is
  ///         added then).
  double add(std::size_t k, const PredictionBatch& predictions, std::size_t candidate,
             std::span<const std::uint32_t> counts);
  /// The same with one row of predictions per unit.
  double add(std::size_t k, std::span<const double> mean, std::span<const double> dispersion,
             std::span<const std::uint32_t> counts);
  /// Adds a scored trial's counts to every unit's total (once per trial, for silent units).
  /// \throws std::invalid_argument when the size is not units().
  void add_counts(std::span<const std::uint32_t> counts);

  /// log evidence of hypothesis k over `against`, unit by unit, with the `strongest` units in
  /// its favour named.
  /// \throws std::invalid_argument when k or against is out of range.
  [[nodiscard]] UnitEvidence compare(std::size_t k, std::size_t against,
                                     std::size_t strongest = 3) const;

  [[nodiscard]] std::size_t hypotheses() const noexcept { return hypotheses_; }
  [[nodiscard]] std::size_t units() const noexcept { return units_; }
  /// Hypothesis k's log evidence from unit u (nats).
  [[nodiscard]] double log_evidence(std::size_t k, std::size_t u) const {
    return log_evidence_.at(k * units_ + u);
  }
  /// Unit u's summed count over the trials given to add_counts().
  [[nodiscard]] std::uint64_t count(std::size_t u) const { return counts_.at(u); }

 private:
  std::size_t hypotheses_;
  std::size_t units_;
  std::vector<double> log_evidence_;  ///< [hypothesis x unit]
  std::vector<std::uint64_t> counts_;
};

}  // namespace twinloop::twin

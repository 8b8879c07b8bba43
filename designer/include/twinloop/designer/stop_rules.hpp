// Stop-rule evaluation: after each trial the session engine asks whether to stop, and why. A
// session stops when the operator says so, when one hypothesis's posterior reaches the protocol's
// threshold (it is decisively ahead), when the trial budget is spent, or when the time budget is
// spent. The rules themselves are the protocol's (protocols::StopRules); this only applies them.
//
// Pure function; no allocation, no locks, no exceptions; the text is a static string.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "twinloop/protocols/protocol.hpp"

namespace twinloop::designer {

/// Why a session stops; kNone means go on. When several apply, the first in this order wins:
/// operator, posterior, trial budget, time budget.
enum class StopReason { kNone, kOperator, kPosteriorThreshold, kTrialBudget, kTimeBudget };

[[nodiscard]] std::string_view to_string(StopReason reason) noexcept;

/// The state the rules are applied to.
struct StopInputs {
  std::span<const double> posterior;  ///< one weight per hypothesis (need not be normalised)
  std::uint64_t trials_done = 0;      ///< trials completed, validation trials included
  double minutes_elapsed = 0.0;       ///< since the session started
  bool operator_stop = false;         ///< the operator (or an authorised client) asked to stop
};

struct StopDecision {
  StopReason reason = StopReason::kNone;
  std::string_view text;                 ///< human-readable reason, static storage
  std::uint32_t leading_hypothesis = 0;  ///< index of the largest posterior (0 when empty)
  double leading_posterior = 0.0;        ///< its normalised weight
  [[nodiscard]] bool stop() const noexcept { return reason != StopReason::kNone; }
};

/// Applies `rules` to `inputs`. max_trials == 0 and an absent max_minutes mean "no limit"; a
/// posterior that sums to zero or contains NaN never triggers the threshold.
[[nodiscard]] StopDecision evaluate_stop(const protocols::StopRules& rules,
                                         const StopInputs& inputs) noexcept;

}  // namespace twinloop::designer

#include "twinloop/designer/stop_rules.hpp"

#include <cmath>

namespace twinloop::designer {

std::string_view to_string(StopReason reason) noexcept {
  switch (reason) {
    case StopReason::kNone:
      return "continue";
    case StopReason::kOperator:
      return "stopped by the operator";
    case StopReason::kPosteriorThreshold:
      return "a hypothesis reached the posterior threshold";
    case StopReason::kTrialBudget:
      return "trial budget spent";
    case StopReason::kTimeBudget:
      return "time budget spent";
  }
  return "unknown";
}

StopDecision evaluate_stop(const protocols::StopRules& rules, const StopInputs& inputs) noexcept {
  StopDecision d;
  double total = 0.0;
  double best = -1.0;
  bool finite = true;
  for (std::uint32_t k = 0; k < inputs.posterior.size(); ++k) {
    const double w = inputs.posterior[k];
    if (!std::isfinite(w) || w < 0.0) finite = false;
    total += w;
    if (w > best) {
      best = w;
      d.leading_hypothesis = k;
    }
  }
  const bool posterior_ok = finite && total > 0.0;
  d.leading_posterior = posterior_ok ? best / total : 0.0;

  if (inputs.operator_stop) {
    d.reason = StopReason::kOperator;
  } else if (posterior_ok && d.leading_posterior >= rules.posterior_threshold) {
    d.reason = StopReason::kPosteriorThreshold;
  } else if (rules.max_trials > 0 && inputs.trials_done >= rules.max_trials) {
    d.reason = StopReason::kTrialBudget;
  } else if (rules.max_minutes && inputs.minutes_elapsed >= *rules.max_minutes) {
    d.reason = StopReason::kTimeBudget;
  }
  d.text = to_string(d.reason);
  return d;
}

}  // namespace twinloop::designer

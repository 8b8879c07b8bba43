// ClosedLoop: one session's trials, whatever the rig. Each step designs a trial (the
// discriminating designer, or the random one), pre-registers every hypothesis's prediction for
// it durably in the session record, has the rig deliver it and count the response, scores every
// prediction against the outcome, updates the posterior and the twins, and checks the stop
// rules. At the end it gives the verdict: a hypothesis, "none" (the leader does not fit the
// validation trials), or "undecided".
//
// A TrialRig is whatever can deliver a stimulus and return counts per unit: the spike-level
// simulated rig behind the acquisition path, a real rig, or a count-level subject for fast
// tests and benchmarks. Thread safety: one thread drives a ClosedLoop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "twinloop/daemon/session_record.hpp"
#include "twinloop/designer/discriminate_strategy.hpp"
#include "twinloop/designer/random_strategy.hpp"
#include "twinloop/designer/stop_rules.hpp"
#include "twinloop/protocols/protocol.hpp"
#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/model_check.hpp"
#include "twinloop/twin/posterior.hpp"

namespace twinloop::daemon {

/// What the loop asks of a rig.
class TrialRig {
 public:
  struct Result {
    bool delivered = false;  ///< false: refused or failed; `problem` says why
    bool refused = false;    ///< not delivered because the stimulus path (safety limits) refused it
    bool flagged = false;    ///< delivered, but the counts are not trustworthy (e.g. a gap)
    std::string problem;     ///< why not delivered, or why flagged
    std::int64_t onset_sample = -1;
    std::int64_t window_start = 0, window_end = 0;
    std::optional<Timestamp> delivered_at;
  };
  virtual ~TrialRig() = default;
  /// Delivers `stimulus` for trial `trial` and fills `counts` (one per unit) from its response
  /// window. Called only after the trial's predictions are durably recorded.
  virtual Result run_trial(std::uint64_t trial, const protocols::Stimulus& stimulus,
                           std::span<std::uint32_t> counts) = 0;
};

struct ClosedLoopOptions {
  std::optional<protocols::DesignerStrategy> strategy;  ///< overrides the protocol's
  std::uint64_t seed = 1;       ///< designer and validation draws (mixed with the protocol's)
  twin::TwinOptions twin;       ///< device, response window length
  std::size_t refit_every = 1;  ///< refit the twins every n scored trials
  std::optional<std::uint32_t> max_trials;  ///< overrides the protocol's budget (0 = protocol's)
  /// A posterior stop waits until this many validation trials are scored; until then every trial
  /// is a validation trial, so the verdict can say whether the leader fits at all.
  std::size_t min_validation_trials = 5;
  /// The twins keep their prior predictions until this many trials are scored: a model with a
  /// handful of parameters per unit fitted to three trials overfits, and the prequential score
  /// would punish the family for its early fits rather than judge it.
  std::size_t min_trials_to_fit = 8;
  /// No posterior stop before this many trials.
  std::size_t min_trials_before_stop = 20;
};

/// The session's outcome for one hypothesis.
struct HypothesisSummary {
  std::string name;
  std::string family;
  double posterior = 0.0;
  double log_bayes_factor = 0.0;  ///< against the protocol's null hypothesis (or the runner-up)
  std::string bayes_factor_against;
  twin::ModelCheckResult check;  ///< on validation trials
};

struct SessionSummary {
  twin::Verdict verdict;
  std::size_t trials = 0;
  std::size_t validation_trials = 0;
  std::size_t flagged_trials = 0;
  std::size_t refused_trials = 0;  ///< refused by the stimulus path (safety limits)
  std::size_t aborted_trials = 0;  ///< not completed for another reason (e.g. recording ended)
  std::size_t deadline_misses = 0;
  std::string stop_reason;
  std::vector<HypothesisSummary> hypotheses;
};

class ClosedLoop {
 public:
  /// Builds the hypotheses (LibTorch), the designer and the posterior.
  /// \param record  may be null (benchmarks); otherwise every step is written to it
  /// \throws std::invalid_argument when a hypothesis cannot be built
  ClosedLoop(const protocols::Protocol& protocol, std::size_t units, TrialRig& rig,
             SessionRecord* record, const ClosedLoopOptions& options);
  ~ClosedLoop();

  /// Runs one trial. Returns false (and runs nothing) once a stop rule holds. A posterior stop
  /// holds only once `min_validation_trials` validation trials are scored.
  bool step();
  /// The operator's stop.
  void request_stop() noexcept { operator_stop_ = true; }

  [[nodiscard]] const twin::Posterior& posterior() const noexcept { return posterior_; }
  [[nodiscard]] std::size_t trials() const noexcept { return trial_; }
  [[nodiscard]] designer::StopDecision stop_decision() const noexcept;
  /// True when the posterior would stop the session but validation trials are still missing.
  [[nodiscard]] bool needs_validation() const noexcept;
  /// Scores so far and the verdict they support (model checks run here: not cheap).
  [[nodiscard]] SessionSummary summary() const;
  /// Trials until the given hypothesis first reached `threshold`, if it did.
  [[nodiscard]] std::optional<std::size_t> trials_to_reach(std::size_t hypothesis,
                                                           double threshold) const noexcept;

 private:
  void refit();

  const protocols::Protocol& protocol_;
  std::size_t units_;
  TrialRig& rig_;
  SessionRecord* record_;
  ClosedLoopOptions options_;
  protocols::DesignerStrategy strategy_;
  std::vector<std::unique_ptr<twin::Hypothesis>> hypotheses_;
  std::vector<twin::PredictionBatch> predictions_;
  std::vector<protocols::Stimulus> candidates_;
  std::vector<bool> allowed_storage_;
  std::unique_ptr<bool[]> allowed_;
  twin::Posterior posterior_;
  std::vector<twin::ModelCheck> checks_;
  std::unique_ptr<designer::DiscriminateStrategy> discriminate_;
  designer::RandomStrategy random_;
  designer::RandomStrategy validation_coin_;
  std::vector<protocols::Stimulus> history_stimuli_;
  std::vector<std::uint32_t> history_counts_;
  std::vector<std::uint32_t> counts_;
  std::vector<double> log_likelihoods_;
  std::vector<std::vector<double>> posterior_trace_;  // per trial, per hypothesis
  std::chrono::steady_clock::time_point started_;
  std::uint64_t trial_ = 0;
  std::size_t scored_since_refit_ = 0;
  std::size_t validation_trials_ = 0, flagged_ = 0, refused_ = 0, aborted_ = 0;
  std::size_t deadline_misses_ = 0;
  bool operator_stop_ = false;
  bool predictions_changed_ = true;
};

}  // namespace twinloop::daemon

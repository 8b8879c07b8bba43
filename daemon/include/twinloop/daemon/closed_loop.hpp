// ClosedLoop: one session's trials, whatever the rig. Each step designs a trial (the
// discriminating designer, or the random one), pre-registers every hypothesis's prediction for
// it durably in the session record, has the rig deliver it and count the response, scores every
// prediction against the outcome, updates the posterior and the twins, and checks the stop
// rules. At the end it gives the verdict: a hypothesis, "none" (the leader does not fit the
// validation trials), or "undecided".
//
// A TrialRig is whatever can deliver a stimulus and return counts per unit: the spike-level
// simulated rig behind the acquisition path, a real rig, or a count-level subject for fast
// tests and benchmarks. step() runs a whole trial on the rig synchronously; an event loop that
// must keep serving acquisition while a trial is in flight calls plan() and, when the rig has
// answered, complete(). restore() rebuilds a session from its record so it can be resumed.
// A rig whose supply of responses is finite (recorded data) tells the loop which candidates it
// can still deliver (TrialRig::available); the loop designs only among those and stops when none
// is left.
// Thread safety: one thread drives a ClosedLoop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "twinloop/daemon/session_record.hpp"
#include "twinloop/designer/discriminate_strategy.hpp"
#include "twinloop/designer/random_strategy.hpp"
#include "twinloop/designer/stop_rules.hpp"
#include "twinloop/protocols/protocol.hpp"
#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/model_check.hpp"
#include "twinloop/twin/posterior.hpp"
#include "twinloop/twin/unit_ledger.hpp"

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
  /// Whether candidate `candidate` (an index into the protocol's candidates) can still be
  /// delivered. A rig with a finite supply of responses, such as recorded data where each repeat
  /// answers once, says false once a candidate's supply is spent: the loop then never designs a
  /// trial for it (discriminating, random, validation and fallback draws alike), writes a
  /// `candidate_exhausted` event, and once no candidate is left stops with "the recorded data are
  /// exhausted" (a `data_exhausted` event). Default: always available.
  /// \note Called for every candidate before each plan(); must be cheap and must not block.
  [[nodiscard]] virtual bool available(std::uint32_t /*candidate*/) const noexcept { return true; }
};

namespace event_kind {
/// A candidate's supply of responses ran out (TrialRig::available turned false).
inline constexpr std::string_view kCandidateExhausted = "candidate_exhausted";
/// No candidate is available any more: the session stops.
inline constexpr std::string_view kDataExhausted = "data_exhausted";
}  // namespace event_kind

struct ClosedLoopOptions {
  std::optional<protocols::DesignerStrategy> strategy;  ///< overrides the protocol's
  std::uint64_t seed = 1;       ///< designer and validation draws (mixed with the protocol's)
  twin::TwinOptions twin;       ///< device, response window length
  std::size_t refit_every = 1;  ///< refit the twins every n scored trials
  /// The model check's tests (its seed is mixed with `seed`). `twinloop report` checks with the
  /// defaults, so a session run with other options reports other p-values there: for benchmarks.
  twin::ModelCheckOptions model_check;
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
  /// Refit on a thread of its own. A refit (LibTorch fits of every twin, their predictions for
  /// every candidate, the designer's tables) takes 200-360 ms for 384 units and three twins on one
  /// core, which on the session thread would stall the event loop (acquisition draining,
  /// control, monitoring) every trial. In the background, the refit launched when trial t is
  /// scored is adopted by the next plan(), which waits for it if it is still running: trial t+1
  /// is designed on it, as with a refit in place, and every run of a session is alike, so replay
  /// stays exact. An event loop that must not block asks refit_ready() before calling plan().
  /// false: in place, on the calling thread.
  bool background_refit = true;
  /// Called first on the refit thread when it starts, e.g. to place it: it is created by the
  /// session thread and inherits its CPU pinning, on which it would compete with it.
  std::function<void()> on_refit_thread_start;
};

/// Where refit time went (ClosedLoop::refit_stats).
struct RefitStats {
  std::size_t refits = 0;
  double total_ms = 0.0;  ///< fit + predictions + designer tables, wherever they ran
  double max_ms = 0.0;
  double session_wait_ms = 0.0;  ///< what plan() spent waiting for one (0 with refit_ready())
  std::size_t waits = 0;         ///< plan() calls that found the refit still running
};

/// What bits per spike are measured against when the protocol has no null hypothesis.
inline constexpr std::string_view kConstantRateReference = "constant rate";

/// The session's outcome for one hypothesis.
struct HypothesisSummary {
  std::string name;
  std::string family;
  double posterior = 0.0;
  double log_bayes_factor = 0.0;  ///< against the protocol's null hypothesis (or the runner-up)
  std::string bayes_factor_against;
  /// On validation trials, against the protocol's null hypothesis's registered predictions for
  /// the same trials (0 for the null itself); without a null, against a constant rate per unit.
  double bits_per_spike = 0.0;
  std::string bits_per_spike_against;  ///< the null's name, or "constant rate"
  twin::ModelCheckResult check;        ///< on validation trials
  /// log_bayes_factor unit by unit (empty when there is nothing to compare against).
  twin::UnitEvidence by_unit;
};

struct SessionSummary {
  twin::Verdict verdict;
  std::size_t trials = 0;
  std::size_t validation_trials = 0;
  std::size_t criticism_trials =
      0;  ///< designed after the posterior threshold to refute the leader
  std::size_t flagged_trials = 0;
  std::size_t refused_trials = 0;  ///< refused by the stimulus path (safety limits)
  std::size_t aborted_trials = 0;  ///< not completed for another reason (e.g. recording ended)
  std::size_t deadline_misses = 0;
  std::string stop_reason;
  std::vector<HypothesisSummary> hypotheses;
};

/// A trial designed and pre-registered, waiting for the rig.
struct PlannedTrial {
  std::uint64_t trial = 0;
  std::uint32_t candidate = 0;
  protocols::Stimulus stimulus;
  bool validation = false;
};

/// What another designer would have chosen at a planned trial (ClosedLoop::alternative).
struct AlternativeChoice {
  std::uint32_t candidate = 0;  ///< that designer's choice
  double eig = 0.0;             ///< its expected information gain, nats (NaN: fewer than 2 twins)
  double eig_planned = 0.0;     ///< the planned trial's, by the same estimate
};

/// What restore() found in a record.
struct RestoreReport {
  std::size_t trials = 0;      ///< rows read
  std::size_t scored = 0;      ///< rescored from their recorded predictions and counts
  std::size_t flagged = 0;     ///< kept on record, not scored
  std::size_t aborted = 0;     ///< already aborted before the interruption
  std::size_t in_flight = 0;   ///< designed, pre-registered or delivered but never scored: aborted
  std::size_t mismatches = 0;  ///< rescored posteriors that differ from the recorded ones
};

/// The options a session of `protocol` runs with: the twins' response window from its timing,
/// `seed`, and the designer named on the command line ("random" or "discriminate"; empty: the
/// protocol's). Every path that runs a session (run, resume, the recorded rig, the daemon) and
/// replay build their loops here, so a replay runs as the session did.
[[nodiscard]] ClosedLoopOptions session_loop_options(const protocols::Protocol& protocol,
                                                     std::uint64_t seed,
                                                     std::string_view designer = {});

/// Builds every built-in hypothesis of `protocol` once (one unit) and returns what refused, one
/// line each ("hypotheses[k]: <the twin's message>"); empty when all build. The loader checks a
/// protocol's form, but only a twin family knows its params, so `check`, `run` and a daemon's
/// `submit` call this before anything starts. A TorchScript twin is only checked for its file
/// here: its output must match the session's unit count, known once the rig is connected, so it
/// is loaded and run on every candidate when the session starts.
[[nodiscard]] std::vector<std::string> twin_problems(const protocols::Protocol& protocol);

/// Every hypothesis's predictions before any fit (its prior) for every candidate of the protocol:
/// what a session predicts until its first refit is adopted. The model check judges only trials
/// predicted by fitted twins; restore() and `twinloop report` tell those apart by comparing a
/// recorded prediction with these, which is exact (the same code on the same inputs).
/// \throws std::invalid_argument when a hypothesis cannot be built (e.g. its TorchScript file
///         is gone)
[[nodiscard]] std::vector<twin::PredictionBatch> prior_predictions(
    const protocols::Protocol& protocol, std::size_t units, const twin::TwinOptions& options);

/// Whether a trial's recorded predictions (per hypothesis: mean and dispersion per unit) for
/// `candidate` are exactly the priors.
[[nodiscard]] bool predicted_by_prior(std::span<const twin::PredictionBatch> prior,
                                      std::size_t candidate,
                                      const std::vector<std::vector<double>>& mean,
                                      const std::vector<std::vector<double>>& dispersion) noexcept;

class ClosedLoop {
 public:
  /// Builds the hypotheses (LibTorch), the designer and the posterior.
  /// \param record  may be null (benchmarks); otherwise every step is written to it
  /// \throws std::invalid_argument when a hypothesis cannot be built
  ClosedLoop(const protocols::Protocol& protocol, std::size_t units, TrialRig& rig,
             SessionRecord* record, const ClosedLoopOptions& options);
  ~ClosedLoop();

  /// Runs one trial: plan(), the rig's run_trial(), complete(). Returns false (and runs nothing)
  /// once a stop rule holds.
  bool step();
  /// Designs the next trial and durably pre-registers every hypothesis's prediction for it.
  /// nullopt once a stop rule holds. A posterior stop holds only once `min_validation_trials`
  /// validation trials are scored.
  [[nodiscard]] std::optional<PlannedTrial> plan();
  /// Records the rig's answer to a planned trial, scores the registered predictions, updates the
  /// posterior and refits the twins. `counts` is read only when the result was delivered.
  void complete(const PlannedTrial& planned, const TrialRig::Result& result,
                std::span<const std::uint32_t> counts);
  /// Records the onset as soon as the rig confirms it (before the response window is counted),
  /// so a trial interrupted while counting is on record as delivered. Optional: complete()
  /// records the delivery itself when this was not called.
  void delivered(const PlannedTrial& planned, const TrialRig::Result& result);
  /// Continues a session from its record: every scored trial is rescored from the predictions and
  /// counts it recorded (so the posterior is the one the record witnessed; a difference is
  /// reported), the twins are refitted on the recorded history, and trials that were in flight
  /// are aborted in the record. Call once, on a fresh ClosedLoop built with the same protocol and
  /// unit count, with `record` the one this loop writes to.
  /// \throws RecordError or std::invalid_argument when the record does not match the protocol
  RestoreReport restore();
  /// What `strategy` would choose for the trial just planned, on this loop's own history (its
  /// posterior, its fitted twins' predictions, the candidates still available), and the expected
  /// information gain of both choices by one Monte Carlo estimate (common random numbers). Leaves
  /// the session untouched: its own designer streams do not move. For `twinloop replay
  /// --designer`: the other designer's choice given the real history. A discriminating
  /// alternative never draws validation trials; a random one draws from a stream of its own.
  /// Call between plan() and complete(). nullopt for `discriminate` with fewer than two twins.
  [[nodiscard]] std::optional<AlternativeChoice> alternative(protocols::DesignerStrategy strategy,
                                                             const PlannedTrial& planned);
  /// The operator's stop.
  void request_stop() noexcept { operator_stop_ = true; }
  /// The operator's change of the stop rules (e.g. from the control socket): only the fields
  /// given change; they take effect at the next trial and are written to the record.
  void change_stop_rules(std::optional<double> posterior_threshold,
                         std::optional<std::uint32_t> max_trials,
                         std::optional<double> max_minutes);
  [[nodiscard]] const protocols::StopRules& stop_rules() const noexcept { return stop_; }

  [[nodiscard]] const twin::Posterior& posterior() const noexcept { return posterior_; }
  /// Every hypothesis's predictions for every candidate, as the last plan() registered them
  /// (row planned.candidate is what complete() scores), and whether they came from fitted
  /// twins rather than their priors. For benches that hold them against a ground truth.
  [[nodiscard]] std::span<const twin::PredictionBatch> predictions() const noexcept {
    return predictions_;
  }
  [[nodiscard]] bool predictions_fitted() const noexcept { return predictions_fitted_; }
  [[nodiscard]] const RefitStats& refit_stats() const noexcept { return refit_stats_; }
  /// False while a background refit that the next plan() must adopt is still running: plan()
  /// would wait for it. Never blocks.
  [[nodiscard]] bool refit_ready() const noexcept;
  [[nodiscard]] std::size_t trials() const noexcept { return trial_; }
  /// The stop rule that holds now, if any. Exhausted data (no candidate available at the last
  /// plan()) is a hard stop after the operator, posterior and budgets; designer::StopReason has no
  /// value of its own for it, so it is reported as kTrialBudget (the data's budget of trials is
  /// spent) with the text "the recorded data are exhausted ...".
  [[nodiscard]] designer::StopDecision stop_decision() const noexcept;
  /// True when no candidate was available at the last plan() (see TrialRig::available).
  [[nodiscard]] bool data_exhausted() const noexcept { return exhausted_; }
  /// Candidates available at the last plan().
  [[nodiscard]] std::size_t available_candidates() const noexcept { return available_; }
  /// True when the posterior would stop the session but validation trials are still missing.
  [[nodiscard]] bool needs_validation() const noexcept;
  /// True when the posterior would stop the session but criticism trials are still missing.
  [[nodiscard]] bool needs_criticism() const noexcept;
  /// Scores so far and the verdict they support (model checks run here: not cheap).
  [[nodiscard]] SessionSummary summary() const;
  /// Trials until the given hypothesis first reached `threshold`, if it did.
  [[nodiscard]] std::optional<std::size_t> trials_to_reach(std::size_t hypothesis,
                                                           double threshold) const noexcept;

 private:
  class RefitWorker;
  // In place: refits the twins now; the next plan() recomputes the predictions.
  void refit();
  // Background: adopts the finished refit (waiting for it if needed); starts the next one when
  // due.
  void adopt_background_refit();
  void launch_background_refit();
  // Every twin predicts every candidate; the designer's tables follow.
  void refresh_predictions();
  // One hypothesis's row of encompassing_differences_ for a candidate ([rival][unit]); null
  // when there are none (a single hypothesis, or before the first predictions).
  [[nodiscard]] const double* encompassing_row(std::size_t hypothesis,
                                               std::size_t candidate) const noexcept;
  // Fills `out` (encompassing_differences_ or its pending twin) from `predictions`.
  void compute_encompassing_differences(std::span<const twin::PredictionBatch> predictions,
                                        std::vector<std::vector<double>>& out);
  // Asks the rig which candidates are still available, into allowed_; records those that ran
  // out since the last call and, once none is left, that the data are exhausted.
  void refresh_allowed();
  // A random draw among the allowed candidates (at least one is, whenever plan() designs).
  [[nodiscard]] std::uint32_t draw_allowed() noexcept;
  // The stop rule that holds with the posterior threshold left out.
  [[nodiscard]] designer::StopDecision hard_stop_decision(
      const designer::StopInputs& inputs) const noexcept;
  // The posterior would stop the session and no hard limit (budget, time, operator) does: the
  // time for the validation and criticism trials still missing.
  [[nodiscard]] bool posterior_stop_pending() const noexcept;
  [[nodiscard]] std::size_t validation_trials_needed() const noexcept;
  // The protocol asks for criticism trials and this session can design them.
  [[nodiscard]] bool criticism_possible() const noexcept;
  // The protocol sets a criticism power and the leader's check has reached it.
  [[nodiscard]] bool criticism_power_reached() const noexcept;
  // The allowed candidate where the posterior leader's prediction is furthest from the rival
  // whose turn it is.
  [[nodiscard]] std::uint32_t criticism_candidate() const noexcept;
  // After the posterior took a scored trial: trace, model checks (from score_row_), history.
  // `fitted`: the trial was predicted by fitted twins (the model check judges only those).
  void learn(const protocols::Stimulus& stimulus, bool validation, bool fitted,
             std::span<const std::uint32_t> counts);

  const protocols::Protocol& protocol_;
  std::size_t units_;
  TrialRig& rig_;
  SessionRecord* record_;
  ClosedLoopOptions options_;
  protocols::DesignerStrategy strategy_;
  std::vector<std::unique_ptr<twin::Hypothesis>> hypotheses_;
  std::vector<twin::PredictionBatch> predictions_;
  std::vector<double> criticism_scores_;  // twin::score_criticism_candidates() of predictions_
  std::vector<protocols::Stimulus> candidates_;
  std::vector<bool> allowed_storage_;
  std::unique_ptr<bool[]> allowed_;
  twin::Posterior posterior_;
  twin::UnitLedger ledger_;  // the posterior's evidence unit by unit, for the summary
  std::vector<twin::ModelCheck> checks_;
  std::unique_ptr<designer::DiscriminateStrategy> discriminate_;
  // Background refits: the worker fills these; adoption swaps them with the live ones.
  std::unique_ptr<RefitWorker> worker_;
  std::unique_ptr<designer::DiscriminateStrategy> spare_discriminate_;
  std::vector<twin::PredictionBatch> pending_predictions_;
  // Per hypothesis, for the encompassing test: each rival's predicted means less this one's,
  // for every candidate ([candidate][rival][unit]), with what this twin could produce itself
  // removed (Hypothesis::remove_own_directions). Computed with the predictions; the pending
  // set by the refit worker.
  std::vector<std::vector<double>> encompassing_differences_;
  std::vector<std::vector<double>> pending_encompassing_differences_;
  std::vector<double> pending_criticism_scores_;
  bool refit_pending_ = false;     // launched and not yet adopted
  double pending_refit_ms_ = 0.0;  // written by the worker, read after it is done
  RefitStats refit_stats_;
  // alternative(): a designer beside the session's, built on first use.
  std::unique_ptr<designer::DiscriminateStrategy> shadow_;
  std::optional<designer::RandomStrategy> shadow_random_;
  std::uint64_t predictions_version_ = 0, shadow_version_ = 0;
  designer::RandomStrategy random_;
  designer::RandomStrategy validation_coin_;
  std::vector<protocols::Stimulus> history_stimuli_;
  std::vector<std::uint32_t> history_counts_;
  std::vector<std::uint32_t> counts_;
  std::vector<double> log_likelihoods_;
  std::vector<double> evidence_;  // per hypothesis, the log evidence recorded after each trial
  std::vector<twin::CountDistribution> check_row_;  // one hypothesis's row, for its check
  std::vector<double> rival_means_;                 // the others' means, for its check
  // Per hypothesis, the scored trial's registered prediction row; rival_differences ([rival]
  // [unit]) is null where the record has none (format 1), and the check then leans toward the
  // rivals' means themselves.
  struct ScoreRow {
    const double* mean = nullptr;
    const double* dispersion = nullptr;
    const double* rival_differences = nullptr;
  };
  std::vector<ScoreRow> score_row_;
  std::vector<std::vector<double>> posterior_trace_;  // per trial, per hypothesis
  std::chrono::steady_clock::time_point started_;
  std::uint64_t trial_ = 0;
  std::size_t scored_since_refit_ = 0;
  std::size_t validation_trials_ = 0, flagged_ = 0, refused_ = 0, aborted_ = 0;
  std::size_t criticism_planned_ = 0;  // criticism trials designed so far
  std::size_t deadline_misses_ = 0;
  bool operator_stop_ = false;
  protocols::StopRules stop_;  // the protocol's, changed by the operator
  bool predictions_changed_ = true;
  bool twins_fitted_ = false;        // a fit has run (the next refresh gives fitted predictions)
  bool predictions_fitted_ = false;  // the live predictions came from a fit, not the prior
  std::optional<std::uint64_t> delivery_recorded_;  // trial whose onset is already on record
  std::size_t available_ = 0;  // candidates the rig could deliver at the last plan()
  bool exhausted_ = false;     // none could
};

}  // namespace twinloop::daemon

#include "twinloop/daemon/closed_loop.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

namespace twinloop::daemon {
namespace {

constexpr std::string_view kDeadlineFallback = "deadline_fallback_random";
constexpr std::string_view kCriticism = "criticism";
constexpr std::string_view kDataExhaustedText =
    "the recorded data are exhausted: no candidate has an unused response left";
// Below this expected information gain (nats) no candidate is worth choosing over another.
constexpr double kNoInformationNats = 1e-6;

nlohmann::json stimulus_object(const protocols::StimulusSpace& space,
                               const protocols::Stimulus& s) {
  nlohmann::json j = nlohmann::json::object();
  for (std::size_t d = 0; d < space.dimension_count(); ++d)
    j[space.dimensions[d].name] = s.values[d];
  return j;
}

std::string stimulus_json(const protocols::StimulusSpace& space, const protocols::Stimulus& s) {
  return stimulus_object(space, s).dump();
}

}  // namespace

ClosedLoopOptions session_loop_options(const protocols::Protocol& protocol, std::uint64_t seed,
                                       std::string_view designer) {
  ClosedLoopOptions options;
  options.seed = seed;
  options.twin.window_seconds =
      (protocol.timing.response_end_ms - protocol.timing.response_start_ms) * 1e-3;
  if (!designer.empty()) {
    options.strategy = designer == "random" ? protocols::DesignerStrategy::kRandom
                                            : protocols::DesignerStrategy::kDiscriminate;
  }
  return options;
}

std::vector<std::string> twin_problems(const protocols::Protocol& protocol) {
  const twin::TwinOptions options = session_loop_options(protocol, 0).twin;
  std::vector<std::string> problems;
  for (std::size_t k = 0; k < protocol.hypotheses.size(); ++k) {
    const protocols::HypothesisSpec& spec = protocol.hypotheses[k];
    if (spec.family == protocols::HypothesisFamily::kTorchScript) {
      std::error_code ec;
      if (!spec.path || !std::filesystem::is_regular_file(*spec.path, ec)) {
        problems.push_back("hypotheses[" + std::to_string(k) + "]: hypothesis '" + spec.name +
                           "': TorchScript file '" + spec.path.value_or("") +
                           "' does not exist or is not a file");
      }
      continue;
    }
    try {
      (void)twin::make_hypothesis(spec, protocol.stimulus, 1, options);
    } catch (const std::exception& e) {
      problems.push_back("hypotheses[" + std::to_string(k) + "]: " + e.what());
    }
  }
  return problems;
}

std::vector<twin::PredictionBatch> prior_predictions(const protocols::Protocol& protocol,
                                                     std::size_t units,
                                                     const twin::TwinOptions& options) {
  std::vector<protocols::Stimulus> candidates;
  for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
    candidates.push_back(protocol.stimulus.stimulus(c));
  }
  std::vector<twin::PredictionBatch> prior(protocol.hypotheses.size());
  for (std::size_t k = 0; k < protocol.hypotheses.size(); ++k) {
    auto twin = twin::make_hypothesis(protocol.hypotheses[k], protocol.stimulus, units, options);
    prior[k].resize(candidates.size(), units);
    twin->predict(candidates, prior[k]);
  }
  return prior;
}

bool predicted_by_prior(std::span<const twin::PredictionBatch> prior, std::size_t candidate,
                        const std::vector<std::vector<double>>& mean,
                        const std::vector<std::vector<double>>& dispersion) noexcept {
  if (mean.size() != prior.size() || dispersion.size() != prior.size()) return false;
  for (std::size_t k = 0; k < prior.size(); ++k) {
    const std::size_t units = prior[k].units;
    if (candidate >= prior[k].candidates || mean[k].size() != units ||
        dispersion[k].size() != units ||
        !std::equal(mean[k].begin(), mean[k].end(), prior[k].mean.begin() + candidate * units) ||
        !std::equal(dispersion[k].begin(), dispersion[k].end(),
                    prior[k].dispersion.begin() + candidate * units)) {
      return false;
    }
  }
  return true;
}

// One job at a time on a thread of its own: the session thread hands a refit over and later
// waits for it (usually long done) before adopting what it computed.
class ClosedLoop::RefitWorker {
 public:
  explicit RefitWorker(const std::function<void()>& on_start)
      : thread_([this, on_start] {
          if (on_start) on_start();
          run();
        }) {}
  ~RefitWorker() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  RefitWorker(const RefitWorker&) = delete;
  RefitWorker& operator=(const RefitWorker&) = delete;

  void submit(std::function<void()> job) {
    {
      const std::lock_guard lock(mutex_);
      job_ = std::move(job);
      done_ = false;
      done_flag_.store(false, std::memory_order_release);
    }
    wake_.notify_all();
  }
  [[nodiscard]] bool done() const noexcept { return done_flag_.load(std::memory_order_acquire); }
  /// Blocks until the submitted job has run; returns whether it had to wait.
  bool wait() {
    std::unique_lock lock(mutex_);
    const bool waited = !done_;
    finished_.wait(lock, [this] { return done_; });
    return waited;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stopping_ || job_ != nullptr; });
      if (job_ == nullptr) return;  // stopping with nothing left to do
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      job();
      lock.lock();
      done_ = true;
      done_flag_.store(true, std::memory_order_release);
      finished_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::function<void()> job_;
  bool done_ = true;
  std::atomic<bool> done_flag_{true};  // done_, readable without the lock
  bool stopping_ = false;
  std::thread thread_;
};

ClosedLoop::ClosedLoop(const protocols::Protocol& protocol, std::size_t units, TrialRig& rig,
                       SessionRecord* record, const ClosedLoopOptions& options)
    : protocol_(protocol),
      units_(units),
      rig_(rig),
      record_(record),
      options_(options),
      strategy_(options.strategy.value_or(protocol.designer.strategy)),
      posterior_([&] {
        std::vector<std::string> names;
        for (const auto& h : protocol.hypotheses) names.push_back(h.name);
        return names;
      }()),
      ledger_(protocol.hypotheses.size(), units),
      random_(protocol.designer.seed ^ options.seed),
      validation_coin_((protocol.designer.seed ^ options.seed) + 0x5eed),
      started_(std::chrono::steady_clock::now()) {
  const std::size_t candidate_count = protocol.stimulus.candidate_count();
  if (candidate_count == 0 || units == 0) {
    throw std::invalid_argument("closed loop: no candidates or no units");
  }
  for (std::size_t c = 0; c < candidate_count; ++c) {
    candidates_.push_back(protocol.stimulus.stimulus(c));
  }
  for (const protocols::HypothesisSpec& spec : protocol.hypotheses) {
    hypotheses_.push_back(twin::make_hypothesis(spec, protocol.stimulus, units, options.twin));
    predictions_.emplace_back().resize(candidate_count, units);
    twin::ModelCheckOptions check_options = options.model_check;
    check_options.seed ^= options.seed;
    checks_.emplace_back(units, check_options);
  }
  if (strategy_ == protocols::DesignerStrategy::kDiscriminate && hypotheses_.size() < 2) {
    throw std::invalid_argument("closed loop: the discriminate strategy needs two hypotheses");
  }
  allowed_ = std::make_unique<bool[]>(candidate_count);
  std::fill_n(allowed_.get(), candidate_count, true);
  available_ = candidate_count;
  designer::DiscriminateConfig config;
  config.validation_fraction = protocol.designer.validation_fraction;
  config.seed = protocol.designer.seed ^ options.seed;
  if (hypotheses_.size() >= 2) {
    discriminate_ = std::make_unique<designer::DiscriminateStrategy>(candidate_count, units,
                                                                     hypotheses_.size(), config);
  }
  if (options.background_refit) {
    if (discriminate_) {
      // The live and the spare designer trade places at each adoption. They share the Monte
      // Carlo samples (so a choice does not depend on which one is live), not the validation
      // coin (so neither repeats the other's draws).
      designer::DiscriminateConfig spare = config;
      spare.draw_seed = config.seed ^ 0x5a5a5a5a5a5a5a5aULL;
      spare_discriminate_ = std::make_unique<designer::DiscriminateStrategy>(
          candidate_count, units, hypotheses_.size(), spare);
    }
    for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
      pending_predictions_.emplace_back().resize(candidate_count, units);
    }
    worker_ = std::make_unique<RefitWorker>(options.on_refit_thread_start);
  }
  if (criticism_possible()) {
    const std::size_t size = hypotheses_.size() * (hypotheses_.size() - 1) * candidate_count;
    criticism_scores_.assign(size, 0.0);
    if (options.background_refit) pending_criticism_scores_.assign(size, 0.0);
  }
  counts_.assign(units, 0);
  log_likelihoods_.assign(hypotheses_.size(), 0.0);
  evidence_.assign(hypotheses_.size(), 0.0);
  stop_ = protocol.stop;
  if (options.max_trials && *options.max_trials > 0) stop_.max_trials = *options.max_trials;
  check_row_.resize(units);
  score_row_.resize(hypotheses_.size());
}

ClosedLoop::~ClosedLoop() {
  worker_.reset();  // joins: a refit in flight uses the twins and buffers below
}

designer::StopDecision ClosedLoop::stop_decision() const noexcept {
  designer::StopInputs inputs;
  inputs.posterior = posterior_.probabilities();
  inputs.trials_done = trial_;
  inputs.minutes_elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count() / 60.0;
  inputs.operator_stop = operator_stop_;
  designer::StopDecision decision = designer::evaluate_stop(stop_, inputs);
  if (decision.reason == designer::StopReason::kPosteriorThreshold &&
      trial_ < options_.min_trials_before_stop) {
    decision = hard_stop_decision(inputs);
  } else if (!decision.stop() && exhausted_) {
    decision.reason = designer::StopReason::kTrialBudget;
    decision.text = kDataExhaustedText;
  }
  return decision;
}

designer::StopDecision ClosedLoop::hard_stop_decision(
    const designer::StopInputs& inputs) const noexcept {
  // The posterior is the first rule evaluate_stop looks at; with it out of reach the answer is
  // whether a hard limit (trial budget, time, the operator) holds.
  protocols::StopRules hard = stop_;
  hard.posterior_threshold = 2.0;  // unreachable: probabilities are at most 1
  designer::StopDecision decision = designer::evaluate_stop(hard, inputs);
  if (!decision.stop() && exhausted_) {
    // No candidate left to deliver: a hard limit like the trial budget.
    decision.reason = designer::StopReason::kTrialBudget;
    decision.text = kDataExhaustedText;
  }
  return decision;
}

std::size_t ClosedLoop::validation_trials_needed() const noexcept {
  // Enough validation trials for the model check to judge (it needs a minimum of PIT values).
  return std::max(options_.min_validation_trials,
                  (options_.model_check.min_values + units_ - 1) / units_);
}

bool ClosedLoop::posterior_stop_pending() const noexcept {
  if (stop_decision().reason != designer::StopReason::kPosteriorThreshold) return false;
  // The hard limits end a session even while validation or criticism trials are still missing.
  designer::StopInputs inputs;
  inputs.posterior = posterior_.probabilities();
  inputs.trials_done = trial_;
  inputs.minutes_elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count() / 60.0;
  inputs.operator_stop = operator_stop_;
  return !hard_stop_decision(inputs).stop();
}

bool ClosedLoop::needs_validation() const noexcept {
  return validation_trials_ < validation_trials_needed() && posterior_stop_pending();
}

bool ClosedLoop::needs_criticism() const noexcept {
  // Criticism trials (protocol designer.criticism_trials): once the posterior would stop the
  // session, designed trials where the leader's prediction is furthest, in its own standard
  // deviations, from a rival's. They feed the model check's encompassing test where a misfit of
  // the leader would show most (a second lobe it lacks), so that a winner is named only after
  // trials chosen to refute it. The posterior keeps scoring them; should it fall below its
  // threshold, the session designs as before.
  // With a power target (designer.criticism_power) they stop once the leader's check could have
  // caught counts halfway toward any rival with that probability: a rig whose trials already
  // say that much spends none, a weak one up to the budget.
  return criticism_possible() && criticism_planned_ < protocol_.designer.criticism_trials &&
         twins_fitted_ && available_ > 0 && posterior_stop_pending() && !criticism_power_reached();
}

bool ClosedLoop::criticism_power_reached() const noexcept {
  const std::optional<double> target = protocol_.designer.criticism_power;
  if (!target) return false;
  // NaN: the leader contains every rival near its fits, so there is nothing to refute it with.
  const double power = checks_[posterior_.leader()].weakest_encompassing_power();
  return std::isnan(power) || power >= *target;
}

bool ClosedLoop::criticism_possible() const noexcept {
  // discriminate_ exists whenever there are two hypotheses or more.
  return protocol_.designer.criticism_trials > 0 && discriminate_ != nullptr &&
         strategy_ == protocols::DesignerStrategy::kDiscriminate;
}

std::uint32_t ClosedLoop::criticism_candidate() const noexcept {
  const std::span<const double> p = posterior_.probabilities();
  const auto leader = static_cast<std::size_t>(std::max_element(p.begin(), p.end()) - p.begin());
  // The rivals take turns: the one a misfit leans toward is unknown, and the largest
  // disagreement (often with the null, at the leader's peak) would otherwise take every trial.
  const std::size_t rivals = hypotheses_.size() - 1;
  const std::size_t candidate_count = candidates_.size();
  const double* scores =
      criticism_scores_.data() +
      (leader * rivals + criticism_planned_ % std::max<std::size_t>(rivals, 1)) * candidate_count;
  std::uint32_t best = 0;
  double best_score = -1.0;
  for (std::size_t c = 0; c < candidate_count; ++c) {
    if (allowed_[c] && scores[c] > best_score) {
      best_score = scores[c];
      best = static_cast<std::uint32_t>(c);
    }
  }
  return best;
}

bool ClosedLoop::step() {
  const std::optional<PlannedTrial> planned = plan();
  if (!planned) return false;
  const TrialRig::Result result = rig_.run_trial(planned->trial, planned->stimulus, counts_);
  complete(*planned, result, counts_);
  return true;
}

void ClosedLoop::refresh_allowed() {
  const std::size_t candidate_count = candidates_.size();
  std::size_t available = 0;
  for (std::size_t c = 0; c < candidate_count; ++c) {
    const bool now = rig_.available(static_cast<std::uint32_t>(c));
    if (allowed_[c] && !now && record_) {
      record_->record_event(
          event_kind::kCandidateExhausted, std::nullopt,
          nlohmann::json({{"candidate", c},
                          {"stimulus", stimulus_object(protocol_.stimulus, candidates_[c])},
                          {"trials", trial_}})
              .dump());
    }
    allowed_[c] = now;
    available += now ? 1 : 0;
  }
  available_ = available;
  const bool was_exhausted = exhausted_;
  exhausted_ = available == 0;
  if (exhausted_ && !was_exhausted && record_) {
    record_->record_event(
        event_kind::kDataExhausted, std::nullopt,
        nlohmann::json(
            {{"reason", kDataExhaustedText}, {"trials", trial_}, {"candidates", candidate_count}})
            .dump());
  }
}

std::uint32_t ClosedLoop::draw_allowed() noexcept {
  return random_.choose(std::span<const bool>(allowed_.get(), candidates_.size())).value_or(0);
}

std::optional<PlannedTrial> ClosedLoop::plan() {
  // The refit launched when the last trial was scored designs this one (refit_ready() says
  // whether this waits).
  if (refit_pending_) adopt_background_refit();
  // Only candidates the rig can still deliver are designed; with none left the session stops.
  refresh_allowed();
  bool force_validation = needs_validation();
  const bool force_criticism = needs_criticism();
  if (!force_validation && !force_criticism && stop_decision().stop()) return std::nullopt;
  if (force_validation && force_criticism) {
    // Interleaved: whichever kind has more trials still to come goes first.
    const std::size_t validation_left = validation_trials_needed() - validation_trials_;
    const std::size_t criticism_left = protocol_.designer.criticism_trials - criticism_planned_;
    force_validation = validation_left >= criticism_left;
  }
  const std::uint64_t trial = trial_++;
  const std::size_t candidate_count = candidates_.size();

  // Design: the twins' predictions for every candidate change only when they are refitted, so
  // they (and the designer's tables built from them) are refreshed then, off the decision path;
  // the decision itself, under its deadline, only combines them with the current posterior.
  if (predictions_changed_) refresh_predictions();
  std::uint32_t candidate = 0;
  bool validation = false;
  double eig = std::numeric_limits<double>::quiet_NaN();
  std::string strategy_name = "random";
  if (force_validation) {
    candidate = draw_allowed();
    validation = true;
    strategy_name = "validation_random";
  } else if (force_criticism) {
    candidate = criticism_candidate();
    ++criticism_planned_;
    strategy_name = std::string(kCriticism);
  } else if (strategy_ == protocols::DesignerStrategy::kDiscriminate) {
    const auto started = std::chrono::steady_clock::now();
    const std::optional<designer::Decision> decision = discriminate_->decide(
        posterior_.probabilities(), std::span<const bool>(allowed_.get(), candidate_count));
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
    if (decision && elapsed_ms <= protocol_.designer.decision_deadline_ms &&
        !decision->validation && !(decision->eig > kNoInformationNats)) {
      // Every candidate is expected to say nothing (e.g. the twins still share their prior
      // predictions): a tie broken by candidate order would repeat one stimulus for nothing, so
      // the trial explores at random, and is drawn independently of every model.
      candidate = draw_allowed();
      validation = true;
      eig = decision->eig;
      strategy_name = "uninformative_random";
    } else if (decision && elapsed_ms <= protocol_.designer.decision_deadline_ms) {
      candidate = decision->candidate;
      validation = decision->validation;
      eig = decision->eig;
      strategy_name = validation ? "validation_random" : "discriminate";
    } else {
      // A decision that arrives after its deadline is not used: the trial falls back to a
      // random candidate, as it would have to on a rig, and the miss is on record.
      ++deadline_misses_;
      candidate = draw_allowed();
      strategy_name = std::string(kDeadlineFallback);
      if (record_) {
        nlohmann::json detail = {{"elapsed_ms", elapsed_ms},
                                 {"deadline_ms", protocol_.designer.decision_deadline_ms},
                                 {"decided", decision.has_value()}};
        record_->record_event(event_kind::kDeadlineMiss, trial, detail.dump());
      }
    }
  } else {
    candidate = draw_allowed();
    // Random trials are drawn independently of every model: all of them validate.
    validation = true;
  }
  PlannedTrial planned{trial, candidate, candidates_[candidate], validation};

  // Pre-register: every hypothesis's prediction for this stimulus, durably, before delivery.
  if (record_) {
    record_->begin_trial(TrialDesign{trial, candidate,
                                     stimulus_json(protocol_.stimulus, planned.stimulus),
                                     strategy_name, validation, eig});
    std::vector<HypothesisPrediction> rows;
    for (std::size_t k = 0; k < predictions_.size(); ++k) {
      const twin::PredictionBatch& batch = predictions_[k];
      const double* differences = encompassing_row(k, candidate);
      rows.push_back({std::span<const double>(batch.mean).subspan(candidate * units_, units_),
                      std::span<const double>(batch.dispersion).subspan(candidate * units_, units_),
                      differences != nullptr
                          ? std::span<const double>(differences, (predictions_.size() - 1) * units_)
                          : std::span<const double>()});
    }
    record_->preregister(trial, rows);
  }
  return planned;
}

void ClosedLoop::complete(const PlannedTrial& planned, const TrialRig::Result& result,
                          std::span<const std::uint32_t> counts) {
  const std::uint64_t trial = planned.trial;
  if (!result.delivered) {
    const std::string reason = nlohmann::json({{"reason", result.problem}}).dump();
    if (result.refused) {
      ++refused_;
      if (record_) record_->record_event(event_kind::kRefusedCommand, trial, reason);
    } else {
      ++aborted_;
    }
    // mark_trial records the abort, with its reason, as an event of its own.
    if (record_) record_->mark_trial(trial, TrialStatus::kAborted, reason);
    return;
  }
  if (counts.size() != units_) {
    throw std::invalid_argument("closed loop: trial " + std::to_string(trial) + " returned " +
                                std::to_string(counts.size()) + " counts for " +
                                std::to_string(units_) + " units");
  }
  if (record_) {
    if (delivery_recorded_ != trial) {
      record_->record_delivery(trial, result.onset_sample, result.delivered_at);
    }
    record_->record_outcome(trial, counts, result.window_start, result.window_end);
  }
  if (result.flagged) {
    // Counts from a window that lost samples are kept on record but never scored.
    ++flagged_;
    if (record_) {
      record_->mark_trial(trial, TrialStatus::kFlagged,
                          nlohmann::json({{"reason", result.problem}}).dump());
    }
    return;
  }

  // Score the registered predictions, then learn.
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    log_likelihoods_[k] = ledger_.add(k, predictions_[k], planned.candidate, counts);
  }
  ledger_.add_counts(counts);
  posterior_.add_trial(log_likelihoods_);
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) evidence_[k] = posterior_.log_evidence(k);
  if (record_) record_->record_posterior(trial, posterior_.probabilities(), evidence_);
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    score_row_[k] = {predictions_[k].mean.data() + planned.candidate * units_,
                     predictions_[k].dispersion.data() + planned.candidate * units_,
                     encompassing_row(k, planned.candidate)};
  }
  learn(planned.stimulus, planned.validation, predictions_fitted_, counts);
  ++scored_since_refit_;
  if (worker_) {
    launch_background_refit();
  } else if (scored_since_refit_ >= std::max<std::size_t>(options_.refit_every, 1) &&
             history_stimuli_.size() >= options_.min_trials_to_fit) {
    refit();
  }
}

void ClosedLoop::adopt_background_refit() {
  if (!refit_pending_) return;
  const auto started = std::chrono::steady_clock::now();
  if (worker_->wait()) {
    ++refit_stats_.waits;
    refit_stats_.session_wait_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
  }
  refit_pending_ = false;
  ++refit_stats_.refits;
  refit_stats_.total_ms += pending_refit_ms_;
  refit_stats_.max_ms = std::max(refit_stats_.max_ms, pending_refit_ms_);
  predictions_.swap(pending_predictions_);
  criticism_scores_.swap(pending_criticism_scores_);
  encompassing_differences_.swap(pending_encompassing_differences_);
  if (discriminate_) discriminate_.swap(spare_discriminate_);
  predictions_changed_ = false;
  predictions_fitted_ = true;
  ++predictions_version_;
}

bool ClosedLoop::refit_ready() const noexcept {
  return !refit_pending_ || worker_->done();
}

void ClosedLoop::launch_background_refit() {
  if (refit_pending_) adopt_background_refit();  // plan() was not called in between
  if (scored_since_refit_ < std::max<std::size_t>(options_.refit_every, 1) ||
      history_stimuli_.size() < options_.min_trials_to_fit) {
    return;
  }
  scored_since_refit_ = 0;
  refit_pending_ = true;
  twins_fitted_ = true;
  // The worker gets its own copy of the history; the twins, the pending predictions and the
  // spare designer are its alone until the adoption has waited for it.
  worker_->submit([this, stimuli = history_stimuli_, counts = history_counts_] {
    const auto started = std::chrono::steady_clock::now();
    for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
      hypotheses_[k]->update(stimuli, counts);
      hypotheses_[k]->predict(candidates_, pending_predictions_[k]);
    }
    // Scored with the predictions, so that a criticism decision is only a search of the
    // allowed candidates (empty, and skipped, unless criticism trials can run).
    compute_encompassing_differences(pending_predictions_, pending_encompassing_differences_);
    twin::score_criticism_candidates(pending_predictions_, pending_criticism_scores_,
                                     pending_encompassing_differences_);
    if (spare_discriminate_) (void)spare_discriminate_->set_predictions(pending_predictions_);
    pending_refit_ms_ =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
  });
}

void ClosedLoop::delivered(const PlannedTrial& planned, const TrialRig::Result& result) {
  if (record_ == nullptr || delivery_recorded_ == planned.trial) return;
  record_->record_delivery(planned.trial, result.onset_sample, result.delivered_at);
  delivery_recorded_ = planned.trial;
}

void ClosedLoop::learn(const protocols::Stimulus& stimulus, bool validation, bool fitted,
                       std::span<const std::uint32_t> counts) {
  posterior_trace_.emplace_back(posterior_.probabilities().begin(),
                                posterior_.probabilities().end());
  // The check judges fitted twins: trials whose predictions still came from the prior say
  // nothing about whether the family can describe this subject. The PIT tests take validation
  // trials only (the designer looks where the fits' approximations are worst, which tilts the
  // PIT histogram); the one-sided encompassing test takes designed trials too, where the rivals
  // disagree most (ModelCheck, file comment).
  if (fitted) {
    if (validation) ++validation_trials_;
    for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
      for (std::size_t u = 0; u < units_; ++u) {
        check_row_[u] = {score_row_[k].mean[u], score_row_[k].dispersion[u]};
      }
      rival_means_.clear();
      for (std::size_t r = 0; r + 1 < hypotheses_.size(); ++r) {
        if (score_row_[k].rival_differences != nullptr) {
          // The check leans toward its own mean plus the registered direction.
          const double* d = score_row_[k].rival_differences + r * units_;
          for (std::size_t u = 0; u < units_; ++u) {
            rival_means_.push_back(score_row_[k].mean[u] + d[u]);
          }
        } else {
          const double* means = score_row_[twin::rival_hypothesis(k, r)].mean;
          rival_means_.insert(rival_means_.end(), means, means + units_);
        }
      }
      if (validation) {
        checks_[k].add_trial(check_row_, counts, rival_means_);
      } else {
        checks_[k].add_designed_trial(check_row_, counts, rival_means_);
      }
    }
  }
  history_stimuli_.push_back(stimulus);
  history_counts_.insert(history_counts_.end(), counts.begin(), counts.end());
}

RestoreReport ClosedLoop::restore() {
  if (record_ == nullptr) throw std::invalid_argument("closed loop: restore needs a record");
  if (trial_ != 0) throw std::invalid_argument("closed loop: restore on a loop that has run");
  if (record_->hypothesis_count() != hypotheses_.size() || record_->unit_count() != units_) {
    throw std::invalid_argument(
        "closed loop: the record holds " + std::to_string(record_->hypothesis_count()) +
        " hypotheses and " + std::to_string(record_->unit_count()) + " units; the protocol " +
        std::to_string(hypotheses_.size()) + " and the rig " + std::to_string(units_));
  }
  RestoreReport report;
  const std::vector<RecordedTrial> recorded = record_->trials();
  // The twins' prior predictions: a recorded trial predicted exactly so came before any fit.
  refresh_predictions();
  report.trials = recorded.size();
  std::vector<double> rescored(hypotheses_.size());
  for (const RecordedTrial& t : recorded) {
    trial_ = std::max<std::uint64_t>(trial_, t.trial + 1);
    if (t.strategy == kDeadlineFallback) ++deadline_misses_;
    if (t.strategy == kCriticism) ++criticism_planned_;
    switch (t.status) {
      case TrialStatus::kFlagged:
        ++report.flagged;
        ++flagged_;
        continue;
      case TrialStatus::kAborted:
        ++report.aborted;
        ++aborted_;
        continue;
      case TrialStatus::kScored:
        break;
      default: {
        // In flight when the session stopped: its outcome (if any) was never scored, so it is
        // abandoned on record rather than scored late against predictions the loop forgot.
        ++report.in_flight;
        ++aborted_;
        record_->mark_trial(
            t.trial, TrialStatus::kAborted,
            nlohmann::json({{"reason", "in flight when the session was interrupted"},
                            {"status", std::string(to_string(t.status))}})
                .dump());
        continue;
      }
    }
    if (t.candidate < 0 || static_cast<std::size_t>(t.candidate) >= candidates_.size() ||
        t.mean.size() != hypotheses_.size() || t.counts.size() != units_) {
      throw std::invalid_argument("closed loop: recorded trial " + std::to_string(t.trial) +
                                  " does not match the protocol (candidate, predictions or "
                                  "counts)");
    }
    for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
      if (t.mean[k].size() != units_ || t.dispersion[k].size() != units_) {
        throw std::invalid_argument("closed loop: recorded trial " + std::to_string(t.trial) +
                                    " has a prediction of the wrong size");
      }
      rescored[k] = ledger_.add(k, t.mean[k], t.dispersion[k], t.counts);
      const bool has_differences =
          k < t.rival_differences.size() &&
          t.rival_differences[k].size() == (hypotheses_.size() - 1) * units_;
      score_row_[k] = {t.mean[k].data(), t.dispersion[k].data(),
                       has_differences ? t.rival_differences[k].data() : nullptr};
    }
    ledger_.add_counts(t.counts);
    posterior_.add_trial(rescored);
    for (std::size_t k = 0; k < hypotheses_.size() && k < t.posterior.size(); ++k) {
      if (std::abs(posterior_.probability(k) - t.posterior[k]) > 1e-9) {
        ++report.mismatches;
        break;
      }
    }
    ++report.scored;
    const auto c = static_cast<std::size_t>(t.candidate);
    learn(candidates_[c], t.is_validation,
          !predicted_by_prior(predictions_, c, t.mean, t.dispersion), t.counts);
  }
  // Fresh random streams for the continuation, so it does not repeat the first trials' draws.
  random_ = designer::RandomStrategy((protocol_.designer.seed ^ options_.seed) + 0x9e37 * trial_);
  if (history_stimuli_.size() >= options_.min_trials_to_fit) refit();
  record_->record_event(event_kind::kResumed, std::nullopt,
                        nlohmann::json({{"trials_read", report.trials},
                                        {"rescored", report.scored},
                                        {"in_flight_aborted", report.in_flight},
                                        {"posterior_mismatches", report.mismatches},
                                        {"next_trial", trial_}})
                            .dump());
  return report;
}

void ClosedLoop::change_stop_rules(std::optional<double> posterior_threshold,
                                   std::optional<std::uint32_t> max_trials,
                                   std::optional<double> max_minutes) {
  nlohmann::json detail = nlohmann::json::object();
  if (posterior_threshold) {
    detail["posterior_threshold"] = {{"from", stop_.posterior_threshold},
                                     {"to", *posterior_threshold}};
    stop_.posterior_threshold = *posterior_threshold;
  }
  if (max_trials) {
    detail["max_trials"] = {{"from", stop_.max_trials}, {"to", *max_trials}};
    stop_.max_trials = *max_trials;
  }
  if (max_minutes) {
    detail["max_minutes"] = {{"from", stop_.max_minutes.value_or(0.0)}, {"to", *max_minutes}};
    stop_.max_minutes = *max_minutes;
  }
  if (record_) record_->record_event("stop_rules_changed", std::nullopt, detail.dump());
}

void ClosedLoop::compute_encompassing_differences(
    std::span<const twin::PredictionBatch> predictions, std::vector<std::vector<double>>& out) {
  const std::size_t k_count = hypotheses_.size();
  if (k_count < 2) return;
  const std::size_t rivals = k_count - 1;
  const std::size_t cells = candidates_.size() * units_;
  out.resize(k_count);
  for (std::size_t k = 0; k < k_count; ++k) {
    // Rival-major for the twin ([rival][candidate][unit]), then candidate-major for the check
    // and the record ([candidate][rival][unit]): one trial's directions lie together.
    std::vector<double> d(rivals * cells);
    const auto rivals_less_own = [&] {
      const std::vector<double>& own = predictions[k].mean;
      for (std::size_t r = 0; r < rivals; ++r) {
        const std::vector<double>& rival = predictions[twin::rival_hypothesis(k, r)].mean;
        for (std::size_t i = 0; i < cells; ++i) d[r * cells + i] = rival[i] - own[i];
      }
    };
    rivals_less_own();
    // A twin that cannot say how its predictions move (or whose directions came out non-finite)
    // is judged against the rivals' own differences, as before directions existed.
    if (hypotheses_[k]->remove_own_directions(d, rivals) &&
        !std::all_of(d.begin(), d.end(), [](double v) { return std::isfinite(v); })) {
      rivals_less_own();
    }
    std::vector<double>& by_candidate = out[k];
    by_candidate.resize(rivals * cells);
    for (std::size_t c = 0; c < candidates_.size(); ++c) {
      for (std::size_t r = 0; r < rivals; ++r) {
        std::copy_n(d.data() + r * cells + c * units_, units_,
                    by_candidate.data() + (c * rivals + r) * units_);
      }
    }
  }
}

const double* ClosedLoop::encompassing_row(std::size_t hypothesis,
                                           std::size_t candidate) const noexcept {
  if (hypothesis >= encompassing_differences_.size()) return nullptr;
  const std::size_t row = (hypotheses_.size() - 1) * units_;
  const std::vector<double>& d = encompassing_differences_[hypothesis];
  return d.size() == candidates_.size() * row ? d.data() + candidate * row : nullptr;
}

void ClosedLoop::refresh_predictions() {
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    hypotheses_[k]->predict(candidates_, predictions_[k]);
  }
  compute_encompassing_differences(predictions_, encompassing_differences_);
  twin::score_criticism_candidates(predictions_, criticism_scores_, encompassing_differences_);
  if (discriminate_) discriminate_->set_predictions(predictions_);
  predictions_changed_ = false;
  predictions_fitted_ = twins_fitted_;
  ++predictions_version_;
}

std::optional<AlternativeChoice> ClosedLoop::alternative(protocols::DesignerStrategy strategy,
                                                         const PlannedTrial& planned) {
  const std::size_t candidate_count = candidates_.size();
  const std::span<const bool> allowed(allowed_.get(), candidate_count);
  if (hypotheses_.size() >= 2 && !shadow_) {
    designer::DiscriminateConfig config = discriminate_->config();
    config.validation_fraction = 0.0;  // the designer's own choice, not a validation draw
    shadow_ = std::make_unique<designer::DiscriminateStrategy>(candidate_count, units_,
                                                               hypotheses_.size(), config);
  }
  if (shadow_ && shadow_version_ != predictions_version_) {
    (void)shadow_->set_predictions(predictions_);
    shadow_version_ = predictions_version_;
  }
  AlternativeChoice choice;
  if (strategy == protocols::DesignerStrategy::kDiscriminate) {
    if (!shadow_) return std::nullopt;
    const std::optional<designer::Decision> decision =
        shadow_->decide(posterior_.probabilities(), allowed);
    if (!decision) return std::nullopt;
    choice.candidate = decision->candidate;
  } else {
    if (!shadow_random_) shadow_random_.emplace((protocol_.designer.seed ^ options_.seed) + 0xa17e);
    choice.candidate = shadow_random_->choose(allowed).value_or(planned.candidate);
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  choice.eig =
      shadow_ ? shadow_->estimate_eig(predictions_, posterior_.probabilities(), choice.candidate)
              : nan;
  choice.eig_planned =
      shadow_ ? shadow_->estimate_eig(predictions_, posterior_.probabilities(), planned.candidate)
              : nan;
  return choice;
}

void ClosedLoop::refit() {
  if (worker_ && refit_pending_) adopt_background_refit();  // the twins are the worker's till then
  scored_since_refit_ = 0;
  predictions_changed_ = true;
  twins_fitted_ = true;
  for (auto& h : hypotheses_) h->update(history_stimuli_, history_counts_);
}

std::optional<std::size_t> ClosedLoop::trials_to_reach(std::size_t hypothesis,
                                                       double threshold) const noexcept {
  for (std::size_t t = 0; t < posterior_trace_.size(); ++t) {
    if (posterior_trace_[t][hypothesis] >= threshold) return t + 1;
  }
  return std::nullopt;
}

SessionSummary ClosedLoop::summary() const {
  SessionSummary s;
  s.trials = trial_;
  s.validation_trials = validation_trials_;
  s.criticism_trials = criticism_planned_;
  s.flagged_trials = flagged_;
  s.refused_trials = refused_;
  s.aborted_trials = aborted_;
  s.deadline_misses = deadline_misses_;
  s.stop_reason = std::string(stop_decision().text);
  std::vector<twin::ModelCheckResult> results;
  for (const twin::ModelCheck& check : checks_) results.push_back(check.result());
  s.verdict = twin::decide(posterior_, results, stop_.posterior_threshold);

  std::optional<std::size_t> null_index;
  for (std::size_t k = 0; k < protocol_.hypotheses.size(); ++k) {
    if (protocol_.hypotheses[k].family == protocols::HypothesisFamily::kNull) null_index = k;
  }
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    HypothesisSummary h;
    h.name = hypotheses_[k]->name();
    h.family = std::string(hypotheses_[k]->family());
    h.posterior = posterior_.probability(k);
    std::size_t against = null_index.value_or(0);
    if (!null_index || *null_index == k) {
      // Against the strongest other hypothesis when there is no null (or this is the null).
      double best = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < hypotheses_.size(); ++j) {
        if (j != k && posterior_.log_evidence(j) > best) {
          best = posterior_.log_evidence(j);
          against = j;
        }
      }
    }
    h.bayes_factor_against = against == k ? "" : hypotheses_[against]->name();
    h.log_bayes_factor = against == k ? 0.0 : posterior_.log_bayes_factor(k, against);
    if (against != k) h.by_unit = ledger_.compare(k, against);
    h.bits_per_spike =
        twin::reported_bits_per_spike(results[k], null_index ? &results[*null_index] : nullptr);
    h.bits_per_spike_against =
        null_index ? hypotheses_[*null_index]->name() : std::string(kConstantRateReference);
    h.check = results[k];
    s.hypotheses.push_back(std::move(h));
  }
  return s;
}

}  // namespace twinloop::daemon

#include "twinloop/daemon/closed_loop.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace twinloop::daemon {
namespace {

std::string stimulus_json(const protocols::StimulusSpace& space, const protocols::Stimulus& s) {
  nlohmann::json j = nlohmann::json::object();
  for (std::size_t d = 0; d < space.dimension_count(); ++d)
    j[space.dimensions[d].name] = s.values[d];
  return j.dump();
}

}  // namespace

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
    twin::ModelCheckOptions check_options;
    check_options.seed ^= options.seed;
    checks_.emplace_back(units, check_options);
  }
  if (strategy_ == protocols::DesignerStrategy::kDiscriminate && hypotheses_.size() < 2) {
    throw std::invalid_argument("closed loop: the discriminate strategy needs two hypotheses");
  }
  allowed_ = std::make_unique<bool[]>(candidate_count);
  std::fill_n(allowed_.get(), candidate_count, true);
  designer::DiscriminateConfig config;
  config.validation_fraction = protocol.designer.validation_fraction;
  config.seed = protocol.designer.seed ^ options.seed;
  if (hypotheses_.size() >= 2) {
    discriminate_ = std::make_unique<designer::DiscriminateStrategy>(candidate_count, units,
                                                                     hypotheses_.size(), config);
  }
  counts_.assign(units, 0);
  log_likelihoods_.assign(hypotheses_.size(), 0.0);
}

ClosedLoop::~ClosedLoop() = default;

designer::StopDecision ClosedLoop::stop_decision() const noexcept {
  protocols::StopRules rules = protocol_.stop;
  if (options_.max_trials && *options_.max_trials > 0) rules.max_trials = *options_.max_trials;
  designer::StopInputs inputs;
  inputs.posterior = posterior_.probabilities();
  inputs.trials_done = trial_;
  inputs.minutes_elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count() / 60.0;
  inputs.operator_stop = operator_stop_;
  designer::StopDecision decision = designer::evaluate_stop(rules, inputs);
  if (decision.reason == designer::StopReason::kPosteriorThreshold &&
      trial_ < options_.min_trials_before_stop) {
    decision.reason = designer::StopReason::kNone;
    decision.text = "";
  }
  return decision;
}

bool ClosedLoop::needs_validation() const noexcept {
  // Enough validation trials for the model check to judge (it needs a minimum of PIT values).
  const std::size_t needed = std::max(options_.min_validation_trials,
                                      (twin::ModelCheckOptions{}.min_values + units_ - 1) / units_);
  return stop_decision().reason == designer::StopReason::kPosteriorThreshold &&
         validation_trials_ < needed;
}

bool ClosedLoop::step() {
  const bool force_validation = needs_validation();
  if (!force_validation && stop_decision().stop()) return false;
  const std::uint64_t trial = trial_++;
  const std::size_t candidate_count = candidates_.size();

  // Design: every twin predicts every candidate; the designer picks under a deadline.
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    hypotheses_[k]->predict(candidates_, predictions_[k]);
  }
  std::uint32_t candidate = 0;
  bool validation = false;
  double eig = std::numeric_limits<double>::quiet_NaN();
  std::string strategy_name = "random";
  if (force_validation) {
    candidate = random_.choose(static_cast<std::uint32_t>(candidate_count));
    validation = true;
    strategy_name = "validation_random";
  } else if (strategy_ == protocols::DesignerStrategy::kDiscriminate) {
    const auto started = std::chrono::steady_clock::now();
    // The designer precomputes what depends on the predictions only when they change (after a
    // refit); the decision itself then combines them with the current posterior.
    if (predictions_changed_) {
      discriminate_->set_predictions(predictions_);
      predictions_changed_ = false;
    }
    const std::optional<designer::Decision> decision = discriminate_->decide(
        posterior_.probabilities(), std::span<const bool>(allowed_.get(), candidate_count));
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count();
    if (decision && elapsed_ms <= protocol_.designer.decision_deadline_ms) {
      candidate = decision->candidate;
      validation = decision->validation;
      eig = decision->eig;
      strategy_name = validation ? "validation_random" : "discriminate";
    } else {
      // A decision that arrives after its deadline is not used: the trial falls back to a
      // random candidate, as it would have to on a rig, and the miss is on record.
      ++deadline_misses_;
      candidate = random_.choose(static_cast<std::uint32_t>(candidate_count));
      strategy_name = "deadline_fallback_random";
      if (record_) {
        nlohmann::json detail = {{"elapsed_ms", elapsed_ms},
                                 {"deadline_ms", protocol_.designer.decision_deadline_ms},
                                 {"decided", decision.has_value()}};
        record_->record_event(event_kind::kDeadlineMiss, trial, detail.dump());
      }
    }
  } else {
    candidate = random_.choose(static_cast<std::uint32_t>(candidate_count));
    // Random trials are drawn independently of every model: all of them validate.
    validation = true;
  }
  const protocols::Stimulus& stimulus = candidates_[candidate];

  // Pre-register: every hypothesis's prediction for this stimulus, durably, before delivery.
  if (record_) {
    record_->begin_trial(TrialDesign{trial, candidate, stimulus_json(protocol_.stimulus, stimulus),
                                     strategy_name, validation, eig});
    std::vector<HypothesisPrediction> rows;
    for (const twin::PredictionBatch& batch : predictions_) {
      rows.push_back(
          {std::span<const double>(batch.mean).subspan(candidate * units_, units_),
           std::span<const double>(batch.dispersion).subspan(candidate * units_, units_)});
    }
    record_->preregister(trial, rows);
  }

  const TrialRig::Result result = rig_.run_trial(trial, stimulus, counts_);
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
    return true;
  }
  if (record_) {
    record_->record_delivery(trial, result.onset_sample, result.delivered_at);
    record_->record_outcome(trial, counts_, result.window_start, result.window_end);
  }
  if (result.flagged) {
    // Counts from a window that lost samples are kept on record but never scored.
    ++flagged_;
    if (record_) {
      record_->mark_trial(trial, TrialStatus::kFlagged,
                          nlohmann::json({{"reason", result.problem}}).dump());
    }
    return true;
  }

  // Score the registered predictions, then learn.
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
    log_likelihoods_[k] = twin::log_likelihood(predictions_[k], candidate, counts_);
    if (std::isnan(log_likelihoods_[k]))
      log_likelihoods_[k] = -std::numeric_limits<double>::infinity();
  }
  posterior_.add_trial(log_likelihoods_);
  std::vector<double> evidence(hypotheses_.size());
  for (std::size_t k = 0; k < hypotheses_.size(); ++k) evidence[k] = posterior_.log_evidence(k);
  if (record_) record_->record_posterior(trial, posterior_.probabilities(), evidence);
  posterior_trace_.emplace_back(posterior_.probabilities().begin(),
                                posterior_.probabilities().end());
  // The check judges fitted twins: validation trials whose predictions still came from the prior
  // say nothing about whether the family can describe this subject.
  const bool fitted = history_stimuli_.size() >= options_.min_trials_to_fit;
  if (validation && fitted) {
    ++validation_trials_;
    for (std::size_t k = 0; k < hypotheses_.size(); ++k) {
      checks_[k].add_trial(predictions_[k], candidate, counts_);
    }
  }
  history_stimuli_.push_back(stimulus);
  history_counts_.insert(history_counts_.end(), counts_.begin(), counts_.end());
  if (++scored_since_refit_ >= std::max<std::size_t>(options_.refit_every, 1) &&
      history_stimuli_.size() >= options_.min_trials_to_fit) {
    refit();
  }
  return true;
}

void ClosedLoop::refit() {
  scored_since_refit_ = 0;
  predictions_changed_ = true;
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
  s.flagged_trials = flagged_;
  s.refused_trials = refused_;
  s.aborted_trials = aborted_;
  s.deadline_misses = deadline_misses_;
  s.stop_reason = std::string(stop_decision().text);
  std::vector<twin::ModelCheckResult> results;
  for (const twin::ModelCheck& check : checks_) results.push_back(check.result());
  s.verdict = twin::decide(posterior_, results, protocol_.stop.posterior_threshold);

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
    h.check = results[k];
    s.hypotheses.push_back(std::move(h));
  }
  return s;
}

}  // namespace twinloop::daemon

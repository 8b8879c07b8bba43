#include "twinloop/twin/posterior.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_set>
#include <utility>

namespace twinloop::twin {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

void check_names(const std::vector<std::string>& names) {
  if (names.empty()) throw std::invalid_argument("Posterior: no hypotheses");
  std::unordered_set<std::string_view> seen;
  for (const auto& name : names) {
    if (!seen.insert(name).second) {
      throw std::invalid_argument("Posterior: hypothesis name '" + name + "' appears twice");
    }
  }
}

}  // namespace

double log_likelihood(std::span<const CountDistribution> predictions,
                      std::span<const std::uint32_t> counts) {
  if (predictions.size() != counts.size()) {
    throw std::invalid_argument("log_likelihood: " + std::to_string(predictions.size()) +
                                " predictions for " + std::to_string(counts.size()) + " counts");
  }
  double total = 0.0;
  for (std::size_t u = 0; u < counts.size(); ++u) {
    total += log_probability(predictions[u], counts[u]);
  }
  return total;
}

Posterior::Posterior(std::vector<std::string> names)
    : Posterior(std::move(names), std::span<const double>{}) {}

Posterior::Posterior(std::vector<std::string> names, std::span<const double> prior)
    : names_(std::move(names)) {
  check_names(names_);
  const std::size_t k = names_.size();
  log_prior_.assign(k, -std::log(static_cast<double>(k)));
  if (!prior.empty()) {
    if (prior.size() != k) {
      throw std::invalid_argument("Posterior: " + std::to_string(prior.size()) +
                                  " prior weights for " + std::to_string(k) + " hypotheses");
    }
    double total = 0.0;
    for (std::size_t i = 0; i < k; ++i) {
      if (!std::isfinite(prior[i]) || !(prior[i] > 0.0)) {
        throw std::invalid_argument("Posterior: prior weight of '" + names_[i] +
                                    "' must be finite and > 0");
      }
      total += prior[i];
    }
    for (std::size_t i = 0; i < k; ++i) log_prior_[i] = std::log(prior[i] / total);
  }
  log_evidence_.assign(k, 0.0);
  log_posterior_.assign(k, 0.0);
  probabilities_.assign(k, 0.0);
  normalise();
}

void Posterior::add_trial(std::span<const double> log_likelihoods) {
  if (log_likelihoods.size() != names_.size()) {
    throw std::invalid_argument("Posterior::add_trial: wrong number of log-likelihoods");
  }
  for (const double value : log_likelihoods) {
    if (std::isnan(value) || value == std::numeric_limits<double>::infinity()) {
      throw std::invalid_argument("Posterior::add_trial: log-likelihood is NaN or +inf");
    }
  }
  for (std::size_t i = 0; i < names_.size(); ++i) log_evidence_[i] += log_likelihoods[i];
  ++trials_;
  normalise();
}

void Posterior::reset() noexcept {
  for (double& e : log_evidence_) e = 0.0;
  trials_ = 0;
  normalise();
}

void Posterior::normalise() noexcept {
  // log-sum-exp: subtract the largest log joint before exponentiating.
  const std::size_t k = names_.size();
  double top = kNegInf;
  leader_ = 0;
  for (std::size_t i = 0; i < k; ++i) {
    log_posterior_[i] = log_prior_[i] + log_evidence_[i];
    if (log_posterior_[i] > top) {
      top = log_posterior_[i];
      leader_ = i;
    }
  }
  all_refuted_ = (top == kNegInf);
  if (all_refuted_) {
    for (std::size_t i = 0; i < k; ++i) {
      log_posterior_[i] = kNegInf;
      probabilities_[i] = 0.0;
    }
    return;
  }
  double sum = 0.0;
  for (std::size_t i = 0; i < k; ++i) sum += std::exp(log_posterior_[i] - top);
  const double log_norm = top + std::log(sum);
  for (std::size_t i = 0; i < k; ++i) {
    log_posterior_[i] -= log_norm;
    probabilities_[i] = std::exp(log_posterior_[i]);
  }
}

std::optional<std::size_t> Posterior::index_of(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return i;
  }
  return std::nullopt;
}

double Posterior::log_probability(std::size_t i) const {
  return log_posterior_.at(i);
}

double Posterior::log_bayes_factor(std::size_t i, std::size_t j) const {
  const double a = log_evidence_.at(i);
  const double b = log_evidence_.at(j);
  if (a == kNegInf && b == kNegInf) return std::numeric_limits<double>::quiet_NaN();
  return a - b;
}

}  // namespace twinloop::twin

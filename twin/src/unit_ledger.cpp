#include "twinloop/twin/unit_ledger.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "twinloop/twin/count_distribution.hpp"

namespace twinloop::twin {

UnitLedger::UnitLedger(std::size_t hypotheses, std::size_t units)
    : hypotheses_(hypotheses), units_(units) {
  log_evidence_.assign(hypotheses * units, 0.0);
  counts_.assign(units, 0);
}

double UnitLedger::add(std::size_t k, const PredictionBatch& predictions, std::size_t candidate,
                       std::span<const std::uint32_t> counts) {
  if (candidate >= predictions.candidates || predictions.units != units_) {
    throw std::invalid_argument("UnitLedger: candidate " + std::to_string(candidate) +
                                " of a batch of " + std::to_string(predictions.candidates) +
                                " candidates x " + std::to_string(predictions.units) +
                                " units, for " + std::to_string(units_) + " units");
  }
  const std::size_t row = candidate * units_;
  return add(k, std::span<const double>(predictions.mean).subspan(row, units_),
             std::span<const double>(predictions.dispersion).subspan(row, units_), counts);
}

double UnitLedger::add(std::size_t k, std::span<const double> mean,
                       std::span<const double> dispersion, std::span<const std::uint32_t> counts) {
  if (k >= hypotheses_ || mean.size() != units_ || dispersion.size() != units_ ||
      counts.size() != units_) {
    throw std::invalid_argument("UnitLedger: hypothesis " + std::to_string(k) + " of " +
                                std::to_string(hypotheses_) + ", " + std::to_string(mean.size()) +
                                " predictions and " + std::to_string(counts.size()) +
                                " counts for " + std::to_string(units_) + " units");
  }
  double* evidence = log_evidence_.data() + k * units_;
  double total = 0.0;
  for (std::size_t u = 0; u < units_; ++u) {
    double term = log_probability({mean[u], dispersion[u]}, counts[u]);
    if (std::isnan(term)) term = -std::numeric_limits<double>::infinity();
    evidence[u] += term;
    total += term;
  }
  return total;
}

void UnitLedger::add_counts(std::span<const std::uint32_t> counts) {
  if (counts.size() != units_) {
    throw std::invalid_argument("UnitLedger: " + std::to_string(counts.size()) + " counts for " +
                                std::to_string(units_) + " units");
  }
  for (std::size_t u = 0; u < units_; ++u) counts_[u] += counts[u];
}

UnitEvidence UnitLedger::compare(std::size_t k, std::size_t against, std::size_t strongest) const {
  if (k >= hypotheses_ || against >= hypotheses_) {
    throw std::invalid_argument("UnitLedger: hypotheses " + std::to_string(k) + " and " +
                                std::to_string(against) + " of " + std::to_string(hypotheses_));
  }
  UnitEvidence e;
  std::vector<UnitShare> favour;
  for (std::size_t u = 0; u < units_; ++u) {
    const double a = log_evidence_[k * units_ + u];
    const double b = log_evidence_[against * units_ + u];
    // Both -inf: the unit refutes both, and says nothing about which is better.
    const double bf = (std::isinf(a) && std::isinf(b) && a == b) ? 0.0 : a - b;
    if (counts_[u] == 0) {
      ++e.silent_units;
      e.silent_log_bayes_factor += bf;
    } else if (bf > 0.0) {
      ++e.units_for;
      e.log_bayes_factor_for += bf;
      favour.push_back({u, bf});
    } else if (bf < 0.0) {
      ++e.units_against;
      e.log_bayes_factor_against += bf;
    }
  }
  const std::size_t n = std::min(strongest, favour.size());
  std::partial_sort(favour.begin(), favour.begin() + static_cast<std::ptrdiff_t>(n), favour.end(),
                    [](const UnitShare& x, const UnitShare& y) {
                      return x.log_bayes_factor > y.log_bayes_factor ||
                             (x.log_bayes_factor == y.log_bayes_factor && x.unit < y.unit);
                    });
  e.strongest.assign(favour.begin(), favour.begin() + static_cast<std::ptrdiff_t>(n));
  return e;
}

}  // namespace twinloop::twin

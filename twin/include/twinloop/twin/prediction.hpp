// PredictionBatch: what one hypothesis predicts for a set of candidate stimuli, as a count
// distribution per (candidate, unit) in a trial's response window. The only thing the designer
// and the session record ever see of a twin, so neither depends on how the twin is computed.
//
// Layout: candidate-major, `mean[c * units + u]`. dispersion 0 means Poisson; > 0 negative
// binomial with variance = mean + dispersion * mean^2 (see count_distribution.hpp).
// Plain value type; resize() allocates, reading and filling an already sized batch does not.
#pragma once

#include <cstddef>
#include <vector>

#include "twinloop/twin/count_distribution.hpp"

namespace twinloop::twin {

struct PredictionBatch {
  std::size_t candidates = 0;
  std::size_t units = 0;
  std::vector<double> mean;        ///< expected spike count in the response window, >= 0
  std::vector<double> dispersion;  ///< >= 0

  void resize(std::size_t candidate_count, std::size_t unit_count) {
    candidates = candidate_count;
    units = unit_count;
    mean.assign(candidates * units, 0.0);
    dispersion.assign(candidates * units, 0.0);
  }
  [[nodiscard]] CountDistribution at(std::size_t candidate, std::size_t unit) const noexcept {
    return {mean[candidate * units + unit], dispersion[candidate * units + unit]};
  }
};

}  // namespace twinloop::twin

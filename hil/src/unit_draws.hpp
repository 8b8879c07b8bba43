// Internal: how both simulated subjects (spike-level and count-level) draw their units' response
// kinds and model parameters, so that one seed gives the same units in both.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "twinloop/hil/details/random.hpp"
#include "twinloop/hil/response_models.hpp"
#include "twinloop/hil/simulation_config.hpp"
#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil::details {

/// What is wrong with both subjects' spatial-frequency settings, as {field, expected}, or nullopt:
/// the dimension -1 or a stimulus value index; with it, a positive, finite width and a preference
/// range 0 < min <= max < inf.
inline std::optional<std::pair<const char*, const char*>> spatial_frequency_problem(
    int dimension, double sigma_octaves, double min_cpd, double max_cpd) noexcept {
  if (dimension < -1 || dimension >= static_cast<int>(protocols::kMaxStimulusDimensions)) {
    return std::pair{"spatial_frequency_dimension", "-1 or a stimulus value index"};
  }
  if (dimension >= 0 && !(sigma_octaves > 0.0 && std::isfinite(sigma_octaves) && min_cpd > 0.0 &&
                          max_cpd >= min_cpd && std::isfinite(max_cpd))) {
    return std::pair{"sf_sigma_octaves/min_preferred_sf_cpd/max_preferred_sf_cpd",
                     "sigma > 0 and 0 < min <= max, finite"};
  }
  return std::nullopt;
}

/// The mix's share of n units, largest remainder first, then shuffled (Fisher-Yates) so kinds are
/// not sorted by depth.
inline std::vector<ResponseKind> assign_kinds(const ResponseMix& mix, std::size_t n,
                                              Xoshiro256pp& rng) {
  // Indexed by ResponseKind.
  const std::array<double, kResponseKindCount> w{mix.direction_tuned, mix.bimodal,
                                                 mix.adapting,        mix.gain_fluctuating,
                                                 mix.untuned,         mix.orientation_tuned};
  double sum = 0.0;
  for (double x : w) sum += x;
  std::array<std::size_t, kResponseKindCount> count{};
  std::array<double, kResponseKindCount> rest{};
  std::size_t given = 0;
  for (int k = 0; k < kResponseKindCount; ++k) {
    const double exact = w[k] / sum * static_cast<double>(n);
    count[k] = static_cast<std::size_t>(std::floor(exact));
    rest[k] = exact - static_cast<double>(count[k]);
    given += count[k];
  }
  while (given < n) {  // largest remainder first, lowest kind on ties: deterministic
    const auto k =
        static_cast<std::size_t>(std::max_element(rest.begin(), rest.end()) - rest.begin());
    ++count[k];
    rest[k] = -1.0;
    ++given;
  }
  std::vector<ResponseKind> kinds;
  kinds.reserve(n);
  for (int k = 0; k < kResponseKindCount; ++k) kinds.insert(kinds.end(), count[k], ResponseKind(k));
  for (std::size_t i = n; i > 1; --i) {  // Fisher-Yates, so kinds are not sorted by depth
    const auto j = static_cast<std::size_t>(rng.next() % i);
    std::swap(kinds[i - 1], kinds[j]);
  }
  return kinds;
}

/// One unit's model parameters. Every unit draws the same sequence of numbers whatever its kind, so
/// changing the mix never moves another unit; parameters a kind does not use are set to their
/// no-effect values, so the written ground truth never suggests an effect the generator does not
/// produce.
inline ResponseParams draw_response(ResponseKind kind, double min_baseline_hz,
                                    double max_baseline_hz, Xoshiro256pp& rng) {
  ResponseParams r;
  r.kind = kind;
  r.baseline_hz = rng.log_uniform(min_baseline_hz, max_baseline_hz);
  r.latency_ms = rng.uniform(30.0, 70.0);
  r.preferred_deg = rng.uniform(0.0, 360.0);
  r.kappa = rng.log_uniform(1.0, 4.0);
  r.peak_evoked_hz = rng.log_uniform(10.0, 40.0);
  r.c50 = rng.uniform(0.08, 0.4);
  r.nr_exponent = rng.uniform(1.5, 3.5);
  r.second_preferred_deg = std::fmod(r.preferred_deg + 180.0 + rng.uniform(-20.0, 20.0), 360.0);
  r.second_kappa = rng.log_uniform(1.0, 4.0);
  r.second_peak_evoked_hz = r.peak_evoked_hz * rng.uniform(0.3, 0.8);
  r.adaptation_tau_s = rng.uniform(1.0, 5.0);
  r.adaptation_strength = rng.uniform(1.0, 3.0);
  r.gain_shape = rng.uniform(2.0, 6.0);
  if (kind != ResponseKind::kBimodal) r.second_peak_evoked_hz = 0.0;
  if (kind != ResponseKind::kAdapting) r.adaptation_strength = 0.0;
  if (kind != ResponseKind::kGainFluctuating) r.gain_shape = 0.0;
  if (kind == ResponseKind::kUntuned) r.peak_evoked_hz = 0.0;
  return r;
}

}  // namespace twinloop::hil::details

#include "twinloop/hil/response_models.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace twinloop::hil {

std::string_view to_string(ResponseKind kind) noexcept {
  switch (kind) {
    case ResponseKind::kDirectionTuned:
      return "direction_tuned";
    case ResponseKind::kBimodal:
      return "bimodal";
    case ResponseKind::kAdapting:
      return "adapting";
    case ResponseKind::kGainFluctuating:
      return "gain_fluctuating";
    case ResponseKind::kUntuned:
      return "untuned";
    case ResponseKind::kOrientationTuned:
      return "orientation_tuned";
  }
  return "unknown";
}

double von_mises_factor(double direction_deg, double preferred_deg, double kappa) noexcept {
  if (std::isnan(direction_deg)) return 1.0;
  const double delta = (direction_deg - preferred_deg) * (std::numbers::pi / 180.0);
  return std::exp(kappa * (std::cos(delta) - 1.0));
}

double spatial_frequency_factor(double sf_cpd, double preferred_cpd,
                                double sigma_octaves) noexcept {
  if (std::isnan(sf_cpd) || !(sigma_octaves > 0.0) || !(sf_cpd > 0.0) || !(preferred_cpd > 0.0)) {
    return 1.0;
  }
  const double octaves = std::log2(sf_cpd / preferred_cpd);
  return std::exp(-octaves * octaves / (2.0 * sigma_octaves * sigma_octaves));
}

double naka_rushton(double contrast, double c50, double exponent) noexcept {
  const double c = std::clamp(contrast, 0.0, 1.0);
  if (c <= 0.0) return 0.0;
  const double cn = std::pow(c, exponent);
  return cn / (cn + std::pow(std::max(c50, 1e-9), exponent));
}

double tuned_evoked_hz(const ResponseParams& p, const StimulusFeatures& s) noexcept {
  if (p.kind == ResponseKind::kUntuned) return 0.0;
  const double contrast = std::isnan(s.contrast) ? 1.0 : s.contrast;
  // Spatial frequency scales the evoked drive like contrast does (separable tuning).
  const double nr =
      naka_rushton(contrast, p.c50, p.nr_exponent) *
      spatial_frequency_factor(s.spatial_frequency_cpd, p.preferred_sf_cpd, p.sf_sigma_octaves);
  if (p.kind == ResponseKind::kOrientationTuned) {
    // Doubling both angles makes the von Mises period 180 deg: equal lobes at pref and pref + 180.
    const double factor =
        std::isnan(s.direction_deg)
            ? 1.0
            : von_mises_factor(2.0 * s.direction_deg, 2.0 * p.preferred_deg, p.kappa);
    return p.peak_evoked_hz * factor * nr;
  }
  double lobes = p.peak_evoked_hz * von_mises_factor(s.direction_deg, p.preferred_deg, p.kappa);
  if (p.kind == ResponseKind::kBimodal) {
    lobes += p.second_peak_evoked_hz *
             von_mises_factor(s.direction_deg, p.second_preferred_deg, p.second_kappa);
  }
  return lobes * nr;
}

double mean_window_rate_hz(const ResponseParams& p, const StimulusFeatures& s) noexcept {
  return p.baseline_hz + tuned_evoked_hz(p, s);
}

double trial_window_rate_hz(const ResponseParams& p, ResponseState& state,
                            const StimulusFeatures& s, double onset_s, double gain) noexcept {
  double evoked = tuned_evoked_hz(p, s);
  if (p.kind == ResponseKind::kAdapting) {
    const double since_s = onset_s - state.last_onset_s;
    // Onsets may arrive out of order (earliest_onset_sample is the caller's); never grow the trace
    // by decaying over a negative interval.
    if (std::isfinite(since_s) && since_s > 0.0 && p.adaptation_tau_s > 0.0) {
      state.adaptation_trace *= std::exp(-since_s / p.adaptation_tau_s);
    }
    const double drive =
        p.peak_evoked_hz > 0.0 ? std::clamp(evoked / p.peak_evoked_hz, 0.0, 1.0) : 0.0;
    evoked /= 1.0 + p.adaptation_strength * state.adaptation_trace;
    state.adaptation_trace += drive;
    state.last_onset_s = std::max(state.last_onset_s, onset_s);
  }
  const double g = p.kind == ResponseKind::kGainFluctuating ? std::max(gain, 0.0) : 1.0;
  return std::max(0.0, (p.baseline_hz + evoked) * g);
}

}  // namespace twinloop::hil

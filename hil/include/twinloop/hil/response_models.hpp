// Generative stimulus-response models of the simulated subject's units.
//
// Each unit fires at its baseline rate outside a response window and at a trial-specific rate
// inside [onset + latency, onset + duration + latency). The models here map a stimulus (direction
// in degrees, contrast 0..1) and the unit's history to that in-window rate (Hz). They are the
// bench's own code, independent of twin/, so a twin is never tested against itself.
//
// Kinds: direction tuning (von Mises in direction x Naka-Rushton in contrast), a bimodal mixture of
// two von Mises lobes, adaptation to recent stimulation, trial-to-trial multiplicative gain
// (gamma distributed, mean 1: over-dispersed counts), untuned units, and orientation tuning (von
// Mises in twice the direction: two equal lobes 180 deg apart, blind to the direction of motion).
// A bimodal unit is NOT orientation tuned: its lobes differ in height and width and sit up to
// 20 deg off opposite, so it fits neither a direction nor an orientation model.
//
// Pure functions plus a small per-unit state; no allocation, no locks: safe on the generator
// thread. A ResponseState belongs to one unit and is touched by one thread.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>

namespace twinloop::hil {

enum class ResponseKind : std::uint8_t {
  kDirectionTuned,    ///< von Mises(direction) x Naka-Rushton(contrast)
  kBimodal,           ///< two von Mises lobes with their own gains, x Naka-Rushton
  kAdapting,          ///< direction tuned, divided by (1 + strength * recent-stimulation trace)
  kGainFluctuating,   ///< direction tuned, whole window rate x gamma gain (mean 1) per trial
  kUntuned,           ///< stimulus-independent: baseline rate always
  kOrientationTuned,  ///< von Mises(2 x (direction - preferred)) x Naka-Rushton: equal lobes
};
inline constexpr int kResponseKindCount = 6;

/// Stable lower-case name ("direction_tuned", "bimodal", "adapting", "gain_fluctuating",
/// "untuned", "orientation_tuned"), written to the ground-truth files.
[[nodiscard]] std::string_view to_string(ResponseKind kind) noexcept;

/// One unit's model parameters; fields a kind does not use are left at their defaults.
struct ResponseParams {
  ResponseKind kind = ResponseKind::kUntuned;
  double baseline_hz = 5.0;  ///< rate outside response windows
  double latency_ms = 40.0;  ///< response window starts this long after stimulus onset

  // First (or only) von Mises lobe, and the Naka-Rushton contrast term shared by all lobes.
  // Orientation tuned: preferred_deg is one of the two equal lobes, kappa acts on the doubled
  // angle.
  double preferred_deg = 0.0;
  double kappa = 2.0;            ///< concentration; larger = narrower tuning
  double peak_evoked_hz = 20.0;  ///< evoked rate at the preferred direction, contrast -> infinity
  double c50 = 0.2;              ///< contrast giving half the saturated response
  double nr_exponent = 2.0;      ///< Naka-Rushton exponent n
  // Spatial frequency: the evoked part is scaled by exp(-log2(sf / preferred)^2 / (2 sigma^2)),
  // a Gaussian on a log frequency axis. sigma 0: not tuned to spatial frequency.
  double preferred_sf_cpd = 0.04;  ///< cycles per degree
  double sf_sigma_octaves = 0.0;

  // Bimodal: second lobe.
  double second_preferred_deg = 180.0;
  double second_kappa = 2.0;
  double second_peak_evoked_hz = 10.0;

  // Adapting: trace decays with this time constant; the evoked part is divided by
  // (1 + adaptation_strength * trace). Each stimulus adds its normalised drive (0..1) to the trace.
  double adaptation_tau_s = 2.0;
  double adaptation_strength = 1.5;

  // Gain fluctuating: gain ~ Gamma(shape k, scale 1/k): mean 1, variance 1/k, so a window count
  // with mean mu has variance mu + mu^2 / k (Fano factor 1 + mu / k).
  double gain_shape = 4.0;
};

/// What a unit sees of a stimulus. A missing direction counts as the preferred one of each lobe;
/// a missing contrast as full contrast (1); a missing spatial frequency as the preferred one.
struct StimulusFeatures {
  double direction_deg = std::numeric_limits<double>::quiet_NaN();          ///< NaN: no direction
  double contrast = 1.0;                                                    ///< clamped to [0, 1]
  double spatial_frequency_cpd = std::numeric_limits<double>::quiet_NaN();  ///< NaN: none
};

/// History a unit carries from trial to trial (adaptation). Owned by one thread.
struct ResponseState {
  double adaptation_trace = 0.0;
  double last_onset_s = -std::numeric_limits<double>::infinity();
};

/// exp(-log2(sf / preferred)^2 / (2 sigma^2)): 1 at the preferred spatial frequency, 1/2 at
/// 1.18 sigma octaves from it. NaN sf, sigma <= 0 or a non-positive frequency -> 1 (not tuned).
[[nodiscard]] double spatial_frequency_factor(double sf_cpd, double preferred_cpd,
                                              double sigma_octaves) noexcept;

/// exp(kappa * (cos(direction - preferred) - 1)): 1 at the preferred direction, exp(-2 kappa) at
/// the opposite one. Angles in degrees. NaN direction -> 1.
[[nodiscard]] double von_mises_factor(double direction_deg, double preferred_deg,
                                      double kappa) noexcept;

/// c^n / (c^n + c50^n), contrast clamped to [0, 1]; 0 at contrast 0.
[[nodiscard]] double naka_rushton(double contrast, double c50, double exponent) noexcept;

/// Evoked rate above baseline (Hz) before adaptation and gain: the deterministic tuning curve.
/// 0 for untuned units.
[[nodiscard]] double tuned_evoked_hz(const ResponseParams& params,
                                     const StimulusFeatures& stimulus) noexcept;

/// Expected in-window rate (Hz) of a fresh unit (no adaptation) at gain 1.
[[nodiscard]] double mean_window_rate_hz(const ResponseParams& params,
                                         const StimulusFeatures& stimulus) noexcept;

/// In-window rate (Hz) of one trial. Updates the adaptation state of adapting units (decay since
/// the previous onset, then this stimulus's drive). `gain` multiplies the whole window rate of
/// kGainFluctuating units and is ignored for the others (the caller draws it, so this function
/// stays deterministic).
/// \note Real-time safe.
[[nodiscard]] double trial_window_rate_hz(const ResponseParams& params, ResponseState& state,
                                          const StimulusFeatures& stimulus, double onset_s,
                                          double gain) noexcept;

}  // namespace twinloop::hil

// CountSubject: a simulated subject that answers a stimulus directly with one spike count per unit.
//
// SimulatedSubject produces a whole Neuropixels recording (waveforms, noise, drift) that must be
// detected and sorted before a closed loop sees a count. Closed-loop tests and benchmarks that run
// hundreds of sessions only need the counts, so CountSubject skips the probe: respond() draws each
// unit's spike count in a response window of window_seconds for one trial, from the same response
// models (response_models.hpp) and, for the same seed, unit count, mix and baseline range, the
// same unit kinds and model parameters as SimulatedSubject. Choosing the mix decides which twin
// family is true for the subject: all direction_tuned makes `direction_tuning` true, all untuned
// makes `null` true, all orientation_tuned makes `orientation_tuning` true, bimodal / adapting / a
// mixture make no single built-in family true.
//
// preference_spread_deg >= 0 clusters the preferred directions as in one cortical column (units
// recorded on a few neighbouring sites share a preference; Hubel & Wiesel 1962, Mountcastle
// 1957): the column's direction is drawn once per seed and every unit prefers it plus an offset
// uniform in [-spread, spread]. Without it (the default) preferences are uniform on the circle,
// as SimulatedSubject draws them. Clustering moves only the preferences (a bimodal unit's second
// lobe with its first); every other parameter stays as drawn.
//
// spatial_frequency_dimension >= 0 makes every tuned unit tuned to spatial frequency as well: a
// Gaussian on a log2 frequency axis (sf_sigma_octaves wide) around a column preference drawn
// log-uniform in [min_preferred_sf_cpd, max_preferred_sf_cpd], each unit within +-1/4 octave of
// it. The draws come from a stream of their own, so every other parameter stays as drawn.
//
// Counts are Poisson with the unit's window rate x window_seconds as mean; adapting units carry
// their adaptation state from trial to trial (trials are trial_interval_seconds apart) and
// gain-fluctuating units multiply their rate by a Gamma gain (mean 1) each trial, which makes their
// counts over-dispersed. CountNoise::kGammaPoisson adds such a gain to every unit.
//
// Deterministic: the same config and the same sequence of calls give the same counts. Each unit
// has its own random stream, so one unit's counts never depend on another unit's kind or rate.
// respond() with a caller-provided span does not allocate. One thread at a time; copyable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "twinloop/hil/details/random.hpp"
#include "twinloop/hil/response_models.hpp"
#include "twinloop/hil/simulation_config.hpp"
#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil {

/// How a window count scatters around its mean.
enum class CountNoise : std::uint8_t {
  kPoisson,       ///< Poisson (gain-fluctuating units still get their own trial gain)
  kGammaPoisson,  ///< every unit's rate x Gamma(dispersion_shape) / dispersion_shape per trial
};

struct CountSubjectConfig {
  std::uint64_t seed = 1;
  std::size_t unit_count = 64;
  ResponseMix mix;               ///< kind proportions, assigned as SimulatedSubject does
  double min_baseline_hz = 2.0;  ///< baseline rates are log-uniform in [min, max]
  double max_baseline_hz = 15.0;
  int direction_dimension = 0;  ///< Stimulus value index holding direction (degrees); -1 absent
  int contrast_dimension = 1;   ///< Stimulus value index holding contrast (0..1); -1 absent
  double window_seconds = 0.5;  ///< response window: count mean = window rate x this
  double trial_interval_seconds = 1.0;  ///< onset spacing of successive trials (adaptation decay)
  CountNoise noise = CountNoise::kPoisson;
  double dispersion_shape = 4.0;  ///< kGammaPoisson: Fano factor 1 + mean / dispersion_shape
  /// < 0: independent uniform preferences; >= 0 (degrees, at most 180): preferences clustered
  /// within +-spread of one column direction drawn from the seed.
  double preference_spread_deg = -1.0;
  /// Stimulus value index holding spatial frequency (cycles/deg); -1: absent, units not tuned.
  int spatial_frequency_dimension = -1;
  /// SF tuning width, sigma of the log2 Gaussian: 0.6 octaves is a full width at half height of
  /// 1.4 octaves, the median of macaque V1 cells (De Valois, Albrecht & Thorell 1982).
  double sf_sigma_octaves = 0.6;
  /// The column's preferred SF is log-uniform in this range; 0.02-0.16 cpd spans most of mouse
  /// V1's preferences (Niell & Stryker 2008).
  double min_preferred_sf_cpd = 0.02;
  double max_preferred_sf_cpd = 0.16;

  /// Empty when usable; otherwise names the first bad field and what was expected.
  [[nodiscard]] std::string validate() const;
};

class CountSubject {
 public:
  /// Draws the units' kinds and parameters from `config`.
  /// \throws std::invalid_argument naming the bad field when config.validate() fails.
  explicit CountSubject(CountSubjectConfig config);

  [[nodiscard]] const CountSubjectConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t unit_count() const noexcept { return units_.size(); }
  /// Every unit's kind and model parameters (the ground truth); fixed at construction. Unused
  /// fields are at their no-effect values, as in SimulatedSubject's UnitTruth::response.
  [[nodiscard]] const std::vector<ResponseParams>& units() const noexcept { return units_; }
  /// The column's preferred direction (degrees, [0, 360)) when preferences are clustered; NaN
  /// when they are not.
  [[nodiscard]] double column_preferred_deg() const noexcept { return column_preferred_deg_; }
  /// The column's preferred spatial frequency (cpd) when units are SF-tuned; NaN otherwise.
  [[nodiscard]] double column_preferred_sf_cpd() const noexcept { return column_preferred_sf_; }
  /// Trials answered since construction or the last reset().
  [[nodiscard]] std::uint64_t trial_count() const noexcept { return trials_; }

  /// What the units see of `stimulus` (direction / contrast / spatial frequency read from the
  /// configured dimensions).
  [[nodiscard]] StimulusFeatures features(const protocols::Stimulus& stimulus) const noexcept;

  /// Draws every unit's count for the next trial into `counts` (one per unit) and advances the
  /// adaptation states and random streams.
  /// \throws std::invalid_argument when counts.size() != unit_count() (before any state changes).
  /// \note No allocation.
  void respond(const protocols::Stimulus& stimulus, std::span<std::uint32_t> counts);
  /// Allocating convenience form of respond().
  [[nodiscard]] std::vector<std::uint32_t> respond(const protocols::Stimulus& stimulus);

  /// True mean count of each unit on the NEXT respond(stimulus): window rate x window_seconds,
  /// including the current adaptation state (decayed to the next onset); gains have mean 1.
  /// Does not change any state.
  /// \throws std::invalid_argument when means.size() != unit_count().
  void expected_counts(const protocols::Stimulus& stimulus, std::span<double> means) const;
  [[nodiscard]] std::vector<double> expected_counts(const protocols::Stimulus& stimulus) const;
  /// Mean count of a fresh (unadapted) unit: mean_window_rate_hz x window_seconds.
  [[nodiscard]] std::vector<double> fresh_expected_counts(
      const protocols::Stimulus& stimulus) const;

  /// Back to the state right after construction (adaptation, random streams, trial count).
  void reset() noexcept;

 private:
  [[nodiscard]] double next_onset_s() const noexcept;

  CountSubjectConfig config_;
  std::vector<ResponseParams> units_;
  double column_preferred_deg_;
  double column_preferred_sf_ = std::numeric_limits<double>::quiet_NaN();
  std::vector<ResponseState> states_;
  std::vector<details::Xoshiro256pp> rngs_;
  std::uint64_t trials_ = 0;
};

/// A Poisson(mean) draw: multiplication method below mean 10, Hormann's PTRS above; saturates at
/// UINT32_MAX. Exposed for tests.
[[nodiscard]] std::uint32_t poisson_count(details::Xoshiro256pp& rng, double mean) noexcept;

}  // namespace twinloop::hil

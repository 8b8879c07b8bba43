#include "twinloop/hil/count_subject.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "src/unit_draws.hpp"

namespace twinloop::hil {
namespace {

using details::Xoshiro256pp;

// Stream numbers: kLayout matches SimulatedSubject's layout stream so that the same seed draws the
// same kinds and parameters; the per-unit count streams are the CountSubject's own.
constexpr std::uint64_t kLayoutStream = 0;
constexpr std::uint64_t kCountStreamBase = 5000;
// The column direction of clustered preferences: a stream of its own, so that clustering draws
// nothing from the layout stream and every other parameter stays the same.
constexpr std::uint64_t kColumnStream = 4999;
// Spatial-frequency preferences: another stream of their own, for the same reason.
constexpr std::uint64_t kSpatialFrequencyStream = 4998;
// SimulatedSubject draws position, SNR and waveform numbers (7 of them) before each unit's model
// parameters; skipping as many keeps the parameters identical for the same seed.
constexpr int kLayoutDrawsBeforeModel = 7;

std::string bad(const char* field, const std::string& expected) {
  return std::string("CountSubjectConfig.") + field + ": expected " + expected;
}

// Same assignment as SimulatedSubject: proportions by largest remainder (lowest kind on ties),
// then a Fisher-Yates shuffle from the layout stream.

}  // namespace

std::string CountSubjectConfig::validate() const {
  if (unit_count == 0) return bad("unit_count", ">= 1");
  if (!(min_baseline_hz > 0.0) || !(max_baseline_hz >= min_baseline_hz) ||
      !std::isfinite(max_baseline_hz)) {
    return bad("min_baseline_hz/max_baseline_hz", "0 < min <= max, finite");
  }
  const double mix_sum = mix.direction_tuned + mix.bimodal + mix.adapting + mix.gain_fluctuating +
                         mix.untuned + mix.orientation_tuned;
  if (mix.direction_tuned < 0 || mix.bimodal < 0 || mix.adapting < 0 || mix.gain_fluctuating < 0 ||
      mix.untuned < 0 || mix.orientation_tuned < 0 || !(mix_sum > 0.0) || !std::isfinite(mix_sum)) {
    return bad("mix", "non-negative weights with a positive sum");
  }
  const int dims = static_cast<int>(protocols::kMaxStimulusDimensions);
  if (direction_dimension < -1 || direction_dimension >= dims) {
    return bad("direction_dimension", "-1 or a stimulus value index");
  }
  if (contrast_dimension < -1 || contrast_dimension >= dims) {
    return bad("contrast_dimension", "-1 or a stimulus value index");
  }
  if (const auto problem =
          details::spatial_frequency_problem(spatial_frequency_dimension, sf_sigma_octaves,
                                             min_preferred_sf_cpd, max_preferred_sf_cpd)) {
    return bad(problem->first, problem->second);
  }
  if (!(window_seconds > 0.0) || !std::isfinite(window_seconds)) {
    return bad("window_seconds", "> 0, finite");
  }
  if (!(trial_interval_seconds >= 0.0) || !std::isfinite(trial_interval_seconds)) {
    return bad("trial_interval_seconds", ">= 0, finite");
  }
  if (noise != CountNoise::kPoisson && noise != CountNoise::kGammaPoisson) {
    return bad("noise", "kPoisson or kGammaPoisson");
  }
  if (noise == CountNoise::kGammaPoisson &&
      (!(dispersion_shape > 0.0) || !std::isfinite(dispersion_shape))) {
    return bad("dispersion_shape", "> 0, finite");
  }
  if (std::isnan(preference_spread_deg) || preference_spread_deg > 180.0) {
    return bad("preference_spread_deg", "< 0 (not clustered) or 0..180 degrees");
  }
  return {};
}

std::uint32_t poisson_count(Xoshiro256pp& rng, double mean) noexcept {
  constexpr auto kMax = std::numeric_limits<std::uint32_t>::max();
  if (!(mean > 0.0)) return 0;
  if (mean >= static_cast<double>(kMax)) return kMax;
  if (mean < 10.0) {  // multiplication method: product of uniforms until it drops below e^-mean
    const double limit = std::exp(-mean);
    std::uint32_t k = 0;
    double product = rng.uniform();
    while (product > limit) {
      ++k;
      product *= rng.uniform();
    }
    return k;
  }
  // PTRS: transformed rejection with squeeze (W. Hormann, 1993), exact for mean >= 10.
  const double slam = std::sqrt(mean);
  const double log_mean = std::log(mean);
  const double b = 0.931 + 2.53 * slam;
  const double a = -0.059 + 0.02483 * b;
  const double log_inv_alpha = std::log(1.1239 + 1.1328 / (b - 3.4));
  const double vr = 0.9277 - 3.6224 / (b - 2.0);
  for (;;) {
    const double u = rng.uniform() - 0.5;
    const double v = rng.uniform();
    const double us = 0.5 - std::fabs(u);
    const double k = std::floor((2.0 * a / us + b) * u + mean + 0.43);
    if (k < 0.0) continue;
    if (us >= 0.07 && v <= vr) return k >= static_cast<double>(kMax) ? kMax : std::uint32_t(k);
    if (us < 0.013 && v > us) continue;
    if (std::log(v) + log_inv_alpha - std::log(a / (us * us) + b) <=
        -mean + k * log_mean - std::lgamma(k + 1.0)) {
      return k >= static_cast<double>(kMax) ? kMax : static_cast<std::uint32_t>(k);
    }
  }
}

CountSubject::CountSubject(CountSubjectConfig config)
    : config_(config), column_preferred_deg_(std::numeric_limits<double>::quiet_NaN()) {
  if (const std::string why = config_.validate(); !why.empty()) throw std::invalid_argument(why);
  Xoshiro256pp layout(details::derive_seed(config_.seed, kLayoutStream));
  const auto kinds = details::assign_kinds(config_.mix, config_.unit_count, layout);
  units_.reserve(config_.unit_count);
  for (std::size_t i = 0; i < config_.unit_count; ++i) {
    for (int d = 0; d < kLayoutDrawsBeforeModel; ++d) (void)layout.next();
    units_.push_back(
        details::draw_response(kinds[i], config_.min_baseline_hz, config_.max_baseline_hz, layout));
  }
  if (config_.preference_spread_deg >= 0.0) {
    Xoshiro256pp column(details::derive_seed(config_.seed, kColumnStream));
    column_preferred_deg_ = column.uniform(0.0, 360.0);
    for (ResponseParams& p : units_) {
      // The unit's own uniform draw on [0, 360) mapped onto [-spread, spread]: no extra draws.
      const double offset = config_.preference_spread_deg * (p.preferred_deg / 180.0 - 1.0);
      const double moved = std::fmod(column_preferred_deg_ + offset + 360.0, 360.0);
      p.second_preferred_deg =
          std::fmod(p.second_preferred_deg + (moved - p.preferred_deg) + 720.0, 360.0);
      p.preferred_deg = moved;
    }
  }
  if (config_.spatial_frequency_dimension >= 0) {
    Xoshiro256pp sf(details::derive_seed(config_.seed, kSpatialFrequencyStream));
    const double lo = std::log2(config_.min_preferred_sf_cpd);
    const double hi = std::log2(config_.max_preferred_sf_cpd);
    column_preferred_sf_ = std::exp2(sf.uniform(lo, hi));
    for (ResponseParams& p : units_) {
      p.preferred_sf_cpd = column_preferred_sf_ * std::exp2(sf.uniform(-0.25, 0.25));
      p.sf_sigma_octaves = config_.sf_sigma_octaves;
    }
  }
  states_.resize(units_.size());
  rngs_.resize(units_.size());
  reset();
}

void CountSubject::reset() noexcept {
  std::fill(states_.begin(), states_.end(), ResponseState{});
  for (std::size_t i = 0; i < rngs_.size(); ++i) {
    rngs_[i].reseed(details::derive_seed(config_.seed, kCountStreamBase + i));
  }
  trials_ = 0;
}

StimulusFeatures CountSubject::features(const protocols::Stimulus& stimulus) const noexcept {
  StimulusFeatures f;
  if (config_.direction_dimension >= 0) {
    f.direction_deg = stimulus.values[static_cast<std::size_t>(config_.direction_dimension)];
  }
  if (config_.contrast_dimension >= 0) {
    f.contrast = stimulus.values[static_cast<std::size_t>(config_.contrast_dimension)];
  }
  if (config_.spatial_frequency_dimension >= 0) {
    f.spatial_frequency_cpd =
        stimulus.values[static_cast<std::size_t>(config_.spatial_frequency_dimension)];
  }
  return f;
}

double CountSubject::next_onset_s() const noexcept {
  return static_cast<double>(trials_) * config_.trial_interval_seconds;
}

void CountSubject::respond(const protocols::Stimulus& stimulus, std::span<std::uint32_t> counts) {
  if (counts.size() != units_.size()) {
    throw std::invalid_argument("CountSubject::respond: counts.size() != unit_count()");
  }
  const StimulusFeatures f = features(stimulus);
  const double onset_s = next_onset_s();
  const bool extra_gain = config_.noise == CountNoise::kGammaPoisson;
  for (std::size_t u = 0; u < units_.size(); ++u) {
    const ResponseParams& p = units_[u];
    Xoshiro256pp& rng = rngs_[u];
    const double gain =
        p.kind == ResponseKind::kGainFluctuating ? rng.gamma(p.gain_shape) / p.gain_shape : 1.0;
    double rate_hz = trial_window_rate_hz(p, states_[u], f, onset_s, gain);
    if (extra_gain) rate_hz *= rng.gamma(config_.dispersion_shape) / config_.dispersion_shape;
    counts[u] = poisson_count(rng, rate_hz * config_.window_seconds);
  }
  ++trials_;
}

std::vector<std::uint32_t> CountSubject::respond(const protocols::Stimulus& stimulus) {
  std::vector<std::uint32_t> counts(units_.size());
  respond(stimulus, counts);
  return counts;
}

void CountSubject::expected_counts(const protocols::Stimulus& stimulus,
                                   std::span<double> means) const {
  if (means.size() != units_.size()) {
    throw std::invalid_argument("CountSubject::expected_counts: means.size() != unit_count()");
  }
  const StimulusFeatures f = features(stimulus);
  const double onset_s = next_onset_s();
  for (std::size_t u = 0; u < units_.size(); ++u) {
    ResponseState state = states_[u];  // a copy: the real state is left alone
    means[u] = trial_window_rate_hz(units_[u], state, f, onset_s, 1.0) * config_.window_seconds;
  }
}

std::vector<double> CountSubject::expected_counts(const protocols::Stimulus& stimulus) const {
  std::vector<double> means(units_.size());
  expected_counts(stimulus, means);
  return means;
}

std::vector<double> CountSubject::fresh_expected_counts(const protocols::Stimulus& stimulus) const {
  const StimulusFeatures f = features(stimulus);
  std::vector<double> means(units_.size());
  for (std::size_t u = 0; u < units_.size(); ++u) {
    means[u] = mean_window_rate_hz(units_[u], f) * config_.window_seconds;
  }
  return means;
}

}  // namespace twinloop::hil

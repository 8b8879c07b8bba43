#include "twinloop/drivers/safety_gate.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace twinloop::drivers {

SafetyGate::SafetyGate(StimulusSink& inner, const protocols::SafetyLimits& limits,
                       const protocols::StimulusSpace& space, const protocols::TrialTiming& timing,
                       double sample_rate_hz)
    : inner_(inner),
      max_amplitude_(limits.max_amplitude),
      max_duty_cycle_(limits.max_duty_cycle),
      samples_per_ms_(sample_rate_hz * 1e-3) {
  const auto amplitude = space.dimension_index(limits.amplitude_dimension);
  if (!amplitude) {
    throw std::invalid_argument("safety gate: the stimulus space has no dimension '" +
                                limits.amplitude_dimension + "' (safety.amplitude_dimension)");
  }
  amplitude_dimension_ = *amplitude;
  if (limits.duration_dimension) {
    duration_dimension_ = space.dimension_index(*limits.duration_dimension);
    if (!duration_dimension_) {
      throw std::invalid_argument("safety gate: the stimulus space has no dimension '" +
                                  *limits.duration_dimension + "' (safety.duration_dimension)");
    }
  }
  if (!(max_duty_cycle_ > 0.0 && max_duty_cycle_ <= 1.0) || !(sample_rate_hz > 0.0)) {
    throw std::invalid_argument("safety gate: duty cycle must be in (0, 1] and rate positive");
  }
  min_interval_samples_ = std::llround(limits.min_interval_ms * samples_per_ms_);
  max_on_samples_ = std::llround(timing.stimulus_ms * samples_per_ms_);
}

StimulusOnset SafetyGate::deliver(const StimulusCommand& command) {
  const protocols::Stimulus& s = command.stimulus;
  for (std::size_t d = 0; d < s.dimension_count; ++d) {
    if (!std::isfinite(s.values[d])) {
      ++refused_;
      last_error_ = "refused trial " + std::to_string(command.trial) + ": value " +
                    std::to_string(d) + " is not a finite number";
      return {};
    }
  }
  const double amplitude = std::fabs(s.values[amplitude_dimension_]);
  if (amplitude_dimension_ >= s.dimension_count || amplitude > max_amplitude_) {
    ++refused_;
    last_error_ = "refused trial " + std::to_string(command.trial) + ": amplitude " +
                  std::to_string(amplitude) + " exceeds safety.max_amplitude " +
                  std::to_string(max_amplitude_);
    return {};
  }
  std::int64_t on_samples = command.duration_samples;
  if (duration_dimension_ && *duration_dimension_ < s.dimension_count) {
    on_samples = std::max<std::int64_t>(
        on_samples, std::llround(s.values[*duration_dimension_] * samples_per_ms_));
  }
  if (on_samples < 0 || on_samples > max_on_samples_) {
    ++refused_;
    last_error_ = "refused trial " + std::to_string(command.trial) + ": on-time of " +
                  std::to_string(on_samples) + " samples is outside [0, " +
                  std::to_string(max_on_samples_) + "] (timing.stimulus_ms)";
    return {};
  }

  StimulusCommand gated = command;
  if (last_onset_ != INT64_MIN) {
    const auto duty_gap = static_cast<std::int64_t>(
        std::ceil(static_cast<double>(last_on_samples_) / max_duty_cycle_));
    const std::int64_t earliest = last_onset_ + std::max(min_interval_samples_, duty_gap);
    if (gated.earliest_onset_sample < earliest) {
      gated.earliest_onset_sample = earliest;
      ++delayed_;
    }
  }
  StimulusOnset onset = inner_.deliver(gated);
  if (!onset.delivered) {
    last_error_ = inner_.last_error();
    return onset;
  }
  if (onset.onset_sample < gated.earliest_onset_sample) {
    // The device started earlier than allowed: that is a device fault, not something to hide.
    last_error_ = "device reported onset " + std::to_string(onset.onset_sample) +
                  " before the earliest allowed sample " +
                  std::to_string(gated.earliest_onset_sample);
  }
  last_onset_ = onset.onset_sample;
  last_on_samples_ = on_samples;
  return onset;
}

}  // namespace twinloop::drivers

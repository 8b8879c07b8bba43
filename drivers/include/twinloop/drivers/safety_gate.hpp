// SafetyGate: the protocol's stimulus safety limits, enforced in the stimulus path itself, below
// every designer, strategy and remote command. It wraps the rig's StimulusSink; nothing reaches
// the device without passing it.
//
// - Amplitude: a command whose |amplitude| (the protocol's amplitude dimension) exceeds
//   max_amplitude, or whose values are not finite, is refused: delivered = false, counted, and
//   last_error() says what was asked and what the limit is.
// - Timing: an onset is never earlier than min_interval_ms after the previous onset, nor earlier
//   than the previous on-time divided by max_duty_cycle (so on-time / onset interval never exceeds
//   the duty limit). The gate delays the command's earliest onset to meet both, and reports the
//   onset the device confirms. A command longer than the protocol's on-time is refused.
//
// Thread safety: one thread calls deliver() (the session thread). No allocation after
// construction except the error text of a refusal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "twinloop/drivers/stimulus_sink.hpp"
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::drivers {

class SafetyGate final : public StimulusSink {
 public:
  /// \param inner  the device's sink; must outlive the gate
  /// \throws std::invalid_argument if the limits name a dimension the space does not have
  SafetyGate(StimulusSink& inner, const protocols::SafetyLimits& limits,
             const protocols::StimulusSpace& space, const protocols::TrialTiming& timing,
             double sample_rate_hz);

  [[nodiscard]] StimulusOnset deliver(const StimulusCommand& command) override;

  [[nodiscard]] std::uint64_t refused() const noexcept { return refused_; }
  [[nodiscard]] std::uint64_t delayed() const noexcept { return delayed_; }

 private:
  StimulusSink& inner_;
  std::size_t amplitude_dimension_ = 0;
  std::optional<std::size_t> duration_dimension_;
  double max_amplitude_ = 0.0;
  double max_duty_cycle_ = 1.0;
  std::int64_t min_interval_samples_ = 0;
  std::int64_t max_on_samples_ = 0;
  double samples_per_ms_ = 0.0;
  std::int64_t last_onset_ = INT64_MIN;
  std::int64_t last_on_samples_ = 0;
  std::uint64_t refused_ = 0;
  std::uint64_t delayed_ = 0;
};

}  // namespace twinloop::drivers

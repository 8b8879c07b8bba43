// StimulusSink: the one interface through which stimuli leave twinloop (visual, optogenetic,
// electrical). A sink takes a command and reports the onset on the acquisition sample clock, so
// that trial windows are counted against the samples the probe actually recorded.
//
// Safety limits are enforced by whoever sits between the designer and the sink (the stimulus
// path), never by the sink alone. A sink owns hardware: not copyable, not movable.
#pragma once

#include <cstdint>
#include <string>

#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::drivers {

struct StimulusCommand {
  std::uint64_t trial = 0;
  protocols::Stimulus stimulus;
  std::int64_t earliest_onset_sample = 0;  ///< do not start before this sample
  std::int64_t duration_samples = 0;
};

struct StimulusOnset {
  bool delivered = false;
  std::int64_t onset_sample = -1;  ///< first sample of the stimulus on the probe clock
};

class StimulusSink {
 public:
  StimulusSink() = default;
  StimulusSink(const StimulusSink&) = delete;
  StimulusSink& operator=(const StimulusSink&) = delete;
  StimulusSink(StimulusSink&&) = delete;
  StimulusSink& operator=(StimulusSink&&) = delete;
  virtual ~StimulusSink() = default;

  /// Delivers a stimulus; returns its onset. On failure `delivered` is false and last_error() says
  /// why. May block until the device confirms the onset.
  [[nodiscard]] virtual StimulusOnset deliver(const StimulusCommand& command) = 0;
  [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }

 protected:
  std::string last_error_;
};

}  // namespace twinloop::drivers

// Shared test input: a small valid protocol whose line numbers the malformed cases rely on.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace twinloop::protocols::testing {

// Line numbers (1-based) are asserted by the tests: edit with care.
inline constexpr std::string_view kValidProtocol = R"(twinloop_protocol: 1
name: test
subject:
  id: M1
  species: Mus musculus
probes:
  - name: imec0
    type: NP1000
    source: sim
stimulus:
  kind: grating
  space:
    direction:
      unit: deg
      grid: {start: 0, stop: 315, step: 45}
    contrast:
      unit: fraction
      values: [0.25, 0.5, 1.0]
timing:
  baseline_ms: 500
  stimulus_ms: 1000
  response_start_ms: 50
  response_end_ms: 1050
  inter_trial_ms: 1500
safety:
  amplitude_dimension: contrast
  max_amplitude: 1.0
  max_duty_cycle: 0.5
  min_interval_ms: 2000
designer:
  strategy: discriminate
  seed: 3
stop:
  posterior_threshold: 0.95
  max_trials: 100
hypotheses:
  - name: tuned
    family: direction_tuning
  - name: flat
    family: null
)";

/// kValidProtocol with the first occurrence of `from` replaced by `to` (which must exist).
inline std::string with_edit(std::string_view from, std::string_view to) {
  std::string text(kValidProtocol);
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "test bug: \"" << from << "\" not in the base protocol";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

}  // namespace twinloop::protocols::testing

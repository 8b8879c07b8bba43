// SafetyGate: amplitude limits refuse, interval and duty-cycle limits delay, and what the device
// sees never exceeds the protocol, whatever the caller asks.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "twinloop/drivers/safety_gate.hpp"

namespace twinloop::drivers {
namespace {

// Records what reached the device; starts each stimulus at its earliest allowed sample.
class RecordingSink final : public StimulusSink {
 public:
  StimulusOnset deliver(const StimulusCommand& command) override {
    received.push_back(command);
    return {true, command.earliest_onset_sample};
  }
  std::vector<StimulusCommand> received;
};

protocols::StimulusSpace optogenetic_space() {
  protocols::StimulusSpace space;
  space.kind = protocols::StimulusKind::kOptogenetic;
  space.dimensions = {{"amplitude_mw", "mW", {1, 5, 10}}, {"duration_ms", "ms", {5, 20}}};
  return space;
}

protocols::Stimulus stimulus(double amplitude, double duration) {
  protocols::Stimulus s;
  s.dimension_count = 2;
  s.values[0] = amplitude;
  s.values[1] = duration;
  return s;
}

struct Fixture {
  RecordingSink device;
  protocols::SafetyLimits limits;
  protocols::TrialTiming timing;
  Fixture() {
    limits.amplitude_dimension = "amplitude_mw";
    limits.duration_dimension = "duration_ms";
    limits.max_amplitude = 10.0;
    limits.max_duty_cycle = 0.1;
    limits.min_interval_ms = 100.0;
    timing.stimulus_ms = 50.0;
  }
};

TEST(SafetyGate, RefusesAmplitudeAboveLimitAndNeverTouchesTheDevice) {
  Fixture f;
  SafetyGate gate(f.device, f.limits, optogenetic_space(), f.timing, 30000.0);
  const StimulusOnset onset = gate.deliver({1, stimulus(12.0, 5.0), 0, 150});
  EXPECT_FALSE(onset.delivered);
  EXPECT_EQ(gate.refused(), 1u);
  EXPECT_TRUE(f.device.received.empty());
  EXPECT_NE(gate.last_error().find("exceeds safety.max_amplitude"), std::string::npos)
      << gate.last_error();
  EXPECT_FALSE(gate.deliver({2, stimulus(-11.0, 5.0), 0, 150}).delivered) << "|amplitude|";
  EXPECT_FALSE(
      gate.deliver({3, stimulus(std::numeric_limits<double>::quiet_NaN(), 5.0), 0, 150}).delivered);
  EXPECT_TRUE(gate.deliver({4, stimulus(10.0, 5.0), 0, 150}).delivered) << "at the limit is fine";
}

TEST(SafetyGate, DelaysOnsetsToKeepMinimumIntervalAndDutyCycle) {
  Fixture f;
  SafetyGate gate(f.device, f.limits, optogenetic_space(), f.timing, 30000.0);
  // 20 ms on at 10% duty needs 200 ms to the next onset; min interval is 100 ms.
  ASSERT_TRUE(gate.deliver({1, stimulus(5.0, 20.0), 1000, 600}).delivered);
  const StimulusOnset second = gate.deliver({2, stimulus(5.0, 5.0), 1000, 150});
  ASSERT_TRUE(second.delivered);
  EXPECT_EQ(second.onset_sample, 1000 + 6000) << "200 ms at 30 kHz after the first onset";
  const StimulusOnset third = gate.deliver({3, stimulus(5.0, 5.0), 0, 150});
  EXPECT_EQ(third.onset_sample, 7000 + 3000) << "5 ms at 10% = 50 ms < 100 ms minimum interval";
  EXPECT_EQ(gate.delayed(), 2u);
  for (std::size_t i = 1; i < f.device.received.size(); ++i) {
    EXPECT_GE(
        f.device.received[i].earliest_onset_sample - f.device.received[i - 1].earliest_onset_sample,
        3000);
  }
}

TEST(SafetyGate, RefusesOnTimeLongerThanTheProtocolAllows) {
  Fixture f;
  SafetyGate gate(f.device, f.limits, optogenetic_space(), f.timing, 30000.0);
  EXPECT_FALSE(gate.deliver({1, stimulus(5.0, 80.0), 0, 150}).delivered);
  EXPECT_FALSE(gate.deliver({2, stimulus(5.0, 5.0), 0, 30000}).delivered);
  EXPECT_EQ(gate.refused(), 2u);
}

TEST(SafetyGate, RefusesLimitsNamingAnUnknownDimension) {
  Fixture f;
  f.limits.amplitude_dimension = "power";
  EXPECT_THROW(SafetyGate(f.device, f.limits, optogenetic_space(), f.timing, 30000.0),
               std::invalid_argument);
}

}  // namespace
}  // namespace twinloop::drivers

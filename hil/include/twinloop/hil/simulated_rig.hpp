// The simulated rig: a SimulatedSubject seen through the same driver interfaces as real hardware.
//
// SimulatedProbe is a drivers::ProbeSource (int16 SpikeGLX-layout blocks, stamped with their
// first sample, paced in real time or as fast as the reader asks); SimulatedStimulator is a
// drivers::StimulusSink that schedules a stimulus on the subject at
//   onset = max(earliest_onset_sample, generated_until + onset latency)
// and returns that onset at once. Both share one subject, so what the stimulator schedules shows up
// in the probe's spikes, and the subject's ground truth records both.
//
//   auto rig = hil::make_simulated_rig(config);
//   rig.probe->start();                       // acquisition thread: rig.probe->read(block) ...
//   rig.stimulator->deliver(command);          // session thread
//   rig.subject->write_ground_truth(dir);      // any time, any thread
//
// Threads: read() on one thread, deliver() on one (other) thread; see simulated_subject.hpp.
// Neither object is copyable or movable (driver interfaces own their device).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/drivers/stimulus_sink.hpp"
#include "twinloop/hil/simulated_subject.hpp"

namespace twinloop::hil {

class SimulatedProbe final : public drivers::ProbeSource {
 public:
  /// \param[in] subject shared with the stimulator; must not be null.
  explicit SimulatedProbe(std::shared_ptr<SimulatedSubject> subject);

  /// Starts the stream clock (realtime pace measures from here). Idempotent. Never fails for a
  /// valid subject (everything was allocated when the subject was built).
  [[nodiscard]] bool start() override;
  [[nodiscard]] const drivers::ProbeInfo& info() const noexcept override;
  /// Up to min(block capacity, config.block_samples) rows, fewer at the end of a finite stream.
  /// kEndOfStream after config.seconds; kError when not started or the block has the wrong
  /// channel count. Realtime pace sleeps until the block's last sample is due.
  /// \note Real-time safe after start(): no allocation, no locks, no exceptions.
  [[nodiscard]] drivers::ReadStatus read(drivers::SampleBlock& block) noexcept override;
  void stop() noexcept override;
  /// At max pace, read() delivers no sample at or after `end_sample`: it stops there (waits
  /// 0.2 ms and returns kWouldBlock) until the limit is raised. A session lets the stream run only
  /// as far as the trial in flight needs, since a simulated subject has no clock of its own and
  /// only computation (design, refits, a starved session thread) would otherwise spend its
  /// seconds. Ignored at realtime pace, where the stream keeps time as hardware does. Unlimited
  /// until set; kUnlimited lifts it.
  /// \note Any thread; lock-free.
  void limit_stream(std::int64_t end_sample) noexcept {
    limit_.store(end_sample, std::memory_order_release);
  }
  static constexpr std::int64_t kUnlimited = std::numeric_limits<std::int64_t>::max();

  [[nodiscard]] SimulatedSubject& subject() noexcept { return *subject_; }

 private:
  std::shared_ptr<SimulatedSubject> subject_;
  std::atomic<std::int64_t> limit_{kUnlimited};
  bool started_ = false;
  std::int64_t total_samples_ = 0;  // 0: endless
  std::chrono::steady_clock::time_point clock_zero_{};
  std::int64_t clock_zero_sample_ = 0;
};

class SimulatedStimulator final : public drivers::StimulusSink {
 public:
  /// \param[in] subject shared with the probe; must not be null.
  explicit SimulatedStimulator(std::shared_ptr<SimulatedSubject> subject);

  /// Schedules the stimulus and returns its onset without waiting for the generator. Refused
  /// (delivered = false, last_error() says why) for a negative duration or a full hand-off queue.
  /// \note Lock-free; call from one thread at a time.
  [[nodiscard]] drivers::StimulusOnset deliver(const drivers::StimulusCommand& command) override;

 private:
  std::shared_ptr<SimulatedSubject> subject_;
};

/// A subject with its probe and stimulator.
struct SimulatedRig {
  std::shared_ptr<SimulatedSubject> subject;  ///< ground truth: subject->ground_truth()
  std::unique_ptr<SimulatedProbe> probe;
  std::unique_ptr<SimulatedStimulator> stimulator;
};

/// \throws std::invalid_argument when config.validate() fails.
[[nodiscard]] SimulatedRig make_simulated_rig(SimulationConfig config);

}  // namespace twinloop::hil

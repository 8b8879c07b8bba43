#include "twinloop/hil/simulated_rig.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <thread>

namespace twinloop::hil {

SimulatedProbe::SimulatedProbe(std::shared_ptr<SimulatedSubject> subject)
    : subject_(std::move(subject)) {
  if (!subject_) throw std::invalid_argument("SimulatedProbe: null subject");
  // Error texts are short literals that fit here, so setting one in read() never allocates.
  last_error_.reserve(64);
}

bool SimulatedProbe::start() {
  if (started_) return true;
  const auto& config = subject_->config();
  total_samples_ = std::llround(config.seconds * config.sample_rate_hz);
  clock_zero_ = std::chrono::steady_clock::now();
  clock_zero_sample_ = subject_->generated_until();
  started_ = true;
  return true;
}

const drivers::ProbeInfo& SimulatedProbe::info() const noexcept {
  return subject_->probe_info();
}

drivers::ReadStatus SimulatedProbe::read(drivers::SampleBlock& block) noexcept {
  if (!started_) {
    last_error_ = "read() before start()";
    return drivers::ReadStatus::kError;
  }
  const auto& config = subject_->config();
  if (block.stored_channels != config.stored_channels() || block.capacity_samples() == 0) {
    last_error_ = "block not allocated for this probe";
    return drivers::ReadStatus::kError;
  }
  std::size_t rows = std::min(block.capacity_samples(), config.block_samples);
  const std::int64_t next = subject_->generated_until();
  if (total_samples_ > 0) {
    if (next >= total_samples_) return drivers::ReadStatus::kEndOfStream;
    rows = std::min<std::size_t>(rows, static_cast<std::size_t>(total_samples_ - next));
  }
  if (config.pace == drivers::Pace::kMax) {
    const std::int64_t limit = limit_.load(std::memory_order_acquire);
    if (next >= limit) {
      // Brief, so the acquisition loop neither spins a core nor notices a stop late.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      return drivers::ReadStatus::kWouldBlock;
    }
    rows = std::min<std::size_t>(rows, static_cast<std::size_t>(limit - next));
  }
  if (config.pace == drivers::Pace::kRealtime) {
    // Hardware delivers a block once its last sample has been digitised.
    const double due_s =
        static_cast<double>(next + static_cast<std::int64_t>(rows) - clock_zero_sample_) /
        config.sample_rate_hz;
    std::this_thread::sleep_until(clock_zero_ +
                                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                      std::chrono::duration<double>(due_s)));
  }
  subject_->generate(block, rows);
  return drivers::ReadStatus::kOk;
}

void SimulatedProbe::stop() noexcept {
  started_ = false;
}

SimulatedStimulator::SimulatedStimulator(std::shared_ptr<SimulatedSubject> subject)
    : subject_(std::move(subject)) {
  if (!subject_) throw std::invalid_argument("SimulatedStimulator: null subject");
}

drivers::StimulusOnset SimulatedStimulator::deliver(const drivers::StimulusCommand& command) {
  if (command.duration_samples < 0) {
    last_error_ = "negative duration_samples";
    return {};
  }
  const std::int64_t onset =
      std::max(command.earliest_onset_sample,
               subject_->generated_until() + subject_->onset_latency_samples());
  if (!subject_->try_schedule(command.trial, command.stimulus, onset, command.duration_samples)) {
    last_error_ = "stimulus hand-off queue full (generator not reading?)";
    return {};
  }
  return drivers::StimulusOnset{true, onset};
}

SimulatedRig make_simulated_rig(SimulationConfig config) {
  SimulatedRig rig;
  rig.subject = std::make_shared<SimulatedSubject>(std::move(config));
  rig.probe = std::make_unique<SimulatedProbe>(rig.subject);
  rig.stimulator = std::make_unique<SimulatedStimulator>(rig.subject);
  return rig;
}

}  // namespace twinloop::hil

// SimulatedSubject: a simulated animal with a Neuropixels 1.0 probe in it, and known ground truth.
//
// The subject owns the whole generative model: units placed along the shank with biphasic
// extracellular waveforms whose amplitude falls off with 3-D distance from each site (Lorentzian
// law A0 / (1 + (d / d0)^2)), inhomogeneous Poisson spike trains with an absolute refractory
// period, stimulus responses (response_models.hpp), white thermal noise, a common-mode component,
// slow LFP-like fluctuations and slow probe drift along the shank. It produces int16 AP-band blocks
// in the SpikeGLX layout (384 neural words + the SY sync word, bit 6 = 1 Hz square wave) and
// records every spike and stimulus it generated.
//
// Threads: generate() runs on ONE generator thread (the probe's reader). try_schedule() is called
// from ONE other thread at a time (the stimulator's caller; single-producer lock-free queue).
// generated_until(), ground_truth() and the counters are safe from any thread: ground truth lives
// in storage allocated at construction and is published with release/acquire counters, so reading
// it never blocks the generator. SimulatedProbe / SimulatedStimulator (simulated_rig.hpp) are the
// driver-facing wrappers; most code should use make_simulated_rig().
//
// Not copyable or movable: the generator thread and the stimulator hold references to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/hil/ground_truth.hpp"
#include "twinloop/hil/simulation_config.hpp"
#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil {

/// Sites a unit's spike is written to: a contiguous channel range (200 um either way on NP1.0)
/// centred on its peak channel. The Lorentzian has fallen below 2 % of the peak at its edges.
inline constexpr std::size_t kSpikeChannels = 40;

class SimulatedSubject {
 public:
  /// Builds units, waveforms and models from `config` and allocates every buffer the generator
  /// will use (ground-truth storage included).
  /// \throws std::invalid_argument naming the bad field when config.validate() fails.
  explicit SimulatedSubject(SimulationConfig config);
  ~SimulatedSubject();
  SimulatedSubject(const SimulatedSubject&) = delete;
  SimulatedSubject& operator=(const SimulatedSubject&) = delete;
  SimulatedSubject(SimulatedSubject&&) = delete;
  SimulatedSubject& operator=(SimulatedSubject&&) = delete;

  [[nodiscard]] const SimulationConfig& config() const noexcept;
  /// Name, channel counts, rate, conversion and geometry, as a ProbeSource reports them.
  [[nodiscard]] const drivers::ProbeInfo& probe_info() const noexcept;
  /// Every unit's position, waveform and model; fixed at construction.
  [[nodiscard]] const std::vector<UnitTruth>& units() const noexcept;

  /// Generator thread: fills the next `rows` samples (clamped to block.capacity_samples()) and
  /// stamps block.first_sample. Returns the rows written; 0 when `block` was not allocated with
  /// config().stored_channels() channels.
  /// \note Real-time safe: no allocation, no locks, no exceptions.
  std::size_t generate(drivers::SampleBlock& block, std::size_t rows) noexcept;

  /// One past the last sample generate() has produced. Any thread.
  [[nodiscard]] std::int64_t generated_until() const noexcept;
  /// The stimulator's fixed latency: onsets are at least this far past generated_until().
  [[nodiscard]] std::int64_t onset_latency_samples() const noexcept;

  /// Stimulator thread (single producer): hands a stimulus with a fixed onset to the generator,
  /// which applies it at its next generate(). Returns false (and counts a drop) when the hand-off
  /// queue is full.
  /// \note Lock-free and allocation-free.
  [[nodiscard]] bool try_schedule(std::uint64_t trial, const protocols::Stimulus& stimulus,
                                  std::int64_t onset_sample,
                                  std::int64_t duration_samples) noexcept;

  /// Snapshot of the ground truth published so far: spikes with trough < generated_until(),
  /// stimuli the generator has applied. Any thread; copies (not for the real-time path).
  [[nodiscard]] GroundTruth ground_truth() const;
  /// ground_truth() written with write_ground_truth().
  void write_ground_truth(const std::filesystem::path& dir) const;

  /// Stimuli refused: hand-off queue full, or too many overlapping stimuli in flight.
  [[nodiscard]] std::uint64_t dropped_stimuli() const noexcept;
  /// Stimuli that reached the generator after their onset sample had already been generated.
  [[nodiscard]] std::uint64_t late_stimuli() const noexcept;
  /// Spikes fired but not recorded in the ground truth because its storage was full.
  [[nodiscard]] std::uint64_t dropped_spike_records() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twinloop::hil

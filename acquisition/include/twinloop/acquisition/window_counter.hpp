// WindowCounter: spike counts per detection channel in trial windows (e.g. each trial's response
// window), built from the published event stream on the consumer side.
//
// Windows are half-open sample intervals [start, end). A window is complete once the acquisition
// loop has published every event before `end` (AcquisitionCounters::final_before_sample). Until a
// spike sorter assigns units, each detection channel stands for one unit.
//
// Thread safety: one thread. Capacity is fixed at construction; add_event() does not allocate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "twinloop/acquisition/spike_event.hpp"

namespace twinloop::acquisition {

class WindowCounter {
 public:
  /// \param channels      counts per window
  /// \param max_open      windows that may be open at once
  WindowCounter(std::size_t channels, std::size_t max_open);

  /// Opens a window; returns its handle, or nullopt when max_open windows are already open or
  /// the interval is empty.
  std::optional<std::size_t> open(std::int64_t start_sample, std::int64_t end_sample) noexcept;
  /// Counts an event in every open window that contains it.
  void add_event(const SpikeEvent& event) noexcept;
  void add_events(std::span<const SpikeEvent> events) noexcept;
  /// True once no event inside the window can still arrive.
  [[nodiscard]] bool complete(std::size_t handle, std::int64_t final_before_sample) const noexcept;
  /// Counts per channel of an open window.
  [[nodiscard]] std::span<const std::uint32_t> counts(std::size_t handle) const noexcept;
  /// Frees the window's slot for reuse.
  void close(std::size_t handle) noexcept;

 private:
  struct Window {
    std::int64_t start = 0, end = 0;
    bool open = false;
  };
  std::size_t channels_;
  std::vector<Window> windows_;
  std::vector<std::uint32_t> counts_;  // windows x channels
};

}  // namespace twinloop::acquisition

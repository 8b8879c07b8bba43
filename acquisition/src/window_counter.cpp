#include "twinloop/acquisition/window_counter.hpp"

#include <algorithm>

namespace twinloop::acquisition {

WindowCounter::WindowCounter(std::size_t channels, std::size_t max_open)
    : channels_(channels), windows_(max_open), counts_(channels * max_open, 0) {}

std::optional<std::size_t> WindowCounter::open(std::int64_t start_sample,
                                               std::int64_t end_sample) noexcept {
  if (end_sample <= start_sample) return std::nullopt;
  for (std::size_t h = 0; h < windows_.size(); ++h) {
    if (windows_[h].open) continue;
    windows_[h] = Window{start_sample, end_sample, true};
    std::fill_n(counts_.begin() + static_cast<std::ptrdiff_t>(h * channels_), channels_, 0u);
    return h;
  }
  return std::nullopt;
}

void WindowCounter::add_event(const SpikeEvent& event) noexcept {
  if (event.channel >= channels_) return;
  for (std::size_t h = 0; h < windows_.size(); ++h) {
    const Window& w = windows_[h];
    if (w.open && event.sample >= w.start && event.sample < w.end) {
      ++counts_[h * channels_ + event.channel];
    }
  }
}

void WindowCounter::add_events(std::span<const SpikeEvent> events) noexcept {
  for (const SpikeEvent& e : events) add_event(e);
}

bool WindowCounter::complete(std::size_t handle, std::int64_t final_before_sample) const noexcept {
  return windows_[handle].open && final_before_sample >= windows_[handle].end;
}

std::span<const std::uint32_t> WindowCounter::counts(std::size_t handle) const noexcept {
  return {counts_.data() + handle * channels_, channels_};
}

void WindowCounter::close(std::size_t handle) noexcept {
  windows_[handle].open = false;
}

}  // namespace twinloop::acquisition

#include "twinloop/acquisition/acquisition_loop.hpp"

#include <algorithm>
#include <chrono>
#include <exception>

namespace twinloop::acquisition {

AcquisitionLoop::AcquisitionLoop(drivers::ProbeSource& source, AcquisitionConfig config)
    : source_(source), config_(config) {}

AcquisitionLoop::~AcquisitionLoop() {
  stop();
  if (thread_.joinable()) thread_.join();
}

bool AcquisitionLoop::start() {
  if (!source_.start()) {
    error_ = "probe source failed to start: " + source_.last_error();
    return false;
  }
  const drivers::ProbeInfo& info = source_.info();
  try {
    detector_ = std::make_unique<SpikeDetector>(info, config_.detector);
  } catch (const std::exception& e) {
    error_ = e.what();
    source_.stop();
    return false;
  }
  block_.allocate(std::max<std::size_t>(config_.block_samples, 1), info.stored_channels);
  // A block can confirm at most a few troughs per channel; size for the worst case.
  block_events_.resize(info.neural_channels * (config_.block_samples / 8 + 4));
  events_ = std::make_unique<boost::lockfree::spsc_queue<SpikeEvent>>(config_.event_queue_capacity);
  gaps_ = std::make_unique<boost::lockfree::spsc_queue<GapEvent>>(config_.gap_queue_capacity);
  latencies_ns_.assign(config_.latency_capacity, 0);
  thread_ = std::thread([this] { run(); });
  return true;
}

void AcquisitionLoop::stop() noexcept {
  stop_requested_.store(true, std::memory_order_relaxed);
}

void AcquisitionLoop::join() {
  if (thread_.joinable()) thread_.join();
}

void AcquisitionLoop::run() noexcept {
  using Clock = std::chrono::steady_clock;
  drivers::GapDetector gap_detector;
  const std::int64_t delay = detector_->delay_samples() + 1;
  while (!stop_requested_.load(std::memory_order_relaxed)) {
    const drivers::ReadStatus status = source_.read(block_);
    if (status == drivers::ReadStatus::kWouldBlock) continue;
    if (status == drivers::ReadStatus::kEndOfStream) break;
    if (status == drivers::ReadStatus::kError) {
      failed_.store(true, std::memory_order_relaxed);
      break;
    }
    const Clock::time_point arrived = Clock::now();
    drivers::GapDetector::Gap gap;
    if (gap_detector.check(block_.first_sample, block_.sample_count, gap)) {
      gaps_seen_.fetch_add(1, std::memory_order_relaxed);
      missing_samples_.store(gap_detector.missing_samples(), std::memory_order_relaxed);
      if (!gaps_->push(GapEvent{gap.expected_sample, gap.found_sample})) {
        gaps_dropped_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    const std::size_t n = detector_->process(block_, block_events_);
    const std::size_t pushed = events_->push(block_events_.data(), n);
    events_published_.fetch_add(pushed, std::memory_order_relaxed);
    queue_dropped_ += n - pushed;
    events_dropped_.store(queue_dropped_ + detector_->stats().events_overflowed,
                          std::memory_order_relaxed);
    blocks_.fetch_add(1, std::memory_order_relaxed);
    samples_.fetch_add(block_.sample_count, std::memory_order_relaxed);
    const std::int64_t block_end =
        block_.first_sample + static_cast<std::int64_t>(block_.sample_count);
    // Armed before the clock moves on (release, read with acquire): a reader that sees the
    // stream at block_end sees whether the detector was armed by then.
    armed_.store(detector_->armed(), std::memory_order_relaxed);
    if (block_end > next_sample_.load(std::memory_order_relaxed)) {
      next_sample_.store(block_end, std::memory_order_release);  // a late old block never rewinds
    }
    final_before_.store(
        block_.first_sample + static_cast<std::int64_t>(block_.sample_count) - delay,
        std::memory_order_release);
    if (latency_count_ < latencies_ns_.size()) {
      latencies_ns_[latency_count_++] = static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - arrived).count());
    }
  }
  source_.stop();
  finished_.store(true, std::memory_order_release);
}

std::size_t AcquisitionLoop::drain_events(std::span<SpikeEvent> out) noexcept {
  return events_ ? events_->pop(out.data(), out.size()) : 0;
}

std::size_t AcquisitionLoop::drain_gaps(std::span<GapEvent> out) noexcept {
  return gaps_ ? gaps_->pop(out.data(), out.size()) : 0;
}

AcquisitionCounters AcquisitionLoop::counters() const noexcept {
  AcquisitionCounters c;
  c.blocks = blocks_.load(std::memory_order_relaxed);
  c.samples = samples_.load(std::memory_order_relaxed);
  c.events = events_published_.load(std::memory_order_relaxed);
  c.events_dropped = events_dropped_.load(std::memory_order_relaxed);
  c.gaps = gaps_seen_.load(std::memory_order_relaxed);
  c.missing_samples = missing_samples_.load(std::memory_order_relaxed);
  c.gaps_dropped = gaps_dropped_.load(std::memory_order_relaxed);
  c.final_before_sample = final_before_.load(std::memory_order_acquire);
  c.next_sample = next_sample_.load(std::memory_order_acquire);
  c.armed = armed_.load(std::memory_order_relaxed);
  c.finished = finished_.load(std::memory_order_acquire);
  c.failed = failed_.load(std::memory_order_relaxed);
  return c;
}

std::span<const std::uint32_t> AcquisitionLoop::block_latencies_ns() const noexcept {
  return {latencies_ns_.data(), latency_count_};
}

}  // namespace twinloop::acquisition

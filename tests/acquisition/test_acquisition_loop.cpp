// AcquisitionLoop with a fake probe: gaps are detected and reported (never bridged), every event
// reaches the consumer, counters add up, a failing source ends the loop, and neither the loop
// thread nor the detector allocates once started.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"

namespace twinloop::acquisition {
namespace {

// Noise with a spike every 10 ms on channel 5, in 1 ms blocks; block `skip_block` is left out
// (a driver gap) and the source fails after `fail_after` blocks if set.
class FakeProbe final : public drivers::ProbeSource {
 public:
  FakeProbe(std::size_t blocks, std::size_t skip_block, std::size_t fail_after = 0)
      : blocks_(blocks), skip_block_(skip_block), fail_after_(fail_after) {}
  bool start() override {
    info_.name = "fake";
    info_.stored_channels = 32;
    info_.neural_channels = 32;
    info_.sample_rate_hz = 30000;
    info_.microvolts_per_bit = 1.0;
    info_.geometry = drivers::neuropixels1_geometry(32);
    std::mt19937 rng(1);
    std::normal_distribution<double> noise(0, 6);
    data_.resize(blocks_ * 30 * 32);
    for (std::size_t i = 0; i < data_.size(); ++i) {
      double v = noise(rng);
      const std::size_t row = i / 32, channel = i % 32;
      const long phase = static_cast<long>(row % 300) - 150;
      if (channel == 5 && std::labs(phase) < 10) v -= 150.0 * std::exp(-phase * phase / 8.0);
      data_[i] = static_cast<std::int16_t>(std::lround(v));
    }
    return true;
  }
  const drivers::ProbeInfo& info() const noexcept override { return info_; }
  drivers::ReadStatus read(drivers::SampleBlock& block) noexcept override {
    test_support::count_allocations_on_this_thread =
        true;  // the acquisition thread: from here on every allocation is counted
    if (next_ == skip_block_) ++next_;
    if (fail_after_ && next_ >= fail_after_) return drivers::ReadStatus::kError;
    if (next_ >= blocks_) return drivers::ReadStatus::kEndOfStream;
    std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(next_ * 30 * 32), 30 * 32,
                block.samples.begin());
    block.first_sample = static_cast<std::int64_t>(next_ * 30);
    block.sample_count = 30;
    ++next_;
    return drivers::ReadStatus::kOk;
  }

 private:
  std::size_t blocks_, skip_block_, fail_after_;
  std::size_t next_ = 0;
  drivers::ProbeInfo info_;
  std::vector<std::int16_t> data_;
};

std::vector<SpikeEvent> drain_all(AcquisitionLoop& loop) {
  std::vector<SpikeEvent> all, batch(256);
  while (!loop.counters().finished) {
    const std::size_t n = loop.drain_events(batch);
    all.insert(all.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  loop.join();
  while (const std::size_t n = loop.drain_events(batch)) {
    all.insert(all.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
  }
  return all;
}

TEST(AcquisitionLoop, ReportsGapAndDeliversEveryEvent) {
  FakeProbe probe(2000, 1500);  // 2 s, block 1500 missing
  AcquisitionConfig config;
  config.latency_capacity = 4000;
  AcquisitionLoop loop(probe, config);
  test_support::allocations = 0;
  ASSERT_TRUE(loop.start()) << loop.error();
  const std::vector<SpikeEvent> events = drain_all(loop);
  const AcquisitionCounters c = loop.counters();
  EXPECT_TRUE(c.finished);
  EXPECT_FALSE(c.failed);
  EXPECT_EQ(c.blocks, 1999u);
  EXPECT_EQ(c.samples, 1999u * 30);
  EXPECT_EQ(c.gaps, 1u);
  EXPECT_EQ(c.missing_samples, 30);
  EXPECT_EQ(c.events, events.size());
  EXPECT_EQ(c.events_dropped, 0u);
  std::vector<GapEvent> gaps(4);
  ASSERT_EQ(loop.drain_gaps(gaps), 1u);
  EXPECT_EQ(gaps[0].expected_sample, 1500 * 30);
  EXPECT_EQ(gaps[0].found_sample, 1501 * 30);
  // A spike every 300 samples after the noise estimate armed (about 0.57 s): ~140 of them.
  std::size_t on_channel_5 = 0;
  for (const SpikeEvent& e : events) on_channel_5 += e.channel == 5 ? 1 : 0;
  EXPECT_GE(on_channel_5, 130u);
  EXPECT_LE(events.size(), on_channel_5 + 5);
  EXPECT_EQ(loop.block_latencies_ns().size(), 1999u);
  EXPECT_EQ(test_support::allocations.load(), 0u)
      << "the acquisition thread allocated after start()";
}

TEST(AcquisitionLoop, SourceErrorEndsLoopAsFailed) {
  FakeProbe probe(2000, 5000, 100);
  AcquisitionLoop loop(probe, AcquisitionConfig{});
  ASSERT_TRUE(loop.start());
  drain_all(loop);
  EXPECT_TRUE(loop.counters().failed);
  EXPECT_EQ(loop.counters().blocks, 100u);
}

TEST(AcquisitionLoop, FullQueueDropsAndCountsEvents) {
  FakeProbe probe(2000, 5000);
  AcquisitionConfig config;
  config.event_queue_capacity = 8;  // the consumer below never drains
  AcquisitionLoop loop(probe, config);
  ASSERT_TRUE(loop.start());
  while (!loop.counters().finished) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  loop.join();
  const AcquisitionCounters c = loop.counters();
  EXPECT_EQ(c.events, 8u);
  EXPECT_GT(c.events_dropped, 100u);
}

TEST(AcquisitionLoop, StartFailsCleanlyOnBadDetectorConfig) {
  FakeProbe probe(10, 50);
  AcquisitionConfig config;
  config.detector.highpass_hz = 20000;  // above Nyquist
  AcquisitionLoop loop(probe, config);
  EXPECT_FALSE(loop.start());
  EXPECT_NE(loop.error().find("high-pass"), std::string::npos) << loop.error();
}

}  // namespace
}  // namespace twinloop::acquisition

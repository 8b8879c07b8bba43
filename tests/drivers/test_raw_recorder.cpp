// RawRecorder: the stream passes through unchanged, and the SpikeGLX file it writes replays the
// same samples at the same sample indices; gaps are zero-filled and repeats written once, both
// counted.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <vector>

#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/raw_recorder.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

using testing_fixtures::TempDir;

std::int16_t value_at(std::int64_t sample, std::size_t channel) {
  return static_cast<std::int16_t>((sample * 7 + static_cast<std::int64_t>(channel) * 13) % 2000 -
                                   1000);
}

// Delivers `plan` blocks (first sample, rows) of a small probe with a sync word.
class ScriptedSource final : public ProbeSource {
 public:
  ScriptedSource(std::size_t channels, std::vector<std::pair<std::int64_t, std::size_t>> plan)
      : plan_(std::move(plan)) {
    info_.name = "scripted0";
    info_.neural_channels = channels;
    info_.stored_channels = channels + 1;
    info_.has_sync_word = true;
    info_.sample_rate_hz = 30000.0;
    info_.microvolts_per_bit = 2.34375;
  }
  bool start() override { return true; }
  const ProbeInfo& info() const noexcept override { return info_; }
  ReadStatus read(SampleBlock& block) noexcept override {
    if (next_ == plan_.size()) return ReadStatus::kEndOfStream;
    const auto [first, rows] = plan_[next_++];
    block.first_sample = first;
    block.sample_count = rows;
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t c = 0; c < block.stored_channels; ++c) {
        block.samples[r * block.stored_channels + c] =
            value_at(first + static_cast<std::int64_t>(r), c);
      }
    }
    return ReadStatus::kOk;
  }

 private:
  ProbeInfo info_;
  std::vector<std::pair<std::int64_t, std::size_t>> plan_;
  std::size_t next_ = 0;
};

TEST(RawRecorder, PassesBlocksThroughAndReplaysTheSameSamples) {
  TempDir dir("raw_recorder");
  constexpr std::size_t kChannels = 64;
  std::vector<std::pair<std::int64_t, std::size_t>> plan;
  for (std::int64_t b = 0; b < 200; ++b) plan.emplace_back(500 + b * 30, 30);
  ScriptedSource source(kChannels, plan);
  // The scripted source has no deadline and outruns the disk: the reader waits for it.
  RawRecorder recorder(source, {dir.path() / "raw" / "s_g0_t0.imec0", 30, 0.1, true});
  ASSERT_TRUE(recorder.start()) << recorder.last_error();
  SampleBlock block;
  block.allocate(30, recorder.info().stored_channels);
  std::size_t blocks = 0;
  while (recorder.read(block) == ReadStatus::kOk) {
    ASSERT_EQ(block.row(3)[5], value_at(block.first_sample + 3, 5));  // unchanged for the reader
    ++blocks;
  }
  recorder.stop();
  EXPECT_EQ(blocks, 200u);
  const RawRecorderCounters c = recorder.counters();
  EXPECT_FALSE(c.failed) << recorder.error();
  EXPECT_EQ(c.samples_written, 6000u);
  EXPECT_EQ(c.samples_zero_filled, 0u);

  const SpikeGlxMeta meta = parse_spikeglx_meta(spikeglx_meta_path_for(recorder.bin_path()));
  EXPECT_EQ(meta.saved_channels, kChannels + 1);
  EXPECT_EQ(meta.ap_count, kChannels);
  EXPECT_FALSE(meta.save_all);
  EXPECT_EQ(meta.first_sample, 500);
  EXPECT_EQ(meta.geometry.sites.size(), kChannels);

  SpikeGlxFileSource replay({recorder.bin_path(), 77, Pace::kMax});
  ASSERT_TRUE(replay.start()) << replay.last_error();
  EXPECT_EQ(replay.total_samples(), 6000u);
  SampleBlock back;
  back.allocate(77, replay.info().stored_channels);
  std::int64_t expected_first = 500;
  while (replay.read(back) == ReadStatus::kOk) {
    ASSERT_EQ(back.first_sample, expected_first);
    for (std::size_t r = 0; r < back.sample_count; ++r) {
      for (std::size_t ch = 0; ch <= kChannels; ++ch) {
        ASSERT_EQ(back.row(r)[ch], value_at(back.first_sample + static_cast<std::int64_t>(r), ch))
            << "sample " << back.first_sample + static_cast<std::int64_t>(r) << " channel " << ch;
      }
    }
    expected_first += static_cast<std::int64_t>(back.sample_count);
  }
  EXPECT_EQ(expected_first, 6500);
}

TEST(RawRecorder, ZeroFillsGapsAndWritesRepeatedRowsOnce) {
  TempDir dir("raw_recorder_gaps");
  // 0..29, then a gap of 60 rows, 90..119, a repeat of 90..119, an overlap 105..134, then 135..164.
  ScriptedSource source(8, {{0, 30}, {90, 30}, {90, 30}, {105, 30}, {135, 30}});
  RawRecorder recorder(source, {dir.path() / "g_g0_t0.imec0", 30, 0.1, true});
  ASSERT_TRUE(recorder.start()) << recorder.last_error();
  SampleBlock block;
  block.allocate(30, recorder.info().stored_channels);
  while (recorder.read(block) == ReadStatus::kOk) {
  }
  recorder.stop();
  const RawRecorderCounters c = recorder.counters();
  EXPECT_EQ(c.samples_written, 165u);
  EXPECT_EQ(c.samples_zero_filled, 60u);
  EXPECT_EQ(c.samples_repeated, 30u + 15u);

  SpikeGlxFileSource replay({recorder.bin_path(), 165, Pace::kMax});
  ASSERT_TRUE(replay.start()) << replay.last_error();
  SampleBlock back;
  back.allocate(165, replay.info().stored_channels);
  ASSERT_EQ(replay.read(back), ReadStatus::kOk);
  ASSERT_EQ(back.sample_count, 165u);
  EXPECT_EQ(back.row(29)[3], value_at(29, 3));
  EXPECT_EQ(back.row(30)[3], 0);
  EXPECT_EQ(back.row(89)[3], 0);
  EXPECT_EQ(back.row(90)[3], value_at(90, 3));
  EXPECT_EQ(back.row(134)[3], value_at(134, 3));
  EXPECT_EQ(back.row(164)[8], value_at(164, 8));  // the sync word is kept
}

TEST(RawRecorder, ALiveSourceNeverWaitsAndCountsWhatTheRingCouldNotHold) {
  TempDir dir("raw_recorder_overflow");
  std::vector<std::pair<std::int64_t, std::size_t>> plan;
  for (std::int64_t b = 0; b < 2000; ++b) plan.emplace_back(b * 30, 30);
  ScriptedSource source(64, plan);
  // 16 slots (the minimum) against 2000 blocks delivered with no pause: the ring may overflow,
  // how often depends on the disk and the scheduler, so the test checks the accounting.
  RawRecorder recorder(source, {dir.path() / "o_g0_t0.imec0", 30, 0.001, false});
  ASSERT_TRUE(recorder.start()) << recorder.last_error();
  SampleBlock block;
  block.allocate(30, recorder.info().stored_channels);
  std::size_t blocks = 0;
  while (recorder.read(block) == ReadStatus::kOk) ++blocks;
  recorder.stop();
  EXPECT_EQ(blocks, 2000u);  // the reader got every block, recorded or not
  const RawRecorderCounters c = recorder.counters();
  // Every row delivered is either in the file as data or counted as not recorded.
  EXPECT_EQ(c.samples_written - c.samples_zero_filled, 60000u - c.samples_not_recorded);
}

TEST(RawRecorder, RefusesAFolderItCannotWriteAndStopsTheSource) {
  TempDir dir("raw_recorder_bad");
  const std::filesystem::path file = dir.path() / "not_a_folder";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  ScriptedSource source(8, {{0, 30}});
  RawRecorder recorder(source, {file / "x_g0_t0.imec0", 30, 0.1});
  EXPECT_FALSE(recorder.start());
  EXPECT_NE(recorder.last_error().find("not_a_folder"), std::string::npos) << recorder.last_error();
}

TEST(RawRecorder, BytesNeededCountsEveryRowAndTheSyncWord) {
  EXPECT_EQ(RawRecorder::bytes_needed(384, 30000.0, 60.0), 30000u * 60u * 385u * 2u);
  EXPECT_EQ(RawRecorder::bytes_needed(64, 30000.0, 0.5), 15000u * 65u * 2u);
}

}  // namespace
}  // namespace twinloop::drivers

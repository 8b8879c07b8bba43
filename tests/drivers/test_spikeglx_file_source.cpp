// SpikeGlxFileSource: replay of small .bin fixtures shaped from real metas; sizes, pacing, errors.
#include <gtest/gtest.h>

#include <chrono>

#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

using testing_fixtures::make_fixture;
using testing_fixtures::pattern;
using testing_fixtures::TempDir;

struct Replay {
  std::uint64_t rows = 0;
  std::size_t blocks = 0;
  bool exact = true;
  std::uint64_t gaps = 0;
};

Replay replay_all(SpikeGlxFileSource& source, std::size_t capacity) {
  Replay out;
  SampleBlock block;
  block.allocate(capacity, source.info().stored_channels);
  GapDetector gaps;
  GapDetector::Gap gap;
  const std::int64_t first = source.meta().first_sample;
  ReadStatus status;
  while ((status = source.read(block)) == ReadStatus::kOk) {
    ++out.blocks;
    gaps.check(block.first_sample, block.sample_count, gap);
    if (block.first_sample != first + static_cast<std::int64_t>(out.rows)) out.exact = false;
    for (std::size_t r = 0; r < block.sample_count; ++r, ++out.rows) {
      for (std::size_t c = 0; c < block.stored_channels; ++c) {
        if (block.row(r)[c] != pattern(out.rows, c)) out.exact = false;
      }
    }
  }
  EXPECT_EQ(status, ReadStatus::kEndOfStream) << source.last_error();
  EXPECT_EQ(source.read(block), ReadStatus::kEndOfStream);
  out.gaps = gaps.gap_count();
  return out;
}

TEST(SpikeGlxFileSource, ReplaysNoiseFixtureExactly) {
  TempDir dir("sglx_src");
  const auto bin =
      make_fixture(dir.path(), "Noise_g0_t0.imec0.ap", "probeinterface__Noise_g0_t0.imec0.ap.meta",
                   385, 30000.0, 1000, 1000);
  SpikeGlxFileSource source({bin, 128, Pace::kMax});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_TRUE(source.warnings().empty());
  EXPECT_EQ(source.total_samples(), 1000u);
  EXPECT_EQ(source.info().stored_channels, 385u);
  EXPECT_EQ(source.info().neural_channels, 384u);
  EXPECT_TRUE(source.info().has_sync_word);
  EXPECT_EQ(source.info().name, "imec0");
  EXPECT_EQ(source.meta().first_sample, 177385);
  const Replay r = replay_all(source, 256);  // block_samples (128) caps each read
  EXPECT_EQ(r.rows, 1000u);
  EXPECT_EQ(r.blocks, 8u);  // 7 x 128 + 104
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.gaps, 0u);
}

TEST(SpikeGlxFileSource, ReplaysChannelSubsetFixture) {
  TempDir dir("sglx_subset");
  const auto bin = make_fixture(dir.path(), "subset_g0_t0.imec5.ap",
                                "probeinterface__NP1_saved_only_subset_of_channels.meta", 152,
                                30000.0, 777, 777);
  SpikeGlxFileSource source({bin, 100, Pace::kMax});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.info().stored_channels, 152u);
  EXPECT_EQ(source.info().name, "imec5");  // the replayed file's name, not the meta's fileName
  EXPECT_EQ(source.info().neural_channels, 151u);
  EXPECT_EQ(source.info().geometry.channel_count(), 151u);
  const Replay r = replay_all(source, 64);  // capacity (64) caps each read
  EXPECT_EQ(r.rows, 777u);
  EXPECT_EQ(r.blocks, 13u);
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.gaps, 0u);
}

TEST(SpikeGlxFileSource, TruncatedBinReplaysWholeRowsAndWarns) {
  TempDir dir("sglx_trunc");
  const auto bin = make_fixture(dir.path(), "t_g0_t0.imec1.ap", "ibl__sample3B_g0_t0.imec1.ap.meta",
                                385, 30000.390639481, 490, 500, 123);
  SpikeGlxFileSource source({bin, 64, Pace::kMax});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.total_samples(), 490u);
  ASSERT_EQ(source.warnings().size(), 2u);
  bool saw_truncated = false;
  bool saw_partial = false;
  for (const std::string& w : source.warnings()) {
    if (w.find("truncated") != std::string::npos &&
        w.find("10 samples missing") != std::string::npos)
      saw_truncated = true;
    if (w.find("not a whole number of rows") != std::string::npos &&
        w.find("123 bytes") != std::string::npos)
      saw_partial = true;
  }
  EXPECT_TRUE(saw_truncated);
  EXPECT_TRUE(saw_partial);
  const Replay r = replay_all(source, 64);
  EXPECT_EQ(r.rows, 490u);
  EXPECT_TRUE(r.exact);
}

TEST(SpikeGlxFileSource, LongerBinThanMetaUsesMetaRows) {
  TempDir dir("sglx_long");
  const auto bin = make_fixture(dir.path(), "l_g0_t0.imec0.ap",
                                "probeinterface__Noise_g0_t0.imec0.ap.meta", 385, 30000.0, 60, 50);
  SpikeGlxFileSource source({bin, 64, Pace::kMax});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.total_samples(), 50u);
  EXPECT_EQ(source.warnings().size(), 1u);
}

TEST(SpikeGlxFileSource, RealtimePacingIsNotFasterThanRealTime) {
  TempDir dir("sglx_rt");
  // LF stream at ~2500 Hz: 500 rows = 0.2 s of data.
  const auto bin =
      make_fixture(dir.path(), "rt_g0_t0.imec1.lf", "ibl__sample3B_g0_t0.imec1.lf.meta", 385,
                   2500.0325532900833, 500, 500);
  SpikeGlxFileSource source({bin, 50, Pace::kRealtime});
  ASSERT_TRUE(source.start()) << source.last_error();
  const auto t0 = std::chrono::steady_clock::now();
  const Replay r = replay_all(source, 50);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rows, 500u);
  EXPECT_TRUE(r.exact);
  EXPECT_GE(elapsed, 0.18);
}

TEST(SpikeGlxFileSource, MissingMetaFails) {
  TempDir dir("sglx_nometa");
  const auto bin = make_fixture(dir.path(), "m_g0_t0.imec0.ap",
                                "probeinterface__Noise_g0_t0.imec0.ap.meta", 385, 30000.0, 10, 10);
  std::filesystem::remove(dir.path() / "m_g0_t0.imec0.ap.meta");
  SpikeGlxFileSource source({bin, 10, Pace::kMax});
  EXPECT_FALSE(source.start());
  EXPECT_NE(source.last_error().find("m_g0_t0.imec0.ap.meta"), std::string::npos)
      << source.last_error();
  EXPECT_NE(source.last_error().find("not found"), std::string::npos);
  SampleBlock block;
  block.allocate(10, 385);
  EXPECT_EQ(source.read(block), ReadStatus::kError);
}

TEST(SpikeGlxFileSource, MissingBinFails) {
  TempDir dir("sglx_nobin");
  const auto bin = make_fixture(dir.path(), "b_g0_t0.imec0.ap",
                                "probeinterface__Noise_g0_t0.imec0.ap.meta", 385, 30000.0, 10, 10);
  std::filesystem::remove(bin);
  SpikeGlxFileSource source({bin, 10, Pace::kMax});
  EXPECT_FALSE(source.start());
  EXPECT_NE(source.last_error().find("b_g0_t0.imec0.ap.bin"), std::string::npos)
      << source.last_error();
}

TEST(SpikeGlxFileSource, MalformedMetaFailsNamingLine) {
  TempDir dir("sglx_badmeta");
  const auto bin = make_fixture(dir.path(), "x_g0_t0.imec0.ap",
                                "probeinterface__Noise_g0_t0.imec0.ap.meta", 385, 30000.0, 10, 10);
  const auto meta_path = dir.path() / "x_g0_t0.imec0.ap.meta";
  const std::string text =
      testing_fixtures::set_key(testing_fixtures::read_text(meta_path), "nSavedChans", "386");
  testing_fixtures::write_text(meta_path, text);
  SpikeGlxFileSource source({bin, 10, Pace::kMax});
  EXPECT_FALSE(source.start());
  const std::string expected = meta_path.string() + ":" +
                               std::to_string(testing_fixtures::line_of(text, "~snsChanMap")) + ":";
  EXPECT_NE(source.last_error().find(expected), std::string::npos) << source.last_error();
}

TEST(SpikeGlxFileSource, WrongBlockShapeIsAnError) {
  TempDir dir("sglx_shape");
  const auto bin = make_fixture(dir.path(), "s_g0_t0.imec0.ap",
                                "probeinterface__Noise_g0_t0.imec0.ap.meta", 385, 30000.0, 10, 10);
  SpikeGlxFileSource source({bin, 10, Pace::kMax});
  ASSERT_TRUE(source.start());
  SampleBlock block;
  block.allocate(10, 384);
  EXPECT_EQ(source.read(block), ReadStatus::kError);
  EXPECT_FALSE(source.last_error().empty());
}

}  // namespace
}  // namespace twinloop::drivers

// SpikeGlxWriter: what it writes, parse_spikeglx_meta and SpikeGlxFileSource read back.
#include <gtest/gtest.h>

#include <filesystem>

#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

using testing_fixtures::pattern;
using testing_fixtures::read_text;
using testing_fixtures::TempDir;

void fill(SampleBlock& block, std::int64_t first, std::size_t rows) {
  block.first_sample = first;
  block.sample_count = rows;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < block.stored_channels; ++c) {
      block.samples[r * block.stored_channels + c] =
          pattern(static_cast<std::uint64_t>(first + static_cast<std::int64_t>(r)), c);
    }
  }
}

TEST(SpikeGlxWriter, RoundTripThroughParserAndSource) {
  TempDir dir("sglx_writer");
  const std::filesystem::path base = dir.path() / "run_g0_t0.imec0";
  SpikeGlxWriterConfig config;
  config.sample_rate_hz = 30000.390639481;
  const std::int64_t first = 1000;
  const std::size_t rows_per_block = 250;
  const std::size_t blocks = 7;
  {
    SpikeGlxWriter writer(base, config);
    SampleBlock block;
    block.allocate(rows_per_block, SpikeGlxWriter::kStoredChannels);
    for (std::size_t b = 0; b < blocks; ++b) {
      fill(block, first + static_cast<std::int64_t>(b * rows_per_block), rows_per_block);
      ASSERT_TRUE(writer.append(block)) << writer.last_error();
    }
    EXPECT_EQ(writer.samples_written(), rows_per_block * blocks);
    writer.close();
  }
  const std::filesystem::path bin = dir.path() / "run_g0_t0.imec0.ap.bin";
  const std::filesystem::path meta_path = dir.path() / "run_g0_t0.imec0.ap.meta";
  ASSERT_TRUE(std::filesystem::exists(bin));
  ASSERT_TRUE(std::filesystem::exists(meta_path));

  const SpikeGlxMeta meta = parse_spikeglx_meta(meta_path);
  EXPECT_EQ(meta.type_this, "imec");
  EXPECT_DOUBLE_EQ(meta.sample_rate_hz, 30000.390639481);
  EXPECT_EQ(meta.saved_channels, 385u);
  EXPECT_EQ(meta.ap_count, 384u);
  EXPECT_EQ(meta.lf_count, 0u);
  EXPECT_EQ(meta.sy_count, 1u);
  EXPECT_TRUE(meta.save_all);
  EXPECT_EQ(meta.file_size_bytes, std::filesystem::file_size(bin));
  EXPECT_EQ(meta.file_size_bytes, rows_per_block * blocks * 385u * 2u);
  EXPECT_NEAR(meta.file_time_secs, rows_per_block * blocks / 30000.390639481, 1e-12);
  EXPECT_EQ(meta.first_sample, first);
  EXPECT_EQ(meta.probe_type, 0);
  EXPECT_EQ(meta.max_int, 512);
  EXPECT_EQ(meta.imro->layout, ImroLayout::kNp1);
  EXPECT_EQ(meta.geometry.model, "NP1000");
  const ProbeGeometry np1 = neuropixels1_geometry();
  ASSERT_EQ(meta.geometry.sites.size(), 384u);
  for (std::size_t i = 0; i < 384; ++i) {
    EXPECT_DOUBLE_EQ(meta.geometry.sites[i].x_um, np1.sites[i].x_um + 11.0) << i;
    EXPECT_DOUBLE_EQ(meta.geometry.sites[i].z_um, np1.sites[i].z_um) << i;
    EXPECT_EQ(meta.geometry.sites[i].electrode, static_cast<int>(i));
    EXPECT_DOUBLE_EQ(meta.microvolts_per_bit[i], 2.34375);
  }
  for (const char* key :
       {"acqApLfSy", "snsApLfSy", "syncImInputSlot", "syncSourcePeriod", "fileCreateTime",
        "imChan0apGain", "imChan0lfGain", "~snsShankMap", "~snsGeomMap", "imAiRangeMin"}) {
    EXPECT_NE(meta.find(key), nullptr) << key;
  }
  EXPECT_EQ(*meta.find("snsApLfSy"), "384,0,1");
  EXPECT_EQ(*meta.find("acqApLfSy"), "384,384,1");
  EXPECT_EQ(*meta.find("imAiRangeMax"), "0.6");

  // The shank map alone gives the same positions as the geom map.
  std::string text = read_text(meta_path);
  const std::size_t g = text.find("~snsGeomMap=");
  text.erase(g, text.find('\n', g) - g + 1);
  const SpikeGlxMeta old_style = parse_spikeglx_meta_text(text, "no_geom.meta");
  for (std::size_t i = 0; i < 384; ++i) {
    EXPECT_DOUBLE_EQ(old_style.geometry.sites[i].x_um, meta.geometry.sites[i].x_um) << i;
    EXPECT_DOUBLE_EQ(old_style.geometry.sites[i].z_um, meta.geometry.sites[i].z_um) << i;
  }

  // Replay returns exactly what was written.
  SpikeGlxFileSource source({bin, 333, Pace::kMax});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_TRUE(source.warnings().empty());
  EXPECT_EQ(source.info().name, "imec0");
  SampleBlock block;
  block.allocate(333, source.info().stored_channels);
  std::uint64_t row = 0;
  while (source.read(block) == ReadStatus::kOk) {
    ASSERT_EQ(block.first_sample, first + static_cast<std::int64_t>(row));
    for (std::size_t r = 0; r < block.sample_count; ++r, ++row) {
      for (std::size_t c = 0; c < 385; ++c) {
        ASSERT_EQ(block.row(r)[c], pattern(first + row, c)) << row << "," << c;
      }
    }
  }
  EXPECT_EQ(row, rows_per_block * blocks);
}

TEST(SpikeGlxWriter, RefusesGapsAndWrongShape) {
  TempDir dir("sglx_writer_gap");
  SpikeGlxWriter writer(dir.path() / "gap_g0_t0.imec0");
  SampleBlock block;
  block.allocate(10, SpikeGlxWriter::kStoredChannels);
  fill(block, 50, 10);
  ASSERT_TRUE(writer.append(block));
  fill(block, 61, 10);  // one sample missing
  EXPECT_FALSE(writer.append(block));
  EXPECT_NE(writer.last_error().find("contiguous"), std::string::npos);
  SampleBlock narrow;
  narrow.allocate(10, 384);
  narrow.sample_count = 10;
  narrow.first_sample = 60;
  EXPECT_FALSE(writer.append(narrow));
  fill(block, 60, 10);
  EXPECT_TRUE(writer.append(block));
  writer.close();
  EXPECT_FALSE(writer.append(block));
  const SpikeGlxMeta meta = parse_spikeglx_meta(writer.meta_path());
  EXPECT_EQ(meta.sample_count(), 20u);
  EXPECT_EQ(meta.first_sample, 50);
}

TEST(SpikeGlxWriter, DestructorWritesMeta) {
  TempDir dir("sglx_writer_dtor");
  std::filesystem::path meta_path;
  {
    SpikeGlxWriter writer(dir.path() / "d_g0_t0.imec0");
    meta_path = writer.meta_path();
  }
  const SpikeGlxMeta meta = parse_spikeglx_meta(meta_path);
  EXPECT_EQ(meta.file_size_bytes, 0u);
}

TEST(SpikeGlxWriter, UncreatableFileThrowsNamingIt) {
  try {
    SpikeGlxWriter writer("/nonexistent/dir/x_g0_t0.imec0");
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x_g0_t0.imec0.ap.bin"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace twinloop::drivers

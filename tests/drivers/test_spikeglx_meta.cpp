// SpikeGLX .meta parsing against all 12 real metas in ../shared/data/spikeglx_meta/, and the error
// paths (missing key, malformed table entry, inconsistent counts) naming file and line.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

using testing_fixtures::line_of;
using testing_fixtures::read_text;
using testing_fixtures::real_meta;
using testing_fixtures::set_key;

constexpr double kNp1ApUv = 0.6 / 512.0 / 500.0 * 1e6;  // 2.34375
constexpr double kNp1LfUv = 0.6 / 512.0 / 250.0 * 1e6;  // 4.6875
constexpr double kNp2Uv = 0.5 / 8192.0 / 80.0 * 1e6;    // 0.762939453125

SpikeGlxMeta load(const std::string& name) {
  return parse_spikeglx_meta(real_meta(name));
}

void expect_site(const SpikeGlxMeta& m, std::size_t i, double x, double z, int shank = 0) {
  ASSERT_LT(i, m.geometry.sites.size());
  EXPECT_DOUBLE_EQ(m.geometry.sites[i].x_um, x) << m.source << " site " << i;
  EXPECT_DOUBLE_EQ(m.geometry.sites[i].z_um, z) << m.source << " site " << i;
  EXPECT_EQ(m.geometry.sites[i].shank, shank) << m.source << " site " << i;
}

void expect_counts(const SpikeGlxMeta& m, std::size_t saved, std::size_t ap, std::size_t lf,
                   std::size_t sy) {
  EXPECT_EQ(m.saved_channels, saved);
  EXPECT_EQ(m.channels.size(), saved);
  EXPECT_EQ(m.ap_count, ap);
  EXPECT_EQ(m.lf_count, lf);
  EXPECT_EQ(m.sy_count, sy);
  EXPECT_EQ(m.geometry.sites.size(), ap + lf);
  EXPECT_EQ(m.microvolts_per_bit.size(), ap + lf);
}

TEST(SpikeGlxMeta, Phase3AApUsesDefaultsAndShankMap) {
  const SpikeGlxMeta m = load("ibl__sample3A_g0_t0.imec.ap.meta");
  EXPECT_EQ(m.type_this, "imec");
  EXPECT_DOUBLE_EQ(m.sample_rate_hz, 30000.0);
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_FALSE(m.probe_type_present);
  EXPECT_EQ(m.probe_type, 0);
  EXPECT_EQ(m.max_int, 512);  // absent in 3A: NP1.0 10-bit
  ASSERT_TRUE(m.imro.has_value());
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp1Phase3A);
  EXPECT_EQ(m.imro->entries.size(), 384u);
  EXPECT_EQ(m.first_sample, 84149244);
  EXPECT_EQ(m.file_size_bytes, 36233200080u);
  EXPECT_EQ(m.channels.back().name, "SY0");
  EXPECT_EQ(m.channels.back().acquired_index, 768);
  expect_site(m, 0, 27, 0);
  expect_site(m, 1, 59, 0);
  expect_site(m, 2, 11, 20);
  expect_site(m, 3, 43, 20);
  expect_site(m, 383, 43, 3820);
  EXPECT_EQ(m.geometry.sites[383].electrode, 383);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[0], kNp1ApUv);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[0], 2.34375);
  EXPECT_EQ(m.save_subset.size(), 385u);
}

TEST(SpikeGlxMeta, Phase3ALfUsesLfGainAndImroPositions) {
  const SpikeGlxMeta m = load("ibl__sample3A_g0_t0.imec.lf.meta");
  EXPECT_DOUBLE_EQ(m.sample_rate_hz, 2500.0);
  expect_counts(m, 385, 0, 384, 1);
  EXPECT_EQ(m.channels[0].name, "LF0");
  EXPECT_EQ(m.channels[0].acquired_index, 384);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[0], kNp1LfUv);
  expect_site(m, 0, 27, 0);
  expect_site(m, 3, 43, 20);
}

TEST(SpikeGlxMeta, Phase3BApHasCalibratedRate) {
  const SpikeGlxMeta m = load("ibl__sample3B_g0_t0.imec1.ap.meta");
  EXPECT_DOUBLE_EQ(m.sample_rate_hz, 30000.390639481);
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_TRUE(m.probe_type_present);
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp1);
  expect_site(m, 0, 27, 0);
  expect_site(m, 10, 11, 100);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[100], kNp1ApUv);
  const ProbeInfo info = m.to_probe_info();
  EXPECT_EQ(info.name, "imec1");
  EXPECT_EQ(info.stored_channels, 385u);
  EXPECT_EQ(info.neural_channels, 384u);
  EXPECT_TRUE(info.has_sync_word);
  EXPECT_DOUBLE_EQ(info.sample_rate_hz, 30000.390639481);
  EXPECT_DOUBLE_EQ(info.microvolts_per_bit, kNp1ApUv);
  EXPECT_EQ(info.geometry.channel_count(), 384u);
}

TEST(SpikeGlxMeta, Phase3BLfHasCalibratedRate) {
  const SpikeGlxMeta m = load("ibl__sample3B_g0_t0.imec1.lf.meta");
  EXPECT_DOUBLE_EQ(m.sample_rate_hz, 2500.0325532900833);
  expect_counts(m, 385, 0, 384, 1);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[383], kNp1LfUv);
  EXPECT_EQ(m.first_sample, 144834);
}

TEST(SpikeGlxMeta, GeomMapVersion2023) {
  const SpikeGlxMeta m = load("ibl__sample3B_version202304.ap.meta");
  EXPECT_DOUBLE_EQ(m.sample_rate_hz, 30000.0);
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_EQ(m.geometry.model, "PRB_1_4_0480_1_C");
  EXPECT_EQ(m.probe_part_number, "PRB_1_4_0480_1_C");
  expect_site(m, 0, 27, 0);
  expect_site(m, 1, 59, 0);
  expect_site(m, 2, 11, 20);
  expect_site(m, 3, 43, 20);
  EXPECT_EQ(m.file_size_bytes, 97115700220u);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[5], kNp1ApUv);
}

TEST(SpikeGlxMeta, GeomMapAndShankMapAgreeForNp1) {
  const SpikeGlxMeta geom = load("ibl__sample3B_version202304.ap.meta");
  const SpikeGlxMeta shank = load("ibl__sample3B_g0_t0.imec1.ap.meta");
  ASSERT_EQ(geom.geometry.sites.size(), shank.geometry.sites.size());
  for (std::size_t i = 0; i < geom.geometry.sites.size(); ++i) {
    EXPECT_DOUBLE_EQ(geom.geometry.sites[i].x_um, shank.geometry.sites[i].x_um) << i;
    EXPECT_DOUBLE_EQ(geom.geometry.sites[i].z_um, shank.geometry.sites[i].z_um) << i;
  }
  // And both are neuropixels1_geometry() shifted 11 µm (SpikeGLX measures x from the shank edge).
  const ProbeGeometry np1 = neuropixels1_geometry();
  for (std::size_t i = 0; i < 384; ++i) {
    EXPECT_DOUBLE_EQ(geom.geometry.sites[i].x_um, np1.sites[i].x_um + 11.0) << i;
    EXPECT_DOUBLE_EQ(geom.geometry.sites[i].z_um, np1.sites[i].z_um) << i;
  }
}

TEST(SpikeGlxMeta, Np21SingleShankFixedGain) {
  const SpikeGlxMeta m = load("ibl__sampleNP2.1_g0_t0.imec.ap.meta");
  EXPECT_EQ(m.probe_type, 21);
  EXPECT_EQ(m.max_int, 8192);
  EXPECT_DOUBLE_EQ(m.ai_range_max, 0.5);
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp2SingleShank);
  EXPECT_EQ(m.imro->entries[5].electrode, 5);
  EXPECT_EQ(m.channels[384].acquired_index, 384);  // snsSaveChanSubset=0:384
  expect_site(m, 0, 27, 0);
  expect_site(m, 1, 59, 0);
  expect_site(m, 2, 27, 15);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[0], kNp2Uv);
  EXPECT_EQ(m.to_probe_info().name, "imec0");  // from fileName=...p1_g0_t0.imec0.ap.bin
}

TEST(SpikeGlxMeta, Uhd1110UniqueHeader) {
  const SpikeGlxMeta m = load("probeinterface__NP1110_bank0_g0_t0.imec0.ap.meta");
  EXPECT_EQ(m.probe_type, 1110);
  ASSERT_TRUE(m.imro.has_value());
  EXPECT_EQ(m.imro->layout, ImroLayout::kUhd1110);
  EXPECT_EQ(m.imro->uhd_groups.size(), 24u);
  EXPECT_EQ(m.imro->uhd_ap_gain, 500);
  EXPECT_EQ(m.imro->uhd_lf_gain, 250);
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_EQ(m.channels[1].display_order, 63);
  EXPECT_EQ(m.geometry.model, "NP1110");
  expect_site(m, 0, 15.5, 0);
  expect_site(m, 1, 57.5, 42);
  expect_site(m, 2, 21.5, 0);
  expect_site(m, 383, 39.5, 240);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[10], kNp1ApUv);
}

TEST(SpikeGlxMeta, SavedChannelSubset) {
  const SpikeGlxMeta m = load("probeinterface__NP1_saved_only_subset_of_channels.meta");
  expect_counts(m, 152, 151, 0, 1);
  ASSERT_EQ(m.save_subset.size(), 152u);
  EXPECT_EQ(m.save_subset[150], 150);
  EXPECT_EQ(m.save_subset[151], 768);
  for (std::size_t i = 0; i < 151; ++i) {
    EXPECT_EQ(m.channels[i].name, "AP" + std::to_string(i));
    EXPECT_EQ(m.channels[i].acquired_index, static_cast<int>(i));
  }
  EXPECT_EQ(m.channels[151].name, "SY0");
  EXPECT_EQ(m.channels[151].acquired_index, 768);
  expect_site(m, 150, 11, 1500);  // electrode 150: row 75 (odd), column 0
  const ProbeInfo info = m.to_probe_info();
  EXPECT_EQ(info.stored_channels, 152u);
  EXPECT_EQ(info.neural_channels, 151u);
  EXPECT_EQ(m.sample_count(), 98746460736u / (2u * 152u));
}

TEST(SpikeGlxMeta, Np24FourShanks) {
  const SpikeGlxMeta m = load("probeinterface__NP2_4_shanks.imec0.ap.meta");
  EXPECT_EQ(m.probe_type, 24);
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp2MultiShank);
  expect_counts(m, 385, 384, 0, 1);
  expect_site(m, 0, 27, 0, 0);
  expect_site(m, 96, 27, 360, 0);
  expect_site(m, 200, 27, 60, 2);
  expect_site(m, 383, 59, 705, 3);
  EXPECT_EQ(m.geometry.sites[200].electrode, 8);
  EXPECT_EQ(m.geometry.sites[383].electrode, 95);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[383], kNp2Uv);
  EXPECT_TRUE(std::isinf(m.geometry.distance_um(0, 383)));
}

TEST(SpikeGlxMeta, NoiseFileReadsImroGains) {
  const SpikeGlxMeta m = load("probeinterface__Noise_g0_t0.imec0.ap.meta");
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_EQ(m.imro->entries[7].ap_gain, 500);
  EXPECT_EQ(m.imro->entries[7].lf_gain, 125);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[7], kNp1ApUv);
  EXPECT_EQ(m.first_sample, 177385);
  EXPECT_EQ(m.file_size_bytes, 121625350u);
  EXPECT_EQ(m.to_probe_info().name, "imec0");
  // Raw map keeps '~' keys and every plain key.
  ASSERT_NE(m.find("~imroTbl"), nullptr);
  ASSERT_NE(m.find("imRoFile"), nullptr);
  EXPECT_EQ(*m.find("syncSourcePeriod"), "1");
}

TEST(SpikeGlxMeta, NonHumanPrimateStaggered) {
  const SpikeGlxMeta m = load("probeinterface__non_human_primate_long_staggered.imec0.ap.meta");
  EXPECT_EQ(m.probe_type, 1030);
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp1);
  expect_counts(m, 385, 384, 0, 1);
  expect_site(m, 0, 27, 0);
  expect_site(m, 1, 27 + 87, 0);
  expect_site(m, 2, 11, 20);
  expect_site(m, 383, 11 + 87, 3820);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[0], kNp1ApUv);
}

TEST(SpikeGlxMeta, Phase3AProbeinterfaceFile) {
  const SpikeGlxMeta m = load("probeinterface__phase3a.imec.ap.meta");
  expect_counts(m, 385, 384, 0, 1);
  EXPECT_EQ(m.imro->layout, ImroLayout::kNp1Phase3A);
  EXPECT_EQ(m.first_sample, 174660732);
  expect_site(m, 4, 27, 40);
  EXPECT_DOUBLE_EQ(m.microvolts_per_bit[383], kNp1ApUv);
}

TEST(SpikeGlxMeta, AllTwelveFilesParse) {
  std::size_t parsed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(
           std::filesystem::path(TWINLOOP_SHARED_DATA) / "spikeglx_meta")) {
    if (entry.path().extension() != ".meta") continue;
    SCOPED_TRACE(entry.path().string());
    const SpikeGlxMeta m = parse_spikeglx_meta(entry.path());
    EXPECT_GT(m.sample_rate_hz, 0.0);
    EXPECT_EQ(m.geometry.channel_count(), m.neural_channels());
    // fileTimeSecs agrees with the size and rate (checked in PROVENANCE.md too).
    const double secs =
        static_cast<double>(m.file_size_bytes) / 2.0 / m.saved_channels / m.sample_rate_hz;
    EXPECT_NEAR(secs, m.file_time_secs, m.file_time_secs * 1e-3);
    ++parsed;
  }
  EXPECT_EQ(parsed, 12u);
}

// ---- error paths ------------------------------------------------------------------------------

std::string noise_text() {
  return read_text(real_meta("probeinterface__Noise_g0_t0.imec0.ap.meta"));
}

/// "bad.meta:<line of key>:" (built with append: GCC 12 -Wrestrict misfires on literal + string).
std::string at_line(const std::string& text, const std::string& key) {
  std::string out = "bad.meta:";
  out += std::to_string(line_of(text, key));
  out += ':';
  return out;
}

std::string error_of(const std::string& text) {
  try {
    (void)parse_spikeglx_meta_text(text, "bad.meta");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(SpikeGlxMetaErrors, MissingRequiredKey) {
  std::string text = noise_text();
  const std::size_t at = text.find("nSavedChans=");
  text.erase(at, text.find('\n', at) - at + 1);
  const std::string message = error_of(text);
  EXPECT_NE(message.find("bad.meta"), std::string::npos) << message;
  EXPECT_NE(message.find("missing required key 'nSavedChans'"), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, BadImroEntryNamesLineAndEntry) {
  std::string text = noise_text();
  const std::size_t at = text.find("(5 0 0 500 125 1)");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 17, "(5 0 0 500)");
  const std::string message = error_of(text);
  const std::string where = at_line(text, "~imroTbl");
  EXPECT_EQ(message.rfind(where, 0), 0u) << message;
  EXPECT_NE(message.find("~imroTbl"), std::string::npos) << message;
  EXPECT_NE(message.find("(5 0 0 500)"), std::string::npos) << message;
  EXPECT_NE(message.find("expected 6 fields"), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, NonNumericImroField) {
  std::string text = noise_text();
  const std::size_t at = text.find("(9 0 0 500 125 1)");
  text.replace(at, 17, "(9 0 x 500 125 1)");
  const std::string message = error_of(text);
  EXPECT_NE(message.find("'x' is not an integer"), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, NSavedChansDisagreesWithChanMap) {
  const std::string text = set_key(noise_text(), "nSavedChans", "384");
  const std::string message = error_of(text);
  const std::string where = at_line(text, "~snsChanMap");
  EXPECT_EQ(message.rfind(where, 0), 0u) << message;
  EXPECT_NE(message.find("385 saved channels but nSavedChans=384"), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, SnsApLfSyDisagrees) {
  const std::string text = set_key(noise_text(), "snsApLfSy", "383,0,2");
  const std::string message = error_of(text);
  EXPECT_EQ(message.rfind(at_line(text, "snsApLfSy"), 0), 0u) << message;
}

TEST(SpikeGlxMetaErrors, MalformedLineAndBadNumber) {
  EXPECT_NE(error_of("typeThis=imec\nthis line has no equals\n").find("bad.meta:2:"),
            std::string::npos);
  const std::string text = set_key(noise_text(), "imSampRate", "fast");
  const std::string message = error_of(text);
  EXPECT_NE(message.find(at_line(text, "imSampRate")), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, ShankMapCountMismatch) {
  std::string text = noise_text();
  const std::size_t at = text.find("(0:1:191:1)");
  ASSERT_NE(at, std::string::npos);
  text.erase(at, 11);
  const std::string message = error_of(text);
  EXPECT_NE(message.find(at_line(text, "~snsShankMap").substr(8) + " ~snsShankMap"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("383 entries"), std::string::npos) << message;
}

TEST(SpikeGlxMetaErrors, UnreadableFileNamesPath) {
  try {
    (void)parse_spikeglx_meta("/nonexistent/dir/x.ap.meta");
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x.ap.meta"), std::string::npos);
  }
}

}  // namespace
}  // namespace twinloop::drivers

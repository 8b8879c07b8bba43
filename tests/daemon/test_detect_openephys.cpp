// `twinloop detect` over an Open Ephys binary recording, end to end: the real 16-channel
// plugin-GUI sample (../shared/data/openephys_16ch_hippocampus), run as a user would.
//
// The recording is LFP-dominated and its 16 channels are one channel repeated (PROVENANCE.md), so
// the spike count is not asserted: what is checked is that every sample went through, at the
// oebin's rate and channel count, and that the Phy-layout files came out readable.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "daemon_test_support.hpp"
#include "twinloop/drivers/npy.hpp"

namespace {

namespace fs = std::filesystem;
using twinloop::test_support::fresh_temp_dir;
using twinloop::test_support::shell;
using twinloop::test_support::ShellResult;

const fs::path kRecording = fs::path(TWINLOOP_SHARED_DATA) / "openephys_16ch_hippocampus";
const fs::path kDat = kRecording / "continuous" / "data_stream_16ch_hippocampus" / "continuous.dat";

ShellResult detect(const std::string& arguments) {
  return shell(std::string(TWINLOOP_BINARY) + " detect " + arguments);
}

TEST(DetectOpenEphys, RealRecordingRunsOverEverySampleAndWritesPhyLayout) {
  const fs::path out = fresh_temp_dir("detect_oe") / "det";
  const ShellResult r =
      detect((kRecording / "structure.oebin").string() + " --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;

  // Frames from the file size: 16 int16 channels each.
  const std::uint64_t samples = fs::file_size(kDat) / (16 * 2);
  EXPECT_NE(r.output.find("16 channels, 16 of them electrode sites, at 40000 Hz"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("read " + std::to_string(samples) + " of " + std::to_string(samples) +
                          " samples"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("from sample 1;"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("16-channel recording"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("real time"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;

  for (const char* file : {"spike_times.npy", "spike_clusters.npy", "amplitudes.npy",
                           "channel_positions.npy", "channel_map.npy", "cluster_info.tsv"}) {
    EXPECT_TRUE(fs::is_regular_file(out / file)) << file;
  }
  const auto times = twinloop::drivers::read_npy_int64(out / "spike_times.npy");
  const auto clusters = twinloop::drivers::read_npy_int64(out / "spike_clusters.npy");
  ASSERT_EQ(times.size(), clusters.size());
  for (std::size_t i = 0; i < times.size(); ++i) {
    EXPECT_GE(times[i], 1);  // the first sample number in timestamps.npy
    EXPECT_LE(times[i], static_cast<std::int64_t>(samples));
    EXPECT_GE(clusters[i], 0);
    EXPECT_LT(clusters[i], 16);
  }
  twinloop::drivers::NpyArray header;
  const auto positions = twinloop::drivers::read_npy_double(out / "channel_positions.npy", &header);
  EXPECT_EQ(header.shape, (std::vector<std::size_t>{16, 2}));
  const auto channel_map = twinloop::drivers::read_npy_int64(out / "channel_map.npy");
  EXPECT_EQ(channel_map.size(), 16u);
  std::ifstream tsv(out / "cluster_info.tsv");
  std::string line;
  int lines = 0;
  while (std::getline(tsv, line)) ++lines;
  // Header + one row per cluster (detection channel) that has spikes.
  const std::set<std::int64_t> distinct(clusters.begin(), clusters.end());
  EXPECT_EQ(lines, 1 + static_cast<int>(distinct.size()));
  fs::remove_all(out.parent_path());
}

TEST(DetectOpenEphys, FolderAndContinuousDatPathsWorkToo) {
  const fs::path dir = fresh_temp_dir("detect_oe_paths");
  for (const fs::path& path : {kRecording, kDat}) {
    const ShellResult r = detect(path.string() + " --quiet --out " + (dir / "det").string());
    ASSERT_EQ(r.status, 0) << path << "\n" << r.output;
    EXPECT_NE(r.output.find("data_stream_16ch_hippocampus"), std::string::npos) << r.output;
  }
  fs::remove_all(dir);
}

TEST(DetectOpenEphys, BadOebinIsRefusedNamingFileAndField) {
  const fs::path dir = fresh_temp_dir("detect_oe_bad");
  {
    std::ofstream oebin(dir / "structure.oebin");
    oebin << R"({"continuous": [{"folder_name": "x/", "sample_rate": 30000, "channels": []}]})";
  }
  const ShellResult r = detect(dir.string() + " --quiet --out " + (dir / "det").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find((dir / "structure.oebin").string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("continuous[0].num_channels: missing"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "det" / "spike_times.npy"));
  fs::remove_all(dir);
}

}  // namespace

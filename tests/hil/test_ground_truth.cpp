// Ground-truth files: Phy / Kilosort layout, readable with the project's npy reader, consistent
// with the in-memory ground truth.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "hil_test_helpers.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/hil/ground_truth.hpp"

namespace twinloop::hil {
namespace {

std::vector<std::vector<std::string>> read_tsv(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, '\t')) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

TEST(GroundTruth, WritesPhyFilesConsistentWithMemory) {
  auto rig = make_simulated_rig(testing::fast_config(3.0));
  ASSERT_TRUE(rig.probe->start());
  const std::vector<protocols::Stimulus> stimuli(3, testing::grating(90.0, 0.5));
  (void)testing::present(rig, stimuli, 3000, 15000);
  (void)testing::read_all(*rig.probe);
  const auto truth = rig.subject->ground_truth();
  const auto dir = std::filesystem::temp_directory_path() / "twinloop_hil_ground_truth_test";
  std::filesystem::remove_all(dir);
  rig.subject->write_ground_truth(dir);

  const auto times = drivers::read_npy_int64(dir / "spike_times.npy");
  const auto clusters = drivers::read_npy_int64(dir / "spike_clusters.npy");
  ASSERT_EQ(times.size(), truth.spikes.size());
  ASSERT_EQ(clusters.size(), times.size());
  EXPECT_TRUE(std::is_sorted(times.begin(), times.end()));
  EXPECT_GE(times.front(), 0);
  EXPECT_LT(times.back(), 90000);
  std::vector<std::size_t> per_unit(truth.units.size(), 0);
  for (auto c : clusters) {
    ASSERT_GE(c, 0);
    ASSERT_LT(std::size_t(c), truth.units.size());
    ++per_unit[std::size_t(c)];
  }

  const auto info = read_tsv(dir / "cluster_info.tsv");
  ASSERT_EQ(info.size(), truth.units.size() + 1);
  const auto& header = info[0];
  auto column = [&](const std::string& name) {
    const auto it = std::find(header.begin(), header.end(), name);
    EXPECT_NE(it, header.end()) << name;
    return std::size_t(it - header.begin());
  };
  const auto id_col = column("cluster_id"), ch_col = column("ch"), depth_col = column("depth"),
             n_col = column("n_spikes");
  for (const char* name : {"x", "snr", "amplitude_uv", "model", "firing_rate_hz"}) column(name);
  for (std::size_t r = 1; r < info.size(); ++r) {
    const auto& u = truth.units[r - 1];
    ASSERT_EQ(info[r].size(), header.size());
    EXPECT_EQ(std::stoul(info[r][id_col]), u.id);
    EXPECT_EQ(std::stoul(info[r][ch_col]), u.peak_channel);
    EXPECT_NEAR(std::stod(info[r][depth_col]), u.z_um, 1e-6);
    EXPECT_EQ(std::stoul(info[r][n_col]), per_unit[u.id]);
  }
  EXPECT_EQ(read_tsv(dir / "units.tsv").size(), truth.units.size() + 1);
  EXPECT_EQ(read_tsv(dir / "trials.tsv").size(), 4u);
  drivers::NpyArray header_2d;
  const auto waves = drivers::read_npy_double(dir / "unit_waveforms.npy", &header_2d);
  ASSERT_EQ(header_2d.shape.size(), 2u);
  EXPECT_EQ(header_2d.shape[0], truth.units.size());
  EXPECT_EQ(header_2d.shape[1], kTemplateSamples);
  EXPECT_DOUBLE_EQ(waves[kTroughIndex], double(truth.units[0].waveform[kTroughIndex]));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace twinloop::hil

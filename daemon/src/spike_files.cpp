#include "twinloop/daemon/spike_files.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#include "twinloop/drivers/npy.hpp"

namespace twinloop::daemon {

void write_detected_spikes(const std::filesystem::path& dir,
                           std::span<const acquisition::SpikeEvent> events,
                           const drivers::ProbeGeometry& geometry, std::span<const double> noise_uv,
                           double duration_s) {
  std::filesystem::create_directories(dir);
  std::vector<std::int64_t> times(events.size());
  std::vector<std::int32_t> clusters(events.size());
  std::vector<float> amplitudes(events.size());
  std::vector<std::uint64_t> per_channel(geometry.channel_count(), 0);
  for (std::size_t i = 0; i < events.size(); ++i) {
    times[i] = events[i].sample;
    clusters[i] = static_cast<std::int32_t>(events[i].channel);
    amplitudes[i] = events[i].amplitude_uv;
    if (events[i].channel < per_channel.size()) ++per_channel[events[i].channel];
  }
  drivers::write_npy(dir / "spike_times.npy", std::span<const std::int64_t>(times));
  drivers::write_npy(dir / "spike_clusters.npy", std::span<const std::int32_t>(clusters));
  drivers::write_npy(dir / "amplitudes.npy", std::span<const float>(amplitudes));
  std::vector<float> positions;
  std::vector<std::int32_t> channel_map;
  for (std::size_t c = 0; c < geometry.channel_count(); ++c) {
    positions.push_back(static_cast<float>(geometry.sites[c].x_um));
    positions.push_back(static_cast<float>(geometry.sites[c].z_um));
    channel_map.push_back(static_cast<std::int32_t>(c));
  }
  if (!positions.empty()) {
    drivers::write_npy_2d(dir / "channel_positions.npy", positions, geometry.channel_count());
  }
  drivers::write_npy(dir / "channel_map.npy", std::span<const std::int32_t>(channel_map));

  std::ofstream tsv(dir / "cluster_info.tsv");
  tsv << "cluster_id\tch\tdepth\tx\tn_spikes\tfiring_rate_hz\tnoise_uv\n";
  for (std::size_t c = 0; c < geometry.channel_count(); ++c) {
    if (per_channel[c] == 0) continue;
    tsv << c << '\t' << c << '\t' << geometry.sites[c].z_um << '\t' << geometry.sites[c].x_um
        << '\t' << per_channel[c] << '\t'
        << (duration_s > 0 ? static_cast<double>(per_channel[c]) / duration_s : 0.0) << '\t'
        << (c < noise_uv.size() ? noise_uv[c] : 0.0) << '\n';
  }
  if (!tsv) throw std::runtime_error((dir / "cluster_info.tsv").string() + ": write failed");
}

GroundTruthFiles read_ground_truth(const std::filesystem::path& dir) {
  const auto times = drivers::read_npy_int64(dir / "spike_times.npy");
  const auto clusters = drivers::read_npy_int64(dir / "spike_clusters.npy");
  if (times.size() != clusters.size()) {
    throw std::runtime_error((dir / "spike_clusters.npy").string() + ": " +
                             std::to_string(clusters.size()) +
                             " entries, but spike_times.npy has " + std::to_string(times.size()));
  }
  const auto info_path = dir / "cluster_info.tsv";
  std::ifstream info(info_path);
  if (!info) throw std::runtime_error(info_path.string() + ": cannot open");
  std::string line;
  std::getline(info, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, '\t');) header.push_back(cell);
  }
  auto column = [&](const std::string& name) {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) {
      throw std::runtime_error(info_path.string() + ":1: no '" + name + "' column");
    }
    return static_cast<std::size_t>(it - header.begin());
  };
  const std::size_t id_col = column("cluster_id"), ch_col = column("ch"), snr_col = column("snr");
  GroundTruthFiles truth;
  std::map<std::int64_t, std::int32_t> index_of;
  int line_number = 1;
  while (std::getline(info, line)) {
    ++line_number;
    if (line.empty()) continue;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, '\t');) cells.push_back(cell);
    try {
      const int id = std::stoi(cells.at(id_col));
      acquisition::TruthUnit unit;
      unit.peak_channel = static_cast<std::uint32_t>(std::stoul(cells.at(ch_col)));
      unit.snr = std::stod(cells.at(snr_col));
      index_of[id] = static_cast<std::int32_t>(truth.units.size());
      truth.units.push_back(unit);
      truth.cluster_ids.push_back(id);
    } catch (const std::exception&) {
      throw std::runtime_error(info_path.string() + ":" + std::to_string(line_number) +
                               ": malformed row '" + line + "'");
    }
  }
  truth.spikes.reserve(times.size());
  for (std::size_t i = 0; i < times.size(); ++i) {
    const auto it = index_of.find(clusters[i]);
    if (it == index_of.end()) {
      throw std::runtime_error((dir / "spike_clusters.npy").string() + ": cluster " +
                               std::to_string(clusters[i]) + " is not in cluster_info.tsv");
    }
    truth.spikes.push_back({times[i], it->second});
  }
  std::sort(truth.spikes.begin(), truth.spikes.end(),
            [](const auto& a, const auto& b) { return a.sample < b.sample; });
  return truth;
}

}  // namespace twinloop::daemon

#include "twinloop/hil/ground_truth.hpp"

#include <algorithm>
#include <fstream>
#include <numeric>
#include <stdexcept>

#include "twinloop/drivers/npy.hpp"

namespace twinloop::hil {
namespace {

std::ofstream open_text(const std::filesystem::path& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out.precision(10);
  return out;
}

void close_text(std::ofstream& out, const std::filesystem::path& path) {
  out.close();
  if (!out) throw std::runtime_error("error writing " + path.string());
}

}  // namespace

std::size_t GroundTruth::count_spikes(std::uint32_t unit, std::int64_t begin,
                                      std::int64_t end) const noexcept {
  return static_cast<std::size_t>(std::count_if(spikes.begin(), spikes.end(), [&](const auto& s) {
    return s.unit == unit && s.sample >= begin && s.sample < end;
  }));
}

void write_ground_truth(const GroundTruth& truth, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());

  // Phy wants one global time order; ties broken by unit so the file is deterministic.
  std::vector<std::size_t> order(truth.spikes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& sa = truth.spikes[a];
    const auto& sb = truth.spikes[b];
    return sa.sample != sb.sample ? sa.sample < sb.sample : sa.unit < sb.unit;
  });
  std::vector<std::int64_t> times(order.size());
  std::vector<std::int32_t> clusters(order.size());
  std::vector<std::size_t> counts(truth.units.size(), 0);
  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto& s = truth.spikes[order[i]];
    times[i] = s.sample;
    clusters[i] = static_cast<std::int32_t>(s.unit);
    if (s.unit < counts.size()) ++counts[s.unit];
  }
  drivers::write_npy(dir / "spike_times.npy", std::span<const std::int64_t>(times));
  drivers::write_npy(dir / "spike_clusters.npy", std::span<const std::int32_t>(clusters));

  const double seconds = truth.sample_rate_hz > 0.0
                             ? static_cast<double>(truth.samples_generated) / truth.sample_rate_hz
                             : 0.0;
  {
    const auto path = dir / "cluster_info.tsv";
    auto out = open_text(path);
    out << "cluster_id\tch\tdepth\tx\tsnr\tamplitude_uv\tmodel\tfiring_rate_hz\tn_spikes\tgroup\n";
    for (const auto& u : truth.units) {
      const double rate = seconds > 0.0 ? static_cast<double>(counts[u.id]) / seconds : 0.0;
      out << u.id << '\t' << u.peak_channel << '\t' << u.z_um << '\t' << u.x_um << '\t' << u.snr
          << '\t' << u.peak_amplitude_uv << '\t' << to_string(u.response.kind) << '\t' << rate
          << '\t' << counts[u.id] << "\tgood\n";
    }
    close_text(out, path);
  }
  {
    const auto path = dir / "units.tsv";
    auto out = open_text(path);
    out << "cluster_id\tmodel\tx_um\tz_um\tplane_distance_um\tpeak_channel\tpeak_distance_um"
           "\tamplitude0_uv\tspatial_decay_um\tpeak_amplitude_uv\tnoise_uv\tsnr\ttrough_width_ms"
           "\trepolarisation_ratio\tbaseline_hz\tlatency_ms\tpreferred_deg\tkappa"
           "\tpeak_evoked_hz\tc50\tnr_exponent\tsecond_preferred_deg\tsecond_kappa"
           "\tsecond_peak_evoked_hz\tadaptation_tau_s\tadaptation_strength\tgain_shape"
           "\tpreferred_sf_cpd\tsf_sigma_octaves\n";
    for (const auto& u : truth.units) {
      const auto& r = u.response;
      out << u.id << '\t' << to_string(r.kind) << '\t' << u.x_um << '\t' << u.z_um << '\t'
          << u.plane_distance_um << '\t' << u.peak_channel << '\t' << u.peak_distance_um << '\t'
          << u.amplitude0_uv << '\t' << u.spatial_decay_um << '\t' << u.peak_amplitude_uv << '\t'
          << u.noise_uv << '\t' << u.snr << '\t' << u.trough_width_ms << '\t'
          << u.repolarisation_ratio << '\t' << r.baseline_hz << '\t' << r.latency_ms << '\t'
          << r.preferred_deg << '\t' << r.kappa << '\t' << r.peak_evoked_hz << '\t' << r.c50 << '\t'
          << r.nr_exponent << '\t' << r.second_preferred_deg << '\t' << r.second_kappa << '\t'
          << r.second_peak_evoked_hz << '\t' << r.adaptation_tau_s << '\t' << r.adaptation_strength
          << '\t' << r.gain_shape << '\t' << r.preferred_sf_cpd << '\t' << r.sf_sigma_octaves
          << '\n';
    }
    close_text(out, path);
  }
  {
    const auto path = dir / "trials.tsv";
    auto out = open_text(path);
    out << "trial\tonset_sample\tduration_samples\tlate\tcandidate\tvalues\n";
    for (const auto& t : truth.trials) {
      out << t.trial << '\t' << t.onset_sample << '\t' << t.duration_samples << '\t'
          << (t.late ? 1 : 0) << '\t' << t.stimulus.candidate << '\t';
      for (std::size_t d = 0; d < t.stimulus.dimension_count; ++d) {
        out << (d ? "," : "") << t.stimulus.values[d];
      }
      out << '\n';
    }
    close_text(out, path);
  }
  std::vector<float> waveforms;
  waveforms.reserve(truth.units.size() * kTemplateSamples);
  for (const auto& u : truth.units)
    waveforms.insert(waveforms.end(), u.waveform.begin(), u.waveform.end());
  if (!truth.units.empty()) {
    drivers::write_npy_2d(dir / "unit_waveforms.npy", std::span<const float>(waveforms),
                          truth.units.size());
  }
  if (!truth.trial_rates_hz.empty()) {
    drivers::write_npy_2d(dir / "trial_rates_hz.npy", std::span<const float>(truth.trial_rates_hz),
                          truth.trials.size());
  }
}

}  // namespace twinloop::hil

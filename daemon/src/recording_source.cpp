#include "src/recording_source.hpp"

#include <cstdio>

namespace twinloop::daemon::internal {

RecordingSource::RecordingSource(const std::filesystem::path& recording,
                                 const RecordingSourceOptions& options) {
  if (drivers::is_openephys_recording(recording)) {
    drivers::OpenEphysBinarySourceConfig config;
    config.recording = recording;
    config.block_samples = options.block_samples;
    config.pace = options.pace;
    config.probeinterface = options.probeinterface;
    config.geometry = options.geometry;
    oebin_ = std::make_unique<drivers::OpenEphysBinarySource>(std::move(config));
  } else {
    drivers::SpikeGlxFileSourceConfig config;
    config.bin_path = recording;
    config.block_samples = options.block_samples;
    config.pace = options.pace;
    spikeglx_ = std::make_unique<drivers::SpikeGlxFileSource>(std::move(config));
  }
}

drivers::ProbeSource& RecordingSource::source() noexcept {
  if (oebin_) return *oebin_;
  return *spikeglx_;
}

std::uint64_t RecordingSource::total_samples() const noexcept {
  return oebin_ ? oebin_->total_samples() : spikeglx_->total_samples();
}

std::int64_t RecordingSource::first_sample() const noexcept {
  return oebin_ ? oebin_->first_sample() : spikeglx_->meta().first_sample;
}

const std::vector<std::string>& RecordingSource::warnings() const noexcept {
  return oebin_ ? oebin_->warnings() : spikeglx_->warnings();
}

std::string RecordingSource::describe() const {
  const drivers::ProbeInfo& info = oebin_ ? oebin_->info() : spikeglx_->info();
  char line[1024];
  if (oebin_) {
    std::snprintf(line, sizeof line,
                  "Open Ephys stream '%s' (continuous[%zu] of %s): %zu channels, %zu of them "
                  "electrode sites, at %.10g Hz, %llu samples from sample %lld; geometry: %s",
                  oebin_->stream().folder().c_str(), oebin_->stream().index,
                  oebin_->structure().source.c_str(), info.stored_channels, info.neural_channels,
                  info.sample_rate_hz, static_cast<unsigned long long>(total_samples()),
                  static_cast<long long>(first_sample()), oebin_->geometry_source().c_str());
  } else {
    std::snprintf(line, sizeof line,
                  "SpikeGLX stream '%s': %zu channels, %zu of them electrode sites, at %.10g Hz, "
                  "%llu samples from sample %lld; geometry: %s",
                  info.name.c_str(), info.stored_channels, info.neural_channels,
                  info.sample_rate_hz, static_cast<unsigned long long>(total_samples()),
                  static_cast<long long>(first_sample()), info.geometry.model.c_str());
  }
  return line;
}

}  // namespace twinloop::daemon::internal

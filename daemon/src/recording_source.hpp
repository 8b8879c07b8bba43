// Internal: a recorded probe stream opened as a ProbeSource, whichever format its path names, for
// the commands that run recordings through the acquisition path (`detect`, `replay`).
//
// An Open Ephys binary recording (structure.oebin, the folder holding it, or a stream's
// continuous.dat) or else a SpikeGLX .bin with its .meta beside it. The format's own facts
// (total rows, first sample number, warnings, a one-line description) are valid once the source
// has started (the acquisition loop starts it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "twinloop/drivers/openephys_binary_source.hpp"
#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/drivers/probe_source.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::daemon::internal {

struct RecordingSourceOptions {
  std::size_t block_samples = 3000;
  drivers::Pace pace = drivers::Pace::kMax;
  /// Open Ephys only (SpikeGLX metadata carries its geometry): a probeinterface JSON, or sites
  /// already known, instead of the default linear layout. At most one of the two.
  std::filesystem::path probeinterface;
  std::optional<drivers::ProbeGeometry> geometry;
};

class RecordingSource {
 public:
  RecordingSource(const std::filesystem::path& recording, const RecordingSourceOptions& options);

  [[nodiscard]] drivers::ProbeSource& source() noexcept;
  [[nodiscard]] bool openephys() const noexcept { return oebin_ != nullptr; }
  /// Valid after the source started.
  [[nodiscard]] std::uint64_t total_samples() const noexcept;
  [[nodiscard]] std::int64_t first_sample() const noexcept;
  [[nodiscard]] const std::vector<std::string>& warnings() const noexcept;
  /// One line: format, stream, channels, rate, samples, first sample number, geometry.
  [[nodiscard]] std::string describe() const;

 private:
  std::unique_ptr<drivers::SpikeGlxFileSource> spikeglx_;
  std::unique_ptr<drivers::OpenEphysBinarySource> oebin_;
};

}  // namespace twinloop::daemon::internal

// Open Ephys GUI "Binary" recordings: the structure.oebin parser and a ProbeSource that replays one
// continuous stream of a recording.
//
// A recording folder holds `structure.oebin` (JSON: one entry per continuous stream with its
// folder_name, sample_rate, num_channels and per-channel bit_volts / units) and, per stream,
// `continuous/<folder_name>/continuous.dat`: headerless little-endian int16, sample-major
// (`ch1_s1, ch2_s1, ... chN_s1, ch1_s2, ...`), N from the oebin (the .dat is not
// self-describing). Beside it `sample_numbers.npy` (GUI >= 0.6, int64 sample indices) or, in older
// recordings, `timestamps.npy` (int64 sample indices; in >= 0.6 that name holds float64 seconds).
// Format facts: ../shared/data/FORMATS.md §2, after the Open Ephys GUI documentation
// (open-ephys/gui-docs, User-Manual/Recording-data/Binary-format.rst).
//
// parse_openephys_structure() throws std::runtime_error "path: field: what" (or "path:line:
// malformed JSON: ..." for text that is not JSON), the way the SpikeGLX .meta and probeinterface
// parsers do. OpenEphysBinarySource::start() reports the same messages through last_error().
//
// Example:
//   OpenEphysBinarySource source({.recording = "Record Node 101/experiment1/recording1"});
//   if (!source.start()) std::fprintf(stderr, "%s\n", source.last_error().c_str());
//
// Thread safety: the free functions and the structs are plain values (no shared state). The source
// owns an open file: use it from one thread at a time; neither copyable nor movable (ProbeSource).
// read() is real-time safe after start().
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers {

/// One channel of a continuous stream, from `continuous[i].channels[j]`.
struct OpenEphysChannel {
  std::string name;        ///< channel_name ("CH0"); empty when absent
  double bit_volts = 0.0;  ///< physical value of one int16 step, in `units`
  std::string units;       ///< "uV" for headstage channels, "V"/"mV" for ADC/AUX; empty if absent
  /// channel_metadata entry "electrode_index" (Neuropixels plugin, GUI >= 0.6); -1 when absent.
  int electrode_index = -1;

  /// True for microvolt channels (units "uV", "µV", "μV", or no units field: the 0.4/0.5 format
  /// defines bit_volts as µV per bit).
  [[nodiscard]] bool microvolts() const noexcept;
};

/// One entry of `continuous`.
struct OpenEphysStream {
  std::size_t index = 0;                   ///< position in `continuous`
  std::string folder_name;                 ///< as written, e.g. "Neuropix-PXI-100.ProbeA/"
  std::string stream_name;                 ///< "ProbeA" (GUI >= 0.6); empty when absent
  std::string source_processor_name;       ///< e.g. "Neuropix-PXI", "Demo source"; may be empty
  double sample_rate_hz = 0.0;             ///< sample_rate
  std::size_t num_channels = 0;            ///< int16 words per sample in continuous.dat
  std::vector<OpenEphysChannel> channels;  ///< num_channels entries, stored order

  /// folder_name without its trailing '/' (the folder under `continuous/`).
  [[nodiscard]] std::string folder() const;
  /// Leading channels in µV: the electrode sites a ProbeSource reports as neural. Trailing ADC/AUX
  /// channels (other units) are stored but not neural.
  [[nodiscard]] std::size_t neural_channels() const noexcept;
};

/// A parsed structure.oebin (continuous streams only; events and spikes are not read).
struct OpenEphysStructure {
  std::string source;       ///< file name (or caller's label) used in messages
  std::string gui_version;  ///< "GUI version"; empty when absent
  std::vector<OpenEphysStream> continuous;
};

/// Reads and parses a structure.oebin.
/// \throws std::runtime_error "path: continuous[i].field: what" for an unreadable file, a missing
///         key, a wrong type, a non-positive rate / channel count / bit_volts, or a channels array
///         whose length is not num_channels; "path:line: malformed JSON: ..." for text that is not
///         JSON.
[[nodiscard]] OpenEphysStructure parse_openephys_structure(const std::filesystem::path& path);
/// Parses oebin text; `source_name` labels messages. Same \throws as above.
[[nodiscard]] OpenEphysStructure parse_openephys_structure_text(
    std::string_view json_text, std::string_view source_name = "<oebin>");

/// True when `path` names an Open Ephys binary recording: a `.oebin` file, a folder holding
/// `structure.oebin`, or a `continuous/<stream>/continuous.dat` whose recording folder holds one.
/// Does file-system checks only (no parsing); never throws.
[[nodiscard]] bool is_openephys_recording(const std::filesystem::path& path) noexcept;

/// Site pitch of the default geometry (see OpenEphysBinarySourceConfig::probeinterface).
inline constexpr double kOpenEphysDefaultPitchUm = 100.0;

struct OpenEphysBinarySourceConfig {
  /// structure.oebin, the folder holding it, or a stream's continuous.dat (which then selects
  /// that stream unless stream_index / stream_folder say otherwise, which is an error if they
  /// disagree).
  std::filesystem::path recording{};
  /// Stream by position in `continuous`. Default (with stream_folder empty): the first stream
  /// with more than one channel.
  std::optional<std::size_t> stream_index{};
  /// Stream by folder_name, with or without the trailing '/'. Not together with stream_index.
  std::string stream_folder{};
  /// Geometry. The oebin has no site positions, so: empty -> the default, a single-shank column
  /// with neural channel i at x = 0, z = i * kOpenEphysDefaultPitchUm (farther apart than the
  /// detector's 50 µm de-duplication radius, so no spike is merged across guessed neighbours);
  /// model "openephys-default-linear". Otherwise a probeinterface JSON: one contact per neural
  /// channel in order (or device_channel_indices), or, when the probe has more contacts and every
  /// channel carries an electrode_index, the contact whose id is that electrode.
  std::filesystem::path probeinterface{};
  std::size_t probe_index = 0;  ///< which probe of the probeinterface file
  /// Geometry the caller already knows (e.g. the probe a replayed session recorded with): one site
  /// per neural channel, in order. Not together with `probeinterface`.
  std::optional<ProbeGeometry> geometry{};
  std::size_t block_samples = 300;  ///< rows per read (also capped by the block's capacity)
  Pace pace = Pace::kMax;
};

/// Replays one continuous stream of an Open Ephys binary recording through ProbeSource: blocks of
/// `block_samples` rows stamped first sample + row offset, paced by the stream's sample rate
/// (kRealtime: a block is returned no earlier than its last sample would have been acquired,
/// on steady_clock from the first read) or as fast as possible (kMax).
///
/// ProbeInfo: name = stream_name (else the folder), stored_channels = num_channels,
/// neural_channels = the leading µV channels (all of them must share one bit_volts, which is
/// microvolts_per_bit), no sync word.
class OpenEphysBinarySource final : public ProbeSource {
 public:
  explicit OpenEphysBinarySource(OpenEphysBinarySourceConfig config);
  ~OpenEphysBinarySource() override;

  /// Parses structure.oebin, chooses the stream, opens its continuous.dat, reads the first sample
  /// number, builds the geometry and allocates. A .dat whose size is not whole frames still
  /// starts (the whole frames are replayed; warnings() names the file, its size and
  /// num_channels); so does a sample-number file whose length disagrees with the .dat.
  /// \return false with last_error() naming the file and the field (malformed or incomplete
  ///         oebin, stream index or folder not found, missing .dat or one without a single whole
  ///         frame, mixed bit_volts among neural channels, unreadable sample numbers, a
  ///         probeinterface file that does not fit).
  [[nodiscard]] bool start() override;
  [[nodiscard]] const ProbeInfo& info() const noexcept override { return info_; }
  /// \note Real-time safe: no allocation, no exceptions; kRealtime sleeps until the block is due.
  [[nodiscard]] ReadStatus read(SampleBlock& block) noexcept override;
  void stop() noexcept override;

  /// Non-fatal findings of start(), one sentence each.
  [[nodiscard]] const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  /// Valid after a successful start().
  [[nodiscard]] const OpenEphysStructure& structure() const noexcept { return structure_; }
  /// The replayed stream; valid after a successful start().
  [[nodiscard]] const OpenEphysStream& stream() const noexcept;
  [[nodiscard]] const std::filesystem::path& dat_path() const noexcept { return dat_path_; }
  /// Whole frames that will be replayed.
  [[nodiscard]] std::uint64_t total_samples() const noexcept { return total_samples_; }
  /// Sample index of the first frame: the first sample number when the recording has them, else 0.
  [[nodiscard]] std::int64_t first_sample() const noexcept { return first_sample_; }
  /// Where the sample numbers came from ("sample_numbers.npy", "timestamps.npy") or "none".
  [[nodiscard]] const std::string& sample_numbers_source() const noexcept {
    return sample_numbers_source_;
  }
  /// Where the geometry came from: the probeinterface path, or "default".
  [[nodiscard]] const std::string& geometry_source() const noexcept { return geometry_source_; }

 private:
  [[nodiscard]] bool start_or_throw();

  OpenEphysBinarySourceConfig config_;
  OpenEphysStructure structure_;
  std::size_t stream_ = 0;
  ProbeInfo info_;
  std::vector<std::string> warnings_;
  std::filesystem::path dat_path_;
  std::string sample_numbers_source_ = "none";
  std::string geometry_source_ = "default";
  std::FILE* file_ = nullptr;
  std::vector<char> io_buffer_;
  std::uint64_t total_samples_ = 0;
  std::uint64_t next_row_ = 0;
  std::int64_t first_sample_ = 0;
  bool clock_started_ = false;
  std::int64_t start_ns_ = 0;  ///< steady_clock time of the first read, ns since epoch
};

}  // namespace twinloop::drivers

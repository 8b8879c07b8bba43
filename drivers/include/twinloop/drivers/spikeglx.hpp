// SpikeGLX recordings: the .meta parser, a .bin + .meta writer for a Neuropixels 1.0 probe, and a
// ProbeSource that replays a recorded .ap.bin.
//
// A SpikeGLX recording is a headerless little-endian int16 .bin (sample-major: every timepoint
// holds nSavedChans words in ~snsChanMap order, the imec SY status word last) plus a text .meta of
// `key=value` lines (format facts: ../shared/data/FORMATS.md §1, after SpikeGLX's
// Metadata_30.md). parse_spikeglx_meta() reads a .meta into SpikeGlxMeta: the raw key/value map
// plus the decoded fields twinloop needs (rate, channel counts, saved-channel map, imro table,
// site geometry, µV per bit). Bad input throws std::runtime_error naming "file:line: what".
//
// Thread safety: the free functions and SpikeGlxMeta are plain values (no shared state).
// SpikeGlxWriter and SpikeGlxFileSource each own a file: use one object from one thread at a time;
// neither is copyable nor movable (they own an open FILE*, and a second handle must not exist).
// SpikeGlxFileSource::read() is real-time safe after start(); the writer does file I/O and belongs
// on a recording thread, not the acquisition thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers {

/// One saved channel, in stored order, from ~snsChanMap: `(name;acquired:display)`.
struct SpikeGlxChannel {
  std::string name;        ///< "AP12", "LF12", "SY0" (imec) or "MN0", "XD0"... (nidq)
  int acquired_index = 0;  ///< index among all acquired channels (AP 0..383, LF 384..767, SY 768)
  int display_order = 0;   ///< order in SpikeGLX's graphs (not the stored order)
};

/// Which ~imroTbl channel-entry layout a probe type uses (Metadata_30.md "Channel Entries By
/// Type").
enum class ImroLayout {
  kNp1,         ///< types 0,1020,1030,1100,1120..1123,1200,1300: (chan bank refid apGain lfGain hp)
  kNp1Phase3A,  ///< 3A header (serial,option,nChan): (chan bank refid apGain lfGain)
  kNp2SingleShank,  ///< types 21, 2003: (chan bankMask refid electrode)
  kNp2MultiShank,   ///< types 24, 2013, 2020: (chan shank bank refid electrode)
  kUhd1110,         ///< type 1110: header (1110,colMode,refid,apGain,lfGain,hp) + group entries
};

/// One ~imroTbl channel entry; fields a layout does not have keep their defaults.
struct ImroEntry {
  int channel = 0;
  int bank = 0;       ///< NP1-like and multi-shank layouts
  int bank_mask = 0;  ///< kNp2SingleShank
  int shank = 0;      ///< kNp2MultiShank
  int ref_id = 0;
  int ap_gain = 0;          ///< NP1-like layouts only (0 elsewhere)
  int lf_gain = 0;          ///< NP1-like layouts only
  bool ap_highpass = true;  ///< NP1-like: AP high-pass filter on (absent in 3A: on)
  int electrode = -1;       ///< NP2 layouts: electrode (shank-local for multi-shank); else -1
};

/// One UHD (type 1110) group entry: (group bankA bankB).
struct ImroUhdGroup {
  int group = 0;
  int bank_a = 0;
  int bank_b = 0;
};

/// The decoded ~imroTbl. Entries cover every ACQUIRED channel (not only saved ones).
struct ImroTable {
  int probe_type = 0;  ///< header type (0 for a 3A table)
  ImroLayout layout = ImroLayout::kNp1;
  int header_channels = 0;  ///< channel count named in the header (384 for 1110)
  // Type 1110 header fields (zero elsewhere).
  int uhd_column_mode = 0;
  int uhd_ref_id = 0;
  int uhd_ap_gain = 0;
  int uhd_lf_gain = 0;
  bool uhd_ap_highpass = true;
  std::vector<ImroEntry> entries;        ///< all layouts but kUhd1110
  std::vector<ImroUhdGroup> uhd_groups;  ///< kUhd1110 only (24 groups)
};

/// A parsed .meta. Geometry and µV/bit cover the saved NEURAL channels (AP and LF, not SY), in
/// stored order: geometry.sites[i] and microvolts_per_bit[i] describe stored word i.
/// Geometry is in SpikeGLX's ~snsGeomMap frame: x in µm from the shank's left edge (within its
/// shank; Site::shank says which), z in µm from the tip row. For NP1.0 that is
/// neuropixels1_geometry() (probeinterface frame, x from the first column) shifted +11 µm in x;
/// distances are the same. Older files carry only ~snsShankMap (column/row indices), converted
/// with the probe type's nominal pitch and stagger (an approximation, see the .cpp).
/// microvolts_per_bit = imAiRangeMax / imMaxInt / gain * 1e6, gain from the imro entry (AP or LF
/// band by channel name), 80 for NP2.0 types, the header gains for type 1110.
struct SpikeGlxMeta {
  std::string source;  ///< file name (or caller's label) used in messages
  /// Every key as written (table keys keep their leading '~'), value without the line ending.
  std::map<std::string, std::string, std::less<>> values;
  /// 1-based line of each key, for messages that point into the file.
  std::map<std::string, int, std::less<>> lines;

  std::string type_this;  ///< "imec", "nidq", "obx"
  double sample_rate_hz =
      0.0;  ///< imSampRate (calibrated when calibrated) or niSampRate/obSampRate
  std::size_t saved_channels = 0;  ///< nSavedChans: int16 words per timepoint in the .bin
  std::size_t ap_count = 0;        ///< saved AP channels (snsApLfSy, else counted in ~snsChanMap)
  std::size_t lf_count = 0;        ///< saved LF channels
  std::size_t sy_count = 0;        ///< saved SY (status/sync) words
  std::vector<SpikeGlxChannel> channels;  ///< saved channels in stored order (~snsChanMap)
  bool save_all = false;                  ///< snsSaveChanSubset=all
  std::vector<int> save_subset;  ///< acquired indices saved (expanded); empty when save_all

  bool probe_type_present = false;  ///< imDatPrb_type present (absent in 3A/early 3B files)
  int probe_type = 0;               ///< imDatPrb_type; 0 (NP1.0-like) when absent
  std::string probe_part_number;    ///< imDatPrb_pn, may be empty
  int max_int = 512;                ///< imMaxInt (absent: 512 for NP1-like, 8192 for NP2 types)
  double ai_range_max = 0.0;        ///< imAiRangeMax (V)
  double ai_range_min = 0.0;        ///< imAiRangeMin (V)
  std::uint64_t file_size_bytes = 0;
  double file_time_secs = 0.0;
  std::int64_t first_sample = 0;
  std::optional<ImroTable> imro;  ///< imec only

  ProbeGeometry geometry;                  ///< one site per saved neural channel, µm
  std::vector<double> microvolts_per_bit;  ///< one per saved neural channel

  [[nodiscard]] std::size_t neural_channels() const noexcept { return ap_count + lf_count; }
  /// Whole timepoints that fileSizeBytes describes.
  [[nodiscard]] std::uint64_t sample_count() const noexcept {
    return saved_channels == 0 ? 0 : file_size_bytes / (2 * saved_channels);
  }
  /// Raw value of a key, or nullptr when absent.
  [[nodiscard]] const std::string* find(std::string_view key) const;
  /// What a ProbeSource replaying this file reports. microvolts_per_bit is channel 0's value
  /// (the per-channel values stay in this struct). name: "imec0"-like token from the file name.
  [[nodiscard]] ProbeInfo to_probe_info() const;
};

/// Reads and parses a .meta file.
/// \throws std::runtime_error "path:line: what" (or "path: ..." when no line applies) for an
///         unreadable file, a missing required key, a malformed table entry or counts that
///         disagree (e.g. nSavedChans vs ~snsChanMap).
[[nodiscard]] SpikeGlxMeta parse_spikeglx_meta(const std::filesystem::path& path);
/// Parses .meta text; `source_name` labels messages. Same \throws as above.
[[nodiscard]] SpikeGlxMeta parse_spikeglx_meta_text(std::string_view text,
                                                    std::string_view source_name = "<meta>");
/// `x.ap.bin` -> `x.ap.meta` (any `.bin` extension replaced by `.meta`).
[[nodiscard]] std::filesystem::path spikeglx_meta_path_for(const std::filesystem::path& bin_path);

// ---------------------------------------------------------------------------------------------
// Writer

struct SpikeGlxWriterConfig {
  double sample_rate_hz = 30000.0;                     ///< written as imSampRate (full precision)
  std::string probe_part_number = "NP1000";            ///< imDatPrb_pn and the ~snsGeomMap header
  std::string probe_serial = "0";                      ///< imDatPrb_sn
  int sync_input_slot = 2;                             ///< syncImInputSlot
  std::string app_version = "twinloop-0.1";            ///< appVersion
  std::size_t io_buffer_bytes = std::size_t{1} << 20;  ///< stdio buffer for the .bin
  /// AP channels saved, 1..384: the first n sites (a smaller probe, e.g. a 64-channel simulated
  /// one, is written as SpikeGLX writes a saved-channel subset: snsSaveChanSubset=0:n-1,768).
  std::size_t neural_channels = 384;
};

/// Writes `<base>.ap.bin` + `<base>.ap.meta` for one Neuropixels 1.0 probe (type 0, bank 0, AP gain
/// 500, LF gain 250, `neural_channels` AP channels + the SY word: 385 stored channels for all 384).
/// Blocks stream to disk through a fixed stdio buffer; nothing holds the whole recording. The .meta
/// is written by close() (fileSizeBytes/fileTimeSecs are known only then), with the keys SpikeGLX
/// writes. Example: base "/data/run_g0_t0.imec0" -> /data/run_g0_t0.imec0.ap.bin and .ap.meta.
class SpikeGlxWriter {
 public:
  static constexpr std::size_t kNeuralChannels = 384;
  static constexpr std::size_t kStoredChannels = 385;

  /// Opens `<base>.ap.bin` for writing (truncating).
  /// \throws std::runtime_error naming the file when it cannot be created.
  explicit SpikeGlxWriter(std::filesystem::path base, SpikeGlxWriterConfig config = {});
  /// Closes (writing the .meta) if still open; errors are swallowed here: call close() to see them.
  ~SpikeGlxWriter();
  SpikeGlxWriter(const SpikeGlxWriter&) = delete;
  SpikeGlxWriter& operator=(const SpikeGlxWriter&) = delete;
  SpikeGlxWriter(SpikeGlxWriter&&) = delete;
  SpikeGlxWriter& operator=(SpikeGlxWriter&&) = delete;

  /// Words per row: the saved AP channels and the SY word.
  [[nodiscard]] std::size_t stored_channels() const noexcept { return config_.neural_channels + 1; }
  /// Appends block.sample_count rows (stored_channels() words each, the producer fills the SY
  /// word). The first
  /// block's first_sample becomes firstSample; later blocks must continue it exactly (a SpikeGLX
  /// file cannot hold a gap, and gaps are never bridged).
  /// \return false, with last_error() set and nothing written, on a channel-count mismatch, a
  ///         discontinuity, a write failure, or after close().
  /// \note Does no allocation (stdio buffer sized in the constructor); blocks on disk I/O.
  [[nodiscard]] bool append(const SampleBlock& block) noexcept;
  /// Flushes and closes the .bin, then writes the .meta. Idempotent.
  /// \throws std::runtime_error naming the file on an I/O failure.
  void close();

  [[nodiscard]] const std::filesystem::path& bin_path() const noexcept { return bin_path_; }
  [[nodiscard]] const std::filesystem::path& meta_path() const noexcept { return meta_path_; }
  [[nodiscard]] std::uint64_t samples_written() const noexcept { return samples_written_; }
  [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }

  /// The .meta text for `samples` rows starting at `first_sample` (what close() writes).
  [[nodiscard]] std::string meta_text(std::uint64_t samples, std::int64_t first_sample) const;

 private:
  std::filesystem::path bin_path_;
  std::filesystem::path meta_path_;
  SpikeGlxWriterConfig config_;
  std::FILE* file_ = nullptr;
  std::vector<char> io_buffer_;
  std::string create_time_;
  bool started_ = false;
  std::int64_t first_sample_ = 0;
  std::int64_t next_sample_ = 0;
  std::uint64_t samples_written_ = 0;
  std::string last_error_;
};

// ---------------------------------------------------------------------------------------------
// Replay source

struct SpikeGlxFileSourceConfig {
  std::filesystem::path bin_path;   ///< the .ap.bin; its .meta sits beside it
  std::size_t block_samples = 300;  ///< rows per read (also capped by the block's capacity)
  Pace pace = Pace::kMax;
};

/// Replays a SpikeGLX .bin through the ProbeSource interface: blocks of `block_samples` rows,
/// stamped firstSample + row offset, paced by the meta's sample rate (kRealtime: a block is
/// returned no earlier than the time its last sample would have been acquired, measured on
/// steady_clock from the first read) or as fast as possible (kMax).
class SpikeGlxFileSource final : public ProbeSource {
 public:
  explicit SpikeGlxFileSource(SpikeGlxFileSourceConfig config);
  ~SpikeGlxFileSource() override;

  /// Parses the .meta, opens the .bin, checks fileSizeBytes against the real size and allocates.
  /// A truncated .bin (or one whose size is not whole rows) still starts: the whole rows present
  /// are replayed and warnings() says what is missing.
  /// \return false with last_error() naming the file and the problem (missing or malformed .meta,
  ///         missing or unreadable .bin).
  [[nodiscard]] bool start() override;
  [[nodiscard]] const ProbeInfo& info() const noexcept override { return info_; }
  /// \note Real-time safe: no allocation, no exceptions; kRealtime sleeps until the block is due.
  [[nodiscard]] ReadStatus read(SampleBlock& block) noexcept override;
  void stop() noexcept override;

  /// Non-fatal findings of start() (size mismatches), one sentence each.
  [[nodiscard]] const std::vector<std::string>& warnings() const noexcept { return warnings_; }
  /// Valid after a successful start().
  [[nodiscard]] const SpikeGlxMeta& meta() const noexcept { return meta_; }
  /// Rows that will be replayed (whole rows present in the file, at most what the meta says).
  [[nodiscard]] std::uint64_t total_samples() const noexcept { return total_samples_; }

 private:
  SpikeGlxFileSourceConfig config_;
  SpikeGlxMeta meta_;
  ProbeInfo info_;
  std::vector<std::string> warnings_;
  std::FILE* file_ = nullptr;
  std::vector<char> io_buffer_;
  std::uint64_t total_samples_ = 0;
  std::uint64_t next_row_ = 0;
  bool clock_started_ = false;
  std::int64_t start_ns_ = 0;  ///< steady_clock time of the first read, ns since epoch
};

}  // namespace twinloop::drivers

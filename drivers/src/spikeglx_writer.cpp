// SpikeGLX writer for one Neuropixels 1.0 probe. Key set and syntax follow the real SpikeGLX
// metas in ../shared/data/spikeglx_meta/ (e.g. ibl__sample3B_version202304.ap.meta).
#include <array>
#include <bit>
#include <charconv>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

/// Shortest text that reads back as the same double ("30000.390639481", "0.6").
std::string format_double(double value) {
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return std::string(buffer.data(), result.ptr);
}

std::string local_time_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  localtime_r(&now, &parts);
  std::array<char, 32> buffer{};
  const std::size_t n = std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%S", &parts);
  return std::string(buffer.data(), n);
}

/// NP1.0 electrode position in the ~snsGeomMap frame (x from the shank's left edge, 70 µm wide
/// shank; z from the tip row): even rows at x 27/59 µm, odd rows at 11/43 µm, 20 µm row pitch.
/// This is neuropixels1_geometry() shifted by 11 µm in x.
void np1_geom_position(int electrode, double& x, double& z) {
  const int row = electrode / 2;
  x = (row % 2 == 0 ? 27.0 : 11.0) + (electrode % 2) * 32.0;
  z = row * 20.0;
}

}  // namespace

SpikeGlxWriter::SpikeGlxWriter(std::filesystem::path base, SpikeGlxWriterConfig config)
    : config_(std::move(config)) {
  bin_path_ = base;
  bin_path_ += ".ap.bin";
  meta_path_ = std::move(base);
  meta_path_ += ".ap.meta";
  if (!(config_.sample_rate_hz > 0.0)) {
    throw std::runtime_error(bin_path_.string() + ": sample rate must be positive");
  }
  if (config_.neural_channels == 0 || config_.neural_channels > kNeuralChannels) {
    throw std::runtime_error(bin_path_.string() + ": " + std::to_string(config_.neural_channels) +
                             " AP channels; a Neuropixels 1.0 recording saves 1 to 384");
  }
  file_ = std::fopen(bin_path_.c_str(), "wb");
  if (file_ == nullptr) {
    throw std::runtime_error(bin_path_.string() + ": cannot create .bin file");
  }
  io_buffer_.resize(std::max<std::size_t>(config_.io_buffer_bytes, 4096));
  std::setvbuf(file_, io_buffer_.data(), _IOFBF, io_buffer_.size());
  create_time_ = local_time_iso();
  last_error_.reserve(256);
}

SpikeGlxWriter::~SpikeGlxWriter() {
  try {
    close();
  } catch (...) {  // NOLINT(bugprone-empty-catch): destructor must not throw; close() reports.
  }
}

bool SpikeGlxWriter::append(const SampleBlock& block) noexcept {
  if (file_ == nullptr) {
    last_error_ = "append after close";
    return false;
  }
  if (block.stored_channels != stored_channels()) {
    last_error_ = "block has the wrong number of stored channels";
    return false;
  }
  if (block.sample_count > block.capacity_samples()) {
    last_error_ = "block sample_count exceeds its capacity";
    return false;
  }
  if (started_ && block.first_sample != next_sample_) {
    last_error_ = "block is not contiguous with the previous one (SpikeGLX files cannot hold gaps)";
    return false;
  }
  if (block.sample_count == 0) return true;
  static_assert(std::endian::native == std::endian::little,
                "SpikeGLX .bin is little-endian; add byte swapping for this host");
  const std::size_t words = block.sample_count * stored_channels();
  if (std::fwrite(block.samples.data(), sizeof(std::int16_t), words, file_) != words) {
    last_error_ = "write to the .bin failed (disk full?)";
    return false;
  }
  if (!started_) {
    started_ = true;
    first_sample_ = block.first_sample;
  }
  next_sample_ = block.first_sample + static_cast<std::int64_t>(block.sample_count);
  samples_written_ += block.sample_count;
  return true;
}

void SpikeGlxWriter::close() {
  if (file_ == nullptr) return;
  const bool flushed = std::fflush(file_) == 0;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) throw std::runtime_error(bin_path_.string() + ": flush/close failed");
  std::ofstream out(meta_path_, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(meta_path_.string() + ": cannot create .meta file");
  out << meta_text(samples_written_, first_sample_);
  out.flush();
  if (!out) throw std::runtime_error(meta_path_.string() + ": write failed");
}

std::string SpikeGlxWriter::meta_text(std::uint64_t samples, std::int64_t first_sample) const {
  const std::size_t saved = config_.neural_channels;
  const std::uint64_t size_bytes = samples * stored_channels() * sizeof(std::int16_t);
  const double seconds = static_cast<double>(samples) / config_.sample_rate_hz;
  std::string bin_name = std::filesystem::absolute(bin_path_).generic_string();
  std::string m;
  m.reserve(64 * 1024);
  auto kv = [&m](std::string_view key, std::string_view value) {
    m.append(key).append("=").append(value).append("\n");
  };
  // Plain keys in SpikeGLX's (alphabetical) order, then the ~tables.
  kv("acqApLfSy", "384,384,1");
  kv("appVersion", config_.app_version);
  kv("fileCreateTime", create_time_);
  kv("fileName", bin_name);
  kv("fileSizeBytes", std::to_string(size_bytes));
  kv("fileTimeSecs", format_double(seconds));
  kv("firstSample", std::to_string(first_sample));
  kv("gateMode", "Immediate");
  kv("imAiRangeMax", "0.6");
  kv("imAiRangeMin", "-0.6");
  kv("imAnyChanFullBand", "false");
  kv("imCalibrated", "false");
  kv("imChan0apGain", "500");
  kv("imChan0lfGain", "250");
  kv("imDatPrb_dock", "1");
  kv("imDatPrb_pn", config_.probe_part_number);
  kv("imDatPrb_port", "1");
  kv("imDatPrb_slot", "2");
  kv("imDatPrb_sn", config_.probe_serial);
  kv("imDatPrb_type", "0");
  kv("imLEDEnable", "false");
  kv("imMaxInt", "512");
  kv("imSampRate", format_double(config_.sample_rate_hz));
  kv("imStdby", "");
  kv("imTrgRising", "true");
  kv("imTrgSource", "0");
  kv("imroFile", "");
  kv("nDataDirs", "1");
  kv("nSavedChans", std::to_string(saved + 1));
  kv("snsApLfSy", std::to_string(saved) + ",0,1");
  // SpikeGLX's subset syntax: acquired channel indices, ranges as a:b; the SY word is 768.
  kv("snsSaveChanSubset", saved == kNeuralChannels
                              ? "all"
                              : (saved == 1 ? "0" : "0:" + std::to_string(saved - 1)) + ",768");
  kv("syncImInputSlot", std::to_string(config_.sync_input_slot));
  kv("syncSourceIdx", "0");
  kv("syncSourcePeriod", "1");
  kv("trigMode", "Immediate");
  kv("typeImEnabled", "1");
  kv("typeNiEnabled", "0");
  kv("typeObEnabled", "0");
  kv("typeThis", "imec");
  kv("userNotes", "written by twinloop");

  m += "~imroTbl=(0,384)";
  for (std::size_t c = 0; c < kNeuralChannels; ++c) {
    m += "(" + std::to_string(c) + " 0 0 500 250 1)";
  }
  // The maps below list saved channels only; ~imroTbl above covers every acquired one.
  m += "\n~snsChanMap=(384,384,1)";
  for (std::size_t c = 0; c < saved; ++c) {
    const std::string n = std::to_string(c);
    m += "(AP" + n + ";" + n + ":" + n + ")";
  }
  m += "(SY0;768:768)\n~snsGeomMap=(" + config_.probe_part_number + ",1,0,70)";
  for (std::size_t c = 0; c < saved; ++c) {
    double x = 0;
    double z = 0;
    np1_geom_position(static_cast<int>(c), x, z);
    m += "(0:" + format_double(x) + ":" + format_double(z) + ":1)";
  }
  m += "\n~snsShankMap=(1,2,480)";
  for (std::size_t c = 0; c < saved; ++c) {
    m += "(0:" + std::to_string(c % 2) + ":" + std::to_string(c / 2) + ":1)";
  }
  m += "\n";
  return m;
}

}  // namespace twinloop::drivers

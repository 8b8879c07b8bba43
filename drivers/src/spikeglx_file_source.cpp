// Replays a SpikeGLX .bin through ProbeSource.
#include <algorithm>
#include <system_error>

#include "paced_file_read.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
SpikeGlxFileSource::SpikeGlxFileSource(SpikeGlxFileSourceConfig config)
    : config_(std::move(config)) {
  if (config_.block_samples == 0) config_.block_samples = 1;
  last_error_.reserve(256);  // read() assigns short messages without allocating
}

SpikeGlxFileSource::~SpikeGlxFileSource() {
  stop();
}

bool SpikeGlxFileSource::start() {
  stop();
  warnings_.clear();
  last_error_.clear();
  const std::filesystem::path meta_path = spikeglx_meta_path_for(config_.bin_path);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(meta_path, ec)) {
    last_error_ = meta_path.string() + ": .meta file not found (expected beside " +
                  config_.bin_path.filename().string() + ")";
    return false;
  }
  try {
    meta_ = parse_spikeglx_meta(meta_path);
    info_ = meta_.to_probe_info();
    // The stream name of the file actually replayed ("x_g0_t0.imec3.ap.bin" -> "imec3") wins
    // over the one recorded in fileName (a copied or renamed recording).
    const std::string file = config_.bin_path.filename().string();
    for (std::size_t pos = file.find('.'); pos != std::string::npos;
         pos = file.find('.', pos + 1)) {
      const std::size_t end = file.find('.', pos + 1);
      const std::string token =
          file.substr(pos + 1, end == std::string::npos ? end : end - pos - 1);
      if (token.rfind("imec", 0) == 0 || token == "nidq" || token.rfind("obx", 0) == 0) {
        info_.name = token;
        break;
      }
    }
  } catch (const std::exception& e) {
    last_error_ = e.what();
    return false;
  }
  if (!std::filesystem::is_regular_file(config_.bin_path, ec)) {
    last_error_ = config_.bin_path.string() + ": .bin file not found";
    return false;
  }
  const std::uintmax_t real_size = std::filesystem::file_size(config_.bin_path, ec);
  if (ec) {
    last_error_ = config_.bin_path.string() + ": cannot read size: " + ec.message();
    return false;
  }
  file_ = std::fopen(config_.bin_path.c_str(), "rb");
  if (file_ == nullptr) {
    last_error_ = config_.bin_path.string() + ": cannot open for reading";
    return false;
  }

  const std::uint64_t row_bytes = 2 * meta_.saved_channels;
  const std::uint64_t meta_size = meta_.file_size_bytes;
  const std::string bin = config_.bin_path.string();
  if (meta_.find("fileSizeBytes") == nullptr) {
    warnings_.push_back(bin + ": .meta has no fileSizeBytes; replaying the whole rows present");
  } else if (meta_size % row_bytes != 0) {
    warnings_.push_back(bin + ": fileSizeBytes=" + std::to_string(meta_size) +
                        " is not a whole number of " + std::to_string(row_bytes) + "-byte rows");
  }
  if (real_size % row_bytes != 0) {
    warnings_.push_back(bin + ": file size " + std::to_string(real_size) +
                        " bytes is not a whole number of rows; the last " +
                        std::to_string(real_size % row_bytes) + " bytes are ignored");
  }
  const std::uint64_t real_rows = real_size / row_bytes;
  total_samples_ = real_rows;
  if (meta_.find("fileSizeBytes") != nullptr) {
    const std::uint64_t meta_rows = meta_size / row_bytes;
    if (real_size < meta_size) {
      warnings_.push_back(bin + ": truncated: .meta says " + std::to_string(meta_size) +
                          " bytes, file has " + std::to_string(real_size) + " (" +
                          std::to_string(meta_rows - real_rows) + " samples missing at the end)");
    } else if (real_size > meta_size) {
      warnings_.push_back(bin + ": file has " + std::to_string(real_size) +
                          " bytes, more than the " + std::to_string(meta_size) +
                          " its .meta describes; extra ignored");
      total_samples_ = meta_rows;
    }
  }

  io_buffer_.resize(std::max<std::size_t>(row_bytes * config_.block_samples, 64 * 1024));
  std::setvbuf(file_, io_buffer_.data(), _IOFBF, io_buffer_.size());
  last_error_.reserve(256);  // start() may have grown or replaced it
  next_row_ = 0;
  clock_started_ = false;
  return true;
}

ReadStatus SpikeGlxFileSource::read(SampleBlock& block) noexcept {
  const internal::PacedFile file{file_,
                                 "the .bin",
                                 meta_.saved_channels,
                                 meta_.sample_rate_hz,
                                 config_.pace,
                                 config_.block_samples,
                                 meta_.first_sample,
                                 total_samples_};
  return internal::read_paced_rows(file, next_row_, clock_started_, start_ns_, block, last_error_);
}

void SpikeGlxFileSource::stop() noexcept {
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
  }
}

}  // namespace twinloop::drivers

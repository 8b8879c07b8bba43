// Replays a SpikeGLX .bin through ProbeSource.
#include <algorithm>
#include <bit>
#include <chrono>
#include <system_error>
#include <thread>

#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

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
  if (file_ == nullptr) {
    last_error_ = "read before start()";
    return ReadStatus::kError;
  }
  if (block.stored_channels != meta_.saved_channels) {
    last_error_ = "block allocated with the wrong number of stored channels";
    return ReadStatus::kError;
  }
  if (next_row_ >= total_samples_) return ReadStatus::kEndOfStream;
  const std::uint64_t remaining = total_samples_ - next_row_;
  const std::size_t rows = static_cast<std::size_t>(std::min<std::uint64_t>(
      remaining, std::min(block.capacity_samples(), config_.block_samples)));
  if (rows == 0) {
    last_error_ = "block has no capacity";
    return ReadStatus::kError;
  }
  if (config_.pace == Pace::kRealtime) {
    if (!clock_started_) {
      clock_started_ = true;
      start_ns_ = steady_now_ns();
    }
    // Due when its last sample would have been acquired.
    const double due_s = static_cast<double>(next_row_ + rows) / meta_.sample_rate_hz;
    const auto due = std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(start_ns_ + static_cast<std::int64_t>(due_s * 1e9)));
    std::this_thread::sleep_until(due);
  }
  const std::size_t words = rows * meta_.saved_channels;
  static_assert(std::endian::native == std::endian::little,
                "SpikeGLX .bin is little-endian; add byte swapping for this host");
  if (std::fread(block.samples.data(), sizeof(std::int16_t), words, file_) != words) {
    last_error_ = std::ferror(file_) != 0 ? "read error on the .bin" : "unexpected end of the .bin";
    return ReadStatus::kError;
  }
  block.first_sample = meta_.first_sample + static_cast<std::int64_t>(next_row_);
  block.sample_count = rows;
  next_row_ += rows;
  return ReadStatus::kOk;
}

void SpikeGlxFileSource::stop() noexcept {
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
  }
}

}  // namespace twinloop::drivers

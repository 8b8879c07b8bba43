#include "twinloop/drivers/raw_recorder.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>

namespace twinloop::drivers {

RawRecorder::RawRecorder(ProbeSource& inner, RawRecorderConfig config)
    : inner_(inner), config_(std::move(config)) {}

RawRecorder::~RawRecorder() {
  stop();
}

std::uint64_t RawRecorder::bytes_needed(std::size_t neural_channels, double sample_rate_hz,
                                        double seconds) noexcept {
  const double rows = std::ceil(std::max(0.0, sample_rate_hz * seconds));
  return static_cast<std::uint64_t>(rows) * (neural_channels + 1) * sizeof(std::int16_t);
}

bool RawRecorder::start() {
  if (!inner_.start()) return false;
  const ProbeInfo& info = inner_.info();
  try {
    neural_ = info.neural_channels;
    source_stored_ = info.stored_channels;
    const std::size_t block = std::max<std::size_t>(config_.max_block_samples, 1);
    const double slots =
        std::ceil(config_.ring_seconds * info.sample_rate_hz / static_cast<double>(block));
    slots_.resize(static_cast<std::size_t>(std::clamp(slots, 16.0, 1e6)));
    for (Slot& slot : slots_) slot.samples.assign(block * source_stored_, 0);
    staging_.allocate(block, neural_ + 1);
    if (!config_.base.empty()) create_writer(config_.base);
    thread_ = std::thread([this] { write_loop(); });
  } catch (const std::exception& e) {
    last_error_ = std::string("raw recording: ") + e.what();
    inner_.stop();
    writer_.reset();
    return false;
  }
  started_ = true;
  return true;
}

void RawRecorder::create_writer(const std::filesystem::path& base) {
  SpikeGlxWriterConfig writer_config;
  writer_config.sample_rate_hz = inner_.info().sample_rate_hz;
  writer_config.neural_channels = neural_;
  std::filesystem::create_directories(base.parent_path());
  writer_ = std::make_unique<SpikeGlxWriter>(base, writer_config);
  file_ready_.store(true, std::memory_order_release);
}

bool RawRecorder::open_file(const std::filesystem::path& base, std::string& error) {
  if (writer_) {
    error = "raw recording: the file is already open";
    return false;
  }
  try {
    create_writer(base);
    return true;
  } catch (const std::exception& e) {
    error = std::string("raw recording: ") + e.what();
    return false;
  }
}

ReadStatus RawRecorder::read(SampleBlock& block) noexcept {
  const ReadStatus status = inner_.read(block);
  if (status != ReadStatus::kOk || block.sample_count == 0) return status;
  const std::size_t capacity = slots_.front().samples.size() / source_stored_;
  std::size_t done = 0;
  std::uint64_t waited_us = 0;
  // A block larger than a slot (a consumer that reads more than it said) takes several slots.
  while (done < block.sample_count) {
    const std::size_t rows = std::min(capacity, block.sample_count - done);
    const std::uint64_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_.load(std::memory_order_acquire) == slots_.size()) {
      // Waiting is bounded: a file that is never opened (the session failed to set up) must
      // not hold the acquisition thread forever.
      if (config_.wait_when_full && !failed_.load(std::memory_order_relaxed) &&
          !stopping_.load(std::memory_order_relaxed) && waited_us < 5'000'000) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        waited_us += 200;
        continue;
      }
      not_recorded_.fetch_add(block.sample_count - done, std::memory_order_relaxed);
      break;
    }
    Slot& slot = slots_[head % slots_.size()];
    slot.first_sample = block.first_sample + static_cast<std::int64_t>(done);
    slot.sample_count = rows;
    std::memcpy(slot.samples.data(), block.row(done), rows * source_stored_ * sizeof(std::int16_t));
    head_.store(head + 1, std::memory_order_release);
    done += rows;
  }
  return status;
}

void RawRecorder::write_loop() {
  while (!file_ready_.load(std::memory_order_acquire)) {
    if (stopping_.load(std::memory_order_acquire)) return;  // never opened: nothing to write
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (;;) {
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == head_.load(std::memory_order_acquire)) {
      if (stopping_.load(std::memory_order_acquire)) {
        if (tail == head_.load(std::memory_order_acquire)) return;
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    write_slot(slots_[tail % slots_.size()]);
    tail_.store(tail + 1, std::memory_order_release);
  }
}

void RawRecorder::write_slot(const Slot& slot) {
  if (failed_.load(std::memory_order_relaxed)) return;
  std::int64_t first = slot.first_sample;
  std::size_t rows = slot.sample_count;
  const std::int16_t* source = slot.samples.data();
  if (next_sample_ >= 0 && first < next_sample_) {  // rows already written: repeated delivery
    const auto overlap =
        static_cast<std::size_t>(std::min<std::int64_t>(next_sample_ - first, rows));
    repeated_.fetch_add(overlap, std::memory_order_relaxed);
    rows -= overlap;
    first += static_cast<std::int64_t>(overlap);
    source += overlap * source_stored_;
  }
  if (rows == 0) return;
  if (next_sample_ >= 0 && first > next_sample_) {
    write_zeros(next_sample_, static_cast<std::uint64_t>(first - next_sample_));
  }
  write_rows(first, rows, source);
}

void RawRecorder::write_rows(std::int64_t first_sample, std::size_t rows,
                             const std::int16_t* source) {
  const std::size_t out = writer_->stored_channels();
  staging_.first_sample = first_sample;
  staging_.sample_count = rows;
  const bool has_sync = inner_.info().has_sync_word && source_stored_ > neural_;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int16_t* in = source + r * source_stored_;
    std::int16_t* row = staging_.samples.data() + r * out;
    std::memcpy(row, in, neural_ * sizeof(std::int16_t));
    row[neural_] = has_sync ? in[neural_] : std::int16_t{0};
  }
  if (!writer_->append(staging_)) {
    error_ = writer_->bin_path().string() + ": " + writer_->last_error();
    failed_.store(true, std::memory_order_release);
    return;
  }
  next_sample_ = first_sample + static_cast<std::int64_t>(rows);
  written_.fetch_add(rows, std::memory_order_relaxed);
}

void RawRecorder::write_zeros(std::int64_t first_sample, std::uint64_t rows) {
  const std::size_t capacity = staging_.capacity_samples();
  std::fill(staging_.samples.begin(), staging_.samples.end(), std::int16_t{0});
  zero_filled_.fetch_add(rows, std::memory_order_relaxed);
  while (rows > 0 && !failed_.load(std::memory_order_relaxed)) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(rows, capacity));
    staging_.first_sample = first_sample;
    staging_.sample_count = n;
    if (!writer_->append(staging_)) {
      error_ = writer_->bin_path().string() + ": " + writer_->last_error();
      failed_.store(true, std::memory_order_release);
      return;
    }
    written_.fetch_add(n, std::memory_order_relaxed);
    first_sample += static_cast<std::int64_t>(n);
    rows -= n;
  }
  next_sample_ = first_sample;
}

void RawRecorder::stop() noexcept {
  if (!started_) return;
  started_ = false;
  inner_.stop();
  stopping_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
  if (!writer_) return;
  try {
    writer_->close();
  } catch (const std::exception& e) {
    if (!failed_.load()) error_ = e.what();
    failed_.store(true);
  }
}

const std::string& RawRecorder::last_error() const noexcept {
  return last_error_.empty() ? inner_.last_error() : last_error_;
}

RawRecorderCounters RawRecorder::counters() const noexcept {
  RawRecorderCounters c;
  c.samples_written = written_.load(std::memory_order_relaxed);
  c.samples_not_recorded = not_recorded_.load(std::memory_order_relaxed);
  c.samples_zero_filled = zero_filled_.load(std::memory_order_relaxed);
  c.samples_repeated = repeated_.load(std::memory_order_relaxed);
  c.failed = failed_.load(std::memory_order_acquire);
  return c;
}

std::filesystem::path RawRecorder::bin_path() const {
  return writer_ ? writer_->bin_path() : std::filesystem::path{};
}

std::string RawRecorder::error() const {
  return failed_.load(std::memory_order_acquire) ? error_ : std::string{};
}

}  // namespace twinloop::drivers

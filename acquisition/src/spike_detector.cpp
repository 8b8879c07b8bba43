#include "twinloop/acquisition/spike_detector.hpp"

#include <hwy/targets.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>

#include "src/detector_kernels.hpp"

namespace twinloop::acquisition {
namespace {

// Rows handed to the SIMD kernel at once. The ring must hold a chunk plus the detection window
// on both sides, so a small chunk keeps the ring (rows x channels floats) inside L2.
constexpr std::size_t kChunkRows = 64;
// MAD of a zero-mean Gaussian is 0.6745 sigma (Quiroga, Nadasdy & Ben-Shaul 2004).
constexpr double kMadToSigma = 1.0 / 0.6745;

struct Candidate {
  std::uint64_t row = 0;
  std::uint32_t channel = 0;
  float value = 0.0f;
};

}  // namespace

struct SpikeDetector::State {
  DetectorConfig config;
  std::size_t channels = 0;
  double microvolts_per_bit = 1.0;
  internal::RowKernelArgs kernel;

  std::vector<float> z1, z2, smooth, neg_threshold;
  std::size_t ring_rows = 0;
  std::vector<float> ring;
  std::vector<std::uint64_t> crossing_bits;
  std::vector<std::uint8_t> row_crossed;
  std::vector<std::int64_t> row_sample;
  std::uint64_t next_row = 0;

  std::int64_t window_rows = 0;  // ± rows of the de-duplication window
  std::int64_t refractory_samples = 0;
  std::vector<std::uint32_t> neighbour_offsets;  // CSR: neighbours of c, nearest first, c included
  std::vector<std::uint32_t> neighbours;
  std::vector<std::int64_t> last_event_sample;
  std::vector<float> last_event_value;

  std::vector<Candidate> pending;  // ring of candidates in row order
  std::size_t pending_mask = 0;    // capacity is a power of two
  std::size_t pending_head = 0;
  std::size_t pending_count = 0;

  std::vector<float> noise_window;  // noise_window_rows x channels, row-major
  std::vector<float> noise_scratch;
  std::size_t noise_filled = 0;
  std::size_t noise_position = 0;
  std::uint64_t warmup_rows = 0;
  std::uint64_t next_noise_row = 0;  // set to warmup_rows in the constructor
  std::uint64_t rows_per_update = 1;
  std::uint64_t rows_since_update = 0;
  std::size_t next_update_channel = 0;
  std::vector<double> sigma_bits;
  bool armed = false;
  std::int64_t armed_from_sample = -1;

  DetectorStats stats;

  [[nodiscard]] float value(std::uint64_t row, std::size_t channel) const noexcept {
    return ring[(row & kernel.ring_mask) * kernel.ring_stride + channel];
  }

  void update_threshold(std::size_t channel) noexcept {
    const std::size_t n = noise_window.size() / channels;
    for (std::size_t i = 0; i < n; ++i) {
      noise_scratch[i] = std::fabs(noise_window[i * channels + channel]);
    }
    auto middle = noise_scratch.begin() + static_cast<std::ptrdiff_t>(n / 2);
    std::nth_element(noise_scratch.begin(), middle, noise_scratch.end());
    const double sigma = std::max(static_cast<double>(*middle) * kMadToSigma, 1e-3);
    sigma_bits[channel] = sigma;
    neg_threshold[channel] = static_cast<float>(-config.threshold_sigma * sigma);
    ++stats.threshold_updates;
  }

  // Samples every noise_stride_rows-th row of [first, end) after the warm-up into the noise
  // window; the first full window arms detection.
  void collect_noise(std::uint64_t first, std::uint64_t end) noexcept {
    for (; next_noise_row < end; next_noise_row += config.noise_stride_rows) {
      if (next_noise_row < first) continue;
      const std::uint64_t row = next_noise_row;
      const float* source = &ring[(row & kernel.ring_mask) * kernel.ring_stride];
      std::copy_n(source, channels, noise_window.begin() + noise_position * channels);
      if (++noise_position == config.noise_window_rows) noise_position = 0;
      if (!armed && ++noise_filled == config.noise_window_rows) {
        for (std::size_t c = 0; c < channels; ++c) update_threshold(c);
        armed = true;
        armed_from_sample = row_sample[row & kernel.ring_mask] + 1;
      }
    }
  }

  // One channel's threshold every rows_per_update rows, so all are refreshed within
  // noise_update_seconds and no block pays for many at once.
  void refresh_thresholds(std::uint64_t rows) noexcept {
    if (!armed) return;
    rows_since_update += rows;
    while (rows_since_update >= rows_per_update) {
      rows_since_update -= rows_per_update;
      update_threshold(next_update_channel);
      if (++next_update_channel == channels) next_update_channel = 0;
    }
  }

  // A crossing at row s becomes a candidate when it is a local minimum in time on its channel.
  void collect_candidates(std::uint64_t row) noexcept {
    if (row < 2) return;
    const std::uint64_t s = row - 1;
    if (!row_crossed[s & kernel.ring_mask]) return;
    const std::uint64_t* bits = &crossing_bits[(s & kernel.ring_mask) * kernel.bit_words];
    for (std::size_t w = 0; w < kernel.bit_words; ++w) {
      for (std::uint64_t word = bits[w]; word != 0; word &= word - 1) {
        const std::size_t c = w * 64 + static_cast<std::size_t>(std::countr_zero(word));
        const float v = value(s, c);
        if (!(v <= value(s - 1, c) && v < value(row, c))) continue;
        if (pending_count == pending.size()) {
          ++stats.candidates_overflowed;
          continue;
        }
        pending[(pending_head + pending_count) & pending_mask] =
            Candidate{s, static_cast<std::uint32_t>(c), v};
        ++pending_count;
      }
    }
  }

  // A high-pass filter turns a spike's repolarisation into a second, shallower trough about 1 ms
  // after the first, on the same and neighbouring sites. A candidate within the refractory period
  // of an event in its neighbourhood is that echo unless it is deeper than the event.
  [[nodiscard]] bool in_refractory_shadow(const Candidate& k, std::int64_t sample) const noexcept {
    for (std::uint32_t i = neighbour_offsets[k.channel]; i < neighbour_offsets[k.channel + 1];
         ++i) {
      const std::uint32_t n = neighbours[i];
      if (sample - last_event_sample[n] < refractory_samples && k.value >= last_event_value[n]) {
        return true;
      }
    }
    return false;
  }

  // True when no value in the space-time neighbourhood is deeper (ties go to the earlier row,
  // then the lower channel, so exactly one of two equal troughs survives).
  [[nodiscard]] bool is_deepest(const Candidate& k, std::uint64_t newest_row) const noexcept {
    const std::uint64_t oldest_kept = newest_row + 1 >= ring_rows ? newest_row + 1 - ring_rows : 0;
    const std::uint64_t span = static_cast<std::uint64_t>(window_rows);
    const std::uint64_t first = std::max(k.row >= span ? k.row - span : 0, oldest_kept);
    const std::uint64_t last = k.row + span;
    for (std::uint32_t i = neighbour_offsets[k.channel]; i < neighbour_offsets[k.channel + 1];
         ++i) {
      const std::uint32_t n = neighbours[i];
      for (std::uint64_t u = first; u <= last; ++u) {
        const float w = value(u, n);
        if (w < k.value) return false;
        if (w == k.value && (u < k.row || (u == k.row && n < k.channel))) return false;
      }
    }
    return true;
  }

  std::size_t finalise(std::uint64_t newest_row, std::span<SpikeEvent> out,
                       std::size_t written) noexcept {
    while (pending_count > 0) {
      const Candidate& k = pending[pending_head];
      if (k.row + static_cast<std::uint64_t>(window_rows) > newest_row) break;
      const std::int64_t sample = row_sample[k.row & kernel.ring_mask];
      if (!in_refractory_shadow(k, sample) && is_deepest(k, newest_row)) {
        last_event_sample[k.channel] = sample;
        last_event_value[k.channel] = k.value;
        ++stats.events;
        if (written < out.size()) {
          out[written++] =
              SpikeEvent{sample, k.channel, static_cast<float>(k.value * microvolts_per_bit)};
        } else {
          ++stats.events_overflowed;
        }
      }
      pending_head = (pending_head + 1) & pending_mask;
      --pending_count;
    }
    return written;
  }
};

SpikeDetector::SpikeDetector(const drivers::ProbeInfo& info, const DetectorConfig& config)
    : state_(new State) {
  State& s = *state_;
  s.config = config;
  s.channels = info.neural_channels;
  s.microvolts_per_bit = info.microvolts_per_bit > 0 ? info.microvolts_per_bit : 1.0;
  const double rate = info.sample_rate_hz;
  auto fail = [this](const std::string& what) {
    delete state_;
    throw std::invalid_argument("spike detector: " + what);
  };
  if (s.channels == 0) fail("the probe has no neural channels");
  if (info.stored_channels < s.channels) fail("stored channels fewer than neural channels");
  if (!(rate > 0)) fail("sample rate must be positive");
  if (!(config.highpass_hz > 0 && config.highpass_hz < 0.45 * rate)) {
    fail("high-pass corner " + std::to_string(config.highpass_hz) + " Hz is outside (0, 0.45 fs)");
  }
  if (!(config.threshold_sigma > 0)) fail("threshold_sigma must be positive");
  if (config.lowpass_hz != 0 && !(config.lowpass_hz > config.highpass_hz)) {
    fail("low-pass corner must be above the high-pass corner (or 0 for none)");
  }
  if (info.geometry.channel_count() != s.channels) {
    fail("geometry has " + std::to_string(info.geometry.channel_count()) + " sites for " +
         std::to_string(s.channels) + " neural channels");
  }
  if (config.noise_window_rows < 16 || config.noise_stride_rows == 0) {
    fail("noise window needs >= 16 rows and a stride >= 1");
  }

  // 2nd-order Butterworth high-pass by the bilinear transform with pre-warping:
  // K = tan(pi fc / fs); b = [1, -2, 1] / n; a = [1, 2(K^2-1)/n, (1 - sqrt2 K + K^2)/n],
  // n = 1 + sqrt2 K + K^2.
  const double k = std::tan(std::numbers::pi * config.highpass_hz / rate);
  const double norm = 1.0 / (1.0 + std::numbers::sqrt2 * k + k * k);
  s.kernel.b0 = static_cast<float>(norm);
  s.kernel.b1 = static_cast<float>(-2.0 * norm);
  s.kernel.b2 = static_cast<float>(norm);
  s.kernel.a1 = static_cast<float>(2.0 * (k * k - 1.0) * norm);
  s.kernel.a2 = static_cast<float>((1.0 - std::numbers::sqrt2 * k + k * k) * norm);

  // One-pole low-pass y += alpha (x - y), alpha = 1 - exp(-2 pi fc / fs): it cuts the white noise
  // above the spike band for one multiply-add per sample.
  s.kernel.alpha =
      config.lowpass_hz > 0
          ? static_cast<float>(1.0 - std::exp(-2.0 * std::numbers::pi * config.lowpass_hz / rate))
          : 1.0f;

  s.window_rows = std::max<std::int64_t>(1, std::llround(config.dedup_window_ms * 1e-3 * rate));
  s.refractory_samples = std::llround(config.refractory_ms * 1e-3 * rate);
  s.ring_rows = std::bit_ceil(kChunkRows + 2 * static_cast<std::size_t>(s.window_rows) + 4);

  const std::size_t padded = (s.channels + 15) / 16 * 16;
  s.z1.assign(padded, 0.0f);
  s.z2.assign(padded, 0.0f);
  s.smooth.assign(padded, 0.0f);
  s.neg_threshold.assign(padded, -std::numeric_limits<float>::infinity());
  s.ring.assign(s.ring_rows * padded, 0.0f);
  s.kernel.bit_words = (s.channels + 63) / 64;
  s.crossing_bits.assign(s.ring_rows * s.kernel.bit_words, 0);
  s.row_crossed.assign(s.ring_rows, 0);
  s.row_sample.assign(s.ring_rows, 0);
  s.last_event_sample.assign(s.channels, std::numeric_limits<std::int64_t>::min() / 2);
  s.last_event_value.assign(s.channels, 0.0f);
  s.pending.resize(std::bit_ceil(std::max<std::size_t>(config.max_pending, 16)));
  s.pending_mask = s.pending.size() - 1;
  s.noise_window.assign(config.noise_window_rows * s.channels, 0.0f);
  s.noise_scratch.assign(config.noise_window_rows, 0.0f);
  s.sigma_bits.assign(s.channels, 0.0);
  s.warmup_rows = static_cast<std::uint64_t>(config.warmup_ms * 1e-3 * rate);
  s.next_noise_row = s.warmup_rows;
  s.rows_per_update =
      std::max<std::uint64_t>(1, static_cast<std::uint64_t>(config.noise_update_seconds * rate /
                                                            static_cast<double>(s.channels)));

  // Neighbourhoods for de-duplication, nearest first so a deeper trough is usually found early.
  s.neighbour_offsets.assign(s.channels + 1, 0);
  std::vector<std::pair<double, std::uint32_t>> near;
  for (std::size_t c = 0; c < s.channels; ++c) {
    near.clear();
    for (std::size_t n = 0; n < s.channels; ++n) {
      const double d = info.geometry.distance_um(c, n);
      if (d <= config.dedup_radius_um) near.emplace_back(d, static_cast<std::uint32_t>(n));
    }
    std::sort(near.begin(), near.end());
    for (const auto& [d, n] : near) s.neighbours.push_back(n);
    s.neighbour_offsets[c + 1] = static_cast<std::uint32_t>(s.neighbours.size());
  }

  s.kernel.stride = info.stored_channels;
  s.kernel.channels = s.channels;
  s.kernel.z1 = s.z1.data();
  s.kernel.z2 = s.z2.data();
  s.kernel.smooth = s.smooth.data();
  s.kernel.common_reference = config.common_reference;
  s.kernel.neg_threshold = s.neg_threshold.data();
  s.kernel.ring = s.ring.data();
  s.kernel.ring_stride = padded;
  s.kernel.ring_mask = s.ring_rows - 1;
  s.kernel.crossing_bits = s.crossing_bits.data();
  s.kernel.row_crossed = s.row_crossed.data();
}

SpikeDetector::~SpikeDetector() {
  delete state_;
}

std::size_t SpikeDetector::process(const drivers::SampleBlock& block,
                                   std::span<SpikeEvent> out) noexcept {
  State& s = *state_;
  std::size_t written = 0;
  for (std::size_t r0 = 0; r0 < block.sample_count; r0 += kChunkRows) {
    const std::size_t rows = std::min(kChunkRows, block.sample_count - r0);
    for (std::size_t i = 0; i < rows; ++i) {
      s.row_sample[(s.next_row + i) & s.kernel.ring_mask] =
          block.first_sample + static_cast<std::int64_t>(r0 + i);
    }
    s.kernel.samples = block.row(r0);
    s.kernel.rows = rows;
    s.kernel.first_row = s.next_row;
    internal::process_rows(s.kernel);
    s.collect_noise(s.next_row, s.next_row + rows);
    s.refresh_thresholds(rows);
    for (std::size_t i = 0; i < rows; ++i) {
      const std::uint64_t row = s.next_row + i;
      s.collect_candidates(row);
      if (s.pending_count > 0) written = s.finalise(row, out, written);
    }
    s.next_row += rows;
    s.stats.rows += rows;
  }
  return written;
}

std::int64_t SpikeDetector::delay_samples() const noexcept {
  return state_->window_rows;
}
bool SpikeDetector::armed() const noexcept {
  return state_->armed;
}
std::int64_t SpikeDetector::armed_from_sample() const noexcept {
  return state_->armed_from_sample;
}
const DetectorStats& SpikeDetector::stats() const noexcept {
  return state_->stats;
}
std::size_t SpikeDetector::channel_count() const noexcept {
  return state_->channels;
}

std::vector<double> SpikeDetector::noise_uv() const {
  std::vector<double> out(state_->sigma_bits);
  for (double& v : out) v *= state_->microvolts_per_bit;
  return out;
}

const char* active_simd_target() {
  const std::int64_t best = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(best & -best);
}

void force_baseline_simd() {
  hwy::SetSupportedTargetsForTest(HWY_STATIC_TARGET);
}

void restore_best_simd() {
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace twinloop::acquisition

#include "twinloop/hil/simulated_subject.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>

#include "src/unit_draws.hpp"
#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/hil/details/random.hpp"

namespace twinloop::hil {
namespace {

using details::Xoshiro256pp;

constexpr std::size_t kLfpSources = 3;
constexpr std::size_t kMaxSlots = 64;          // stimuli whose response windows may still matter
constexpr std::size_t kHandOffCapacity = 256;  // stimuli between two generate() calls
constexpr std::size_t kChunkRows = 256;        // scratch rows: bounds the float buffer
constexpr double kInf = std::numeric_limits<double>::infinity();

// Independent PRNG streams: one per purpose and one per unit, so that changing e.g. the noise
// consumption never moves a spike.
enum Stream : std::uint64_t {
  kLayout = 0,
  kNoise,
  kCommonMode,
  kLfp,
  kGain,
  kSpatialFrequency,
  kUnitBase = 1000
};

struct Pending {
  std::uint64_t trial = 0;
  protocols::Stimulus stimulus;
  std::int64_t onset_sample = 0;
  std::int64_t duration_samples = 0;
};

// A stimulus whose response windows (per unit, shifted by each unit's latency) may still overlap
// samples the generator has not consumed.
struct Slot {
  bool used = false;
  std::int64_t onset = 0;
  std::int64_t duration = 0;
  float* rates_hz = nullptr;  // one per unit, into Impl::slot_rates_
};

// Generator-side state of one unit: everything its spikes need, nothing else (hot data).
struct UnitRuntime {
  double baseline_hz = 0.0;
  double latency_samples = 0.0;
  double amplitude0_counts = 0.0;  // A0 in ADC counts
  double inv_d0_sq = 0.0;          // 1 / d0^2, um^-2
  std::size_t first_channel = 0;
  std::size_t channel_count = 0;
  std::array<double, kSpikeChannels> planar_sq{};  // dx^2 + plane distance^2 per window site, um^2
  std::array<double, kSpikeChannels> dz_um{};      // site z - unit z at the starting position
  std::array<float, kTemplateSamples> waveform{};  // trough = -1
  double cursor = 0.0;     // continuous sample time up to which the hazard has been consumed
  double remaining = 0.0;  // unit-exponential hazard left before the next spike
  Xoshiro256pp rng;
  ResponseState state;
};

struct ActiveSpike {
  std::int64_t start = 0;  // first template sample
  std::uint32_t unit = 0;
  std::uint32_t first_channel = 0;
  std::uint32_t channel_count = 0;
  std::array<float, kSpikeChannels> amplitude_counts{};
};

// Extracellular spike: a narrow negative Gaussian trough (sodium current) followed by a slower,
// smaller positive Gaussian (repolarisation), tapered to zero at both ends, scaled to trough -1.
std::array<float, kTemplateSamples> make_waveform(double sample_rate_hz, double trough_width_ms,
                                                  double repol_height, double& repol_ratio) {
  const double repol_delay_ms = 0.35 + 2.5 * trough_width_ms;
  const double repol_width_ms = 0.12 + 1.2 * trough_width_ms;
  std::array<double, kTemplateSamples> v{};
  constexpr std::size_t kTaper = 12;
  for (std::size_t i = 0; i < kTemplateSamples; ++i) {
    const double t_ms =
        (static_cast<double>(i) - static_cast<double>(kTroughIndex)) * 1e3 / sample_rate_hz;
    const double a = t_ms / trough_width_ms;
    const double b = (t_ms - repol_delay_ms) / repol_width_ms;
    double x = -std::exp(-0.5 * a * a) + repol_height * std::exp(-0.5 * b * b);
    if (i + kTaper >= kTemplateSamples) {  // raised-cosine tail so the spike ends at 0
      const double f = static_cast<double>(kTemplateSamples - 1 - i) / kTaper;
      x *= 0.5 - 0.5 * std::cos(std::numbers::pi * f);
    }
    v[i] = x;
  }
  const double lo = *std::min_element(v.begin(), v.end());
  const double hi = *std::max_element(v.begin(), v.end());
  repol_ratio = hi / -lo;
  std::array<float, kTemplateSamples> out{};
  for (std::size_t i = 0; i < kTemplateSamples; ++i) out[i] = static_cast<float>(v[i] / -lo);
  return out;
}

}  // namespace

struct SimulatedSubject::Impl {
  SimulationConfig config;
  drivers::ProbeInfo info;
  std::vector<UnitTruth> units;
  std::vector<UnitRuntime> runtime;

  // Derived constants.
  std::size_t channels = 0;
  std::size_t stored = 0;
  double refractory_samples = 0.0;
  double max_latency_samples = 0.0;
  double noise_counts = 0.0;
  float clip_lo = 0.0f;
  float clip_hi = 0.0f;
  std::int64_t sync_half_period = 0;
  std::int16_t sync_high = 0;
  std::int64_t onset_latency = 0;
  double drift_amplitude_um = 0.0;
  double drift_omega = 0.0;  // rad per sample

  // Background state.
  Xoshiro256pp noise_rng;
  Xoshiro256pp common_rng;
  Xoshiro256pp lfp_rng;
  Xoshiro256pp gain_rng;
  const float* gauss = nullptr;
  double common_a = 0.0, common_b = 0.0, common_state = 0.0, common_counts = 0.0;
  double lfp_a = 0.0, lfp_b = 0.0, lfp_g = 0.0;
  std::array<double, kLfpSources> lfp_y1{}, lfp_y2{};
  std::array<std::vector<float>, kLfpSources> lfp_weight_counts;  // per channel

  // Generator working memory.
  std::vector<float> scratch;  // kChunkRows x channels, in ADC counts
  std::vector<ActiveSpike> active;
  std::size_t active_count = 0;
  std::array<Slot, kMaxSlots> slots{};
  std::vector<float> slot_rates;  // kMaxSlots x units
  std::int64_t next_sample = 0;

  // Hand-off and published state.
  boost::lockfree::spsc_queue<Pending, boost::lockfree::capacity<kHandOffCapacity>> pending;
  std::atomic<std::int64_t> generated_until{0};
  std::vector<SpikeTruth> spikes;
  std::atomic<std::size_t> spike_count{0};
  std::vector<TrialTruth> trials;
  std::vector<float> trial_rates;
  std::atomic<std::size_t> trial_count{0};
  std::atomic<std::uint64_t> dropped_stimuli{0};
  std::atomic<std::uint64_t> late_stimuli{0};
  std::atomic<std::uint64_t> dropped_spikes{0};

  explicit Impl(SimulationConfig c);
  void build_units();
  void build_background();
  void drain_pending() noexcept;
  void free_finished_slots() noexcept;
  void rate_segment(std::size_t u, double t, double& rate_hz, double& segment_end) const noexcept;
  void advance_spikes(double horizon) noexcept;
  void emit_spike(std::size_t u, double t) noexcept;
  void fill_chunk(std::int64_t first, std::size_t rows, std::int16_t* out) noexcept;

  double gaussian(Xoshiro256pp& rng) const noexcept { return gauss[rng.next() >> 48]; }
};

SimulatedSubject::Impl::Impl(SimulationConfig c) : config(std::move(c)) {
  if (auto why = config.validate(); !why.empty()) throw std::invalid_argument(why);
  channels = config.channels;
  stored = config.stored_channels();
  const double fs = config.sample_rate_hz;
  info.name = config.name;
  info.stored_channels = stored;
  info.neural_channels = channels;
  info.has_sync_word = config.has_sync_word;
  info.sample_rate_hz = fs;
  info.microvolts_per_bit = config.microvolts_per_bit;
  info.geometry = drivers::neuropixels1_geometry(channels);

  refractory_samples = config.refractory_ms * 1e-3 * fs;
  noise_counts = config.noise_uv_rms / config.microvolts_per_bit;
  const double full_scale = std::ldexp(1.0, config.adc_bits - 1);
  clip_lo = static_cast<float>(-full_scale);
  clip_hi = static_cast<float>(full_scale - 1.0);
  sync_half_period = std::max<std::int64_t>(1, std::llround(config.sync_period_s * fs / 2.0));
  sync_high = static_cast<std::int16_t>(1 << config.sync_bit);
  onset_latency = std::llround(config.stimulator_latency_ms * 1e-3 * fs);
  drift_amplitude_um = config.drift_amplitude_um;
  drift_omega = 2.0 * std::numbers::pi / (config.drift_period_s * fs);
  gauss = details::gaussian_table().data();

  build_units();
  build_background();

  scratch.assign(kChunkRows * channels, 0.0f);
  // At most two spikes of one unit overlap (refractory >= 0 ms, template 2 ms => bounded by the
  // rate); generous headroom, and overflow only skips rendering, never the ground truth.
  active.resize(units.size() * 8 + 64);
  slot_rates.assign(kMaxSlots * units.size(), 0.0f);
  for (std::size_t s = 0; s < kMaxSlots; ++s)
    slots[s].rates_hz = slot_rates.data() + s * units.size();

  std::size_t spike_capacity = config.max_recorded_spikes;
  if (spike_capacity == 0) {
    if (config.seconds > 0.0) {
      double peak_rate_sum = 0.0;
      for (const auto& u : units) {
        const auto& r = u.response;
        peak_rate_sum += r.baseline_hz + r.peak_evoked_hz + r.second_peak_evoked_hz;
      }
      spike_capacity = static_cast<std::size_t>(config.seconds * peak_rate_sum * 3.0) + 100000;
    } else {
      spike_capacity = 4'000'000;
    }
  }
  spikes.resize(spike_capacity);
  trials.resize(config.max_recorded_trials);
  trial_rates.assign(config.max_recorded_trials * units.size(), 0.0f);
}

void SimulatedSubject::Impl::build_units() {
  Xoshiro256pp rng(details::derive_seed(config.seed, kLayout));
  const auto& sites = info.geometry.sites;
  double x_lo = kInf, x_hi = -kInf, z_lo = kInf, z_hi = -kInf;
  for (const auto& s : sites) {
    x_lo = std::min(x_lo, s.x_um);
    x_hi = std::max(x_hi, s.x_um);
    z_lo = std::min(z_lo, s.z_um);
    z_hi = std::max(z_hi, s.z_um);
  }
  const auto kinds = details::assign_kinds(config.mix, config.unit_count, rng);
  const double fs = config.sample_rate_hz;
  const double noise_ref_uv = config.noise_uv_rms > 0.0 ? config.noise_uv_rms : 7.0;
  const double d0 = config.spatial_decay_um;
  const std::size_t window = std::min(kSpikeChannels, channels);

  units.resize(config.unit_count);
  runtime.resize(config.unit_count);
  for (std::size_t i = 0; i < config.unit_count; ++i) {
    UnitTruth& u = units[i];
    u.id = static_cast<std::uint32_t>(i);
    // Every unit draws the same sequence of numbers whatever its kind, so changing the mix never
    // moves another unit or changes its waveform.
    u.z_um = rng.uniform(z_lo, z_hi);
    u.x_um = rng.uniform(x_lo - 10.0, x_hi + 10.0);  // the NP1.0 shank is ~70 um wide
    u.plane_distance_um = rng.uniform(config.min_plane_distance_um, config.max_plane_distance_um);
    const bool low = rng.uniform() < config.low_snr_fraction;
    const double split = std::min(5.0, config.max_snr);
    const double snr_lo = std::min(config.min_snr, split);
    const double snr_draw = rng.uniform();
    u.snr =
        low ? snr_lo + (split - snr_lo) * snr_draw
            : std::exp(std::log(split) +
                       (std::log(std::max(config.max_snr, split)) - std::log(split)) * snr_draw);
    u.trough_width_ms = rng.uniform(0.07, 0.18);
    const double repol_height = rng.uniform(0.2, 0.45);

    u.response =
        details::draw_response(kinds[i], config.min_baseline_hz, config.max_baseline_hz, rng);

    // Nearest site in 3-D (the plane distance is common to all sites, so the planar minimum).
    double best = kInf;
    for (std::size_t ch = 0; ch < sites.size(); ++ch) {
      const double d = std::hypot(sites[ch].x_um - u.x_um, sites[ch].z_um - u.z_um);
      if (d < best) {
        best = d;
        u.peak_channel = ch;
      }
    }
    u.peak_distance_um = std::hypot(best, u.plane_distance_um);
    u.spatial_decay_um = d0;
    u.noise_uv = config.noise_uv_rms;
    u.peak_amplitude_uv = u.snr * noise_ref_uv;
    const double rel = u.peak_distance_um / d0;
    u.amplitude0_uv = u.peak_amplitude_uv * (1.0 + rel * rel);
    u.waveform = make_waveform(fs, u.trough_width_ms, repol_height, u.repolarisation_ratio);
    if (config.noise_uv_rms <= 0.0) u.snr = 0.0;  // no noise: SNR undefined, amplitude still set

    UnitRuntime& rt = runtime[i];
    const ResponseParams& r = u.response;
    rt.baseline_hz = r.baseline_hz;
    rt.latency_samples = r.latency_ms * 1e-3 * fs;
    max_latency_samples = std::max(max_latency_samples, rt.latency_samples);
    rt.amplitude0_counts = u.amplitude0_uv / config.microvolts_per_bit;
    rt.inv_d0_sq = 1.0 / (d0 * d0);
    rt.channel_count = window;
    const std::size_t half = window / 2;
    rt.first_channel =
        std::min(u.peak_channel > half ? u.peak_channel - half : 0, channels - window);
    for (std::size_t k = 0; k < window; ++k) {
      const auto& s = sites[rt.first_channel + k];
      const double dx = s.x_um - u.x_um;
      rt.planar_sq[k] = dx * dx + u.plane_distance_um * u.plane_distance_um;
      rt.dz_um[k] = s.z_um - u.z_um;
    }
    rt.waveform = u.waveform;
    rt.rng.reseed(details::derive_seed(config.seed, kUnitBase + i));
    rt.remaining = rt.rng.exponential();
  }
  if (config.spatial_frequency_dimension >= 0) {
    Xoshiro256pp sf(details::derive_seed(config.seed, kSpatialFrequency));
    const double lo = std::log2(config.min_preferred_sf_cpd);
    const double hi = std::log2(config.max_preferred_sf_cpd);
    for (UnitTruth& u : units) {
      u.response.preferred_sf_cpd = std::exp2(sf.uniform(lo, hi));
      u.response.sf_sigma_octaves = config.sf_sigma_octaves;
    }
  }
}

void SimulatedSubject::Impl::build_background() {
  const double fs = config.sample_rate_hz;
  noise_rng.reseed(details::derive_seed(config.seed, kNoise));
  common_rng.reseed(details::derive_seed(config.seed, kCommonMode));
  lfp_rng.reseed(details::derive_seed(config.seed, kLfp));
  gain_rng.reseed(details::derive_seed(config.seed, kGain));

  // Common mode: unit-variance AR(1) scaled to the configured rms (in counts).
  common_a = std::exp(-2.0 * std::numbers::pi * config.common_mode_corner_hz / fs);
  common_b = std::sqrt(1.0 - common_a * common_a);
  common_counts = config.common_mode_uv_rms / config.microvolts_per_bit;
  common_state = gaussian(common_rng);

  // LFP sources: two cascaded one-pole low-passes (-12 dB/octave above the corner). The first stage
  // is a unit-variance AR(1); a second stage y2 = a y2 + g y1 has variance
  // g^2 (1 + a^2) / (1 - a^2)^2, so g = (1 - a^2) / sqrt(1 + a^2) keeps it at 1.
  lfp_a = std::exp(-2.0 * std::numbers::pi * config.lfp_corner_hz / fs);
  lfp_b = std::sqrt(1.0 - lfp_a * lfp_a);
  lfp_g = (1.0 - lfp_a * lfp_a) / std::sqrt(1.0 + lfp_a * lfp_a);
  // Start in the stationary regime: run ~8 time constants of the slow filter before sample 0.
  const auto warmup =
      static_cast<std::size_t>(8.0 * fs / (2.0 * std::numbers::pi * config.lfp_corner_hz)) + 1;
  for (std::size_t j = 0; j < kLfpSources; ++j) {
    lfp_y1[j] = gaussian(lfp_rng);
    lfp_y2[j] = lfp_y1[j];
  }
  for (std::size_t n = 0; n < warmup; ++n) {
    for (std::size_t j = 0; j < kLfpSources; ++j) {
      lfp_y1[j] = lfp_a * lfp_y1[j] + lfp_b * gaussian(lfp_rng);
      lfp_y2[j] = lfp_a * lfp_y2[j] + lfp_g * lfp_y1[j];
    }
  }
  // Each source is strongest around its own depth (a smooth 800 um profile), and the weights are
  // normalised so every channel carries the configured LFP rms.
  const auto& sites = info.geometry.sites;
  double z_hi = 0.0;
  for (const auto& s : sites) z_hi = std::max(z_hi, s.z_um);
  const double lfp_counts = config.lfp_uv_rms / config.microvolts_per_bit;
  for (auto& w : lfp_weight_counts) w.assign(channels, 0.0f);
  for (std::size_t ch = 0; ch < channels; ++ch) {
    std::array<double, kLfpSources> g{};
    double norm = 0.0;
    for (std::size_t j = 0; j < kLfpSources; ++j) {
      const double centre = z_hi * (0.2 + 0.3 * static_cast<double>(j));
      const double dz = (sites[ch].z_um - centre) / 800.0;
      g[j] = std::exp(-0.5 * dz * dz);
      norm += g[j] * g[j];
    }
    norm = std::sqrt(norm);
    for (std::size_t j = 0; j < kLfpSources; ++j) {
      lfp_weight_counts[j][ch] = static_cast<float>(lfp_counts * g[j] / norm);
    }
  }
}

void SimulatedSubject::Impl::drain_pending() noexcept {
  Pending p;
  const std::size_t n_units = units.size();
  while (pending.pop(p)) {
    Slot* slot = nullptr;
    for (auto& s : slots) {
      if (!s.used) {
        slot = &s;
        break;
      }
    }
    if (slot == nullptr) {
      dropped_stimuli.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    slot->used = true;
    slot->onset = p.onset_sample;
    slot->duration = p.duration_samples;
    const bool late = p.onset_sample < next_sample;
    if (late) late_stimuli.fetch_add(1, std::memory_order_relaxed);

    StimulusFeatures features;
    if (config.direction_dimension >= 0) {
      features.direction_deg =
          p.stimulus.values[static_cast<std::size_t>(config.direction_dimension)];
    }
    if (config.contrast_dimension >= 0) {
      features.contrast = p.stimulus.values[static_cast<std::size_t>(config.contrast_dimension)];
    }
    if (config.spatial_frequency_dimension >= 0) {
      features.spatial_frequency_cpd =
          p.stimulus.values[static_cast<std::size_t>(config.spatial_frequency_dimension)];
    }
    const double onset_s = static_cast<double>(p.onset_sample) / config.sample_rate_hz;
    const std::size_t t = trial_count.load(std::memory_order_relaxed);
    const bool record = t < trials.size();
    for (std::size_t u = 0; u < n_units; ++u) {
      const ResponseParams& r = units[u].response;
      const double gain = r.kind == ResponseKind::kGainFluctuating
                              ? gain_rng.gamma(r.gain_shape) / r.gain_shape
                              : 1.0;
      const auto rate =
          static_cast<float>(trial_window_rate_hz(r, runtime[u].state, features, onset_s, gain));
      slot->rates_hz[u] = rate;
      if (record) trial_rates[t * n_units + u] = rate;
    }
    if (record) {
      trials[t] = TrialTruth{p.trial, p.stimulus, p.onset_sample, p.duration_samples, late};
      trial_count.store(t + 1, std::memory_order_release);
    }
  }
}

void SimulatedSubject::Impl::free_finished_slots() noexcept {
  double min_cursor = kInf;
  for (const auto& rt : runtime) min_cursor = std::min(min_cursor, rt.cursor);
  if (runtime.empty()) min_cursor = static_cast<double>(next_sample);
  for (auto& s : slots) {
    if (s.used && static_cast<double>(s.onset + s.duration) + max_latency_samples <= min_cursor) {
      s.used = false;
    }
  }
}

// Rate of unit u at continuous sample time t, and the next time it may change. When response
// windows of several stimuli overlap, the latest onset wins (a new stimulus replaces the old one).
void SimulatedSubject::Impl::rate_segment(std::size_t u, double t, double& rate_hz,
                                          double& segment_end) const noexcept {
  const UnitRuntime& rt = runtime[u];
  rate_hz = rt.baseline_hz;
  segment_end = kInf;
  std::int64_t best_onset = std::numeric_limits<std::int64_t>::min();
  for (const auto& s : slots) {
    if (!s.used) continue;
    const double start = static_cast<double>(s.onset) + rt.latency_samples;
    const double end = start + static_cast<double>(s.duration);
    if (t >= start && t < end && s.onset > best_onset) {
      best_onset = s.onset;
      rate_hz = s.rates_hz[u];
    }
    if (start > t) segment_end = std::min(segment_end, start);
    if (end > t) segment_end = std::min(segment_end, end);
  }
}

// Exact inhomogeneous Poisson sampling by time rescaling over piecewise-constant rates, with an
// absolute refractory period as dead time. The hazard is raised to r / (1 - r * tau) so that the
// mean rate (not the hazard) equals the model's rate. A unit stops where its current segment runs
// past the horizon without consuming hazard up to the horizon, so block boundaries never change a
// spike time.
void SimulatedSubject::Impl::advance_spikes(double horizon) noexcept {
  const double fs = config.sample_rate_hz;
  const double tau_s = config.refractory_ms * 1e-3;
  for (std::size_t u = 0; u < runtime.size(); ++u) {
    UnitRuntime& rt = runtime[u];
    double t = rt.cursor;
    for (;;) {
      double rate_hz = 0.0;
      double segment_end = 0.0;
      rate_segment(u, t, rate_hz, segment_end);
      const double r_tau = std::min(rate_hz * tau_s, 0.9);
      const double hazard = rate_hz > 0.0 ? rate_hz / (1.0 - r_tau) / fs : 0.0;  // per sample
      const double stop = std::min(segment_end, horizon);
      if (hazard > 0.0) {
        const double spike_t = t + std::max(rt.remaining, 0.0) / hazard;
        if (spike_t < stop) {
          emit_spike(u, spike_t);
          t = spike_t + refractory_samples;
          rt.remaining = rt.rng.exponential();
          continue;
        }
      }
      if (segment_end <= horizon) {
        rt.remaining -= hazard * (segment_end - t);
        t = segment_end;
        continue;
      }
      if (hazard == 0.0) t = std::max(t, horizon);  // nothing to consume: safe to move on
      break;
    }
    rt.cursor = t;
  }
}

void SimulatedSubject::Impl::emit_spike(std::size_t u, double t) noexcept {
  const auto sample = static_cast<std::int64_t>(std::floor(t));
  const std::size_t n = spike_count.load(std::memory_order_relaxed);
  if (n < spikes.size()) {
    spikes[n] = SpikeTruth{sample, static_cast<std::uint32_t>(u)};
    spike_count.store(n + 1, std::memory_order_release);
  } else {
    dropped_spikes.fetch_add(1, std::memory_order_relaxed);
  }
  UnitRuntime& rt = runtime[u];
  // Drawn even when rendering is skipped, so the unit's stream never depends on capacity.
  const double jitter = 1.0 + config.amplitude_jitter * rt.rng.normal();
  if (active_count >= active.size()) return;
  ActiveSpike& a = active[active_count++];
  a.start = sample - static_cast<std::int64_t>(kTroughIndex);
  a.unit = static_cast<std::uint32_t>(u);
  a.first_channel = static_cast<std::uint32_t>(rt.first_channel);
  a.channel_count = static_cast<std::uint32_t>(rt.channel_count);
  // Drift moves the probe along z relative to the tissue: site z becomes z + drift.
  const double drift_um = drift_amplitude_um * std::sin(drift_omega * static_cast<double>(sample));
  const double a0 = rt.amplitude0_counts * std::max(jitter, 0.0);
  for (std::size_t k = 0; k < rt.channel_count; ++k) {
    const double dz = rt.dz_um[k] + drift_um;
    const double d_sq = rt.planar_sq[k] + dz * dz;
    a.amplitude_counts[k] = static_cast<float>(a0 / (1.0 + d_sq * rt.inv_d0_sq));
  }
}

void SimulatedSubject::Impl::fill_chunk(std::int64_t first, std::size_t rows,
                                        std::int16_t* out) noexcept {
  const std::size_t C = channels;
  const auto noise = static_cast<float>(noise_counts);
  const float* w0 = lfp_weight_counts[0].data();
  const float* w1 = lfp_weight_counts[1].data();
  const float* w2 = lfp_weight_counts[2].data();
  static_assert(kLfpSources == 3);

  for (std::size_t r = 0; r < rows; ++r) {
    float* row = scratch.data() + r * C;
    // Four 16-bit table indices per PRNG call: the cost that dominates the whole simulator.
    std::size_t c = 0;
    for (; c + 4 <= C; c += 4) {
      const std::uint64_t bits = noise_rng.next();
      row[c] = gauss[bits & 0xFFFF] * noise;
      row[c + 1] = gauss[(bits >> 16) & 0xFFFF] * noise;
      row[c + 2] = gauss[(bits >> 32) & 0xFFFF] * noise;
      row[c + 3] = gauss[bits >> 48] * noise;
    }
    if (c < C) {
      std::uint64_t bits = noise_rng.next();
      for (; c < C; ++c, bits >>= 16) row[c] = gauss[bits & 0xFFFF] * noise;
    }
    common_state = common_a * common_state + common_b * gaussian(common_rng);
    for (std::size_t j = 0; j < kLfpSources; ++j) {
      lfp_y1[j] = lfp_a * lfp_y1[j] + lfp_b * gaussian(lfp_rng);
      lfp_y2[j] = lfp_a * lfp_y2[j] + lfp_g * lfp_y1[j];
    }
    const auto cm = static_cast<float>(common_state * common_counts);
    const auto s0 = static_cast<float>(lfp_y2[0]);
    const auto s1 = static_cast<float>(lfp_y2[1]);
    const auto s2 = static_cast<float>(lfp_y2[2]);
    for (std::size_t k = 0; k < C; ++k) row[k] += cm + w0[k] * s0 + w1[k] * s1 + w2[k] * s2;
  }

  const std::int64_t end = first + static_cast<std::int64_t>(rows);
  for (std::size_t i = 0; i < active_count;) {
    ActiveSpike& a = active[i];
    const std::int64_t a_end = a.start + static_cast<std::int64_t>(kTemplateSamples);
    const std::int64_t from = std::max(a.start, first);
    const std::int64_t to = std::min(a_end, end);
    const float* wave = runtime[a.unit].waveform.data();
    for (std::int64_t s = from; s < to; ++s) {
      const float w = wave[s - a.start];
      float* row = scratch.data() + static_cast<std::size_t>(s - first) * C + a.first_channel;
      for (std::size_t k = 0; k < a.channel_count; ++k) row[k] += a.amplitude_counts[k] * w;
    }
    if (a_end <= end) {
      a = active[--active_count];  // finished: swap-remove
    } else {
      ++i;
    }
  }

  // Round half up via truncation of a positive value (vectorises; no libm call per sample).
  constexpr float kOffset = 65536.0f;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = scratch.data() + r * C;
    std::int16_t* dst = out + r * stored;
    for (std::size_t k = 0; k < C; ++k) {
      const float v = std::clamp(row[k], clip_lo, clip_hi) + (kOffset + 0.5f);
      dst[k] = static_cast<std::int16_t>(static_cast<std::int32_t>(v) - 65536);
    }
    if (config.has_sync_word) {
      const std::int64_t sample = first + static_cast<std::int64_t>(r);
      dst[C] = ((sample / sync_half_period) % 2 == 0) ? sync_high : std::int16_t{0};
    }
  }
}

SimulatedSubject::SimulatedSubject(SimulationConfig config)
    : impl_(std::make_unique<Impl>(std::move(config))) {}
SimulatedSubject::~SimulatedSubject() = default;

const SimulationConfig& SimulatedSubject::config() const noexcept {
  return impl_->config;
}
const drivers::ProbeInfo& SimulatedSubject::probe_info() const noexcept {
  return impl_->info;
}
const std::vector<UnitTruth>& SimulatedSubject::units() const noexcept {
  return impl_->units;
}

std::size_t SimulatedSubject::generate(drivers::SampleBlock& block, std::size_t rows) noexcept {
  Impl& m = *impl_;
  if (block.stored_channels != m.stored) return 0;
  rows = std::min(rows, block.capacity_samples());
  m.drain_pending();
  const std::int64_t first = m.next_sample;
  std::size_t done = 0;
  while (done < rows) {
    const std::size_t n = std::min(kChunkRows, rows - done);
    const std::int64_t chunk_first = first + static_cast<std::int64_t>(done);
    // Spikes whose template starts before the chunk's end: trough up to kTroughIndex beyond it.
    m.advance_spikes(static_cast<double>(chunk_first + static_cast<std::int64_t>(n) +
                                         static_cast<std::int64_t>(kTroughIndex)));
    m.fill_chunk(chunk_first, n, block.samples.data() + done * m.stored);
    done += n;
  }
  m.free_finished_slots();
  block.first_sample = first;
  block.sample_count = rows;
  m.next_sample = first + static_cast<std::int64_t>(rows);
  m.generated_until.store(m.next_sample, std::memory_order_release);
  return rows;
}

std::int64_t SimulatedSubject::generated_until() const noexcept {
  return impl_->generated_until.load(std::memory_order_acquire);
}

std::int64_t SimulatedSubject::onset_latency_samples() const noexcept {
  return impl_->onset_latency;
}

bool SimulatedSubject::try_schedule(std::uint64_t trial, const protocols::Stimulus& stimulus,
                                    std::int64_t onset_sample,
                                    std::int64_t duration_samples) noexcept {
  if (impl_->pending.push(Pending{trial, stimulus, onset_sample, duration_samples})) return true;
  impl_->dropped_stimuli.fetch_add(1, std::memory_order_relaxed);
  return false;
}

GroundTruth SimulatedSubject::ground_truth() const {
  const Impl& m = *impl_;
  GroundTruth truth;
  truth.sample_rate_hz = m.config.sample_rate_hz;
  // Order matters: everything published before generated_until was stored is visible after it.
  truth.samples_generated = m.generated_until.load(std::memory_order_acquire);
  const std::size_t n_spikes = m.spike_count.load(std::memory_order_acquire);
  const std::size_t n_trials = m.trial_count.load(std::memory_order_acquire);
  truth.units = m.units;
  truth.spikes.reserve(n_spikes);
  for (std::size_t i = 0; i < n_spikes; ++i) {
    if (m.spikes[i].sample < truth.samples_generated) truth.spikes.push_back(m.spikes[i]);
  }
  truth.trials.assign(m.trials.begin(), m.trials.begin() + static_cast<std::ptrdiff_t>(n_trials));
  truth.trial_rates_hz.assign(
      m.trial_rates.begin(),
      m.trial_rates.begin() + static_cast<std::ptrdiff_t>(n_trials * m.units.size()));
  truth.dropped_spike_records = m.dropped_spikes.load(std::memory_order_relaxed);
  return truth;
}

void SimulatedSubject::write_ground_truth(const std::filesystem::path& dir) const {
  hil::write_ground_truth(ground_truth(), dir);
}

std::uint64_t SimulatedSubject::dropped_stimuli() const noexcept {
  return impl_->dropped_stimuli.load(std::memory_order_relaxed);
}
std::uint64_t SimulatedSubject::late_stimuli() const noexcept {
  return impl_->late_stimuli.load(std::memory_order_relaxed);
}
std::uint64_t SimulatedSubject::dropped_spike_records() const noexcept {
  return impl_->dropped_spikes.load(std::memory_order_relaxed);
}

}  // namespace twinloop::hil

#include "twinloop/hil/simulation_config.hpp"

#include <cmath>
#include <string>

#include "src/unit_draws.hpp"
#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil {
namespace {

std::string bad(const char* field, const std::string& expected) {
  return std::string("SimulationConfig.") + field + ": expected " + expected;
}

}  // namespace

std::string SimulationConfig::validate() const {
  if (channels == 0 || channels > 4096) return bad("channels", "1..4096");
  if (!(sample_rate_hz >= 1000.0)) return bad("sample_rate_hz", ">= 1000");
  if (!(microvolts_per_bit > 0.0)) return bad("microvolts_per_bit", "> 0");
  if (adc_bits < 2 || adc_bits > 16) return bad("adc_bits", "2..16");
  if (sync_bit < 0 || sync_bit > 15) return bad("sync_bit", "0..15");
  if (has_sync_word && !(sync_period_s * sample_rate_hz >= 2.0)) {
    return bad("sync_period_s", "at least two samples");
  }
  if (!(min_baseline_hz > 0.0) || !(max_baseline_hz >= min_baseline_hz)) {
    return bad("min_baseline_hz/max_baseline_hz", "0 < min <= max");
  }
  if (!(refractory_ms >= 0.0) || refractory_ms * 1e-3 * max_baseline_hz >= 0.5) {
    return bad("refractory_ms", ">= 0 and well below the mean inter-spike interval");
  }
  if (!(min_snr > 0.0) || !(max_snr >= min_snr)) return bad("min_snr/max_snr", "0 < min <= max");
  if (!(low_snr_fraction >= 0.0 && low_snr_fraction <= 1.0)) {
    return bad("low_snr_fraction", "0..1");
  }
  if (!(spatial_decay_um > 0.0)) return bad("spatial_decay_um", "> 0");
  if (!(min_plane_distance_um >= 0.0) || !(max_plane_distance_um >= min_plane_distance_um)) {
    return bad("min_plane_distance_um/max_plane_distance_um", "0 <= min <= max");
  }
  if (!(amplitude_jitter >= 0.0 && amplitude_jitter < 0.5))
    return bad("amplitude_jitter", "0..0.5");
  const double mix_sum = mix.direction_tuned + mix.bimodal + mix.adapting + mix.gain_fluctuating +
                         mix.untuned + mix.orientation_tuned;
  if (mix.direction_tuned < 0 || mix.bimodal < 0 || mix.adapting < 0 || mix.gain_fluctuating < 0 ||
      mix.untuned < 0 || mix.orientation_tuned < 0 || !(mix_sum > 0.0)) {
    return bad("mix", "non-negative weights with a positive sum");
  }
  if (!(noise_uv_rms >= 0.0) || !(common_mode_uv_rms >= 0.0) || !(lfp_uv_rms >= 0.0)) {
    return bad("noise_uv_rms/common_mode_uv_rms/lfp_uv_rms", ">= 0");
  }
  if (!(common_mode_corner_hz > 0.0) || !(lfp_corner_hz > 0.0)) {
    return bad("common_mode_corner_hz/lfp_corner_hz", "> 0");
  }
  if (!(drift_amplitude_um >= 0.0) || !(drift_period_s > 0.0)) {
    return bad("drift_amplitude_um/drift_period_s", "amplitude >= 0, period > 0");
  }
  if (!(seconds >= 0.0) || !std::isfinite(seconds)) return bad("seconds", ">= 0 (0 = endless)");
  if (block_samples == 0) return bad("block_samples", ">= 1");
  const int dims = static_cast<int>(protocols::kMaxStimulusDimensions);
  if (direction_dimension < -1 || direction_dimension >= dims) {
    return bad("direction_dimension", "-1 or a stimulus value index");
  }
  if (contrast_dimension < -1 || contrast_dimension >= dims) {
    return bad("contrast_dimension", "-1 or a stimulus value index");
  }
  if (const auto problem =
          details::spatial_frequency_problem(spatial_frequency_dimension, sf_sigma_octaves,
                                             min_preferred_sf_cpd, max_preferred_sf_cpd)) {
    return bad(problem->first, problem->second);
  }
  if (!(stimulator_latency_ms >= 0.0)) return bad("stimulator_latency_ms", ">= 0");
  if (max_recorded_trials == 0) return bad("max_recorded_trials", ">= 1");
  return {};
}

}  // namespace twinloop::hil

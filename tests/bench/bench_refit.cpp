// bench_refit: what one refit of a protocol's twins costs between trials, at a probe's unit
// count on one core. A refit fits every twin to all trials so far, draws its parameters from the
// Laplace approximation and predicts every candidate (TorchTwin::update); a session's next trial
// waits for it when it takes longer than a trial (docs/session.md), so it bounds how fast a rich
// stimulus space can be run.
//
// The trials are simulated: each unit direction-, contrast- and (when the space has it)
// spatial-frequency-tuned, Poisson counts, fixed seed. Each repetition adds one trial and refits,
// as a session does; the first refit (cold: no previous fit to start from) is reported apart.
// Then each twin, as last fitted, predicts 200 new trials of the same units: their log-likelihood
// is the quality a session's posterior scores.
//
// --convergence then asks whether the joint fit (every unit and start in one optimisation)
// reached each unit's optimum: each tuned twin is refitted to every unit alone with a generous
// budget (300 L-BFGS iterations, 30 Newton steps), and the two fits' plug-in predictions
// (parameter_uncertainty 0, so Laplace draws do not differ) and log-likelihoods of the trials
// are compared unit by unit. --set NAME=VALUE sets a parameter of every tuned twin (e.g.
// max_iterations, newton_iterations) for the timed refits and the joint fit.
//
//   bench_refit [PROTOCOL.yaml (config/examples/protocol_direction_orientation_sf.yaml)]
//               [--units U (384)] [--trials N (60)] [--repeats R (5)] [--convergence]
//               [--set NAME=VALUE]...
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/count_distribution.hpp"
#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/prediction.hpp"

namespace {

using namespace twinloop;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/// A stand-in unit: von Mises in direction, Naka-Rushton in contrast, log-Gaussian in spatial
/// frequency, around per-unit preferences.
struct StandIn {
  double preferred_rad, preferred_log2_sf, baseline, amplitude;
};

bool tuned(const protocols::HypothesisSpec& spec) {
  return spec.family == protocols::HypothesisFamily::kDirectionTuning ||
         spec.family == protocols::HypothesisFamily::kOrientationTuning;
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))];
}

/// Each fitted twin once over all units together and once per unit alone, with plug-in
/// predictions; prints how far the joint fit is from the per-unit ones.
void check_convergence(const protocols::Protocol& protocol, const twin::TwinOptions& options,
                       const std::vector<protocols::Stimulus>& stimuli,
                       const std::vector<std::uint32_t>& counts, std::size_t units) {
  const protocols::StimulusSpace& space = protocol.stimulus;
  std::vector<protocols::Stimulus> candidates;
  for (std::size_t c = 0; c < space.candidate_count(); ++c) candidates.push_back(space.stimulus(c));
  const std::size_t trials = stimuli.size();
  std::printf("convergence: joint fit of %zu units against each unit fitted alone (plug-in)\n",
              units);
  for (protocols::HypothesisSpec spec : protocol.hypotheses) {
    if (!tuned(spec)) continue;
    spec.params["parameter_uncertainty"] = 0.0;
    protocols::HypothesisSpec reference = spec;
    reference.params["max_iterations"] = 300;
    reference.params["newton_iterations"] = 30;
    const auto started = Clock::now();
    auto joint = twin::make_hypothesis(spec, space, units, options);
    joint->update(stimuli, counts);
    twin::PredictionBatch joint_candidates, joint_trials;
    joint_candidates.resize(candidates.size(), units);
    joint_trials.resize(trials, units);
    joint->predict(candidates, joint_candidates);
    joint->predict(stimuli, joint_trials);

    std::vector<double> worst_ratio(units), gain(units);
    std::vector<std::uint32_t> unit_counts(trials);
    twin::PredictionBatch alone_candidates, alone_trials;
    alone_candidates.resize(candidates.size(), 1);
    alone_trials.resize(trials, 1);
    for (std::size_t u = 0; u < units; ++u) {
      for (std::size_t t = 0; t < trials; ++t) unit_counts[t] = counts[t * units + u];
      auto alone = twin::make_hypothesis(reference, space, 1, options);
      alone->update(stimuli, unit_counts);
      alone->predict(candidates, alone_candidates);
      alone->predict(stimuli, alone_trials);
      for (std::size_t c = 0; c < candidates.size(); ++c) {
        const double ratio = std::abs(std::log((joint_candidates.at(c, u).mean + 1e-9) /
                                               (alone_candidates.at(c, 0).mean + 1e-9)));
        worst_ratio[u] = std::max(worst_ratio[u], ratio);
      }
      for (std::size_t t = 0; t < trials; ++t) {
        gain[u] += twin::log_probability(alone_trials.at(t, 0), unit_counts[t]) -
                   twin::log_probability(joint_trials.at(t, u), unit_counts[t]);
      }
    }
    const auto share_over = [&](const std::vector<double>& v, double level) {
      return static_cast<double>(
                 std::count_if(v.begin(), v.end(), [&](double x) { return x > level; })) /
             static_cast<double>(v.size());
    };
    const auto share_under = [&](const std::vector<double>& v, double level) {
      return static_cast<double>(
                 std::count_if(v.begin(), v.end(), [&](double x) { return x < level; })) /
             static_cast<double>(v.size());
    };
    double total_gain = 0.0;
    for (const double g : gain) total_gain += g;
    std::printf(
        "  %-14s largest |log(mean joint / mean alone)| over candidates, per unit: median %.3f, "
        "90%% %.3f, max %.3f; units over 0.1: %.1f%%\n"
        "  %-14s log-likelihood of the trials, alone minus joint: total %+.1f nats, per unit "
        "median %+.3f, max %+.2f; units where alone is better by > 0.5 nats: %.1f%%, worse: %.1f%% "
        "(%.0f s)\n",
        spec.name.c_str(), quantile(worst_ratio, 0.5), quantile(worst_ratio, 0.9),
        quantile(worst_ratio, 1.0), 100.0 * share_over(worst_ratio, 0.1), "", total_gain,
        quantile(gain, 0.5), quantile(gain, 1.0), 100.0 * share_over(gain, 0.5),
        100.0 * share_under(gain, -0.5),
        std::chrono::duration<double>(Clock::now() - started).count());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path =
      std::string(TWINLOOP_SOURCE_DIR) + "/config/examples/protocol_direction_orientation_sf.yaml";
  std::size_t units = 384, trials = 60, repeats = 5;
  bool convergence = false;
  std::vector<std::pair<std::string, double>> settings;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--units" && has_value) {
      units = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--trials" && has_value) {
      trials = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--repeats" && has_value) {
      repeats = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--convergence") {
      convergence = true;
    } else if (arg == "--set" && has_value &&
               std::string(argv[i + 1]).find('=') != std::string::npos) {
      const std::string setting = argv[++i];
      const auto equals = setting.find('=');
      settings.emplace_back(setting.substr(0, equals), std::atof(setting.c_str() + equals + 1));
    } else if (arg.rfind("--", 0) != 0) {
      path = arg;
    } else {
      std::printf(
          "usage: bench_refit [PROTOCOL.yaml] [--units U (384)] [--trials N (60)] "
          "[--repeats R (5)] [--convergence] [--set NAME=VALUE]...\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (units == 0 || trials == 0 || repeats == 0) {
    std::fputs("bench_refit: --units, --trials and --repeats must be >= 1\n", stderr);
    return 2;
  }
  const auto loaded = protocols::load_protocol_file(path);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    return 1;
  }
  protocols::Protocol protocol = *loaded.protocol;
  for (protocols::HypothesisSpec& spec : protocol.hypotheses) {
    if (!tuned(spec)) continue;
    for (const auto& [name, value] : settings) spec.params[name] = value;
  }
  const protocols::StimulusSpace& space = protocol.stimulus;
  const auto direction = space.dimension_index("direction");
  const auto contrast = space.dimension_index("contrast");
  const auto sf = space.dimension_index("spatial_frequency");
  twin::TwinOptions options;
  options.window_seconds =
      (protocol.timing.response_end_ms - protocol.timing.response_start_ms) / 1000.0;

  std::mt19937_64 rng(20261127);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<StandIn> stand_ins;
  for (std::size_t u = 0; u < units; ++u) {
    stand_ins.push_back({2.0 * std::numbers::pi * uniform(rng),
                         std::log2(0.02) + 3.0 * uniform(rng), 1.0 + 4.0 * uniform(rng),
                         5.0 + 15.0 * uniform(rng)});
  }
  const auto mean_count = [&](const protocols::Stimulus& s, const StandIn& unit) {
    double gain = 1.0;
    if (direction) {
      gain *= std::exp(
          2.0 *
          (std::cos(s.value(*direction) * std::numbers::pi / 180.0 - unit.preferred_rad) - 1.0));
    }
    if (contrast) {
      const double c = std::abs(s.value(*contrast));
      gain *= c * c / (c * c + 0.09);
    }
    if (sf) {
      const double octaves = std::log2(s.value(*sf)) - unit.preferred_log2_sf;
      gain *= std::exp(-octaves * octaves / (2.0 * 0.36));
    }
    return (unit.baseline + unit.amplitude * gain) * options.window_seconds;
  };
  std::vector<protocols::Stimulus> stimuli;
  std::vector<std::uint32_t> counts;
  const auto add_trial = [&] {
    const auto c = static_cast<std::size_t>(uniform(rng) * double(space.candidate_count()));
    stimuli.push_back(space.stimulus(std::min(c, space.candidate_count() - 1)));
    for (const StandIn& unit : stand_ins) {
      std::poisson_distribution<std::uint32_t> poisson(mean_count(stimuli.back(), unit));
      counts.push_back(poisson(rng));
    }
  };
  for (std::size_t t = 0; t < trials; ++t) add_trial();

  std::printf("%s: %zu candidates, %zu units, %zu trials (+1 per repeat), one core\n", path.c_str(),
              space.candidate_count(), units, trials);
  std::vector<std::unique_ptr<twin::Hypothesis>> twins;
  try {
    for (const protocols::HypothesisSpec& spec : protocol.hypotheses) {
      twins.push_back(twin::make_hypothesis(spec, space, units, options));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_refit: %s: %s\n", path.c_str(), e.what());
    return 1;
  }
  std::vector<std::vector<double>> warm_ms(twins.size());
  std::vector<double> cold_ms(twins.size()), total_ms;
  for (std::size_t r = 0; r <= repeats; ++r) {
    if (r > 0) add_trial();
    double total = 0.0;
    for (std::size_t h = 0; h < twins.size(); ++h) {
      const auto started = Clock::now();
      twins[h]->update(stimuli, counts);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
      total += ms;
      if (r == 0) {
        cold_ms[h] = ms;
      } else {
        warm_ms[h].push_back(ms);
      }
    }
    if (r > 0) total_ms.push_back(total);
  }
  for (std::size_t h = 0; h < twins.size(); ++h) {
    std::printf("  %-14s %-20s first refit %7.0f ms, then median %7.0f ms\n",
                protocol.hypotheses[h].name.c_str(), std::string(twins[h]->family()).c_str(),
                cold_ms[h], median(warm_ms[h]));
  }
  std::printf(
      "  all twins: median %.0f ms per refit (%zu repeats); the protocol's trials start "
      "every %.0f ms\n",
      median(total_ms), repeats, protocol.timing.onset_interval_ms());
  // Held-out trials, drawn after the fits' trials: each twin's predictive log-likelihood of
  // them, the quality a session's posterior scores.
  {
    const std::size_t fitted_trials = stimuli.size();
    for (std::size_t t = 0; t < 200; ++t) add_trial();
    const std::span<const protocols::Stimulus> held(stimuli.data() + fitted_trials, 200);
    twin::PredictionBatch batch;
    batch.resize(held.size(), units);
    for (std::size_t h = 0; h < twins.size(); ++h) {
      twins[h]->predict(held, batch);
      double total = 0.0;
      for (std::size_t t = 0; t < held.size(); ++t) {
        for (std::size_t u = 0; u < units; ++u) {
          total += twin::log_probability(batch.at(t, u), counts[(fitted_trials + t) * units + u]);
        }
      }
      std::printf("  %-14s held-out log-likelihood of 200 trials: %.1f nats (%.4f per count)\n",
                  protocol.hypotheses[h].name.c_str(), total,
                  total / static_cast<double>(held.size() * units));
    }
    stimuli.resize(fitted_trials);
    counts.resize(fitted_trials * units);
  }
  if (convergence) {
    try {
      check_convergence(protocol, options, stimuli, counts, units);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_refit: %s\n", e.what());
      return 1;
    }
  }
  return 0;
}

// Designer efficiency: over seeded simulated subjects whose generative model (hil, independent of
// the twins) has the form of one of the protocol's hypotheses, how many trials each designer
// needs until the true hypothesis's posterior reaches 0.99; discriminate against random as a
// ratio measured in the same run, and how often the verdict is wrong. Then subjects that no
// hypothesis describes (two-lobed tuning): how often the session ends "none fits".
//
//   bench_efficiency [--subjects N (20)] [--max-trials T (240)] [--units U (16)]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/count_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace {

using namespace twinloop;

constexpr const char* kProtocol = R"(twinloop_protocol: 1
name: efficiency
subject: {id: SIM, species: Mus musculus}
probes:
  - {name: imec0, type: sim, channels: 16, sample_rate_hz: 30000, source: sim}
stimulus:
  kind: grating
  space:
    direction: {unit: deg, grid: {start: 0, stop: 337.5, step: 22.5}}
    contrast: {unit: fraction, values: [0.1, 0.3, 1.0]}
timing: {baseline_ms: 200, stimulus_ms: 500, response_start_ms: 0, response_end_ms: 500,
         inter_trial_ms: 1000}
safety: {amplitude_dimension: contrast, max_amplitude: 1.0, max_duty_cycle: 0.5,
         min_interval_ms: 1000}
designer: {strategy: discriminate, validation_fraction: 0.1, decision_deadline_ms: 1000, seed: 11}
stop: {posterior_threshold: 0.99, max_trials: 240}
hypotheses:
  - {name: tuned, family: direction_tuning}
  - {name: lnp, family: lnp}
  - {name: flat, family: "null"}
)";

struct Outcome {
  std::optional<std::size_t> trials_to_099;
  std::string verdict;
};

Outcome run_session(const protocols::Protocol& protocol, protocols::DesignerStrategy strategy,
                    const hil::ResponseMix& mix, std::uint64_t seed, std::size_t units,
                    std::uint32_t max_trials, std::size_t true_index) {
  hil::CountSubjectConfig config;
  config.seed = seed;
  config.unit_count = units;
  config.mix = mix;
  config.window_seconds = 0.5;
  hil::CountSubject subject(config);
  daemon::CountRig rig(subject);
  daemon::ClosedLoopOptions options;
  options.strategy = strategy;
  options.seed = seed;
  options.twin.window_seconds = 0.5;
  options.refit_every = 4;
  options.max_trials = max_trials;
  daemon::ClosedLoop loop(protocol, units, rig, nullptr, options);
  while (loop.step()) {
  }
  Outcome outcome;
  outcome.trials_to_099 = loop.trials_to_reach(true_index, 0.99);
  outcome.verdict = loop.summary().verdict.name;
  return outcome;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t subjects = 20, units = 16;
  std::uint32_t max_trials = 240;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--subjects" && i + 1 < argc)
      subjects = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--max-trials" && i + 1 < argc)
      max_trials = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    else if (arg == "--units" && i + 1 < argc)
      units = std::strtoul(argv[++i], nullptr, 10);
    else {
      std::printf(
          "usage: bench_efficiency [--subjects N (20)] [--max-trials T (240)] [--units U (16)]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  auto loaded = protocols::load_protocol_text(kProtocol, "efficiency.yaml");
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    return 1;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  const auto started = std::chrono::steady_clock::now();

  std::printf(
      "%zu subjects x %zu direction-tuned units (hil), 48 candidates, hypotheses tuned / "
      "lnp / flat, budget %u trials:\n",
      subjects, units, max_trials);
  std::vector<double> ratio, discriminate_trials, random_trials;
  std::size_t wrong[2] = {0, 0}, unreached[2] = {0, 0};
  for (std::size_t s = 0; s < subjects; ++s) {
    const std::uint64_t seed = 1000 + s;
    const Outcome d = run_session(protocol, protocols::DesignerStrategy::kDiscriminate,
                                  {1, 0, 0, 0, 0}, seed, units, max_trials, 0);
    const Outcome r = run_session(protocol, protocols::DesignerStrategy::kRandom, {1, 0, 0, 0, 0},
                                  seed, units, max_trials, 0);
    const double dt = d.trials_to_099 ? static_cast<double>(*d.trials_to_099) : max_trials;
    const double rt = r.trials_to_099 ? static_cast<double>(*r.trials_to_099) : max_trials;
    discriminate_trials.push_back(dt);
    random_trials.push_back(rt);
    ratio.push_back(rt / dt);
    wrong[0] += (d.verdict != "tuned" && d.verdict != "undecided" && d.verdict != "none") ? 1 : 0;
    wrong[1] += (r.verdict != "tuned" && r.verdict != "undecided" && r.verdict != "none") ? 1 : 0;
    unreached[0] += d.trials_to_099 ? 0 : 1;
    unreached[1] += r.trials_to_099 ? 0 : 1;
    std::printf(
        "  subject %2zu: discriminate %4.0f trials (verdict %s), random %4.0f (verdict %s)\n", s,
        dt, d.verdict.c_str(), rt, r.verdict.c_str());
  }
  std::printf(
      "trials until P(true) >= 0.99, median: discriminate %.0f, random %.0f; median ratio "
      "random/discriminate %.2fx (per subject, same seeds)\n",
      median(discriminate_trials), median(random_trials), median(ratio));
  std::printf(
      "never reached within budget: discriminate %zu, random %zu; wrong verdicts: "
      "discriminate %zu of %zu, random %zu of %zu\n",
      unreached[0], unreached[1], wrong[0], subjects, wrong[1], subjects);

  std::size_t none = 0, false_winner = 0;
  for (std::size_t s = 0; s < subjects; ++s) {
    const Outcome d = run_session(protocol, protocols::DesignerStrategy::kDiscriminate,
                                  {0, 1, 0, 0, 0}, 5000 + s, units, max_trials, 0);
    none += d.verdict == "none" ? 1 : 0;
    false_winner += (d.verdict != "none" && d.verdict != "undecided") ? 1 : 0;
  }
  std::printf(
      "subjects no hypothesis describes (two-lobed tuning): 'none fits' in %zu of %zu, a "
      "winner declared in %zu\n",
      none, subjects, false_winner);
  std::printf("(%.0f s)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return 0;
}

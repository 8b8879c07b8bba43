// Designer efficiency: over seeded simulated subjects whose generative model (hil, independent of
// the twins) has the form of one of the protocol's hypotheses, how many trials each designer
// needs until the true hypothesis's posterior reaches 0.99; discriminate against random as a
// ratio measured in the same run, and how often the verdict is wrong. Then subjects that no
// hypothesis describes: how often the session ends "none fits".
//
// The question is the classic one for a visual-cortex column: are its units direction-selective
// (one lobe) or orientation-selective (equal lobes 180 deg apart), or not tuned at all? A few
// units with clustered preferences, 16 directions x 8 log-spaced contrasts (0.02..1) x 5
// octave-spaced spatial frequencies (0.01..0.16 cycles/deg): the stimuli that answer the question
// are the column's preferred direction and its opposite at high contrast and near the column's
// preferred spatial frequency, a small part of the space; low contrasts and other frequencies
// drive little. Half of the
// true-model subjects are direction-tuned, half orientation-tuned. The misspecified subjects have
// two unequal lobes (hil's bimodal kind: the second 0.3-0.8 of the first, up to 20 deg off
// opposite), which neither tuning family can describe, or adapt to recent stimulation.
//
//   bench_efficiency [--subjects N (20)] [--max-trials T (300)] [--units U (2)]
//                    [--spread DEG (15)] [--min-fit N (8)] [--refit-every N (1)]
//                    [--window S (0.25)] [--misspecified N (10 of each kind)]
//                    [--directions N (16)] [--spatial-frequencies N (5)] [--verbose]
//                    [--first-subject K (0)] [--trace] [--coherence]
//                    [--random-max-trials T (as --max-trials)] [--no-random] [--set NAME=VALUE]
//                    [--misspecified-only two-lobe|adapting|both] [--criticism N (20)]
//                    [--criticism-power P (0.8)]
//
// --directions sets how finely the direction space is sampled (8 contrasts each): the share of
// candidates that can tell the hypotheses apart shrinks as it grows, which is where a designer
// should gain most over random choice.
//
// --spatial-frequencies N sets the third dimension: N octave-spaced spatial frequencies from 0.01
// cycles/deg (6: 0.01-0.32, a mouse V1 grid). The subjects' units are SF-tuned (0.6 octaves,
// column preference log-uniform in 0.02-0.16 cpd): a grating far from the preferred frequency
// drives almost nothing whatever its direction, so most of the space says nothing about the
// question and a random designer spends most of its trials there. 0: no SF dimension and units
// that are not SF-tuned (the direction x contrast space alone).
//
// --first-subject K starts at subject K (seed 1000 + K), e.g. to trace one session again.
// --trace prints every trial of every session: stimulus, counts, posterior, and for a designed
// trial its expected information gain about the hypothesis (by the session's estimate) beside
// what its outcome gave, KL(posterior after || before), both in nats: the first is the
// expectation of the second, so a run of trials where both are near 0 is one where the twins
// agree on every candidate, not one where the estimate is off. --coherence turns on the model
// check's trial-coherence test.
//
// Every session is also scored under an unstructured reference (CellReference: each candidate
// its own rate per unit): how often it beats the best twin by more than a factor 100 is a
// prototype of a "none fits" test. docs/session.md gives what it found (no power here).
//
// --random-max-trials gives the random designer a budget of its own: a session that has not
// reached 0.99 within it counts as the budget, so with the default budget the ratios are lower
// bounds. --no-random runs the discriminating designer alone (to compare changes to it quickly).
// --criticism N sets the protocol's designer.criticism_trials (by default the protocol default,
// 20; 0 turns them off): designed trials after the posterior threshold that try to refute the
// leader (docs/protocol.md). --criticism-power P sets designer.criticism_power (default 0.8; 1
// takes all N): they stop once the leader's check has power P against counts halfway toward each
// rival (N is then the budget). They come after the threshold, so trials to 0.99 do not count
// them; the sessions' full lengths are printed beside.
// --misspecified-only KIND skips the true-model subjects and runs the misspecified ones of that
// kind only (to measure the model check's power quickly).
// --set NAME=VALUE sets a parameter of both tuned twins (docs/protocol.md), e.g. to compare fits.
// The summary gives 95% bootstrap intervals over subjects: sessions of one designer on one
// subject vary a lot with the noise of the first trials, and 20 subjects pin a median only so far.
//
// Two units and a 250 ms response window keep the evidence per trial modest, so that reaching
// 0.99 takes several informative trials and the designer's choice of them shows; with 4 units and
// 500 ms one trial at the opposite direction decides and both designers finish right after the
// twins start fitting.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/count_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace {

using namespace twinloop;

// Contrasts: 0.02 x 50^(k/7), k = 0..7 (log-spaced, as contrast series usually are).
constexpr const char* kProtocol = R"(twinloop_protocol: 1
name: direction_vs_orientation
subject: {id: SIM, species: Mus musculus}
probes:
  - {name: imec0, type: sim, channels: 16, sample_rate_hz: 30000, source: sim}
stimulus:
  kind: grating
  space:
    direction: {unit: deg, grid: {start: 0, stop: @STOP@, step: @STEP@}}
    contrast: {unit: fraction, values: [0.02, 0.035, 0.0612, 0.107, 0.187, 0.327, 0.572, 1.0]}
@SF@timing: {baseline_ms: 200, stimulus_ms: 500, response_start_ms: 0, response_end_ms: 500,
         inter_trial_ms: 1000}
safety: {amplitude_dimension: contrast, max_amplitude: 1.0, max_duty_cycle: 0.5,
         min_interval_ms: 1000}
designer: {strategy: discriminate, validation_fraction: 0.1, decision_deadline_ms: 1000, seed: 11}
stop: {posterior_threshold: 0.99, max_trials: 300}
hypotheses:
  - {name: direction, family: direction_tuning}
  - {name: orientation, family: orientation_tuning}
  - {name: flat, family: "null"}
)";

/// The protocol with `directions` equally spaced directions (16 in the text above) and
/// `spatial_frequencies` octave-spaced spatial frequencies from 0.01 cpd (none: 0).
std::string protocol_text(std::size_t directions, std::size_t spatial_frequencies) {
  std::string text = kProtocol;
  const double step = 360.0 / static_cast<double>(directions);
  const auto put = [&](const std::string& key, double value) {
    char number[32];
    std::snprintf(number, sizeof number, "%.6g", value);
    text.replace(text.find(key), key.size(), number);
  };
  put("@STOP@", 360.0 - step);
  put("@STEP@", step);
  std::string sf;
  if (spatial_frequencies > 0) {
    sf = "    spatial_frequency: {unit: cpd, values: [";
    for (std::size_t k = 0; k < spatial_frequencies; ++k) {
      char number[32];
      std::snprintf(number, sizeof number, "%s%.6g", k ? ", " : "", 0.01 * std::exp2(double(k)));
      sf += number;
    }
    sf += "]}\n";
  }
  text.replace(text.find("@SF@"), 4, sf);
  return text;
}

struct Settings {
  std::size_t subjects = 20;
  std::size_t first_subject = 0;  // subject k has seed 1000 + k
  std::size_t directions = 16;
  std::size_t spatial_frequencies = 5;
  long misspecified = 10;
  std::uint32_t max_trials = 300;
  std::size_t units = 2;
  double spread_deg = 15.0;
  std::size_t min_trials_to_fit = 8;
  std::size_t refit_every = 1;  // as sessions do (ClosedLoopOptions), now that refits run aside
  double window_s = 0.25;
  bool verbose = false;
  bool coherence = false;  // the model check's trial-coherence test
  bool trace = false;      // every trial of every session (stimulus, counts, posterior)
  std::optional<std::size_t> criticism;   // criticism trials (absent: the protocol default)
  std::optional<double> criticism_power;  // (0, 1]; 1: no target (absent: the default)
  std::string misspecified_only;          // "two-lobe", "adapting" or "both"; empty: every subject
  bool random = true;                     // also run the random designer (the baseline)
  std::uint32_t random_max_trials = 0;    // the random designer's budget (0: max_trials)
  std::vector<std::pair<std::string, double>> twin_params;  // --set NAME=VALUE, tuned twins
};

/// A prototype of a check against an unstructured alternative: each candidate stimulus has its
/// own rate per unit, Gamma(k, k / m) a priori (mean m = the unit's mean count over the trials so
/// far, coefficient of variation 1 / sqrt(k)), so its prediction for a trial is negative binomial
/// (Gamma-Poisson). Scored prequentially on the same trials as the twins: log BF(reference vs
/// best twin) is a likelihood ratio that a sequential design does not bias, and under a true twin
/// it exceeds log(100) with probability about 1/100 at most (Ville's inequality for the ratio, a
/// nonnegative martingale when the twin's predictions are the true ones).
class CellReference {
 public:
  CellReference(std::size_t candidates, std::size_t units, double shape)
      : units_(units),
        shape_(shape),
        trials_(candidates * units, 0.0),
        sums_(trials_),
        unit_sums_(units, 0.0) {}

  /// log p(counts | trials so far), then learns them.
  double score_and_learn(std::size_t candidate, std::span<const std::uint32_t> counts) {
    double log_p = 0.0;
    for (std::size_t u = 0; u < units_; ++u) {
      const double m = (unit_sums_[u] + 1.0) / (static_cast<double>(seen_) + 1.0);
      const std::size_t cell = candidate * units_ + u;
      const double a = shape_ + sums_[cell];
      const double b = shape_ / m + trials_[cell];
      const double y = counts[u];
      log_p += std::lgamma(y + a) - std::lgamma(a) - std::lgamma(y + 1.0) +
               a * std::log(b / (b + 1.0)) - y * std::log(b + 1.0);
      trials_[cell] += 1.0;
      sums_[cell] += y;
      unit_sums_[u] += y;
    }
    ++seen_;
    return log_p;
  }

 private:
  std::size_t units_;
  double shape_;
  std::vector<double> trials_, sums_, unit_sums_;
  std::size_t seen_ = 0;
};

struct Outcome {
  double reference_margin = 0.0;  // log score of CellReference minus the best twin's, at the end
  std::optional<std::size_t> trials_to_099;
  std::string verdict;
  std::string checks;  // each hypothesis's model-check p-values (--verbose)
  // A winner's check: its power against counts halfway toward the rival it sees least of.
  double winner_power = std::numeric_limits<double>::quiet_NaN();
  std::size_t trials = 0;  // the whole session, validation trials after the threshold included
};

Outcome run_session(const protocols::Protocol& protocol, protocols::DesignerStrategy strategy,
                    const hil::ResponseMix& mix, std::uint64_t seed, const Settings& settings,
                    std::size_t true_index) {
  hil::CountSubjectConfig config;
  config.seed = seed;
  config.unit_count = settings.units;
  config.mix = mix;
  config.window_seconds = settings.window_s;
  config.preference_spread_deg = settings.spread_deg;
  if (settings.spatial_frequencies > 0) config.spatial_frequency_dimension = 2;
  hil::CountSubject subject(config);
  daemon::CountRig rig(subject);
  daemon::ClosedLoopOptions options;
  options.strategy = strategy;
  options.seed = seed;
  options.twin.window_seconds = settings.window_s;
  options.refit_every = settings.refit_every;
  options.min_trials_to_fit = settings.min_trials_to_fit;
  options.model_check.trial_coherence = settings.coherence;
  options.max_trials = settings.max_trials;
  daemon::ClosedLoop loop(protocol, settings.units, rig, nullptr, options);
  CellReference reference(protocol.stimulus.candidate_count(), settings.units, 1.0);
  double reference_score = 0.0;
  if (settings.trace) {
    std::printf("    column prefers %.0f deg, %.3f cpd\n", subject.column_preferred_deg(),
                subject.column_preferred_sf_cpd());
  }
  std::vector<std::uint32_t> counts(settings.units);
  std::vector<double> prior;
  while (const auto planned = loop.plan()) {
    double eig = std::numeric_limits<double>::quiet_NaN();
    if (settings.trace) {
      const auto p = loop.posterior().probabilities();
      prior.assign(p.begin(), p.end());
      if (!planned->validation) {
        if (const auto a = loop.alternative(protocols::DesignerStrategy::kDiscriminate, *planned)) {
          eig = a->eig_planned;
        }
      }
    }
    const daemon::TrialRig::Result result =
        rig.run_trial(planned->trial, planned->stimulus, counts);
    loop.complete(*planned, result, counts);
    reference_score += reference.score_and_learn(planned->candidate, counts);
    if (!settings.trace) continue;
    std::printf("    trial %3llu %s dir %5.1f c %.3f sf %.2f counts",
                static_cast<unsigned long long>(planned->trial), planned->validation ? "V" : " ",
                planned->stimulus.value(0), planned->stimulus.value(1),
                settings.spatial_frequencies ? planned->stimulus.value(2) : 0.0);
    for (const std::uint32_t c : counts) std::printf(" %2u", c);
    std::printf("  P");
    double gained = 0.0;
    const auto posterior = loop.posterior().probabilities();
    for (std::size_t k = 0; k < posterior.size(); ++k) {
      std::printf(" %.3f", posterior[k]);
      if (posterior[k] > 0.0 && prior[k] > 0.0) {
        gained += posterior[k] * std::log(posterior[k] / prior[k]);
      }
    }
    std::printf("  EIG %.3f gained %.3f\n", eig, gained);
  }
  Outcome outcome;
  double best = -std::numeric_limits<double>::infinity();
  for (std::size_t k = 0; k < protocol.hypotheses.size(); ++k) {
    best = std::max(best, loop.posterior().log_evidence(k));
  }
  outcome.reference_margin = reference_score - best;
  outcome.trials_to_099 = loop.trials_to_reach(true_index, 0.99);
  const daemon::SessionSummary summary = loop.summary();
  outcome.verdict = summary.verdict.name;
  for (const daemon::HypothesisSummary& h : summary.hypotheses) {
    char line[240];
    std::string rivals, powers;
    for (const double z : h.check.encompassing_z) rivals += " " + std::to_string(z).substr(0, 5);
    for (const double p : h.check.encompassing_power) {
      powers += " " + std::to_string(p).substr(0, 4);
    }
    std::snprintf(line, sizeof line,
                  " %s P=%.3f p=%.2g (chi2 %.2g ks %.2g coh %.2g enc %.2g [z%s] [power%s], %zu "
                  "trials)",
                  h.name.c_str(), h.posterior, h.check.p_value, h.check.chi_square_p_value,
                  h.check.ks_p_value, h.check.coherence_p_value, h.check.encompassing_p_value,
                  rivals.c_str(), powers.c_str(), h.check.trials);
    outcome.checks += line;
    if (h.name == outcome.verdict) {
      // The weakest over the rivals it tests (NaN: a rival it contains, not tested).
      for (const double p : h.check.encompassing_power) {
        if (!std::isnan(p) && !(p >= outcome.winner_power)) outcome.winner_power = p;
      }
    }
  }
  outcome.trials = loop.trials();
  return outcome;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/// 95% percentile bootstrap interval of a statistic of the subjects (resampled with replacement,
/// whole subjects, so each keeps its pair of sessions): how far 20 subjects pin a median down.
std::pair<double, double> bootstrap_interval(
    std::size_t subjects, const std::function<double(const std::vector<std::size_t>&)>& statistic) {
  constexpr int kResamples = 4000;
  std::mt19937_64 generator(20261127);  // fixed: the same subjects give the same interval
  std::uniform_int_distribution<std::size_t> pick(0, subjects - 1);
  std::vector<double> values;
  std::vector<std::size_t> sample(subjects);
  for (int b = 0; b < kResamples; ++b) {
    for (auto& index : sample) index = pick(generator);
    values.push_back(statistic(sample));
  }
  std::sort(values.begin(), values.end());
  return {values[static_cast<std::size_t>(0.025 * kResamples)],
          values[static_cast<std::size_t>(0.975 * kResamples) - 1]};
}

hil::ResponseMix only_direction() {
  return {1, 0, 0, 0, 0, 0};
}
hil::ResponseMix only_orientation() {
  return {0, 0, 0, 0, 0, 1};
}
hil::ResponseMix only_bimodal() {
  return {0, 1, 0, 0, 0, 0};
}
hil::ResponseMix only_adapting() {
  return {0, 0, 1, 0, 0, 0};
}

bool parse(int argc, char** argv, Settings& s, int& exit_code) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--subjects" && has_value)
      s.subjects = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--misspecified" && has_value)
      s.misspecified = std::strtol(argv[++i], nullptr, 10);
    else if (arg == "--max-trials" && has_value)
      s.max_trials = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    else if (arg == "--units" && has_value)
      s.units = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--spread" && has_value)
      s.spread_deg = std::strtod(argv[++i], nullptr);
    else if (arg == "--min-fit" && has_value)
      s.min_trials_to_fit = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--refit-every" && has_value)
      s.refit_every = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--window" && has_value)
      s.window_s = std::strtod(argv[++i], nullptr);
    else if (arg == "--directions" && has_value)
      s.directions = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--spatial-frequencies" && has_value)
      s.spatial_frequencies = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--verbose")
      s.verbose = true;
    else if (arg == "--first-subject" && has_value)
      s.first_subject = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--trace")
      s.trace = true;
    else if (arg == "--coherence")
      s.coherence = true;
    else if (arg == "--set" && has_value && std::strchr(argv[i + 1], '=') != nullptr) {
      const std::string setting = argv[++i];
      const auto equals = setting.find('=');
      s.twin_params.emplace_back(setting.substr(0, equals),
                                 std::strtod(setting.c_str() + equals + 1, nullptr));
    } else if (arg == "--no-random")
      s.random = false;
    else if (arg == "--criticism" && has_value)
      s.criticism = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--criticism-power" && has_value)
      s.criticism_power = std::strtod(argv[++i], nullptr);
    else if (arg == "--misspecified-only" && has_value)
      s.misspecified_only = argv[++i];
    else if (arg == "--random-max-trials" && has_value)
      s.random_max_trials = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    else {
      std::printf(
          "usage: bench_efficiency [--subjects N (20)] [--max-trials T (300)] [--units U (2)]\n"
          "                        [--spread DEG (15)] [--min-fit N (8)] [--refit-every N (1)]\n"
          "                        [--window S (0.25)] [--misspecified N (10)]\n"
          "                        [--directions N (16)] [--spatial-frequencies N (5)]\n"
          "                        [--first-subject K (0)] [--verbose] [--trace] [--coherence]\n"
          "                        [--random-max-trials T (as --max-trials)] [--no-random]\n"
          "                        [--misspecified-only two-lobe|adapting|both]\n"
          "                        [--criticism N (20)] [--criticism-power P (0.8; 1: all N)]\n"
          "                        [--set NAME=VALUE (a parameter of both tuned twins)]...\n");
      exit_code = arg == "--help" ? 0 : 2;
      return false;
    }
  }
  if (s.subjects == 0 || s.units == 0 || s.max_trials == 0 || s.directions < 4 ||
      s.directions > 360 || s.spatial_frequencies > 10) {
    std::fputs(
        "bench_efficiency: --subjects, --units and --max-trials must be >= 1, --directions "
        "4..360, --spatial-frequencies 0..10\n",
        stderr);
    exit_code = 2;
    return false;
  }
  if (s.misspecified < 0) s.misspecified = 0;
  if (!s.misspecified_only.empty() && s.misspecified_only != "two-lobe" &&
      s.misspecified_only != "adapting" && s.misspecified_only != "both") {
    std::fputs("bench_efficiency: --misspecified-only takes two-lobe, adapting or both\n", stderr);
    exit_code = 2;
    return false;
  }
  if (!(s.window_s > 0.0) || s.spread_deg > 180.0) {
    std::fputs("bench_efficiency: --window must be > 0 and --spread <= 180\n", stderr);
    exit_code = 2;
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Settings settings;
  int exit_code = 0;
  if (!parse(argc, argv, settings, exit_code)) return exit_code;
  auto loaded = protocols::load_protocol_text(
      protocol_text(settings.directions, settings.spatial_frequencies),
      "direction_vs_orientation.yaml");
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    return 1;
  }
  protocols::Protocol& protocol = *loaded.protocol;
  if (settings.criticism) {
    protocol.designer.criticism_trials = static_cast<std::uint32_t>(*settings.criticism);
  }
  if (settings.criticism_power &&
      !(*settings.criticism_power > 0.0 && *settings.criticism_power <= 1.0 &&
        protocol.designer.criticism_trials > 0)) {
    std::fputs(
        "bench_efficiency: --criticism-power needs a value in (0, 1] and criticism trials "
        "(its budget)\n",
        stderr);
    return 2;
  }
  if (settings.criticism_power) {
    protocol.designer.criticism_power =
        *settings.criticism_power < 1.0 ? settings.criticism_power : std::optional<double>();
  }
  if (protocol.designer.criticism_trials == 0) protocol.designer.criticism_power.reset();
  std::printf("criticism trials after the threshold: %u at most, power target %s\n",
              protocol.designer.criticism_trials,
              protocol.designer.criticism_power
                  ? std::to_string(*protocol.designer.criticism_power).substr(0, 4).c_str()
                  : "none");
  for (protocols::HypothesisSpec& h : protocol.hypotheses) {
    if (h.family == protocols::HypothesisFamily::kNull) continue;
    for (const auto& [name, value] : settings.twin_params) h.params[name] = value;
  }
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  const std::uint32_t budget = settings.max_trials;
  const std::uint32_t random_budget =
      settings.random_max_trials > 0 ? settings.random_max_trials : budget;

  const auto beaten = [](const std::vector<double>& margins) {
    return static_cast<std::size_t>(std::count_if(margins.begin(), margins.end(),
                                                  [](double m) { return m > std::log(100.0); }));
  };
  if (settings.misspecified_only.empty()) {
    std::printf(
        "%zu subjects (alternately direction- and orientation-tuned columns) x %zu units, "
        "preferences within +-%.0f deg; %zu candidates (%zu directions x 8 contrasts 0.02..1 x "
        "%zu spatial frequencies); hypotheses direction / orientation / flat; budget %u trials; "
        "twins fit from trial %zu, refit every %zu:\n",
        settings.subjects, settings.units, settings.spread_deg, protocol.stimulus.candidate_count(),
        settings.directions, std::max<std::size_t>(settings.spatial_frequencies, 1), budget,
        settings.min_trials_to_fit, settings.refit_every);
    std::vector<double> ratio, discriminate_trials, random_trials, session_trials,
        reference_margins;
    std::size_t wrong[2] = {0, 0}, unreached[2] = {0, 0}, none[2] = {0, 0}, undecided[2] = {0, 0};
    for (std::size_t s = settings.first_subject; s < settings.first_subject + settings.subjects;
         ++s) {
      const std::uint64_t seed = 1000 + s;
      const bool orientation = s % 2 == 1;
      const std::size_t truth = orientation ? 1 : 0;
      const std::string truth_name = orientation ? "orientation" : "direction";
      const hil::ResponseMix mix = orientation ? only_orientation() : only_direction();
      const Outcome d = run_session(protocol, protocols::DesignerStrategy::kDiscriminate, mix, seed,
                                    settings, truth);
      Settings random_settings = settings;
      random_settings.max_trials = random_budget;
      const Outcome r = settings.random
                            ? run_session(protocol, protocols::DesignerStrategy::kRandom, mix, seed,
                                          random_settings, truth)
                            : Outcome{};
      const double dt = d.trials_to_099 ? static_cast<double>(*d.trials_to_099) : budget;
      const double rt = r.trials_to_099 ? static_cast<double>(*r.trials_to_099) : random_budget;
      discriminate_trials.push_back(dt);
      random_trials.push_back(rt);
      session_trials.push_back(static_cast<double>(d.trials));
      ratio.push_back(rt / dt);
      const Outcome* both[2] = {&d, &r};
      for (int k = 0; k < 2; ++k) {
        const std::string& v = both[k]->verdict;
        wrong[k] += (v != truth_name && v != "undecided" && v != "none") ? 1 : 0;
        none[k] += v == "none" ? 1 : 0;
        undecided[k] += v == "undecided" ? 1 : 0;
        unreached[k] += both[k]->trials_to_099 ? 0 : 1;
      }
      reference_margins.push_back(d.reference_margin);
      std::printf(
          "  subject %2zu (%-11s): discriminate %4.0f trials (verdict %s after %zu; "
          "reference %+.1f)",
          s, truth_name.c_str(), dt, d.verdict.c_str(), d.trials, d.reference_margin);
      if (settings.random)
        std::printf(", random %4.0f (verdict %s after %zu)", rt, r.verdict.c_str(), r.trials);
      std::printf("  [%.0f s]\n", elapsed());
      if (settings.verbose) {
        std::printf("    discriminate:%s\n", d.checks.c_str());
        if (settings.random) std::printf("    random:%s\n", r.checks.c_str());
      }
      std::fflush(stdout);
    }
    const std::size_t n = settings.subjects;
    const auto pick = [](const std::vector<double>& from, const std::vector<std::size_t>& sample) {
      std::vector<double> picked;
      for (const std::size_t i : sample) picked.push_back(from[i]);
      return picked;
    };
    const auto [d_low, d_high] = bootstrap_interval(
        n, [&](const auto& sample) { return median(pick(discriminate_trials, sample)); });
    if (settings.random) {
      const auto [ratio_low, ratio_high] =
          bootstrap_interval(n, [&](const auto& sample) { return median(pick(ratio, sample)); });
      const auto [of_medians_low, of_medians_high] = bootstrap_interval(n, [&](const auto& sample) {
        return median(pick(random_trials, sample)) / median(pick(discriminate_trials, sample));
      });
      std::printf(
          "trials until P(true) >= 0.99, median: discriminate %.1f (95%% bootstrap interval "
          "%.1f-%.1f), random %.1f; median ratio random/discriminate %.2fx (per subject, same "
          "seeds; interval %.2f-%.2fx); ratio of medians %.2fx (interval %.2f-%.2fx)\n",
          median(discriminate_trials), d_low, d_high, median(random_trials), median(ratio),
          ratio_low, ratio_high, median(random_trials) / median(discriminate_trials),
          of_medians_low, of_medians_high);
      std::printf(
          "never reached within budget: discriminate %zu, random %zu; wrong verdicts: "
          "discriminate %zu of %zu, random %zu of %zu; 'none' on a true model: discriminate %zu, "
          "random %zu; undecided: discriminate %zu, random %zu; discriminate sessions (validation "
          "included) median %.0f trials\n",
          unreached[0], unreached[1], wrong[0], n, wrong[1], n, none[0], none[1], undecided[0],
          undecided[1], median(session_trials));
    } else {
      std::printf(
          "trials until P(true) >= 0.99, median: discriminate %.1f (95%% bootstrap interval "
          "%.1f-%.1f); never reached within budget %zu; wrong verdicts %zu of %zu; 'none' on a "
          "true model %zu; undecided %zu; sessions (validation included) median %.0f trials\n",
          median(discriminate_trials), d_low, d_high, unreached[0], wrong[0], n, none[0],
          undecided[0], median(session_trials));
    }
    std::printf(
        "prototype reference check (each candidate its own rate): log BF(reference vs best twin) > "
        "log 100 in %zu of %zu discriminate sessions on true models; median %.1f\n",
        beaten(reference_margins), reference_margins.size(), median(reference_margins));
    std::fflush(stdout);
  }

  // Subjects no hypothesis describes, discriminating designer (as a session would run).
  struct Misspecified {
    const char* what;
    const char* option;  // its --misspecified-only name
    hil::ResponseMix mix;
    std::uint64_t seed_base;
  };
  for (const Misspecified& m : {Misspecified{"two unequal lobes", "two-lobe", only_bimodal(), 5000},
                                Misspecified{"adapting", "adapting", only_adapting(), 7000}}) {
    if (!settings.misspecified_only.empty() && settings.misspecified_only != "both" &&
        settings.misspecified_only != m.option) {
      continue;
    }
    std::size_t none_fits = 0, false_winner = 0, still_undecided = 0;
    std::vector<double> trials, margins, winner_powers;
    for (std::size_t s = 0; s < static_cast<std::size_t>(settings.misspecified); ++s) {
      const Outcome d = run_session(protocol, protocols::DesignerStrategy::kDiscriminate, m.mix,
                                    m.seed_base + s, settings, 0);
      none_fits += d.verdict == "none" ? 1 : 0;
      still_undecided += d.verdict == "undecided" ? 1 : 0;
      false_winner += (d.verdict != "none" && d.verdict != "undecided") ? 1 : 0;
      trials.push_back(static_cast<double>(d.trials));
      margins.push_back(d.reference_margin);
      if (!std::isnan(d.winner_power)) winner_powers.push_back(d.winner_power);
      std::printf(
          "  %s subject %2zu: verdict %s after %zu trials (reference %+.1f, the check's power "
          "halfway to its weakest rival %.2f)  [%.0f s]\n",
          m.what, s, d.verdict.c_str(), d.trials, d.reference_margin, d.winner_power, elapsed());
      if (settings.verbose) std::printf("   %s\n", d.checks.c_str());
      std::fflush(stdout);
    }
    std::printf(
        "subjects no hypothesis describes (%s): 'none fits' in %zu of %zu, a winner declared in "
        "%zu, undecided in %zu (median %.0f trials)\n",
        m.what, none_fits, static_cast<std::size_t>(settings.misspecified), false_winner,
        still_undecided, median(trials));
    std::printf(
        "  the winners' checks: power against counts halfway toward their weakest rival, median "
        "%.2f over %zu winners\n",
        median(winner_powers), winner_powers.size());
    std::printf(
        "  prototype reference check: log BF(reference vs best twin) > log 100 in %zu of %zu; "
        "median %.1f\n",
        beaten(margins), margins.size(), median(margins));
  }
  std::printf("(%.0f s)\n", elapsed());
  return 0;
}

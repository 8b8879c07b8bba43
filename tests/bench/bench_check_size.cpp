// The model check's size: how often a session on a subject that the true hypothesis describes
// ends "none" because the check rejected that hypothesis, with the twins' predictions carrying
// their parameter uncertainty and plug-in (family parameter parameter_uncertainty: 0), on the
// same seeds. Nominally the check rejects a right model with probability at most alpha (0.01,
// Bonferroni over its tests); predictions fitted to a few dozen trials are only approximately
// right, so the measured rate is what a user should expect. Also the pooled histogram of the
// true hypothesis's PIT values (uniform when its predictions are calibrated) and how many
// sessions had check p < 0.05.
//
// The session is the closed-loop tests' (tests/fixtures/closed_loop_test.yaml: 8 directions x 2
// contrasts, hypotheses direction_tuning and null, 20% validation trials, a 60-trial budget) on
// 16 direction-tuned units with independent preferences and Poisson counts (hil::CountSubject),
// refitting after every trial from the eighth.
//
// --coherence adds the check's trial-coherence test (ModelCheckOptions::trial_coherence), which
// is exact only for calibrated predictions; --spread DEG clusters the units' preferences within
// +-DEG of one column direction, where the twins' errors are shared most between units (and
// where that test is most at risk); --uncertain-only skips the plug-in sessions; --criticism N
// sets the protocol's designer.criticism_trials (designed trials after the posterior threshold
// that try to refute the leader, judged by the encompassing test; 0 turns them off) and
// --criticism-power P its power target (1: take all N), both by default the protocol defaults
// (docs/protocol.md); --units N simulates N units
// instead of 16; --lnp adds an LNP hypothesis as a third rival, whose predictions lean the other
// way from the null's (more stimulus dependence where the null has none); --param NAME=VALUE sets
// a parameter of the true (direction_tuning) hypothesis, e.g. prior_amplitude_ratio=1.
//
// It also holds the true twin's registered predictions against the subject's true means: how far
// those means leaned toward each rival's means (the check's lean without the counts' noise), and
// each hypothesis's mean relative error by how hard a trial drove the unit. A lean that lives in
// the predictions (the fits' own estimation error, or a shared bias) shows there.
//
//   bench_check_size [--sessions N (100)] [--coherence] [--spread DEG] [--uncertain-only]
//                    [--criticism N (20)] [--criticism-power P (0.8)] [--units N (16)] [--lnp]
//                    [--param NAME=VALUE]...
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/count_rig.hpp"
#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/model_check.hpp"

namespace {

using namespace twinloop;

double median_of(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// The true hypothesis's (index 0) registered predictions held against the subject's true means.
/// Per rival, the lean the true means had: the check's lean with each unit's PIT score replaced
/// by (true mean - predicted) / sd, so what the counts' noise adds is gone. Per drive level (the
/// true mean as a fraction of the unit's peak over the candidates), each hypothesis's mean
/// relative error (predicted - true) / true: a shared bias shows as a level that errs one way.
class OracleLean {
 public:
  explicit OracleLean(std::size_t hypotheses)
      : hypotheses_(hypotheses),
        score_(hypotheses, 0.0),
        information_(hypotheses, 0.0),
        leans_(hypotheses),
        error_(hypotheses * kLevels, 0.0),
        error_n_(kLevels, 0.0) {}

  void add(std::span<const twin::PredictionBatch> predictions, std::size_t candidate,
           std::span<const double> truth, std::span<const double> peaks) {
    const twin::PredictionBatch& own = predictions[0];
    for (std::size_t u = 0; u < truth.size(); ++u) {
      const twin::CountDistribution d = own.at(candidate, u);
      const double sd = std::sqrt(d.variance());
      if (!(sd > 0.0)) continue;
      for (std::size_t r = 1; r < hypotheses_; ++r) {
        const double w =
            twin::encompassing_weight(predictions[r].mean[candidate * own.units + u], d);
        score_[r] += w * (truth[u] - d.mean) / sd;
        information_[r] += w * w;
      }
      if (!(truth[u] > 0.0) || !(peaks[u] > 0.0)) continue;
      const auto level = std::min<std::size_t>(
          kLevels - 1, static_cast<std::size_t>(kLevels * truth[u] / peaks[u]));
      error_n_[level] += 1.0;
      for (std::size_t k = 0; k < hypotheses_; ++k) {
        error_[k * kLevels + level] +=
            (predictions[k].mean[candidate * own.units + u] - truth[u]) / truth[u];
      }
    }
  }

  void close_session() {
    for (std::size_t r = 1; r < hypotheses_; ++r) {
      if (information_[r] > 0.0) leans_[r].push_back(score_[r] / information_[r]);
      score_[r] = information_[r] = 0.0;
    }
  }

  void print(const protocols::Protocol& protocol) const {
    std::printf("    true means' lean toward the rivals' own means (no count noise), median:");
    for (std::size_t r = 1; r < hypotheses_; ++r) {
      std::printf(" toward %s %.3f", protocol.hypotheses[r].name.c_str(), median_of(leans_[r]));
    }
    std::printf("\n    mean relative error (predicted - true) / true by drive (true / peak):");
    for (std::size_t level = 0; level < kLevels; ++level) {
      std::printf("\n      %.2f-%.2f (%6.0f unit-trials):", double(level) / kLevels,
                  double(level + 1) / kLevels, error_n_[level]);
      for (std::size_t k = 0; k < hypotheses_; ++k) {
        std::printf(" %s %+.3f", protocol.hypotheses[k].name.c_str(),
                    error_n_[level] > 0.0 ? error_[k * kLevels + level] / error_n_[level] : 0.0);
      }
    }
    std::printf("\n");
  }

 private:
  static constexpr std::size_t kLevels = 5;
  std::size_t hypotheses_;
  std::vector<double> score_, information_;
  std::vector<std::vector<double>> leans_;
  std::vector<double> error_, error_n_;
};

}  // namespace

int main(int argc, char** argv) {
  int sessions = 100;
  bool coherence = false, uncertain_only = false;
  double spread_deg = -1.0;
  long criticism = -1, units = 16;  // -1: the protocol's own criticism trials
  double criticism_power = 0.0;     // 0: the protocol's own target
  bool lnp = false;
  std::map<std::string, double> params;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--sessions" && i + 1 < argc) {
      sessions = std::atoi(argv[++i]);
    } else if (arg == "--spread" && i + 1 < argc) {
      spread_deg = std::strtod(argv[++i], nullptr);
    } else if (arg == "--coherence") {
      coherence = true;
    } else if (arg == "--criticism" && i + 1 < argc) {
      criticism = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--criticism-power" && i + 1 < argc) {
      criticism_power = std::strtod(argv[++i], nullptr);
      if (!(criticism_power > 0.0 && criticism_power <= 1.0)) {
        std::fputs("bench_check_size: --criticism-power takes a number in (0, 1]\n", stderr);
        return 2;
      }
    } else if (arg == "--units" && i + 1 < argc) {
      units = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--param" && i + 1 < argc && std::strchr(argv[i + 1], '=') != nullptr) {
      const std::string assignment = argv[++i];
      const std::size_t eq = assignment.find('=');
      char* end = nullptr;
      const double value = std::strtod(assignment.c_str() + eq + 1, &end);
      if (eq == 0 || end == assignment.c_str() + eq + 1 || *end != '\0') {
        std::fprintf(stderr, "bench_check_size: --param %s: expected NAME=NUMBER\n",
                     assignment.c_str());
        return 2;
      }
      params[assignment.substr(0, eq)] = value;
    } else if (arg == "--lnp") {
      lnp = true;
    } else if (arg == "--uncertain-only") {
      uncertain_only = true;
    } else {
      std::printf(
          "usage: bench_check_size [--sessions N (100)] [--coherence] [--spread DEG] "
          "[--uncertain-only] [--criticism N] [--criticism-power P] [--units N] [--lnp] "
          "[--param NAME=VALUE]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (sessions < 1 || spread_deg > 180.0 || criticism < -1 || units < 1 || units > 4096) {
    std::fputs(
        "bench_check_size: --sessions must be >= 1, --spread at most 180, --criticism >= 0, "
        "--units 1-4096\n",
        stderr);
    return 2;
  }
  const auto unit_count = static_cast<std::size_t>(units);
  const auto set_criticism = [&](protocols::DesignerSettings& designer) {
    if (criticism >= 0) designer.criticism_trials = static_cast<std::uint32_t>(criticism);
    if (criticism_power >= 1.0) designer.criticism_power.reset();
    if (criticism_power > 0.0 && criticism_power < 1.0) designer.criticism_power = criticism_power;
    if (designer.criticism_trials == 0) designer.criticism_power.reset();
  };
  protocols::DesignerSettings shown;
  set_criticism(shown);
  std::printf(
      "%d sessions per setting: %zu direction-tuned Poisson units, hypotheses direction_tuning "
      "(true), null%s; the check rejects a hypothesis at p < 0.01; trial-coherence test %s; "
      "preferences %s; %u criticism trials at most, power target %s\n",
      sessions, unit_count, lnp ? " and lnp" : "", coherence ? "on" : "off",
      spread_deg >= 0 ? "clustered" : "independent", shown.criticism_trials,
      shown.criticism_power ? std::to_string(*shown.criticism_power).substr(0, 4).c_str() : "none");
  for (const bool plug_in : {false, true}) {
    if (plug_in && uncertain_only) break;
    auto loaded =
        protocols::load_protocol_file(TWINLOOP_SOURCE_DIR "/tests/fixtures/closed_loop_test.yaml");
    if (!loaded.ok()) {
      std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
      return 1;
    }
    if (plug_in) {
      for (auto& h : loaded.protocol->hypotheses) h.params["parameter_uncertainty"] = 0.0;
    }
    for (const auto& [name, value] : params) loaded.protocol->hypotheses[0].params[name] = value;
    if (lnp) {
      protocols::HypothesisSpec rival;
      rival.name = "lnp";
      rival.family = protocols::HypothesisFamily::kLnp;
      loaded.protocol->hypotheses.push_back(rival);
    }
    set_criticism(loaded.protocol->designer);
    int winner = 0, none = 0, wrong = 0, undecided = 0, low_p = 0, coherence_rejects = 0;
    // Which of the check's tests failed the true twin (Bonferroni over its tests, as the check).
    int pit_rejects = 0, encompassing_rejects = 0;
    std::vector<std::vector<double>> encompassing_z, encompassing_lean;
    int contained = 0;  // (session, rival) pairs without an encompassing statistic
    std::vector<std::size_t> histogram;
    OracleLean oracle(loaded.protocol->hypotheses.size());
    for (int s = 1; s <= sessions; ++s) {
      hil::CountSubjectConfig config;
      config.seed = static_cast<std::uint64_t>(s);
      config.unit_count = unit_count;
      config.mix = {1, 0, 0, 0, 0};
      config.window_seconds = 0.5;
      config.preference_spread_deg = spread_deg;
      hil::CountSubject subject(config);
      daemon::CountRig rig(subject);
      std::vector<double> peaks(unit_count, 0.0);
      for (std::size_t c = 0; c < loaded.protocol->stimulus.candidate_count(); ++c) {
        const std::vector<double> m =
            subject.expected_counts(loaded.protocol->stimulus.stimulus(c));
        for (std::size_t u = 0; u < unit_count; ++u) peaks[u] = std::max(peaks[u], m[u]);
      }
      daemon::ClosedLoopOptions options;
      options.twin.window_seconds = 0.5;
      options.seed = static_cast<std::uint64_t>(s);
      options.model_check.trial_coherence = coherence;
      // A --param the family rejects throws here, on the first session.
      std::optional<daemon::ClosedLoop> loop;
      try {
        loop.emplace(*loaded.protocol, unit_count, rig, nullptr, options);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_check_size: %s\n", e.what());
        return 2;
      }
      // The twins' registered predictions against the subject's true means, on the trials the
      // check judges (fitted ones): how far the true means themselves leaned toward each rival,
      // by the check's own weights, and the relative errors by how hard the stimulus drove the
      // unit. Separates a lean that lives in the predictions from one the counts' noise made.
      std::vector<std::uint32_t> counts(unit_count);
      std::vector<double> truth(unit_count);
      while (const auto planned = loop->plan()) {
        const daemon::TrialRig::Result result =
            rig.run_trial(planned->trial, planned->stimulus, counts);
        if (loop->predictions_fitted() && result.delivered && !result.flagged) {
          subject.expected_counts(planned->stimulus, truth);
          oracle.add(loop->predictions(), planned->candidate, truth, peaks);
        }
        loop->complete(*planned, result, counts);
      }
      oracle.close_session();
      const daemon::SessionSummary summary = loop->summary();
      const std::string& v = summary.verdict.name;
      winner += v == "tuned" ? 1 : 0;
      none += v == "none" ? 1 : 0;
      undecided += v == "undecided" ? 1 : 0;
      wrong += v == "flat" || v == "lnp" ? 1 : 0;
      if (v == "flat" || v == "lnp") {
        std::fprintf(stderr, "  session %d: wrong verdict: %s\n", s,
                     summary.verdict.reason.c_str());
      }
      const twin::ModelCheckResult& check = summary.hypotheses[0].check;
      low_p += check.enough_data && check.p_value < 0.05 ? 1 : 0;
      coherence_rejects += check.enough_data && check.coherence_p_value < 0.01 ? 1 : 0;
      // Each test at the check's own Bonferroni level; a session can fail both.
      const double alpha = options.model_check.alpha;
      const double pit_p = std::min(check.chi_square_p_value, check.ks_p_value);
      pit_rejects += check.enough_data && check.tests * pit_p < alpha ? 1 : 0;
      encompassing_rejects +=
          check.enough_data && check.tests * check.encompassing_p_value < alpha ? 1 : 0;
      encompassing_z.resize(check.encompassing_z.size());
      encompassing_lean.resize(check.encompassing_lean.size());
      for (std::size_t r = 0; r < check.encompassing_z.size(); ++r) {
        if (std::isnan(check.encompassing_z[r])) {
          ++contained;  // the true twin contains that rival: no test against it
          continue;
        }
        encompassing_z[r].push_back(check.encompassing_z[r]);
        encompassing_lean[r].push_back(check.encompassing_lean[r]);
      }
      if (histogram.size() < check.histogram.size()) histogram.resize(check.histogram.size());
      for (std::size_t b = 0; b < check.histogram.size(); ++b) histogram[b] += check.histogram[b];
      if (s % 10 == 0) {
        std::fprintf(stderr, "  %s: %d of %d sessions\n", plug_in ? "plug-in" : "uncertain", s,
                     sessions);
      }
    }
    std::printf(
        "%-38s verdict tuned %3d, none %3d (the true model rejected), flat or lnp %d, undecided "
        "%d; "
        "check p < 0.05 in %d; coherence p < 0.01 in %d; PIT histogram",
        plug_in ? "plug-in predictions:" : "with parameter uncertainty (default):", winner, none,
        wrong, undecided, low_p, coherence_rejects);
    for (const std::size_t b : histogram) std::printf(" %zu", b);
    std::printf("\n    failed by its PIT tests in %d, by its encompassing test in %d;", pit_rejects,
                encompassing_rejects);
    for (std::size_t r = 0; r < encompassing_z.size(); ++r) {
      auto& z = encompassing_z[r];
      auto& lean = encompassing_lean[r];
      const char* name = loaded.protocol->hypotheses[twin::rival_hypothesis(0, r)].name.c_str();
      if (z.empty()) {
        std::printf("\n    encompassing test against %s: none (contained in every session)", name);
        continue;
      }
      std::sort(z.begin(), z.end());
      std::sort(lean.begin(), lean.end());
      std::printf(
          "\n    encompassing z against %s (%zu sessions): median %.2f, 90th percentile %.2f; "
          "lean toward it: median %.3f, 90th percentile %.3f",
          name, z.size(), z[z.size() / 2], z[z.size() * 9 / 10], lean[lean.size() / 2],
          lean[lean.size() * 9 / 10]);
    }
    std::printf("\n    (session, rival) pairs the true twin contains, without a test: %d\n",
                contained);
    oracle.print(*loaded.protocol);
    std::fflush(stdout);
  }
  return 0;
}

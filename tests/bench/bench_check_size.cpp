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
// that try to refute the leader, judged by the encompassing test).
//
//   bench_check_size [--sessions N (100)] [--coherence] [--spread DEG] [--uncertain-only]
//                    [--criticism N (0)]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/count_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace {

using namespace twinloop;

}  // namespace

int main(int argc, char** argv) {
  int sessions = 100;
  bool coherence = false, uncertain_only = false;
  double spread_deg = -1.0;
  long criticism = 0;
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
    } else if (arg == "--uncertain-only") {
      uncertain_only = true;
    } else {
      std::printf(
          "usage: bench_check_size [--sessions N (100)] [--coherence] [--spread DEG] "
          "[--uncertain-only] [--criticism N]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (sessions < 1 || spread_deg > 180.0 || criticism < 0) {
    std::fputs(
        "bench_check_size: --sessions must be >= 1, --spread at most 180, --criticism >= 0\n",
        stderr);
    return 2;
  }
  constexpr std::size_t kUnits = 16;
  std::printf(
      "%d sessions per setting: 16 direction-tuned Poisson units, hypotheses direction_tuning "
      "(true) and null; the check rejects a hypothesis at p < 0.01; trial-coherence test %s; "
      "preferences %s; %ld criticism trials\n",
      sessions, coherence ? "on" : "off", spread_deg >= 0 ? "clustered" : "independent", criticism);
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
    loaded.protocol->designer.criticism_trials = static_cast<std::uint32_t>(criticism);
    int winner = 0, none = 0, wrong = 0, undecided = 0, low_p = 0, coherence_rejects = 0;
    std::vector<std::size_t> histogram;
    for (int s = 1; s <= sessions; ++s) {
      hil::CountSubjectConfig config;
      config.seed = static_cast<std::uint64_t>(s);
      config.unit_count = kUnits;
      config.mix = {1, 0, 0, 0, 0};
      config.window_seconds = 0.5;
      config.preference_spread_deg = spread_deg;
      hil::CountSubject subject(config);
      daemon::CountRig rig(subject);
      daemon::ClosedLoopOptions options;
      options.twin.window_seconds = 0.5;
      options.seed = static_cast<std::uint64_t>(s);
      options.model_check.trial_coherence = coherence;
      daemon::ClosedLoop loop(*loaded.protocol, kUnits, rig, nullptr, options);
      while (loop.step()) {
      }
      const daemon::SessionSummary summary = loop.summary();
      const std::string& v = summary.verdict.name;
      winner += v == "tuned" ? 1 : 0;
      none += v == "none" ? 1 : 0;
      undecided += v == "undecided" ? 1 : 0;
      wrong += v == "flat" ? 1 : 0;
      const twin::ModelCheckResult& check = summary.hypotheses[0].check;
      low_p += check.enough_data && check.p_value < 0.05 ? 1 : 0;
      coherence_rejects += check.enough_data && check.coherence_p_value < 0.01 ? 1 : 0;
      if (histogram.size() < check.histogram.size()) histogram.resize(check.histogram.size());
      for (std::size_t b = 0; b < check.histogram.size(); ++b) histogram[b] += check.histogram[b];
      if (s % 10 == 0) {
        std::fprintf(stderr, "  %s: %d of %d sessions\n", plug_in ? "plug-in" : "uncertain", s,
                     sessions);
      }
    }
    std::printf(
        "%-38s verdict tuned %3d, none %3d (the true model rejected), flat %d, undecided %d; "
        "check p < 0.05 in %d; coherence p < 0.01 in %d; PIT histogram",
        plug_in ? "plug-in predictions:" : "with parameter uncertainty (default):", winner, none,
        wrong, undecided, low_p, coherence_rejects);
    for (const std::size_t b : histogram) std::printf(" %zu", b);
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}

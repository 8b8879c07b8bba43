// `twinloop run --rig recorded`: the closed loop with real neurons as the subject. See
// recorded_session.hpp. The trial loop is synchronous (a count-level rig answers at once), so a
// plain signal flag replaces run_session.cpp's event loop; the record, progress line, printed
// summary and summary.json follow the simulated rig's, without its detection and ground-truth
// parts.
#include "src/recorded_session.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "src/progress.hpp"
#include "src/session_host.hpp"
#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/recorded_rig.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/hil/recorded_responses.hpp"

namespace twinloop::daemon::internal {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int signal) {
  g_stop_signal = signal;
}

// SIGINT/SIGTERM set a flag for the duration of the session; the previous handlers come back.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = &on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  [[nodiscard]] int signal() const noexcept { return g_stop_signal; }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

std::optional<std::size_t> direction_dimension(const protocols::StimulusSpace& space) {
  if (const auto d = space.dimension_index("direction")) return d;
  for (std::size_t d = 0; d < space.dimension_count(); ++d) {
    const std::string& unit = space.dimensions[d].unit;
    if (unit == "deg" || unit == "degree" || unit == "degrees") return d;
  }
  return std::nullopt;
}

}  // namespace

int run_recorded_session(const protocols::Protocol& protocol, const RunOptions& options,
                         const std::filesystem::path& dir) {
  if (options.dataset.empty()) {
    std::fprintf(stderr, "twinloop run: --rig recorded needs --dataset FILE.mat\n");
    return kExitUsage;
  }
  const std::optional<std::size_t> direction = direction_dimension(protocol.stimulus);
  if (!direction) {
    std::fprintf(stderr,
                 "twinloop run: %s: --rig recorded answers grating directions; the stimulus "
                 "space has no dimension named 'direction' or with unit 'deg'\n",
                 options.protocol.string().c_str());
    return kExitRefused;
  }

  // The protocol's response window is the one the recorded spikes are counted in.
  const hil::ResponseWindowMs window{protocol.timing.response_start_ms,
                                     protocol.timing.response_end_ms};
  std::unique_ptr<hil::RecordedSubject> subject;
  std::unique_ptr<RecordedRig> rig;
  try {
    hil::RecordedSubjectConfig subject_config;
    subject_config.seed = options.seed;
    subject_config.direction_dimension = static_cast<int>(*direction);
    subject = std::make_unique<hil::RecordedSubject>(
        hil::RecordedResponses::load(options.dataset, options.dataset_session, window),
        subject_config);
    rig = std::make_unique<RecordedRig>(*subject, protocol.stimulus, protocol.timing);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: recorded rig: %s\n", e.what());
    return kExitRefused;
  }
  const hil::RecordedResponses& data = subject->data();
  const std::size_t units = data.unit_count();

  const ClosedLoopOptions loop_options =
      session_loop_options(protocol, options.seed, options.designer.value_or(""));
  const std::string designer =
      options.designer.value_or(std::string(protocols::to_string(protocol.designer.strategy)));
  const std::filesystem::path dataset = std::filesystem::absolute(options.dataset);

  std::unique_ptr<SessionRecord> record;
  std::unique_ptr<ClosedLoop> closed_loop;
  try {
    SessionSetup setup = SessionSetup::for_protocol(protocol);
    setup.config_json =
        nlohmann::json({{"rig", "recorded"},
                        {"seed", options.seed},
                        {"designer", options.designer.value_or("")},
                        {"dataset", dataset.string()},
                        {"dataset_session", options.dataset_session},
                        {"dataset_date", data.date()},
                        {"dataset_subject", data.subject()},
                        {"response_window_ms", {window.start_ms, window.end_ms}},
                        {"bins_counted", data.window_bins()},
                        {"units", "recorded single units"},
                        {"clock",
                         "synthetic, 1 sample per ms, one onset interval per trial: the data hold "
                         "no trial times"},
                        {"protocol_defaults", protocol_defaults_json()}})
            .dump();
    for (std::size_t u = 0; u < units; ++u) {
      char label[96];
      std::snprintf(label, sizeof label, "unit %zu (tetrode %g, contamination %.3g)", u,
                    data.tetrode()[u], data.contamination()[u]);
      setup.units.push_back({0, -1, label});
    }
    record = std::make_unique<SessionRecord>(SessionRecord::create(dir, setup));
    rig->attach_record(record.get());
    closed_loop = std::make_unique<ClosedLoop>(protocol, units, *rig, record.get(), loop_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: %s\n", e.what());
    return kExitRefused;
  }

  std::size_t repeats_min = data.conditions().front().repeats, repeats_max = repeats_min;
  for (const hil::RecordedCondition& c : data.conditions()) {
    repeats_min = std::min(repeats_min, c.repeats);
    repeats_max = std::max(repeats_max, c.repeats);
  }
  std::printf(
      "twinloop run: protocol '%s' (%zu candidates, %zu hypotheses), recorded rig: session %zu "
      "of %s (%s, monkey %s): %zu units, %zu conditions x %zu",
      protocol.name.c_str(), protocol.stimulus.candidate_count(), protocol.hypotheses.size(),
      data.session(), dataset.filename().string().c_str(), data.date().c_str(),
      data.subject().c_str(), units, data.condition_count(), repeats_min);
  if (repeats_max != repeats_min) std::printf("-%zu", repeats_max);
  std::printf(
      " repeats (%zu recorded trials), spikes counted %g..%g ms after onset, %s designer, "
      "seed %llu; real neurons: no ground truth\n",
      subject->total(), window.start_ms, window.end_ms, designer.c_str(),
      static_cast<unsigned long long>(options.seed));
  std::printf("session record: %s\n", dir.string().c_str());
  std::fflush(stdout);

  Progress progress(!options.quiet, 5.0);
  const double budget = static_cast<double>(
      std::min<std::size_t>(closed_loop->stop_rules().max_trials, subject->total()));
  const auto started = std::chrono::steady_clock::now();
  int signal = 0;
  try {
    const StopSignals signals;
    for (;;) {
      if (signals.signal() != 0 && signal == 0) {
        signal = signals.signal();
        closed_loop->request_stop();
        std::fprintf(stderr, "\ntwinloop: %s: stopping\n", signal == SIGINT ? "SIGINT" : "SIGTERM");
      }
      if (!closed_loop->step()) break;
      const twin::Posterior& p = closed_loop->posterior();
      char line[200];
      std::snprintf(line, sizeof line,
                    "trial %zu of at most %.0f | leader %s p=%.3f | %zu of %zu repeats used, %zu "
                    "of %zu conditions left",
                    closed_loop->trials(), budget, p.leader_name().c_str(),
                    p.probability(p.leader()), subject->used(), subject->total(),
                    subject->available_conditions().size(), data.condition_count());
      progress.update(budget > 0 ? static_cast<double>(closed_loop->trials()) / budget : -1.0,
                      line);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\ntwinloop run: session stopped: %s\n", e.what());
    return kExitRefused;
  }
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  progress.finish("session ended");
  const SessionSummary summary = closed_loop->summary();
  const std::size_t exhausted_conditions =
      data.condition_count() - subject->available_conditions().size();
  const bool stopped = closed_loop->stop_decision().stop();

  std::printf("\n== session summary ==\n");
  std::printf("verdict      %s: %s\n", summary.verdict.name.c_str(),
              summary.verdict.reason.c_str());
  std::printf(
      "truth        none known: recorded neurons, so the verdict is what they say and is not "
      "checked against a ground truth\n");
  std::printf(
      "trials       %zu (%zu validation, %zu criticism, %zu flagged, %zu refused, %zu aborted, "
      "%zu deadline misses); stopped: %s\n",
      summary.trials, summary.validation_trials, summary.criticism_trials, summary.flagged_trials,
      summary.refused_trials, summary.aborted_trials, summary.deadline_misses,
      stopped       ? summary.stop_reason.c_str()
      : signal != 0 ? "by a signal"
                    : "for no stop rule");
  internal::print_hypothesis_rows(summary);
  std::printf(
      "data         %zu of %zu recorded repeats used; %zu of %zu conditions exhausted%s; %.1f s "
      "wall\n",
      subject->used(), subject->total(), exhausted_conditions, data.condition_count(),
      closed_loop->data_exhausted() ? " (all: the session stopped for it)" : "", wall);

  try {
    nlohmann::json out = summary_json(summary, stopped       ? summary.stop_reason
                                               : signal != 0 ? "signal"
                                                             : "");
    out.update({{"protocol", protocol.name},
                {"resumed", false},
                {"rig", "recorded"},
                {"seed", options.seed},
                {"data_exhausted", closed_loop->data_exhausted()},
                {"dataset",
                 {{"file", dataset.string()},
                  {"session", data.session()},
                  {"date", data.date()},
                  {"subject", data.subject()},
                  {"units", units},
                  {"conditions", data.condition_count()},
                  {"response_window_ms", {window.start_ms, window.end_ms}},
                  {"repeats_recorded", subject->total()},
                  {"repeats_used", subject->used()},
                  {"conditions_exhausted", exhausted_conditions},
                  {"ground_truth", nullptr}}}});
    std::ofstream(dir / "summary.json") << out.dump(2) << '\n';
    std::printf(
        "session files in %s (session.sqlite, summary.json); check it with: twinloop verify %s\n",
        dir.string().c_str(), dir.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: writing the session files failed: %s\n", e.what());
    return kExitRefused;
  }
  return kExitOk;
}

}  // namespace twinloop::daemon::internal

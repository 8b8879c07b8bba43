// Real neurons: what the closed loop concludes about awake macaque V1 units (Ecker et al. 2010,
// Science 327:584; data by Tolias, Ecker, Berens & Bethge, CC BY-NC-ND 3.0, read unmodified from
// the shared data folder) when each trial is answered by a recorded repeat of the chosen
// direction not used before. Every session of the dataset runs with the discriminating designer
// and with random choice, on the same seeds, through ClosedLoop and RecordedRig (no record).
//
// Per session and overall it prints: each strategy's verdict; the trials until a hypothesis first
// reached the posterior threshold (or "-" when none did); sessions stopped because the data were
// exhausted; and each twin's predictive validity, Spearman's rho between predicted mean and
// observed count with its 95% bootstrap interval (twin::ModelCheck, the session's own model
// check), on the session's validation trials and, as a larger out-of-sample test, on the
// recorded repeats the session never used (the twins refitted on the session's trials, then
// predicting every unused repeat). Then medians across sessions and the random/discriminate
// ratio of trials to the threshold.
//
// There is no ground truth for real neurons: a verdict here is what the data say under the
// twins' assumptions, and the two strategies agreeing is the only cross-check.
//
// Seeds: a seed fixes the order in which each direction's repeats are used (and the designers'
// draws). Sessions with few repeats per direction would give every seed nearly the same trials,
// so a session runs min(--seeds, max(1, repeats / 10)) seeds: 1 below 20 repeats per direction.
//
// Pooled Spearman rho over (trial, unit) pairs is dominated by the differences in mean rate
// between units (a constant rate per unit already ranks them), so the null twin scores high too;
// compare the twins with each other, not with 0.
//
//   bench_real_v1 [--dataset FILE.mat] [--protocol FILE.yaml] [--seeds N (3)]
//                 [--sessions a,b,... (all)] [--max-trials T (protocol's)] [--jobs J (1)]
//                 [--refit-every N (1)] [--min-trials N (20)] [--in-place-refit]
//
// --in-place-refit refits the twins on the calling thread instead of their own (the same
// schedule: a refit designs the next trial; only the validation coin's stream differs).
// --min-trials holds off the posterior stop (ClosedLoopOptions::min_trials_before_stop): with a
// budget above a session's recorded trials, e.g. --min-trials 400, every session runs until its
// data are exhausted or the budget is spent, and the verdict rests on many validation trials.
//
// Progress goes to stderr, results to stdout. With --jobs > 1, sessions run in parallel threads;
// set OMP_NUM_THREADS=1 so LibTorch does not oversubscribe the cores.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/recorded_rig.hpp"
#include "twinloop/hil/recorded_responses.hpp"
#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/hypothesis.hpp"
#include "twinloop/twin/model_check.hpp"

namespace {

using namespace twinloop;

struct Settings {
  std::string dataset =
      std::string(TWINLOOP_SHARED_DATA) + "/v1_gratings_ecker2010/data_v1_binned_moving.mat";
  std::string protocol =
      std::string(TWINLOOP_SOURCE_DIR) + "/config/examples/protocol_v1_ecker2010.yaml";
  std::size_t seeds = 3;
  std::vector<std::size_t> sessions;  // empty: all
  std::uint32_t max_trials = 0;       // 0: the protocol's
  std::size_t jobs = 1;
  std::size_t refit_every = 1;
  std::optional<std::size_t> min_trials;  // no posterior stop before this many trials
  bool in_place_refit = false;
};

// Logs every delivered trial (candidate, counts) on its way through the recorded rig.
class LoggingRig final : public daemon::TrialRig {
 public:
  explicit LoggingRig(daemon::RecordedRig& inner) : inner_(inner) {}
  Result run_trial(std::uint64_t trial, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result r = inner_.run_trial(trial, stimulus, counts);
    if (r.delivered) {
      stimuli_.push_back(stimulus);
      counts_.insert(counts_.end(), counts.begin(), counts.end());
    }
    return r;
  }
  [[nodiscard]] bool available(std::uint32_t candidate) const noexcept override {
    return inner_.available(candidate);
  }
  std::vector<protocols::Stimulus> stimuli_;
  std::vector<std::uint32_t> counts_;

 private:
  daemon::RecordedRig& inner_;
};

struct Run {
  std::size_t session = 0;
  std::uint64_t seed = 0;
  protocols::DesignerStrategy strategy = protocols::DesignerStrategy::kDiscriminate;
  std::string verdict;
  std::optional<std::size_t> to_threshold;  // first trial a hypothesis reached the threshold
  std::string reached_by;
  std::size_t trials = 0;
  std::size_t validation_trials = 0;
  bool exhausted = false;
  std::vector<twin::ModelCheckResult> validation;  // per hypothesis
  std::vector<twin::ModelCheckResult> heldout;     // per hypothesis; empty without unused data
  std::size_t heldout_trials = 0;
  double seconds = 0.0;
  std::string error;
};

Run run_one(const protocols::Protocol& protocol, const hil::RecordedResponses& data,
            protocols::DesignerStrategy strategy, std::uint64_t seed, const Settings& settings) {
  Run run;
  run.session = data.session();
  run.seed = seed;
  run.strategy = strategy;
  const auto started = std::chrono::steady_clock::now();
  try {
    hil::RecordedSubject subject(data, {.seed = seed});
    daemon::RecordedRig recorded(subject, protocol.stimulus, protocol.timing);
    LoggingRig rig(recorded);
    daemon::ClosedLoopOptions options =
        daemon::session_loop_options(protocol, seed, protocols::to_string(strategy));
    options.refit_every = settings.refit_every;
    if (settings.min_trials) options.min_trials_before_stop = *settings.min_trials;
    options.background_refit = !settings.in_place_refit;
    if (settings.max_trials > 0) options.max_trials = settings.max_trials;
    const std::size_t units = data.unit_count();
    daemon::ClosedLoop loop(protocol, units, rig, nullptr, options);
    while (loop.step()) {
    }
    const daemon::SessionSummary summary = loop.summary();
    run.verdict = summary.verdict.name;
    run.trials = summary.trials;
    run.validation_trials = summary.validation_trials;
    run.exhausted = loop.data_exhausted();
    const double threshold = loop.stop_rules().posterior_threshold;
    for (std::size_t k = 0; k < summary.hypotheses.size(); ++k) {
      run.validation.push_back(summary.hypotheses[k].check);
      const auto t = loop.trials_to_reach(k, threshold);
      if (t && (!run.to_threshold || *t < *run.to_threshold)) {
        run.to_threshold = t;
        run.reached_by = summary.hypotheses[k].name;
      }
    }

    // Out of sample: every recorded repeat the session did not use, predicted by each twin
    // refitted on the session's trials.
    if (!subject.exhausted() && !rig.stimuli_.empty()) {
      // The unused repeats of a condition are the rest of its seeded order: draw them from a
      // fresh subject with the same seed, past the ones the session took.
      hil::RecordedSubject rest(data, {.seed = seed});
      std::vector<std::uint32_t> counts(units);
      std::vector<std::vector<std::uint32_t>> held;  // per unused trial
      std::vector<std::size_t> held_candidate;
      for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
        const protocols::Stimulus s = protocol.stimulus.stimulus(c);
        const std::size_t condition = recorded.conditions()[c];
        const std::size_t taken =
            data.conditions()[condition].repeats - subject.remaining(condition);
        for (std::size_t i = 0; i < data.conditions()[condition].repeats; ++i) {
          if (rest.respond(s, counts).answer != hil::RecordedAnswer::kAnswered) break;
          if (i < taken) continue;
          held.push_back(counts);
          held_candidate.push_back(c);
        }
      }
      run.heldout_trials = held.size();
      std::vector<protocols::Stimulus> candidates;
      for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
        candidates.push_back(protocol.stimulus.stimulus(c));
      }
      for (const protocols::HypothesisSpec& spec : protocol.hypotheses) {
        auto twin = twin::make_hypothesis(spec, protocol.stimulus, units, options.twin);
        twin->update(rig.stimuli_, rig.counts_);
        twin::PredictionBatch batch;
        batch.resize(candidates.size(), units);
        twin->predict(candidates, batch);
        twin::ModelCheckOptions check_options;
        check_options.seed ^= seed;
        twin::ModelCheck check(units, check_options);
        for (std::size_t i = 0; i < held.size(); ++i) {
          check.add_trial(batch, held_candidate[i], held[i]);
        }
        run.heldout.push_back(check.result());
      }
    }
  } catch (const std::exception& e) {
    run.error = e.what();
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return run;
}

double median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string rho_text(const twin::ModelCheckResult& r) {
  char text[48];
  if (r.trials == 0 || std::isnan(r.spearman)) return "   n/a          ";
  std::snprintf(text, sizeof text, "%.2f [%.2f,%.2f]", r.spearman, r.spearman_ci_low,
                r.spearman_ci_high);
  return text;
}

std::vector<std::size_t> parse_list(const char* text) {
  std::vector<std::size_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(std::strtoul(item.c_str(), nullptr, 10));
  }
  return out;
}

bool parse(int argc, char** argv, Settings& s, int& exit_code) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--dataset" && has_value)
      s.dataset = argv[++i];
    else if (arg == "--protocol" && has_value)
      s.protocol = argv[++i];
    else if (arg == "--seeds" && has_value)
      s.seeds = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--sessions" && has_value)
      s.sessions = parse_list(argv[++i]);
    else if (arg == "--max-trials" && has_value)
      s.max_trials = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    else if (arg == "--jobs" && has_value)
      s.jobs = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--refit-every" && has_value)
      s.refit_every = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--min-trials" && has_value)
      s.min_trials = std::strtoul(argv[++i], nullptr, 10);
    else if (arg == "--in-place-refit")
      s.in_place_refit = true;
    else {
      std::printf(
          "usage: bench_real_v1 [--dataset FILE.mat] [--protocol FILE.yaml] [--seeds N (3)]\n"
          "                     [--sessions a,b,... (all)] [--max-trials T (protocol's)]\n"
          "                     [--jobs J (1)] [--refit-every N (1)] [--min-trials N (20)]\n"
          "                     [--in-place-refit]\n");
      exit_code = arg == "--help" ? 0 : 2;
      return false;
    }
  }
  if (s.seeds == 0 || s.jobs == 0 || s.refit_every == 0) {
    std::fputs("bench_real_v1: --seeds, --jobs and --refit-every must be >= 1\n", stderr);
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
  const auto loaded = protocols::load_protocol_file(settings.protocol);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    return 1;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  std::vector<hil::RecordedResponses> sessions;
  try {
    sessions = hil::RecordedResponses::load_all(
        settings.dataset, {protocol.timing.response_start_ms, protocol.timing.response_end_ms});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_real_v1: %s\n", e.what());
    return 1;
  }
  if (settings.sessions.empty()) {
    for (std::size_t s = 0; s < sessions.size(); ++s) settings.sessions.push_back(s);
  }
  for (std::size_t s : settings.sessions) {
    if (s >= sessions.size()) {
      std::fprintf(stderr, "bench_real_v1: session %zu out of range (0..%zu)\n", s,
                   sessions.size() - 1);
      return 2;
    }
  }
  const std::size_t hypotheses = protocol.hypotheses.size();
  const std::uint32_t budget =
      settings.max_trials > 0 ? settings.max_trials : protocol.stop.max_trials;

  // Tasks: (session, seed, strategy), discriminate then random for each seed.
  struct Task {
    std::size_t session;
    std::uint64_t seed;
    protocols::DesignerStrategy strategy;
  };
  std::vector<Task> tasks;
  for (std::size_t s : settings.sessions) {
    std::size_t min_repeats = SIZE_MAX;
    for (const auto& c : sessions[s].conditions()) min_repeats = std::min(min_repeats, c.repeats);
    const std::size_t seeds = std::clamp<std::size_t>(min_repeats / 10, 1, settings.seeds);
    for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
      tasks.push_back({s, seed, protocols::DesignerStrategy::kDiscriminate});
      tasks.push_back({s, seed, protocols::DesignerStrategy::kRandom});
    }
  }
  std::printf("%s: %zu sessions of real V1 units (%s), %zu candidates, hypotheses",
              protocol.name.c_str(), settings.sessions.size(), settings.dataset.c_str(),
              protocol.stimulus.candidate_count());
  for (const auto& h : protocol.hypotheses) std::printf(" %s", h.name.c_str());
  std::printf(
      "; posterior threshold %.2f, budget %u trials (or the data), spikes counted %g..%g ms; "
      "%zu runs (discriminate and random on the same seeds), refit every %zu, no posterior "
      "stop before %zu trials\n",
      protocol.stop.posterior_threshold, budget, protocol.timing.response_start_ms,
      protocol.timing.response_end_ms, tasks.size(), settings.refit_every,
      settings.min_trials.value_or(daemon::ClosedLoopOptions{}.min_trials_before_stop));
  std::fflush(stdout);

  std::vector<Run> runs(tasks.size());
  std::atomic<std::size_t> next{0}, done{0};
  std::mutex progress;
  const auto worker = [&] {
    for (std::size_t i = next++; i < tasks.size(); i = next++) {
      const Task& t = tasks[i];
      runs[i] = run_one(protocol, sessions[t.session], t.strategy, t.seed, settings);
      const std::lock_guard lock(progress);
      std::fprintf(stderr,
                   "[%zu/%zu] session %2zu seed %llu %-12s: %-11s %3zu trials%s  [%.0f s]\n",
                   ++done, tasks.size(), t.session, static_cast<unsigned long long>(t.seed),
                   std::string(protocols::to_string(t.strategy)).c_str(),
                   runs[i].error.empty() ? runs[i].verdict.c_str() : "ERROR", runs[i].trials,
                   runs[i].error.empty() ? "" : (" " + runs[i].error).c_str(), elapsed());
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t j = 1; j < std::min(settings.jobs, tasks.size()); ++j)
    threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();

  // Per session and seed.
  std::printf(
      "\nper session (units x repeats per direction), seed: strategy verdict, trials to P >= "
      "%.2f (by whom) / trials run, E = stopped because the data were exhausted\n",
      protocol.stop.posterior_threshold);
  const char* names[2] = {"discriminate", "random"};
  for (std::size_t i = 0; i + 1 < runs.size(); i += 2) {
    const Run* pair[2] = {&runs[i], &runs[i + 1]};
    const hil::RecordedResponses& data = sessions[pair[0]->session];
    std::printf("  s%-2zu (%2zux%3zu) seed %llu:", pair[0]->session, data.unit_count(),
                data.conditions().front().repeats, static_cast<unsigned long long>(pair[0]->seed));
    for (int k = 0; k < 2; ++k) {
      const Run& r = *pair[k];
      if (!r.error.empty()) {
        std::printf("  %s ERROR %s", names[k], r.error.c_str());
        continue;
      }
      char reached[48] = "-";
      if (r.to_threshold) {
        std::snprintf(reached, sizeof reached, "%zu (%s)", *r.to_threshold, r.reached_by.c_str());
      }
      std::printf("  %s %-11s %-18s/%3zu%s", names[k], r.verdict.c_str(), reached, r.trials,
                  r.exhausted ? " E" : "  ");
    }
    std::printf("\n");
  }

  // Predictive validity per twin, per run.
  std::printf(
      "\npredictive validity, Spearman rho [95%% bootstrap CI] of predicted mean vs count, per "
      "twin: on the session's validation trials (val) and on the recorded repeats it never used "
      "(held-out, twins refitted on the session's trials)\n");
  for (const Run& r : runs) {
    if (!r.error.empty()) continue;
    std::printf("  s%-2zu seed %llu %-12s val (%2zu trials):", r.session,
                static_cast<unsigned long long>(r.seed),
                std::string(protocols::to_string(r.strategy)).c_str(), r.validation_trials);
    for (std::size_t k = 0; k < hypotheses; ++k) {
      std::printf(" %s %s", protocol.hypotheses[k].name.c_str(), rho_text(r.validation[k]).c_str());
    }
    std::printf("\n  %*s held-out (%4zu):", 27, "", r.heldout_trials);
    for (std::size_t k = 0; k < r.heldout.size(); ++k) {
      std::printf(" %s %s", protocol.hypotheses[k].name.c_str(), rho_text(r.heldout[k]).c_str());
    }
    std::printf("\n");
  }

  // Overall. Per session first (median over its seeds), then across sessions.
  std::printf("\noverall (%zu sessions):\n", settings.sessions.size());
  for (int k = 0; k < 2; ++k) {
    std::vector<std::string> verdicts;
    std::size_t exhausted = 0, reached = 0, n = 0, errors = 0;
    for (std::size_t i = static_cast<std::size_t>(k); i < runs.size(); i += 2) {
      if (!runs[i].error.empty()) {
        ++errors;
        continue;
      }
      ++n;
      verdicts.push_back(runs[i].verdict);
      exhausted += runs[i].exhausted ? 1 : 0;
      reached += runs[i].to_threshold ? 1 : 0;
    }
    std::sort(verdicts.begin(), verdicts.end());
    std::printf("  %-12s verdicts over %zu runs:", names[k], n);
    for (std::size_t a = 0; a < verdicts.size();) {
      std::size_t b = a;
      while (b < verdicts.size() && verdicts[b] == verdicts[a]) ++b;
      std::printf(" %s %zu,", verdicts[a].c_str(), b - a);
      a = b;
    }
    std::printf(" threshold reached in %zu, data exhausted in %zu, errors %zu\n", reached,
                exhausted, errors);
  }
  std::vector<double> d_session, r_session, ratio_session, d_run, r_run;
  std::size_t agree = 0, pairs = 0;
  for (std::size_t s : settings.sessions) {
    std::vector<double> d, r, ratio;
    for (std::size_t i = 0; i + 1 < runs.size(); i += 2) {
      if (runs[i].session != s || !runs[i].error.empty() || !runs[i + 1].error.empty()) continue;
      // Not reached: the trials the session ran (a lower bound), as bench_efficiency counts the
      // budget.
      const double dt = runs[i].to_threshold ? static_cast<double>(*runs[i].to_threshold)
                                             : static_cast<double>(runs[i].trials);
      const double rt = runs[i + 1].to_threshold ? static_cast<double>(*runs[i + 1].to_threshold)
                                                 : static_cast<double>(runs[i + 1].trials);
      d.push_back(dt);
      r.push_back(rt);
      d_run.push_back(dt);
      r_run.push_back(rt);
      ratio.push_back(rt / dt);
      ++pairs;
      agree += runs[i].verdict == runs[i + 1].verdict ? 1 : 0;
    }
    if (d.empty()) continue;
    d_session.push_back(median(d));
    r_session.push_back(median(r));
    ratio_session.push_back(median(ratio));
  }
  std::printf(
      "  trials to P >= %.2f (not reached: trials run), median across sessions: discriminate "
      "%.1f, random %.1f; median per-session ratio random/discriminate %.2fx, ratio of medians "
      "%.2fx; over runs: %.1f vs %.1f\n",
      protocol.stop.posterior_threshold, median(d_session), median(r_session),
      median(ratio_session), median(r_session) / median(d_session), median(d_run), median(r_run));
  std::printf("  same verdict from both strategies in %zu of %zu seed pairs\n", agree, pairs);
  for (int k = 0; k < 2; ++k) {
    std::printf("  %-12s median rho across sessions, val | held-out:", names[k]);
    for (std::size_t h = 0; h < hypotheses; ++h) {
      std::vector<double> val_session, held_session;
      std::size_t fits = 0, checked = 0;
      for (std::size_t s : settings.sessions) {
        std::vector<double> val, held;
        for (std::size_t i = static_cast<std::size_t>(k); i < runs.size(); i += 2) {
          const Run& r = runs[i];
          if (r.session != s || !r.error.empty()) continue;
          val.push_back(r.validation[h].trials > 0 ? r.validation[h].spearman : std::nan(""));
          if (!r.heldout.empty()) held.push_back(r.heldout[h].spearman);
          if (r.validation[h].enough_data) {
            ++checked;
            fits += r.validation[h].fits ? 1 : 0;
          }
        }
        val_session.push_back(median(val));
        held_session.push_back(median(held));
      }
      std::printf(" %s %.2f | %.2f (PIT fits %zu/%zu)", protocol.hypotheses[h].name.c_str(),
                  median(val_session), median(held_session), fits, checked);
    }
    std::printf("\n");
  }
  std::printf("(%.0f s)\n", elapsed());
  return 0;
}

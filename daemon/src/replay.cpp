// `twinloop replay SESSION_DIR`: re-runs a recorded session through the same acquisition, twin and
// scoring code and reports, row by row, whether it reproduces the record.
//
// Pass 1 runs the acquisition loop (the live session's block size and detector) over the raw
// SpikeGLX recording the session wrote (`record_raw`), or over the stream named with --raw (a
// SpikeGLX .bin or an Open Ephys binary recording on the session's sample clock), and counts each
// recorded trial's response window from the re-detected spikes. Pass 2 rebuilds the session with a
// fresh ClosedLoop (same protocol, seed and designer) whose rig answers each trial with those
// counts, writing a new record in SESSION_DIR/replay-N; the designs, predictions, counts and
// posteriors of the two records are then compared. The loop designs every trial itself, so a replay
// also checks that the designer made the choice on record; where it did not, the replay stops there
// and says so.
//
// With --designer STRATEGY, pass 2 also asks at each trial what that designer would have chosen
// given the real history (ClosedLoop::alternative) and the expected information gain of both
// choices (report_alternatives() below). It then asks whether that designer would have reached
// the verdict sooner (counterfactual() below). That cannot be observed: the subject answered only
// the stimuli that were shown. So the other designer runs in a world where each stimulus it chooses
// is answered by a recorded response of the real subject to that stimulus while unused ones remain
// (observed), and otherwise by a draw from a reference twin fitted to every trial of the session
// (model-based). The recorded designer is run in the same world, so the two are compared on the
// same footing, and the report counts how many responses of each kind the comparison rests on.
//
// A path that is a recording with no session record (an Open Ephys or SpikeGLX recording) runs
// through the acquisition path alone, as `twinloop detect` would with the live block size.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "src/progress.hpp"
#include "src/recording_source.hpp"
#include "src/session_host.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/drivers/openephys_binary_source.hpp"
#include "twinloop/drivers/probe_geometry.hpp"
#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/hypothesis.hpp"

namespace twinloop::daemon {
namespace {

constexpr std::size_t kLiveBlockSamples = 30;  // the live session's 1 ms blocks (run_session.cpp)

struct Detected {
  std::vector<acquisition::SpikeEvent> events;  // in sample order
  std::uint64_t samples = 0;
  std::uint64_t gaps = 0;
  drivers::ProbeInfo probe;
  std::string description;  // the recording, in one line
  std::vector<std::string> warnings;
  bool ok = false;
  std::string error;
};

// Pass 1: the acquisition pipeline over the raw recording, as the live session ran it.
Detected detect_raw(internal::RecordingSource& recording, bool quiet) {
  Detected out;
  acquisition::AcquisitionConfig config;
  config.block_samples = kLiveBlockSamples;
  acquisition::AcquisitionLoop loop(recording.source(), config);
  if (!loop.start()) {
    out.error = loop.error();
    return out;
  }
  out.probe = loop.probe();
  out.description = recording.describe();
  out.warnings = recording.warnings();
  const double total = static_cast<double>(recording.total_samples());
  internal::Progress progress(!quiet);
  std::vector<acquisition::SpikeEvent> batch(1 << 14);
  std::vector<acquisition::GapEvent> gaps(64);
  for (;;) {
    const acquisition::AcquisitionCounters counters = loop.counters();
    std::size_t n = 0;
    while ((n = loop.drain_events(batch)) > 0) {
      out.events.insert(out.events.end(), batch.begin(),
                        batch.begin() + static_cast<std::ptrdiff_t>(n));
    }
    while ((n = loop.drain_gaps(gaps)) > 0) out.gaps += n;
    if (counters.finished) {
      while ((n = loop.drain_events(batch)) > 0) {
        out.events.insert(out.events.end(), batch.begin(),
                          batch.begin() + static_cast<std::ptrdiff_t>(n));
      }
      break;
    }
    progress.update(total > 0 ? static_cast<double>(counters.samples) / total : -1.0,
                    "re-detecting spikes: " + std::to_string(out.events.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  loop.join();
  const acquisition::AcquisitionCounters counters = loop.counters();
  progress.finish("re-detected " + std::to_string(out.events.size()) + " spikes");
  out.samples = counters.samples;
  out.ok = !counters.failed;
  if (counters.failed) out.error = recording.source().last_error();
  std::stable_sort(out.events.begin(), out.events.end(),
                   [](const auto& a, const auto& b) { return a.sample < b.sample; });
  return out;
}

// Counts per channel in [start, end) from the re-detected spikes.
std::vector<std::uint32_t> count_window(const std::vector<acquisition::SpikeEvent>& events,
                                        std::size_t channels, std::int64_t start,
                                        std::int64_t end) {
  std::vector<std::uint32_t> counts(channels, 0);
  auto it = std::lower_bound(events.begin(), events.end(), start,
                             [](const auto& e, std::int64_t s) { return e.sample < s; });
  for (; it != events.end() && it->sample < end; ++it) {
    if (static_cast<std::size_t>(it->channel) < channels) {
      ++counts[static_cast<std::size_t>(it->channel)];
    }
  }
  return counts;
}

// Answers each trial the loop designs with what the recorded session observed (re-detected).
class ReplayRig final : public TrialRig {
 public:
  ReplayRig(const std::vector<RecordedTrial>& recorded, const Detected& detected, std::size_t units)
      : recorded_(recorded), detected_(detected), units_(units) {}

  Result run_trial(std::uint64_t trial, const protocols::Stimulus& /*stimulus*/,
                   std::span<std::uint32_t> counts) override {
    Result r;
    const RecordedTrial& t = recorded_.at(trial);
    r.onset_sample = t.onset_sample;
    r.window_start = t.window_start;
    r.window_end = t.window_end;
    if (t.status == TrialStatus::kAborted || t.onset_sample < 0 || t.counts.empty()) {
      r.problem = "not completed in the recorded session";
      return r;
    }
    r.delivered = true;
    r.delivered_at = Timestamp::now();
    const auto got = count_window(detected_.events, units_, t.window_start, t.window_end);
    std::copy(got.begin(), got.end(), counts.begin());
    if (t.status == TrialStatus::kFlagged) {
      r.flagged = true;
      r.problem = "flagged in the recorded session";
    }
    return r;
  }

 private:
  const std::vector<RecordedTrial>& recorded_;
  const Detected& detected_;
  std::size_t units_;
};

struct Comparison {
  std::size_t compared = 0;
  std::size_t design_differs = 0, counts_differ = 0, predictions_differ = 0, posteriors_differ = 0,
              status_differs = 0;
  double max_prediction_diff = 0.0, max_posterior_diff = 0.0;
  std::vector<std::string> first_differences;  // a few, for the report
};

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

Comparison compare(const std::vector<RecordedTrial>& original,
                   const std::vector<RecordedTrial>& replayed) {
  Comparison c;
  const auto note = [&c](std::uint64_t trial, const std::string& what) {
    if (c.first_differences.size() < 8) {
      c.first_differences.push_back("trial " + std::to_string(trial) + ": " + what);
    }
  };
  for (std::size_t i = 0; i < std::min(original.size(), replayed.size()); ++i) {
    const RecordedTrial& o = original[i];
    const RecordedTrial& r = replayed[i];
    ++c.compared;
    if (o.candidate != r.candidate || o.is_validation != r.is_validation) {
      ++c.design_differs;
      note(o.trial, "designed candidate " + std::to_string(r.candidate) +
                        (r.is_validation ? " (validation)" : "") + ", recorded " +
                        std::to_string(o.candidate) + (o.is_validation ? " (validation)" : ""));
    }
    if (o.status != r.status) {
      ++c.status_differs;
      note(o.trial, std::string("status ") + std::string(to_string(r.status)) + ", recorded " +
                        std::string(to_string(o.status)));
    }
    if (o.counts != r.counts) {
      ++c.counts_differ;
      std::size_t units = 0;
      for (std::size_t u = 0; u < std::min(o.counts.size(), r.counts.size()); ++u) {
        units += o.counts[u] != r.counts[u] ? 1 : 0;
      }
      note(o.trial, "counts differ on " + std::to_string(units) + " unit(s)");
    }
    double pred = 0.0;
    bool pred_differs = o.mean.size() != r.mean.size();
    for (std::size_t h = 0; !pred_differs && h < o.mean.size(); ++h) {
      pred = std::max({pred, max_abs_diff(o.mean[h], r.mean[h]),
                       max_abs_diff(o.dispersion[h], r.dispersion[h])});
    }
    pred_differs = pred_differs || pred > 0.0;
    if (pred_differs) {
      ++c.predictions_differ;
      c.max_prediction_diff = std::max(c.max_prediction_diff, pred);
    }
    const double post = max_abs_diff(o.posterior, r.posterior);
    if (post > 0.0) {
      ++c.posteriors_differ;
      c.max_posterior_diff = std::max(c.max_posterior_diff, post);
    }
  }
  return c;
}

// The counterfactual world: recorded responses where they exist, the reference twin elsewhere.
class CounterfactualRig final : public TrialRig {
 public:
  CounterfactualRig(std::map<std::uint32_t, std::vector<std::vector<std::uint32_t>>> observed,
                    const twin::PredictionBatch& reference, std::uint64_t seed)
      : observed_(std::move(observed)), reference_(reference), rng_(seed) {}

  Result run_trial(std::uint64_t /*trial*/, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result r;
    r.delivered = true;
    r.onset_sample = r.window_start = next_onset_;
    r.window_end = next_onset_ + 1;
    next_onset_ += 1000;
    const std::uint32_t c = stimulus.candidate;
    auto it = observed_.find(c);
    if (it != observed_.end() && !it->second.empty()) {
      // Without replacement, in a random order: each recorded response is used at most once.
      std::uniform_int_distribution<std::size_t> pick(0, it->second.size() - 1);
      const std::size_t i = pick(rng_);
      std::copy(it->second[i].begin(), it->second[i].end(), counts.begin());
      it->second[i] = std::move(it->second.back());
      it->second.pop_back();
      ++observed_used;
      return r;
    }
    for (std::size_t u = 0; u < counts.size(); ++u) {
      const twin::CountDistribution d = reference_.at(c, u);
      double rate = d.mean;
      if (!twin::is_poisson(d)) {  // negative binomial: a gamma-mixed Poisson, var = m + a m^2
        std::gamma_distribution<double> gamma(1.0 / d.dispersion, d.dispersion * d.mean);
        rate = gamma(rng_);
      }
      counts[u] =
          rate > 0.0 ? static_cast<std::uint32_t>(std::poisson_distribution<long>(rate)(rng_)) : 0U;
    }
    ++model_based;
    return r;
  }

  std::size_t observed_used = 0, model_based = 0;

 private:
  std::map<std::uint32_t, std::vector<std::vector<std::uint32_t>>> observed_;
  const twin::PredictionBatch& reference_;
  std::mt19937_64 rng_;
  std::int64_t next_onset_ = 0;
};

// "direction=90 contrast=0.5": a candidate in the protocol's own terms.
std::string describe_stimulus(const protocols::StimulusSpace& space, std::uint32_t candidate) {
  const protocols::Stimulus s = space.stimulus(candidate);
  std::string text;
  for (std::size_t d = 0; d < space.dimension_count(); ++d) {
    char value[64];
    std::snprintf(value, sizeof value, "%.6g", s.values[d]);
    text += (text.empty() ? "" : " ") + space.dimensions[d].name + "=" + value;
  }
  return text;
}

// One recorded trial, and what the other designer would have chosen there given the real history.
struct AlternativeRow {
  std::uint64_t trial = 0;
  std::uint32_t recorded = 0;
  std::string recorded_strategy;
  AlternativeChoice other;
};

// Prints and returns (as JSON) the per-trial comparison of the recorded choices with the other
// designer's: what is observed (the recorded choices) and what is model-based (the other's
// choices, every expected information gain) kept apart.
nlohmann::json report_alternatives(const protocols::Protocol& protocol,
                                   const std::vector<AlternativeRow>& rows,
                                   const std::string& recorded_name,
                                   const std::string& other_name) {
  std::size_t same = 0, with_eig = 0;
  double eig_recorded = 0.0, eig_other = 0.0;
  nlohmann::json per_trial = nlohmann::json::array();
  for (const AlternativeRow& r : rows) {
    same += r.other.candidate == r.recorded ? 1 : 0;
    const bool finite = std::isfinite(r.other.eig) && std::isfinite(r.other.eig_planned);
    if (finite) {
      ++with_eig;
      eig_recorded += r.other.eig_planned;
      eig_other += r.other.eig;
    }
    const auto eig_json = [](double v) {
      return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
    };
    per_trial.push_back(
        {{"trial", r.trial},
         {"recorded_candidate", r.recorded},
         {"recorded_stimulus", describe_stimulus(protocol.stimulus, r.recorded)},
         {"recorded_strategy", r.recorded_strategy},
         {"other_candidate", r.other.candidate},
         {"other_stimulus", describe_stimulus(protocol.stimulus, r.other.candidate)},
         {"eig_recorded_nats", eig_json(r.other.eig_planned)},
         {"eig_other_nats", eig_json(r.other.eig)}});
  }
  std::printf(
      "\nat each recorded trial, given the real history (the posterior and fitted twins the "
      "session had there):\n"
      "  %s would have chosen the stimulus that was shown in %zu of %zu trials\n",
      other_name.c_str(), same, rows.size());
  if (with_eig > 0) {
    std::printf(
        "  expected information gain (model-based, the twins' predictions): %s's choices %.4g "
        "nats in all, %s's %.4g nats (%.2fx)\n",
        recorded_name.c_str(), eig_recorded, other_name.c_str(), eig_other,
        eig_recorded > 0 ? eig_other / eig_recorded : NAN);
  }
  std::printf("  %-6s %-21s %-31s %-10s %-31s %-10s\n", "trial", "designed by", "shown (observed)",
              "EIG nats", (other_name + " would choose").c_str(), "EIG nats");
  const std::size_t shown = std::min<std::size_t>(rows.size(), 12);
  for (std::size_t i = 0; i < shown; ++i) {
    const AlternativeRow& r = rows[i];
    std::printf("  %-6llu %-21s %-31s %-10.4g %-31s %-10.4g\n",
                static_cast<unsigned long long>(r.trial), r.recorded_strategy.c_str(),
                describe_stimulus(protocol.stimulus, r.recorded).c_str(), r.other.eig_planned,
                describe_stimulus(protocol.stimulus, r.other.candidate).c_str(), r.other.eig);
  }
  if (rows.size() > shown) {
    std::printf("  ... %zu more trials in replay.json (counterfactual.per_trial)\n",
                rows.size() - shown);
  }
  return {{"trials", rows.size()},
          {"same_choice", same},
          {"eig_recorded_total_nats", eig_recorded},
          {"eig_other_total_nats", eig_other},
          {"per_trial", per_trial}};
}

struct CounterfactualRun {
  std::optional<std::size_t> trials_to_threshold;
  std::string verdict;
  std::size_t trials = 0, observed = 0, model_based = 0;
};

double median_of(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::filesystem::path next_free(const std::filesystem::path& dir, const std::string& stem) {
  for (int i = 1;; ++i) {
    std::filesystem::path p = dir / (stem + "-" + std::to_string(i));
    if (!std::filesystem::exists(p)) return p;
  }
}

struct CounterfactualInputs {
  const protocols::Protocol& protocol;
  std::size_t units;
  const std::vector<RecordedTrial>& original;
  const Detected& detected;
  const SessionSummary& replay_summary;
  const std::vector<std::optional<std::size_t>>& recorded_to_threshold;  // per hypothesis
  const std::vector<AlternativeRow>& alternatives;                       // per replayed trial
  ClosedLoopOptions base;
  protocols::DesignerStrategy recorded_strategy;
  protocols::DesignerStrategy other_strategy;
  std::size_t runs;
  bool quiet;
};

// Runs both designers in the counterfactual world; prints the comparison and returns it as JSON.
nlohmann::json counterfactual(const CounterfactualInputs& in) {
  const protocols::Protocol& protocol = in.protocol;
  std::map<std::uint32_t, std::vector<std::vector<std::uint32_t>>> pool;
  std::vector<protocols::Stimulus> stimuli;
  std::vector<std::uint32_t> all_counts;
  for (const RecordedTrial& t : in.original) {
    if (t.status != TrialStatus::kScored || t.candidate < 0) continue;
    const auto candidate = static_cast<std::uint32_t>(t.candidate);
    auto counts = count_window(in.detected.events, in.units, t.window_start, t.window_end);
    stimuli.push_back(protocol.stimulus.stimulus(candidate));
    all_counts.insert(all_counts.end(), counts.begin(), counts.end());
    pool[candidate].push_back(std::move(counts));
  }
  // The reference: the hypothesis the session's verdict named, else the one it ended up favouring.
  std::size_t reference = 0;
  for (std::size_t h = 0; h < in.replay_summary.hypotheses.size(); ++h) {
    if (in.replay_summary.hypotheses[h].posterior >
        in.replay_summary.hypotheses[reference].posterior) {
      reference = h;
    }
    if (in.replay_summary.hypotheses[h].name == in.replay_summary.verdict.name) {
      reference = h;
      break;
    }
  }
  twin::PredictionBatch reference_predictions;
  {
    auto twin = twin::make_hypothesis(protocol.hypotheses[reference], protocol.stimulus, in.units,
                                      in.base.twin);
    if (!stimuli.empty()) twin->update(stimuli, all_counts);
    std::vector<protocols::Stimulus> candidates;
    for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
      candidates.push_back(protocol.stimulus.stimulus(c));
    }
    reference_predictions.resize(candidates.size(), in.units);
    twin->predict(candidates, reference_predictions);
  }
  const double threshold = protocol.stop.posterior_threshold;
  const std::string reference_name = protocol.hypotheses[reference].name;

  internal::Progress progress(!in.quiet);
  nlohmann::json strategies = nlohmann::json::object();
  std::vector<std::pair<std::string, double>> medians;
  for (const protocols::DesignerStrategy strategy : {in.recorded_strategy, in.other_strategy}) {
    const std::string name(protocols::to_string(strategy));
    if (strategies.contains(name)) continue;
    std::vector<double> reached;
    std::size_t observed = 0, model_based = 0, trials = 0;
    std::map<std::string, std::size_t> verdicts;
    for (std::size_t k = 1; k <= in.runs; ++k) {
      ClosedLoopOptions options = in.base;
      options.strategy = strategy;
      options.seed = in.base.seed * 1000003 + k;
      CounterfactualRig rig(pool, reference_predictions, options.seed);
      ClosedLoop loop(protocol, in.units, rig, nullptr, options);
      while (loop.step()) {
      }
      if (const auto n = loop.trials_to_reach(reference, threshold)) {
        reached.push_back(static_cast<double>(*n));
      }
      ++verdicts[loop.summary().verdict.name];
      observed += rig.observed_used;
      model_based += rig.model_based;
      trials += loop.trials();
      progress.update(-1.0, "counterfactual: " + name + " run " + std::to_string(k) + " of " +
                                std::to_string(in.runs));
    }
    const double median = median_of(reached);
    medians.emplace_back(name, median);
    nlohmann::json v = nlohmann::json::object();
    for (const auto& [verdict, n] : verdicts) v[verdict] = n;
    strategies[name] = {{"runs", in.runs},
                        {"reached_threshold", reached.size()},
                        {"median_trials_to_threshold",
                         std::isfinite(median) ? nlohmann::json(median) : nlohmann::json()},
                        {"verdicts", v},
                        {"responses_observed", observed},
                        {"responses_model_based", model_based},
                        {"trials", trials}};
  }
  progress.finish("counterfactual runs done");
  const std::optional<std::size_t> actual = in.recorded_to_threshold[reference];

  const std::string recorded_name(protocols::to_string(in.recorded_strategy));
  std::size_t recorded_trials = 0;
  for (const RecordedTrial& t : in.original) recorded_trials += t.status == TrialStatus::kScored;
  std::printf(
      "\ncounterfactual: would %s have reached the verdict sooner than %s?\n"
      "  reference    %s (the session's %s), fitted to all %zu scored trials; threshold %.6g\n",
      std::string(protocols::to_string(in.other_strategy)).c_str(), recorded_name.c_str(),
      reference_name.c_str(),
      in.replay_summary.verdict.name == reference_name ? "verdict" : "leading hypothesis",
      stimuli.size(), threshold);
  if (actual) {
    std::printf("  on record    %s reached it after %zu trials (observed)\n", recorded_name.c_str(),
                *actual);
  } else {
    std::printf("  on record    %s did not reach it in its %zu scored trials (observed)\n",
                recorded_name.c_str(), recorded_trials);
  }
  for (const auto& [name, median] : medians) {
    const nlohmann::json& j = strategies[name];
    const double observed = j["responses_observed"].get<double>();
    const double total = observed + j["responses_model_based"].get<double>();
    std::printf(
        "  %-12s reached it in %zu of %zu runs, median %s trials; responses: %.0f%% observed, "
        "%.0f%% model-based\n",
        name.c_str(), j["reached_threshold"].get<std::size_t>(), in.runs,
        std::isfinite(median) ? std::to_string(static_cast<int>(median)).c_str() : "-",
        total > 0 ? 100.0 * observed / total : 0.0,
        total > 0 ? 100.0 * (total - observed) / total : 0.0);
  }
  std::printf(
      "  observed: a recorded response of this subject to the chosen stimulus, each used once; "
      "model-based: a draw from %s's predictive distribution. Both designers ran in this same "
      "world (%zu seeded runs each), so their difference is a comparison, not an observation.\n",
      reference_name.c_str(), in.runs);
  nlohmann::json per_trial =
      report_alternatives(protocol, in.alternatives, recorded_name,
                          std::string(protocols::to_string(in.other_strategy)));
  return {{"at_each_recorded_trial", per_trial},
          {"reference", reference_name},
          {"threshold", threshold},
          {"recorded_strategy", protocols::to_string(in.recorded_strategy)},
          {"recorded_trials_to_threshold", actual ? nlohmann::json(*actual) : nlohmann::json()},
          {"strategies", strategies}};
}

}  // namespace

namespace {

// A path that is a recording rather than a session: an Open Ephys binary recording, or a SpikeGLX
// .bin (or its .meta) with the other beside it.
bool is_bare_recording(const std::filesystem::path& path) {
  if (std::filesystem::exists(path / SessionRecord::kFileName)) return false;
  if (drivers::is_openephys_recording(path)) return true;
  std::filesystem::path bin = path;
  if (bin.extension() == ".meta") bin.replace_extension(".bin");
  std::filesystem::path meta = bin;
  meta.replace_extension(".meta");
  return bin.extension() == ".bin" && std::filesystem::is_regular_file(bin) &&
         std::filesystem::is_regular_file(meta);
}

}  // namespace

int replay_session(const ReplayOptions& options) {
  const std::filesystem::path& dir = options.dir;
  if (is_bare_recording(dir)) {
    // No session to reproduce: the recording goes through the acquisition path alone, with the
    // live session's block size, as a first look at what a session on it would see.
    std::printf(
        "twinloop replay: %s is a recording without a session record: running it through the "
        "acquisition path only (no trials, predictions or posteriors to compare)\n",
        dir.string().c_str());
    std::fflush(stdout);
    DetectOptions detect_options;
    detect_options.recording =
        dir.extension() == ".meta" ? std::filesystem::path(dir).replace_extension(".bin") : dir;
    if (options.out) detect_options.out = *options.out;
    detect_options.pace = options.pace;
    detect_options.block_samples = kLiveBlockSamples;
    detect_options.probeinterface = options.probeinterface;
    detect_options.quiet = options.quiet;
    detect_options.command = "replay";
    return detect(detect_options);
  }
  std::string protocol_text;
  nlohmann::json config;
  std::vector<RecordedTrial> original;
  std::size_t units = 0;
  try {
    const SessionRecord record = SessionRecord::open_existing(dir);
    protocol_text = record.protocol_text();
    config = nlohmann::json::parse(record.config_json());
    original = record.trials();
    units = record.unit_count();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop replay: %s\n", e.what());
    return kExitRefused;
  }
  protocols::DesignerDefaults defaults;
  try {
    defaults = recorded_protocol_defaults(config.dump());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop replay: %s: %s\n", dir.string().c_str(), e.what());
    return kExitRefused;
  }
  const protocols::ProtocolLoadResult loaded = protocols::load_protocol_text(
      protocol_text, (dir / SessionRecord::kFileName).string(), defaults);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop replay: the protocol on record is refused by this build\n");
    return kExitRefused;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  const protocols::ProbeSpec& probe = protocol.probes.front();
  std::filesystem::path bin = dir / "raw" / ("session_g0_t0." + probe.name + ".ap.bin");
  internal::RecordingSourceOptions source_options;
  source_options.block_samples = kLiveBlockSamples;
  source_options.pace = options.pace;
  if (options.raw) {
    // The raw stream from elsewhere, e.g. the Open Ephys GUI's own recording of a session that
    // twinloop ran through the Open Ephys ZMQ source: its sample numbers are the session's clock.
    bin = *options.raw;
    if (!std::filesystem::exists(bin)) {
      std::fprintf(stderr, "twinloop replay: --raw %s: no such file or folder\n",
                   bin.string().c_str());
      return kExitRefused;
    }
    if (drivers::is_openephys_recording(bin)) {
      // An oebin has no site positions; detection's de-duplication needs the live ones.
      if (!options.probeinterface.empty()) {
        source_options.probeinterface = options.probeinterface;
      } else if (probe.type == protocols::ProbeType::kNP1000 ||
                 probe.type == protocols::ProbeType::kSim) {
        source_options.geometry = drivers::neuropixels1_geometry(units);
      } else {
        std::fprintf(stderr,
                     "twinloop replay: --raw %s is an Open Ephys recording, which holds no site "
                     "positions, and the protocol's probe is a %s: give its layout with "
                     "--probeinterface FILE\n",
                     bin.string().c_str(), std::string(protocols::to_string(probe.type)).c_str());
        return kExitRefused;
      }
    }
  } else if (!std::filesystem::exists(bin)) {
    std::fprintf(stderr,
                 "twinloop replay: %s: no raw recording (%s); a session records one when its "
                 "protocol says record_raw: true or it was run with --record-raw (or name the "
                 "stream with --raw PATH)\n",
                 dir.string().c_str(), bin.string().c_str());
    return kExitRefused;
  } else if (std::filesystem::exists(dir / "raw" / ("session_g0_t1." + probe.name + ".ap.bin"))) {
    std::fprintf(stderr,
                 "twinloop replay: %s was resumed after an interruption; its raw stream is in "
                 "several segments on restarted clocks, which replay does not join\n",
                 dir.string().c_str());
    return kExitRefused;
  }

  std::printf(
      "twinloop replay: %s: protocol '%s', %zu trials on record, raw stream %s\n",
      dir.string().c_str(), protocol.name.c_str(), original.size(),
      options.raw ? bin.string().c_str() : std::filesystem::relative(bin, dir).string().c_str());
  std::fflush(stdout);
  internal::RecordingSource recording(bin, source_options);
  const Detected detected = detect_raw(recording, options.quiet);
  if (!detected.ok) {
    std::fprintf(stderr, "twinloop replay: %s: %s\n", bin.string().c_str(), detected.error.c_str());
    return kExitRefused;
  }
  std::printf("stream       %s\n", detected.description.c_str());
  for (const std::string& warning : detected.warnings) {
    std::fprintf(stderr, "twinloop replay: warning: %s\n", warning.c_str());
  }
  // The response windows are in samples of the live clock: another rate or another channel count
  // would count other spikes, so such a stream is not the session's.
  if (detected.probe.neural_channels != units ||
      std::abs(detected.probe.sample_rate_hz - probe.sample_rate_hz) >
          1e-6 * probe.sample_rate_hz) {
    std::fprintf(stderr,
                 "twinloop replay: %s has %zu electrode channels at %.10g Hz; the session scored "
                 "%zu units on a %.10g Hz probe, so it is not this session's stream\n",
                 bin.string().c_str(), detected.probe.neural_channels,
                 detected.probe.sample_rate_hz, units, probe.sample_rate_hz);
    return kExitRefused;
  }

  const ClosedLoopOptions loop_options = session_loop_options(
      protocol, config.value("seed", std::uint64_t{1}), config.value("designer", std::string()));
  const std::filesystem::path out = options.out.value_or(next_free(dir, "replay"));
  std::unique_ptr<SessionRecord> replay_record;
  std::vector<RecordedTrial> replayed;
  SessionSummary replay_summary;
  std::vector<std::optional<std::size_t>> recorded_to_threshold;
  std::string stopped_early;
  std::optional<protocols::DesignerStrategy> other_strategy;
  if (options.designer) {
    other_strategy = *options.designer == "random" ? protocols::DesignerStrategy::kRandom
                                                   : protocols::DesignerStrategy::kDiscriminate;
  }
  std::vector<AlternativeRow> alternatives;
  try {
    SessionSetup setup = SessionSetup::for_protocol(protocol);
    nlohmann::json replay_config = config;
    replay_config["replay_of"] = std::filesystem::absolute(dir).string();
    setup.config_json = replay_config.dump();
    setup.add_detection_channels(units);
    replay_record = std::make_unique<SessionRecord>(SessionRecord::create(out, setup));
    ReplayRig rig(original, detected, units);
    ClosedLoop loop(protocol, units, rig, replay_record.get(), loop_options);
    internal::Progress progress(!options.quiet);
    std::vector<std::uint32_t> counts(units);
    for (std::size_t i = 0; i < original.size(); ++i) {
      const std::optional<PlannedTrial> planned = loop.plan();
      if (!planned) {
        stopped_early = "the replayed session's stop rules ended it after " + std::to_string(i) +
                        " trials; the record has " + std::to_string(original.size());
        break;
      }
      const RecordedTrial& t = original[i];
      if (other_strategy) {
        if (const auto choice = loop.alternative(*other_strategy, *planned)) {
          alternatives.push_back({planned->trial, planned->candidate, t.strategy, *choice});
        }
      }
      if (static_cast<std::int64_t>(planned->candidate) != t.candidate) {
        // The designer chose differently: the recorded response answers another question.
        loop.complete(*planned, TrialRig::Result{}, counts);
        stopped_early = "at trial " + std::to_string(i) + " the designer chose candidate " +
                        std::to_string(planned->candidate) + ", the record has " +
                        std::to_string(t.candidate) +
                        "; later trials cannot be replayed on the same footing";
        break;
      }
      const TrialRig::Result result = rig.run_trial(planned->trial, planned->stimulus, counts);
      loop.complete(*planned, result, counts);
      progress.update(static_cast<double>(i + 1) / static_cast<double>(original.size()),
                      "trial " + std::to_string(i + 1) + " of " + std::to_string(original.size()));
    }
    progress.finish("replayed " + std::to_string(loop.trials()) + " trials");
    replay_summary = loop.summary();
    for (std::size_t h = 0; h < protocol.hypotheses.size(); ++h) {
      recorded_to_threshold.push_back(loop.trials_to_reach(h, protocol.stop.posterior_threshold));
    }
    replayed = replay_record->trials();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop replay: %s\n", e.what());
    return kExitRefused;
  }

  const Comparison c = compare(original, replayed);
  std::string recorded_verdict = "(no summary.json)";
  try {
    std::ifstream in(dir / "summary.json");
    if (in) recorded_verdict = nlohmann::json::parse(in).value("verdict", std::string("?"));
  } catch (const std::exception&) {
    recorded_verdict = "(summary.json unreadable)";
  }
  const bool identical = stopped_early.empty() && c.compared == original.size() &&
                         c.design_differs + c.status_differs + c.counts_differ +
                                 c.predictions_differ + c.posteriors_differ ==
                             0;
  std::printf("raw stream   %llu samples re-read, %zu spikes re-detected, %llu gaps\n",
              static_cast<unsigned long long>(detected.samples), detected.events.size(),
              static_cast<unsigned long long>(detected.gaps));
  std::printf("trials       %zu of %zu replayed and compared\n", c.compared, original.size());
  std::printf("designs      %zu differ (candidate or validation draw)\n", c.design_differs);
  std::printf("counts       %zu trials differ (re-detected from the raw stream)\n",
              c.counts_differ);
  std::printf("predictions  %zu trials differ (max |difference| %.3g)\n", c.predictions_differ,
              c.max_prediction_diff);
  std::printf("posteriors   %zu trials differ (max |difference| %.3g)\n", c.posteriors_differ,
              c.max_posterior_diff);
  std::printf("verdict      replay: %s; on record: %s\n", replay_summary.verdict.name.c_str(),
              recorded_verdict.c_str());
  for (const std::string& d : c.first_differences) std::printf("  difference: %s\n", d.c_str());
  if (!stopped_early.empty()) std::printf("  stopped: %s\n", stopped_early.c_str());
  std::printf("%s; the replay's own record: %s\n",
              identical ? "REPRODUCED: the replay matches the record bit for bit"
                        : "DIFFERS from the record (see above)",
              out.string().c_str());

  nlohmann::json report = {{"session", std::filesystem::absolute(dir).string()},
                           {"replay_record", std::filesystem::absolute(out).string()},
                           {"identical", identical},
                           {"trials_on_record", original.size()},
                           {"trials_compared", c.compared},
                           {"design_differs", c.design_differs},
                           {"status_differs", c.status_differs},
                           {"counts_differ", c.counts_differ},
                           {"predictions_differ", c.predictions_differ},
                           {"max_prediction_difference", c.max_prediction_diff},
                           {"posteriors_differ", c.posteriors_differ},
                           {"max_posterior_difference", c.max_posterior_diff},
                           {"verdict", replay_summary.verdict.name},
                           {"verdict_on_record", recorded_verdict},
                           {"stopped_early", stopped_early},
                           {"differences", c.first_differences},
                           {"spikes_redetected", detected.events.size()}};
  if (options.designer) {
    try {
      const protocols::DesignerStrategy recorded =
          loop_options.strategy.value_or(protocol.designer.strategy);
      report["counterfactual"] = counterfactual(
          {protocol, units, original, detected, replay_summary, recorded_to_threshold, alternatives,
           loop_options, recorded, *other_strategy, options.counterfactual_runs, options.quiet});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "twinloop replay: counterfactual: %s\n", e.what());
      std::ofstream(out / "replay.json") << report.dump(2) << '\n';
      return kExitRefused;
    }
  }
  std::ofstream(out / "replay.json") << report.dump(2) << '\n';
  return identical ? kExitOk : kExitRefused;
}

}  // namespace twinloop::daemon

// `twinloop run` on the simulated rig. The acquisition thread detects spikes live; this (session)
// thread runs the closed loop: design, pre-register, deliver through the safety gate, count the
// response window, score, update. SpikeRig is the TrialRig that joins the two.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "src/progress.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/acquisition/window_counter.hpp"
#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/daemon/spike_files.hpp"
#include "twinloop/drivers/safety_gate.hpp"
#include "twinloop/hil/simulated_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

// Delivers each trial's stimulus through the safety gate at the protocol's pace and counts the
// spikes the acquisition thread publishes in the trial's response window, per detection channel.
class SpikeRig final : public TrialRig {
 public:
  SpikeRig(acquisition::AcquisitionLoop& loop, drivers::StimulusSink& sink,
           const protocols::TrialTiming& timing, double rate, internal::Progress& progress)
      : loop_(loop),
        sink_(sink),
        rate_(rate),
        windows_(loop.probe().neural_channels, 4),
        progress_(progress) {
    interval_ = samples(timing.onset_interval_ms());
    baseline_ = samples(timing.baseline_ms);
    stimulus_ = samples(timing.stimulus_ms);
    response_start_ = samples(timing.response_start_ms);
    response_end_ = samples(timing.response_end_ms);
  }

  Result run_trial(std::uint64_t trial, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result result;
    // Detection must be armed (noise estimated) before the first trial is worth running.
    while (!loop_.counters().armed && !loop_.counters().finished) drain_for(1);
    const acquisition::AcquisitionCounters now = loop_.counters();
    if (now.finished) {
      result.problem = "the recording ended before the trial could start";
      return result;
    }
    const std::int64_t lead = samples(20.0);
    std::int64_t planned = static_cast<std::int64_t>(now.samples) + baseline_ + lead;
    if (last_onset_ >= 0) planned = std::max(planned, last_onset_ + interval_);
    while (static_cast<std::int64_t>(loop_.counters().samples) < planned - lead &&
           !loop_.counters().finished) {
      drain_for(1);
    }
    const drivers::StimulusOnset onset = sink_.deliver({trial, stimulus, planned, stimulus_});
    result.delivered_at = Timestamp::now();
    if (!onset.delivered) {
      result.refused = true;
      result.problem = sink_.last_error();
      return result;
    }
    last_onset_ = onset.onset_sample;
    result.onset_sample = onset.onset_sample;
    result.window_start = onset.onset_sample + response_start_;
    result.window_end = onset.onset_sample + response_end_;
    const auto window = windows_.open(result.window_start, result.window_end);
    if (!window) {
      result.problem = "no free response window";
      return result;
    }
    const std::uint64_t gaps_before = gaps_;
    while (!windows_.complete(*window, loop_.counters().final_before_sample)) {
      if (loop_.counters().finished) {
        drain_for(0);
        if (windows_.complete(*window, loop_.counters().final_before_sample)) break;
        windows_.close(*window);
        result.problem = "the recording ended inside the response window";
        return result;
      }
      drain_for(1);
    }
    const auto got = windows_.counts(*window);
    std::copy(got.begin(), got.end(), counts.begin());
    windows_.close(*window);
    result.delivered = true;
    if (gaps_ != gaps_before) {
      result.flagged = true;
      result.problem = "samples were lost during the trial";
    }
    return result;
  }

  // Moves published events into the windows and the session's event list.
  void drain_for(int milliseconds) {
    std::size_t n = 0;
    while ((n = loop_.drain_events(batch_)) > 0) {
      const std::span<const acquisition::SpikeEvent> got(batch_.data(), n);
      windows_.add_events(got);
      events_.insert(events_.end(), got.begin(), got.end());
    }
    while ((n = loop_.drain_gaps(gap_batch_)) > 0) gaps_ += n;
    if (status_) progress_.update(-1.0, status_());
    if (milliseconds > 0) std::this_thread::sleep_for(std::chrono::milliseconds(milliseconds));
  }

  std::function<std::string()> status_;
  [[nodiscard]] const std::vector<acquisition::SpikeEvent>& events() const { return events_; }
  [[nodiscard]] std::uint64_t gaps() const { return gaps_; }

 private:
  [[nodiscard]] std::int64_t samples(double ms) const {
    return static_cast<std::int64_t>(std::llround(ms * 1e-3 * rate_));
  }

  acquisition::AcquisitionLoop& loop_;
  drivers::StimulusSink& sink_;
  double rate_;
  acquisition::WindowCounter windows_;
  internal::Progress& progress_;
  std::int64_t interval_ = 0, baseline_ = 0, stimulus_ = 0, response_start_ = 0, response_end_ = 0;
  std::int64_t last_onset_ = -1;
  std::uint64_t gaps_ = 0;
  std::vector<acquisition::SpikeEvent> events_;
  std::vector<acquisition::SpikeEvent> batch_ = std::vector<acquisition::SpikeEvent>(1 << 14);
  std::vector<acquisition::GapEvent> gap_batch_ = std::vector<acquisition::GapEvent>(64);
};

double percentile(std::vector<std::uint32_t> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return static_cast<double>(
      v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))]);
}

std::filesystem::path default_session_dir(const protocols::Protocol& protocol) {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::gmtime(&now));
  return std::filesystem::path("sessions") / (protocol.name + "-" + stamp);
}

// Which built-in hypothesis, if any, is true of the simulated units.
std::string configure_truth(const std::string& model, hil::SimulationConfig& sim) {
  hil::ResponseMix mix{0, 0, 0, 0, 0};
  if (model == "direction_tuning") {
    mix.direction_tuned = 1.0;
  } else if (model == "null") {
    mix.untuned = 1.0;
  } else {
    sim.mix = hil::ResponseMix{};
    return "none";
  }
  sim.mix = mix;
  return model;
}

}  // namespace

int run_session(const RunOptions& options) {
  const protocols::ProtocolLoadResult loaded = protocols::load_protocol_file(options.protocol);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop run: %s refused; nothing was started\n",
                 options.protocol.string().c_str());
    return kExitRefused;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  const protocols::ProbeSpec& probe_spec = protocol.probes.front();
  if (protocol.probes.size() > 1) {
    std::fprintf(stderr, "twinloop run: the simulated rig drives one probe; using '%s'\n",
                 probe_spec.name.c_str());
  }
  ClosedLoopOptions loop_options;
  loop_options.seed = options.seed;
  loop_options.twin.window_seconds =
      (protocol.timing.response_end_ms - protocol.timing.response_start_ms) * 1e-3;
  if (options.designer) {
    loop_options.strategy = *options.designer == "random"
                                ? protocols::DesignerStrategy::kRandom
                                : protocols::DesignerStrategy::kDiscriminate;
  }

  hil::SimulationConfig sim;
  sim.seed = options.seed;
  sim.name = probe_spec.name;
  sim.channels = static_cast<std::size_t>(probe_spec.channels);
  sim.sample_rate_hz = probe_spec.sample_rate_hz;
  sim.seconds = options.seconds;
  sim.pace = options.pace;
  sim.block_samples = 30;  // 1 ms blocks, as a live rig delivers them
  const auto direction = protocol.stimulus.dimension_index("direction");
  const auto contrast = protocol.stimulus.dimension_index("contrast");
  sim.direction_dimension = direction ? static_cast<int>(*direction) : -1;
  sim.contrast_dimension = contrast ? static_cast<int>(*contrast) : -1;
  const std::string truth_model = configure_truth(options.sim_model, sim);

  hil::SimulatedRig rig;
  try {
    rig = hil::make_simulated_rig(sim);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: simulated rig: %s\n", e.what());
    return kExitRefused;
  }
  acquisition::AcquisitionConfig acq;
  acq.block_samples = sim.block_samples;
  acq.latency_capacity = static_cast<std::size_t>(options.seconds * 1000.0) + 1000;
  acquisition::AcquisitionLoop loop(*rig.probe, acq);
  if (!loop.start()) {
    std::fprintf(stderr, "twinloop run: %s\n", loop.error().c_str());
    return kExitRefused;
  }
  const drivers::ProbeInfo& info = loop.probe();
  const double rate = info.sample_rate_hz;
  const std::size_t units = info.neural_channels;

  // Every stimulus passes the protocol's safety limits on its way to the rig, below the designer.
  std::unique_ptr<drivers::SafetyGate> gate;
  const std::filesystem::path dir = options.out.value_or(default_session_dir(protocol));
  std::unique_ptr<SessionRecord> record;
  std::unique_ptr<ClosedLoop> closed_loop;
  internal::Progress progress(!options.quiet, 5.0);
  std::unique_ptr<SpikeRig> spike_rig;
  try {
    gate = std::make_unique<drivers::SafetyGate>(*rig.stimulator, protocol.safety,
                                                 protocol.stimulus, protocol.timing, rate);
    std::filesystem::create_directories(dir.parent_path().empty() ? "." : dir.parent_path());
    SessionSetup setup;
    setup.protocol_text = protocol.source_text;
    setup.config_json =
        nlohmann::json({{"rig", options.rig},
                        {"seed", options.seed},
                        {"seconds", options.seconds},
                        {"pace", options.pace == drivers::Pace::kMax ? "max" : "realtime"},
                        {"sim_model", options.sim_model},
                        {"probe", probe_spec.name},
                        {"units", "detection channels"}})
            .dump();
    for (const auto& h : protocol.hypotheses) {
      setup.hypotheses.push_back({h.name, std::string(protocols::to_string(h.family))});
    }
    for (std::size_t c = 0; c < units; ++c) {
      setup.units.push_back({0, static_cast<std::int64_t>(c), "channel " + std::to_string(c)});
    }
    for (std::size_t c = 0; c < protocol.stimulus.candidate_count(); ++c) {
      nlohmann::json j = nlohmann::json::object();
      for (std::size_t d = 0; d < protocol.stimulus.dimension_count(); ++d) {
        j[protocol.stimulus.dimensions[d].name] = protocol.stimulus.candidate_value(c, d);
      }
      setup.candidates_json.push_back(j.dump());
    }
    record = std::make_unique<SessionRecord>(SessionRecord::create(dir, setup));
    spike_rig = std::make_unique<SpikeRig>(loop, *gate, protocol.timing, rate, progress);
    closed_loop =
        std::make_unique<ClosedLoop>(protocol, units, *spike_rig, record.get(), loop_options);
  } catch (const std::exception& e) {
    loop.stop();
    std::fprintf(stderr, "twinloop run: %s\n", e.what());
    return kExitRefused;
  }

  std::printf(
      "twinloop run: protocol '%s' (%zu candidates, %zu hypotheses), simulated rig: "
      "%zu-channel %s probe, %zu units (%s), seed %llu, up to %.0f s at %s pace\n",
      protocol.name.c_str(), protocol.stimulus.candidate_count(), protocol.hypotheses.size(), units,
      to_string(probe_spec.type).data(), rig.subject->units().size(), options.sim_model.c_str(),
      static_cast<unsigned long long>(options.seed), options.seconds,
      options.pace == drivers::Pace::kRealtime ? "real-time" : "maximum");
  std::printf("session record: %s\n", dir.string().c_str());

  const auto started = std::chrono::steady_clock::now();
  spike_rig->status_ = [&] {
    const twin::Posterior& p = closed_loop->posterior();
    char line[200];
    std::snprintf(line, sizeof line,
                  "%5.1f s | trial %zu of at most %u | leader %s p=%.3f | %zu spikes",
                  static_cast<double>(loop.counters().samples) / rate, closed_loop->trials(),
                  protocol.stop.max_trials, p.leader_name().c_str(), p.probability(p.leader()),
                  spike_rig->events().size());
    return std::string(line);
  };
  try {
    while (!loop.counters().finished && closed_loop->step()) {
    }
  } catch (const std::exception& e) {
    loop.stop();
    loop.join();
    std::fprintf(stderr, "\ntwinloop run: session stopped: %s\n", e.what());
    return kExitRefused;
  }
  loop.stop();
  loop.join();
  spike_rig->drain_for(0);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const acquisition::AcquisitionCounters counters = loop.counters();
  progress.finish("session ended");
  const SessionSummary summary = closed_loop->summary();
  const std::vector<acquisition::SpikeEvent>& events = spike_rig->events();

  // Detection against the simulated subject's ground truth, over the armed part of the session.
  const hil::GroundTruth truth = rig.subject->ground_truth();
  std::vector<acquisition::TruthUnit> truth_units;
  for (const hil::UnitTruth& u : truth.units) {
    truth_units.push_back({static_cast<std::uint32_t>(u.peak_channel), u.snr});
  }
  std::vector<acquisition::TruthSpike> truth_spikes;
  truth_spikes.reserve(truth.spikes.size());
  for (const hil::SpikeTruth& s : truth.spikes) {
    truth_spikes.push_back({s.sample, static_cast<std::int32_t>(s.unit)});
  }
  std::sort(truth_spikes.begin(), truth_spikes.end(),
            [](const auto& a, const auto& b) { return a.sample < b.sample; });
  acquisition::ScoreOptions score_options;
  score_options.tolerance_samples = std::llround(0.5e-3 * rate);
  score_options.from_sample = loop.detector().armed_from_sample();
  score_options.to_sample = counters.final_before_sample;
  const acquisition::DetectionScore score =
      acquisition::score_detection(events, truth_spikes, truth_units, info.geometry, score_options);
  const auto latencies = loop.block_latencies_ns();
  const std::vector<std::uint32_t> latency(latencies.begin(), latencies.end());
  const double seconds = static_cast<double>(counters.samples) / rate;
  const bool verdict_matches = summary.verdict.name == truth_model;

  std::printf("\n== session summary ==\n");
  std::printf("verdict      %s: %s\n", summary.verdict.name.c_str(),
              summary.verdict.reason.c_str());
  std::printf(
      "truth        simulated units are '%s' -> %s (units here are detection channels, "
      "each pooling the units near it)\n",
      truth_model.c_str(), verdict_matches ? "verdict matches" : "verdict differs");
  std::printf(
      "trials       %zu (%zu validation, %zu flagged, %zu refused, %zu aborted, %zu deadline "
      "misses); stopped: %s\n",
      summary.trials, summary.validation_trials, summary.flagged_trials, summary.refused_trials,
      summary.aborted_trials, summary.deadline_misses,
      closed_loop->stop_decision().stop() ? summary.stop_reason.c_str()
                                          : "the recording ended (--seconds)");
  for (const HypothesisSummary& h : summary.hypotheses) {
    std::printf(
        "  %-16s %-17s posterior %.3f  log BF %+8.1f vs %-14s bits/spike %+.3f  "
        "Spearman rho %.2f [%.2f, %.2f]  fits %s\n",
        h.name.c_str(), h.family.c_str(), h.posterior, h.log_bayes_factor,
        h.bayes_factor_against.c_str(), h.check.bits_per_spike, h.check.spearman,
        h.check.spearman_ci_low, h.check.spearman_ci_high,
        !h.check.enough_data ? "too few validation data" : (h.check.fits ? "yes" : "no"));
  }
  std::printf("recorded     %.1f s in %.1f s wall; gaps %llu, events dropped %llu\n", seconds, wall,
              static_cast<unsigned long long>(spike_rig->gaps()),
              static_cast<unsigned long long>(counters.events_dropped));
  std::printf(
      "detection    %zu spikes, recall %.3f, precision %.3f against ground truth (SNR >= 5, "
      "+-0.5 ms, <= 50 um)\n",
      events.size(), score.recall(), score.precision());
  std::printf(
      "latency      block arrival -> spikes published: p50 %.0f us, p99 %.0f us, max %.0f "
      "us over %zu 1-ms blocks\n",
      percentile(latency, 0.5) / 1e3, percentile(latency, 0.99) / 1e3,
      latency.empty() ? 0.0 : *std::max_element(latency.begin(), latency.end()) / 1e3,
      latency.size());

  try {
    write_detected_spikes(dir, events, info.geometry, loop.detector().noise_uv(), seconds);
    rig.subject->write_ground_truth(dir / "ground_truth");
    nlohmann::json hypotheses = nlohmann::json::array();
    nlohmann::json posterior = nlohmann::json::object();
    for (const HypothesisSummary& h : summary.hypotheses) {
      posterior[h.name] = h.posterior;
      auto number = [](double v) {
        return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
      };
      hypotheses.push_back(
          {{"name", h.name},
           {"family", h.family},
           {"posterior", h.posterior},
           {"log_bayes_factor", number(h.log_bayes_factor)},
           {"log_bayes_factor_against", h.bayes_factor_against},
           {"bits_per_spike", number(h.check.bits_per_spike)},
           {"spearman_rho", number(h.check.spearman)},
           {"spearman_ci", {number(h.check.spearman_ci_low), number(h.check.spearman_ci_high)}},
           {"fits", h.check.fits},
           {"pit_p_value", number(h.check.p_value)},
           {"coverage", number(h.check.coverage)}});
    }
    const nlohmann::json out = {
        {"verdict", summary.verdict.name},
        {"verdict_reason", summary.verdict.reason},
        {"posterior", posterior},
        {"trials", summary.trials},
        {"validation_trials", summary.validation_trials},
        {"flagged_trials", summary.flagged_trials},
        {"refused_trials", summary.refused_trials},
        {"aborted_trials", summary.aborted_trials},
        {"deadline_misses", summary.deadline_misses},
        {"hypotheses", hypotheses},
        {"protocol", protocol.name},
        {"rig", options.rig},
        {"seed", options.seed},
        {"seconds", seconds},
        {"gaps", spike_rig->gaps()},
        {"events_dropped", counters.events_dropped},
        {"spikes_detected", events.size()},
        {"latency_us",
         {{"p50", percentile(latency, 0.5) / 1e3}, {"p99", percentile(latency, 0.99) / 1e3}}},
        {"truth",
         {{"model", truth_model},
          {"verdict_matches", verdict_matches},
          {"units", truth_units.size()},
          {"detection_recall", score.recall()},
          {"detection_precision", score.precision()}}}};
    std::ofstream(dir / "summary.json") << out.dump(2) << '\n';
    std::printf(
        "session files in %s (session.sqlite, summary.json, spikes in Phy layout, "
        "ground_truth/); check it with: twinloop verify %s\n",
        dir.string().c_str(), dir.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: writing the session files failed: %s\n", e.what());
    return kExitRefused;
  }
  return counters.failed ? kExitRefused : kExitOk;
}

}  // namespace twinloop::daemon

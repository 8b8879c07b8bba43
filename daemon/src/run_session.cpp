// `twinloop run` and `twinloop resume` on the simulated rig, in process (--rig sim) or served over
// ZeroMQ by twinloop-hil or a networked real rig (--rig net), or a rig whose probe is streamed by
// the Open Ephys GUI's ZMQ Interface (--rig openephys). The acquisition thread detects spikes
// live; the session thread runs a Boost.Asio event loop that, trial after trial, designs (with a
// deadline), pre-registers every prediction durably, delivers through the safety gate, counts
// the response window, scores and updates, while a 1 ms timer keeps draining what acquisition
// publishes and SIGINT/SIGTERM end the session after the trial in flight. SpikeRig is the
// TrialRig that joins the closed loop to acquisition.
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
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
#include "src/recorded_session.hpp"
#include "src/session_host.hpp"
#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/acquisition/detection_score.hpp"
#include "twinloop/acquisition/window_counter.hpp"
#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/control.hpp"
#include "twinloop/daemon/keys.hpp"
#include "twinloop/daemon/publisher.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/daemon/spike_files.hpp"
#include "twinloop/drivers/network_probe_source.hpp"
#include "twinloop/drivers/network_stimulus_sink.hpp"
#include "twinloop/drivers/openephys_zmq_source.hpp"
#include "twinloop/drivers/raw_recorder.hpp"
#include "twinloop/drivers/safety_gate.hpp"
#include "twinloop/hil/simulated_rig.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

// Delivers each trial's stimulus through the safety gate at the protocol's pace and counts the
// spikes the acquisition thread publishes in the trial's response window, per detection channel.
// A trial is a small state machine (begin, then advance on every tick until it is over), so the
// event loop never blocks while a trial waits for its onset or its response window.
class SpikeRig final : public TrialRig {
 public:
  enum class Stage { kIdle, kArming, kWaitingOnset, kCounting };

  SpikeRig(acquisition::AcquisitionLoop& loop, drivers::StimulusSink& sink,
           const protocols::TrialTiming& timing, double rate)
      : loop_(loop), sink_(sink), rate_(rate), windows_(loop.probe().neural_channels, 4) {
    interval_ = samples(timing.onset_interval_ms());
    baseline_ = samples(timing.baseline_ms);
    stimulus_ = samples(timing.stimulus_ms);
    response_start_ = samples(timing.response_start_ms);
    response_end_ = samples(timing.response_end_ms);
  }

  // A networked rig: its transports' faults go on record, a late onset flags its trial, and a
  // command the device never acknowledged aborts the trial instead of counting as refused.
  void attach_network(drivers::NetworkProbeSource* probe, drivers::NetworkStimulusSink* sink,
                      SessionRecord* record) {
    net_probe_ = probe;
    net_sink_ = sink;
    record_ = record;
  }

  // A stream that can wait (the simulated probe at max pace): the rig lets it run only as far as
  // the trial in flight needs, to the moment the command goes out while it waits for the onset
  // and to the response window's last published event while it counts, and no further between
  // trials. So design, refits, the durable pre-registration and a session thread starved of CPU
  // spend none of the subject's seconds, and every onset is the one planned.
  void limit_stream(std::function<void(std::int64_t)> set_limit) {
    set_limit_ = std::move(set_limit);
    granted_ = 0;
    set_limit_(granted_);
  }

  void begin(std::uint64_t trial, const protocols::Stimulus& stimulus) {
    trial_ = trial;
    stimulus_values_ = stimulus;
    result_ = Result{};
    stage_ = Stage::kArming;
  }

  // Moves the trial on as far as acquisition allows; true once it is over (result() says how).
  bool advance(std::span<std::uint32_t> counts) {
    // The counters first: the acquisition publishes a block's events before its clock, so every
    // event up to now.final_before_sample is in the queue by the time drain() empties it. In the
    // other order a block published in between would close a window without its events.
    const acquisition::AcquisitionCounters now = loop_.counters();
    drain();
    switch (stage_) {
      case Stage::kIdle:
        return true;
      case Stage::kArming: {
        // Detection must be armed (noise estimated) before a trial is worth running.
        if (now.finished) return end("the recording ended before the trial could start");
        if (!now.armed) {
          // The detector estimates the noise first; how many samples that takes is its business.
          // A limited stream gets 100 ms more each time it has caught up, counted from the last
          // grant and not from wherever the stream was when this tick ran, and the onset is
          // planned from the grant in which detection armed: so at max pace the first onset,
          // and with it the whole session, is the same whatever the threads' timing.
          if (!set_limit_) return false;
          if (now.next_sample >= granted_) grant(granted_ + samples(100.0));
          return false;
        }
        planned_ = onset_for(now.next_sample);
        stage_ = Stage::kWaitingOnset;
        [[fallthrough]];
      }
      case Stage::kWaitingOnset: {
        if (now.finished) return end("the recording ended before the stimulus onset");
        grant(planned_ - lead());
        if (now.next_sample < planned_ - lead()) return false;
        const std::uint64_t commands_before =
            net_sink_ != nullptr ? net_sink_->fault_counters().commands : 0;
        const drivers::StimulusOnset onset =
            sink_.deliver({trial_, stimulus_values_, planned_, stimulus_});
        result_.delivered_at = Timestamp::now();
        const bool reached_device =
            net_sink_ != nullptr && net_sink_->fault_counters().commands != commands_before;
        late_ = false;
        if (!onset.delivered) {
          const auto outcome = reached_device ? net_sink_->last_result().outcome
                                              : drivers::DeliveryOutcome::kRefused;
          // Refused by the safety gate or the device: refused. Sent but never acknowledged (or
          // no connection): whether the stimulus ran is unknown, so the trial is aborted.
          result_.refused = outcome == drivers::DeliveryOutcome::kRefused;
          return end(sink_.last_error());
        }
        if (reached_device && net_sink_->last_result().outcome == drivers::DeliveryOutcome::kLate) {
          late_ = true;
          late_samples_ = onset.onset_sample - planned_;
        }
        last_onset_ = onset.onset_sample;
        result_.onset_sample = onset.onset_sample;
        result_.window_start = onset.onset_sample + response_start_;
        result_.window_end = onset.onset_sample + response_end_;
        window_ = windows_.open(result_.window_start, result_.window_end);
        if (!window_) return end("no free response window");
        gaps_before_ = gaps_;
        stage_ = Stage::kCounting;
        // The acquisition publishes a sample's events this many samples after reading it.
        grant(result_.window_end +
              std::max<std::int64_t>(now.next_sample - now.final_before_sample, 0));
        return false;  // the caller sees the delivery before the window can complete
      }
      case Stage::kCounting: {
        if (!windows_.complete(*window_, now.final_before_sample)) {
          // Should the detector's delay have grown, the stream is not left stalled short of it.
          if (now.next_sample >= granted_) grant(now.next_sample + samples(10.0));
          if (!now.finished) return false;
          const std::int64_t final_before = loop_.counters().final_before_sample;
          drain();
          if (!windows_.complete(*window_, final_before)) {
            windows_.close(*window_);
            return end("the recording ended inside the response window");
          }
        }
        const auto got = windows_.counts(*window_);
        std::copy(got.begin(), got.end(), counts.begin());
        windows_.close(*window_);
        result_.delivered = true;
        if (gaps_ != gaps_before_) {
          result_.flagged = true;
          result_.problem = "samples were lost during the trial";
        } else if (late_) {
          result_.flagged = true;
          result_.problem = "late stimulus onset: " + std::to_string(late_samples_) +
                            " samples after the requested one";
        }
        stage_ = Stage::kIdle;
        return true;
      }
    }
    return true;
  }

  Result run_trial(std::uint64_t trial, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    begin(trial, stimulus);
    while (!advance(counts)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return result_;
  }

  // Moves published events into the windows and the session's event list.
  void drain() {
    std::size_t n = 0;
    while ((n = loop_.drain_events(batch_)) > 0) {
      const std::span<const acquisition::SpikeEvent> got(batch_.data(), n);
      windows_.add_events(got);
      events_.insert(events_.end(), got.begin(), got.end());
      if (publisher_ != nullptr) {
        const std::int64_t end = std::max(published_until_, got.back().sample + 1);
        publisher_->publish_spikes(published_until_, end, got);
        published_until_ = end;
      }
    }
    while ((n = loop_.drain_gaps(gap_batch_)) > 0) gaps_ += n;
    if (record_ != nullptr) {
      if (net_probe_ != nullptr) record_faults(net_probe_->drain_fault_events(faults_));
      if (net_sink_ != nullptr) record_faults(net_sink_->drain_fault_events(faults_));
    }
  }

  void record_faults(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const drivers::FaultEvent& f = faults_[i];
      ++faults_recorded_;
      const bool stimulus_fault = f.kind >= drivers::FaultKind::kLateOnset;
      const std::optional<std::uint64_t> trial =
          stimulus_fault               ? std::optional<std::uint64_t>(f.trial)
          : stage_ == Stage::kCounting ? std::optional<std::uint64_t>(trial_)
                                       : std::nullopt;
      record_->record_event(event_kind::kFault, trial,
                            nlohmann::json({{"kind", drivers::describe(f.kind)},
                                            {"first_sample", f.first_sample},
                                            {"end_sample", f.end_sample},
                                            {"value", f.value},
                                            {"sequence", f.sequence}})
                                .dump());
    }
  }
  [[nodiscard]] std::uint64_t faults_recorded() const noexcept { return faults_recorded_; }

  // Samples from the stream's clock now to the end of the next trial's response window, were it
  // begun now (once detection is armed).
  [[nodiscard]] std::int64_t samples_to_next_window_end() const {
    const std::int64_t next = loop_.counters().next_sample;
    return onset_for(next) + response_end_ - next;
  }

  void attach_publisher(Publisher* publisher) noexcept { publisher_ = publisher; }
  [[nodiscard]] Stage stage() const noexcept { return stage_; }
  [[nodiscard]] const Result& result() const noexcept { return result_; }
  [[nodiscard]] const std::vector<acquisition::SpikeEvent>& events() const { return events_; }
  [[nodiscard]] std::uint64_t gaps() const { return gaps_; }

 private:
  [[nodiscard]] std::int64_t samples(double ms) const {
    return static_cast<std::int64_t>(std::llround(ms * 1e-3 * rate_));
  }
  // The stimulus command goes out this long before its onset, so the rig can schedule it.
  [[nodiscard]] std::int64_t lead() const { return samples(20.0); }
  // The onset of a trial armed with the stream's clock at `next`: a baseline after where its plan
  // starts, one interval after the last onset at the earliest. A limited stream's plan starts at
  // its grant, where it runs to without waiting: the same whatever the threads' timing, and
  // never behind the stream, so the command goes out before the stream passes its send time.
  [[nodiscard]] std::int64_t onset_for(std::int64_t next) const {
    const std::int64_t start = set_limit_ ? std::max(next, granted_) : next;
    const std::int64_t onset = start + baseline_ + lead();
    return last_onset_ >= 0 ? std::max(onset, last_onset_ + interval_) : onset;
  }
  void grant(std::int64_t end_sample) {
    if (!set_limit_ || end_sample <= granted_) return;
    granted_ = end_sample;
    set_limit_(granted_);
  }
  bool end(const std::string& problem) {
    result_.problem = problem;
    stage_ = Stage::kIdle;
    return true;
  }

  acquisition::AcquisitionLoop& loop_;
  drivers::StimulusSink& sink_;
  double rate_;
  acquisition::WindowCounter windows_;
  std::int64_t interval_ = 0, baseline_ = 0, stimulus_ = 0, response_start_ = 0, response_end_ = 0;
  std::int64_t last_onset_ = -1, planned_ = 0;
  std::uint64_t trial_ = 0;
  protocols::Stimulus stimulus_values_;
  Stage stage_ = Stage::kIdle;
  Result result_;
  std::optional<std::size_t> window_;
  std::uint64_t gaps_ = 0, gaps_before_ = 0;
  std::vector<acquisition::SpikeEvent> events_;
  std::vector<acquisition::SpikeEvent> batch_ = std::vector<acquisition::SpikeEvent>(1 << 14);
  std::vector<acquisition::GapEvent> gap_batch_ = std::vector<acquisition::GapEvent>(64);
  drivers::NetworkProbeSource* net_probe_ = nullptr;
  drivers::NetworkStimulusSink* net_sink_ = nullptr;
  SessionRecord* record_ = nullptr;
  Publisher* publisher_ = nullptr;
  std::int64_t published_until_ = 0;
  std::vector<drivers::FaultEvent> faults_ = std::vector<drivers::FaultEvent>(256);
  std::uint64_t faults_recorded_ = 0;
  bool late_ = false;
  std::int64_t late_samples_ = 0;
  std::function<void(std::int64_t)> set_limit_;
  std::int64_t granted_ = 0;
};

// Test failpoints: TWINLOOP_FAILPOINT=<point>:<trial> makes the process kill itself with SIGKILL
// at that point of that trial, exactly as a crash or `kill -9` would, so the tests can show
// that a session resumes from any of them. Points: after_preregister, after_delivery,
// after_score.
class Failpoint {
 public:
  Failpoint() {
    const char* spec = std::getenv("TWINLOOP_FAILPOINT");
    if (spec == nullptr) return;
    const std::string text(spec);
    const std::size_t colon = text.find(':');
    if (colon == std::string::npos) return;
    point_ = text.substr(0, colon);
    trial_ = std::strtoull(text.c_str() + colon + 1, nullptr, 10);
  }
  void reached(std::string_view point, std::uint64_t trial) const {
    if (point == point_ && trial == trial_) std::raise(SIGKILL);
  }

 private:
  std::string point_;
  std::uint64_t trial_ = 0;
};

// The session thread's event loop: one trial in flight at a time, acquisition drained every
// millisecond, progress redrawn, signals turned into an orderly stop.
class SessionEngine {
 public:
  SessionEngine(ClosedLoop& closed_loop, SpikeRig& rig, std::size_t units,
                internal::Progress& progress, std::function<std::string()> status)
      : closed_loop_(closed_loop),
        rig_(rig),
        progress_(progress),
        status_(std::move(status)),
        counts_(units, 0) {}

  // Runs until a stop rule holds, the recording ends or a signal stops it. Exceptions from the
  // closed loop (e.g. the record cannot be written) propagate.
  void run() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signal) {
      if (!ec) on_signal(signal);
    });
    boost::asio::post(io_, [this] { next_trial(); });
    if (every_second_) schedule_second();
    io_.run();
  }

  [[nodiscard]] bool interrupted() const noexcept { return signal_ != 0; }
  [[nodiscard]] boost::asio::io_context& io() noexcept { return io_; }
  /// Between trials no new trial starts while paused (acquisition keeps being drained).
  bool paused_ = false;
  /// Optional: every trial stage and posterior are published here.
  Publisher* publisher_ = nullptr;
  const protocols::StimulusSpace* space_ = nullptr;
  /// Optional: called about once a second (health messages).
  std::function<void()> every_second_;
  /// Optional: cancels what else waits on io() (e.g. a SIGHUP handler) when the session ends.
  std::function<void()> on_finish_;
  /// No new trial starts once this returns true (the session's --seconds on the probe clock).
  std::function<bool()> time_up_;

 private:
  void next_trial() {
    if (done_) return;
    if (time_up_ && time_up_()) return finish();
    if (paused_) {
      // Keep acquisition drained while no trial runs; look again shortly.
      rig_.drain();
      tick_.expires_after(std::chrono::milliseconds(10));
      tick_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) next_trial();
      });
      return;
    }
    if (!closed_loop_.refit_ready()) {
      // The twins are being refitted on their own thread and the next trial is designed on the
      // result: wait for it here, draining acquisition, rather than inside plan().
      rig_.drain();
      tick_.expires_after(std::chrono::milliseconds(1));
      tick_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) next_trial();
      });
      return;
    }
    in_flight_ = closed_loop_.plan();
    if (!in_flight_) return finish();
    publish(TrialStage::kPreregistered, {});
    failpoint_.reached("after_preregister", in_flight_->trial);
    rig_.begin(in_flight_->trial, in_flight_->stimulus);
    schedule_tick();
  }

  void schedule_tick() {
    tick_.expires_after(std::chrono::milliseconds(1));
    tick_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) on_tick();
    });
  }

  void on_tick() {
    const SpikeRig::Stage before = rig_.stage();
    const bool over = rig_.advance(counts_);
    if (before != SpikeRig::Stage::kCounting && rig_.stage() == SpikeRig::Stage::kCounting) {
      // The onset is on record the moment the rig confirms it, not only once counted.
      closed_loop_.delivered(*in_flight_, rig_.result());
      publish(TrialStage::kDelivered, {});
      failpoint_.reached("after_delivery", in_flight_->trial);
    }
    if (status_) progress_.update(-1.0, status_());
    if (!over) return schedule_tick();
    closed_loop_.complete(*in_flight_, rig_.result(), counts_);
    const TrialRig::Result& result = rig_.result();
    publish(!result.delivered ? TrialStage::kAborted
            : result.flagged  ? TrialStage::kFlagged
                              : TrialStage::kScored,
            counts_);
    if (publisher_ != nullptr && result.delivered && !result.flagged) {
      const twin::Posterior& p = closed_loop_.posterior();
      publisher_->publish_posterior(in_flight_->trial, p.names(), p.probabilities());
    }
    failpoint_.reached("after_score", in_flight_->trial);
    in_flight_.reset();
    if (rig_.result().problem.find("recording ended") != std::string::npos) return finish();
    boost::asio::post(io_, [this] { next_trial(); });
  }

  void on_signal(int signal) {
    signal_ = signal;
    closed_loop_.request_stop();
    std::fprintf(stderr, "\ntwinloop: %s: stopping after the trial in flight\n",
                 signal == SIGINT ? "SIGINT" : "SIGTERM");
    signals_.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      // A second signal does not wait for the response window: the trial is abandoned on record.
      if (in_flight_) {
        TrialRig::Result abandoned;
        abandoned.problem = "abandoned by a second stop signal";
        closed_loop_.complete(*in_flight_, abandoned, counts_);
        in_flight_.reset();
      }
      finish();
    });
  }

  void finish() {
    done_ = true;
    tick_.cancel();
    second_.cancel();
    signals_.cancel();
    if (on_finish_) on_finish_();  // io_context::run() returns once nothing else waits
  }

  void schedule_second() {
    second_.expires_after(std::chrono::seconds(1));
    second_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || done_) return;
      every_second_();
      schedule_second();
    });
  }

  void publish(TrialStage stage, std::span<const std::uint32_t> counts) {
    if (publisher_ == nullptr || !in_flight_) return;
    TrialEvent e;
    e.trial = in_flight_->trial;
    e.stage = stage;
    e.candidate = in_flight_->candidate;
    e.validation = in_flight_->validation;
    if (space_ != nullptr) {
      for (std::size_t d = 0; d < space_->dimension_count(); ++d) {
        e.stimulus.emplace_back(space_->dimensions[d].name, in_flight_->stimulus.values[d]);
      }
    }
    const TrialRig::Result& r = rig_.result();
    if (stage != TrialStage::kPreregistered) {
      e.onset_sample = r.onset_sample;
      e.window_start = r.window_start;
      e.window_end = r.window_end;
      e.note = r.problem;
    }
    e.units = static_cast<std::uint32_t>(counts.size());
    for (std::size_t u = 0; u < counts.size(); ++u) {
      e.total_count += counts[u];
      if (counts[u] > e.max_count || e.max_count_unit < 0) {
        e.max_count = counts[u];
        e.max_count_unit = static_cast<std::int64_t>(u);
      }
    }
    publisher_->publish_trial_event(e);
  }

  ClosedLoop& closed_loop_;
  SpikeRig& rig_;
  internal::Progress& progress_;
  std::function<std::string()> status_;
  std::vector<std::uint32_t> counts_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_{io_, SIGINT, SIGTERM};
  boost::asio::steady_timer tick_{io_};
  boost::asio::steady_timer second_{io_};
  std::optional<PlannedTrial> in_flight_;
  Failpoint failpoint_;
  int signal_ = 0;
  bool done_ = false;
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

// Units this close along the probe (x, z) are seen by the same sites, so one detection channel
// can carry spikes of both: the radius within which the detection score matches a spike to a
// unit's peak site.
constexpr double kPoolingRadiusUm = acquisition::ScoreOptions{}.radius_um;

std::size_t count_units_near_another(const std::vector<hil::UnitTruth>& units, double radius_um) {
  std::size_t near = 0;
  for (std::size_t i = 0; i < units.size(); ++i) {
    for (std::size_t j = 0; j < units.size(); ++j) {
      if (i != j &&
          std::hypot(units[i].x_um - units[j].x_um, units[i].z_um - units[j].z_um) <= radius_um) {
        ++near;
        break;
      }
    }
  }
  return near;
}

// Which built-in hypothesis, if any, is true of the simulated units.
std::string configure_truth(const std::string& model, hil::SimulationConfig& sim) {
  hil::ResponseMix mix{0, 0, 0, 0, 0};
  // The simulated units read only direction, contrast and spatial frequency. In a space with none
  // of them (an optogenetic protocol, say) every candidate drives them alike, so whatever their
  // tuning, the stimulus-independent model is the true one there.
  const bool sees_stimulus = sim.direction_dimension >= 0 || sim.contrast_dimension >= 0 ||
                             sim.spatial_frequency_dimension >= 0;
  if (model == "direction_tuning") {
    mix.direction_tuned = 1.0;
  } else if (model == "null") {
    mix.untuned = 1.0;
  } else {
    sim.mix = hil::ResponseMix{};
    return "none";
  }
  sim.mix = mix;
  return sees_stimulus ? model : "null";
}

// The running session as the control socket sees it. Called on the session thread between
// trials (serve_pending), so it touches the loop and the engine without locks. Every command
// that changes the session is written to the record as an event with the client's name.
class SessionControl final : public ControlHandler {
 public:
  SessionControl(ClosedLoop& loop, SessionEngine& engine, SessionRecord& record, std::string name)
      : loop_(loop), engine_(engine), record_(record), name_(std::move(name)) {}

  ControlReply status(const ControlClient&) override {
    nlohmann::json posterior = nlohmann::json::object();
    const twin::Posterior& p = loop_.posterior();
    for (std::size_t k = 0; k < p.names().size(); ++k) posterior[p.names()[k]] = p.probability(k);
    const protocols::StopRules& rules = loop_.stop_rules();
    return ControlReply::success(
        {{"session", name_},
         {"state", engine_.paused_ ? "paused" : "running"},
         {"trials", loop_.trials()},
         {"leader", p.leader_name()},
         {"posterior", posterior},
         {"stop_rules",
          {{"posterior_threshold", rules.posterior_threshold},
           {"max_trials", rules.max_trials},
           {"max_minutes", rules.max_minutes ? nlohmann::json(*rules.max_minutes) : nullptr}}}});
  }
  ControlReply pause(const ControlClient& client) override {
    engine_.paused_ = true;
    note("operator_pause", client, {});
    return ControlReply::success({{"state", "paused"}});
  }
  ControlReply resume(const ControlClient& client) override {
    engine_.paused_ = false;
    note("operator_resume", client, {});
    return ControlReply::success({{"state", "running"}});
  }
  ControlReply abort(const ControlClient& client, const std::string& reason) override {
    loop_.request_stop();
    engine_.paused_ = false;  // a paused session must reach its summary
    note("operator_abort", client, {{"reason", reason}});
    return ControlReply::success({{"state", "stopping after the trial in flight"}});
  }
  ControlReply set_stop_rule(const ControlClient& client, const StopRuleChange& change) override {
    note("operator_stop_rule", client, {});
    loop_.change_stop_rules(change.posterior_threshold, change.max_trials, change.max_minutes);
    return status(client);
  }
  ControlReply submit(const ControlClient&, const protocols::Protocol&) override {
    return ControlReply::failure("busy: session " + name_ + " running");
  }

 private:
  void note(std::string_view kind, const ControlClient& client, nlohmann::json detail) {
    detail["client"] = client.name;
    detail["client_key"] = client.public_key;
    record_.record_event(kind, std::nullopt, detail.dump());
  }

  ClosedLoop& loop_;
  SessionEngine& engine_;
  SessionRecord& record_;
  std::string name_;
};

}  // namespace

void internal::print_hypothesis_rows(const SessionSummary& summary) {
  for (const HypothesisSummary& h : summary.hypotheses) {
    std::printf(
        "  %-16s %-17s posterior %.3f  log BF %+8.1f vs %-14s bits/spike %+.3f vs %-14s "
        "Spearman rho %.2f [%.2f, %.2f]  fits %s\n",
        h.name.c_str(), h.family.c_str(), h.posterior, h.log_bayes_factor,
        h.bayes_factor_against.c_str(), h.bits_per_spike, h.bits_per_spike_against.c_str(),
        h.check.spearman, h.check.spearman_ci_low, h.check.spearman_ci_high,
        !h.check.enough_data ? "too few validation data" : (h.check.fits ? "yes" : "no"));
  }
  // Where the leader's log Bayes factor comes from: a few well-recorded units, many weak ones,
  // or the channels that saw nothing.
  const auto leader = std::max_element(summary.hypotheses.begin(), summary.hypotheses.end(),
                                       [](const HypothesisSummary& a, const HypothesisSummary& b) {
                                         return a.posterior < b.posterior;
                                       });
  if (leader == summary.hypotheses.end() || leader->bayes_factor_against.empty()) return;
  const twin::UnitEvidence& e = leader->by_unit;
  std::string strongest;
  for (const twin::UnitShare& share : e.strongest) {
    char part[64];
    std::snprintf(part, sizeof part, "%s%zu (%+.1f)", strongest.empty() ? "" : ", ", share.unit,
                  share.log_bayes_factor);
    strongest += part;
  }
  std::printf(
      "by unit      log BF of '%s' over '%s': %+.1f from %zu units for it (strongest %s), %+.1f "
      "from %zu against, %+.1f from %zu silent units\n",
      leader->name.c_str(), leader->bayes_factor_against.c_str(), e.log_bayes_factor_for,
      e.units_for, strongest.empty() ? "none" : strongest.c_str(), e.log_bayes_factor_against,
      e.units_against, e.silent_log_bayes_factor, e.silent_units);
}

nlohmann::json internal::protocol_defaults_json() {
  const protocols::DesignerDefaults defaults;
  return {{"criticism_trials", defaults.criticism_trials},
          {"criticism_power", defaults.criticism_power ? nlohmann::json(*defaults.criticism_power)
                                                       : nlohmann::json(nullptr)}};
}

nlohmann::json internal::summary_json(const SessionSummary& summary,
                                      const std::string& stop_reason) {
  const auto number = [](double v) {
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  };
  const auto by_unit_json = [&](const HypothesisSummary& h) {
    if (h.bayes_factor_against.empty()) return nlohmann::json();
    nlohmann::json strongest = nlohmann::json::array();
    for (const twin::UnitShare& share : h.by_unit.strongest) {
      strongest.push_back({{"unit", share.unit}, {"log_bf", number(share.log_bayes_factor)}});
    }
    return nlohmann::json{{"units_for", h.by_unit.units_for},
                          {"log_bf_for", number(h.by_unit.log_bayes_factor_for)},
                          {"units_against", h.by_unit.units_against},
                          {"log_bf_against", number(h.by_unit.log_bayes_factor_against)},
                          {"strongest", strongest},
                          {"silent_units", h.by_unit.silent_units},
                          {"silent_log_bf", number(h.by_unit.silent_log_bayes_factor)}};
  };
  nlohmann::json hypotheses = nlohmann::json::array();
  nlohmann::json posterior = nlohmann::json::object();
  for (std::size_t k = 0; k < summary.hypotheses.size(); ++k) {
    const HypothesisSummary& h = summary.hypotheses[k];
    posterior[h.name] = h.posterior;
    // The check's encompassing statistic against each rival.
    nlohmann::json rival_z = nlohmann::json::object();
    nlohmann::json rival_power = nlohmann::json::object();
    nlohmann::json rival_lean = nlohmann::json::object();
    for (std::size_t r = 0; r < h.check.encompassing_z.size(); ++r) {
      const std::size_t j = twin::rival_hypothesis(k, r);
      if (j < summary.hypotheses.size()) {
        rival_z[summary.hypotheses[j].name] = number(h.check.encompassing_z[r]);
        if (r < h.check.encompassing_power.size()) {
          rival_power[summary.hypotheses[j].name] = number(h.check.encompassing_power[r]);
        }
        if (r < h.check.encompassing_lean.size()) {
          rival_lean[summary.hypotheses[j].name] = number(h.check.encompassing_lean[r]);
        }
      }
    }
    hypotheses.push_back(
        {{"name", h.name},
         {"family", h.family},
         {"posterior", h.posterior},
         {"log_bayes_factor", number(h.log_bayes_factor)},
         {"log_bayes_factor_against", h.bayes_factor_against},
         {"log_bayes_factor_by_unit", by_unit_json(h)},
         {"bits_per_spike", number(h.bits_per_spike)},
         {"bits_per_spike_against", h.bits_per_spike_against},
         {"bits_per_spike_vs_constant_rate", number(h.check.bits_per_spike_vs_constant_rate)},
         {"spearman_rho", number(h.check.spearman)},
         {"spearman_ci", {number(h.check.spearman_ci_low), number(h.check.spearman_ci_high)}},
         {"fits", h.check.fits},
         {"pit_p_value", number(h.check.p_value)},
         {"encompassing",
          {{"z", rival_z},
           {"power_halfway", rival_power},
           {"lean", rival_lean},
           {"p_value", number(h.check.encompassing_p_value)},
           {"trials", h.check.encompassing_trials}}},
         {"coverage", number(h.check.coverage)}});
  }
  return {{"verdict", summary.verdict.name},
          {"verdict_reason", summary.verdict.reason},
          {"stop_reason", stop_reason},
          {"posterior", posterior},
          {"trials", summary.trials},
          {"validation_trials", summary.validation_trials},
          {"criticism_trials", summary.criticism_trials},
          {"flagged_trials", summary.flagged_trials},
          {"refused_trials", summary.refused_trials},
          {"aborted_trials", summary.aborted_trials},
          {"deadline_misses", summary.deadline_misses},
          {"hypotheses", hypotheses}};
}

int internal::execute_session(const protocols::Protocol& protocol, const RunOptions& options,
                              const std::filesystem::path& dir, bool resume, const char* command,
                              const SessionServices& services) {
  const protocols::ProbeSpec& probe_spec = protocol.probes.front();
  if (protocol.probes.size() > 1) {
    std::fprintf(stderr, "twinloop %s: the simulated rig drives one probe; using '%s'\n", command,
                 probe_spec.name.c_str());
  }
  ClosedLoopOptions loop_options =
      session_loop_options(protocol, options.seed, options.designer.value_or(""));
  loop_options.on_refit_thread_start = services.on_refit_thread;

  hil::SimulationConfig sim;
  sim.seed = options.seed;
  sim.name = probe_spec.name;
  sim.channels = static_cast<std::size_t>(probe_spec.channels);
  sim.sample_rate_hz = probe_spec.sample_rate_hz;
  sim.seconds = options.seconds;
  sim.pace = options.pace;
  sim.block_samples = 30;  // 1 ms blocks, as a live rig delivers them
  sim.unit_count = options.sim_units;
  const auto direction = protocol.stimulus.dimension_index("direction");
  const auto contrast = protocol.stimulus.dimension_index("contrast");
  sim.direction_dimension = direction ? static_cast<int>(*direction) : -1;
  sim.contrast_dimension = contrast ? static_cast<int>(*contrast) : -1;
  const auto spatial_frequency = protocol.stimulus.dimension_index("spatial_frequency");
  sim.spatial_frequency_dimension = spatial_frequency ? static_cast<int>(*spatial_frequency) : -1;
  const std::string truth_model = configure_truth(options.sim_model, sim);

  // The raw stream, for replay: refused up front when the disk cannot hold the longest session.
  const bool record_raw = options.record_raw || protocol.record_raw;
  if (record_raw) {
    const std::uint64_t needed = drivers::RawRecorder::bytes_needed(
        static_cast<std::size_t>(probe_spec.channels), probe_spec.sample_rate_hz, options.seconds);
    std::error_code ec;
    // The session folder (and its parents) may not exist yet: ask the nearest that does.
    std::filesystem::path where = std::filesystem::absolute(dir, ec);
    while (!where.empty() && !std::filesystem::exists(where, ec) && where != where.root_path()) {
      where = where.parent_path();
    }
    const std::filesystem::space_info space = std::filesystem::space(where, ec);
    if (ec || space.available < needed + needed / 10) {
      std::fprintf(
          stderr,
          "twinloop %s: recording the raw stream of %.0f s needs %.2f GB (+10%%) in %s, "
          "but %s\n",
          command, options.seconds, static_cast<double>(needed) / 1e9, where.string().c_str(),
          ec ? ("its free space could not be read: " + ec.message()).c_str()
             : (std::to_string(static_cast<double>(space.available) / 1e9) + " GB are free")
                   .c_str());
      return kExitRefused;
    }
  }

  const bool networked = options.rig == "net";
  const bool openephys = options.rig == "openephys";
  const bool remote = networked || openephys;  // no simulated subject (and no truth) here
  hil::SimulatedRig rig;
  std::unique_ptr<drivers::NetworkProbeSource> net_probe;
  std::unique_ptr<drivers::OpenEphysZmqSource> oe_probe;
  std::unique_ptr<drivers::NetworkStimulusSink> net_sink;
  drivers::ProbeSource* probe = nullptr;
  drivers::StimulusSink* stimulator = nullptr;
  try {
    if (remote) {
      if (openephys) {
        // The lab's GUI streams the probe; its channel numbers 0..channels-1 are the probe's
        // bank-0 sites (the protocol says how many), at the protocol's rate.
        drivers::OpenEphysZmqSourceConfig oe;
        oe.endpoint = options.probe_endpoint;
        oe.heartbeat_endpoint = options.heartbeat_endpoint;
        oe.channel_count = static_cast<std::size_t>(probe_spec.channels);
        oe.sample_rate_hz = probe_spec.sample_rate_hz;
        oe.name = probe_spec.name;
        oe_probe = std::make_unique<drivers::OpenEphysZmqSource>(oe);
      } else {
        drivers::NetworkProbeConfig probe_config;
        probe_config.endpoint = options.probe_endpoint;
        net_probe = std::make_unique<drivers::NetworkProbeSource>(probe_config);
      }
      drivers::NetworkStimulusConfig sink_config;
      sink_config.endpoint = options.stimulus_endpoint;
      net_sink = std::make_unique<drivers::NetworkStimulusSink>(sink_config);
      if (!net_sink->start()) {
        std::fprintf(stderr, "twinloop %s: stimulus endpoint %s: %s\n", command,
                     options.stimulus_endpoint.c_str(), net_sink->last_error().c_str());
        return kExitRefused;
      }
      probe = openephys ? static_cast<drivers::ProbeSource*>(oe_probe.get()) : net_probe.get();
      stimulator = net_sink.get();
    } else {
      rig = hil::make_simulated_rig(sim);
      // At max pace the stream waits for the first trial too: setting the session up (the
      // twins, the designer's tables) would otherwise spend the subject's seconds, all of them
      // on a loaded machine with a short --seconds. The trial rig raises the limit from there.
      if (options.pace == drivers::Pace::kMax) rig.probe->limit_stream(0);
      probe = rig.probe.get();
      stimulator = rig.stimulator.get();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop %s: %s rig: %s\n", command,
                 openephys ? "Open Ephys" : (networked ? "network" : "simulated"), e.what());
    return kExitRefused;
  }
  std::unique_ptr<drivers::RawRecorder> raw_recorder;
  if (record_raw) {
    drivers::RawRecorderConfig raw;
    raw.max_block_samples = sim.block_samples;
    raw.wait_when_full = !remote && options.pace == drivers::Pace::kMax;
    raw_recorder = std::make_unique<drivers::RawRecorder>(*probe, raw);
    probe = raw_recorder.get();
  }
  acquisition::AcquisitionConfig acq;
  acq.block_samples = sim.block_samples;
  acq.latency_capacity = static_cast<std::size_t>(options.seconds * 1000.0) + 1000;
  acquisition::AcquisitionLoop loop(*probe, acq);
  if (services.before_acquisition) services.before_acquisition();
  const bool acquisition_started = loop.start();
  if (services.after_acquisition) services.after_acquisition();
  if (!acquisition_started) {
    std::fprintf(stderr, "twinloop %s: %s\n", command, loop.error().c_str());
    return kExitRefused;
  }
  const drivers::ProbeInfo& info = loop.probe();
  const double rate = info.sample_rate_hz;
  const std::size_t units = info.neural_channels;

  // Every stimulus passes the protocol's safety limits on its way to the rig, below the designer.
  std::unique_ptr<drivers::SafetyGate> gate;
  std::unique_ptr<SessionRecord> record;
  std::unique_ptr<ClosedLoop> closed_loop;
  internal::Progress progress(!options.quiet, 5.0);
  std::unique_ptr<SpikeRig> spike_rig;
  RestoreReport restored;
  try {
    gate = std::make_unique<drivers::SafetyGate>(*stimulator, protocol.safety, protocol.stimulus,
                                                 protocol.timing, rate);
    if (resume) {
      record = std::make_unique<SessionRecord>(SessionRecord::open_existing(dir));
    } else {
      SessionSetup setup = SessionSetup::for_protocol(protocol);
      setup.config_json =
          nlohmann::json({{"rig", options.rig},
                          {"seed", options.seed},
                          {"seconds", options.seconds},
                          {"record_raw", raw_recorder != nullptr},
                          {"pace", options.pace == drivers::Pace::kMax ? "max" : "realtime"},
                          {"designer", options.designer.value_or("")},
                          {"sim_model", options.sim_model},
                          {"sim_units", options.sim_units},
                          {"probe", probe_spec.name},
                          {"probe_endpoint", remote ? options.probe_endpoint : ""},
                          {"stimulus_endpoint", remote ? options.stimulus_endpoint : ""},
                          {"heartbeat_endpoint", openephys ? options.heartbeat_endpoint : ""},
                          {"units", "detection channels"},
                          {"protocol_defaults", internal::protocol_defaults_json()}})
              .dump();
      setup.add_detection_channels(units);
      record = std::make_unique<SessionRecord>(SessionRecord::create(dir, setup));
    }
    if (raw_recorder) {
      // One file per run of the session: a resumed session restarts the probe clock.
      std::size_t segment = 0;
      const auto base_of = [&](std::size_t t) {
        return dir / "raw" / ("session_g0_t" + std::to_string(t) + "." + probe_spec.name);
      };
      while (std::filesystem::exists(base_of(segment).string() + ".ap.bin")) ++segment;
      std::string error;
      if (!raw_recorder->open_file(base_of(segment), error)) throw std::runtime_error(error);
      record->record_event(
          "raw_recording_started", std::nullopt,
          nlohmann::json({{"file", std::filesystem::relative(raw_recorder->bin_path(), dir)},
                          {"segment", segment}})
              .dump());
    }
    spike_rig = std::make_unique<SpikeRig>(loop, *gate, protocol.timing, rate);
    if (remote) spike_rig->attach_network(net_probe.get(), net_sink.get(), record.get());
    if (!remote && options.pace == drivers::Pace::kMax) {
      spike_rig->limit_stream(
          [probe = rig.probe.get()](std::int64_t end_sample) { probe->limit_stream(end_sample); });
    }
    closed_loop =
        std::make_unique<ClosedLoop>(protocol, units, *spike_rig, record.get(), loop_options);
    if (resume) restored = closed_loop->restore();
  } catch (const std::exception& e) {
    loop.stop();
    loop.join();
    std::fprintf(stderr, "twinloop %s: %s\n", command, e.what());
    return kExitRefused;
  }

  if (remote) {
    std::printf(
        "twinloop %s: protocol '%s' (%zu candidates, %zu hypotheses), %s rig: probe '%s' "
        "(%zu channels at %.0f Hz) from %s, stimuli to %s, up to %.0f s\n",
        command, protocol.name.c_str(), protocol.stimulus.candidate_count(),
        protocol.hypotheses.size(), openephys ? "Open Ephys" : "networked", info.name.c_str(),
        units, rate,
        (openephys ? "the Open Ephys GUI's ZMQ Interface at " + options.probe_endpoint
                   : options.probe_endpoint)
            .c_str(),
        options.stimulus_endpoint.c_str(), options.seconds);
  } else {
    std::printf(
        "twinloop %s: protocol '%s' (%zu candidates, %zu hypotheses), simulated rig: "
        "%zu-channel %s probe, %zu units (%s), seed %llu, up to %.0f s at %s pace\n",
        command, protocol.name.c_str(), protocol.stimulus.candidate_count(),
        protocol.hypotheses.size(), units, to_string(probe_spec.type).data(),
        rig.subject->units().size(), options.sim_model.c_str(),
        static_cast<unsigned long long>(options.seed), options.seconds,
        options.pace == drivers::Pace::kRealtime ? "real-time" : "maximum");
  }
  std::printf("session record: %s\n", dir.string().c_str());
  if (resume) {
    std::printf(
        "resumed: %zu trials on record (%zu rescored, %zu flagged, %zu aborted before); %zu in "
        "flight at the interruption aborted; posterior %s; continuing at trial %zu on a "
        "restarted probe clock\n",
        restored.trials, restored.scored, restored.flagged, restored.aborted, restored.in_flight,
        restored.mismatches == 0 ? "rebuilt exactly from the recorded predictions"
                                 : "DIFFERS from the recorded one (see the resumed event)",
        closed_loop->trials());
  }
  std::fflush(stdout);

  const auto started = std::chrono::steady_clock::now();
  SessionEngine engine(*closed_loop, *spike_rig, units, progress, [&] {
    const twin::Posterior& p = closed_loop->posterior();
    char line[200];
    std::snprintf(line, sizeof line,
                  "%5.1f s | trial %zu of at most %u | leader %s p=%.3f | %zu spikes",
                  static_cast<double>(loop.counters().samples) / rate, closed_loop->trials(),
                  protocol.stop.max_trials, p.leader_name().c_str(), p.probability(p.leader()),
                  spike_rig->events().size());
    return std::string(line);
  });
  std::unique_ptr<Publisher> own_publisher;
  Publisher* publisher = services.publisher;
  std::unique_ptr<SessionControl> control;
  std::unique_ptr<ControlServer> control_server;
  boost::asio::signal_set hangup(engine.io());
  std::function<void(const boost::system::error_code&, int)> on_hangup;
  // Whatever way this function ends, the host's server stops posting to this session's loop.
  struct ReleaseRelay {
    internal::RequestRelay* relay = nullptr;
    ~ReleaseRelay() {
      if (relay != nullptr) relay->set(nullptr);
    }
  } release_relay;
  try {
    if (publisher == nullptr && !options.publish_endpoint.empty()) {
      PublisherOptions publisher_options;
      publisher_options.endpoint = options.publish_endpoint;
      own_publisher = std::make_unique<Publisher>(publisher_options);
      publisher = own_publisher.get();
      std::printf("monitoring stream: %s (twinloop monitor %s)\n", publisher->endpoint().c_str(),
                  publisher->endpoint().c_str());
    }
    if (publisher != nullptr) {
      spike_rig->attach_publisher(publisher);
      engine.publisher_ = publisher;
      engine.space_ = &protocol.stimulus;
    }
    if (services.control != nullptr && services.relay != nullptr) {
      // The host's server: between trials this session's loop serves what it queues.
      control =
          std::make_unique<SessionControl>(*closed_loop, engine, *record, dir.filename().string());
      boost::asio::io_context& io = engine.io();
      ControlServer* server = services.control;
      SessionControl* handler = control.get();
      services.relay->set([&io, server, handler] {
        boost::asio::post(io, [server, handler] { server->serve_pending(*handler); });
      });
      release_relay.relay = services.relay;
      boost::asio::post(io, [server, handler] { server->serve_pending(*handler); });
    } else if (!options.control_endpoint.empty()) {
      control =
          std::make_unique<SessionControl>(*closed_loop, engine, *record, dir.filename().string());
      ControlServerOptions control_options;
      control_options.endpoint = options.control_endpoint;
      control_options.keys = load_keypair(options.control_key);
      control_options.allow_list = options.control_allow;
      boost::asio::io_context& io = engine.io();
      control_options.on_request = [&io, &control_server, &control] {
        boost::asio::post(io, [&control_server, &control] {
          if (control_server) control_server->serve_pending(*control);
        });
      };
      control_server = std::make_unique<ControlServer>(control_options);
      std::printf("control socket: %s (CURVE; server key %s)\n", control_server->endpoint().c_str(),
                  control_server->public_key().c_str());
      // SIGHUP re-reads the allow-list, as operators expect of a daemon.
      hangup.add(SIGHUP);
      on_hangup = [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        try {
          control_server->reload();
          std::fprintf(stderr, "twinloop: allow-list reloaded\n");
        } catch (const std::exception& e) {
          std::fprintf(stderr, "twinloop: allow-list not reloaded, the old one stays: %s\n",
                       e.what());
        }
        hangup.async_wait(on_hangup);
      };
      hangup.async_wait(on_hangup);
      engine.on_finish_ = [&hangup] { hangup.cancel(); };
    }
  } catch (const std::exception& e) {
    loop.stop();
    loop.join();
    std::fprintf(stderr, "twinloop %s: %s\n", command, e.what());
    return kExitRefused;
  }
  std::fflush(stdout);
  const auto publish_session = [&](const char* state) {
    if (!publisher) return;
    SessionInfo info_message;
    info_message.name = dir.filename().string();
    info_message.protocol = protocol.name;
    info_message.rig = options.rig;
    info_message.designer =
        options.designer.value_or(std::string(protocols::to_string(protocol.designer.strategy)));
    info_message.state = state;
    for (const auto& h : protocol.hypotheses) info_message.hypotheses.push_back(h.name);
    info_message.sample_rate_hz = rate;
    info_message.channels = static_cast<std::uint32_t>(units);
    info_message.trials = closed_loop->trials();
    publisher->publish_session(info_message);
  };
  publish_session("running");
  if (publisher) {
    engine.every_second_ = [&] {
      const acquisition::AcquisitionCounters now = loop.counters();
      HealthReport h;
      h.uptime_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      h.samples = now.samples;
      h.dropped_samples = spike_rig->gaps();
      h.event_queue_dropped = now.events_dropped;
      const auto all = loop.block_latencies_ns();
      const std::size_t recent = std::min<std::size_t>(all.size(), 1000);
      const std::vector<std::uint32_t> last(all.end() - static_cast<std::ptrdiff_t>(recent),
                                            all.end());
      h.block_latency_p50_ms = last.empty() ? -1.0 : percentile(last, 0.5) / 1e6;
      h.block_latency_p99_ms = last.empty() ? -1.0 : percentile(last, 0.99) / 1e6;
      publisher->publish_health(h);
      publish_session(engine.paused_ ? "paused" : "running");
    };
  }
  engine.time_up_ = [&] {
    // A trial that could not end within --seconds would only be aborted, its predictions
    // registered for nothing.
    const auto samples = static_cast<double>(loop.counters().samples);
    return (samples + static_cast<double>(spike_rig->samples_to_next_window_end())) / rate >
           options.seconds;
  };
  try {
    engine.run();
  } catch (const std::exception& e) {
    loop.stop();
    loop.join();
    std::fprintf(stderr, "\ntwinloop %s: session stopped: %s\n", command, e.what());
    return kExitRefused;
  }
  hangup.cancel();
  control_server.reset();
  if (release_relay.relay != nullptr) {
    release_relay.relay->set(nullptr);
    release_relay.relay = nullptr;
  }
  if (services.interrupted != nullptr) *services.interrupted = engine.interrupted();
  publish_session(engine.interrupted() ? "stopped" : "finished");
  loop.stop();
  loop.join();
  spike_rig->drain();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const acquisition::AcquisitionCounters counters = loop.counters();
  progress.finish("session ended");
  // The acquisition thread stopped the recorder as its stream ended: the raw file is closed.
  nlohmann::json raw_summary;
  if (raw_recorder) {
    const drivers::RawRecorderCounters c = raw_recorder->counters();
    raw_summary = {{"file", std::filesystem::relative(raw_recorder->bin_path(), dir).string()},
                   {"samples", c.samples_written},
                   {"zero_filled", c.samples_zero_filled},
                   {"not_recorded", c.samples_not_recorded},
                   {"repeated", c.samples_repeated},
                   {"error", raw_recorder->error()}};
    try {
      record->record_event("raw_recording_closed", std::nullopt, raw_summary.dump());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "twinloop %s: %s\n", command, e.what());
    }
    std::printf("raw stream   %llu samples in %s%s%s\n",
                static_cast<unsigned long long>(c.samples_written),
                raw_summary["file"].get<std::string>().c_str(),
                c.samples_zero_filled + c.samples_not_recorded > 0
                    ? " (with zero-filled stretches: see the raw_recording_closed event)"
                    : "",
                c.failed ? (" -- FAILED: " + raw_recorder->error()).c_str() : "");
  }
  const SessionSummary summary = closed_loop->summary();
  const std::vector<acquisition::SpikeEvent>& events = spike_rig->events();

  // Detection against the simulated subject's ground truth, over the armed part of the session.
  acquisition::DetectionScore score{};
  std::size_t truth_unit_count = 0;
  std::size_t units_near_another = 0;
  if (!remote) {
    const hil::GroundTruth truth = rig.subject->ground_truth();
    units_near_another = count_units_near_another(truth.units, kPoolingRadiusUm);
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
    truth_unit_count = truth_units.size();
    score = acquisition::score_detection(events, truth_spikes, truth_units, info.geometry,
                                         score_options);
  }

  const auto latencies = loop.block_latencies_ns();
  const std::vector<std::uint32_t> latency(latencies.begin(), latencies.end());
  const double seconds = static_cast<double>(counters.samples) / rate;
  // The verdict names a hypothesis; the simulated truth is a model family (or "none").
  std::string verdict_family = summary.verdict.name;
  for (const HypothesisSummary& h : summary.hypotheses) {
    if (h.name == summary.verdict.name) verdict_family = h.family;
  }
  const bool verdict_matches = verdict_family == truth_model;

  std::printf("\n== session summary ==\n");
  std::printf("verdict      %s: %s\n", summary.verdict.name.c_str(),
              summary.verdict.reason.c_str());
  if (!remote) {
    // A channel that sums units with different preferences follows none of the units' models,
    // so on a crowded probe "none" can be the right answer about the channels (docs/session.md).
    const bool pooled_none = !verdict_matches && summary.verdict.name == "none" &&
                             truth_model != "null" && units_near_another > 0;
    std::printf(
        "truth        simulated units are '%s'%s -> %s (units here are detection channels, "
        "each pooling the units near it: %zu of %zu units lie within %.0f um of another)\n",
        truth_model.c_str(),
        truth_model == "null" && options.sim_model != "null"
            ? " (in this space: they respond only to direction, contrast and spatial frequency)"
            : "",
        verdict_matches ? "verdict matches"
        : pooled_none   ? "verdict differs from the units' model, which channels that pool "
                          "several units need not follow"
                        : "verdict differs",
        units_near_another, truth_unit_count, kPoolingRadiusUm);
  }
  const std::string stop_reason = closed_loop->stop_decision().stop() ? summary.stop_reason
                                  : engine.interrupted()              ? "by a signal"
                                                         : "the session's time ran out (--seconds)";
  std::printf(
      "trials       %zu (%zu validation, %zu criticism, %zu flagged, %zu refused, %zu aborted, "
      "%zu deadline misses); stopped: %s\n",
      summary.trials, summary.validation_trials, summary.criticism_trials, summary.flagged_trials,
      summary.refused_trials, summary.aborted_trials, summary.deadline_misses, stop_reason.c_str());
  internal::print_hypothesis_rows(summary);
  std::printf("recorded     %.1f s in %.1f s wall; gaps %llu, events dropped %llu\n", seconds, wall,
              static_cast<unsigned long long>(spike_rig->gaps()),
              static_cast<unsigned long long>(counters.events_dropped));
  if (networked) {
    drivers::NetworkFaultCounters f = net_probe->fault_counters();
    const drivers::NetworkFaultCounters g = net_sink->fault_counters();
    std::printf(
        "network      %llu faults on record: %llu malformed, %llu checksum, %llu duplicate, "
        "%llu out of order, %llu gaps (%lld samples), %llu disconnects; stimuli %llu sent, %llu "
        "late, %llu unacknowledged, %llu refused\n",
        static_cast<unsigned long long>(spike_rig->faults_recorded()),
        static_cast<unsigned long long>(f.malformed),
        static_cast<unsigned long long>(f.checksum_failures),
        static_cast<unsigned long long>(f.duplicates),
        static_cast<unsigned long long>(f.out_of_order), static_cast<unsigned long long>(f.gaps),
        static_cast<long long>(f.missing_samples), static_cast<unsigned long long>(f.disconnects),
        static_cast<unsigned long long>(g.commands), static_cast<unsigned long long>(g.late_onsets),
        static_cast<unsigned long long>(g.missing_onsets),
        static_cast<unsigned long long>(g.refused));
  } else if (openephys) {
    const drivers::OpenEphysZmqCounters f = oe_probe->counters();
    const drivers::NetworkFaultCounters g = net_sink->fault_counters();
    std::printf(
        "open ephys   %llu buffers, %llu gaps (%llu samples), %llu lost messages, %llu "
        "incomplete buffers, %llu duplicates, %llu malformed, %llu restarts, heartbeats %llu "
        "sent / %llu answered; stimuli %llu sent, %llu late, %llu unacknowledged, %llu refused\n",
        static_cast<unsigned long long>(f.blocks), static_cast<unsigned long long>(f.gaps),
        static_cast<unsigned long long>(f.missing_samples),
        static_cast<unsigned long long>(f.lost_messages),
        static_cast<unsigned long long>(f.incomplete_blocks),
        static_cast<unsigned long long>(f.duplicates), static_cast<unsigned long long>(f.malformed),
        static_cast<unsigned long long>(f.restarts),
        static_cast<unsigned long long>(f.heartbeats_sent),
        static_cast<unsigned long long>(f.heartbeat_replies),
        static_cast<unsigned long long>(g.commands), static_cast<unsigned long long>(g.late_onsets),
        static_cast<unsigned long long>(g.missing_onsets),
        static_cast<unsigned long long>(g.refused));
  } else {
    std::printf(
        "detection    %zu spikes, recall %.3f, precision %.3f against ground truth (SNR >= 5, "
        "+-0.5 ms, <= 50 um)\n",
        events.size(), score.recall(), score.precision());
  }
  std::printf(
      "latency      block arrival -> spikes published: p50 %.0f us, p99 %.0f us, max %.0f "
      "us over %zu 1-ms blocks\n",
      percentile(latency, 0.5) / 1e3, percentile(latency, 0.99) / 1e3,
      latency.empty() ? 0.0 : *std::max_element(latency.begin(), latency.end()) / 1e3,
      latency.size());

  const RefitStats& refits = closed_loop->refit_stats();
  if (refits.refits > 0) {
    std::printf("refits       %zu on their own thread, mean %.0f ms, max %.0f ms\n", refits.refits,
                refits.total_ms / static_cast<double>(refits.refits), refits.max_ms);
  }

  try {
    write_detected_spikes(dir, events, info.geometry, loop.detector().noise_uv(), seconds);
    if (!remote) rig.subject->write_ground_truth(dir / "ground_truth");
    nlohmann::json out = internal::summary_json(summary, stop_reason);
    out.update(
        {{"protocol", protocol.name},
         {"resumed", resume},
         {"rig", options.rig},
         {"seed", options.seed},
         {"seconds", seconds},
         {"gaps", spike_rig->gaps()},
         {"events_dropped", counters.events_dropped},
         {"spikes_detected", events.size()},
         {"latency_us",
          {{"p50", percentile(latency, 0.5) / 1e3}, {"p99", percentile(latency, 0.99) / 1e3}}},
         {"faults_recorded", spike_rig->faults_recorded()},
         {"refits",
          {{"count", refits.refits}, {"total_ms", refits.total_ms}, {"max_ms", refits.max_ms}}}});
    if (raw_recorder) out["raw_recording"] = raw_summary;
    if (openephys) {
      const drivers::OpenEphysZmqCounters f = oe_probe->counters();
      out["openephys_stream"] = {{"buffers", f.blocks},
                                 {"gaps", f.gaps},
                                 {"missing_samples", f.missing_samples},
                                 {"lost_messages", f.lost_messages},
                                 {"incomplete_buffers", f.incomplete_blocks},
                                 {"duplicates", f.duplicates},
                                 {"malformed", f.malformed},
                                 {"restarts", f.restarts},
                                 {"heartbeats_sent", f.heartbeats_sent},
                                 {"heartbeats_answered", f.heartbeat_replies}};
    }
    if (!remote) {
      out["truth"] = {{"model", truth_model},
                      {"verdict_matches", verdict_matches},
                      {"units", truth_unit_count},
                      {"units_near_another", units_near_another},
                      {"detection_recall", score.recall()},
                      {"detection_precision", score.precision()}};
    }
    std::ofstream(dir / "summary.json") << out.dump(2) << '\n';
    std::printf(
        "session files in %s (session.sqlite, summary.json, spikes in Phy layout%s); check it "
        "with: twinloop verify %s\n",
        dir.string().c_str(), remote ? "" : ", ground_truth/", dir.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop %s: writing the session files failed: %s\n", command, e.what());
    return kExitRefused;
  }
  return counters.failed ? kExitRefused : kExitOk;
}

int run_session(const RunOptions& options) {
  const protocols::ProtocolLoadResult loaded = protocols::load_protocol_file(options.protocol);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop run: %s refused; nothing was started\n",
                 options.protocol.string().c_str());
    return kExitRefused;
  }
  const protocols::Protocol& protocol = *loaded.protocol;
  if (const std::vector<std::string> problems = twin_problems(protocol); !problems.empty()) {
    for (const std::string& problem : problems) {
      std::fprintf(stderr, "%s: error: %s\n", options.protocol.string().c_str(), problem.c_str());
    }
    std::fprintf(stderr, "twinloop run: %s refused; nothing was started\n",
                 options.protocol.string().c_str());
    return kExitRefused;
  }
  const std::filesystem::path dir = options.out.value_or(default_session_dir(protocol));
  if (options.rig == "recorded") return internal::run_recorded_session(protocol, options, dir);
  return internal::execute_session(protocol, options, dir, false, "run");
}

int resume_session(const ResumeOptions& resume) {
  RunOptions options;
  std::string protocol_text;
  protocols::DesignerDefaults defaults;
  try {
    const SessionRecord record = SessionRecord::open_existing(resume.dir);
    protocol_text = record.protocol_text();
    const nlohmann::json config = nlohmann::json::parse(record.config_json());
    options.rig = config.value("rig", std::string("sim"));
    options.seed = config.value("seed", std::uint64_t{1});
    options.seconds = config.value("seconds", 30.0);
    defaults = recorded_protocol_defaults(record.config_json());
    options.sim_model = config.value("sim_model", std::string("direction_tuning"));
    options.sim_units = config.value("sim_units", std::size_t{64});  // older records: 64
    options.probe_endpoint = config.value("probe_endpoint", options.probe_endpoint);
    options.stimulus_endpoint = config.value("stimulus_endpoint", options.stimulus_endpoint);
    options.heartbeat_endpoint = config.value("heartbeat_endpoint", options.heartbeat_endpoint);
    if (const std::string d = config.value("designer", std::string()); !d.empty()) {
      options.designer = d;
    }
    if (!drivers::parse_pace(config.value("pace", std::string("realtime")), options.pace)) {
      options.pace = drivers::Pace::kRealtime;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop resume: %s\n", e.what());
    return kExitRefused;
  }
  if (options.rig != "sim" && options.rig != "net" && options.rig != "openephys") {
    std::fprintf(stderr, "twinloop resume: %s: rig '%s' cannot be resumed by this build\n",
                 resume.dir.string().c_str(), options.rig.c_str());
    return kExitRefused;
  }
  if (resume.seconds) options.seconds = *resume.seconds;
  if (resume.pace) options.pace = *resume.pace;
  options.quiet = resume.quiet;
  const protocols::ProtocolLoadResult loaded = protocols::load_protocol_text(
      protocol_text, (resume.dir / "session.sqlite").string(), defaults);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop resume: the protocol on record is refused by this build\n");
    return kExitRefused;
  }
  return internal::execute_session(*loaded.protocol, options, resume.dir, true, "resume");
}

}  // namespace twinloop::daemon

// Protocol: everything a session needs to know before it starts, as plain values.
//
// A Protocol is what the loader (loader.hpp) makes of a `twinloop_protocol: 1` YAML file once
// every field has been checked: the subject, its probes, the stimulus space, trial timing, the
// stimulus safety limits, designer settings, stop rules and the hypotheses to discriminate.
// Times are milliseconds, rates are hertz; stimulus values are in the unit their dimension
// declares. The original YAML text is kept (`source_text`) so the session record can store and
// hash exactly what was run. Values only: copy freely, read from any thread. docs/protocol.md
// is the reference for the file format.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/stimulus_space.hpp"

namespace twinloop::protocols {

/// The only protocol format version this build reads (`twinloop_protocol: 1`).
inline constexpr int kProtocolFormatVersion = 1;
/// Channels a probe may record, at most (Neuropixels 1.0/2.0 record 384 at once).
inline constexpr int kMaxProbeChannels = 384;

/// The animal being recorded.
struct Subject {
  std::string id;       ///< lab's identifier, e.g. "M-0423"
  std::string species;  ///< e.g. "Mus musculus"
  std::optional<std::string> notes;
};

/// Probe models the drivers know. kSim is a purely simulated probe (hil/).
enum class ProbeType { kNP1000, kNP1010, kNP2000, kNP2010, kNP2013, kSim };
/// Where a probe's samples come from.
enum class ProbeSourceKind { kSim, kSpikeGlx, kOpenEphys };

[[nodiscard]] std::string_view to_string(ProbeType type) noexcept;        ///< "NP1000", ..., "sim"
[[nodiscard]] std::string_view to_string(ProbeSourceKind kind) noexcept;  ///< "sim", "spikeglx"...

/// One probe in the subject.
struct ProbeSpec {
  std::string name;  ///< unique among the protocol's probes, e.g. "imec0"
  ProbeType type = ProbeType::kNP1000;
  int channels = kMaxProbeChannels;  ///< recorded channels, 1..384
  double sample_rate_hz = 30000.0;   ///< hertz, 1000..200000
  ProbeSourceKind source = ProbeSourceKind::kSim;
  std::optional<std::string> path;  ///< recording path; present iff source is a file source
};

/// Trial structure, milliseconds. A trial is baseline, then stimulus, then inter-trial pause;
/// stimulus onset is time 0. The response window is relative to onset and may start inside the
/// baseline (negative) but must end before the next trial's baseline begins.
struct TrialTiming {
  double baseline_ms = 0.0;        ///< >= 0, before onset
  double stimulus_ms = 0.0;        ///< > 0, onset to offset
  double response_start_ms = 0.0;  ///< >= -baseline_ms
  double response_end_ms = 0.0;    ///< > response_start_ms, <= stimulus_ms + inter_trial_ms
  double inter_trial_ms = 0.0;     ///< >= 0, offset to the next trial's baseline

  /// \return the shortest time between two stimulus onsets, milliseconds.
  [[nodiscard]] double onset_interval_ms() const noexcept {
    return baseline_ms + stimulus_ms + inter_trial_ms;
  }
};

/// Limits the stimulus path enforces below the designer; the loader refuses a protocol whose
/// own candidates or timing would break them.
struct SafetyLimits {
  std::string amplitude_dimension;  ///< name of the stimulus dimension that is the amplitude
  double max_amplitude = 0.0;       ///< > 0; every candidate's |amplitude| must be <= this
  /// Optional dimension (unit "ms") giving each candidate's on-time; when absent the on-time
  /// is the whole stimulus_ms.
  std::optional<std::string> duration_dimension;
  double max_duty_cycle = 1.0;   ///< (0, 1]: on-time / onset interval
  double min_interval_ms = 0.0;  ///< >= 0: shortest allowed time between two onsets
};

/// How the next stimulus is chosen.
enum class DesignerStrategy { kRandom, kDiscriminate };
[[nodiscard]] std::string_view to_string(DesignerStrategy strategy) noexcept;

/// What the loader gives the criticism settings that a protocol leaves out. Since records carry
/// the defaults they ran with (config_json's protocol_defaults), a recorded protocol is loaded
/// again with its own; records without them ran before criticism trials were the default
/// (`kDefaultsBeforeCriticism`).
struct DesignerDefaults {
  std::uint32_t criticism_trials = 20;
  /// Applies where criticism_trials > 0 and the protocol names no target.
  std::optional<double> criticism_power = 0.8;
};
inline const DesignerDefaults kDefaultsBeforeCriticism{0, std::nullopt};

struct DesignerSettings {
  DesignerStrategy strategy = DesignerStrategy::kDiscriminate;
  double validation_fraction = 0.1;     ///< [0, 1): share of random validation trials
  double decision_deadline_ms = 100.0;  ///< > 0: time the designer has to choose
  std::uint64_t seed = 1;               ///< random seed (validation trials, random strategy)
  std::optional<std::uint32_t> candidates_per_decision;  ///< 1..candidate count; absent = all
  /// Designed trials after the posterior threshold, each where the leader's prediction is
  /// furthest from a rival's, before the verdict (discriminate only; see docs/protocol.md).
  std::uint32_t criticism_trials = DesignerDefaults{}.criticism_trials;
  /// (0, 1), optional: criticism trials stop early once the leader's model check has this power
  /// against counts halfway toward each rival; criticism_trials is then the most they may take.
  /// Absent: every one of them is taken.
  std::optional<double> criticism_power = DesignerDefaults{}.criticism_power;
};

/// When the session stops on its own (the operator may always stop it).
struct StopRules {
  double posterior_threshold = 0.95;  ///< (0.5, 1): stop when one hypothesis reaches this
  std::uint32_t max_trials = 0;       ///< > 0
  std::optional<double> max_minutes;  ///< > 0 when present
};

/// Families of twin hypotheses. Checked structurally here; twin/ builds them. New families are
/// appended, so the loader's name table and stored values keep their meaning.
enum class HypothesisFamily { kDirectionTuning, kLnp, kNull, kTorchScript, kOrientationTuning };
[[nodiscard]] std::string_view to_string(HypothesisFamily family) noexcept;

struct HypothesisSpec {
  std::string name;  ///< unique among the protocol's hypotheses; an identifier
  HypothesisFamily family = HypothesisFamily::kNull;
  std::optional<std::string> path;       ///< TorchScript module; required iff family is torchscript
  std::map<std::string, double> params;  ///< free numeric parameters, meaning up to the family
};

struct Protocol {
  int format_version = kProtocolFormatVersion;
  std::string name;
  std::optional<std::string> description;
  Subject subject;
  std::vector<ProbeSpec> probes;  ///< at least one, names unique
  StimulusSpace stimulus;
  TrialTiming timing;
  SafetyLimits safety;
  DesignerSettings designer;
  StopRules stop;
  std::vector<HypothesisSpec> hypotheses;  ///< at least one; two or more for discriminate
  /// Record the raw probe stream in SpikeGLX format beside the session record (for replay).
  bool record_raw = false;

  std::string source_name;  ///< display name the protocol was loaded under (usually its path)
  std::string source_text;  ///< the YAML exactly as read, for hashing into the session record
};

}  // namespace twinloop::protocols

// The session record: the durable, tamper-evident account of one session that a sceptical
// reviewer can check after the fact. One directory per session holds `session.sqlite`; every
// hypothesis's prediction for a trial is committed to disk before that trial's stimulus is
// delivered (pre-registration), and every appended prediction, delivery, outcome, posterior and
// event is linked into a SHA-256 hash chain, so an edit, deletion or reordering of a row is
// detected by verify(). The schema is documented in docs/session-record.md for readers in Python.
//
// Threading: a SessionRecord belongs to the session thread. Every write is one SQLite
// transaction with an fsync, so none of this may be called from the real-time path. Errors throw
// RecordError, whose message names the file and SQLite's own message.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/protocol.hpp"

namespace twinloop::daemon {

class RecordError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The life of a trial in the record. designed -> preregistered -> delivered -> scored is the
/// normal path; flagged (data touched by a fault, kept but suspect) and aborted (never completed,
/// e.g. in flight at a crash) are terminal.
enum class TrialStatus { kDesigned, kPreregistered, kDelivered, kScored, kFlagged, kAborted };
[[nodiscard]] std::string_view to_string(TrialStatus status) noexcept;
[[nodiscard]] std::optional<TrialStatus> parse_trial_status(std::string_view text) noexcept;

/// Event kinds the daemon writes. record_event accepts any lower_snake_case kind; these are the
/// ones with an agreed meaning.
namespace event_kind {
inline constexpr std::string_view kGap = "gap";                     ///< samples lost
inline constexpr std::string_view kDeadlineMiss = "deadline_miss";  ///< a stage ran late
inline constexpr std::string_view kRefusedCommand = "refused_command";
inline constexpr std::string_view kFault = "fault";
inline constexpr std::string_view kTrialFlagged = "trial_flagged";  ///< written by mark_trial
inline constexpr std::string_view kTrialAborted = "trial_aborted";  ///< written by mark_trial
inline constexpr std::string_view kResumed = "resumed";
}  // namespace event_kind

struct HypothesisInfo {
  std::string name;
  std::string family;  ///< the twin family, e.g. "linear_nonlinear_poisson"
};

struct UnitInfo {
  std::uint32_t probe = 0;
  std::int64_t channel = -1;  ///< peak channel, -1 unknown
  std::string label;          ///< free text, e.g. a sorter's cluster id
};

/// What is fixed when the session starts. Everything here is hashed into the first chain link.
struct SessionSetup {
  std::string protocol_text;       ///< the YAML exactly as read
  std::string config_json = "{}";  ///< rig and run configuration, a JSON object
  std::vector<HypothesisInfo> hypotheses;
  std::vector<UnitInfo> units;
  std::vector<std::string> candidates_json;  ///< per candidate, its stimulus values (JSON object)
  std::string twinloop_version = "0.1.0";

  /// The protocol's share of a new record: its text, its hypotheses and its candidates (each a
  /// JSON object of dimension name -> value). The caller adds the units and the configuration.
  [[nodiscard]] static SessionSetup for_protocol(const protocols::Protocol& protocol);
  /// Units as the spike-level rigs report them: detection channels 0..count-1 of probe 0.
  void add_detection_channels(std::size_t count);
};

/// One trial as the designer chose it.
struct TrialDesign {
  std::uint64_t trial = 0;           ///< unique within the session
  std::int64_t candidate = -1;       ///< index into the candidates, -1 when off the candidate grid
  std::string stimulus_json = "{}";  ///< the stimulus values to be delivered (JSON object)
  std::string strategy;              ///< e.g. "max_information", "validation_random"
  bool is_validation = false;
  double expected_information_gain = 0.0;  ///< nats; NaN is stored as NULL (not computed)
};

/// One hypothesis's predicted count distribution per unit for the trial's stimulus: the row of a
/// twin::PredictionBatch for the chosen candidate. Spans of `units` values each.
struct HypothesisPrediction {
  std::span<const double> mean;
  std::span<const double> dispersion;
  /// The encompassing test's direction toward each rival, rival-major ([rivals x units]): the
  /// rival's mean less this one's, less what this hypothesis could itself produce by a refit
  /// (twin::Hypothesis::remove_own_directions). Empty: not given (stored as NULL).
  std::span<const double> rival_differences;
};

/// A point in time as the record keeps it: wall clock for people and across reboots, monotonic
/// for latencies within one boot.
struct Timestamp {
  std::int64_t wall_ns = 0;       ///< system_clock, ns since the Unix epoch
  std::int64_t monotonic_ns = 0;  ///< steady_clock (CLOCK_MONOTONIC), ns
  [[nodiscard]] static Timestamp now() noexcept;
};

/// Where a reopened session stands.
struct ResumeState {
  std::optional<std::uint64_t> last_complete_trial;  ///< highest trial scored or flagged
  std::vector<std::uint64_t> in_flight;  ///< designed, preregistered or delivered; ascending
  std::uint64_t trials = 0;              ///< rows in `trials`
};

/// One trial as read back from the record, for resuming a session and for replay.
struct RecordedTrial {
  std::uint64_t trial = 0;
  std::int64_t candidate = -1;
  TrialStatus status = TrialStatus::kDesigned;
  bool is_validation = false;
  std::string strategy;
  /// Per hypothesis (record order), per unit; empty when the trial was never pre-registered.
  std::vector<std::vector<double>> mean, dispersion;
  /// Per hypothesis, HypothesisPrediction::rival_differences as recorded; empty when NULL.
  std::vector<std::vector<double>> rival_differences;
  std::vector<std::uint32_t> counts;              ///< per unit; empty without an outcome
  std::int64_t onset_sample = -1;                 ///< from the delivery; -1 when never delivered
  std::int64_t window_start = 0, window_end = 0;  ///< the outcome's response window, samples
  std::vector<double> posterior;  ///< per hypothesis after this trial; empty unless scored
};

class SessionRecord {
 public:
  inline static const std::string kFileName = "session.sqlite";

  /// Creates `dir` and a new record in it. Refuses (RecordError) when `dir` already holds a record
  /// or is a non-empty directory, so a session can never be written over another.
  [[nodiscard]] static SessionRecord create(const std::filesystem::path& dir,
                                            const SessionSetup& setup);
  /// Opens an existing record to continue it, e.g. for `twinloop resume`; `state` (if given)
  /// receives the last complete trial and the trials in flight, which the caller should abort.
  [[nodiscard]] static SessionRecord open_existing(const std::filesystem::path& dir,
                                                   ResumeState* state = nullptr);

  SessionRecord(SessionRecord&&) noexcept;
  SessionRecord& operator=(SessionRecord&&) noexcept;
  SessionRecord(const SessionRecord&) = delete;
  SessionRecord& operator=(const SessionRecord&) = delete;
  ~SessionRecord();

  [[nodiscard]] const std::filesystem::path& directory() const noexcept;
  [[nodiscard]] std::size_t hypothesis_count() const noexcept;
  [[nodiscard]] std::size_t unit_count() const noexcept;
  [[nodiscard]] ResumeState resume_state() const;
  /// The protocol YAML and the run configuration (JSON) the session was created with.
  [[nodiscard]] std::string protocol_text() const;
  [[nodiscard]] std::string config_json() const;
  /// Every trial in trial order with what the record holds for it. Reads the whole record: for
  /// resuming and replay, never on a trial's path.
  [[nodiscard]] std::vector<RecordedTrial> trials() const;
  /// The latest chain hash. Publishing it outside the record (log, monitors) anchors the chain
  /// against an attacker who rewrites the whole file; see docs/session-record.md.
  [[nodiscard]] std::array<std::uint8_t, 32> head_hash() const noexcept;

  /// Adds a trial in status `designed`. Refuses a duplicate trial index.
  void begin_trial(const TrialDesign& design);
  /// Commits every hypothesis's prediction for `trial` (one entry per hypothesis, in hypothesis
  /// order, `unit_count()` values each) and returns only once the commit is durable. The trial
  /// must be `designed`; it becomes `preregistered`. Returns the commit time recorded.
  Timestamp preregister(std::uint64_t trial, std::span<const HypothesisPrediction> predictions);
  /// Records the stimulus onset on the sample clock. The record is a witness, not a gate: a
  /// delivery without pre-registration is recorded as it happened and verify() reports it.
  void record_delivery(std::uint64_t trial, std::int64_t onset_sample,
                       std::optional<Timestamp> delivered_at = std::nullopt);
  /// The counts per unit in the response window [window_start, window_end) samples.
  void record_outcome(std::uint64_t trial, std::span<const std::uint32_t> counts,
                      std::int64_t window_start, std::int64_t window_end);
  /// The posterior over hypotheses after the trial (one value each, hypothesis order). A delivered
  /// trial becomes `scored`.
  void record_posterior(std::uint64_t trial, std::span<const double> probability,
                        std::span<const double> log_evidence);
  /// `detail_json` must be a JSON value (object recommended). Returns the event's row id.
  std::int64_t record_event(std::string_view kind, std::optional<std::uint64_t> trial,
                            std::string_view detail_json = "{}");
  /// Sets a trial's status. Flagging or aborting also appends a chained event carrying
  /// `detail_json`, so the reason is part of the tamper-evident record.
  void mark_trial(std::uint64_t trial, TrialStatus status, std::string_view detail_json = "{}");

 private:
  struct Impl;
  explicit SessionRecord(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct Violation {
  std::string table;
  std::int64_t row = 0;  ///< the row id in `table` (for `chain`, the seq)
  std::string what;
};

struct VerifyReport {
  bool chain_intact = true;
  std::size_t chain_links = 0;
  std::size_t trials = 0;
  std::size_t predictions = 0;  ///< rows, one per (trial, hypothesis)
  std::size_t deliveries = 0;
  std::size_t outcomes = 0;
  std::size_t posteriors = 0;
  std::size_t events = 0;
  std::string head_hash_hex;
  std::vector<Violation> violations;
  [[nodiscard]] bool clean() const noexcept { return violations.empty(); }
};

/// Checks a record read-only: recomputes the whole hash chain, checks every delivered trial had
/// all its predictions committed before delivery, and that every chained row is in the chain
/// once. Throws RecordError when there is no readable record at all.
[[nodiscard]] VerifyReport verify(const std::filesystem::path& dir);

/// The defaults a recorded session's protocol was loaded with, from its config_json's
/// "protocol_defaults" (written by every session since criticism trials became the default), so
/// that resume and replay load the protocol on record as it ran; records without the entry ran
/// with protocols::kDefaultsBeforeCriticism. Throws RecordError naming a malformed entry.
[[nodiscard]] protocols::DesignerDefaults recorded_protocol_defaults(std::string_view config_json);

}  // namespace twinloop::daemon

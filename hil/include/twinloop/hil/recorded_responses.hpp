// Recorded responses of real neurons as a bench subject: spike counts of awake macaque V1 single
// units to drifting gratings (Ecker et al. 2010, Science 327:584; data provided by Tolias, Ecker,
// Berens & Bethge, CC BY-NC-ND 3.0: read the file unmodified, never copy or re-save it).
//
// The file is MATLAB v5 (`data_v1_binned_moving.mat`, read with libmatio): one variable `data`, a
// cell array with one struct per recording session. Each struct holds `date` and `subject`
// (text), `conditions` (a struct array, one element per condition, with the field `direction`
// in degrees and optionally `contrast` in percent), `contamination` and `tetrode` (one value per
// unit), `spikes` (units x conditions x time bins x repetitions, counts per 10 ms bin) and
// `times` (bin centres in ms; stimulus onset at 0).
//
// RecordedResponses is one session reduced to what a closed loop sees: one spike count per unit
// per recorded trial, summed over the bins whose centre lies in the response window [start_ms,
// end_ms). The default window, 50-550 ms after onset, is chosen from the data: the population
// PSTH of all 27 sessions sits at its baseline (~4 spikes/s per unit) until the 30-40 ms bin,
// reaches half its onset peak in the 40-50 ms bin, stays up until ~550 ms and is back at
// baseline by ~600 ms, i.e. a 500 ms stimulus seen with ~45 ms latency. The same window gives
// the mean counts VERIFY.txt lists for session 0 (to 0.05 spikes).
//
// Directions as stored differ between the two monkeys' sessions: 0, 22.5, ..., 337.5 in some,
// the same rounded to whole degrees (22, 67, ..., 314, 336) in others. A stimulus direction
// therefore names the condition whose stored direction is nearest on the circle, within a
// tolerance (default 2 deg, well below the 22.5 deg spacing).
//
// RecordedSubject answers a stimulus with the counts of one recorded repeat of its condition not
// used yet, in a fixed order per condition drawn from its seed (a Fisher-Yates permutation of the
// condition's repeats), so the same seed and the same sequence of stimuli give the same counts.
// Each repeat answers once: when a condition has none left, respond() says so and changes
// nothing, and available() / remaining() / available_conditions() tell the caller which
// conditions can still be asked for. It never resamples.
//
// Errors: loading throws RecordedDataError, whose message names the file and the field (or the
// session index) that is wrong. RecordedSubject's real-time calls do not throw for a bad stimulus;
// they return a status. Thread safety: one thread at a time per object; RecordedResponses is
// immutable after load and may be shared read-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::hil {

/// A recorded file that cannot be used as asked: missing, not MATLAB v5, a session index out of
/// range, a field missing or of the wrong shape or type. what() names the file and the field.
class RecordedDataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Spikes are counted over the bins whose centre lies in [start_ms, end_ms) after onset.
struct ResponseWindowMs {
  double start_ms = 50.0;
  double end_ms = 550.0;
};

/// What list_recorded_sessions() tells about one session without keeping its spikes.
struct RecordedSessionInfo {
  std::size_t index = 0;  ///< 0-based position in the cell array
  std::string date;
  std::string subject;  ///< the monkey
  std::size_t units = 0;
  std::size_t conditions = 0;
  std::size_t repeats = 0;  ///< repetitions dimension of `spikes` (per condition)
};

/// One recorded condition.
struct RecordedCondition {
  double direction_deg = 0.0;  ///< as stored
  double contrast = -1.0;      ///< as stored (percent in this dataset); -1 when the field is absent
  std::size_t repeats = 0;     ///< repeats recorded (all-NaN padding excluded)
};

/// One recorded session: spike counts in a response window, per condition, repeat and unit.
class RecordedResponses {
 public:
  /// Reads session `session` (0-based) of `file`.
  /// \throws RecordedDataError naming the file and the problem (no such file, not MATLAB v5, no
  ///         variable `data`, `session` out of range, a field missing or malformed, a window
  ///         outside the recorded bins or holding none of them, a count that is negative or not
  ///         a whole number)
  /// \note Decompresses the whole `data` variable (~2 s, ~250 MB transiently); not real-time.
  static RecordedResponses load(const std::filesystem::path& file, std::size_t session,
                                ResponseWindowMs window = {});
  /// Every session of `file`, in order, from one read (cheaper than load() per session).
  /// \throws RecordedDataError as load()
  static std::vector<RecordedResponses> load_all(const std::filesystem::path& file,
                                                 ResponseWindowMs window = {});

  [[nodiscard]] const std::filesystem::path& file() const noexcept { return file_; }
  [[nodiscard]] std::size_t session() const noexcept { return session_; }
  [[nodiscard]] const std::string& date() const noexcept { return date_; }
  [[nodiscard]] const std::string& subject() const noexcept { return subject_; }
  [[nodiscard]] std::size_t unit_count() const noexcept { return units_; }
  [[nodiscard]] std::size_t condition_count() const noexcept { return conditions_.size(); }
  [[nodiscard]] const std::vector<RecordedCondition>& conditions() const noexcept {
    return conditions_;
  }
  /// Per unit, as stored (NaN-free after load).
  [[nodiscard]] const std::vector<double>& contamination() const noexcept { return contamination_; }
  [[nodiscard]] const std::vector<double>& tetrode() const noexcept { return tetrode_; }
  [[nodiscard]] ResponseWindowMs window() const noexcept { return window_; }
  /// Bins summed per count and their width (ms).
  [[nodiscard]] std::size_t window_bins() const noexcept { return window_bins_; }
  [[nodiscard]] double bin_ms() const noexcept { return bin_ms_; }

  /// One recorded trial's counts, one per unit.
  /// \throws std::out_of_range when condition or repeat is out of range
  [[nodiscard]] std::span<const std::uint32_t> counts(std::size_t condition,
                                                      std::size_t repeat) const;
  /// Mean count of `unit` over the repeats of `condition`.
  /// \throws std::out_of_range as counts()
  [[nodiscard]] double mean_count(std::size_t condition, std::size_t unit) const;
  /// The condition whose stored direction is nearest to `direction_deg` on the circle, when it is
  /// within `tolerance_deg`.
  [[nodiscard]] std::optional<std::size_t> find_direction(
      double direction_deg, double tolerance_deg = 2.0) const noexcept;

 private:
  RecordedResponses() = default;
  friend struct RecordedReader;

  std::filesystem::path file_;
  std::size_t session_ = 0;
  std::string date_, subject_;
  std::size_t units_ = 0;
  std::size_t max_repeats_ = 0;
  std::vector<RecordedCondition> conditions_;
  std::vector<double> contamination_, tetrode_;
  ResponseWindowMs window_;
  std::size_t window_bins_ = 0;
  double bin_ms_ = 0.0;
  std::vector<std::uint32_t> counts_;  // [condition][repeat][unit], repeat < max_repeats_
};

/// Lists the sessions of `file` (index, date, subject, shape).
/// \throws RecordedDataError as RecordedResponses::load()
[[nodiscard]] std::vector<RecordedSessionInfo> list_recorded_sessions(
    const std::filesystem::path& file);

/// How RecordedSubject answered.
enum class RecordedAnswer : std::uint8_t {
  kAnswered,         ///< counts filled from an unused repeat
  kExhausted,        ///< the condition exists but every repeat of it was used
  kNoSuchCondition,  ///< no recorded direction within the tolerance of the stimulus's
};
[[nodiscard]] std::string_view to_string(RecordedAnswer answer) noexcept;

struct RecordedSubjectConfig {
  std::uint64_t seed = 1;       ///< order in which each condition's repeats are used
  int direction_dimension = 0;  ///< Stimulus value index holding the direction (degrees)
  double direction_tolerance_deg = 2.0;
};

/// A subject that answers with recorded repeats, each at most once.
class RecordedSubject {
 public:
  struct Response {
    RecordedAnswer answer = RecordedAnswer::kNoSuchCondition;
    std::size_t condition = 0;  ///< valid unless kNoSuchCondition
    std::size_t repeat = 0;     ///< the recorded repeat used (kAnswered only)
  };

  /// \throws std::invalid_argument when direction_dimension is not a stimulus value index or the
  ///         tolerance is not in (0, 90)
  RecordedSubject(RecordedResponses data, RecordedSubjectConfig config);

  [[nodiscard]] const RecordedResponses& data() const noexcept { return data_; }
  [[nodiscard]] const RecordedSubjectConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t unit_count() const noexcept { return data_.unit_count(); }

  /// The recorded condition `stimulus` asks for, if any.
  [[nodiscard]] std::optional<std::size_t> condition_of(
      const protocols::Stimulus& stimulus) const noexcept;
  /// Repeats of `condition` not used yet (0 for an unknown condition).
  [[nodiscard]] std::size_t remaining(std::size_t condition) const noexcept;
  /// True when `stimulus` names a condition with a repeat left.
  [[nodiscard]] bool available(const protocols::Stimulus& stimulus) const noexcept;
  /// Conditions with a repeat left, ascending.
  [[nodiscard]] std::vector<std::size_t> available_conditions() const;
  /// True when no condition has a repeat left.
  [[nodiscard]] bool exhausted() const noexcept;
  /// Repeats used so far, over all conditions.
  [[nodiscard]] std::size_t used() const noexcept { return used_; }
  /// Repeats recorded, over all conditions.
  [[nodiscard]] std::size_t total() const noexcept { return total_; }

  /// Fills `counts` (one per unit) with the next unused repeat of the stimulus's condition and
  /// marks it used. On kExhausted or kNoSuchCondition nothing changes and `counts` is untouched.
  /// \throws std::invalid_argument when counts.size() != unit_count() (before any state changes)
  /// \note No allocation.
  Response respond(const protocols::Stimulus& stimulus, std::span<std::uint32_t> counts);

  /// Every repeat unused again; the same order as after construction.
  void reset() noexcept;

 private:
  RecordedResponses data_;
  RecordedSubjectConfig config_;
  std::vector<std::vector<std::uint32_t>> order_;  // per condition: repeats in the order used
  std::vector<std::size_t> next_;                  // per condition: position in order_
  std::size_t used_ = 0, total_ = 0;
};

}  // namespace twinloop::hil

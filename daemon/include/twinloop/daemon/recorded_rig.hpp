// RecordedRig: a TrialRig whose subject is real neurons, answering each stimulus with the counts
// of a recorded repeat of its condition not used yet (hil::RecordedSubject), with no probe and no
// spike detection in between, like CountRig. Each repeat answers once: available() tells the
// closed loop which candidates still have one, so the designer never asks for an exhausted
// condition and the session stops when the data are spent. There is no ground truth: the
// verdict is what these neurons say, not something a test can check against a known model.
//
// Every protocol candidate must name a recorded condition (its direction within the subject's
// tolerance of a recorded one; with a `contrast` dimension, its contrast x 100 within 0.5 of the
// recorded percent); the constructor refuses the protocol otherwise, so a session never starts
// with a stimulus the data cannot answer.
//
// The sample clock of the record is synthetic (1 kHz, one trial per onset interval): the data
// hold no trial times. With attach_record(), each answered trial writes a `recorded_repeat`
// event naming the condition and the recorded repeat that answered it, so the record says which
// recorded trial gave every count.
//
// One thread at a time (the one driving the ClosedLoop).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/hil/recorded_responses.hpp"
#include "twinloop/protocols/protocol.hpp"
#include "twinloop/protocols/stimulus_space.hpp"

namespace twinloop::daemon {

namespace event_kind {
/// Which recorded repeat answered a trial (RecordedRig).
inline constexpr std::string_view kRecordedRepeat = "recorded_repeat";
}  // namespace event_kind

class RecordedRig final : public TrialRig {
 public:
  /// \param timing  the protocol's: onset spacing and response window on the synthetic clock
  /// \throws std::invalid_argument naming the first candidate the data cannot answer
  RecordedRig(hil::RecordedSubject& subject, const protocols::StimulusSpace& space,
              const protocols::TrialTiming& timing)
      : subject_(subject),
        interval_(std::max<std::int64_t>(1, std::llround(timing.onset_interval_ms()))),
        window_start_(std::llround(timing.response_start_ms)),
        window_end_(std::llround(timing.response_end_ms)) {
    const hil::RecordedResponses& data = subject.data();
    const auto contrast = space.dimension_index("contrast");
    for (std::size_t c = 0; c < space.candidate_count(); ++c) {
      const protocols::Stimulus s = space.stimulus(c);
      const std::optional<std::size_t> condition = subject.condition_of(s);
      if (!condition) {
        throw std::invalid_argument(
            "candidate " + std::to_string(c) + " (direction " +
            number(s.values[static_cast<std::size_t>(subject.config().direction_dimension)]) +
            " deg) has no recorded condition in session " + std::to_string(data.session()) +
            " of " + data.file().string() + " (recorded directions: " + directions(data) + ")");
      }
      const double recorded = data.conditions()[*condition].contrast;
      if (contrast && recorded >= 0.0 &&
          !(std::abs(s.values[*contrast] * 100.0 - recorded) <= 0.5)) {
        throw std::invalid_argument("candidate " + std::to_string(c) + " (contrast " +
                                    number(s.values[*contrast]) + ") was not recorded: session " +
                                    std::to_string(data.session()) + " of " + data.file().string() +
                                    " has contrast " + number(recorded) + " %");
      }
      condition_.push_back(*condition);
    }
  }

  /// Where trial events go (optional).
  void attach_record(SessionRecord* record) noexcept { record_ = record; }

  Result run_trial(std::uint64_t trial, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result result;
    const hil::RecordedSubject::Response response = subject_.respond(stimulus, counts);
    if (response.answer != hil::RecordedAnswer::kAnswered) {
      // Not delivered: the loop aborts the trial on record; nothing is resampled.
      result.problem = std::string(hil::to_string(response.answer));
      return result;
    }
    result.onset_sample = next_onset_;
    result.window_start = next_onset_ + window_start_;
    result.window_end = next_onset_ + window_end_;
    result.delivered_at = Timestamp::now();
    next_onset_ += interval_;
    result.delivered = true;
    if (record_ != nullptr) {
      char detail[160];
      std::snprintf(detail, sizeof detail,
                    R"({"session":%zu,"condition":%zu,"repeat":%zu,"direction_deg":%.17g})",
                    subject_.data().session(), response.condition, response.repeat,
                    subject_.data().conditions()[response.condition].direction_deg);
      record_->record_event(event_kind::kRecordedRepeat, trial, detail);
    }
    return result;
  }

  [[nodiscard]] bool available(std::uint32_t candidate) const noexcept override {
    return candidate < condition_.size() && subject_.remaining(condition_[candidate]) > 0;
  }

  /// The recorded condition of each candidate.
  [[nodiscard]] const std::vector<std::size_t>& conditions() const noexcept { return condition_; }

 private:
  static std::string number(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", v);
    return text;
  }
  static std::string directions(const hil::RecordedResponses& data) {
    std::string out;
    for (const hil::RecordedCondition& c : data.conditions()) {
      out += (out.empty() ? "" : ", ") + number(c.direction_deg);
    }
    return out;
  }

  hil::RecordedSubject& subject_;
  std::int64_t interval_;                   // synthetic onsets, ms apart
  std::int64_t window_start_, window_end_;  // ms after onset
  std::vector<std::size_t> condition_;      // per candidate
  std::int64_t next_onset_ = 0;
  SessionRecord* record_ = nullptr;
};

}  // namespace twinloop::daemon

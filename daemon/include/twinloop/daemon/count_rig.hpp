// CountRig: a TrialRig whose subject answers with counts per unit directly (hil::CountSubject),
// with no probe and no spike detection in between. For closed-loop tests and for benchmarks that
// run hundreds of sessions; stimuli still pass the protocol's safety gate.
#pragma once

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/hil/count_subject.hpp"

namespace twinloop::daemon {

class CountRig final : public TrialRig {
 public:
  explicit CountRig(hil::CountSubject& subject) : subject_(subject) {}

  Result run_trial(std::uint64_t /*trial*/, const protocols::Stimulus& stimulus,
                   std::span<std::uint32_t> counts) override {
    Result result;
    result.onset_sample = next_onset_;
    result.window_start = next_onset_;
    result.window_end = next_onset_ + 1;
    result.delivered_at = Timestamp::now();
    next_onset_ += 1000;
    subject_.respond(stimulus, counts);
    result.delivered = true;
    return result;
  }

 private:
  hil::CountSubject& subject_;
  std::int64_t next_onset_ = 0;
};

}  // namespace twinloop::daemon

// Internal: `twinloop run PROTOCOL --rig recorded --dataset FILE.mat --dataset-session N`, a
// closed-loop session whose subject is real neurons' recorded responses (RecordedRig over
// hil::RecordedSubject): each trial designed among the conditions that still have an unused
// recorded repeat, every prediction pre-registered in the session record, the repeat's counts
// scored, until a stop rule holds or the data are exhausted. Prints the live progress line and
// the summary (no ground-truth comparison: there is none for real neurons) and writes
// summary.json beside session.sqlite.
#pragma once

#include <filesystem>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::daemon::internal {

/// Runs the session in `dir` (created; must not exist). SIGINT/SIGTERM stop it after the trial
/// in flight, with its summary.
/// \return kExitOk; kExitRefused when the dataset, the protocol or the record is refused (stderr
///         says which file and what); kExitUsage without --dataset
int run_recorded_session(const protocols::Protocol& protocol, const RunOptions& options,
                         const std::filesystem::path& dir);

}  // namespace twinloop::daemon::internal

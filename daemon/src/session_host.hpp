// Internal: execute_session(), the one place a session is run, shared by `twinloop run`,
// `twinloop resume` and the daemon. What the daemon owns for longer than one session (its control
// server, its publisher, thread placement) comes in through SessionServices; `twinloop run`
// passes none and execute_session creates its own from RunOptions, as it always has.
#pragma once

#include <filesystem>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::daemon {
class ControlServer;
class Publisher;
}  // namespace twinloop::daemon

namespace twinloop::daemon::internal {

/// The part of summary.json every rig writes alike (docs/session.md): verdict, why it stopped,
/// posterior, trial counts and each hypothesis's scores. Rigs add their own fields.
[[nodiscard]] nlohmann::json summary_json(const SessionSummary& summary,
                                          const std::string& stop_reason);

/// What config_json records under "protocol_defaults": the settings this build gives what a
/// protocol leaves out, so that resume and replay load the protocol on record as it ran.
[[nodiscard]] nlohmann::json protocol_defaults_json();

/// The summary's table of hypotheses, one line each (posterior, log Bayes factor, bits per spike,
/// Spearman rho with its interval, whether it fits), then the leader's log Bayes factor by unit,
/// on stdout.
void print_hypothesis_rows(const SessionSummary& summary);

/// Routes a ControlServer's "a request is waiting" notice (called on the server thread) to
/// whoever serves requests now: the idle daemon or the running session's event loop. Thread safe.
class RequestRelay {
 public:
  void set(std::function<void()> target) {
    const std::lock_guard lock(mutex_);
    target_ = std::move(target);
  }
  void notify() {
    const std::lock_guard lock(mutex_);
    if (target_) target_();
  }

 private:
  std::mutex mutex_;
  std::function<void()> target_;
};

/// What a long-lived host lends one session. Every member is optional.
struct SessionServices {
  Publisher* publisher = nullptr;    ///< used instead of options.publish_endpoint
  ControlServer* control = nullptr;  ///< used instead of options.control_endpoint; needs relay
  RequestRelay* relay = nullptr;     ///< pointed at the session's loop while it runs, then cleared
  /// Called on the session thread just before / after the acquisition thread is created (which
  /// inherits the caller's CPU affinity and scheduling policy), e.g. to place it.
  std::function<void()> before_acquisition;
  std::function<void()> after_acquisition;
  /// Called on the twins' refit thread when it starts (ClosedLoopOptions::on_refit_thread_start).
  std::function<void()> on_refit_thread;
  /// Set to true when a SIGINT/SIGTERM ended the session.
  bool* interrupted = nullptr;
};

/// Runs a session: a new one (the record is created in `dir`) or a resumed one (the record in
/// `dir` is reopened and the closed loop restored from it). Prints progress and the summary,
/// writes summary.json. SIGINT/SIGTERM stop it after the trial in flight.
/// \return kExitOk, or kExitRefused with a message on stderr
int execute_session(const protocols::Protocol& protocol, const RunOptions& options,
                    const std::filesystem::path& dir, bool resume, const char* command,
                    const SessionServices& services = {});

}  // namespace twinloop::daemon::internal

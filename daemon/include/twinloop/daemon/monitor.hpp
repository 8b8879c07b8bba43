// `twinloop monitor ENDPOINT`: a read-only live terminal view of a daemon's monitoring stream
// (docs/monitoring.md): session, trial, posterior bars, firing rates, health and drops.
// Redraws about four times a second (ANSI when stdout is a terminal, plain text otherwise).
#pragma once

#include <string>

namespace twinloop::daemon {

struct MonitorOptions {
  std::string endpoint;  ///< the daemon's publish endpoint, e.g. tcp://rig:5560
  double seconds = 0;    ///< stop after this long; 0 = until Ctrl-C (SIGINT) or SIGTERM
  /// Draw nothing while running; print one plain snapshot when it ends (scripts, tests).
  bool once_plain = false;
};

/// Subscribes to every topic and draws until the time is up or the user interrupts.
/// \return kExitOk; kExitRefused when the endpoint cannot be connected; kExitUsage when the
///         options are invalid (empty endpoint, negative seconds)
int monitor(const MonitorOptions& options);

}  // namespace twinloop::daemon

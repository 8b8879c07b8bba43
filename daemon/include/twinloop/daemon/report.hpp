// `twinloop report SESSION_DIR`: a self-contained HTML validation report of one session, for a
// reviewer who was not at the rig. It reads the session record (`session.sqlite`, read-only) and,
// when the session ended, its `summary.json`, and writes one HTML file with inline SVG plots and
// no scripts or styles from anywhere else: the `verify` result (is the hash chain intact), the
// verdict and how the posterior reached it, predicted against observed counts on validation
// trials, log Bayes factors, bits per spike and Spearman rho, calibration (randomized PIT and
// central-interval coverage), the stimuli the designer chose, expected against realised
// information gain, and every event. For an interrupted session (no summary.json) it computes
// what the record allows and says what it could not. Every text taken from the record is
// HTML-escaped. See docs/report.md.
//
// Thread safety: write_report() shares no state; it may run beside a live session (the record is
// opened read-only). It reads the whole record: never call it on a trial's path.
#pragma once

#include <filesystem>
#include <optional>

namespace twinloop::daemon {

struct ReportOptions {
  std::filesystem::path dir;                 ///< the session directory (holds session.sqlite)
  std::optional<std::filesystem::path> out;  ///< default: dir / "report.html"
};

/// Writes the report (to a temporary file beside the target, then renamed over it, so a reader
/// never sees half a report) and prints its path and size on stdout.
/// \param[in] options the session directory and where to write.
/// \return kExitOk (0) when the report was written, whatever the session's verdict or the
///         verify result (both are in the report); kExitRefused (1) when the directory, the
///         record or the output cannot be used, with a message on stderr naming the file and
///         what is wrong.
/// \throws nothing (std::bad_alloc only).
int write_report(const ReportOptions& options);

}  // namespace twinloop::daemon

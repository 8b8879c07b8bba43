// NWB export: `twinloop export SESSION_DIR --nwb OUT.nwb` writes a finished session's trials (with
// their stimulus parameters), its units and their detected spike times to a Neurodata Without
// Borders 2.x file (HDF5, NWB core schema 2.5.0 with hdmf-common 1.5.0), so that pynwb, MatNWB
// and the NWB tools read the session without twinloop. docs/export.md is the reference: what is
// written where, in which unit, and which trials are left out.
//
// What one call does: opens SESSION_DIR/session.sqlite read-only (one read transaction, so a live
// writer is never disturbed and the export sees one consistent snapshot), reads the protocol on
// record (for the sample rate and trial timing) and the spike files in Phy layout
// (spike_times.npy, spike_clusters.npy), writes OUT.partial, flushes it, and renames it to OUT.
// OUT is therefore absent, untouched (the previous file, without --force) or complete; never half
// written.
//
// Thread safety: may run on any thread, but not twice at once in one process: it switches off
// libhdf5's automatic error printing (process-wide state) while it runs. Not for the real-time
// path: file I/O throughout.
#pragma once

#include <filesystem>

namespace twinloop::daemon {

/// What `twinloop export` is asked to do.
struct ExportOptions {
  std::filesystem::path session_dir;  ///< a session directory (holds session.sqlite)
  std::filesystem::path nwb;          ///< the NWB file to write; its folder must exist
  bool force = false;                 ///< replace `nwb` when it exists (default: refuse)
  bool quiet = false;                 ///< no summary line on stdout
};

/// `twinloop export SESSION_DIR --nwb OUT.nwb [--force]`.
/// \param[in] options what to export and where.
/// \return 0 (kExitOk) once OUT is complete; 1 (kExitRefused) when the input is refused or the
///         work failed: a message on stderr names the file and what is wrong, and OUT is left as
///         it was (OUT.partial is removed).
/// \throws nothing but std::bad_alloc.
/// \note Not real-time safe (file I/O, allocation).
int export_session(const ExportOptions& options);

}  // namespace twinloop::daemon

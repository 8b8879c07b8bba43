// Diagnostics: what the protocol loader says about input it refuses.
//
// A Diagnostic names the file, the 1-based line and column, the field path (dotted keys and
// [indices], e.g. "stimulus.space.contrast.values[2]"), what was found and what was expected.
// Line and column are 0 when the problem concerns the whole file (not found, unreadable, too
// large). format_diagnostic() renders the compiler-like one-line form operators and editors
// understand:
//
//   protocol.yaml:14:7: error: stimulus.space.contrast.values[2]: found -0.5, expected a number in
//   [0, 1]
//
// Plain values; no shared state; the functions are pure and thread safe.
#pragma once

#include <string>
#include <vector>

namespace twinloop::protocols {

/// One problem in a protocol file. Every diagnostic is an error: the protocol is refused.
struct Diagnostic {
  std::string file;        ///< display name given to the loader (usually the path)
  int line = 0;            ///< 1-based; 0 = the whole file
  int column = 0;          ///< 1-based; 0 = the whole file
  std::string field_path;  ///< e.g. "stop.max_trials"; empty for file-level and syntax problems
  std::string found;       ///< what the file holds there, e.g. "-0.5", "a list", "nothing"
  std::string expected;    ///< what would have been accepted, e.g. "a number in [0, 1]"

  friend bool operator==(const Diagnostic&, const Diagnostic&) = default;
};

/// \return "file:line:column: error: field_path: found F, expected E" (location and field path
///         left out when absent).
[[nodiscard]] std::string format_diagnostic(const Diagnostic& diagnostic);

/// \return every diagnostic formatted, one per line, each line ending in '\n'.
[[nodiscard]] std::string format_diagnostics(const std::vector<Diagnostic>& diagnostics);

}  // namespace twinloop::protocols

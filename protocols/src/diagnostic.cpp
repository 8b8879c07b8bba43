// Rendering of loader diagnostics in the compiler-like one-line form.
#include "twinloop/protocols/diagnostic.hpp"

namespace twinloop::protocols {

std::string format_diagnostic(const Diagnostic& diagnostic) {
  std::string out = diagnostic.file;
  if (diagnostic.line > 0) {
    out += ':' + std::to_string(diagnostic.line) + ':' + std::to_string(diagnostic.column);
  }
  out += ": error: ";
  if (!diagnostic.field_path.empty()) out += diagnostic.field_path + ": ";
  out += "found " + diagnostic.found + ", expected " + diagnostic.expected;
  return out;
}

std::string format_diagnostics(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const auto& diagnostic : diagnostics) out += format_diagnostic(diagnostic) + '\n';
  return out;
}

}  // namespace twinloop::protocols

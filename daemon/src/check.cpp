#include <cstdio>
#include <string>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {

int check_protocols(const std::vector<std::filesystem::path>& paths) {
  int status = kExitOk;
  for (const auto& path : paths) {
    const protocols::ProtocolLoadResult result = protocols::load_protocol_file(path);
    if (!result.ok()) {
      std::fputs(protocols::format_diagnostics(result.diagnostics).c_str(), stderr);
      std::fprintf(stderr, "%s: refused (%zu problem%s)\n", path.string().c_str(),
                   result.diagnostics.size(), result.diagnostics.size() == 1 ? "" : "s");
      status = kExitRefused;
      continue;
    }
    const protocols::Protocol& p = *result.protocol;
    if (const std::vector<std::string> problems = twin_problems(p); !problems.empty()) {
      for (const std::string& problem : problems) {
        std::fprintf(stderr, "%s: error: %s\n", path.string().c_str(), problem.c_str());
      }
      std::fprintf(stderr, "%s: refused (%zu hypothes%s cannot be built)\n", path.string().c_str(),
                   problems.size(), problems.size() == 1 ? "is" : "es");
      status = kExitRefused;
      continue;
    }
    std::string criticism;
    if (p.designer.strategy == protocols::DesignerStrategy::kDiscriminate &&
        p.designer.criticism_trials > 0) {
      char text[160];
      if (p.designer.criticism_power) {
        std::snprintf(text, sizeof text,
                      "; after the posterior threshold up to %u criticism trials, until the "
                      "check's power reaches %.2f",
                      p.designer.criticism_trials, *p.designer.criticism_power);
      } else {
        std::snprintf(text, sizeof text, "; after the posterior threshold %u criticism trials",
                      p.designer.criticism_trials);
      }
      criticism = text;
    }
    std::printf(
        "%s: ok: protocol '%s', %zu probe%s, %zu stimulus candidates over %zu dimensions, "
        "%zu hypotheses, at most %u trials%s\n",
        path.string().c_str(), p.name.c_str(), p.probes.size(), p.probes.size() == 1 ? "" : "s",
        p.stimulus.candidate_count(), p.stimulus.dimension_count(), p.hypotheses.size(),
        p.stop.max_trials, criticism.c_str());
  }
  return status;
}

}  // namespace twinloop::daemon

// `twinloop verify DIR`: the session record's check as a command a reviewer runs. The report is
// meant to be pasted into a review: what was counted, whether the chain holds, the head hash to
// compare against one published during the session, and every violation by table and row.
#include <cstdio>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/session_record.hpp"

namespace twinloop::daemon {

int verify_session(const std::filesystem::path& dir) {
  VerifyReport report;
  try {
    report = verify(dir);
  } catch (const RecordError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return kExitRefused;
  }
  std::printf(
      "%s: %zu trials, %zu prediction rows, %zu deliveries, %zu outcomes, "
      "%zu posterior rows, %zu events\n",
      dir.string().c_str(), report.trials, report.predictions, report.deliveries, report.outcomes,
      report.posteriors, report.events);
  std::printf("chain: %zu links, %s, head %s\n", report.chain_links,
              report.chain_intact ? "intact" : "BROKEN", report.head_hash_hex.c_str());
  if (report.clean()) {
    std::printf("clean: every prediction was committed before its trial's delivery\n");
    return kExitOk;
  }
  std::printf("%zu violation%s:\n", report.violations.size(),
              report.violations.size() == 1 ? "" : "s");
  for (const Violation& v : report.violations) {
    std::printf("  %s row %lld: %s\n", v.table.c_str(), static_cast<long long>(v.row),
                v.what.c_str());
  }
  return kExitRefused;
}

}  // namespace twinloop::daemon

// Diagnostic formatting: the compiler-like one-line form.
#include <gtest/gtest.h>

#include "twinloop/protocols/diagnostic.hpp"

namespace twinloop::protocols {
namespace {

TEST(Diagnostic, FormatsLocationPathFoundExpected) {
  const Diagnostic d{"protocol.yaml",     14, 7, "stimulus.space.contrast.values[2]", "-0.5",
                     "a number in [0, 1]"};
  EXPECT_EQ(format_diagnostic(d),
            "protocol.yaml:14:7: error: stimulus.space.contrast.values[2]: found -0.5, expected "
            "a number in [0, 1]");
}

TEST(Diagnostic, FileLevelDiagnosticHasNoLocationOrPath) {
  const Diagnostic d{"x.yaml", 0, 0, "", "no such file", "a readable protocol file"};
  EXPECT_EQ(format_diagnostic(d),
            "x.yaml: error: found no such file, expected a readable "
            "protocol file");
}

TEST(Diagnostic, FormatsAListOnePerLine) {
  const std::vector<Diagnostic> list = {{"a", 1, 2, "x", "1", "2"}, {"a", 3, 4, "y", "3", "4"}};
  EXPECT_EQ(format_diagnostics(list),
            "a:1:2: error: x: found 1, expected 2\na:3:4: error: y: found 3, expected 4\n");
}

}  // namespace
}  // namespace twinloop::protocols

// Every shipped example protocol's twins can be built, predict, learn from a few trials and
// predict again: loading a protocol checks its syntax, but only the twin families know which
// params they accept, so an example that loads may still be unable to run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/hypothesis.hpp"

namespace twinloop::twin {
namespace {

std::vector<std::filesystem::path> example_protocols() {
  std::vector<std::filesystem::path> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(TWINLOOP_CONFIG_DIR) + "/examples")) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void expect_sane(const PredictionBatch& batch, const std::string& where) {
  for (std::size_t i = 0; i < batch.mean.size(); ++i) {
    ASSERT_TRUE(std::isfinite(batch.mean[i]) && batch.mean[i] >= 0.0)
        << where << ": mean[" << i << "] = " << batch.mean[i];
    ASSERT_TRUE(std::isfinite(batch.dispersion[i]) && batch.dispersion[i] >= 0.0)
        << where << ": dispersion[" << i << "] = " << batch.dispersion[i];
  }
}

TEST(ExampleTwins, EveryExampleBuildsPredictsAndLearns) {
  const auto files = example_protocols();
  ASSERT_GE(files.size(), 6u) << "config/examples lost its protocols";
  constexpr std::size_t kUnits = 6;
  constexpr std::size_t kTrials = 12;
  for (const auto& file : files) {
    SCOPED_TRACE(file.filename().string());
    const auto loaded = protocols::load_protocol_file(file.string());
    ASSERT_TRUE(loaded.ok()) << protocols::format_diagnostics(loaded.diagnostics);
    const protocols::Protocol& p = *loaded.protocol;
    const protocols::StimulusSpace& space = p.stimulus;
    std::vector<protocols::Stimulus> candidates;
    for (std::size_t c = 0; c < space.candidate_count(); ++c) {
      candidates.push_back(space.stimulus(c));
    }
    TwinOptions options;
    options.window_seconds = (p.timing.response_end_ms - p.timing.response_start_ms) / 1000.0;

    // Counts that depend on the candidate, so every family has something to fit.
    std::mt19937_64 rng(20261127);
    std::vector<protocols::Stimulus> shown;
    std::vector<std::uint32_t> counts;
    for (std::size_t t = 0; t < kTrials; ++t) {
      const std::size_t c = t * 7 % candidates.size();
      shown.push_back(candidates[c]);
      for (std::size_t u = 0; u < kUnits; ++u) {
        std::poisson_distribution<std::uint32_t> count(2.0 + static_cast<double>((c + u) % 5));
        counts.push_back(count(rng));
      }
    }

    for (const auto& spec : p.hypotheses) {
      SCOPED_TRACE(spec.name);
      std::unique_ptr<Hypothesis> h;
      ASSERT_NO_THROW(h = make_hypothesis(spec, space, kUnits, options));
      EXPECT_EQ(h->name(), spec.name);
      PredictionBatch batch;
      batch.resize(candidates.size(), kUnits);
      h->predict(candidates, batch);
      expect_sane(batch, "before any trial");
      h->update(shown, counts);
      h->predict(candidates, batch);
      expect_sane(batch, "after " + std::to_string(kTrials) + " trials");
    }
  }
}

}  // namespace
}  // namespace twinloop::twin

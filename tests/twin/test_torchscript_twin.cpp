// The torchscript family against modules written by examples/twins/export_torchscript_twin.py:
// loading, the shape checks that refuse a module not made for this protocol, dispersion and
// fine-tuning. Skipped (with the reason) where /usr/bin/python3 cannot import torch.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "twinloop/twin/hypothesis.hpp"

namespace twinloop::twin {
namespace {

namespace fs = std::filesystem;
using protocols::HypothesisFamily;
using protocols::HypothesisSpec;
using protocols::Stimulus;
using protocols::StimulusSpace;

constexpr std::size_t kUnits = 7;

StimulusSpace gratings() {
  StimulusSpace s;
  s.dimensions.push_back({"direction", "deg", {}});
  for (int i = 0; i < 16; ++i) s.dimensions[0].values.push_back(22.5 * i);
  s.dimensions.push_back({"contrast", "fraction", {0.25, 0.5, 1.0}});
  for (const double d : s.dimensions[0].values) {
    for (const double c : s.dimensions[1].values) {
      s.candidate_values.push_back(d);
      s.candidate_values.push_back(c);
    }
  }
  return s;
}

class TorchScriptTwin : public ::testing::Test {
 protected:
  void SetUp() override {
    // Asked once per run: importing torch takes seconds.
    static const bool has_torch =
        std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
    if (!has_torch) {
      GTEST_SKIP() << "/usr/bin/python3 cannot import torch (apt-get install python3-torch)";
    }
    dir_ = fs::temp_directory_path() /
           ("twinloop_test_torchscript_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  /// Runs the example exporter; returns the path of the module it wrote.
  std::string export_module(const std::string& file, std::size_t units, std::size_t dims,
                            const std::string& extra = "") {
    const auto path = (dir_ / file).string();
    const std::string command = "/usr/bin/python3 '" TWINLOOP_SOURCE_DIR
                                "/examples/twins/export_torchscript_twin.py' '" +
                                path + "' --units " + std::to_string(units) + " --dims " +
                                std::to_string(dims) + " --angle-dims 0 " + extra;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return path;
  }

  static HypothesisSpec script_spec(const std::string& path) {
    HypothesisSpec h;
    h.name = "mlp";
    h.family = HypothesisFamily::kTorchScript;
    h.path = path;
    return h;
  }

  std::vector<Stimulus> candidates() const {
    std::vector<Stimulus> all;
    for (std::size_t c = 0; c < space_.candidate_count(); ++c) all.push_back(space_.stimulus(c));
    return all;
  }

  static void expect_refused_naming(const HypothesisSpec& h, const StimulusSpace& space,
                                    std::size_t units, const std::string& needle) {
    try {
      (void)make_hypothesis(h, space, units, {});
      FAIL() << "module accepted: " << *h.path;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(*h.path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }

  fs::path dir_;
  StimulusSpace space_ = gratings();
};

TEST_F(TorchScriptTwin, LoadsAndPredictsFiniteNonNegativeCounts) {
  const auto path = export_module("twin.pt", kUnits, 2);
  auto h = make_hypothesis(script_spec(path), space_, kUnits, {});
  EXPECT_EQ(h->family(), "torchscript");
  EXPECT_EQ(h->unit_count(), kUnits);
  const auto all = candidates();
  PredictionBatch b;
  b.resize(all.size(), kUnits);
  h->predict(all, b);
  ASSERT_EQ(b.mean.size(), all.size() * kUnits);
  double spread = 0;
  for (std::size_t i = 0; i < b.mean.size(); ++i) {
    EXPECT_TRUE(std::isfinite(b.mean[i]));
    EXPECT_GE(b.mean[i], 0.0);
    EXPECT_EQ(b.dispersion[i], 0.0);  // Poisson until a fit says otherwise
    spread = std::max(spread, std::abs(b.mean[i] - b.mean[0]));
  }
  EXPECT_GT(spread, 0.0);  // the network depends on the stimulus

  // Deterministic, and a hand-built stimulus (computed path) agrees with the cache.
  PredictionBatch again;
  again.resize(all.size(), kUnits);
  h->predict(all, again);
  EXPECT_EQ(b.mean, again.mean);
  Stimulus hand = all[5];
  hand.candidate = 0;
  PredictionBatch one;
  one.resize(1, kUnits);
  h->predict(std::span<const Stimulus>(&hand, 1), one);
  for (std::size_t u = 0; u < kUnits; ++u) EXPECT_NEAR(one.mean[u], b.at(5, u).mean, 1e-6);
}

TEST_F(TorchScriptTwin, TupleModuleGivesItsOwnDispersion) {
  const auto path = export_module("nb.pt", kUnits, 2, "--with-dispersion");
  auto h = make_hypothesis(script_spec(path), space_, kUnits, {});
  const auto all = candidates();
  PredictionBatch b;
  b.resize(all.size(), kUnits);
  h->predict(all, b);
  for (const double d : b.dispersion) EXPECT_NEAR(d, std::exp(-2.0), 1e-6);
}

TEST_F(TorchScriptTwin, RefusesAModuleOfTheWrongShape) {
  // Made for 5 units, the protocol records 7.
  expect_refused_naming(script_spec(export_module("five_units.pt", 5, 2)), space_, kUnits,
                        "[48 x 5]");
  // Made for 3 stimulus dimensions, the space has 2: forward itself fails.
  expect_refused_naming(script_spec(export_module("three_dims.pt", kUnits, 3)), space_, kUnits,
                        "float32");
  // Not a TorchScript file at all.
  const auto junk = (dir_ / "junk.pt").string();
  std::ofstream(junk) << "not a zip archive";
  expect_refused_naming(script_spec(junk), space_, kUnits, "cannot load");
}

TEST_F(TorchScriptTwin, UpdateFitsDispersionAndFineTuningRaisesTheLikelihood) {
  const auto path = export_module("tune.pt", kUnits, 2);
  // Data from a tuned population the random network knows nothing about.
  std::mt19937_64 rng(5);
  std::vector<Stimulus> stimuli;
  std::vector<std::uint32_t> counts;
  const auto all = candidates();
  for (int r = 0; r < 8; ++r) {
    for (const auto& s : all) {
      stimuli.push_back(s);
      for (std::size_t u = 0; u < kUnits; ++u) {
        const double d = (s.value(0) - 50.0 * static_cast<double>(u)) * 3.14159265 / 180.0;
        std::poisson_distribution<std::uint32_t> p(1.0 + 12.0 * s.value(1) *
                                                             std::exp(2.0 * (std::cos(d) - 1)));
        counts.push_back(p(rng));
      }
    }
  }
  auto ll = [&](Hypothesis& h) {
    PredictionBatch b;
    b.resize(stimuli.size(), kUnits);
    h.predict(stimuli, b);
    double total = 0;
    for (std::size_t i = 0; i < stimuli.size(); ++i) {
      for (std::size_t u = 0; u < kUnits; ++u) {
        total += log_probability(b.at(i, u), counts[i * kUnits + u]);
      }
    }
    return total;
  };

  auto fixed = make_hypothesis(script_spec(path), space_, kUnits, {});
  const double before = ll(*fixed);
  fixed->update(stimuli, counts);  // weights stay; a dispersion absorbs the misfit
  const double with_dispersion = ll(*fixed);
  EXPECT_GT(with_dispersion, before);

  auto tuned_spec = script_spec(path);
  tuned_spec.params = {{"fine_tune", 1.0}, {"max_iterations", 300}, {"poisson", 1.0}};
  auto tuned = make_hypothesis(tuned_spec, space_, kUnits, {});
  tuned->update(stimuli, counts);
  EXPECT_GT(ll(*tuned), before + 0.1 * std::abs(before));
  // The file is not rewritten: a fresh load predicts as before.
  auto reloaded = make_hypothesis(script_spec(path), space_, kUnits, {});
  EXPECT_DOUBLE_EQ(ll(*reloaded), before);
}

}  // namespace
}  // namespace twinloop::twin

// Loader: valid protocols parse to the right values; malformed ones are refused with the exact
// location, field path and a useful message; nothing throws.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "protocol_text.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::protocols {
namespace {

using testing::kValidProtocol;
using testing::with_edit;

TEST(ProtocolLoader, ValidProtocolParsesEverySection) {
  const auto result = load_protocol_text(kValidProtocol, "p.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  ASSERT_TRUE(result.diagnostics.empty());
  const Protocol& p = *result.protocol;
  EXPECT_EQ(p.format_version, 1);
  EXPECT_EQ(p.name, "test");
  EXPECT_FALSE(p.description.has_value());
  EXPECT_EQ(p.subject.id, "M1");
  EXPECT_EQ(p.subject.species, "Mus musculus");
  ASSERT_EQ(p.probes.size(), 1u);
  EXPECT_EQ(p.probes[0].type, ProbeType::kNP1000);
  EXPECT_EQ(p.probes[0].channels, 384);                 // default
  EXPECT_DOUBLE_EQ(p.probes[0].sample_rate_hz, 30000);  // default
  EXPECT_EQ(p.probes[0].source, ProbeSourceKind::kSim);
  EXPECT_FALSE(p.probes[0].path.has_value());
  EXPECT_EQ(p.stimulus.kind, StimulusKind::kGrating);
  EXPECT_DOUBLE_EQ(p.timing.response_end_ms, 1050);
  EXPECT_DOUBLE_EQ(p.timing.onset_interval_ms(), 3000);
  EXPECT_EQ(p.safety.amplitude_dimension, "contrast");
  EXPECT_DOUBLE_EQ(p.safety.max_duty_cycle, 0.5);
  EXPECT_FALSE(p.safety.duration_dimension.has_value());
  EXPECT_EQ(p.designer.strategy, DesignerStrategy::kDiscriminate);
  EXPECT_EQ(p.designer.seed, 3u);
  EXPECT_DOUBLE_EQ(p.designer.validation_fraction, 0.1);  // default
  EXPECT_FALSE(p.designer.candidates_per_decision.has_value());
  EXPECT_EQ(p.designer.criticism_trials, DesignerDefaults{}.criticism_trials);  // default
  EXPECT_EQ(p.designer.criticism_power, DesignerDefaults{}.criticism_power);
  EXPECT_DOUBLE_EQ(p.stop.posterior_threshold, 0.95);
  EXPECT_EQ(p.stop.max_trials, 100u);
  ASSERT_EQ(p.hypotheses.size(), 2u);
  EXPECT_EQ(p.hypotheses[0].family, HypothesisFamily::kDirectionTuning);
  EXPECT_EQ(p.hypotheses[1].name, "flat");
  EXPECT_EQ(p.hypotheses[1].family, HypothesisFamily::kNull);  // `null` read as the family name
  EXPECT_EQ(p.source_name, "p.yaml");
  EXPECT_EQ(p.source_text, kValidProtocol);
}

TEST(ProtocolLoader, OrientationTuningIsAFamily) {
  const auto result = load_protocol_text(
      with_edit("    family: null\n", "    family: orientation_tuning\n    params: {kappa: 3}\n"),
      "p.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const HypothesisSpec& h = result.protocol->hypotheses[1];
  EXPECT_EQ(h.family, HypothesisFamily::kOrientationTuning);
  EXPECT_EQ(to_string(h.family), "orientation_tuning");
  EXPECT_EQ(h.params.at("kappa"), 3.0);
  // The families that existed before keep their values (they are stored by index).
  EXPECT_EQ(static_cast<int>(HypothesisFamily::kTorchScript), 3);
}

// Criticism trials by default, with a power target; a protocol may take all of them (power 1) or
// none (0 trials, where a default target is no error); a record's own defaults load its protocol
// as it ran.
TEST(ProtocolLoader, CriticismSettingsTakeTheDefaultsTheyAreGiven) {
  const auto load = [](std::string_view text, const DesignerDefaults& defaults = {}) {
    auto result = load_protocol_text(text, "p.yaml", defaults);
    EXPECT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
    return result.ok() ? result.protocol->designer : DesignerSettings{};
  };
  EXPECT_EQ(DesignerDefaults{}.criticism_trials, 20u);
  EXPECT_EQ(DesignerDefaults{}.criticism_power, 0.8);

  const DesignerSettings trials_only = load(with_edit("  seed: 3", "  criticism_trials: 5"));
  EXPECT_EQ(trials_only.criticism_trials, 5u);
  EXPECT_EQ(trials_only.criticism_power, 0.8);  // the default target applies to them

  const DesignerSettings all = load(with_edit("  seed: 3", "  criticism_power: 1"));
  EXPECT_EQ(all.criticism_trials, 20u);
  EXPECT_FALSE(all.criticism_power.has_value());

  const DesignerSettings off = load(with_edit("  seed: 3", "  criticism_trials: 0"));
  EXPECT_EQ(off.criticism_trials, 0u);
  EXPECT_FALSE(off.criticism_power.has_value());

  const DesignerSettings old = load(kValidProtocol, kDefaultsBeforeCriticism);
  EXPECT_EQ(old.criticism_trials, 0u);
  EXPECT_FALSE(old.criticism_power.has_value());
  const DesignerSettings old_explicit =
      load(with_edit("  seed: 3", "  criticism_trials: 7"), kDefaultsBeforeCriticism);
  EXPECT_EQ(old_explicit.criticism_trials, 7u);
  EXPECT_FALSE(old_explicit.criticism_power.has_value());  // no target then
}

TEST(ProtocolLoader, GridAndValuesExpandToCartesianProduct) {
  const auto result = load_protocol_text(kValidProtocol, "p.yaml");
  ASSERT_TRUE(result.ok());
  const StimulusSpace& space = result.protocol->stimulus;
  ASSERT_EQ(space.dimension_count(), 2u);
  const auto* direction = space.find_dimension("direction");
  ASSERT_NE(direction, nullptr);
  EXPECT_EQ(direction->unit, "deg");
  ASSERT_EQ(direction->values.size(), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(direction->values[i], 45.0 * i);
  EXPECT_FALSE(space.explicit_candidates);
  ASSERT_EQ(space.candidate_count(), 24u);
  // First dimension varies slowest.
  const Stimulus s3 = space.stimulus(3);
  EXPECT_EQ(s3.candidate, 3u);
  EXPECT_EQ(s3.dimension_count, 2);
  EXPECT_DOUBLE_EQ(s3.value(0), 45.0);
  EXPECT_DOUBLE_EQ(s3.value(1), 0.25);
  const Stimulus last = space.stimulus(23);
  EXPECT_DOUBLE_EQ(last.value(0), 315.0);
  EXPECT_DOUBLE_EQ(last.value(1), 1.0);
}

TEST(ProtocolLoader, GridWithCountIsInclusiveOfBothEnds) {
  const auto result = load_protocol_text(
      with_edit("grid: {start: 0, stop: 315, step: 45}", "grid: {start: 10, stop: 20, count: 5}"),
      "p.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& values = result.protocol->stimulus.dimensions[0].values;
  ASSERT_EQ(values.size(), 5u);
  EXPECT_DOUBLE_EQ(values[0], 10.0);
  EXPECT_DOUBLE_EQ(values[1], 12.5);
  EXPECT_DOUBLE_EQ(values[4], 20.0);
  EXPECT_EQ(result.protocol->stimulus.candidate_count(), 15u);
}

TEST(ProtocolLoader, ExplicitCandidatesReplaceTheProduct) {
  const auto result = load_protocol_text(
      with_edit(
          "      values: [0.25, 0.5, 1.0]\n",
          "      values: [0.25, 0.5, 1.0]\n  candidates: [[0, 0.5], [90, 1.0], [315, 0.25]]\n"),
      "p.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& space = result.protocol->stimulus;
  EXPECT_TRUE(space.explicit_candidates);
  ASSERT_EQ(space.candidate_count(), 3u);
  EXPECT_DOUBLE_EQ(space.stimulus(1).value(0), 90.0);
  EXPECT_DOUBLE_EQ(space.stimulus(1).value(1), 1.0);
  EXPECT_DOUBLE_EQ(space.candidate_value(2, 1), 0.25);
}

TEST(ProtocolLoader, OptionalFieldsAreRead) {
  std::string text = with_edit("    source: sim\n",
                               "    source: spikeglx\n    path: /data/run1_g0_t0.imec0.ap.bin\n");
  text += "description: hello\n";
  text.replace(text.find("  seed: 3\n"), 10,
               "  candidates_per_decision: 12\n  criticism_trials: 20\n  criticism_power: 0.8\n");
  text.replace(text.find("  max_trials: 100\n"), 18, "  max_trials: 100\n  max_minutes: 30\n");
  const auto result = load_protocol_text(text, "p.yaml");
  ASSERT_TRUE(result.ok()) << format_diagnostics(result.diagnostics);
  const auto& p = *result.protocol;
  EXPECT_EQ(p.probes[0].source, ProbeSourceKind::kSpikeGlx);
  EXPECT_EQ(p.probes[0].path, "/data/run1_g0_t0.imec0.ap.bin");
  EXPECT_EQ(p.description, "hello");
  EXPECT_EQ(p.designer.candidates_per_decision, 12u);
  EXPECT_EQ(p.designer.criticism_trials, 20u);
  EXPECT_EQ(p.designer.criticism_power, 0.8);
  EXPECT_EQ(p.stop.max_minutes, 30.0);
  EXPECT_EQ(p.designer.seed, 1u);  // default when absent
}

// One malformed variant of kValidProtocol and the diagnostic it must produce.
struct BadCase {
  const char* label;
  const char* from;
  const char* to;
  int line;
  int column;
  const char* path;
  const char* in_message;  // must appear in the formatted diagnostic
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << c.label;
}

class MalformedProtocol : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedProtocol, IsRefusedWithExactLocation) {
  const BadCase& c = GetParam();
  const auto result = load_protocol_text(with_edit(c.from, c.to), "p.yaml");
  ASSERT_FALSE(result.ok());
  ASSERT_FALSE(result.diagnostics.empty());
  const auto all = format_diagnostics(result.diagnostics);
  const auto it = std::find_if(result.diagnostics.begin(), result.diagnostics.end(),
                               [&](const Diagnostic& d) { return d.field_path == c.path; });
  ASSERT_NE(it, result.diagnostics.end()) << "no diagnostic for " << c.path << " in:\n" << all;
  EXPECT_EQ(it->file, "p.yaml");
  EXPECT_EQ(it->line, c.line) << all;
  EXPECT_EQ(it->column, c.column) << all;
  const std::string line = format_diagnostic(*it);
  EXPECT_NE(line.find(c.in_message), std::string::npos) << line;
  EXPECT_EQ(line.rfind("p.yaml:" + std::to_string(c.line) + ":" + std::to_string(c.column) +
                           ": error: " + c.path + ": found ",
                       0),
            0u)
      << line;
}

const BadCase kBadCases[] = {
    {"TypoKeyIsUnknown", "  max_trials: 100", "  max_trails: 100", 35, 3, "stop.max_trails",
     "found unknown key \"max_trails\", expected one of posterior_threshold, max_trials, "
     "max_minutes (did you mean \"max_trials\"?)"},
    {"TypoKeyLeavesRequiredMissing", "  max_trials: 100", "  max_trails: 100", 34, 3,
     "stop.max_trials", "found nothing (the key is missing), expected an integer >= 1 (required)"},
    {"EmptyValue", "  max_trials: 100", "  max_trials:", 35, 3, "stop.max_trials",
     "found nothing, expected an integer in [1, 10000000]"},
    {"MaxTrialsZero", "  max_trials: 100", "  max_trials: 0", 35, 15, "stop.max_trials",
     "found 0, expected an integer in [1, 10000000]"},
    {"MaxTrialsFraction", "  max_trials: 100", "  max_trials: 2.5", 35, 15, "stop.max_trials",
     "found 2.5, expected an integer"},
    {"AmplitudeAboveLimit", "values: [0.25, 0.5, 1.0]", "values: [0.25, 0.5, 1.5]", 18, 27,
     "stimulus.space.contrast.values[2]",
     "found an amplitude of 1.5 fraction, expected |amplitude| <= 1 fraction"},
    {"ValueNotANumber", "values: [0.25, 0.5, 1.0]", "values: [0.25, 0.5, abc]", 18, 27,
     "stimulus.space.contrast.values[2]", "found abc, expected a number"},
    {"DuplicateValue", "values: [0.25, 0.5, 1.0]", "values: [0.25, 0.5, 0.5]", 18, 27,
     "stimulus.space.contrast.values[2]", "found the duplicate value 0.5"},
    {"EmptyValues", "values: [0.25, 0.5, 1.0]", "values: []", 18, 15,
     "stimulus.space.contrast.values", "found an empty list, expected at least one value"},
    {"ValuesIsAMap", "values: [0.25, 0.5, 1.0]", "values: {a: 1}", 18, 15,
     "stimulus.space.contrast.values", "found a map, expected a list of numbers"},
    {"GridStepZero", "step: 45}", "step: 0}", 15, 41, "stimulus.space.direction.grid.step",
     "found 0, expected a number > 0"},
    {"GridStopBelowStart", "stop: 315", "stop: -45", 15, 30, "stimulus.space.direction.grid.stop",
     "found -45, expected a number >= start (0)"},
    {"GridWithoutStep", ", step: 45}", "}", 15, 13, "stimulus.space.direction.grid.step",
     "step (a number > 0) or count (an integer >= 1) (required)"},
    {"DuplicateDimension", "    contrast:", "    direction:", 16, 5, "stimulus.space.direction",
     "found duplicate key \"direction\", expected each key once (first given at line 13)"},
    {"UnknownStimulusKind", "kind: grating", "kind: gratings", 11, 9, "stimulus.kind",
     "found gratings, expected one of grating, optogenetic, electrical"},
    {"UnknownProbeType", "type: NP1000", "type: NP3000", 8, 11, "probes[0].type",
     "expected one of NP1000, NP1010, NP2000, NP2010, NP2013, sim"},
    {"FileSourceWithoutPath", "    source: sim", "    source: spikeglx", 7, 5, "probes[0].path",
     "required for source: spikeglx"},
    {"NegativeBaseline", "baseline_ms: 500", "baseline_ms: -5", 20, 16, "timing.baseline_ms",
     "found -5, expected a number in [0, 3600000]"},
    {"QuotedNumber", "stimulus_ms: 1000", "stimulus_ms: \"1000\"", 21, 16, "timing.stimulus_ms",
     "found the quoted string \"1000\", expected a number in (0, 3600000]"},
    {"WindowEndsBeforeStart", "response_end_ms: 1050", "response_end_ms: 40", 23, 20,
     "timing.response_end_ms", "expected a number > response_start_ms (50)"},
    {"WindowPastNextTrial", "response_end_ms: 1050", "response_end_ms: 5000", 23, 20,
     "timing.response_end_ms", "expected a number <= stimulus_ms + inter_trial_ms (2500)"},
    {"WindowStartsBeforeBaseline", "response_start_ms: 50", "response_start_ms: -600", 22, 22,
     "timing.response_start_ms", "expected a number >= -baseline_ms (-500)"},
    {"DutyCycleTooHigh", "max_duty_cycle: 0.5", "max_duty_cycle: 0.2", 20, 3, "timing",
     "found a duty cycle of 0.3333 (1000 ms on per 3000 ms between onsets), expected at most 0.2 "
     "(safety.max_duty_cycle)"},
    {"OnsetsTooClose", "min_interval_ms: 2000", "min_interval_ms: 5000", 20, 3, "timing",
     "found an onset interval of 3000 ms"},
    {"DutyCycleOutOfRange", "max_duty_cycle: 0.5", "max_duty_cycle: 1.5", 28, 19,
     "safety.max_duty_cycle", "found 1.5, expected a number in (0, 1]"},
    {"AmplitudeDimensionUnknown", "amplitude_dimension: contrast", "amplitude_dimension: contrats",
     26, 24, "safety.amplitude_dimension", "(one of direction, contrast)"},
    {"UnknownStrategy", "strategy: discriminate", "strategy: greedy", 31, 13, "designer.strategy",
     "found greedy, expected one of random, discriminate"},
    {"ThresholdTooLow", "posterior_threshold: 0.95", "posterior_threshold: 0.4", 34, 24,
     "stop.posterior_threshold", "found 0.4, expected a number in (0.5, 1)"},
    {"DuplicateHypothesis", "  - name: flat", "  - name: tuned", 39, 11, "hypotheses[1].name",
     "found duplicate hypothesis name \"tuned\""},
    {"TorchScriptWithoutPath", "family: null", "family: torchscript", 39, 5, "hypotheses[1].path",
     "required for family: torchscript"},
    {"UnknownFamily", "family: null", "family: gaussian", 40, 13, "hypotheses[1].family",
     "expected one of direction_tuning, lnp, null, torchscript, orientation_tuning"},
    {"OrientationFamilyMisspelt", "family: null", "family: orientation", 40, 13,
     "hypotheses[1].family", "found orientation, expected one of"},
    {"OrientationFamilyWithPath", "family: null", "family: orientation_tuning\n    path: m.pt", 41,
     11, "hypotheses[1].path", "expected no path for family: orientation_tuning"},
    {"WrongFormatVersion", "twinloop_protocol: 1", "twinloop_protocol: 2", 1, 20,
     "twinloop_protocol", "found 2, expected 1 (the only protocol format version"},
    {"NameIsAList", "name: test", "name: [a, b]", 2, 7, "name",
     "found a list, expected a non-empty string"},
    {"MissingSpecies", "  species: Mus musculus", "  specie: Mus musculus", 4, 3, "subject.species",
     "found nothing (the key is missing)"},
    {"ChannelsOutOfRange", "    source: sim\n", "    source: sim\n    channels: 500\n", 10, 15,
     "probes[0].channels", "found 500, expected an integer in [1, 384]"},
    {"CandidateWrongArity", "      values: [0.25, 0.5, 1.0]\n",
     "      values: [0.25, 0.5, 1.0]\n  candidates: [[0, 0.5], [45]]\n", 19, 26,
     "stimulus.candidates[1]",
     "found 1 values, expected 2 values (one per dimension: direction, contrast)"},
    {"CandidateValueNotDeclared", "      values: [0.25, 0.5, 1.0]\n",
     "      values: [0.25, 0.5, 1.0]\n  candidates: [[0, 0.5], [10, 0.5]]\n", 19, 27,
     "stimulus.candidates[1][0]", "found 10, expected one of the values declared for dimension"},
    {"ParamNotANumber", "    family: direction_tuning\n",
     "    family: direction_tuning\n    params: {kappa: high}\n", 39, 21,
     "hypotheses[0].params.kappa", "found high, expected a number"},
    {"TooFewCandidatesPerDecision", "  seed: 3", "  candidates_per_decision: 100", 32, 28,
     "designer.candidates_per_decision",
     "found 100, expected at most the number of candidates (24)"},
    {"NegativeCriticismTrials", "  seed: 3", "  criticism_trials: -2", 32, 21,
     "designer.criticism_trials", "found -2, expected an integer in [0,"},
    {"CriticismPowerAboveOne", "  seed: 3", "  criticism_trials: 5\n  criticism_power: 1.5", 33, 20,
     "designer.criticism_power", "found 1.5, expected a number in (0, 1]"},
    {"CriticismPowerWithoutTrials", "  seed: 3", "  criticism_trials: 0\n  criticism_power: 0.8",
     33, 20, "designer.criticism_power",
     "found a power target with criticism_trials 0, expected "
     "criticism_trials > 0"},
    {"CriticismPowerBesideBadTrials", "  seed: 3", "  criticism_trials: -1\n  criticism_power: 0.8",
     32, 21, "designer.criticism_trials", "found -1, expected an integer in [0,"},
    {"SimProbeWithPath", "    source: sim\n", "    source: sim\n    path: /x.bin\n", 10, 11,
     "probes[0].path", "expected no path for source: sim"},
    {"BadDimensionName", "    contrast:", "    2contrast:", 16, 5, "stimulus.space.2contrast",
     "found the dimension name \"2contrast\""},
};

INSTANTIATE_TEST_SUITE_P(Cases, MalformedProtocol, ::testing::ValuesIn(kBadCases),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.label);
                         });

// A refused criticism_trials is one problem, not two: criticism_power beside it is not also
// blamed for a budget of 0.
TEST(ProtocolLoader, ABadCriticismBudgetIsReportedOnce) {
  const auto result = load_protocol_text(
      with_edit("  seed: 3", "  criticism_trials: -1\n  criticism_power: 0.8"), "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.diagnostics[0].field_path, "designer.criticism_trials");
}

TEST(ProtocolLoader, CollectsEveryErrorSortedByPosition) {
  std::string text = with_edit("kind: grating", "kind: gratings");
  text.replace(text.find("max_trials: 100"), 15, "max_trials: -1");
  text.replace(text.find("strategy: discriminate"), 22, "strategy: greedy");
  const auto result = load_protocol_text(text, "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 3u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.diagnostics[0].line, 11);
  EXPECT_EQ(result.diagnostics[1].line, 31);
  EXPECT_EQ(result.diagnostics[2].line, 35);
}

TEST(ProtocolLoader, DuplicateRootKeyIsRefused) {
  const auto result = load_protocol_text(std::string(kValidProtocol) + "name: again\n", "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(format_diagnostic(result.diagnostics[0]),
            "p.yaml:41:1: error: name: found duplicate key \"name\", expected each key once "
            "(first given at line 2)");
}

TEST(ProtocolLoader, SyntaxErrorCarriesTheYamlMark) {
  const auto result = load_protocol_text(
      with_edit("values: [0.25, 0.5, 1.0]", "values: [0.25, 0.5, 1.0"), "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u);
  const auto& d = result.diagnostics[0];
  EXPECT_GT(d.line, 0);
  EXPECT_GT(d.column, 0);
  EXPECT_TRUE(d.field_path.empty());
  EXPECT_NE(d.found.find("YAML syntax error"), std::string::npos) << d.found;
  EXPECT_EQ(d.expected, "well-formed YAML");
}

TEST(ProtocolLoader, EmptyAndNonMapDocumentsAreRefused) {
  for (const char* text : {"", "# only a comment\n", "- 1\n- 2\n", "just text\n"}) {
    const auto result = load_protocol_text(text, "p.yaml");
    ASSERT_FALSE(result.ok()) << text;
    ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
    EXPECT_EQ(result.diagnostics[0].line, 1) << text;
  }
}

TEST(ProtocolLoader, SecondDocumentIsRefused) {
  const auto result =
      load_protocol_text(std::string(kValidProtocol) + "---\nname: other\n", "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.diagnostics[0].found, "a second YAML document");
  EXPECT_EQ(result.diagnostics[0].line, 42);
}

TEST(ProtocolLoader, DiscriminateNeedsTwoHypotheses) {
  const auto result =
      load_protocol_text(with_edit("  - name: flat\n    family: null\n", ""), "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.diagnostics[0].field_path, "hypotheses");
  EXPECT_EQ(result.diagnostics[0].line, 37);
  EXPECT_EQ(result.diagnostics[0].column, 3);
}

TEST(ProtocolLoader, TooManyCandidatesIsRefusedWithoutExpanding) {
  const auto result = load_protocol_text(with_edit("step: 45", "step: 0.001"),
                                         "p.yaml");  // 315001 x 3 candidates
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.diagnostics[0].field_path, "stimulus.space.direction.grid.step");
}

TEST(ProtocolLoader, OptogeneticPulseLongerThanStimulusIsRefused) {
  std::string text =
      with_edit("    contrast:\n      unit: fraction\n", "    pulse:\n      unit: ms\n");
  text.replace(text.find("amplitude_dimension: contrast"), 29, "amplitude_dimension: direction");
  text.replace(text.find("max_amplitude: 1.0"), 18,
               "max_amplitude: 400\n  duration_dimension: pulse");
  text.replace(text.find("[0.25, 0.5, 1.0]"), 16, "[10, 2000]");
  const auto result = load_protocol_text(text, "p.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u) << format_diagnostics(result.diagnostics);
  EXPECT_EQ(result.diagnostics[0].field_path, "stimulus.space.pulse.values[1]");
  EXPECT_EQ(result.diagnostics[0].found, "a duration of 2000 ms");
}

TEST(ProtocolLoader, EveryTruncationIsHandledWithoutThrowing) {
  const std::string text(kValidProtocol);
  for (std::size_t length = 0; length < text.size(); ++length) {
    ProtocolLoadResult result;
    ASSERT_NO_THROW(result = load_protocol_text(text.substr(0, length), "p.yaml")) << length;
    EXPECT_NE(result.ok(), !result.diagnostics.empty()) << length;
  }
}

TEST(ProtocolLoader, OversizedTextIsRefused) {
  const std::string text(kMaxProtocolBytes + 1, '#');
  const auto result = load_protocol_text(text, "big.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].line, 0);
}

TEST(ProtocolLoaderFile, MissingFileIsADiagnostic) {
  const auto result = load_protocol_file("/nonexistent/dir/protocol.yaml");
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(format_diagnostic(result.diagnostics[0]),
            "/nonexistent/dir/protocol.yaml: error: found no such file, expected a readable "
            "protocol file");
}

TEST(ProtocolLoaderFile, DirectoryIsADiagnostic) {
  const auto result = load_protocol_file(std::filesystem::temp_directory_path());
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].found, "something that is not a regular file");
}

TEST(ProtocolLoaderFile, ReadsAFileAndNamesItInDiagnostics) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("twinloop_protocols_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto good = dir / "good.yaml";
  const auto bad = dir / "bad.yaml";
  std::ofstream(good) << kValidProtocol;
  std::ofstream(bad) << with_edit("kind: grating", "kind: plaid");
  const auto ok = load_protocol_file(good);
  ASSERT_TRUE(ok.ok()) << format_diagnostics(ok.diagnostics);
  EXPECT_EQ(ok.protocol->source_text, kValidProtocol);
  EXPECT_EQ(ok.protocol->source_name, good.string());
  const auto refused = load_protocol_file(bad);
  ASSERT_EQ(refused.diagnostics.size(), 1u);
  EXPECT_EQ(refused.diagnostics[0].file, bad.string());
  EXPECT_EQ(refused.diagnostics[0].line, 11);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace twinloop::protocols

// The protocol schema: walks the YAML tree section by section, fills a Protocol and reports
// every problem, then runs the cross-field checks (candidate safety, duty cycle, onset interval)
// on the sections that parsed cleanly.
#include "twinloop/protocols/loader.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <new>

#include "yaml_checker.hpp"

namespace twinloop::protocols {
namespace {

using internal::Checker;
using internal::Field;
using internal::format_number;
using internal::Location;
using internal::MapView;
using internal::NumberRange;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMaxMs = 3'600'000.0;  // one hour: no single phase of a trial is longer
constexpr std::int64_t kMaxTrials = 10'000'000;

using Keys = std::span<const std::string_view>;

constexpr std::array<std::string_view, 12> kRootKeys = {
    "twinloop_protocol", "name",      "description", "subject",  "probes",
    "stimulus",          "timing",    "safety",      "designer", "stop",
    "hypotheses",        "record_raw"};
constexpr std::array<std::string_view, 2> kBooleans = {"false", "true"};
constexpr std::array<std::string_view, 3> kSubjectKeys = {"id", "species", "notes"};
constexpr std::array<std::string_view, 6> kProbeKeys = {"name",           "type",   "channels",
                                                        "sample_rate_hz", "source", "path"};
constexpr std::array<std::string_view, 6> kProbeTypes = {"NP1000", "NP1010", "NP2000",
                                                         "NP2010", "NP2013", "sim"};
constexpr std::array<std::string_view, 3> kSourceKinds = {"sim", "spikeglx", "openephys"};
constexpr std::array<std::string_view, 3> kStimulusKeys = {"kind", "space", "candidates"};
constexpr std::array<std::string_view, 3> kStimulusKinds = {"grating", "optogenetic", "electrical"};
constexpr std::array<std::string_view, 3> kDimensionKeys = {"unit", "values", "grid"};
constexpr std::array<std::string_view, 4> kGridKeys = {"start", "stop", "step", "count"};
constexpr std::array<std::string_view, 5> kTimingKeys = {
    "baseline_ms", "stimulus_ms", "response_start_ms", "response_end_ms", "inter_trial_ms"};
constexpr std::array<std::string_view, 5> kSafetyKeys = {"amplitude_dimension", "max_amplitude",
                                                         "duration_dimension", "max_duty_cycle",
                                                         "min_interval_ms"};
constexpr std::array<std::string_view, 7> kDesignerKeys = {
    "strategy",       "validation_fraction",     "decision_deadline_ms",
    "seed",           "candidates_per_decision", "criticism_trials",
    "criticism_power"};
constexpr std::array<std::string_view, 2> kStrategies = {"random", "discriminate"};
constexpr std::array<std::string_view, 3> kStopKeys = {"posterior_threshold", "max_trials",
                                                       "max_minutes"};
constexpr std::array<std::string_view, 4> kHypothesisKeys = {"name", "family", "path", "params"};
// Indexed by HypothesisFamily: same order.
constexpr std::array<std::string_view, 5> kFamilies = {"direction_tuning", "lnp", "null",
                                                       "torchscript", "orientation_tuning"};
constexpr std::array<std::string_view, 0> kNoKeys = {};

/// Where one value of the stimulus space came from, to point safety errors at it.
struct ValueOrigin {
  std::string path;
  Location where;
};

/// Parsing state of one dimension beyond the public StimulusDimension.
struct DimensionInfo {
  std::vector<ValueOrigin> origins;  // one per value
  bool ok = false;
};

bool same_value(double a, double b) {
  return std::fabs(a - b) <= 1e-9 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

std::string join_names(const std::vector<StimulusDimension>& dimensions) {
  std::string out;
  for (const auto& dimension : dimensions) {
    if (!out.empty()) out += ", ";
    out += dimension.name;
  }
  return out;
}

class ProtocolReader {
 public:
  ProtocolReader(Checker& checker, Protocol& protocol, const DesignerDefaults& defaults)
      : c_(checker), p_(protocol), defaults_(defaults) {}

  void read(const Field& root) {
    MapView map(c_, root, kRootKeys, "a map of protocol sections");
    if (!map.is_map()) return;
    if (auto f = map.require("twinloop_protocol", "the format version 1")) read_version(*f);
    if (auto f = map.require("name", "a non-empty string")) {
      if (auto v = c_.string(*f)) p_.name = *v;
    }
    if (auto f = map.get("description")) p_.description = c_.string(*f);
    if (auto f = map.require("subject", "a map with id and species")) read_subject(*f);
    if (auto f = map.require("probes", "a list of probes")) read_probes(*f);
    if (auto f = map.require("stimulus", "a map with kind and space")) read_stimulus(*f);
    if (auto f = map.require("timing", "a map of trial timing")) read_timing(*f);
    if (auto f = map.require("safety", "a map of stimulus safety limits")) read_safety(*f);
    if (auto f = map.require("designer", "a map with strategy")) read_designer(*f);
    if (auto f = map.require("stop", "a map with posterior_threshold and max_trials")) {
      read_stop(*f);
    }
    if (auto f = map.require("hypotheses", "a list of hypotheses")) read_hypotheses(*f);
    if (auto f = map.get("record_raw")) {
      if (auto v = c_.choice(*f, kBooleans)) p_.record_raw = *v == 1;
    }
    check_safety();
    check_designer();
  }

 private:
  void read_version(const Field& f) {
    const auto text = c_.scalar_text(f.node);
    if (!f.node.IsScalar() || text != "1") {
      c_.error(f.where, f.path, c_.describe(f.node),
               "1 (the only protocol format version this build reads)");
    }
  }

  void read_subject(const Field& f) {
    MapView map(c_, f, kSubjectKeys, "a map with id and species");
    if (auto v = map.require("id", "a non-empty string")) {
      if (auto s = c_.string(*v)) p_.subject.id = *s;
    }
    if (auto v = map.require("species", "a non-empty string")) {
      if (auto s = c_.string(*v)) p_.subject.species = *s;
    }
    if (auto v = map.get("notes")) p_.subject.notes = c_.string(*v);
  }

  void read_probes(const Field& f) {
    auto items = c_.list(f, "a list of probes");
    if (!items) return;
    if (items->empty()) {
      c_.error(f.where, f.path, "an empty list", "at least one probe");
      return;
    }
    for (const auto& item : *items) {
      MapView map(c_, item, kProbeKeys, "a map describing one probe");
      if (!map.is_map()) continue;
      ProbeSpec probe;
      if (auto v = map.require("name", "a non-empty string")) {
        if (auto s = c_.string(*v)) {
          const bool duplicate = std::any_of(p_.probes.begin(), p_.probes.end(),
                                             [&](const ProbeSpec& p) { return p.name == *s; });
          if (duplicate) {
            c_.error(v->where, v->path, "duplicate probe name \"" + *s + "\"",
                     "a name no other probe uses");
          }
          probe.name = *s;
        }
      }
      std::optional<std::size_t> type;
      if (auto v = map.require("type", "a probe type")) {
        type = c_.choice(*v, kProbeTypes);
        if (type) probe.type = static_cast<ProbeType>(*type);
      }
      if (auto v = map.get("channels")) {
        if (auto n = c_.integer(*v, 1, kMaxProbeChannels)) probe.channels = static_cast<int>(*n);
      }
      if (auto v = map.get("sample_rate_hz")) {
        if (auto n = c_.number(*v, NumberRange{1000.0, 200000.0})) probe.sample_rate_hz = *n;
      }
      std::optional<std::size_t> source;
      std::optional<Field> source_field;
      if ((source_field = map.require("source", "one of sim, spikeglx, openephys"))) {
        source = c_.choice(*source_field, kSourceKinds);
        if (source) probe.source = static_cast<ProbeSourceKind>(*source);
      }
      const auto path = map.get("path");
      if (source && probe.source != ProbeSourceKind::kSim) {
        if (!path) {
          c_.error(
              item.where, internal::join_path(item.path, "path"), "nothing (the key is missing)",
              "the recording's path (required for source: " + std::string(to_string(probe.source)) +
                  ")");
        } else {
          probe.path = c_.string(*path);
        }
      } else if (source && path) {
        c_.error(path->where, path->path, "a path",
                 "no path for source: sim (only file sources read a recording)");
      }
      if (type && source && probe.type == ProbeType::kSim &&
          probe.source != ProbeSourceKind::kSim) {
        c_.error(source_field->where, source_field->path, c_.describe(source_field->node),
                 "sim (a probe of type sim has no recording to read)");
      }
      p_.probes.push_back(std::move(probe));
    }
  }

  void read_stimulus(const Field& f) {
    MapView map(c_, f, kStimulusKeys, "a map with kind and space");
    if (!map.is_map()) return;
    if (auto v = map.require("kind", "one of grating, optogenetic, electrical")) {
      if (auto k = c_.choice(*v, kStimulusKinds)) p_.stimulus.kind = static_cast<StimulusKind>(*k);
    }
    const auto space = map.require("space", "a map of named dimensions");
    if (space) read_space(*space);
    const auto candidates = map.get("candidates");
    if (candidates) {
      p_.stimulus.explicit_candidates = true;
      read_candidates(*candidates);
    } else if (space_ok_) {
      expand_cartesian(*space);
    }
  }

  void read_space(const Field& f) {
    MapView map(c_, f, kNoKeys, "a map of named dimensions", /*open_keys=*/true);
    if (!map.is_map()) return;
    if (map.entries().empty()) {
      c_.error(f.where, f.path, "an empty map", "at least one dimension");
      return;
    }
    if (map.entries().size() > kMaxStimulusDimensions) {
      c_.error(f.where, f.path, std::to_string(map.entries().size()) + " dimensions",
               "at most " + std::to_string(kMaxStimulusDimensions) + " dimensions");
      return;
    }
    bool all_ok = true;
    for (const auto& entry : map.entries()) {
      StimulusDimension dimension;
      DimensionInfo info;
      dimension.name = entry.key;
      if (!internal::is_identifier(entry.key)) {
        c_.error(entry.key_where, entry.value.path, "the dimension name \"" + entry.key + "\"",
                 "a name made of letters, digits and _ (not starting with a digit)");
      }
      info.ok = read_dimension(entry.value, dimension, info) && internal::is_identifier(entry.key);
      all_ok = all_ok && info.ok;
      p_.stimulus.dimensions.push_back(std::move(dimension));
      dimension_info_.push_back(std::move(info));
    }
    space_ok_ = all_ok;
  }

  bool read_dimension(const Field& f, StimulusDimension& dimension, DimensionInfo& info) {
    MapView map(c_, f, kDimensionKeys, "a map with unit and values or grid");
    if (!map.is_map()) return false;
    const std::size_t errors_before = c_.error_count();
    if (auto v = map.require("unit", "a unit such as deg, fraction, mW, ms")) {
      if (auto s = c_.string(*v)) dimension.unit = *s;
    }
    const auto values = map.get("values");
    const auto grid = map.get("grid");
    if (values && grid) {
      c_.error(grid->where, grid->path, "both values and grid", "exactly one of values, grid");
    } else if (values) {
      read_values(*values, dimension, info);
    } else if (grid) {
      read_grid(*grid, dimension, info);
    } else {
      c_.error(f.where, internal::join_path(f.path, "values"), "nothing (the key is missing)",
               "values: [...] or grid: {start, stop, step|count} (required)");
    }
    return c_.error_count() == errors_before;
  }

  void read_values(const Field& f, StimulusDimension& dimension, DimensionInfo& info) {
    auto items = c_.list(f, "a list of numbers");
    if (!items) return;
    if (items->empty()) {
      c_.error(f.where, f.path, "an empty list", "at least one value");
      return;
    }
    if (items->size() > kMaxCandidates) {
      c_.error(f.where, f.path, std::to_string(items->size()) + " values",
               "at most " + std::to_string(kMaxCandidates) + " values");
      return;
    }
    for (const auto& item : *items) {
      const auto value = c_.number(item, NumberRange{-kInf, kInf});
      if (!value) continue;
      const auto same = std::find_if(dimension.values.begin(), dimension.values.end(),
                                     [&](double v) { return same_value(v, *value); });
      if (same != dimension.values.end()) {
        const auto& first = info.origins[static_cast<std::size_t>(same - dimension.values.begin())];
        c_.error(item.where, item.path, "the duplicate value " + format_number(*value),
                 "distinct values (already given at " + first.path + ")");
        continue;
      }
      dimension.values.push_back(*value);
      info.origins.push_back(ValueOrigin{item.path, item.where});
    }
  }

  void read_grid(const Field& f, StimulusDimension& dimension, DimensionInfo& info) {
    MapView map(c_, f, kGridKeys, "a map {start, stop, step} or {start, stop, count}");
    if (!map.is_map()) return;
    std::optional<double> start;
    std::optional<double> stop;
    if (auto v = map.require("start", "a number")) start = c_.number(*v, NumberRange{-kInf, kInf});
    const auto stop_field = map.require("stop", "a number");
    if (stop_field) stop = c_.number(*stop_field, NumberRange{-kInf, kInf});
    const auto step_field = map.get("step");
    const auto count_field = map.get("count");
    std::optional<double> step;
    std::optional<std::int64_t> count;
    if (step_field && count_field) {
      c_.error(count_field->where, count_field->path, "both step and count",
               "exactly one of step, count");
      return;
    }
    if (step_field) {
      step = c_.number(*step_field, NumberRange{0.0, kInf, /*lo_open=*/true});
    } else if (count_field) {
      count = c_.integer(*count_field, 1, static_cast<std::int64_t>(kMaxCandidates));
    } else {
      c_.error(f.where, internal::join_path(f.path, "step"), "nothing (the key is missing)",
               "step (a number > 0) or count (an integer >= 1) (required)");
      return;
    }
    if (!start || !stop || (!step && !count)) return;
    if (*stop < *start) {
      c_.error(stop_field->where, stop_field->path, format_number(*stop),
               "a number >= start (" + format_number(*start) + ")");
      return;
    }
    std::size_t n = 0;
    if (step) {
      const double steps = std::floor((*stop - *start) / *step + 1e-9);
      if (steps + 1.0 > static_cast<double>(kMaxCandidates)) {
        c_.error(step_field->where, step_field->path, format_number(*step),
                 "a step giving at most " + std::to_string(kMaxCandidates) + " values");
        return;
      }
      n = static_cast<std::size_t>(steps) + 1;
    } else {
      n = static_cast<std::size_t>(*count);
      if (n == 1 && !same_value(*start, *stop)) {
        c_.error(count_field->where, count_field->path, "1",
                 "an integer >= 2 (count 1 needs start == stop)");
        return;
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      double value = 0.0;
      if (step) {
        value = *start + static_cast<double>(i) * *step;
      } else {
        value = n == 1 ? *start
                       : (i + 1 == n ? *stop
                                     : *start + (*stop - *start) * static_cast<double>(i) /
                                                    static_cast<double>(n - 1));
      }
      dimension.values.push_back(value);
      info.origins.push_back(ValueOrigin{f.path, f.where});
    }
  }

  void expand_cartesian(const Field& space) {
    auto& s = p_.stimulus;
    std::size_t total = 1;
    for (const auto& dimension : s.dimensions) {
      if (total > kMaxCandidates / dimension.values.size() + 1) {
        total = kMaxCandidates + 1;
        break;
      }
      total *= dimension.values.size();
    }
    if (total > kMaxCandidates) {
      c_.error(space.where, space.path,
               "more than " + std::to_string(kMaxCandidates) + " candidates",
               "at most " + std::to_string(kMaxCandidates) +
                   " candidates (the product of the dimensions' value counts)");
      space_ok_ = false;
      return;
    }
    const std::size_t dims = s.dimensions.size();
    s.candidate_values.resize(total * dims);
    candidate_origins_.assign(total * dims, ValueOrigin{});
    for (std::size_t candidate = 0; candidate < total; ++candidate) {
      std::size_t rest = candidate;
      for (std::size_t d = dims; d-- > 0;) {
        const std::size_t count = s.dimensions[d].values.size();
        const std::size_t index = rest % count;
        rest /= count;
        s.candidate_values[candidate * dims + d] = s.dimensions[d].values[index];
        candidate_origins_[candidate * dims + d] = dimension_info_[d].origins[index];
      }
    }
    candidates_ok_ = true;
  }

  void read_candidates(const Field& f) {
    auto items = c_.list(f, "a list of candidates, each a list with one value per dimension");
    if (!items) return;
    if (items->empty()) {
      c_.error(f.where, f.path, "an empty list", "at least one candidate (or no candidates key)");
      return;
    }
    if (items->size() > kMaxCandidates) {
      c_.error(f.where, f.path, std::to_string(items->size()) + " candidates",
               "at most " + std::to_string(kMaxCandidates) + " candidates");
      return;
    }
    auto& s = p_.stimulus;
    const std::size_t dims = s.dimensions.size();
    const std::size_t errors_before = c_.error_count();
    std::vector<Field> first_of;  // candidate fields accepted so far, for duplicate messages
    for (const auto& item : *items) {
      auto values = c_.list(item, "a list with one value per dimension");
      if (!values) continue;
      if (space_ok_ && values->size() != dims) {
        c_.error(
            item.where, item.path, std::to_string(values->size()) + " values",
            std::to_string(dims) + " values (one per dimension: " + join_names(s.dimensions) + ")");
        continue;
      }
      std::vector<double> point;
      std::vector<ValueOrigin> origins;
      for (std::size_t d = 0; d < values->size(); ++d) {
        const Field& value_field = (*values)[d];
        const auto value = c_.number(value_field, NumberRange{-kInf, kInf});
        if (!value) continue;
        if (space_ok_) {
          const auto& declared = s.dimensions[d].values;
          const bool known = std::any_of(declared.begin(), declared.end(),
                                         [&](double v) { return same_value(v, *value); });
          if (!known) {
            c_.error(value_field.where, value_field.path, format_number(*value),
                     "one of the values declared for dimension " + s.dimensions[d].name);
            continue;
          }
        }
        point.push_back(*value);
        origins.push_back(ValueOrigin{value_field.path, value_field.where});
      }
      if (!space_ok_ || point.size() != dims) continue;
      bool duplicate = false;
      for (std::size_t other = 0; other < first_of.size() && !duplicate; ++other) {
        duplicate =
            std::equal(point.begin(), point.end(),
                       s.candidate_values.begin() + static_cast<long>(other * dims), same_value);
        if (duplicate) {
          c_.error(item.where, item.path, "a duplicate candidate",
                   "distinct candidates (same as " + first_of[other].path + ")");
        }
      }
      if (duplicate) continue;
      first_of.push_back(item);
      s.candidate_values.insert(s.candidate_values.end(), point.begin(), point.end());
      candidate_origins_.insert(candidate_origins_.end(), origins.begin(), origins.end());
    }
    candidates_ok_ = space_ok_ && c_.error_count() == errors_before;
  }

  void read_timing(const Field& f) {
    MapView map(c_, f, kTimingKeys, "a map of trial timing");
    if (!map.is_map()) return;
    timing_where_ = f;
    const std::size_t errors_before = c_.error_count();
    const NumberRange non_negative{0.0, kMaxMs};
    const NumberRange positive{0.0, kMaxMs, /*lo_open=*/true};
    const NumberRange relative{-kMaxMs, kMaxMs};
    auto& t = p_.timing;
    std::optional<Field> start_field;
    std::optional<Field> end_field;
    if (auto v = map.require("baseline_ms", "a number of milliseconds >= 0")) {
      if (auto n = c_.number(*v, non_negative)) t.baseline_ms = *n;
    }
    if (auto v = map.require("stimulus_ms", "a number of milliseconds > 0")) {
      if (auto n = c_.number(*v, positive)) t.stimulus_ms = *n;
    }
    if ((start_field = map.require("response_start_ms", "milliseconds from onset"))) {
      if (auto n = c_.number(*start_field, relative)) t.response_start_ms = *n;
    }
    if ((end_field = map.require("response_end_ms", "milliseconds from onset"))) {
      if (auto n = c_.number(*end_field, relative)) t.response_end_ms = *n;
    }
    if (auto v = map.require("inter_trial_ms", "a number of milliseconds >= 0")) {
      if (auto n = c_.number(*v, non_negative)) t.inter_trial_ms = *n;
    }
    if (c_.error_count() != errors_before) return;
    if (t.response_start_ms < -t.baseline_ms) {
      c_.error(start_field->where, start_field->path, format_number(t.response_start_ms),
               "a number >= -baseline_ms (" + format_number(-t.baseline_ms) +
                   "): the window cannot start before the baseline");
    }
    if (t.response_end_ms <= t.response_start_ms) {
      c_.error(end_field->where, end_field->path, format_number(t.response_end_ms),
               "a number > response_start_ms (" + format_number(t.response_start_ms) + ")");
    } else if (t.response_end_ms > t.stimulus_ms + t.inter_trial_ms) {
      c_.error(end_field->where, end_field->path, format_number(t.response_end_ms),
               "a number <= stimulus_ms + inter_trial_ms (" +
                   format_number(t.stimulus_ms + t.inter_trial_ms) +
                   "): the window must end before the next trial's baseline");
    }
    timing_ok_ = c_.error_count() == errors_before;
  }

  void read_safety(const Field& f) {
    MapView map(c_, f, kSafetyKeys, "a map of stimulus safety limits");
    if (!map.is_map()) return;
    const std::size_t errors_before = c_.error_count();
    auto& s = p_.safety;
    amplitude_field_ = map.require("amplitude_dimension", "the name of a stimulus dimension");
    if (amplitude_field_) {
      if (auto v = c_.string(*amplitude_field_)) s.amplitude_dimension = *v;
    }
    if (auto v = map.require("max_amplitude", "a number > 0")) {
      if (auto n = c_.number(*v, NumberRange{0.0, kInf, true})) s.max_amplitude = *n;
    }
    duration_field_ = map.get("duration_dimension");
    if (duration_field_) s.duration_dimension = c_.string(*duration_field_);
    if (auto v = map.require("max_duty_cycle", "a number in (0, 1]")) {
      if (auto n = c_.number(*v, NumberRange{0.0, 1.0, true})) s.max_duty_cycle = *n;
    }
    if (auto v = map.require("min_interval_ms", "a number of milliseconds >= 0")) {
      if (auto n = c_.number(*v, NumberRange{0.0, kMaxMs})) s.min_interval_ms = *n;
    }
    safety_ok_ = c_.error_count() == errors_before;
  }

  void read_designer(const Field& f) {
    MapView map(c_, f, kDesignerKeys, "a map with strategy");
    if (!map.is_map()) return;
    auto& d = p_.designer;
    if (auto v = map.require("strategy", "one of random, discriminate")) {
      if (auto k = c_.choice(*v, kStrategies)) d.strategy = static_cast<DesignerStrategy>(*k);
    }
    if (auto v = map.get("validation_fraction")) {
      if (auto n = c_.number(*v, NumberRange{0.0, 1.0, false, true})) d.validation_fraction = *n;
    }
    if (auto v = map.get("decision_deadline_ms")) {
      if (auto n = c_.number(*v, NumberRange{0.0, 60000.0, true})) d.decision_deadline_ms = *n;
    }
    if (auto v = map.get("seed")) {
      if (auto n = c_.integer(*v, 0, std::numeric_limits<std::int64_t>::max())) {
        d.seed = static_cast<std::uint64_t>(*n);
      }
    }
    d.criticism_trials = defaults_.criticism_trials;
    d.criticism_power.reset();
    if (auto v = map.get("criticism_trials")) {
      if (auto n = c_.integer(*v, 0, kMaxTrials)) {
        d.criticism_trials = static_cast<std::uint32_t>(*n);
      } else {
        criticism_trials_refused_ = true;  // said once, not again as "0" beside criticism_power
      }
    }
    criticism_power_field_ = map.get("criticism_power");
    if (criticism_power_field_) {
      // 1 is a power no finite check reaches: every criticism trial is taken.
      if (auto n = c_.number(*criticism_power_field_,
                             NumberRange{0.0, 1.0, /*lo_open=*/true, /*hi_open=*/false})) {
        if (*n < 1.0) d.criticism_power = *n;
      }
    } else if (d.criticism_trials > 0) {
      d.criticism_power = defaults_.criticism_power;
    }
    candidates_per_decision_field_ = map.get("candidates_per_decision");
    if (candidates_per_decision_field_) {
      if (auto n = c_.integer(*candidates_per_decision_field_, 1,
                              static_cast<std::int64_t>(kMaxCandidates))) {
        d.candidates_per_decision = static_cast<std::uint32_t>(*n);
      }
    }
  }

  void read_stop(const Field& f) {
    MapView map(c_, f, kStopKeys, "a map with posterior_threshold and max_trials");
    if (!map.is_map()) return;
    auto& s = p_.stop;
    if (auto v = map.require("posterior_threshold", "a number in (0.5, 1)")) {
      if (auto n = c_.number(*v, NumberRange{0.5, 1.0, true, true})) s.posterior_threshold = *n;
    }
    if (auto v = map.require("max_trials", "an integer >= 1")) {
      if (auto n = c_.integer(*v, 1, kMaxTrials)) s.max_trials = static_cast<std::uint32_t>(*n);
    }
    if (auto v = map.get("max_minutes")) {
      s.max_minutes = c_.number(*v, NumberRange{0.0, 10080.0, true});
    }
  }

  void read_hypotheses(const Field& f) {
    auto items = c_.list(f, "a list of hypotheses");
    if (!items) return;
    if (items->empty()) {
      c_.error(f.where, f.path, "an empty list", "at least one hypothesis");
      return;
    }
    for (const auto& item : *items) {
      MapView map(c_, item, kHypothesisKeys, "a map with name and family");
      if (!map.is_map()) continue;
      HypothesisSpec h;
      if (auto v = map.require("name", "a hypothesis name")) {
        if (auto s = c_.string(*v, /*identifier=*/true)) {
          const bool duplicate =
              std::any_of(p_.hypotheses.begin(), p_.hypotheses.end(),
                          [&](const HypothesisSpec& other) { return other.name == *s; });
          if (duplicate) {
            c_.error(v->where, v->path, "duplicate hypothesis name \"" + *s + "\"",
                     "a name no other hypothesis uses");
          }
          h.name = *s;
        }
      }
      std::optional<std::size_t> family;
      if (auto v = map.require(
              "family", "one of direction_tuning, orientation_tuning, lnp, null, torchscript")) {
        family = c_.choice(*v, kFamilies);
        if (family) h.family = static_cast<HypothesisFamily>(*family);
      }
      const auto path = map.get("path");
      if (family && h.family == HypothesisFamily::kTorchScript) {
        if (!path) {
          c_.error(item.where, internal::join_path(item.path, "path"),
                   "nothing (the key is missing)",
                   "the TorchScript module's path (required for family: torchscript)");
        } else {
          h.path = c_.string(*path);
        }
      } else if (family && path) {
        c_.error(path->where, path->path, "a path",
                 "no path for family: " + std::string(to_string(h.family)) +
                     " (only torchscript loads a module)");
      }
      if (auto v = map.get("params")) {
        MapView params(c_, *v, kNoKeys, "a map of parameter names to numbers", true);
        for (const auto& entry : params.entries()) {
          if (!internal::is_identifier(entry.key)) {
            c_.error(entry.key_where, entry.value.path, "the parameter name \"" + entry.key + "\"",
                     "a name made of letters, digits and _ (not starting with a digit)");
            continue;
          }
          if (auto n = c_.number(entry.value, NumberRange{-kInf, kInf})) h.params[entry.key] = *n;
        }
      }
      p_.hypotheses.push_back(std::move(h));
    }
    if (p_.designer.strategy == DesignerStrategy::kDiscriminate && p_.hypotheses.size() == 1) {
      c_.error(f.where, f.path, "1 hypothesis",
               "at least 2 hypotheses for strategy: discriminate (or strategy: random)");
    }
  }

  /// Refuses candidates above max_amplitude, pulses longer than the stimulus, and timing that
  /// breaks the duty cycle or the minimum onset interval.
  void check_safety() {
    if (!safety_ok_ || !space_ok_) return;
    const auto& s = p_.stimulus;
    const auto& limits = p_.safety;
    const std::string names = join_names(s.dimensions);
    const auto amplitude = s.dimension_index(limits.amplitude_dimension);
    if (!amplitude) {
      c_.error(amplitude_field_->where, amplitude_field_->path,
               "\"" + limits.amplitude_dimension + "\"",
               "the name of a stimulus dimension (one of " + names + ")");
    }
    std::optional<std::size_t> duration;
    if (limits.duration_dimension) {
      duration = s.dimension_index(*limits.duration_dimension);
      if (!duration) {
        c_.error(duration_field_->where, duration_field_->path,
                 "\"" + *limits.duration_dimension + "\"",
                 "the name of a stimulus dimension (one of " + names + ")");
      } else if (s.dimensions[*duration].unit != "ms") {
        c_.error(duration_field_->where, duration_field_->path,
                 "dimension " + *limits.duration_dimension + " in unit \"" +
                     s.dimensions[*duration].unit + "\"",
                 "a dimension in unit \"ms\"");
        duration.reset();
      }
    }
    if (!candidates_ok_) return;
    const std::size_t dims = s.dimension_count();
    std::vector<std::string> reported;  // one error per offending value origin
    const auto report_once = [&](const ValueOrigin& origin, std::string found,
                                 std::string expected) {
      if (std::find(reported.begin(), reported.end(), origin.path) != reported.end()) return;
      reported.push_back(origin.path);
      c_.error(origin.where, origin.path, std::move(found), std::move(expected));
    };
    double on_time_ms = p_.timing.stimulus_ms;
    if (duration) on_time_ms = 0.0;
    for (std::size_t candidate = 0; candidate < s.candidate_count(); ++candidate) {
      if (amplitude) {
        const double value = s.candidate_values[candidate * dims + *amplitude];
        if (std::fabs(value) > limits.max_amplitude) {
          report_once(
              candidate_origins_[candidate * dims + *amplitude],
              "an amplitude of " + format_number(value) + " " + s.dimensions[*amplitude].unit,
              "|amplitude| <= " + format_number(limits.max_amplitude) + " " +
                  s.dimensions[*amplitude].unit + " (safety.max_amplitude)");
        }
      }
      if (duration) {
        const double value = s.candidate_values[candidate * dims + *duration];
        if (timing_ok_ && (value <= 0.0 || value > p_.timing.stimulus_ms)) {
          report_once(candidate_origins_[candidate * dims + *duration],
                      "a duration of " + format_number(value) + " ms",
                      "a duration in (0, " + format_number(p_.timing.stimulus_ms) +
                          "] ms (timing.stimulus_ms)");
        }
        if (value <= p_.timing.stimulus_ms) on_time_ms = std::max(on_time_ms, value);
      }
    }
    if (!timing_ok_) return;
    const double interval = p_.timing.onset_interval_ms();
    const double duty = on_time_ms / interval;
    if (duty > limits.max_duty_cycle + 1e-12) {
      c_.error(timing_where_->where, timing_where_->path,
               "a duty cycle of " + internal::format_rounded(duty) + " (" +
                   format_number(on_time_ms) + " ms on per " + format_number(interval) +
                   " ms between onsets)",
               "at most " + format_number(limits.max_duty_cycle) + " (safety.max_duty_cycle)");
    }
    if (interval < limits.min_interval_ms) {
      c_.error(
          timing_where_->where, timing_where_->path,
          "an onset interval of " + format_number(interval) +
              " ms (baseline_ms + stimulus_ms + inter_trial_ms)",
          "at least " + format_number(limits.min_interval_ms) + " ms (safety.min_interval_ms)");
    }
  }

  void check_designer() {
    if (criticism_power_field_ && p_.designer.criticism_trials == 0 && !criticism_trials_refused_) {
      c_.error(criticism_power_field_->where, criticism_power_field_->path,
               "a power target with criticism_trials 0",
               "criticism_trials > 0, the most criticism trials the target may take");
    }
    const auto& per_decision = p_.designer.candidates_per_decision;
    if (!per_decision || !candidates_ok_) return;
    const std::size_t count = p_.stimulus.candidate_count();
    if (*per_decision > count) {
      c_.error(candidates_per_decision_field_->where, candidates_per_decision_field_->path,
               std::to_string(*per_decision),
               "at most the number of candidates (" + std::to_string(count) + ")");
    }
  }

  Checker& c_;
  Protocol& p_;
  const DesignerDefaults& defaults_;
  std::vector<DimensionInfo> dimension_info_;
  std::vector<ValueOrigin> candidate_origins_;  // candidate-major, like candidate_values
  bool space_ok_ = false;
  bool candidates_ok_ = false;
  bool timing_ok_ = false;
  bool safety_ok_ = false;
  std::optional<Field> timing_where_;
  std::optional<Field> amplitude_field_;
  std::optional<Field> duration_field_;
  std::optional<Field> candidates_per_decision_field_;
  std::optional<Field> criticism_power_field_;
  bool criticism_trials_refused_ = false;
};

void load_into(Checker& checker, std::string_view text, Protocol& protocol,
               const DesignerDefaults& defaults) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::Exception& e) {
    const Location where =
        e.mark.is_null() ? Location{} : Location{e.mark.line + 1, e.mark.column + 1};
    checker.error(where, "", "a YAML syntax error (" + e.msg + ")", "well-formed YAML");
    return;
  }
  if (documents.empty() || documents.front().IsNull()) {
    checker.error({1, 1}, "", "an empty document",
                  "a map of protocol sections starting with twinloop_protocol: 1");
    return;
  }
  if (documents.size() > 1) {
    checker.error(checker.location(documents[1]), "", "a second YAML document",
                  "exactly one document per protocol file");
  }
  const YAML::Node& root = documents.front();
  Location where = checker.location(root);
  if (where.line == 0) where = {1, 1};
  ProtocolReader(checker, protocol, defaults).read(Field{root, "", where});
}

}  // namespace

ProtocolLoadResult load_protocol_text(std::string_view text, std::string_view display_name,
                                      const DesignerDefaults& defaults) {
  Checker checker(display_name, text);
  Protocol protocol;
  if (text.size() > kMaxProtocolBytes) {
    checker.error({}, "", "a file of " + std::to_string(text.size()) + " bytes",
                  "at most " + std::to_string(kMaxProtocolBytes) + " bytes");
  } else {
    try {
      load_into(checker, text, protocol, defaults);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      // Every known failure is reported above; this only keeps an unforeseen yaml-cpp throw
      // from escaping as a crash.
      checker.error({}, "", std::string("an input the loader could not read (") + e.what() + ")",
                    "a valid protocol");
    }
  }
  ProtocolLoadResult result;
  if (checker.error_count() > 0) {
    result.diagnostics = checker.take_sorted();
    return result;
  }
  protocol.source_name = std::string(display_name);
  protocol.source_text = std::string(text);
  result.protocol = std::move(protocol);
  return result;
}

ProtocolLoadResult load_protocol_file(const std::filesystem::path& path,
                                      const DesignerDefaults& defaults) {
  const std::string name = path.string();
  const auto fail = [&](std::string found, std::string expected) {
    ProtocolLoadResult result;
    result.diagnostics.push_back(Diagnostic{name, 0, 0, "", std::move(found), std::move(expected)});
    return result;
  };
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return fail("no such file", "a readable protocol file");
  }
  if (!std::filesystem::is_regular_file(status)) {
    return fail("something that is not a regular file", "a readable protocol file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("a file that cannot be opened for reading", "a readable protocol file");
  std::string text;
  text.resize(kMaxProtocolBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return fail("a read error", "a readable protocol file");
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMaxProtocolBytes) {
    return fail("a file larger than " + std::to_string(kMaxProtocolBytes) + " bytes",
                "at most " + std::to_string(kMaxProtocolBytes) + " bytes");
  }
  return load_protocol_text(text, name, defaults);
}

}  // namespace twinloop::protocols

// `twinloop report SESSION_DIR`: one self-contained HTML file that lets a reviewer judge a session
// without twinloop: the verify result, the verdict and its evidence, validation-trial predictions
// against outcomes, calibration, the designer's choices, information gain and every event. See
// report.hpp for the contract and docs/report.md for what each section means.
//
// Everything is read from the record read-only (its schema: docs/session-record.md) and from
// summary.json when the session ended. Statistics the session computed (bits per spike, Spearman
// rho, PIT) are recomputed here from the record with the session's own code (twin::ModelCheck,
// the same trials and the same seed), so the two can be compared; for an interrupted session the
// recomputation is all there is, and the report says which numbers only summary.json could give.
//
// Plots are SVG written here (no script or style from elsewhere); one small inline script only
// records, into attributes of <html>, whether the page loaded without script errors and how many
// plots rendered, so a headless browser can prove it (tests/daemon/test_report.cpp).
#include "twinloop/daemon/report.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/session_record.hpp"
#include "twinloop/protocols/loader.hpp"
#include "twinloop/twin/count_distribution.hpp"
#include "twinloop/twin/model_check.hpp"
#include "twinloop/twin/posterior.hpp"
#include "twinloop/twin/unit_ledger.hpp"

namespace twinloop::daemon {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Above this many (trial, unit) pairs a scatter plot becomes a 2-D histogram, so that a
// 384-unit session does not produce a report of tens of thousands of circles.
constexpr std::size_t kMaxScatterPoints = 3000;
// Violations listed one by one in the verify section; the rest are counted.
constexpr std::size_t kMaxListedViolations = 200;
// Status the record gives a trial whose predictions were scored (docs/session-record.md).
constexpr std::string_view kScored = "scored";

constexpr std::array<const char*, 8> kPalette = {"#1f6fb4", "#d4382c", "#2a9d3c", "#8a55b8",
                                                 "#e08a12", "#7a4d33", "#d25fa8", "#178f9e"};
const char* colour(std::size_t k) {
  return kPalette[k % kPalette.size()];
}

// ---------------------------------------------------------------------------------------------
// Text

// Escapes text for HTML and SVG (element content and quoted attributes alike). Control
// characters other than tab and newline become U+FFFD, so the SVG stays well-formed XML.
std::string esc(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out += "\xEF\xBF\xBD";
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string printf_string(const char* format, double value, int precision) {
  std::array<char, 64> buffer{};
  std::snprintf(buffer.data(), buffer.size(), format, precision, value);
  return buffer.data();
}

// A number for people: `digits` significant digits, "n/a" for NaN, signed infinity spelled out.
std::string num(double v, int digits = 3) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "+\u221e" : "\u2212\u221e";
  return printf_string("%.*g", v, digits);
}
std::string fixed(double v, int decimals) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "+\u221e" : "\u2212\u221e";
  return printf_string("%.*f", v, decimals);
}
// The same with its sign always shown, for shares of a log Bayes factor.
std::string signed_fixed(double v, int decimals) {
  if (std::isnan(v) || std::isinf(v)) return fixed(v, decimals);
  return printf_string("%+.*f", v, decimals);
}
// What a bits-per-spike figure is measured against; summaries that do not say are older ones,
// which measured against a constant rate.
std::string versus(const std::string& reference) {
  return " vs " + (reference.empty() ? std::string(kConstantRateReference) : reference);
}
std::string percent(double fraction) {
  return std::isfinite(fraction) ? printf_string("%.*f", 100.0 * fraction, 1) + "%" : "n/a";
}
// An SVG coordinate.
std::string xy(double v) {
  return printf_string("%.*f", std::isfinite(v) ? v : 0.0, 1);
}

std::string utc(std::int64_t ns) {
  const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
  const auto millis = static_cast<int>((ns % 1'000'000'000) / 1'000'000);
  std::tm tm{};
  if (gmtime_r(&seconds, &tm) == nullptr) return std::to_string(ns) + " ns";
  std::array<char, 64> buffer{};
  std::strftime(buffer.data(), buffer.size(), "%Y-%m-%d %H:%M:%S", &tm);
  std::array<char, 80> out{};
  std::snprintf(out.data(), out.size(), "%s.%03d UTC", buffer.data(), millis);
  return out.data();
}

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

// ---------------------------------------------------------------------------------------------
// Reading the record

class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A read-only SQLite connection whose errors name the file and what was being read.
class Reader {
 public:
  explicit Reader(const fs::path& file) : file_(file) {
    const int rc = sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr);
    if (rc != SQLITE_OK) {
      const std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw ReportError(file.string() + ": cannot open the session record: " + message);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  ~Reader() { sqlite3_close_v2(db_); }

  // Calls `row(stmt)` for every row of `sql`; `what` names the read in errors.
  template <typename Row>
  void each(std::string_view what, std::string_view sql, Row&& row) const {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, nullptr) !=
        SQLITE_OK) {
      fail(what);
    }
    const std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> stmt(raw, sqlite3_finalize);
    for (;;) {
      const int rc = sqlite3_step(raw);
      if (rc == SQLITE_DONE) return;
      if (rc != SQLITE_ROW) fail(what);
      row(raw);
    }
  }
  [[nodiscard]] std::int64_t integer(std::string_view what, std::string_view sql) const {
    std::int64_t value = 0;
    each(what, sql, [&](sqlite3_stmt* s) { value = sqlite3_column_int64(s, 0); });
    return value;
  }

 private:
  [[noreturn]] void fail(std::string_view what) const {
    throw ReportError(file_.string() + ": cannot read " + std::string(what) + ": " +
                      sqlite3_errmsg(db_));
  }
  fs::path file_;
  sqlite3* db_ = nullptr;
};

std::string text_of(sqlite3_stmt* s, int c) {
  const auto* p = sqlite3_column_text(s, c);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p),
                                    static_cast<std::size_t>(sqlite3_column_bytes(s, c)))
                      : std::string();
}
// A REAL column: NULL (the record's NaN) as NaN.
double real_of(sqlite3_stmt* s, int c) {
  return sqlite3_column_type(s, c) == SQLITE_NULL ? kNaN : sqlite3_column_double(s, c);
}
// A little-endian array BLOB (docs/session-record.md: mean and dispersion "<f8", counts "<u4").
// Empty when its length is not a whole number of values.
template <typename T>
std::vector<T> blob_of(sqlite3_stmt* s, int c) {
  const auto bytes = static_cast<std::size_t>(sqlite3_column_bytes(s, c));
  const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(s, c));
  if (data == nullptr || bytes % sizeof(T) != 0) return {};
  std::vector<T> values(bytes / sizeof(T));
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::array<std::uint8_t, sizeof(T)> raw{};
    std::memcpy(raw.data(), data + i * sizeof(T), sizeof(T));
    if constexpr (std::endian::native != std::endian::little) std::reverse(raw.begin(), raw.end());
    values[i] = std::bit_cast<T>(raw);
  }
  return values;
}

struct Trial {
  std::uint64_t trial = 0;
  std::int64_t candidate = -1;
  std::string stimulus_json;
  std::string strategy;
  std::string status;
  bool validation = false;
  double eig = kNaN;  ///< nats; NaN when not computed (NULL)
  // Per hypothesis; a prediction is usable when its two arrays hold one value per unit.
  std::vector<std::vector<double>> mean, dispersion;
  // Per hypothesis, the encompassing test's directions ([rival][unit]); empty where the record
  // has none (format 1, or NULL): the rivals' means are the directions then.
  std::vector<std::vector<double>> rival_differences;
  std::vector<std::uint32_t> counts;  ///< empty without an outcome
  std::vector<double> probability, log_evidence;
  bool has_posterior = false;
};

struct Event {
  std::int64_t id = 0;
  std::int64_t at_ns = 0;
  std::string kind;
  std::optional<std::int64_t> trial;
  std::string detail;
};

struct Session {
  fs::path dir;
  fs::path file;
  VerifyReport verify;
  std::string protocol_text;
  std::string config_json;
  std::int64_t created_at_ns = 0;
  std::string version;
  std::vector<HypothesisInfo> hypotheses;
  std::size_t units = 0;
  std::vector<std::string> candidates_json;
  std::vector<Trial> trials;  ///< trial order
  std::vector<Event> events;  ///< id order
  std::optional<protocols::Protocol> protocol;
  std::string protocol_problem;  ///< why the protocol on record does not load, if it does not
  std::optional<json> summary;
  std::string summary_problem;  ///< why summary.json is absent or unusable
  std::uint64_t seed = 1;       ///< the run's --seed, from config_json
};

Session load(const fs::path& dir) {
  Session s;
  s.dir = dir;
  s.file = dir / SessionRecord::kFileName;
  if (!fs::exists(dir)) throw ReportError(dir.string() + ": no such session directory");
  if (!fs::is_directory(dir)) throw ReportError(dir.string() + ": not a directory");
  if (!fs::is_regular_file(s.file)) {
    throw ReportError(s.file.string() +
                      ": no session record here (is this a twinloop session directory?)");
  }
  s.verify = verify(dir);  // throws RecordError (naming the file) when there is no record at all

  const Reader db(s.file);
  if (db.integer("its application id", "PRAGMA application_id") != 0x54574C50) {
    throw ReportError(s.file.string() + ": not a twinloop session record");
  }
  bool have_session = false;
  db.each("the session row",
          "SELECT protocol_text, config_json, created_at_ns, twinloop_version FROM session "
          "WHERE id = 1",
          [&](sqlite3_stmt* r) {
            have_session = true;
            s.protocol_text = text_of(r, 0);
            s.config_json = text_of(r, 1);
            s.created_at_ns = sqlite3_column_int64(r, 2);
            s.version = text_of(r, 3);
          });
  if (!have_session) throw ReportError(s.file.string() + ": the session row is missing");
  db.each("the hypotheses", "SELECT name, family FROM hypotheses ORDER BY id",
          [&](sqlite3_stmt* r) {
            s.hypotheses.push_back({text_of(r, 0), text_of(r, 1)});
          });
  if (s.hypotheses.empty()) throw ReportError(s.file.string() + ": the record has no hypotheses");
  s.units = static_cast<std::size_t>(db.integer("the units", "SELECT count(*) FROM units"));
  db.each("the candidates", "SELECT stimulus_json FROM candidates ORDER BY id",
          [&](sqlite3_stmt* r) { s.candidates_json.push_back(text_of(r, 0)); });

  std::map<std::int64_t, std::size_t> index;
  db.each("the trials",
          "SELECT trial, candidate, stimulus_json, strategy, is_validation, "
          "expected_information_gain, status FROM trials ORDER BY trial",
          [&](sqlite3_stmt* r) {
            Trial t;
            t.trial = static_cast<std::uint64_t>(sqlite3_column_int64(r, 0));
            t.candidate = sqlite3_column_int64(r, 1);
            t.stimulus_json = text_of(r, 2);
            t.strategy = text_of(r, 3);
            t.validation = sqlite3_column_int64(r, 4) != 0;
            t.eig = real_of(r, 5);
            t.status = text_of(r, 6);
            t.mean.resize(s.hypotheses.size());
            t.dispersion.resize(s.hypotheses.size());
            t.rival_differences.resize(s.hypotheses.size());
            t.probability.assign(s.hypotheses.size(), kNaN);
            t.log_evidence.assign(s.hypotheses.size(), kNaN);
            index[sqlite3_column_int64(r, 0)] = s.trials.size();
            s.trials.push_back(std::move(t));
          });
  // Rows naming a trial or hypothesis that does not exist are skipped; verify() names them.
  auto find = [&](sqlite3_stmt* r, int trial_column, int hypothesis_column) -> Trial* {
    const auto it = index.find(sqlite3_column_int64(r, trial_column));
    if (it == index.end()) return nullptr;
    if (hypothesis_column >= 0) {
      const std::int64_t h = sqlite3_column_int64(r, hypothesis_column);
      if (h < 0 || static_cast<std::size_t>(h) >= s.hypotheses.size()) return nullptr;
    }
    return &s.trials[it->second];
  };
  // Format 1 records have no rival_differences column.
  const bool has_differences = db.integer("the record format", "PRAGMA user_version") >= 2;
  db.each("the predictions",
          has_differences
              ? "SELECT trial, hypothesis, mean, dispersion, rival_differences FROM predictions"
              : "SELECT trial, hypothesis, mean, dispersion FROM predictions",
          [&](sqlite3_stmt* r) {
            if (Trial* t = find(r, 0, 1)) {
              const auto h = static_cast<std::size_t>(sqlite3_column_int64(r, 1));
              t->mean[h] = blob_of<double>(r, 2);
              t->dispersion[h] = blob_of<double>(r, 3);
              if (has_differences) t->rival_differences[h] = blob_of<double>(r, 4);
            }
          });
  db.each("the outcomes", "SELECT trial, counts FROM outcomes", [&](sqlite3_stmt* r) {
    if (Trial* t = find(r, 0, -1)) t->counts = blob_of<std::uint32_t>(r, 1);
  });
  db.each("the posteriors", "SELECT trial, hypothesis, probability, log_evidence FROM posteriors",
          [&](sqlite3_stmt* r) {
            if (Trial* t = find(r, 0, 1)) {
              const auto h = static_cast<std::size_t>(sqlite3_column_int64(r, 1));
              t->probability[h] = real_of(r, 2);
              t->log_evidence[h] = real_of(r, 3);
              t->has_posterior = true;
            }
          });
  db.each("the events", "SELECT id, at_ns, kind, trial, detail_json FROM events ORDER BY id",
          [&](sqlite3_stmt* r) {
            Event e;
            e.id = sqlite3_column_int64(r, 0);
            e.at_ns = sqlite3_column_int64(r, 1);
            e.kind = text_of(r, 2);
            if (sqlite3_column_type(r, 3) != SQLITE_NULL) e.trial = sqlite3_column_int64(r, 3);
            e.detail = text_of(r, 4);
            s.events.push_back(std::move(e));
          });

  // The run configuration and the protocol as recorded; neither is needed to draw the report.
  try {
    const json config = json::parse(s.config_json);
    if (config.is_object()) s.seed = config.value("seed", std::uint64_t{1});
  } catch (const std::exception&) {
    // config_json is checked on write; a record edited afterwards keeps the default seed.
  }
  protocols::ProtocolLoadResult loaded =
      protocols::load_protocol_text(s.protocol_text, s.file.string());
  if (loaded.ok()) {
    s.protocol = std::move(*loaded.protocol);
  } else {
    s.protocol_problem = protocols::format_diagnostics(loaded.diagnostics);
  }

  const fs::path summary = dir / "summary.json";
  if (!fs::exists(summary)) {
    s.summary_problem =
        "summary.json is absent (the session did not end: interrupted or still "
        "running)";
  } else {
    try {
      std::ifstream in(summary);
      json parsed = json::parse(in);
      if (!parsed.is_object()) throw std::runtime_error("not a JSON object");
      s.summary = std::move(parsed);
    } catch (const std::exception& e) {
      s.summary_problem = summary.string() + " cannot be read: " + e.what();
    }
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Analysis

bool usable_prediction(const Session& s, const Trial& t, std::size_t h) {
  return t.mean[h].size() == s.units && t.dispersion[h].size() == s.units;
}
bool scoreable(const Session& s, const Trial& t) {
  if (t.status != kScored || t.counts.size() != s.units || s.units == 0) return false;
  for (std::size_t h = 0; h < s.hypotheses.size(); ++h) {
    if (!usable_prediction(s, t, h)) return false;
  }
  return true;
}

// One (trial, unit) pair's prediction. The negative binomial here is twin's NB2 parameterisation
// (twin/include/twinloop/twin/count_distribution.hpp: variance = mean + dispersion * mean^2,
// Poisson when dispersion is 0), which is also what docs/session-record.md states for the BLOBs;
// the PIT, quantiles and likelihoods below call twin's own functions on it.
twin::CountDistribution distribution(const Trial& t, std::size_t h, std::size_t u) {
  return {t.mean[h][u], t.dispersion[h][u]};
}

struct HypothesisCheck {
  std::size_t checked_trials = 0;  ///< validation trials fed to the model check
  std::size_t skipped_trials = 0;  ///< refused by the check (prediction not finite or negative)
  twin::ModelCheckResult result;
  std::vector<double> pit;
  // Central-interval coverage: share of PIT values inside, and share of counts inside the
  // integer interval [q(lo), q(hi)] beside its expectation under the predictions.
  struct Interval {
    double mass = 0.0;
    double pit_share = kNaN;
    double count_share = kNaN;
    double expected_count_share = kNaN;
  };
  std::array<Interval, 2> intervals{{{0.5}, {0.9}}};
  double log_bayes_factor = kNaN;
  std::string against;
  std::optional<twin::UnitEvidence> by_unit;  ///< that log Bayes factor unit by unit
  double bits_per_spike = kNaN;               ///< against the null's predictions, as the summary's
  std::string bits_per_spike_against;
};

struct InfoPoint {
  std::uint64_t trial = 0;
  bool validation = false;
  double expected = kNaN;  ///< the designer's, nats
  double realised = kNaN;  ///< KL(after || before), nats
};

struct Analysis {
  std::vector<const Trial*> scored;            ///< usable scored trials, trial order
  std::vector<const Trial*> validation;        ///< scored validation trials
  std::set<std::uint64_t> checked;             ///< validation trials the session's model check uses
  std::vector<const Trial*> designed_checked;  ///< designed trials its encompassing test uses
  std::size_t fit_after = 0;                   ///< scored trials before the twins are first fitted
  std::vector<HypothesisCheck> checks;
  std::optional<std::size_t> null_index;
  // The posterior rebuilt from the predictions and counts on record, as `resume` does.
  std::optional<twin::Posterior> rebuilt;
  std::optional<twin::UnitLedger> ledger;  ///< the rebuilt posterior's evidence unit by unit
  double rebuilt_difference = 0.0;         ///< largest |rebuilt - recorded| probability
  std::optional<twin::Verdict> provisional;
  std::string provisional_problem;
  std::vector<InfoPoint> information;
  std::size_t eig_missing = 0;
};

void interval_coverage(HypothesisCheck& c, const std::vector<const Trial*>& trials, std::size_t h,
                       std::size_t units) {
  for (HypothesisCheck::Interval& interval : c.intervals) {
    const double lo = (1.0 - interval.mass) / 2.0;
    const double hi = 1.0 - lo;
    std::size_t inside_pit = 0, inside_counts = 0, n = 0;
    double expected = 0.0;
    for (const double u : c.pit) inside_pit += (u >= lo && u <= hi) ? 1 : 0;
    for (const Trial* t : trials) {
      for (std::size_t u = 0; u < units; ++u) {
        const twin::CountDistribution d = distribution(*t, h, u);
        if (!(std::isfinite(d.mean) && d.mean >= 0.0 && std::isfinite(d.dispersion) &&
              d.dispersion >= 0.0)) {
          continue;
        }
        const std::uint32_t q_lo = twin::count_quantile(d, lo);
        const std::uint32_t q_hi = twin::count_quantile(d, hi);
        inside_counts += (t->counts[u] >= q_lo && t->counts[u] <= q_hi) ? 1 : 0;
        expected += twin::cumulative_probability(d, q_hi) -
                    twin::cumulative_probability(d, static_cast<std::int64_t>(q_lo) - 1);
        ++n;
      }
    }
    if (!c.pit.empty()) {
      interval.pit_share = static_cast<double>(inside_pit) / static_cast<double>(c.pit.size());
    }
    if (n > 0) {
      interval.count_share = static_cast<double>(inside_counts) / static_cast<double>(n);
      interval.expected_count_share = expected / static_cast<double>(n);
    }
  }
}

Analysis analyse(const Session& s) {
  Analysis a;
  const std::size_t hypotheses = s.hypotheses.size();
  for (std::size_t k = 0; k < hypotheses; ++k) {
    if (s.hypotheses[k].family == "null") {
      a.null_index = k;
      break;
    }
  }
  // The session's model check judges fitted twins only: a validation trial counts when its
  // predictions are not the twins' priors (ClosedLoop::learn), which no trial can be before
  // min_trials_to_fit trials were scored (a record claiming otherwise is not a session's). Where
  // the priors cannot be rebuilt (a TorchScript file gone), the rule is the schedule's: from the
  // trial after the one that made min_trials_to_fit scored trials.
  a.fit_after = ClosedLoopOptions{}.min_trials_to_fit;
  std::vector<twin::PredictionBatch> prior;
  if (s.protocol && s.units > 0) {
    try {
      prior = prior_predictions(*s.protocol, s.units, session_loop_options(*s.protocol, 0).twin);
    } catch (const std::exception&) {
      prior.clear();
    }
  }
  bool first_fit_launched = false;
  std::size_t schedule_fitted_from = std::numeric_limits<std::size_t>::max();
  for (std::size_t i = 0; i < s.trials.size(); ++i) {
    const Trial& t = s.trials[i];
    if (!scoreable(s, t)) continue;
    bool fitted = false;
    if (!prior.empty()) {
      fitted =
          a.scored.size() >= a.fit_after && t.candidate >= 0 &&
          !predicted_by_prior(prior, static_cast<std::size_t>(t.candidate), t.mean, t.dispersion);
    } else {
      fitted = i >= schedule_fitted_from;
    }
    if (t.validation) {
      a.validation.push_back(&t);
      if (fitted) a.checked.insert(t.trial);
    } else if (fitted) {
      a.designed_checked.push_back(&t);
    }
    a.scored.push_back(&t);
    if (!first_fit_launched && a.scored.size() >= a.fit_after) {
      first_fit_launched = true;
      schedule_fitted_from = i + 1;
    }
  }

  // Model checks with the session's options and seed, so the numbers are the session's own.
  twin::ModelCheckOptions options;
  options.seed ^= s.seed;
  // The bootstrap interval takes a while on big sessions; summary.json already holds it.
  if (s.summary) options.bootstrap_resamples = 0;
  const std::set<const Trial*> designed_checked(a.designed_checked.begin(),
                                                a.designed_checked.end());
  a.checks.resize(hypotheses);
  if (s.units > 0) {
    for (std::size_t h = 0; h < hypotheses; ++h) {
      HypothesisCheck& c = a.checks[h];
      twin::ModelCheck check(s.units, options);
      std::vector<twin::CountDistribution> row(s.units);
      std::vector<double> rivals;
      // As ClosedLoop::learn, in trial order: this hypothesis's row, and every other one's means
      // as rivals.
      const auto fill = [&](const Trial& t) {
        rivals.clear();
        for (std::size_t u = 0; u < s.units; ++u) row[u] = distribution(t, h, u);
        const std::vector<double>& differences = t.rival_differences[h];
        const bool directed = differences.size() == (hypotheses - 1) * s.units;
        for (std::size_t r = 0; r + 1 < hypotheses; ++r) {
          for (std::size_t u = 0; u < s.units; ++u) {
            rivals.push_back(directed ? row[u].mean + differences[r * s.units + u]
                                      : distribution(t, twin::rival_hypothesis(h, r), u).mean);
          }
        }
      };
      std::vector<const Trial*> accepted;
      for (const Trial* t : a.scored) {
        const bool validation = a.checked.contains(t->trial);
        if (!validation && !designed_checked.contains(t)) continue;
        try {
          fill(*t);
          if (validation) {
            check.add_trial(row, t->counts, rivals);
            accepted.push_back(t);
          } else {
            check.add_designed_trial(row, t->counts, rivals);
          }
        } catch (const std::invalid_argument&) {
          ++c.skipped_trials;
        }
      }
      c.checked_trials = accepted.size();
      c.result = check.result();
      c.pit.assign(check.pit_values().begin(), check.pit_values().end());
      interval_coverage(c, accepted, h, s.units);
    }
  }

  // Bits per spike against the null's registered predictions (as the session's summary).
  for (HypothesisCheck& c : a.checks) {
    c.bits_per_spike = twin::reported_bits_per_spike(
        c.result, a.null_index ? &a.checks[*a.null_index].result : nullptr);
    c.bits_per_spike_against =
        a.null_index ? s.hypotheses[*a.null_index].name : std::string(kConstantRateReference);
  }

  // The posterior, rebuilt from what was predicted and observed (prequential: the likelihood of
  // each trial's counts under the predictions registered before it), against the recorded one.
  std::vector<std::string> names;
  for (const HypothesisInfo& h : s.hypotheses) names.push_back(h.name);
  try {
    twin::Posterior posterior(names);
    twin::UnitLedger ledger(hypotheses, s.units);
    std::vector<double> scores(hypotheses);
    for (const Trial* t : a.scored) {
      for (std::size_t h = 0; h < hypotheses; ++h) {
        scores[h] = ledger.add(h, t->mean[h], t->dispersion[h], t->counts);
      }
      ledger.add_counts(t->counts);
      posterior.add_trial(scores);
      if (t->has_posterior) {
        for (std::size_t h = 0; h < hypotheses; ++h) {
          const double d = std::abs(posterior.probability(h) - t->probability[h]);
          a.rebuilt_difference = std::max(a.rebuilt_difference, std::isnan(d) ? 1.0 : d);
        }
      }
    }
    a.rebuilt = std::move(posterior);
    a.ledger = std::move(ledger);
  } catch (const std::invalid_argument& e) {
    a.provisional_problem = std::string("the posterior cannot be rebuilt: ") + e.what();
  }

  // Log Bayes factors against the null, or against the strongest other hypothesis when there is
  // no null or this is the null (as the session's summary does).
  if (a.rebuilt) {
    for (std::size_t k = 0; k < hypotheses; ++k) {
      std::size_t against = a.null_index.value_or(0);
      if (!a.null_index || *a.null_index == k) {
        double best = -std::numeric_limits<double>::infinity();
        for (std::size_t j = 0; j < hypotheses; ++j) {
          if (j != k && a.rebuilt->log_evidence(j) > best) {
            best = a.rebuilt->log_evidence(j);
            against = j;
          }
        }
      }
      if (against != k) {
        a.checks[k].log_bayes_factor = a.rebuilt->log_bayes_factor(k, against);
        a.checks[k].against = s.hypotheses[against].name;
        a.checks[k].by_unit = a.ledger->compare(k, against);
      }
    }
  }

  // The verdict by the session's own rule, for a session that did not give one.
  if (!s.summary) {
    if (!s.protocol) {
      a.provisional_problem =
          "the protocol on record does not load, so its posterior threshold "
          "is unknown";
    } else if (a.rebuilt) {
      std::vector<twin::ModelCheckResult> results;
      for (const HypothesisCheck& c : a.checks) results.push_back(c.result);
      try {
        a.provisional = twin::decide(*a.rebuilt, results, s.protocol->stop.posterior_threshold);
      } catch (const std::invalid_argument& e) {
        a.provisional_problem = e.what();
      }
    }
  }

  // Realised information gain: KL(posterior after the trial || posterior before it), in nats,
  // from the recorded posteriors; before the first scored trial the posterior is the uniform
  // prior.
  std::vector<double> before(hypotheses, 1.0 / static_cast<double>(hypotheses));
  for (const Trial& t : s.trials) {
    if (!t.has_posterior) continue;
    InfoPoint p;
    p.trial = t.trial;
    p.validation = t.validation;
    p.expected = t.eig;
    if (std::isnan(t.eig)) ++a.eig_missing;
    double kl = 0.0;
    for (std::size_t k = 0; k < hypotheses; ++k) {
      const double after = t.probability[k];
      if (std::isnan(after) || std::isnan(before[k])) {
        kl = kNaN;
        break;
      }
      if (after > 0.0) {
        kl += before[k] > 0.0 ? after * std::log(after / before[k])
                              : std::numeric_limits<double>::infinity();
      }
    }
    p.realised = kl;
    a.information.push_back(p);
    before = t.probability;
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// SVG plots

struct Range {
  double lo = 0.0, hi = 1.0;
};

Range padded(double lo, double hi, bool from_zero = false) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0.0, 1.0};
  if (from_zero) lo = std::min(lo, 0.0);
  if (hi - lo < 1e-12) {
    const double pad = std::max(std::abs(hi) * 0.1, 0.5);
    return {from_zero ? lo : lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * 0.05;
  return {from_zero && lo >= 0.0 ? lo : lo - pad, hi + pad};
}

// Round tick positions over [lo, hi]: steps of 1, 2 or 5 times a power of ten, about `target`.
std::vector<double> ticks(Range r, int target = 5) {
  const double span = r.hi - r.lo;
  if (!(span > 0.0) || !std::isfinite(span)) return {r.lo};
  const double raw = span / target;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (raw <= step) break;
  }
  std::vector<double> out;
  for (double v = std::ceil(r.lo / step) * step; v <= r.hi + step * 1e-9; v += step) {
    out.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return out;
}

// One plot: a frame with axes in data coordinates, marks added in data coordinates, and an
// optional legend. Every plot is an <svg class="plot">, titled, with a data-kind attribute.
class Plot {
 public:
  Plot(std::string title, Range x, Range y, std::string x_label, std::string y_label,
       int width = 460, int height = 300)
      : title_(std::move(title)),
        x_(x),
        y_(y),
        x_label_(std::move(x_label)),
        y_label_(std::move(y_label)),
        width_(width),
        height_(height) {}

  void categories_x(std::vector<std::string> labels) { x_categories_ = std::move(labels); }
  void categories_y(std::vector<std::string> labels) { y_categories_ = std::move(labels); }
  void attribute(std::string name, std::string value) {
    attributes_ += " " + name + "=\"" + esc(value) + "\"";
  }

  [[nodiscard]] double px(double x) const {
    return kLeft + (x - x_.lo) / (x_.hi - x_.lo) * (width_ - kLeft - kRight);
  }
  [[nodiscard]] double py(double y) const {
    return height_ - kBottom - (y - y_.lo) / (y_.hi - y_.lo) * (height_ - kTop - kBottom);
  }

  void line(const std::vector<std::pair<double, double>>& points, const char* stroke,
            double width = 1.6, bool dashed = false) {
    std::string d;
    bool open = false;
    for (const auto& [x, y] : points) {
      if (!std::isfinite(x) || !std::isfinite(y)) {
        open = false;  // a gap in the line
        continue;
      }
      d += (open ? " L" : " M") + xy(px(clamp_x(x))) + " " + xy(py(clamp_y(y)));
      open = true;
    }
    if (d.empty()) return;
    body_ += "<path d=\"" + d.substr(1) + "\" fill=\"none\" stroke=\"" + stroke +
             "\" stroke-width=\"" + xy(width) + "\"" + (dashed ? " stroke-dasharray=\"5 4\"" : "") +
             "/>";
  }
  // Many points of one style in one group, each circle carrying only its position.
  void dots(const std::vector<std::pair<double, double>>& points, const char* fill, bool hollow,
            double r) {
    if (points.empty()) return;
    body_ += hollow ? std::string("<g fill=\"none\" stroke=\"") + fill + "\">"
                    : std::string("<g fill=\"") + fill + "\" fill-opacity=\"0.55\">";
    for (const auto& [x, y] : points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      body_ += "<circle cx=\"" + xy(px(clamp_x(x))) + "\" cy=\"" + xy(py(clamp_y(y))) + "\" r=\"" +
               xy(r) + "\"/>";
    }
    body_ += "</g>";
  }
  void point(double x, double y, const char* fill, bool hollow = false, double r = 2.6,
             std::string_view tip = {}) {
    if (!std::isfinite(x) || !std::isfinite(y)) return;
    body_ += "<circle cx=\"" + xy(px(clamp_x(x))) + "\" cy=\"" + xy(py(clamp_y(y))) + "\" r=\"" +
             xy(r) + "\"" +
             (hollow ? std::string(" fill=\"none\" stroke=\"") + fill + "\""
                     : std::string(" fill=\"") + fill + "\" fill-opacity=\"0.55\"");
    if (tip.empty()) {
      body_ += "/>";
    } else {
      body_ += "><title>" + esc(tip) + "</title></circle>";
    }
  }
  void box(double x0, double y0, double x1, double y1, const std::string& fill,
           std::string_view tip = {}, double opacity = 1.0) {
    const double left = px(clamp_x(std::min(x0, x1))), right = px(clamp_x(std::max(x0, x1)));
    const double top = py(clamp_y(std::max(y0, y1))), bottom = py(clamp_y(std::min(y0, y1)));
    body_ += "<rect x=\"" + xy(left) + "\" y=\"" + xy(top) + "\" width=\"" +
             xy(std::max(right - left, 0.0)) + "\" height=\"" + xy(std::max(bottom - top, 0.0)) +
             "\" fill=\"" + fill + "\"";
    if (opacity < 1.0) body_ += " fill-opacity=\"" + fixed(opacity, 2) + "\"";
    if (tip.empty()) {
      body_ += "/>";
    } else {
      body_ += "><title>" + esc(tip) + "</title></rect>";
    }
  }
  void label(double x, double y, std::string_view text, const char* fill = "#222") {
    body_ += "<text x=\"" + xy(px(x)) + "\" y=\"" + xy(py(y) + 4) +
             "\" text-anchor=\"middle\" font-size=\"10\" fill=\"" + fill + "\">" + esc(text) +
             "</text>";
  }
  void legend(const std::vector<std::pair<std::string, std::string>>& entries) {
    legend_ = entries;
  }

  [[nodiscard]] std::string svg(std::string_view kind) const {
    std::string out = "<svg class=\"plot\" data-kind=\"" + esc(kind) +
                      "\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width_) +
                      "\" height=\"" + std::to_string(height_) + "\" viewBox=\"0 0 " +
                      std::to_string(width_) + " " + std::to_string(height_) + "\" role=\"img\"" +
                      attributes_ + " font-family=\"sans-serif\"><title>" + esc(title_) +
                      "</title>";
    out += "<text x=\"" + std::to_string(width_ / 2) +
           "\" y=\"14\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"bold\">" +
           esc(title_) + "</text>";
    const double left = px(x_.lo), right = px(x_.hi), top = py(y_.hi), bottom = py(y_.lo);
    out += "<rect x=\"" + xy(left) + "\" y=\"" + xy(top) + "\" width=\"" + xy(right - left) +
           "\" height=\"" + xy(bottom - top) + "\" fill=\"#fbfbfb\" stroke=\"#999\"/>";
    // Ticks and grid.
    if (x_categories_.empty()) {
      for (const double t : ticks(x_)) {
        out += "<line x1=\"" + xy(px(t)) + "\" y1=\"" + xy(top) + "\" x2=\"" + xy(px(t)) +
               "\" y2=\"" + xy(bottom) + "\" stroke=\"#e4e4e4\"/>";
        out += "<text x=\"" + xy(px(t)) + "\" y=\"" + xy(bottom + 14) +
               "\" text-anchor=\"middle\" font-size=\"10\">" + esc(num(t, 4)) + "</text>";
      }
    } else {
      const std::size_t every = (x_categories_.size() + 19) / 20;  // at most about 20 labels
      for (std::size_t i = 0; i < x_categories_.size(); i += every) {
        const double x = px(static_cast<double>(i));
        out += "<text x=\"" + xy(x) + "\" y=\"" + xy(bottom + 14) +
               "\" text-anchor=\"middle\" font-size=\"10\">" + esc(x_categories_[i]) + "</text>";
      }
    }
    if (y_categories_.empty()) {
      for (const double t : ticks(y_)) {
        out += "<line x1=\"" + xy(left) + "\" y1=\"" + xy(py(t)) + "\" x2=\"" + xy(right) +
               "\" y2=\"" + xy(py(t)) + "\" stroke=\"#e4e4e4\"/>";
        out += "<text x=\"" + xy(left - 5) + "\" y=\"" + xy(py(t) + 3) +
               "\" text-anchor=\"end\" font-size=\"10\">" + esc(num(t, 4)) + "</text>";
      }
    } else {
      const std::size_t every = (y_categories_.size() + 14) / 15;
      for (std::size_t i = 0; i < y_categories_.size(); i += every) {
        out += "<text x=\"" + xy(left - 5) + "\" y=\"" + xy(py(static_cast<double>(i)) + 3) +
               "\" text-anchor=\"end\" font-size=\"10\">" + esc(y_categories_[i]) + "</text>";
      }
    }
    out += body_;
    out += "<text x=\"" + xy((left + right) / 2) + "\" y=\"" + std::to_string(height_ - 6) +
           "\" text-anchor=\"middle\" font-size=\"11\">" + esc(x_label_) + "</text>";
    out += "<text transform=\"translate(13 " + xy((top + bottom) / 2) +
           ") rotate(-90)\" text-anchor=\"middle\" font-size=\"11\">" + esc(y_label_) + "</text>";
    // The legend runs along the top, between the title and the frame, so it never hides data.
    double x = left;
    for (const auto& [name, fill] : legend_) {
      out += "<rect x=\"" + xy(x) + "\" y=\"20\" width=\"10\" height=\"10\" fill=\"" + esc(fill) +
             "\"/>";
      out += "<text x=\"" + xy(x + 14) + "\" y=\"29\" font-size=\"10\">" + esc(name) + "</text>";
      x += 30.0 + 6.0 * static_cast<double>(name.size());
    }
    out += "</svg>";
    return out;
  }

 private:
  static constexpr double kLeft = 52, kRight = 12, kTop = 36, kBottom = 38;
  [[nodiscard]] double clamp_x(double x) const { return std::clamp(x, x_.lo, x_.hi); }
  [[nodiscard]] double clamp_y(double y) const { return std::clamp(y, y_.lo, y_.hi); }

  std::string title_;
  Range x_, y_;
  std::string x_label_, y_label_;
  int width_, height_;
  std::vector<std::string> x_categories_, y_categories_;
  std::vector<std::pair<std::string, std::string>> legend_;
  std::string attributes_;
  std::string body_;
};

// A sequential colour for a share in [0, 1]: white to dark blue.
std::string shade(double share) {
  share = std::clamp(share, 0.0, 1.0);
  const auto channel = [&](double from, double to) {
    return static_cast<int>(std::lround(from + (to - from) * share));
  };
  std::array<char, 16> buffer{};
  std::snprintf(buffer.data(), buffer.size(), "#%02x%02x%02x", channel(255, 16), channel(255, 60),
                channel(255, 130));
  return buffer.data();
}

// ---------------------------------------------------------------------------------------------
// The page

constexpr std::string_view kStyle = R"css(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1180px;
padding:0 1em;color:#1b1b1b;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #d0d0d0;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f1f1f1}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#e8f6e8;border-left:5px solid #2a9d3c;padding:.5em 1em}
.bad{background:#fbe9e7;border-left:5px solid #d4382c;padding:.5em 1em}
.note{background:#fff7e0;border-left:5px solid #e0a012;padding:.5em 1em}
.meta{color:#555;font-size:.9em}.plots{display:flex;flex-wrap:wrap;gap:12px}
tr.warn td{background:#fff4e5}code,pre{font-family:ui-monospace,monospace;font-size:.85em}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em}
.verdict{font-size:1.3em;font-weight:bold}td.detail{max-width:40em;word-break:break-all}
)css";

// Records into attributes of <html> whether the page loaded, every script error, how many plots
// there are, how many have a rendered size, and how many are not well-formed SVG (XML), so a
// headless browser's dumped DOM proves the page works (tests/daemon/test_report.cpp).
constexpr std::string_view kSelfCheck = R"js(
(function () {
  var root = document.documentElement, errors = [];
  window.onerror = function (message, source, line) {
    errors.push(String(message) + ' (line ' + line + ')');
    root.setAttribute('data-js-errors', String(errors.length));
    root.setAttribute('data-js-error-messages', errors.join(' | '));
    return false;
  };
  window.addEventListener('load', function () {
    var plots = document.querySelectorAll('svg.plot'), rendered = 0, malformed = 0;
    for (var i = 0; i < plots.length; i++) {
      var box = plots[i].getBoundingClientRect();
      if (box.width > 0 && box.height > 0 && plots[i].getBBox().width > 0) rendered++;
      var xml = new DOMParser().parseFromString(plots[i].outerHTML, 'image/svg+xml');
      if (xml.getElementsByTagName('parsererror').length > 0) malformed++;
    }
    root.setAttribute('data-svg-plots', String(plots.length));
    root.setAttribute('data-svg-rendered', String(rendered));
    root.setAttribute('data-svg-malformed', String(malformed));
    root.setAttribute('data-report-status', 'loaded');
  });
})();
)js";

std::optional<double> json_number(const json& object, std::string_view key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}
std::string json_string(const json& object, std::string_view key, std::string fallback = {}) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  if (it == object.end()) return fallback;
  return it->is_string() ? it->get<std::string>() : it->dump();
}
const json* summary_hypothesis(const Session& s, std::string_view name) {
  if (!s.summary) return nullptr;
  const auto it = s.summary->find("hypotheses");
  if (it == s.summary->end() || !it->is_array()) return nullptr;
  for (const json& h : *it) {
    if (h.is_object() && json_string(h, "name") == name) return &h;
  }
  return nullptr;
}

class Page {
 public:
  Page(const Session& s, const Analysis& a) : s_(s), a_(a) {}

  std::string render() {
    const std::string name = protocol_name();
    out_ +=
        "<!DOCTYPE html>\n<html lang=\"en\" data-report-status=\"loading\" "
        "data-js-errors=\"0\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>twinloop report: " +
        esc(name) + "</title><style>" + std::string(kStyle) + "</style><script>" +
        std::string(kSelfCheck) + "</script></head><body>\n";
    out_ += "<h1>Session report: " + esc(name) + "</h1>\n";
    out_ += "<p class=\"meta\">" + esc(s_.dir.string()) + " &middot; created " +
            esc(utc(s_.created_at_ns)) + " &middot; twinloop " + esc(s_.version) + " &middot; " +
            esc(run_line()) + "</p>\n";
    verify_section();
    missing_section();
    verdict_section();
    scores_section();
    predictions_section();
    calibration_section();
    stimuli_section();
    information_section();
    trials_section();
    events_section();
    protocol_section();
    out_ += "<p class=\"meta\">Written by <code>twinloop report</code> at " +
            esc(utc(Timestamp::now().wall_ns)) +
            ". Self-contained: no scripts, styles or fonts are loaded from anywhere.</p>\n";
    out_ += "</body></html>\n";
    return std::move(out_);
  }

 private:
  [[nodiscard]] std::string protocol_name() const {
    if (s_.protocol) return s_.protocol->name;
    if (s_.summary) return json_string(*s_.summary, "protocol", "(unnamed protocol)");
    return "(protocol does not load)";
  }
  [[nodiscard]] std::string run_line() const {
    try {
      const json config = json::parse(s_.config_json);
      std::string line;
      for (const char* key :
           {"rig", "seed", "seconds", "pace", "designer", "sim_model", "sim_units"}) {
        if (!config.contains(key)) continue;
        const std::string value = json_string(config, key);
        if (value.empty() || value == "\"\"") continue;
        line += (line.empty() ? "" : ", ") + std::string(key) + " " + value;
      }
      return line;
    } catch (const std::exception&) {
      return "run configuration unreadable";
    }
  }
  void note(std::string_view html) { out_ += "<p class=\"note\">" + std::string(html) + "</p>\n"; }
  [[nodiscard]] bool check_has_data() const {
    return std::any_of(a_.checks.begin(), a_.checks.end(),
                       [](const HypothesisCheck& c) { return c.checked_trials > 0; });
  }

  void verify_section() {
    const VerifyReport& v = s_.verify;
    out_ += "<section id=\"verify\"><h2>Record integrity (<code>twinloop verify</code>)</h2>\n";
    out_ += std::string("<div class=\"") + (v.clean() ? "ok" : "bad") + "\" data-verify=\"" +
            (v.clean() ? "clean" : "violations") + "\"><p><strong>" +
            (v.clean() ? "Clean: the hash chain is intact and every prediction was committed "
                         "before its trial's delivery."
                       : plural(v.violations.size(), "violation", "violations") +
                             (v.chain_intact ? " (the hash chain itself is intact)"
                                             : ": the hash chain is BROKEN")) +
            "</strong></p>\n";
    out_ += "<p>" + std::to_string(v.chain_links) + " chain links; " + std::to_string(v.trials) +
            " trials, " + std::to_string(v.predictions) + " prediction rows, " +
            std::to_string(v.deliveries) + " deliveries, " + std::to_string(v.outcomes) +
            " outcomes, " + std::to_string(v.posteriors) + " posterior rows, " +
            std::to_string(v.events) + " events. Head hash <code>" + esc(v.head_hash_hex) +
            "</code>: compare it with a head published during the session (the chain has no "
            "secret; see docs/session-record.md).</p>\n";
    if (!v.clean()) {
      out_ += "<table><tr><th>table</th><th>row</th><th>violation</th></tr>\n";
      for (std::size_t i = 0; i < v.violations.size() && i < kMaxListedViolations; ++i) {
        const Violation& x = v.violations[i];
        out_ += "<tr><td>" + esc(x.table) + "</td><td class=\"n\">" + std::to_string(x.row) +
                "</td><td>" + esc(x.what) + "</td></tr>\n";
      }
      out_ += "</table>\n";
      if (v.violations.size() > kMaxListedViolations) {
        out_ += "<p>and " + std::to_string(v.violations.size() - kMaxListedViolations) +
                " more (run <code>twinloop verify</code> for all).</p>\n";
      }
      out_ +=
          "<p>Everything below is read from this record as it stands; treat it with the "
          "suspicion the violations call for.</p>\n";
    }
    out_ += "</div></section>\n";
  }

  void missing_section() {
    std::vector<std::string> missing;
    if (!s_.summary) {
      missing.push_back(esc(s_.summary_problem) + ".");
      missing.push_back(
          "The session's own verdict and reason: not recorded. A <em>provisional</em> verdict is "
          "computed below by the session's rule from the record.");
      missing.push_back("Why the session stopped: not recorded.");
      missing.push_back(
          "Acquisition health (gaps, dropped events, spikes detected, latency) and the comparison "
          "with the simulated ground truth: only summary.json holds them.");
    }
    if (!s_.protocol) {
      missing.push_back(
          "The protocol on record does not load in this build, so its stop rules "
          "and stimulus space are unknown here:<pre>" +
          esc(s_.protocol_problem) + "</pre>");
    }
    if (!check_has_data()) {
      missing.push_back(
          "Calibration (PIT, coverage), bits per spike and Spearman &rho;: no validation trial "
          "was scored after the twins were first fitted (" +
          std::to_string(a_.fit_after) + " scored trials), so there is nothing to check.");
    }
    if (missing.empty()) return;
    out_ +=
        "<section id=\"missing\"><h2>What this report could not compute</h2>"
        "<div class=\"note\"><ul>\n";
    for (const std::string& m : missing) out_ += "<li>" + m + "</li>\n";
    out_ += "</ul></div></section>\n";
  }

  void verdict_section() {
    out_ += "<section id=\"verdict\"><h2>Verdict</h2>\n";
    if (s_.summary) {
      out_ += "<p class=\"verdict\" data-verdict=\"" + esc(json_string(*s_.summary, "verdict")) +
              "\">Verdict: " + esc(json_string(*s_.summary, "verdict", "(missing)")) + "</p>\n";
      out_ += "<p>" + esc(json_string(*s_.summary, "verdict_reason")) + "</p>\n";
    } else if (a_.provisional) {
      out_ += "<p class=\"verdict\" data-verdict=\"" + esc(a_.provisional->name) +
              "\">Provisional verdict: " + esc(a_.provisional->name) + "</p>\n";
      out_ += "<p>" + esc(a_.provisional->reason) +
              " (computed here by the session's rule from the record; the session did not "
              "end, so it gave none itself).</p>\n";
    } else {
      out_ += "<p class=\"verdict\" data-verdict=\"\">No verdict: " + esc(a_.provisional_problem) +
              "</p>\n";
    }
    out_ += "<p><strong>Stop reason:</strong> " + stop_reason() + "</p>\n";
    out_ +=
        "<p>The posterior starts uniform and is updated after every scored trial by the "
        "likelihood of its counts under each hypothesis's prediction registered before the "
        "trial (prequential). ";
    if (a_.rebuilt) {
      out_ += "Rebuilt here from the predictions and counts on record, it " +
              std::string(a_.rebuilt_difference <= 1e-9 ? "matches the recorded posterior"
                                                        : "DIFFERS from the recorded posterior") +
              " (largest difference " + num(a_.rebuilt_difference, 2) + ").";
    }
    out_ += "</p>\n<div class=\"plots\">";
    posterior_plot();
    evidence_plot();
    out_ += "</div></section>\n";
  }

  [[nodiscard]] std::string stop_reason() const {
    if (s_.summary && s_.summary->contains("stop_reason")) {
      return esc(json_string(*s_.summary, "stop_reason"));
    }
    std::string why;
    const std::size_t trials = s_.trials.empty() ? 0 : s_.trials.back().trial + 1;
    if (s_.protocol) {
      const protocols::StopRules& stop = s_.protocol->stop;
      double leader = 0.0;
      if (!a_.scored.empty()) {
        for (const double p : a_.scored.back()->probability) {
          if (p > leader) leader = p;
        }
      }
      if (stop.max_trials > 0 && trials >= stop.max_trials) {
        why = "the trial budget (max_trials " + std::to_string(stop.max_trials) + ") was reached";
      } else if (leader >= stop.posterior_threshold &&
                 trials >= ClosedLoopOptions{}.min_trials_before_stop) {
        why = "a hypothesis reached the posterior threshold " + num(stop.posterior_threshold, 6);
      } else if (!s_.summary) {
        why =
            "the session was interrupted before it ended (neither the trial budget nor the "
            "posterior threshold held at its last trial)";
      } else {
        why = "neither the trial budget (" + std::to_string(stop.max_trials) +
              ") nor the posterior threshold (" + num(stop.posterior_threshold, 6) +
              ") held, so the session ended on time (--seconds or max_minutes), by the operator "
              "or by a signal";
      }
    } else {
      why = "unknown (the protocol on record does not load)";
    }
    return esc(why) +
           " <em>(inferred from the record: neither the record nor summary.json "
           "states it)</em>";
  }

  void posterior_plot() {
    double first = kNaN, last = kNaN;
    std::vector<std::vector<std::pair<double, double>>> lines(s_.hypotheses.size());
    for (const Trial& t : s_.trials) {
      if (!t.has_posterior) continue;
      const auto x = static_cast<double>(t.trial);
      if (std::isnan(first)) first = x;
      last = x;
      for (std::size_t k = 0; k < lines.size(); ++k) lines[k].emplace_back(x, t.probability[k]);
    }
    if (std::isnan(first)) {
      out_ += "<p>No trial was scored: the posterior never left its uniform prior.</p>";
      return;
    }
    Plot real("Posterior probability of each hypothesis", padded(first, last), {0.0, 1.0}, "trial",
              "posterior probability", 560, 300);
    std::vector<std::pair<std::string, std::string>> legend;
    for (std::size_t k = 0; k < lines.size(); ++k) {
      real.line(lines[k], colour(k), 1.8);
      if (lines[k].size() <= 60) {
        for (const auto& [x, y] : lines[k]) real.point(x, y, colour(k), false, 2.0);
      }
      legend.emplace_back(s_.hypotheses[k].name, colour(k));
    }
    if (s_.protocol) {
      const double threshold = s_.protocol->stop.posterior_threshold;
      real.line({{first, threshold}, {last, threshold}}, "#777", 1.0, true);
    }
    real.legend(legend);
    real.attribute("data-trials", std::to_string(lines.front().size()));
    out_ += real.svg("posterior");
  }

  void evidence_plot() {
    // Log evidence relative to a reference hypothesis: the null when there is one.
    const std::size_t reference = a_.null_index.value_or(0);
    std::vector<std::vector<std::pair<double, double>>> lines(s_.hypotheses.size());
    double lo = 0.0, hi = 0.0, first = kNaN, last = kNaN;
    for (const Trial& t : s_.trials) {
      if (!t.has_posterior) continue;
      const auto x = static_cast<double>(t.trial);
      if (std::isnan(first)) first = x;
      last = x;
      for (std::size_t k = 0; k < lines.size(); ++k) {
        const double v = t.log_evidence[k] - t.log_evidence[reference];
        lines[k].emplace_back(x, v);
        if (std::isfinite(v)) {
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
      }
    }
    if (std::isnan(first)) return;
    Plot plot("Log Bayes factor against " + s_.hypotheses[reference].name, padded(first, last),
              padded(lo, hi), "trial", "log evidence \u2212 log evidence of reference (nats)", 560,
              300);
    std::vector<std::pair<std::string, std::string>> legend;
    for (std::size_t k = 0; k < lines.size(); ++k) {
      plot.line(lines[k], colour(k), 1.8);
      legend.emplace_back(s_.hypotheses[k].name, colour(k));
    }
    plot.legend(legend);
    out_ += plot.svg("log-bayes-factor");
  }

  void scores_section() {
    out_ += "<section id=\"scores\"><h2>Scores per hypothesis</h2>\n";
    out_ +=
        "<p>Log Bayes factors are natural logs of the ratio of prequential evidence against "
        "the protocol's null hypothesis (or, for the null itself or without one, the "
        "strongest other). Bits per spike are against the null hypothesis's registered "
        "predictions on the same trials (0 for the null; without a null, against a "
        "constant-rate Poisson model per unit fitted to those trials, which out-of-sample "
        "predictions from few trials rarely beat); "
        "Spearman &rho; is between predicted mean and observed count over (trial, unit) "
        "pairs, with a 95% bootstrap interval over trials. Bits per spike, &rho;, the PIT "
        "p-value and fits are on the validation trials scored after the twins were first fitted (" +
        std::to_string(a_.checked.size()) +
        " trials); the model check's p-value also holds its encompassing test (do this "
        "hypothesis's errors lean toward what another predicted?), which judges the designed "
        "trials after the first fit as well (" +
        std::to_string(a_.checked.size() + a_.designed_checked.size()) + " trials in all). ";
    out_ += s_.summary
                ? "Values are from summary.json; the column &ldquo;recomputed&rdquo; is this "
                  "report's own computation from the record with the session's code and "
                  "seed, as a cross-check.</p>\n"
                : "summary.json is absent: every value is computed here from the record, "
                  "with the session's code and seed.</p>\n";
    out_ +=
        "<table><tr><th>hypothesis</th><th>family</th><th>posterior</th><th>log BF</th>"
        "<th>against</th><th>bits/spike</th><th>Spearman &rho; [95% CI]</th><th>check p</th>"
        "<th>fits</th>" +
        std::string(s_.summary ? "<th>recomputed: log BF, bits/spike, &rho;, check p</th>" : "") +
        "</tr>\n";
    for (std::size_t k = 0; k < s_.hypotheses.size(); ++k) {
      const HypothesisCheck& c = a_.checks[k];
      const twin::ModelCheckResult& r = c.result;
      const double posterior = a_.scored.empty() ? 1.0 / static_cast<double>(s_.hypotheses.size())
                                                 : a_.scored.back()->probability[k];
      const std::string fits_here = c.checked_trials == 0 || !r.enough_data
                                        ? "too few validation data"
                                        : (r.fits ? "yes" : "no");
      out_ += "<tr data-hypothesis=\"" + esc(s_.hypotheses[k].name) + "\"><td>" +
              "<span style=\"color:" + colour(k) + "\">&#9632;</span> " +
              esc(s_.hypotheses[k].name) + "</td><td>" + esc(s_.hypotheses[k].family) + "</td>";
      if (const json* h = summary_hypothesis(s_, s_.hypotheses[k].name)) {
        const auto ci = h->find("spearman_ci");
        std::string interval;
        if (ci != h->end() && ci->is_array() && ci->size() == 2 && (*ci)[0].is_number() &&
            (*ci)[1].is_number()) {
          interval = " [" + fixed((*ci)[0].get<double>(), 2) + ", " +
                     fixed((*ci)[1].get<double>(), 2) + "]";
        }
        const auto fits = h->find("fits");
        out_ +=
            "<td class=\"n\">" + num(json_number(*h, "posterior").value_or(kNaN), 4) +
            "</td><td class=\"n\">" + fixed(json_number(*h, "log_bayes_factor").value_or(kNaN), 2) +
            "</td><td>" + esc(json_string(*h, "log_bayes_factor_against")) +
            "</td><td class=\"n\">" + fixed(json_number(*h, "bits_per_spike").value_or(kNaN), 3) +
            esc(versus(json_string(*h, "bits_per_spike_against"))) + "</td><td class=\"n\">" +
            fixed(json_number(*h, "spearman_rho").value_or(kNaN), 2) + esc(interval) +
            "</td><td class=\"n\">" + num(json_number(*h, "pit_p_value").value_or(kNaN), 3) +
            "</td><td>" +
            (fits != h->end() && fits->is_boolean() ? (fits->get<bool>() ? "yes" : "no") : "n/a") +
            "</td>";
      } else if (s_.summary) {
        out_ += "<td colspan=\"7\">not in summary.json</td>";
      } else {
        const std::string interval =
            r.spearman_ci_low == 0.0 && r.spearman_ci_high == 0.0
                ? ""
                : " [" + fixed(r.spearman_ci_low, 2) + ", " + fixed(r.spearman_ci_high, 2) + "]";
        out_ += "<td class=\"n\">" + num(posterior, 4) + "</td><td class=\"n\">" +
                fixed(c.log_bayes_factor, 2) + "</td><td>" + esc(c.against) +
                "</td><td class=\"n\">" + fixed(c.bits_per_spike, 3) +
                esc(versus(c.bits_per_spike_against)) + "</td><td class=\"n\">" +
                fixed(r.spearman, 2) + esc(interval) + "</td><td class=\"n\">" + num(r.p_value, 3) +
                "</td><td>" + esc(fits_here) + "</td>";
      }
      if (s_.summary) {
        // A summary written before bits per spike had a reference field measured them against a
        // constant rate: recompute what it holds.
        const json* h = summary_hypothesis(s_, s_.hypotheses[k].name);
        const bool constant_rate = h != nullptr && !h->contains("bits_per_spike_against");
        out_ += "<td class=\"n\">" + fixed(c.log_bayes_factor, 2) + ", " +
                fixed(constant_rate ? r.bits_per_spike_vs_constant_rate : c.bits_per_spike, 3) +
                ", " + fixed(r.spearman, 2) + ", " + num(r.p_value, 3) + "</td>";
      }
      out_ += "</tr>\n";
    }
    out_ += "</table>\n";
    by_unit_paragraph();
    if (s_.summary) run_table();
    out_ += "</section>\n";
  }

  // Where the leader's log Bayes factor comes from, recomputed from the record: a few units, many
  // weak ones, or the channels that saw nothing.
  void by_unit_paragraph() {
    if (!a_.rebuilt) return;
    const std::size_t k = a_.rebuilt->leader();
    const HypothesisCheck& c = a_.checks[k];
    if (!c.by_unit) return;
    const twin::UnitEvidence& e = *c.by_unit;
    std::string strongest;
    for (const twin::UnitShare& share : e.strongest) {
      strongest += (strongest.empty() ? "" : ", ") + std::string("unit ") +
                   std::to_string(share.unit) + " " + signed_fixed(share.log_bayes_factor, 1);
    }
    out_ += "<p data-by-unit=\"" + esc(s_.hypotheses[k].name) + "\" data-units-for=\"" +
            std::to_string(e.units_for) + "\" data-units-against=\"" +
            std::to_string(e.units_against) + "\" data-silent-units=\"" +
            std::to_string(e.silent_units) + "\">Where the leader's log Bayes factor comes from " +
            "(recomputed from the record): of " + esc(s_.hypotheses[k].name) + " over " +
            esc(c.against) + ", " + signed_fixed(e.log_bayes_factor_for, 1) + " from " +
            plural(e.units_for, "unit", "units") + " with a spike that favour it" +
            (strongest.empty() ? "" : " (strongest: " + strongest + ")") + ", " +
            signed_fixed(e.log_bayes_factor_against, 1) + " from " +
            plural(e.units_against, "unit", "units") + " that favour " + esc(c.against) + ", " +
            signed_fixed(e.silent_log_bayes_factor, 1) + " from " +
            plural(e.silent_units, "unit", "units") +
            " that never fired (where a twin can only lose, by predicting spikes).</p>\n";
  }

  void run_table() {
    const json& j = *s_.summary;
    out_ += "<h3>Run (from summary.json)</h3><table>";
    for (const char* key :
         {"protocol", "rig", "seed", "seconds", "trials", "validation_trials", "criticism_trials",
          "flagged_trials", "refused_trials", "aborted_trials", "deadline_misses", "gaps",
          "events_dropped", "spikes_detected", "faults_recorded", "resumed", "latency_us",
          "truth"}) {
      if (!j.contains(key)) continue;
      out_ += "<tr><th>" + esc(key) + "</th><td class=\"detail\">" + esc(json_string(j, key)) +
              "</td></tr>";
    }
    out_ += "</table>\n";
  }

  void predictions_section() {
    out_ +=
        "<section id=\"predictions\"><h2>Predicted against observed on validation "
        "trials</h2>\n";
    const std::size_t pairs = a_.validation.size() * s_.units;
    out_ += "<p data-validation-trials=\"" + std::to_string(a_.validation.size()) + "\">" +
            plural(a_.validation.size(), "scored validation trial", "scored validation trials") +
            " &times; " + plural(s_.units, "unit", "units") + " = " + std::to_string(pairs) +
            " points per hypothesis: the mean each hypothesis registered before the trial "
            "against the count observed in the response window. Filled: validation trials after "
            "the twins were first fitted (used by the model check); hollow: earlier ones, "
            "predicted from the prior. The dashed line is y = x.";
    if (pairs > kMaxScatterPoints) {
      out_ += " With more than " + std::to_string(kMaxScatterPoints) +
              " points the plot is a 2-D histogram (shade: number of points per cell).";
    }
    out_ += "</p>\n";
    if (a_.validation.empty()) {
      out_ += "<p>No validation trial was scored.</p></section>\n";
      return;
    }
    out_ += "<div class=\"plots\">";
    for (std::size_t k = 0; k < s_.hypotheses.size(); ++k) scatter(k, pairs);
    out_ += "</div></section>\n";
  }

  void scatter(std::size_t k, std::size_t pairs) {
    double top = 0.0;
    for (const Trial* t : a_.validation) {
      for (std::size_t u = 0; u < s_.units; ++u) {
        if (std::isfinite(t->mean[k][u])) top = std::max(top, t->mean[k][u]);
        top = std::max(top, static_cast<double>(t->counts[u]));
      }
    }
    const Range range = padded(0.0, top, true);
    Plot plot(s_.hypotheses[k].name + ": predicted vs observed", range, range,
              "predicted mean count", "observed count", 360, 320);
    plot.attribute("data-hypothesis", s_.hypotheses[k].name);
    plot.attribute("data-points", std::to_string(pairs));
    plot.line({{range.lo, range.lo}, {range.hi, range.hi}}, "#888", 1.0, true);
    if (pairs <= kMaxScatterPoints) {
      for (const bool checked : {false, true}) {
        std::vector<std::pair<double, double>> points;
        for (const Trial* t : a_.validation) {
          if (a_.checked.contains(t->trial) != checked) continue;
          for (std::size_t u = 0; u < s_.units; ++u) {
            points.emplace_back(t->mean[k][u], static_cast<double>(t->counts[u]));
          }
        }
        plot.dots(points, colour(k), !checked, 2.4);
      }
    } else {
      constexpr int kCells = 40;
      std::vector<std::size_t> cells(kCells * kCells, 0);
      const double width = (range.hi - range.lo) / kCells;
      auto cell = [&](double v) {
        return std::clamp(static_cast<int>((v - range.lo) / width), 0, kCells - 1);
      };
      for (const Trial* t : a_.validation) {
        for (std::size_t u = 0; u < s_.units; ++u) {
          if (!std::isfinite(t->mean[k][u])) continue;
          ++cells[static_cast<std::size_t>(cell(t->mean[k][u]) * kCells +
                                           cell(static_cast<double>(t->counts[u])))];
        }
      }
      const double most = static_cast<double>(*std::max_element(cells.begin(), cells.end()));
      for (int i = 0; i < kCells; ++i) {
        for (int j = 0; j < kCells; ++j) {
          const std::size_t n = cells[static_cast<std::size_t>(i * kCells + j)];
          if (n == 0) continue;
          // Log shading, so that a few outlying points stay visible beside the dense core.
          plot.box(range.lo + i * width, range.lo + j * width, range.lo + (i + 1) * width,
                   range.lo + (j + 1) * width,
                   shade(0.15 + 0.85 * std::log1p(static_cast<double>(n)) / std::log1p(most)),
                   std::to_string(n) + " points");
        }
      }
    }
    out_ += plot.svg("scatter");
  }

  void calibration_section() {
    out_ += "<section id=\"calibration\"><h2>Calibration on validation trials</h2>\n";
    out_ +=
        "<p>Randomized probability integral transform (PIT) of each observed count under its "
        "predicted distribution, u = F(y&minus;1) + v&middot;(F(y) &minus; F(y&minus;1)) with "
        "v uniform (Czado, Gneiting &amp; Held 2009): uniform on [0, 1] when the "
        "predictions are right. The distribution is Poisson where the recorded dispersion is "
        "0 and negative binomial with variance mean + dispersion&middot;mean&sup2; otherwise "
        "(twin/count_distribution.hpp). Same trials and seed as the session's model check: "
        "validation trials scored after the twins were first fitted. Dashed: the uniform "
        "expectation; band: &plusmn;2 binomial standard deviations.</p>\n";
    if (!check_has_data()) {
      out_ += "<p>Nothing to show: no such trial.</p></section>\n";
      return;
    }
    out_ += "<div class=\"plots\">";
    for (std::size_t k = 0; k < s_.hypotheses.size(); ++k) pit_histogram(k);
    out_ += "</div>\n";
    out_ +=
        "<p>Central-interval coverage: the share of PIT values in the central interval "
        "(exactly the nominal mass under a right model) and the share of counts inside the "
        "integer interval [q<sub>lo</sub>, q<sub>hi</sub>] of each prediction, beside what "
        "the predictions themselves expect (at least the nominal mass, counts being "
        "discrete). The encompassing statistic leans toward what a rival says that this "
        "hypothesis could not fit itself; <em>contained</em> marks a rival it contains near its "
        "fits, which is not tested.</p>\n<table><tr><th>hypothesis</th><th>trials</th><th>PIT "
        "values</th>";
    for (const HypothesisCheck::Interval& i : a_.checks.front().intervals) {
      const std::string m = percent(i.mass);
      out_ += "<th>PIT in central " + m + "</th><th>counts in " + m + " interval (expected)</th>";
    }
    out_ +=
        "<th>PIT p (&chi;&sup2; and KS)</th><th>encompassing z against each rival [lean toward "
        "it] (p)</th></tr>\n";
    for (std::size_t k = 0; k < s_.hypotheses.size(); ++k) {
      const HypothesisCheck& c = a_.checks[k];
      out_ += "<tr><td>" + esc(s_.hypotheses[k].name) + "</td><td class=\"n\">" +
              std::to_string(c.checked_trials) + "</td><td class=\"n\">" +
              std::to_string(c.pit.size()) + "</td>";
      for (const HypothesisCheck::Interval& i : c.intervals) {
        out_ += "<td class=\"n\">" + percent(i.pit_share) + "</td><td class=\"n\">" +
                percent(i.count_share) + " (" + percent(i.expected_count_share) + ")</td>";
      }
      out_ += "<td class=\"n\">" + num(c.result.chi_square_p_value, 3) + ", " +
              num(c.result.ks_p_value, 3) + "</td><td>";
      for (std::size_t r = 0; r < c.result.encompassing_z.size(); ++r) {
        const std::size_t j = twin::rival_hypothesis(k, r);
        out_ += (r > 0 ? ", " : "") +
                esc(j < s_.hypotheses.size() ? s_.hypotheses[j].name : std::string("?")) + " ";
        if (std::isnan(c.result.encompassing_z[r])) {
          out_ += "contained";  // nothing the rival says lies outside this twin's own reach
          continue;
        }
        out_ += fixed(c.result.encompassing_z[r], 2);
        if (r < c.result.encompassing_lean.size()) {
          out_ += " [" + percent(c.result.encompassing_lean[r]) + "]";
        }
      }
      out_ += c.result.encompassing_z.empty()
                  ? "n/a</td></tr>\n"
                  : " (" + num(c.result.encompassing_p_value, 3) + ")</td></tr>\n";
      if (c.skipped_trials > 0) {
        out_ += "<tr><td colspan=\"" + std::to_string(5 + 2 * c.intervals.size()) + "\">" +
                esc(s_.hypotheses[k].name) + ": " + plural(c.skipped_trials, "trial", "trials") +
                " skipped: a prediction that is not finite and non-negative</td></tr>\n";
      }
    }
    out_ += "</table></section>\n";
  }

  void pit_histogram(std::size_t k) {
    const HypothesisCheck& c = a_.checks[k];
    const std::vector<std::size_t>& histogram = c.result.histogram;
    if (histogram.empty() || c.pit.empty()) return;
    const double bins = static_cast<double>(histogram.size());
    const double n = static_cast<double>(c.pit.size());
    const double expected = n / bins;
    const double sd = std::sqrt(n * (1.0 / bins) * (1.0 - 1.0 / bins));
    double top = expected + 2.0 * sd;
    for (const std::size_t h : histogram) top = std::max(top, static_cast<double>(h));
    Plot plot(s_.hypotheses[k].name + ": randomized PIT", {0.0, 1.0}, padded(0.0, top, true),
              "PIT value", "count", 360, 260);
    plot.attribute("data-hypothesis", s_.hypotheses[k].name);
    plot.attribute("data-values", std::to_string(c.pit.size()));
    plot.box(0.0, std::max(expected - 2.0 * sd, 0.0), 1.0, expected + 2.0 * sd, "#bbbbbb", {},
             0.35);
    for (std::size_t b = 0; b < histogram.size(); ++b) {
      const double x0 = static_cast<double>(b) / bins, x1 = static_cast<double>(b + 1) / bins;
      plot.box(x0 + 0.004, 0.0, x1 - 0.004, static_cast<double>(histogram[b]), colour(k),
               "[" + fixed(x0, 1) + ", " + fixed(x1, 1) + "): " + std::to_string(histogram[b]),
               0.8);
    }
    plot.line({{0.0, expected}, {1.0, expected}}, "#333", 1.2, true);
    out_ += plot.svg("pit");
  }

  void stimuli_section() {
    out_ += "<section id=\"stimuli\"><h2>Stimuli the designer chose</h2>\n";
    // Each candidate's values per dimension, from the candidates table.
    std::vector<std::string> dims;
    std::vector<std::vector<json>> values;  // per candidate, per dimension
    bool readable = true;
    for (const std::string& text : s_.candidates_json) {
      try {
        const json c = json::parse(text);
        if (!c.is_object()) throw std::runtime_error("not an object");
        if (dims.empty()) {
          for (const auto& [key, value] : c.items()) dims.push_back(key);
        }
        std::vector<json> row;
        for (const std::string& d : dims) row.push_back(c.contains(d) ? c.at(d) : json());
        values.push_back(std::move(row));
      } catch (const std::exception&) {
        readable = false;
        values.emplace_back(dims.size());
      }
    }
    std::vector<std::size_t> designed(s_.candidates_json.size(), 0);
    std::vector<std::size_t> validation(s_.candidates_json.size(), 0);
    std::size_t off_grid = 0, total = 0;
    for (const Trial& t : s_.trials) {
      ++total;
      if (t.candidate < 0 || static_cast<std::size_t>(t.candidate) >= designed.size()) {
        ++off_grid;
        continue;
      }
      ++(t.validation ? validation : designed)[static_cast<std::size_t>(t.candidate)];
    }
    std::size_t validation_total = 0;
    for (const std::size_t v : validation) validation_total += v;
    out_ += "<p>" + plural(total, "trial", "trials") + " over " +
            plural(s_.candidates_json.size(), "candidate", "candidates") + ": " +
            std::to_string(total - off_grid - validation_total) +
            " chosen by the designer (including deadline fallbacks), " +
            std::to_string(validation_total) +
            " validation trials drawn at random independently of it" +
            (off_grid > 0 ? ", " + std::to_string(off_grid) + " off the candidate grid" : "") +
            ". Every trial on record is counted, aborted ones included.</p>\n";
    if (!readable) note("Some candidates' stimulus_json is not a JSON object; they are left out.");
    if (dims.empty()) {
      out_ += "<p>The candidates have no dimensions to plot.</p></section>\n";
      return;
    }
    // Labels per dimension value, in numeric order where the values are numbers.
    auto label = [](const json& v) {
      return v.is_number() ? num(v.get<double>(), 6)
                           : (v.is_string() ? v.get<std::string>() : v.dump());
    };
    auto less = [](const json& a, const json& b) {
      if (a.is_number() && b.is_number()) return a.get<double>() < b.get<double>();
      return a.dump() < b.dump();
    };
    std::vector<std::vector<json>> levels(dims.size());
    for (std::size_t d = 0; d < dims.size(); ++d) {
      for (const auto& row : values) {
        if (std::none_of(levels[d].begin(), levels[d].end(),
                         [&](const json& v) { return v == row[d]; })) {
          levels[d].push_back(row[d]);
        }
      }
      std::sort(levels[d].begin(), levels[d].end(), less);
    }
    auto level_of = [&](std::size_t d, const json& v) {
      return static_cast<std::size_t>(std::find(levels[d].begin(), levels[d].end(), v) -
                                      levels[d].begin());
    };
    out_ += "<div class=\"plots\">";
    // One stacked bar chart per dimension: trials per value, designed and validation.
    for (std::size_t d = 0; d < dims.size(); ++d) {
      std::vector<std::size_t> des(levels[d].size(), 0), val(levels[d].size(), 0);
      for (std::size_t c = 0; c < values.size(); ++c) {
        const std::size_t l = level_of(d, values[c][d]);
        if (l >= levels[d].size()) continue;
        des[l] += designed[c];
        val[l] += validation[c];
      }
      double top = 1.0;
      for (std::size_t l = 0; l < des.size(); ++l) {
        top = std::max(top, static_cast<double>(des[l] + val[l]));
      }
      const double n = static_cast<double>(levels[d].size());
      Plot plot("Trials per " + dims[d], {-0.5, n - 0.5}, padded(0.0, top, true), dims[d], "trials",
                std::max(360, std::min(900, 40 * static_cast<int>(n) + 100)), 260);
      std::vector<std::string> labels;
      for (std::size_t l = 0; l < levels[d].size(); ++l) {
        labels.push_back(label(levels[d][l]));
        const double x = static_cast<double>(l);
        const auto lower = static_cast<double>(des[l]);
        plot.box(x - 0.4, 0.0, x + 0.4, lower, colour(0),
                 dims[d] + " " + labels.back() + ": " + std::to_string(des[l]) + " designed");
        plot.box(x - 0.4, lower, x + 0.4, lower + static_cast<double>(val[l]), colour(4),
                 dims[d] + " " + labels.back() + ": " + std::to_string(val[l]) + " validation");
      }
      plot.categories_x(labels);
      plot.legend({{"designed", colour(0)}, {"validation", colour(4)}});
      plot.attribute("data-dimension", dims[d]);
      out_ += plot.svg("stimulus-bars");
    }
    // Two dimensions: where in the plane, one heat map per kind of trial.
    if (dims.size() == 2) {
      for (const bool kind : {false, true}) {
        const std::vector<std::size_t>& counts = kind ? validation : designed;
        std::map<std::pair<std::size_t, std::size_t>, std::size_t> cell;
        std::size_t most = 1;
        for (std::size_t c = 0; c < values.size(); ++c) {
          const std::size_t n =
              (cell[{level_of(0, values[c][0]), level_of(1, values[c][1])}] += counts[c]);
          most = std::max(most, n);
        }
        const double nx = static_cast<double>(levels[0].size());
        const double ny = static_cast<double>(levels[1].size());
        Plot plot(std::string(kind ? "Validation" : "Designed") + " trials over " + dims[0] +
                      " \u00d7 " + dims[1],
                  {-0.5, nx - 0.5}, {-0.5, ny - 0.5}, dims[0], dims[1],
                  std::max(360, std::min(900, 44 * static_cast<int>(nx) + 100)),
                  std::max(220, std::min(700, 30 * static_cast<int>(ny) + 90)));
        std::vector<std::string> xl, yl;
        for (const json& v : levels[0]) xl.push_back(label(v));
        for (const json& v : levels[1]) yl.push_back(label(v));
        for (const auto& [where, n] : cell) {
          const double x = static_cast<double>(where.first);
          const double y = static_cast<double>(where.second);
          plot.box(x - 0.5, y - 0.5, x + 0.5, y + 0.5,
                   shade(static_cast<double>(n) / static_cast<double>(most)),
                   dims[0] + " " + xl[where.first] + ", " + dims[1] + " " + yl[where.second] +
                       ": " + std::to_string(n) + " trials");
          if (n > 0 && cell.size() <= 300) {
            plot.label(x, y, std::to_string(n),
                       static_cast<double>(n) > 0.55 * static_cast<double>(most) ? "#fff" : "#222");
          }
        }
        plot.categories_x(xl);
        plot.categories_y(yl);
        out_ += plot.svg("stimulus-heatmap");
      }
    }
    out_ += "</div></section>\n";
  }

  void information_section() {
    out_ += "<section id=\"information\"><h2>Expected against realised information gain</h2>\n";
    out_ +=
        "<p><strong>Expected</strong>: the designer's expected information gain about which "
        "hypothesis is true for the chosen stimulus (trials.expected_information_gain, nats), "
        "before the trial. <strong>Realised</strong> (defined by this report): the "
        "Kullback&ndash;Leibler divergence of the posterior after the trial from the "
        "posterior before it, KL(after &#8214; before) = &sum;<sub>k</sub> p<sub>after</sub>"
        "(k) ln(p<sub>after</sub>(k) / p<sub>before</sub>(k)), in nats, from the recorded "
        "posteriors (the first scored trial's \"before\" is the uniform prior). The expected "
        "gain is the mean of this divergence over the outcomes the hypotheses predict, so the "
        "two are comparable on average, not trial by trial.</p>\n";
    double expected_sum = 0.0, realised_sum = 0.0, top = 0.0;
    std::size_t both = 0;
    for (const InfoPoint& p : a_.information) {
      if (std::isfinite(p.expected) && std::isfinite(p.realised)) {
        expected_sum += p.expected;
        realised_sum += p.realised;
        top = std::max({top, p.expected, p.realised});
        ++both;
      }
    }
    out_ += "<p>" + plural(a_.information.size(), "scored trial", "scored trials") + "; " +
            std::to_string(both) + " with both values (expected gain not computed for " +
            std::to_string(a_.eig_missing) + "). Sum over those: expected " +
            fixed(expected_sum, 3) + " nats, realised " + fixed(realised_sum, 3) + " nats.</p>\n";
    if (both == 0) {
      out_ += "</section>\n";
      return;
    }
    out_ += "<div class=\"plots\">";
    const Range range = padded(0.0, top, true);
    Plot plot("Information gain per trial", range, range, "expected (nats)", "realised (nats)", 380,
              320);
    plot.attribute("data-points", std::to_string(both));
    plot.line({{range.lo, range.lo}, {range.hi, range.hi}}, "#888", 1.0, true);
    for (const InfoPoint& p : a_.information) {
      plot.point(p.expected, p.realised, p.validation ? colour(4) : colour(0), false, 3.0,
                 "trial " + std::to_string(p.trial) + ": expected " + num(p.expected) +
                     ", realised " + num(p.realised));
    }
    plot.legend({{"designed", colour(0)}, {"validation", colour(4)}});
    out_ += plot.svg("information-scatter");

    std::vector<std::pair<double, double>> expected_line, realised_line;
    double e = 0.0, r = 0.0, first = kNaN, last = kNaN;
    for (const InfoPoint& p : a_.information) {
      if (!(std::isfinite(p.expected) && std::isfinite(p.realised))) continue;
      e += p.expected;
      r += p.realised;
      const auto x = static_cast<double>(p.trial);
      if (std::isnan(first)) first = x;
      last = x;
      expected_line.emplace_back(x, e);
      realised_line.emplace_back(x, r);
    }
    Plot cumulative("Cumulative information gain", padded(first, last),
                    padded(0.0, std::max(e, r), true), "trial", "nats", 480, 320);
    cumulative.line(expected_line, colour(0), 1.8);
    cumulative.line(realised_line, colour(1), 1.8);
    cumulative.legend({{"expected", colour(0)}, {"realised", colour(1)}});
    out_ += cumulative.svg("information-cumulative");
    out_ += "</div></section>\n";
  }

  void trials_section() {
    out_ += "<section id=\"trials\"><h2>Trials</h2>\n";
    std::map<std::string, std::size_t> by_status;
    for (const Trial& t : s_.trials) ++by_status[t.status];
    // Refused trials: a refused_command event names them (the trial is then aborted).
    std::map<std::uint64_t, std::vector<const Event*>> reasons;
    std::set<std::uint64_t> refused;
    for (const Event& e : s_.events) {
      if (!e.trial || *e.trial < 0) continue;
      const auto trial = static_cast<std::uint64_t>(*e.trial);
      if (e.kind == event_kind::kRefusedCommand) refused.insert(trial);
      if (e.kind == event_kind::kRefusedCommand || e.kind == event_kind::kTrialFlagged ||
          e.kind == event_kind::kTrialAborted || e.kind == event_kind::kFault ||
          e.kind == event_kind::kGap) {
        reasons[trial].push_back(&e);
      }
    }
    out_ += "<table><tr><th>status</th><th>trials</th></tr>";
    for (const auto& [status, n] : by_status) {
      out_ += "<tr><td>" + esc(status) + "</td><td class=\"n\">" + std::to_string(n) + "</td></tr>";
    }
    out_ += "<tr><td>refused (by the safety gate or rig; also aborted)</td><td class=\"n\">" +
            std::to_string(refused.size()) + "</td></tr></table>\n";
    std::vector<const Trial*> listed;
    for (const Trial& t : s_.trials) {
      if (t.status == "flagged" || t.status == "aborted" || refused.contains(t.trial)) {
        listed.push_back(&t);
      }
    }
    out_ += "<p data-problem-trials=\"" + std::to_string(listed.size()) + "\">" +
            plural(listed.size(), "trial was", "trials were") +
            " flagged, aborted or refused; none of them was scored.</p>\n";
    if (!listed.empty()) {
      out_ +=
          "<table><tr><th>trial</th><th>status</th><th>strategy</th><th>stimulus</th>"
          "<th>why (events on record)</th></tr>\n";
      for (const Trial* t : listed) {
        std::string why;
        for (const Event* e : reasons[t->trial]) {
          why += (why.empty() ? "" : "<br>") + esc(e->kind) + ": " + esc(e->detail);
        }
        out_ += "<tr><td class=\"n\">" + std::to_string(t->trial) + "</td><td>" + esc(t->status) +
                (refused.contains(t->trial) ? " (refused)" : "") + "</td><td>" + esc(t->strategy) +
                "</td><td class=\"detail\">" + esc(t->stimulus_json) +
                "</td><td class=\"detail\">" + (why.empty() ? "no event says" : why) +
                "</td></tr>\n";
      }
      out_ += "</table>\n";
    }
    out_ += "</section>\n";
  }

  void events_section() {
    out_ += "<section id=\"events\"><h2>Events</h2>\n";
    std::map<std::string, std::size_t> by_kind;
    for (const Event& e : s_.events) ++by_kind[e.kind];
    out_ += "<p data-events=\"" + std::to_string(s_.events.size()) + "\">" +
            plural(s_.events.size(), "event", "events") + " on record";
    std::string kinds;
    for (const auto& [kind, n] : by_kind) {
      kinds += (kinds.empty() ? "" : ", ") + esc(kind) + " " + std::to_string(n);
    }
    out_ += (kinds.empty() ? "." : ": " + kinds + ".") + "</p>\n";
    if (s_.events.empty()) {
      out_ += "</section>\n";
      return;
    }
    out_ +=
        "<table id=\"event-table\"><tr><th>#</th><th>time</th><th>kind</th><th>trial</th>"
        "<th>detail</th></tr>\n";
    static const std::set<std::string, std::less<>> kWarn = {
        std::string(event_kind::kGap),
        std::string(event_kind::kDeadlineMiss),
        std::string(event_kind::kRefusedCommand),
        std::string(event_kind::kFault),
        std::string(event_kind::kTrialFlagged),
        std::string(event_kind::kTrialAborted)};
    for (const Event& e : s_.events) {
      out_ += std::string("<tr") + (kWarn.contains(e.kind) ? " class=\"warn\"" : "") +
              " data-kind=\"" + esc(e.kind) + "\"><td class=\"n\">" + std::to_string(e.id) +
              "</td><td>" + esc(utc(e.at_ns)) + "</td><td>" + esc(e.kind) +
              "</td><td class=\"n\">" + (e.trial ? std::to_string(*e.trial) : std::string()) +
              "</td><td class=\"detail\">" + esc(e.detail) + "</td></tr>\n";
    }
    out_ += "</table></section>\n";
  }

  void protocol_section() {
    out_ +=
        "<section id=\"protocol\"><h2>Protocol on record</h2><details><summary>The YAML "
        "exactly as the session read it (its SHA-256 starts the hash chain)</summary><pre>" +
        esc(s_.protocol_text) + "</pre></details></section>\n";
  }

  const Session& s_;
  const Analysis& a_;
  std::string out_;
};

void write_atomically(const fs::path& target, const std::string& content) {
  fs::path temporary = target;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw ReportError(target.string() + ": cannot write the report: " + std::strerror(errno));
    }
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      std::error_code ignored;
      fs::remove(temporary, ignored);
      throw ReportError(target.string() + ": writing the report failed");
    }
  }
  std::error_code ec;
  fs::rename(temporary, target, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw ReportError(target.string() + ": cannot write the report: " + ec.message());
  }
}

}  // namespace

int write_report(const ReportOptions& options) {
  try {
    const Session session = load(options.dir);
    const Analysis analysis = analyse(session);
    const std::string html = Page(session, analysis).render();
    const fs::path target = options.out.value_or(options.dir / "report.html");
    write_atomically(target, html);
    std::printf("report: %s (%zu bytes); verify: %s\n", target.string().c_str(), html.size(),
                session.verify.clean()
                    ? "clean"
                    : (std::to_string(session.verify.violations.size()) + " violations").c_str());
    return kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop report: %s\n", e.what());
    return kExitRefused;
  }
}

}  // namespace twinloop::daemon

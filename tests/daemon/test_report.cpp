// `twinloop report SESSION_DIR`, run as a user would. A real short session on the simulated rig
// is reported and the report is checked for what a reviewer needs (the verdict, every
// hypothesis, one scatter point per validation (trial, unit), every event) and rendered in
// headless Chromium, whose dumped DOM proves the page loaded without script errors and drew its
// plots. Hand-made records check the rest: text from the record is escaped (protocol name,
// hypothesis names, event details, stimulus dimensions), an interrupted session's report says
// what it could not compute, the realised information gain is the KL divergence it claims, and
// a missing, foreign, garbage or truncated record is refused with exit 1 naming the file.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "daemon_test_support.hpp"
#include "twinloop/daemon/session_record.hpp"

namespace {

namespace fs = std::filesystem;
using twinloop::daemon::HypothesisPrediction;
using twinloop::daemon::SessionRecord;
using twinloop::daemon::SessionSetup;
using twinloop::daemon::TrialDesign;
using twinloop::daemon::TrialStatus;
using twinloop::test_support::shell;
using Result = twinloop::test_support::ShellResult;

std::string twinloop() {
  return TWINLOOP_BINARY;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// The value of attribute `name` on the first element that carries it, or "" when none does.
std::string attribute(const std::string& html, const std::string& name) {
  const std::string key = " " + name + "=\"";
  const std::size_t at = html.find(key);
  if (at == std::string::npos) return "";
  const std::size_t from = at + key.size();
  return html.substr(from, html.find('"', from) - from);
}

// Every value of attribute `name` on elements that also carry `data-kind="kind"` (the plots).
std::vector<std::string> plot_attributes(const std::string& html, const std::string& kind,
                                         const std::string& name) {
  // Plain searching: std::regex trips a GCC 12 false positive (-Wmaybe-uninitialized) under ASan.
  std::vector<std::string> values;
  const std::string opening = "<svg class=\"plot\" data-kind=\"" + kind + "\"";
  for (std::size_t at = html.find(opening); at != std::string::npos;
       at = html.find(opening, at + 1)) {
    const std::size_t end = html.find('>', at);
    if (end == std::string::npos) break;
    values.push_back(attribute(html.substr(at, end - at + 1), name));
  }
  return values;
}

std::int64_t query(const fs::path& session, const std::string& sql) {
  sqlite3* db = nullptr;
  std::int64_t value = -1;
  if (sqlite3_open_v2((session / "session.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) ==
      SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
      value = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return value;
}

// Renders `page` in headless Chromium and returns the DOM after load. Fails the test (not a
// skip) when Chromium is missing: CI installs it (scripts/install-deps.sh).
std::string render_in_chromium(const fs::path& page, const fs::path& work) {
  std::string browser;
  for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (fs::exists(candidate)) {
      browser = candidate;
      break;
    }
  }
  if (browser.empty()) {
    ADD_FAILURE() << "headless Chromium is needed to check the report renders, and neither "
                     "/usr/bin/chromium nor /usr/bin/chromium-browser exists; install the Debian "
                     "package `chromium` (scripts/twinloop.sh test does)";
    return "";
  }
  const fs::path dom = work / "dom.html";
  const fs::path log = work / "chromium.log";
  const fs::path profile = work / "chromium-profile";
  const Result r =
      shell("HOME=" + work.string() + " timeout 120 " + browser +
            " --headless --no-sandbox --disable-gpu --no-first-run "
            "--user-data-dir=" +
            profile.string() + " --virtual-time-budget=10000 --dump-dom 'file://" +
            fs::absolute(page).string() + "' > " + dom.string() + " 2> " + log.string());
  EXPECT_EQ(r.status, 0) << "chromium failed: " << read_file(log);
  return read_file(dom);
}

// Checks the DOM Chromium dumped: loaded, no script error, every plot rendered and well-formed.
void expect_rendered(const std::string& dom, const std::string& html) {
  ASSERT_FALSE(dom.empty()) << "chromium dumped no DOM";
  EXPECT_EQ(attribute(dom, "data-report-status"), "loaded") << dom.substr(0, 400);
  EXPECT_EQ(attribute(dom, "data-js-errors"), "0") << attribute(dom, "data-js-error-messages");
  const std::string plots = std::to_string(count_of(html, "<svg class=\"plot\""));
  EXPECT_EQ(attribute(dom, "data-svg-plots"), plots);
  EXPECT_EQ(attribute(dom, "data-svg-rendered"), plots);
  EXPECT_EQ(attribute(dom, "data-svg-malformed"), "0");
}

// ---------------------------------------------------------------------------------------------
// A real session

class ReportSession : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(twinloop::test_support::fresh_temp_dir("report_session"));
    session_ = new fs::path(*dir_ / "session");
    const fs::path protocol = *dir_ / "short.yaml";
    std::ofstream(protocol) << twinloop::test_support::short_trials_protocol("report_short", 16);
    // Trials 0.25 s apart, at most 16, at max pace: the stream runs only as far as each trial
    // needs, so a session starved of CPU (headless Chromium rendering in the next test process)
    // holds the same trials, only later. The run is killed (SIGKILL, from a test failpoint) right
    // after trial 4's delivery and resumed, so the record also holds events (trial 4 aborted, the
    // resume) and an aborted trial to list. The kill and the trial budget end both runs;
    // --seconds is only a bound.
    killed_ = new Result(
        shell("TWINLOOP_FAILPOINT=after_delivery:4 " + twinloop() + " run " + protocol.string() +
              " --rig sim --pace max --seconds 60 --seed 11 --quiet --out " + session_->string()));
    run_ =
        new Result(shell(twinloop() + " resume " + session_->string() + " --seconds 60 --quiet"));
    report_ = new Result(shell(twinloop() + " report " + session_->string()));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete report_;
    delete run_;
    delete killed_;
    delete session_;
    delete dir_;
  }
  void SetUp() override {
    ASSERT_EQ(killed_->signal(), SIGKILL)
        << "the failpoint should have killed the run: " << killed_->output;
    ASSERT_EQ(run_->status, 0) << run_->output;
    ASSERT_EQ(report_->status, 0) << report_->output;
    html_ = read_file(*session_ / "report.html");
    ASSERT_FALSE(html_.empty());
  }

  static fs::path* dir_;
  static fs::path* session_;
  static Result* killed_;
  static Result* run_;
  static Result* report_;
  std::string html_;
};
fs::path* ReportSession::dir_ = nullptr;
fs::path* ReportSession::session_ = nullptr;
Result* ReportSession::killed_ = nullptr;
Result* ReportSession::run_ = nullptr;
Result* ReportSession::report_ = nullptr;

TEST_F(ReportSession, ShowsTheVerdictEveryHypothesisValidationPointsAndEvents) {
  EXPECT_NE(report_->output.find("report.html"), std::string::npos) << report_->output;
  const nlohmann::json summary = nlohmann::json::parse(read_file(*session_ / "summary.json"));
  const std::string verdict = summary.at("verdict").get<std::string>();
  EXPECT_EQ(attribute(html_, "data-verdict"), verdict);
  EXPECT_NE(html_.find("Verdict: " + verdict), std::string::npos);
  EXPECT_EQ(attribute(html_, "data-verify"), "clean");
  EXPECT_NE(html_.find("Stop reason:"), std::string::npos);

  // Every hypothesis: a row of scores, a scatter plot and a PIT histogram (when checked).
  const std::int64_t units = query(*session_, "SELECT count(*) FROM units");
  const std::int64_t validation =
      query(*session_, "SELECT count(*) FROM trials WHERE is_validation = 1 AND status = 'scored'");
  ASSERT_GT(units, 0);
  ASSERT_GT(validation, 0) << "the session should have scored validation trials";
  EXPECT_EQ(attribute(html_, "data-validation-trials"), std::to_string(validation));
  const std::vector<std::string> scatter_names =
      plot_attributes(html_, "scatter", "data-hypothesis");
  const std::vector<std::string> scatter_points = plot_attributes(html_, "scatter", "data-points");
  ASSERT_EQ(scatter_names, (std::vector<std::string>{"tuned", "lnp", "flat"}));
  for (const std::string& points : scatter_points) {
    EXPECT_EQ(points, std::to_string(validation * units));
  }
  for (const char* name : {"tuned", "lnp", "flat"}) {
    EXPECT_NE(html_.find("<tr data-hypothesis=\"" + std::string(name) + "\">"), std::string::npos)
        << name;
  }
  // Below kMaxScatterPoints every (trial, unit) is one circle.
  if (validation * units <= 3000) {
    const std::size_t start = html_.find("<svg class=\"plot\" data-kind=\"scatter\"");
    const std::size_t end = html_.find("</svg>", start);
    EXPECT_EQ(count_of(html_.substr(start, end - start), "<circle"),
              static_cast<std::size_t>(validation * units));
  }

  // The posterior plot has one point per scored trial.
  const std::int64_t scored =
      query(*session_, "SELECT count(*) FROM trials WHERE status = 'scored'");
  EXPECT_EQ(plot_attributes(html_, "posterior", "data-trials"),
            (std::vector<std::string>{std::to_string(scored)}));

  // Every event, one row each: at least trial 4's abort and the resume.
  const std::int64_t events = query(*session_, "SELECT count(*) FROM events");
  EXPECT_GE(events, 2);
  EXPECT_NE(html_.find("<tr class=\"warn\" data-kind=\"trial_aborted\">"), std::string::npos);
  EXPECT_NE(html_.find("<tr data-kind=\"resumed\">"), std::string::npos);
  // The aborted trial is counted and listed with its reason.
  const std::int64_t problems =
      query(*session_, "SELECT count(*) FROM trials WHERE status IN ('flagged', 'aborted')");
  EXPECT_GE(problems, 1);
  EXPECT_EQ(attribute(html_, "data-problem-trials"), std::to_string(problems));
  EXPECT_NE(html_.find("in flight when the session was interrupted"), std::string::npos);
  EXPECT_EQ(attribute(html_, "data-events"), std::to_string(events));
  EXPECT_EQ(static_cast<std::int64_t>(count_of(html_, "<tr data-kind=\"")) +
                static_cast<std::int64_t>(count_of(html_, "<tr class=\"warn\" data-kind=\"")),
            events);

  // Self-contained: nothing is fetched from anywhere.
  EXPECT_EQ(html_.find("src=\"http"), std::string::npos);
  EXPECT_EQ(html_.find("href=\"http"), std::string::npos);
  EXPECT_EQ(count_of(html_, "<script"), 1U);
  // With summary.json there is nothing the report could not compute.
  EXPECT_EQ(html_.find("What this report could not compute"), std::string::npos);
}

TEST_F(ReportSession, RecomputesTheSessionsScoresFromTheRecord) {
  // The scores table shows summary.json's bits per spike beside the report's recomputation with
  // the session's code, trials and seed; they must agree.
  const nlohmann::json summary = nlohmann::json::parse(read_file(*session_ / "summary.json"));
  int tested_rivals = 0;
  for (const nlohmann::json& h : summary.at("hypotheses")) {
    const std::string name = h.at("name").get<std::string>();
    const std::size_t row = html_.find("<tr data-hypothesis=\"" + name + "\">");
    ASSERT_NE(row, std::string::npos) << name;
    const std::string line = html_.substr(row, html_.find("</tr>", row) - row);
    if (!h.at("bits_per_spike").is_number()) continue;
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.3f", h.at("bits_per_spike").get<double>());
    // The summary's cell ("0.012 vs flat") and the recomputed list ("-3.21, 0.012, 0.40, ...").
    EXPECT_NE(line.find(">" + std::string(buffer) + " vs "), std::string::npos)
        << name << ": " << line;
    EXPECT_NE(line.find(", " + std::string(buffer) + ", "), std::string::npos)
        << name << ": " << line;
    // The model check's p-value, encompassing test included (designed trials and rivals): the
    // summary's cell and the end of the recomputed list.
    ASSERT_TRUE(h.at("pit_p_value").is_number()) << h.dump();
    std::snprintf(buffer, sizeof buffer, "%.3g", h.at("pit_p_value").get<double>());
    EXPECT_NE(line.find(", " + std::string(buffer) + "</td>"), std::string::npos)
        << name << ": " << line;
    EXPECT_GT(h.at("encompassing").at("trials").get<int>(),
              summary.at("validation_trials").get<int>())
        << h.dump();
    // What a pass is worth: against every rival it tests, a probability; null for a rival it
    // contains near its fits (nothing left to lean toward), whose z and lean are null too.
    const nlohmann::json& power = h.at("encompassing").at("power_halfway");
    EXPECT_EQ(power.size(), summary.at("hypotheses").size() - 1) << h.dump();
    const nlohmann::json& z = h.at("encompassing").at("z");
    const nlohmann::json& lean = h.at("encompassing").at("lean");
    EXPECT_EQ(lean.size(), power.size()) << h.dump();
    for (const auto& [rival, p] : power.items()) {
      EXPECT_NE(rival, name);
      if (p.is_null()) {
        EXPECT_TRUE(z.at(rival).is_null() && lean.at(rival).is_null()) << h.dump();
        EXPECT_NE(html_.find(rival + " contained"), std::string::npos) << name << ", " << rival;
        continue;
      }
      ++tested_rivals;
      EXPECT_GE(p.get<double>(), 0.0) << rival;
      EXPECT_LE(p.get<double>(), 1.0) << rival;
      // How far the counts leaned toward it: the report's recomputed check table shows the
      // summary's statistic and lean.
      char cell[128];
      std::snprintf(cell, sizeof cell, "%s %.2f [%.1f%%]", rival.c_str(), z.at(rival).get<double>(),
                    100.0 * lean.at(rival).get<double>());
      EXPECT_NE(html_.find(cell), std::string::npos) << name << " against " << cell;
    }
  }
  EXPECT_GT(tested_rivals, 0);  // the null contains no tuned twin: it is always tested
  EXPECT_NE(html_.find("matches the recorded posterior"), std::string::npos);
  // The leader's log Bayes factor taken apart by unit, recomputed from the record, agrees with
  // the summary's.
  const std::string leader = attribute(html_, "data-by-unit");
  const nlohmann::json* leader_summary = nullptr;
  for (const nlohmann::json& h : summary.at("hypotheses")) {
    if (h.at("name").get<std::string>() == leader) leader_summary = &h;
  }
  ASSERT_NE(leader_summary, nullptr) << "no by-unit paragraph, or it names '" << leader << "'";
  const nlohmann::json& by_unit = leader_summary->at("log_bayes_factor_by_unit");
  EXPECT_EQ(attribute(html_, "data-units-for"), std::to_string(by_unit.at("units_for").get<int>()));
  EXPECT_EQ(attribute(html_, "data-units-against"),
            std::to_string(by_unit.at("units_against").get<int>()));
  EXPECT_EQ(attribute(html_, "data-silent-units"),
            std::to_string(by_unit.at("silent_units").get<int>()));
  EXPECT_NEAR(by_unit.at("log_bf_for").get<double>() + by_unit.at("log_bf_against").get<double>() +
                  by_unit.at("silent_log_bf").get<double>(),
              leader_summary->at("log_bayes_factor").get<double>(), 1e-6);
}

// summary.json's bits per spike are against the null, 'flat'. Both are scored on the same
// validation trials, so the difference of their constant-rate figures is the same number.
TEST_F(ReportSession, SummaryBitsPerSpikeAreAgainstTheNullOnTheSameTrials) {
  const nlohmann::json summary = nlohmann::json::parse(read_file(*session_ / "summary.json"));
  ASSERT_GT(summary.at("validation_trials").get<int>(), 0) << summary.dump(2);
  const nlohmann::json* flat = nullptr;
  for (const nlohmann::json& h : summary.at("hypotheses")) {
    if (h.at("name") == "flat") flat = &h;
  }
  ASSERT_NE(flat, nullptr);
  EXPECT_EQ(flat->at("bits_per_spike").get<double>(), 0.0);
  for (const nlohmann::json& h : summary.at("hypotheses")) {
    SCOPED_TRACE(h.dump());
    EXPECT_EQ(h.at("bits_per_spike_against"), "flat");
    ASSERT_TRUE(h.at("bits_per_spike").is_number());
    EXPECT_NEAR(h.at("bits_per_spike").get<double>(),
                h.at("bits_per_spike_vs_constant_rate").get<double>() -
                    flat->at("bits_per_spike_vs_constant_rate").get<double>(),
                1e-9);
  }
}

TEST_F(ReportSession, LoadsInHeadlessChromiumWithoutErrorsAndDrawsItsPlots) {
  const fs::path work = *dir_ / "chromium";
  fs::create_directories(work);
  const std::string dom = render_in_chromium(*session_ / "report.html", work);
  expect_rendered(dom, html_);
  // The verdict, the posterior, 3 scatter plots, PIT, stimuli and information-gain plots.
  EXPECT_GE(count_of(html_, "<svg class=\"plot\""), 8U);
}

TEST_F(ReportSession, WritesWhereOutSays) {
  const fs::path out = *dir_ / "elsewhere.html";
  const Result r = shell(twinloop() + " report " + session_->string() + " --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(read_file(out).find("data-verify=\"clean\""), std::string::npos);
  EXPECT_FALSE(fs::exists(fs::path(out.string() + ".tmp")));
}

// ---------------------------------------------------------------------------------------------
// Hand-made records

constexpr const char* kInjectedName = "<script>window.pwned=1</script><img src=x onerror=alert(1)>";

// A record written through SessionRecord as a session would, with hostile text in every field a
// user controls, and no summary.json (an interrupted session). Posteriors are given, not
// computed, so the realised information gain is known: trial t moves it from `before` to
// `after`.
fs::path hostile_record(const fs::path& dir) {
  const fs::path session = dir / "hostile";
  std::string protocol = twinloop::test_support::short_trials_protocol("report_short", 30);
  const std::string plain = "name: report_short";
  protocol.replace(protocol.find(plain), plain.size(),
                   std::string("name: '") + kInjectedName + "'");
  SessionSetup setup;
  setup.protocol_text = protocol;
  setup.config_json = R"({"rig":"sim","seed":3})";
  setup.hypotheses = {{"tuned", "direction_tuning"}, {"<b>bold</b>", "null"}};
  for (int u = 0; u < 4; ++u) setup.units.push_back({0, u, "channel " + std::to_string(u)});
  for (const int direction : {0, 90, 180, 270}) {
    setup.candidates_json.push_back(R"({"<i>dim</i>":)" + std::to_string(direction) +
                                    R"(,"contrast":1.0})");
  }
  SessionRecord record = SessionRecord::create(session, setup);
  const std::vector<double> mean = {2.0, 3.0, 1.0, 4.0};
  const std::vector<double> poisson = {0.0, 0.0, 0.0, 0.0};
  const std::vector<double> overdispersed = {0.5, 0.5, 0.5, 0.5};
  const std::vector<HypothesisPrediction> predictions = {{mean, poisson, {}},
                                                         {mean, overdispersed, {}}};
  const std::vector<std::vector<double>> posterior = {{0.8, 0.2}, {0.5, 0.5}, {0.9, 0.1}};
  for (std::uint64_t t = 0; t < 4; ++t) {
    TrialDesign design;
    design.trial = t;
    design.candidate = static_cast<std::int64_t>(t);
    design.stimulus_json = setup.candidates_json[t];
    design.strategy = t % 2 == 0 ? "validation_random" : "discriminate";
    design.is_validation = t % 2 == 0;
    design.expected_information_gain = 0.25;
    record.begin_trial(design);
    record.preregister(t, predictions);
    record.record_delivery(t, 1000 * static_cast<std::int64_t>(t));
    const std::vector<std::uint32_t> counts = {2, 3, 1, 5};
    record.record_outcome(t, counts, 0, 100);
    if (t < 3) {
      const std::vector<double> evidence = {-1.0 * static_cast<double>(t), -2.0};
      record.record_posterior(t, posterior[t], evidence);
    }
  }
  record.mark_trial(3, TrialStatus::kFlagged, R"({"reason":"</td><script>alert(2)</script>"})");
  record.record_event("fault", 2, R"({"note":"<iframe src=\"javascript:alert(3)\">"})");
  return session;
}

TEST(Report, EscapesEveryTextFromTheRecord) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("report_hostile");
  const fs::path session = hostile_record(dir);
  const Result r = shell(twinloop() + " report " + session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string html = read_file(session / "report.html");
  // Not one element from the record made it into the page.
  EXPECT_EQ(html.find("<script>window.pwned"), std::string::npos);
  EXPECT_EQ(html.find("<img src=x"), std::string::npos);
  EXPECT_EQ(html.find("<b>bold</b>"), std::string::npos);
  EXPECT_EQ(html.find("<i>dim</i>"), std::string::npos);
  EXPECT_EQ(html.find("<script>alert(2)"), std::string::npos);
  EXPECT_EQ(html.find("<iframe"), std::string::npos);
  EXPECT_EQ(count_of(html, "<script"), 1U);  // the report's own self-check
  // ... and all of it is shown, as text.
  EXPECT_NE(html.find("<title>twinloop report: &lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img "
                      "src=x onerror=alert(1)&gt;</title>"),
            std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;bold&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;iframe src=\\&quot;javascript:alert(3)\\&quot;&gt;"), std::string::npos);

  // The browser agrees: no script error (an injected alert() would be one in headless mode, and
  // window.pwned would be set), every plot drawn, and no injected element in its DOM.
  const std::string dom = render_in_chromium(session / "report.html", dir);
  expect_rendered(dom, html);
  EXPECT_EQ(dom.find("<img src=\"x\""), std::string::npos);
  EXPECT_EQ(dom.find("<b>bold</b>"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Report, InterruptedSessionSaysWhatItCouldNotComputeAndDefinesRealisedGain) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("report_interrupted");
  const fs::path session = hostile_record(dir);
  const Result r = shell(twinloop() + " report " + session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string html = read_file(session / "report.html");
  EXPECT_NE(html.find("What this report could not compute"), std::string::npos);
  EXPECT_NE(html.find("summary.json is absent"), std::string::npos);
  EXPECT_NE(html.find("Why the session stopped: not recorded"), std::string::npos);
  // Two validation trials scored, but none after the twins' first fit (8 scored trials).
  EXPECT_NE(html.find("no validation trial was scored after the twins were first fitted"),
            std::string::npos);
  EXPECT_EQ(attribute(html, "data-validation-trials"), "2");
  EXPECT_EQ(plot_attributes(html, "scatter", "data-points"), (std::vector<std::string>{"8", "8"}));
  // The given posteriors differ from what the predictions imply, and the report says so.
  EXPECT_NE(html.find("DIFFERS from the recorded posterior"), std::string::npos);
  // Realised gain = KL(after || before): uniform -> (0.8, 0.2) -> (0.5, 0.5) -> (0.9, 0.1).
  const double kl0 = 0.8 * std::log(0.8 / 0.5) + 0.2 * std::log(0.2 / 0.5);
  const double kl1 = 0.5 * std::log(0.5 / 0.8) + 0.5 * std::log(0.5 / 0.2);
  const double kl2 = 0.9 * std::log(0.9 / 0.5) + 0.1 * std::log(0.1 / 0.5);
  const double gains[] = {kl0, kl1, kl2};
  for (int t = 0; t < 3; ++t) {
    char tip[96];
    std::snprintf(tip, sizeof tip, "trial %d: expected 0.25, realised %.3g", t, gains[t]);
    EXPECT_NE(html.find(tip), std::string::npos) << tip;
  }
  // The flagged trial is listed with its (escaped) reason; the fault event is in the table.
  EXPECT_EQ(attribute(html, "data-problem-trials"), "1");
  EXPECT_EQ(attribute(html, "data-events"), "2");
  EXPECT_NE(html.find("<tr class=\"warn\" data-kind=\"trial_flagged\">"), std::string::npos);
  EXPECT_NE(html.find("<tr class=\"warn\" data-kind=\"fault\">"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Report, RefusesMissingForeignGarbageAndTruncatedRecords) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("report_bad");
  auto refused = [&](const fs::path& session, const std::string& file, const std::string& what) {
    SCOPED_TRACE(session.string());
    const Result r = shell(twinloop() + " report " + session.string());
    EXPECT_EQ(r.status, 1) << r.output;  // refused, not crashed (a signal would be 128 + N)
    EXPECT_NE(r.output.find(file), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(session / "report.html"));
  };

  refused(dir / "absent", (dir / "absent").string(), "no such session directory");

  fs::create_directories(dir / "empty");
  refused(dir / "empty", (dir / "empty" / "session.sqlite").string(), "no session record");

  fs::create_directories(dir / "garbage");
  std::ofstream(dir / "garbage" / "session.sqlite") << "this is not a database, just text\n";
  refused(dir / "garbage", (dir / "garbage" / "session.sqlite").string(), "not a database");

  // A SQLite database that is not a session record.
  fs::create_directories(dir / "foreign");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "foreign" / "session.sqlite").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  refused(dir / "foreign", (dir / "foreign" / "session.sqlite").string(),
          "not a twinloop session record");

  // A real record cut short, as by a full disk or a copy interrupted.
  const fs::path whole = hostile_record(dir);
  const fs::path file = whole / "session.sqlite";
  ASSERT_FALSE(fs::exists(whole / "session.sqlite-wal") &&
               fs::file_size(whole / "session.sqlite-wal") > 0)
      << "the record should be checkpointed once closed";
  fs::resize_file(file, fs::file_size(file) / 2);
  refused(whole, file.string(), "malformed");
  fs::remove_all(dir);
}

}  // namespace

// The `twinloop` command line, run as a user would: exit statuses, messages naming where and
// what, and the files each subcommand promises.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/daemon/session_record.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace {

namespace fs = std::filesystem;

struct Result {
  int status = -1;
  std::string output;  // stdout and stderr
};

Result run(const std::string& arguments) {
  const std::string command = std::string(TWINLOOP_BINARY) + " " + arguments + " 2>&1";
  Result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.output += buffer.data();
  const int raw = pclose(pipe);
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return result;
}

fs::path temp_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("twinloop_cli_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

const fs::path kExamples = fs::path(TWINLOOP_SOURCE_DIR) / "config" / "examples";

/// Writes the gratings example to `to` with the first `find` replaced by `replace`; false when
/// the example no longer contains `find`.
bool write_gratings_with(const std::string& find, const std::string& replace, const fs::path& to) {
  std::ifstream in(kExamples / "protocol_gratings.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t at = text.find(find);
  if (at == std::string::npos) return false;
  text.replace(at, find.size(), replace);
  std::ofstream(to) << text;
  return true;
}

TEST(Cli, HelpListsEverySubcommand) {
  const Result r = run("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* command : {"check", "simulate", "detect", "run", "resume", "verify"}) {
    EXPECT_NE(r.output.find(command), std::string::npos) << command;
  }
}

TEST(Cli, UnknownSubcommandIsUsageError) {
  const Result r = run("frobnicate");
  EXPECT_EQ(r.status, 2) << r.output;
}

TEST(Cli, CheckAcceptsTheShippedExamples) {
  const Result r = run("check " + (kExamples / "protocol_gratings.yaml").string() + " " +
                       (kExamples / "protocol_optogenetic.yaml").string() + " " +
                       (kExamples / "protocol_demo.yaml").string() + " " +
                       (kExamples / "protocol_direction_vs_orientation.yaml").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("ok: protocol 'gratings_direction_contrast'"), std::string::npos)
      << r.output;
}

TEST(Cli, CheckRefusesATypoWithFileLineColumnAndField) {
  const fs::path dir = temp_dir("check");
  const fs::path bad = dir / "typo.yaml";
  ASSERT_TRUE(write_gratings_with("  max_trials: 600", "  max_trails: 600", bad));
  const Result r = run("check " + bad.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(bad.string() + ":"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stop.max_trails"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("refused"), std::string::npos) << r.output;
}

// The loader accepts any numeric params; the twin family refuses ones it does not know. check
// and run must both say so before anything starts, and run must leave no session folder behind.
TEST(Cli, CheckAndRunRefuseParamsATwinDoesNotTake) {
  const fs::path dir = temp_dir("twinparams");
  const fs::path bad = dir / "gain.yaml";
  ASSERT_TRUE(write_gratings_with("family: lnp", "family: lnp\n    params: {gain: 2}", bad));

  Result r = run("check " + bad.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(bad.string() + ": error: hypotheses[1]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unknown parameter 'gain'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("refused"), std::string::npos) << r.output;

  const fs::path session = dir / "session";
  r = run("run " + bad.string() + " --rig sim --seconds 2 --pace max --out " + session.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("unknown parameter 'gain'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nothing was started"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(session)) << "a refused protocol left a session folder";

  // A TorchScript twin is loaded once the session's unit count is known; check finds a missing
  // file all the same.
  const fs::path missing = dir / "missing.yaml";
  ASSERT_TRUE(write_gratings_with("family: lnp",
                                  "family: torchscript\n    path: /nonexistent/twin.pt", missing));
  r = run("check " + missing.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("hypotheses[1]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/twin.pt"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, CheckRefusesAMissingFile) {
  const Result r = run("check /nonexistent/protocol.yaml");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/nonexistent/protocol.yaml"), std::string::npos) << r.output;
}

// simulate -> detect: a SpikeGLX recording whose meta parses and whose ground truth scores.
TEST(Cli, SimulateThenDetectScoresAgainstGroundTruth) {
  const fs::path dir = temp_dir("simdetect");
  Result r = run("simulate --seconds 4 --seed 5 --quiet --out " + (dir / "rec").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path bin = dir / "rec" / "sim_g0_t0.imec0.ap.bin";
  const auto meta = twinloop::drivers::parse_spikeglx_meta(dir / "rec" / "sim_g0_t0.imec0.ap.meta");
  EXPECT_EQ(meta.saved_channels, 385u);
  EXPECT_EQ(meta.file_size_bytes, fs::file_size(bin));
  EXPECT_EQ(meta.file_size_bytes, 4u * 30000 * 385 * 2);
  const auto truth_times = twinloop::drivers::read_npy_int64(dir / "rec" / "spike_times.npy");
  EXPECT_GT(truth_times.size(), 500u);

  r = run("detect " + bin.string() + " --quiet --out " + (dir / "det").string() + " --truth " +
          (dir / "rec").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("real time"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("recall"), std::string::npos) << r.output;
  const auto times = twinloop::drivers::read_npy_int64(dir / "det" / "spike_times.npy");
  const auto clusters = twinloop::drivers::read_npy_int64(dir / "det" / "spike_clusters.npy");
  ASSERT_EQ(times.size(), clusters.size());
  EXPECT_GT(times.size(), 300u);
  for (std::int64_t c : clusters) ASSERT_LT(c, 384);
  EXPECT_TRUE(fs::exists(dir / "det" / "cluster_info.tsv"));

  // numpy itself must read what we wrote (the point of the Phy layout).
  if (fs::exists("/usr/bin/python3") &&
      std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") == 0) {
    const std::string check = "/usr/bin/python3 -c \"import numpy as np; t=np.load('" +
                              (dir / "det" / "spike_times.npy").string() + "'); c=np.load('" +
                              (dir / "det" / "spike_clusters.npy").string() +
                              "'); assert t.dtype==np.int64 and c.dtype==np.int32 and "
                              "len(t)==len(c)==" +
                              std::to_string(times.size()) + "\"";
    EXPECT_EQ(std::system(check.c_str()), 0) << check;
  }
  fs::remove_all(dir);
}

TEST(Cli, DetectNamesAMissingRecording) {
  const fs::path dir = temp_dir("missing");
  const Result r = run("detect " + (dir / "nothing.ap.bin").string() + " --out " + dir.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("nothing.ap"), std::string::npos) << r.output;
}

TEST(Cli, RunOnTheSimulatedRigWritesAVerifiableRecordAndSummary) {
  const fs::path dir = temp_dir("run");
  const fs::path session = dir / "session";
  Result r = run("run " + (kExamples / "protocol_gratings.yaml").string() +
                 " --rig sim --seconds 8 --seed 3 --pace max --quiet --out " + session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("session summary"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("verdict"), std::string::npos) << r.output;
  std::ifstream in(session / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(in);
  EXPECT_TRUE(summary.contains("verdict"));
  EXPECT_EQ(summary["posterior"].size(), 3u);
  EXPECT_GE(summary["trials"].get<int>(), 1);
  EXPECT_EQ(summary["rig"], "sim");
  // 8 s at maximum pace: the session's time runs out before any stop rule holds.
  EXPECT_EQ(summary["stop_reason"], "the session's time ran out (--seconds)") << summary.dump(2);
  EXPECT_EQ(summary["gaps"].get<int>(), 0);
  EXPECT_EQ(summary["truth"]["model"], "direction_tuning");
  EXPECT_GE(summary["truth"]["detection_recall"].get<double>(), 0.8);
  EXPECT_GE(summary["truth"]["detection_precision"].get<double>(), 0.8);
  // 64 units (the default) along 3.8 mm of probe: some lie close enough to share channels.
  EXPECT_EQ(summary["truth"]["units"].get<int>(), 64);
  EXPECT_GE(summary["truth"]["units_near_another"].get<int>(), 1);
  EXPECT_LE(summary["truth"]["units_near_another"].get<int>(), 64);
  EXPECT_TRUE(fs::exists(session / "session.sqlite"));
  EXPECT_TRUE(fs::exists(session / "ground_truth" / "spike_times.npy"));

  // Bits per spike are against the protocol's null, 'no_tuning' (the values need validation
  // trials, which 8 s may not hold: ReportSession checks them).
  for (const nlohmann::json& h : summary["hypotheses"]) {
    EXPECT_EQ(h["bits_per_spike_against"], "no_tuning") << h.dump();
  }
  EXPECT_NE(r.output.find("vs no_tuning"), std::string::npos) << r.output;

  r = run("verify " + session.string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("intact"), std::string::npos) << r.output;

  r = run("run " + (kExamples / "protocol_gratings.yaml").string() +
          " --rig sim --seconds 2 --pace max --quiet --out " + session.string());
  EXPECT_EQ(r.status, 1) << "an existing session must never be overwritten: " << r.output;
  fs::remove_all(dir);
}

// --sim-units sets the simulated subject's size; a lone unit has no neighbour to share a channel.
TEST(Cli, SimUnitsSetsTheSimulatedSubjectsUnits) {
  const fs::path dir = temp_dir("simunits");
  const fs::path session = dir / "session";
  const Result r = run("run " + (kExamples / "protocol_demo.yaml").string() +
                       " --rig sim --seconds 3 --seed 1 --pace max --sim-units 1 --quiet --out " +
                       session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json summary = nlohmann::json::parse(std::ifstream(session / "summary.json"));
  EXPECT_EQ(summary["truth"]["units"].get<int>(), 1) << summary.dump(2);
  EXPECT_EQ(summary["truth"]["units_near_another"].get<int>(), 0) << summary.dump(2);
  EXPECT_NE(r.output.find("0 of 1 units lie within 50 um of another"), std::string::npos)
      << r.output;
  EXPECT_EQ(run("run " + (kExamples / "protocol_demo.yaml").string() +
                " --rig sim --sim-units 0 --quiet --out " + (dir / "zero").string())
                .status,
            2);
  fs::remove_all(dir);
}

// The simulated units respond to direction, contrast and spatial frequency only, so in the
// optogenetic example's space (power x pulse duration) the stimulus-independent twin is the true
// one.
TEST(Cli, RunsTheOptogeneticExampleWhereTheNullIsTrue) {
  const fs::path dir = temp_dir("opto");
  const fs::path session = dir / "session";
  const Result r =
      run("run " + (kExamples / "protocol_optogenetic.yaml").string() +
          " --rig sim --seconds 20 --seed 1 --pace max --quiet --out " + session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(session / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(in);
  EXPECT_EQ(summary["truth"]["model"], "null") << summary.dump(2);
  EXPECT_EQ(summary["posterior"].size(), 3u);
  EXPECT_GE(summary["trials"].get<int>(), 5);
  EXPECT_NE(r.output.find("respond only to direction, contrast and spatial frequency"),
            std::string::npos)
      << r.output;
  fs::remove_all(dir);
}

// At max pace the simulated stream waits while the session computes (design, refits, the
// durable pre-registration), so the subject's seconds hold about as many trials as at realtime
// pace: onsets about one protocol interval apart (1 s in the demo), however long the refits
// take. Before the stream waited, a 20 s session held 8 trials, all before the first refit.
TEST(Cli, AMaxPaceSessionSpendsNoStreamTimeOnRefits) {
  const fs::path dir = temp_dir("maxpace");
  const fs::path session = dir / "session";
  const Result r =
      run("run " + (kExamples / "protocol_demo.yaml").string() +
          " --rig sim --seconds 16 --seed 2 --pace max --quiet --out " + session.string());
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(session / "summary.json");
  const nlohmann::json summary = nlohmann::json::parse(in);
  EXPECT_GE(summary["refits"]["count"].get<int>(), 3) << summary.dump(2);
  const twinloop::daemon::SessionRecord record =
      twinloop::daemon::SessionRecord::open_existing(session);
  std::vector<std::int64_t> onsets;
  for (const twinloop::daemon::RecordedTrial& t : record.trials()) {
    if (t.onset_sample >= 0) onsets.push_back(t.onset_sample);
  }
  // The stream runs only as far as the trial in flight needs, so neither a refit nor a session
  // thread starved by a loaded machine moves an onset: each is the one planned, one protocol
  // interval after the last. The first comes once detection is armed (0.8 s), so 16 s of stream
  // hold 15 trials; a 16th would end after them and is not started, so every trial is scored.
  const std::int64_t interval = 30000;  // baseline + stimulus + inter-trial: 1 s at 30 kHz
  ASSERT_EQ(onsets.size(), 15u) << summary.dump(2);
  for (std::size_t i = 1; i < onsets.size(); ++i) {
    EXPECT_EQ(onsets[i] - onsets[i - 1], interval) << "trial " << i;
  }
  for (const twinloop::daemon::RecordedTrial& t : record.trials()) {
    EXPECT_EQ(t.status, twinloop::daemon::TrialStatus::kScored) << "trial " << t.trial;
  }
  fs::remove_all(dir);
}

// At max pace a session is a function of its protocol and seed: the stream advances in grants
// the session fixes, and the first onset is planned from the grant in which detection armed,
// not from where a thread happened to find the stream. The second run shares the CPUs with two
// busy threads, so the threads' timing differs between the runs.
TEST(Cli, AMaxPaceSessionIsTheSameWhateverTheThreadsTiming) {
  const fs::path dir = temp_dir("reproducible");
  const auto session = [&](const std::string& name) {
    const fs::path out = dir / name;
    const Result r =
        run("run " + (kExamples / "protocol_demo.yaml").string() +
            " --rig sim --seconds 8 --seed 3 --pace max --quiet --out " + out.string());
    EXPECT_EQ(r.status, 0) << r.output;
    // A failed run has no record: an empty list fails the comparison below, not the process.
    if (!fs::exists(out / "session.sqlite")) return std::vector<twinloop::daemon::RecordedTrial>{};
    return twinloop::daemon::SessionRecord::open_existing(out).trials();
  };
  const std::vector<twinloop::daemon::RecordedTrial> quiet = session("quiet");
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 2; ++i) {
    busy.emplace_back([&stop] {
      std::uint64_t spin = 0;
      while (!stop.load(std::memory_order_relaxed)) spin = spin * 6364136223846793005ULL + 1;
      EXPECT_NE(spin, 0x5eedULL);  // keeps the loop from being optimised away
    });
  }
  const std::vector<twinloop::daemon::RecordedTrial> loaded = session("loaded");
  stop = true;
  for (std::thread& t : busy) t.join();
  ASSERT_GE(quiet.size(), 6u);
  ASSERT_EQ(loaded.size(), quiet.size());
  for (std::size_t i = 0; i < quiet.size(); ++i) {
    EXPECT_EQ(loaded[i].candidate, quiet[i].candidate) << "trial " << i;
    EXPECT_EQ(loaded[i].onset_sample, quiet[i].onset_sample) << "trial " << i;
    EXPECT_EQ(loaded[i].counts, quiet[i].counts) << "trial " << i;
    EXPECT_EQ(loaded[i].mean, quiet[i].mean) << "trial " << i;
    EXPECT_EQ(loaded[i].posterior, quiet[i].posterior) << "trial " << i;
  }
  fs::remove_all(dir);
}

TEST(Cli, VerifyRefusesAFolderWithoutARecord) {
  const fs::path dir = temp_dir("verify");
  const Result r = run("verify " + dir.string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("session.sqlite"), std::string::npos) << r.output;
}

TEST(Cli, RunRefusesABadProtocolBeforeStarting) {
  const fs::path dir = temp_dir("runbad");
  const fs::path bad = dir / "bad.yaml";
  std::ofstream(bad) << "twinloop_protocol: 1\nname: x\n";
  const Result r = run("run " + bad.string() + " --rig sim --seconds 2 --pace max");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("nothing was started"), std::string::npos) << r.output;
}

}  // namespace

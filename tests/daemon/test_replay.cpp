// `twinloop run --record-raw` and `twinloop replay`: a recorded session re-run from its raw stream
// through the same acquisition, twin and scoring code reproduces its record bit for bit; a raw
// stream that is not the one the session saw is caught, trial by trial.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon_test_support.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/drivers/spikeglx.hpp"

namespace {

namespace fs = std::filesystem;
using twinloop::test_support::shell;

const std::string kTwinloop = TWINLOOP_BINARY;

// One recorded session shared by the tests (recording it takes ~10 s at real-time pace).
class Replay : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(twinloop::test_support::fresh_temp_dir("replay"));
    std::string protocol = twinloop::test_support::short_trials_protocol("replayed", 14);
    std::ofstream(*dir_ / "p.yaml") << protocol;
    run_ = new twinloop::test_support::ShellResult(
        shell(kTwinloop + " run " + (*dir_ / "p.yaml").string() +
              " --rig sim --pace realtime --seconds 30 --seed 5 --quiet --record-raw --out " +
              (*dir_ / "s").string()));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete run_;
  }
  static fs::path session() { return *dir_ / "s"; }
  static fs::path raw_bin() { return session() / "raw" / "session_g0_t0.imec0.ap.bin"; }

  static fs::path* dir_;
  static twinloop::test_support::ShellResult* run_;
};
fs::path* Replay::dir_ = nullptr;
twinloop::test_support::ShellResult* Replay::run_ = nullptr;

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST_F(Replay, TheSessionRecordsItsRawStreamAsSpikeGlx) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  ASSERT_TRUE(fs::exists(raw_bin()));
  ASSERT_TRUE(fs::exists(session() / "raw" / "session_g0_t0.imec0.ap.meta"));
  const nlohmann::json summary = read_json(session() / "summary.json");
  const auto& raw = summary.at("raw_recording");
  EXPECT_EQ(raw.at("error").get<std::string>(), "");
  EXPECT_EQ(raw.at("not_recorded").get<std::uint64_t>(), 0u);
  // 64 neural channels + the SY word, every sample the session read.
  EXPECT_EQ(fs::file_size(raw_bin()), raw.at("samples").get<std::uint64_t>() * 65u * 2u);
  EXPECT_GT(raw.at("samples").get<std::uint64_t>(), 30000u);
}

TEST_F(Replay, ReproducesTheRecordBitForBit) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  const fs::path out = *dir_ / "replay_ok";
  const auto r =
      shell(kTwinloop + " replay " + session().string() + " --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("REPRODUCED"), std::string::npos) << r.output;
  const nlohmann::json report = read_json(out / "replay.json");
  EXPECT_TRUE(report.at("identical").get<bool>());
  EXPECT_EQ(report.at("trials_compared"), report.at("trials_on_record"));
  EXPECT_EQ(report.at("trials_on_record").get<int>(), 14);
  EXPECT_EQ(report.at("verdict"), read_json(session() / "summary.json").at("verdict"));
  // The replay is itself a verifiable record.
  const auto verify = shell(kTwinloop + " verify " + out.string());
  EXPECT_EQ(verify.status, 0) << verify.output;
}

TEST_F(Replay, CounterfactualDesignerSaysWhatWasObservedAndWhatWasModelled) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  const fs::path out = *dir_ / "replay_cf";
  const auto r = shell(kTwinloop + " replay " + session().string() +
                       " --quiet --designer random --counterfactual-runs 2 --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("would random have reached the verdict sooner than discriminate"),
            std::string::npos)
      << r.output;
  const nlohmann::json cf = read_json(out / "replay.json").at("counterfactual");
  EXPECT_EQ(cf.at("recorded_strategy"), "discriminate");
  const int scored = read_json(out / "replay.json").at("trials_on_record").get<int>();
  for (const char* name : {"random", "discriminate"}) {
    const nlohmann::json& s = cf.at("strategies").at(name);
    EXPECT_EQ(s.at("runs").get<int>(), 2) << name;
    const int observed = s.at("responses_observed").get<int>();
    const int modelled = s.at("responses_model_based").get<int>();
    // Every trial of every run is answered one way or the other, and no recorded response is
    // used twice within a run.
    EXPECT_EQ(observed + modelled, s.at("trials").get<int>()) << name;
    EXPECT_LE(observed, 2 * scored) << name;
    EXPECT_GT(observed, 0) << name;
  }
  // At each recorded trial, random's choice given the real history, with both choices' expected
  // information gain.
  const nlohmann::json& at = cf.at("at_each_recorded_trial");
  ASSERT_EQ(at.at("trials").get<int>(), scored);
  ASSERT_EQ(at.at("per_trial").size(), static_cast<std::size_t>(scored));
  // An information gain is never negative, but its Monte Carlo estimate at a candidate that
  // tells the twins nearly nothing apart (a random choice often is one) can fall a few
  // thousandths of a nat below 0. The recorded session depends on timing (a trial's onset falls
  // where the stream is when the loop delivers it), so on a busy machine such a candidate can
  // come up.
  constexpr double kMonteCarloSlackNats = 0.02;
  int same = 0;
  for (const nlohmann::json& row : at.at("per_trial")) {
    same += row.at("recorded_candidate") == row.at("other_candidate") ? 1 : 0;
    EXPECT_GE(row.at("eig_recorded_nats").get<double>(), -kMonteCarloSlackNats) << row.dump();
    EXPECT_GE(row.at("eig_other_nats").get<double>(), -kMonteCarloSlackNats) << row.dump();
    if (row.at("recorded_candidate") == row.at("other_candidate")) {
      EXPECT_EQ(row.at("eig_recorded_nats"), row.at("eig_other_nats")) << row.dump();
    }
  }
  EXPECT_EQ(at.at("same_choice").get<int>(), same);
  EXPECT_LT(same, scored) << "random among 16 candidates agreed with every recorded choice";
  EXPECT_NE(r.output.find("random would have chosen the stimulus that was shown in"),
            std::string::npos)
      << r.output;
}

// Asked what its own designer would choose given the history on record, the replay must answer
// with the choice on record at every trial that designer made: a check of the question itself.
TEST_F(Replay, TheRecordedDesignerAskedAgainChoosesWhatItChose) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  const fs::path out = *dir_ / "replay_same";
  const auto r =
      shell(kTwinloop + " replay " + session().string() +
            " --quiet --designer discriminate --counterfactual-runs 1 --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json rows = read_json(out / "replay.json")
                                  .at("counterfactual")
                                  .at("at_each_recorded_trial")
                                  .at("per_trial");
  int designed = 0;
  for (const nlohmann::json& row : rows) {
    if (row.at("recorded_strategy") != "discriminate") continue;
    ++designed;
    EXPECT_EQ(row.at("other_candidate"), row.at("recorded_candidate")) << row.dump();
  }
  EXPECT_GT(designed, 0) << "the session made no discriminating choice to check";
}

TEST_F(Replay, AStreamThatIsNotTheOneRecordedIsCaught) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  // A copy of the session whose raw stream is silenced after its first half second: the spikes
  // of every trial window vanish, so the counts (and what follows from them) cannot match.
  const fs::path copy = *dir_ / "altered";
  fs::copy(session(), copy, fs::copy_options::recursive);
  fs::remove_all(copy / "replay_ok");
  const fs::path bin = copy / "raw" / "session_g0_t0.imec0.ap.bin";
  {
    std::fstream f(bin, std::ios::in | std::ios::out | std::ios::binary);
    const std::uint64_t keep = 15000u * 65u * 2u;
    f.seekp(static_cast<std::streamoff>(keep));
    const std::vector<char> zeros(fs::file_size(bin) - keep, 0);
    f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  const auto r = shell(kTwinloop + " replay " + copy.string() + " --quiet --out " +
                       (*dir_ / "replay_altered").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("DIFFERS"), std::string::npos) << r.output;
  const nlohmann::json report = read_json(*dir_ / "replay_altered" / "replay.json");
  EXPECT_FALSE(report.at("identical").get<bool>());
  EXPECT_GT(report.at("counts_differ").get<int>(), 0);
}

// The session's raw stream as the Open Ephys GUI's Record Node would have written it had it
// recorded the same probe: the neural channels of each row in continuous.dat, their bit_volts in
// structure.oebin, the session's sample numbers in sample_numbers.npy.
fs::path write_as_openephys(const fs::path& bin, const fs::path& dir) {
  fs::path meta_path = bin;
  meta_path.replace_extension(".meta");
  const twinloop::drivers::SpikeGlxMeta meta = twinloop::drivers::parse_spikeglx_meta(meta_path);
  const std::size_t stored = meta.saved_channels;
  const std::size_t neural = meta.neural_channels();
  const std::uint64_t rows = fs::file_size(bin) / (2 * stored);
  const fs::path stream = dir / "continuous" / "Neuropix-PXI-100.ProbeA-AP";
  fs::create_directories(stream);
  {
    std::ifstream in(bin, std::ios::binary);
    std::ofstream out(stream / "continuous.dat", std::ios::binary);
    std::vector<std::int16_t> row(stored);
    for (std::uint64_t r = 0; r < rows; ++r) {
      in.read(reinterpret_cast<char*>(row.data()),
              static_cast<std::streamsize>(stored * sizeof(std::int16_t)));
      out.write(reinterpret_cast<const char*>(row.data()),
                static_cast<std::streamsize>(neural * sizeof(std::int16_t)));
    }
  }
  std::vector<std::int64_t> numbers(rows);
  for (std::uint64_t r = 0; r < rows; ++r) {
    numbers[r] = meta.first_sample + static_cast<std::int64_t>(r);
  }
  twinloop::drivers::write_npy(stream / "sample_numbers.npy", numbers);
  nlohmann::json channels = nlohmann::json::array();
  for (std::size_t c = 0; c < neural; ++c) {
    channels.push_back({{"channel_name", "AP" + std::to_string(c + 1)},
                        {"bit_volts", meta.microvolts_per_bit.at(c)},
                        {"units", "uV"},
                        {"description", "neural"}});
  }
  const nlohmann::json oebin = {{"GUI version", "0.6.7"},
                                {"continuous",
                                 {{{"folder_name", "Neuropix-PXI-100.ProbeA-AP/"},
                                   {"sample_rate", meta.sample_rate_hz},
                                   {"stream_name", "ProbeA-AP"},
                                   {"num_channels", neural},
                                   {"channels", channels}}}},
                                {"events", nlohmann::json::array()},
                                {"spikes", nlohmann::json::array()}};
  std::ofstream(dir / "structure.oebin") << oebin.dump(2);
  return dir / "structure.oebin";
}

TEST_F(Replay, TheSameStreamRecordedByOpenEphysReproducesTheSession) {
  ASSERT_EQ(run_->status, 0) << run_->output;
  const fs::path oebin = write_as_openephys(raw_bin(), *dir_ / "openephys");
  const fs::path out = *dir_ / "replay_oe";
  const auto r = shell(kTwinloop + " replay " + session().string() + " --raw " + oebin.string() +
                       " --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Open Ephys stream"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("REPRODUCED"), std::string::npos) << r.output;
  const nlohmann::json report = read_json(out / "replay.json");
  EXPECT_TRUE(report.at("identical").get<bool>());
  EXPECT_EQ(report.at("trials_compared"), report.at("trials_on_record"));

  // A stream on another clock is not the session's: every window counts other spikes.
  const fs::path shifted = *dir_ / "openephys_shifted";
  fs::copy(*dir_ / "openephys", shifted, fs::copy_options::recursive);
  const fs::path numbers =
      shifted / "continuous" / "Neuropix-PXI-100.ProbeA-AP" / "sample_numbers.npy";
  std::vector<std::int64_t> later = twinloop::drivers::read_npy_int64(numbers);
  for (std::int64_t& n : later) n += 6000;  // 200 ms
  twinloop::drivers::write_npy(numbers, later);
  const auto moved = shell(kTwinloop + " replay " + session().string() + " --raw " +
                           (shifted / "structure.oebin").string() + " --quiet --out " +
                           (*dir_ / "replay_oe_shifted").string());
  EXPECT_EQ(moved.status, 1) << moved.output;
  EXPECT_NE(moved.output.find("DIFFERS"), std::string::npos) << moved.output;

  // Nor is a stream at another rate: the windows are in samples of the live clock.
  nlohmann::json structure = read_json(shifted / "structure.oebin");
  structure["continuous"][0]["sample_rate"] = 40000.0;
  std::ofstream(shifted / "structure.oebin") << structure.dump(2);
  const auto faster = shell(kTwinloop + " replay " + session().string() + " --raw " +
                            (shifted / "structure.oebin").string() + " --quiet --out " +
                            (*dir_ / "replay_oe_rate").string());
  EXPECT_EQ(faster.status, 1) << faster.output;
  EXPECT_NE(faster.output.find("64 electrode channels at 40000 Hz"), std::string::npos)
      << faster.output;
  EXPECT_NE(faster.output.find("64 units on a 30000 Hz probe"), std::string::npos) << faster.output;
  EXPECT_FALSE(fs::exists(*dir_ / "replay_oe_rate" / "session.sqlite"));
}

TEST(ReplayRefusals, AStreamOfAnotherProbeIsRefusedBeforeAnyTrial) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("replay_wrongraw");
  std::ofstream(dir / "p.yaml") << twinloop::test_support::short_trials_protocol("wrongraw", 3);
  const auto run = shell(kTwinloop + " run " + (dir / "p.yaml").string() +
                         " --rig sim --pace realtime --seconds 10 --seed 2 --quiet --out " +
                         (dir / "s").string());
  ASSERT_EQ(run.status, 0) << run.output;
  // The real 16-channel, 40 kHz Open Ephys recording against a 64-channel, 30 kHz session.
  const fs::path oe = fs::path(TWINLOOP_SHARED_DATA) / "openephys_16ch_hippocampus";
  const auto r = shell(kTwinloop + " replay " + (dir / "s").string() + " --raw " + oe.string() +
                       " --quiet --out " + (dir / "r").string());
  EXPECT_EQ(r.status, 1) << r.output;
  // The session's 64-site layout cannot be laid over 16 channels.
  EXPECT_NE(r.output.find("64 sites for the 16 neural channels"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "r" / "session.sqlite")) << "no replay record is started";
  fs::remove_all(dir);
}

TEST(ReplayRecording, ARealOpenEphysRecordingRunsThroughTheAcquisitionPath) {
  const fs::path oe = fs::path(TWINLOOP_SHARED_DATA) / "openephys_16ch_hippocampus";
  const fs::path dat = oe / "continuous" / "data_stream_16ch_hippocampus" / "continuous.dat";
  const std::uint64_t samples = fs::file_size(dat) / (16 * 2);
  const fs::path out = twinloop::test_support::fresh_temp_dir("replay_oe_real") / "spikes";
  const auto r = shell(kTwinloop + " replay " + (oe / "structure.oebin").string() +
                       " --quiet --out " + out.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("a recording without a session record"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("16 channels, 16 of them electrode sites, at 40000 Hz"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("read " + std::to_string(samples) + " of " + std::to_string(samples) +
                          " samples"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(fs::is_regular_file(out / "spike_times.npy"));
  // Without --out nothing is written beside the (read-only) recording.
  const auto bare = shell(kTwinloop + " replay " + oe.string() + " --quiet");
  ASSERT_EQ(bare.status, 0) << bare.output;
  EXPECT_EQ(bare.output.find("wrote"), std::string::npos) << bare.output;
  fs::remove_all(out.parent_path());
}

TEST(ReplayRefusals, ASessionWithoutARawStreamIsRefusedWithTheReason) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("replay_noraw");
  std::ofstream(dir / "p.yaml") << twinloop::test_support::short_trials_protocol("noraw", 3);
  const auto run = shell(kTwinloop + " run " + (dir / "p.yaml").string() +
                         " --rig sim --pace realtime --seconds 10 --seed 2 --quiet --out " +
                         (dir / "s").string());
  ASSERT_EQ(run.status, 0) << run.output;
  const auto r = shell(kTwinloop + " replay " + (dir / "s").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no raw recording"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--record-raw"), std::string::npos) << r.output;
  const auto missing = shell(kTwinloop + " replay " + (dir / "nothing_here").string());
  EXPECT_EQ(missing.status, 1) << missing.output;
  EXPECT_NE(missing.output.find("nothing_here"), std::string::npos) << missing.output;
  fs::remove_all(dir);
}

TEST(ReplayRefusals, RecordingRawIsRefusedUpFrontWhenTheDiskCannotHoldIt) {
  const fs::path dir = twinloop::test_support::fresh_temp_dir("replay_disk");
  std::string protocol = twinloop::test_support::short_trials_protocol("big", 3);
  // A full 384-channel probe for a day: 2 TB of raw stream.
  protocol.replace(protocol.find("channels: 64"), 12, "channels: 384");
  std::ofstream(dir / "p.yaml") << protocol;
  const auto r =
      shell(kTwinloop + " run " + (dir / "p.yaml").string() +
            " --rig sim --seconds 86400 --record-raw --quiet --out " + (dir / "s").string());
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("needs 1995.84 GB"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "s")) << "nothing is started when the recording cannot fit";
  fs::remove_all(dir);
}

}  // namespace

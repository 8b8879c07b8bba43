// OpenEphysBinarySource and the structure.oebin parser: the real 16-channel plugin-GUI sample
// recording, the real Open Ephys 1.0.1 Neuropixels oebin, and bad input written to temp dirs.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/drivers/openephys_binary_source.hpp"

namespace twinloop::drivers {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing_fixtures::pattern;
using testing_fixtures::read_text;
using testing_fixtures::TempDir;
using testing_fixtures::write_text;

const fs::path kHippocampus = fs::path(TWINLOOP_SHARED_DATA) / "openephys_16ch_hippocampus";
const fs::path kHippocampusDat =
    kHippocampus / "continuous" / "data_stream_16ch_hippocampus" / "continuous.dat";
const fs::path kNpOebin =
    fs::path(TWINLOOP_SHARED_DATA) / "spikeglx_meta" / "probeinterface__OE_NP1_structure.oebin";
const fs::path kNp1000 = fs::path(TWINLOOP_SHARED_DATA) / "probes" / "NP1000.json";

struct Replay {
  std::uint64_t rows = 0;
  bool contiguous = true;
  bool pattern_exact = true;
};

Replay replay_all(OpenEphysBinarySource& source, std::size_t capacity) {
  Replay out;
  SampleBlock block;
  block.allocate(capacity, source.info().stored_channels);
  ReadStatus status;
  while ((status = source.read(block)) == ReadStatus::kOk) {
    if (block.first_sample != source.first_sample() + static_cast<std::int64_t>(out.rows)) {
      out.contiguous = false;
    }
    for (std::size_t r = 0; r < block.sample_count; ++r, ++out.rows) {
      for (std::size_t c = 0; c < block.stored_channels; ++c) {
        if (block.row(r)[c] != pattern(out.rows, c)) out.pattern_exact = false;
      }
    }
  }
  EXPECT_EQ(status, ReadStatus::kEndOfStream) << source.last_error();
  EXPECT_EQ(source.read(block), ReadStatus::kEndOfStream);
  return out;
}

// --- the real 16-channel recording -----------------------------------------------------------

TEST(OpenEphysBinarySource, RealHippocampusRecordingReplaysEverySampleInMicrovolts) {
  OpenEphysBinarySource source({.recording = kHippocampus, .block_samples = 1000});
  ASSERT_TRUE(source.start()) << source.last_error();
  for (const std::string& w : source.warnings()) ADD_FAILURE() << "unexpected warning: " << w;

  // Sample count from the file size alone: 16 int16 channels per frame.
  const std::uint64_t expected_rows = fs::file_size(kHippocampusDat) / (16 * 2);
  EXPECT_EQ(expected_rows, 66438u);  // PROVENANCE.md: 2,126,016 B
  EXPECT_EQ(source.total_samples(), expected_rows);
  EXPECT_EQ(source.dat_path(), kHippocampusDat);

  const ProbeInfo& info = source.info();
  EXPECT_EQ(info.name, "data_stream_16ch_hippocampus");
  EXPECT_EQ(info.stored_channels, 16u);
  EXPECT_EQ(info.neural_channels, 16u);
  EXPECT_FALSE(info.has_sync_word);
  EXPECT_DOUBLE_EQ(info.sample_rate_hz, 40000.0);
  ASSERT_EQ(info.geometry.channel_count(), 16u);
  EXPECT_EQ(source.geometry_source(), "default");
  EXPECT_EQ(info.geometry.model, "openephys-default-linear");
  EXPECT_DOUBLE_EQ(info.geometry.sites[3].z_um, 3 * kOpenEphysDefaultPitchUm);

  // Old (0.4.x) naming: timestamps.npy holds the int64 sample numbers 1..M.
  EXPECT_EQ(source.sample_numbers_source(), "timestamps.npy");
  const std::vector<std::int64_t> numbers =
      read_npy_int64(kHippocampusDat.parent_path() / "timestamps.npy");
  ASSERT_EQ(numbers.size(), expected_rows);
  EXPECT_EQ(source.first_sample(), numbers.front());
  EXPECT_EQ(source.first_sample(), 1);

  // Independently: bit_volts from the oebin JSON and raw int16 from the .dat.
  const json oebin = json::parse(read_text(kHippocampus / "structure.oebin"));
  std::vector<double> bit_volts;
  for (const json& c : oebin["continuous"][0]["channels"]) bit_volts.push_back(c["bit_volts"]);
  ASSERT_EQ(bit_volts.size(), 16u);
  constexpr std::size_t kRows = 200;
  std::vector<std::int16_t> raw(kRows * 16);
  {
    std::ifstream dat(kHippocampusDat, std::ios::binary);
    dat.read(reinterpret_cast<char*>(raw.data()),
             static_cast<std::streamsize>(raw.size() * sizeof(std::int16_t)));
    ASSERT_TRUE(dat.good());
  }
  SampleBlock block;
  block.allocate(kRows, info.stored_channels);
  ASSERT_EQ(source.read(block), ReadStatus::kOk) << source.last_error();
  ASSERT_EQ(block.sample_count, kRows);
  EXPECT_EQ(block.first_sample, 1);
  bool any_nonzero = false;
  for (std::size_t r = 0; r < kRows; ++r) {
    for (std::size_t c = 0; c < 16; ++c) {
      const double expected_uv = raw[r * 16 + c] * bit_volts[c];
      ASSERT_DOUBLE_EQ(block.row(r)[c] * info.microvolts_per_bit, expected_uv) << r << "," << c;
      any_nonzero = any_nonzero || raw[r * 16 + c] != 0;
    }
  }
  EXPECT_TRUE(any_nonzero);

  // The rest: every frame once, stamped contiguously.
  std::uint64_t rows = kRows;
  std::int64_t next = 1 + static_cast<std::int64_t>(kRows);
  ReadStatus status;
  while ((status = source.read(block)) == ReadStatus::kOk) {
    ASSERT_EQ(block.first_sample, next);
    next += static_cast<std::int64_t>(block.sample_count);
    rows += block.sample_count;
  }
  EXPECT_EQ(status, ReadStatus::kEndOfStream) << source.last_error();
  EXPECT_EQ(rows, expected_rows);
  EXPECT_EQ(next - 1, numbers.back());
}

TEST(OpenEphysBinarySource, OebinFileAndContinuousDatPathsSelectTheSameStream) {
  for (const fs::path& path : {kHippocampus / "structure.oebin", kHippocampusDat}) {
    OpenEphysBinarySource source({.recording = path});
    ASSERT_TRUE(source.start()) << path << ": " << source.last_error();
    EXPECT_EQ(source.stream().folder(), "data_stream_16ch_hippocampus");
    EXPECT_EQ(source.total_samples(), 66438u);
    EXPECT_TRUE(is_openephys_recording(path));
  }
  EXPECT_TRUE(is_openephys_recording(kHippocampus));
  EXPECT_FALSE(is_openephys_recording(kHippocampus / "PROVENANCE.md"));
  EXPECT_FALSE(is_openephys_recording(kHippocampus.parent_path() / "spikeglx_meta"));
}

// The original plugin-GUI oebin lists four streams; only the hippocampus .dat is here.
TEST(OpenEphysBinarySource, RealFourStreamOebinSelectsByIndexAndFolder) {
  const OpenEphysStructure original =
      parse_openephys_structure(kHippocampus / "structure.oebin.orig");
  EXPECT_EQ(original.gui_version, "0.4.5");
  ASSERT_EQ(original.continuous.size(), 4u);
  EXPECT_EQ(original.continuous[2].folder_name, "data_stream_16ch_hippocampus/");

  TempDir dir("oe_orig");
  fs::copy_file(kHippocampus / "structure.oebin.orig", dir.path() / "structure.oebin");
  fs::create_directories(dir.path() / "continuous");
  fs::create_directory_symlink(kHippocampusDat.parent_path(),
                               dir.path() / "continuous" / "data_stream_16ch_hippocampus");

  OpenEphysBinarySource by_folder(
      {.recording = dir.path(), .stream_folder = "data_stream_16ch_hippocampus/"});
  ASSERT_TRUE(by_folder.start()) << by_folder.last_error();
  EXPECT_EQ(by_folder.stream().index, 2u);
  EXPECT_EQ(by_folder.total_samples(), 66438u);

  OpenEphysBinarySource by_index({.recording = dir.path(), .stream_index = 2});
  ASSERT_TRUE(by_index.start()) << by_index.last_error();
  EXPECT_EQ(by_index.stream().folder(), "data_stream_16ch_hippocampus");

  // Default: the first multi-channel stream (the sine wave), whose .dat is absent.
  OpenEphysBinarySource by_default({.recording = dir.path()});
  EXPECT_FALSE(by_default.start());
  EXPECT_NE(by_default.last_error().find("data_stream_sine_wave/continuous.dat"), std::string::npos)
      << by_default.last_error();
  EXPECT_NE(by_default.last_error().find("continuous[0].folder_name"), std::string::npos)
      << by_default.last_error();

  OpenEphysBinarySource unknown({.recording = dir.path(), .stream_folder = "nope"});
  EXPECT_FALSE(unknown.start());
  EXPECT_NE(unknown.last_error().find("folder_name 'nope'"), std::string::npos)
      << unknown.last_error();

  OpenEphysBinarySource conflict({.recording = dir.path(),
                                  .stream_index = 1,
                                  .stream_folder = "data_stream_16ch_hippocampus"});
  EXPECT_FALSE(conflict.start());
  EXPECT_NE(conflict.last_error().find("continuous[1].folder_name"), std::string::npos)
      << conflict.last_error();
}

// --- the real Neuropixels oebin (metadata only) ----------------------------------------------

TEST(OpenEphysStructure, RealNeuropixelsOebin) {
  const OpenEphysStructure s = parse_openephys_structure(kNpOebin);
  EXPECT_EQ(s.gui_version, "1.0.1");
  ASSERT_EQ(s.continuous.size(), 1u);
  const OpenEphysStream& probe = s.continuous[0];
  EXPECT_EQ(probe.folder_name, "Neuropix-PXI-100.ProbeA/");
  EXPECT_EQ(probe.folder(), "Neuropix-PXI-100.ProbeA");
  EXPECT_EQ(probe.stream_name, "ProbeA");
  EXPECT_EQ(probe.source_processor_name, "Neuropix-PXI");
  EXPECT_DOUBLE_EQ(probe.sample_rate_hz, 30000.0);
  EXPECT_EQ(probe.num_channels, 384u);
  ASSERT_EQ(probe.channels.size(), 384u);
  EXPECT_EQ(probe.neural_channels(), 384u);
  EXPECT_EQ(probe.channels[0].name, "CH0");
  EXPECT_EQ(probe.channels[383].name, "CH383");
  EXPECT_EQ(probe.channels[0].units, "uV");
  EXPECT_DOUBLE_EQ(probe.channels[0].bit_volts, 0.1949999928);
  EXPECT_EQ(probe.channels[0].electrode_index, 0);
  EXPECT_EQ(probe.channels[383].electrode_index, 287);
}

/// The real NP oebin beside a small synthetic .dat (the original .dat is not available).
fs::path np_recording(const fs::path& dir, std::uint64_t rows) {
  fs::copy_file(kNpOebin, dir / "structure.oebin");
  const fs::path stream = dir / "continuous" / "Neuropix-PXI-100.ProbeA";
  fs::create_directories(stream);
  std::vector<std::int16_t> data(rows * 384);
  for (std::uint64_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < 384; ++c) data[r * 384 + c] = pattern(r, c);
  }
  std::ofstream out(stream / "continuous.dat", std::ios::binary);
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(std::int16_t)));
  return stream;
}

TEST(OpenEphysBinarySource, NeuropixelsOebinWithSampleNumbersAndProbeinterfaceGeometry) {
  TempDir dir("oe_np");
  const fs::path stream = np_recording(dir.path(), 700);
  std::vector<std::int64_t> numbers(700);
  for (std::size_t i = 0; i < numbers.size(); ++i)
    numbers[i] = 123456 + static_cast<std::int64_t>(i);
  write_npy(stream / "sample_numbers.npy", numbers);
  std::vector<double> seconds(700, 0.5);
  write_npy(stream / "timestamps.npy", seconds);  // >= 0.6: seconds, not sample numbers

  OpenEphysBinarySource source({.recording = dir.path() / "structure.oebin",
                                .probeinterface = kNp1000,
                                .block_samples = 256});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_TRUE(source.warnings().empty()) << source.warnings().front();
  EXPECT_EQ(source.sample_numbers_source(), "sample_numbers.npy");
  EXPECT_EQ(source.first_sample(), 123456);
  const ProbeInfo& info = source.info();
  EXPECT_EQ(info.name, "ProbeA");
  EXPECT_EQ(info.stored_channels, 384u);
  EXPECT_EQ(info.neural_channels, 384u);
  EXPECT_DOUBLE_EQ(info.sample_rate_hz, 30000.0);
  EXPECT_DOUBLE_EQ(info.microvolts_per_bit, 0.1949999928);
  // NP1000.json has 960 contacts: channels pick theirs by electrode_index (CH383 -> e287).
  ASSERT_EQ(info.geometry.channel_count(), 384u);
  const json probe = json::parse(read_text(kNp1000))["probes"][0];
  EXPECT_EQ(info.geometry.sites[383].electrode, 287);
  EXPECT_DOUBLE_EQ(info.geometry.sites[383].x_um, probe["contact_positions"][287][0].get<double>());
  EXPECT_DOUBLE_EQ(info.geometry.sites[383].z_um, probe["contact_positions"][287][1].get<double>());
  const Replay r = replay_all(source, 300);
  EXPECT_EQ(r.rows, 700u);
  EXPECT_TRUE(r.contiguous);
  EXPECT_TRUE(r.pattern_exact);
}

TEST(OpenEphysBinarySource, WithoutSampleNumbersStartsAtZeroAndSaysSo) {
  TempDir dir("oe_nosn");
  np_recording(dir.path(), 10);
  OpenEphysBinarySource source({.recording = dir.path()});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.first_sample(), 0);
  EXPECT_EQ(source.sample_numbers_source(), "none");
  ASSERT_EQ(source.warnings().size(), 1u);
  EXPECT_NE(source.warnings()[0].find("numbered from 0"), std::string::npos);
  EXPECT_EQ(source.info().geometry.sites[383].electrode, 287);  // kept from electrode_index
}

// --- bad input ---------------------------------------------------------------------------------

/// A small valid recording: one 4-channel stream at 1000 Hz, `rows` frames, `extra` stray bytes.
struct SmallRecording {
  fs::path dir;
  fs::path oebin;
  fs::path dat;
};

json small_oebin() {
  json channels = json::array();
  for (int c = 0; c < 4; ++c) {
    channels.push_back({{"channel_name", "CH" + std::to_string(c)},
                        {"bit_volts", 0.195},
                        {"units", "uV"},
                        {"description", "test"}});
  }
  return {{"GUI version", "0.6.7"},
          {"continuous",
           {{{"folder_name", "Acquisition_Board-100.Rhythm Data/"},
             {"sample_rate", 1000.0},
             {"stream_name", "Rhythm Data"},
             {"num_channels", 4},
             {"channels", channels}}}},
          {"events", json::array()},
          {"spikes", json::array()}};
}

SmallRecording write_small(const fs::path& dir, const std::string& oebin_text, std::uint64_t rows,
                           std::size_t extra = 0) {
  SmallRecording out{dir, dir / "structure.oebin",
                     dir / "continuous" / "Acquisition_Board-100.Rhythm Data" / "continuous.dat"};
  write_text(out.oebin, oebin_text);
  fs::create_directories(out.dat.parent_path());
  std::vector<std::int16_t> data(rows * 4);
  for (std::uint64_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < 4; ++c) data[r * 4 + c] = pattern(r, c);
  }
  std::ofstream dat(out.dat, std::ios::binary);
  dat.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(std::int16_t)));
  dat << std::string(extra, '\x7f');
  return out;
}

std::string start_error(const SmallRecording& rec, OpenEphysBinarySourceConfig config = {}) {
  config.recording = rec.dir;
  OpenEphysBinarySource source(config);
  EXPECT_FALSE(source.start());
  return source.last_error();
}

#define EXPECT_NAMES(message, text) \
  EXPECT_NE((message).find(text), std::string::npos) << "message: " << (message)

TEST(OpenEphysBinarySourceErrors, SmallValidRecordingReplaysExactly) {
  TempDir dir("oe_ok");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(2), 50);
  OpenEphysBinarySource source({.recording = rec.dir, .block_samples = 7});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.info().name, "Rhythm Data");
  EXPECT_EQ(source.total_samples(), 50u);
  const Replay r = replay_all(source, 16);
  EXPECT_EQ(r.rows, 50u);
  EXPECT_TRUE(r.pattern_exact);
  EXPECT_TRUE(r.contiguous);
}

// A replayed session knows its probe's layout, which an oebin does not hold.
TEST(OpenEphysBinarySourceErrors, AKnownLayoutIsUsedWhenItFitsAndRefusedWhenItDoesNot) {
  TempDir dir("oe_layout");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 20);
  OpenEphysBinarySource fits({.recording = rec.dir, .geometry = neuropixels1_geometry(4)});
  ASSERT_TRUE(fits.start()) << fits.last_error();
  EXPECT_DOUBLE_EQ(fits.info().geometry.sites[1].x_um, 48.0);  // NP1.0 bank 0, electrode 1
  EXPECT_NE(fits.geometry_source().find("NP1000"), std::string::npos) << fits.geometry_source();

  OpenEphysBinarySource too_many({.recording = rec.dir, .geometry = neuropixels1_geometry(8)});
  EXPECT_FALSE(too_many.start());
  EXPECT_NAMES(too_many.last_error(), "8 sites for the 4 neural channels");

  const fs::path pi = dir.path() / "probe.json";
  write_text(pi, "{}");
  OpenEphysBinarySource both(
      {.recording = rec.dir, .probeinterface = pi, .geometry = neuropixels1_geometry(4)});
  EXPECT_FALSE(both.start());
  EXPECT_NAMES(both.last_error(), "a probeinterface file and a given geometry together");
}

TEST(OpenEphysBinarySourceErrors, TruncatedLastFrameIsReportedAndWholeFramesReplayed) {
  TempDir dir("oe_trunc");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 10, 5);
  OpenEphysBinarySource source({.recording = rec.dir});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.total_samples(), 10u);
  ASSERT_FALSE(source.warnings().empty());
  const std::string& w = source.warnings()[0];
  EXPECT_NAMES(w, rec.dat.string());
  EXPECT_NAMES(w, "continuous[0].num_channels");
  EXPECT_NAMES(w, "85 bytes");
  const Replay r = replay_all(source, 4);
  EXPECT_EQ(r.rows, 10u);
  EXPECT_TRUE(r.pattern_exact);
}

TEST(OpenEphysBinarySourceErrors, DatWithoutAWholeFrameIsRefused) {
  TempDir dir("oe_short");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 0, 7);
  const std::string e = start_error(rec);
  EXPECT_NAMES(e, rec.dat.string());
  EXPECT_NAMES(e, "continuous[0].num_channels");
}

TEST(OpenEphysBinarySourceErrors, MissingFieldNamesFileAndField) {
  TempDir dir("oe_missing");
  json oebin = small_oebin();
  oebin["continuous"][0].erase("sample_rate");
  const SmallRecording rec = write_small(dir.path(), oebin.dump(), 5);
  const std::string e = start_error(rec);
  EXPECT_NAMES(e, rec.oebin.string());
  EXPECT_NAMES(e, "continuous[0].sample_rate: missing");

  oebin = small_oebin();
  oebin["continuous"][0]["channels"][2].erase("bit_volts");
  write_text(rec.oebin, oebin.dump());
  const std::string e2 = start_error(rec);
  EXPECT_NAMES(e2, rec.oebin.string());
  EXPECT_NAMES(e2, "continuous[0].channels[2].bit_volts: missing");

  write_text(rec.oebin, R"({"GUI version": "0.6.7"})");
  EXPECT_NAMES(start_error(rec), "continuous: missing");
}

TEST(OpenEphysBinarySourceErrors, WrongTypeNamesFileAndField) {
  TempDir dir("oe_type");
  json oebin = small_oebin();
  oebin["continuous"][0]["num_channels"] = "4";
  const SmallRecording rec = write_small(dir.path(), oebin.dump(), 5);
  const std::string e = start_error(rec);
  EXPECT_NAMES(e, rec.oebin.string());
  EXPECT_NAMES(e, "continuous[0].num_channels: expected an integer, found \"4\"");

  oebin = small_oebin();
  oebin["continuous"][0]["channels"][1]["bit_volts"] = "0.195";
  write_text(rec.oebin, oebin.dump());
  EXPECT_NAMES(start_error(rec), "continuous[0].channels[1].bit_volts: expected a number");

  oebin = small_oebin();
  oebin["continuous"][0]["folder_name"] = 7;
  write_text(rec.oebin, oebin.dump());
  EXPECT_NAMES(start_error(rec), "continuous[0].folder_name: expected a string");

  oebin = small_oebin();
  oebin["continuous"][0]["sample_rate"] = -30000;
  write_text(rec.oebin, oebin.dump());
  EXPECT_NAMES(start_error(rec), "continuous[0].sample_rate: must be positive");

  oebin = small_oebin();
  oebin["continuous"][0]["num_channels"] = 5;
  write_text(rec.oebin, oebin.dump());
  const std::string e5 = start_error(rec);
  EXPECT_NAMES(e5, "continuous[0].channels: lists 4 channels but continuous[0].num_channels = 5");

  oebin = small_oebin();
  oebin["continuous"] = json::object();
  write_text(rec.oebin, oebin.dump());
  EXPECT_NAMES(start_error(rec), "continuous: expected an array");
}

TEST(OpenEphysBinarySourceErrors, GarbageJsonNamesFileAndLine) {
  TempDir dir("oe_garbage");
  const SmallRecording rec = write_small(dir.path(), "{\n  \"continuous\": [\n    {oops}\n", 5);
  const std::string e = start_error(rec);
  EXPECT_NAMES(e, rec.oebin.string() + ":3: malformed JSON");

  write_text(rec.oebin, "[1, 2, 3]");
  EXPECT_NAMES(start_error(rec), "top level: expected a JSON object");

  write_text(rec.oebin, "");
  EXPECT_NAMES(start_error(rec), "malformed JSON");
}

TEST(OpenEphysBinarySourceErrors, StreamIndexOutOfRangeNamesFileAndField) {
  TempDir dir("oe_range");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 5);
  const std::string e = start_error(rec, {.stream_index = 3});
  EXPECT_NAMES(e, rec.oebin.string());
  EXPECT_NAMES(e, "continuous[3]: stream index out of range (the file lists 1 continuous stream)");
}

TEST(OpenEphysBinarySourceErrors, MissingFilesAreNamed) {
  TempDir dir("oe_nofile");
  OpenEphysBinarySource none({.recording = dir.path()});
  EXPECT_FALSE(none.start());
  EXPECT_NAMES(none.last_error(),
               (dir.path() / "structure.oebin").string() + ": structure.oebin not found");

  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 5);
  fs::remove(rec.dat);
  const std::string e = start_error(rec);
  EXPECT_NAMES(e, rec.dat.string() + ": continuous.dat not found");
  EXPECT_NAMES(e, "continuous[0].folder_name");
}

TEST(OpenEphysBinarySourceErrors, MixedScalesAndTrailingAdcChannels) {
  TempDir dir("oe_scale");
  json oebin = small_oebin();
  oebin["continuous"][0]["channels"][2]["bit_volts"] = 0.5;
  const SmallRecording rec = write_small(dir.path(), oebin.dump(), 5);
  EXPECT_NAMES(start_error(rec), "continuous[0].channels[2].bit_volts");

  // An ADC channel (in V) at the end is stored but not an electrode site.
  oebin = small_oebin();
  oebin["continuous"][0]["channels"][3]["units"] = "V";
  oebin["continuous"][0]["channels"][3]["bit_volts"] = 0.00015258789;
  write_text(rec.oebin, oebin.dump());
  OpenEphysBinarySource source({.recording = rec.dir});
  ASSERT_TRUE(source.start()) << source.last_error();
  EXPECT_EQ(source.info().stored_channels, 4u);
  EXPECT_EQ(source.info().neural_channels, 3u);
  EXPECT_EQ(source.info().geometry.channel_count(), 3u);
  EXPECT_DOUBLE_EQ(source.info().microvolts_per_bit, 0.195);

  oebin["continuous"][0]["channels"][0]["units"] = "V";
  write_text(rec.oebin, oebin.dump());
  EXPECT_NAMES(start_error(rec), "continuous[0].channels[0].units");
}

TEST(OpenEphysBinarySourceErrors, BadSampleNumbersAndProbeinterfaceAreNamed) {
  TempDir dir("oe_npy");
  const SmallRecording rec = write_small(dir.path(), small_oebin().dump(), 5);
  const fs::path numbers = rec.dat.parent_path() / "sample_numbers.npy";
  write_text(numbers, "not numpy at all");
  EXPECT_NAMES(start_error(rec), numbers.string() + ": not a NumPy .npy file");

  // Fewer sample numbers than frames: a warning naming both files, not a refusal.
  write_npy(numbers, std::vector<std::int64_t>{40, 41, 42});
  {
    OpenEphysBinarySource source({.recording = rec.dir});
    ASSERT_TRUE(source.start()) << source.last_error();
    EXPECT_EQ(source.first_sample(), 40);
    ASSERT_EQ(source.warnings().size(), 1u);
    EXPECT_NAMES(source.warnings()[0], numbers.string() + ": holds 3 sample numbers");
  }

  // NP1000.json has 960 contacts and these channels no electrode_index.
  const std::string e = start_error(rec, {.probeinterface = kNp1000});
  EXPECT_NAMES(e, kNp1000.string());
  EXPECT_NAMES(e, "960 contacts");
}

}  // namespace
}  // namespace twinloop::drivers

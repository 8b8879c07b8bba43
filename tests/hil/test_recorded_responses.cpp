// Recorded responses of real V1 neurons (Ecker et al. 2010) read from the shared, unmodified
// MATLAB v5 file: the reader reproduces the numbers VERIFY.txt lists for it, the subject answers
// each repeat once in a seeded order and says when a condition is exhausted, and bad input (a
// missing or foreign file, a session out of range, a struct missing a field, a direction not in
// the data) is a clear error naming the file and the field. Malformed files are written by the
// test itself (a minimal MATLAB v5 writer below), never derived from the licensed data.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "twinloop/hil/recorded_responses.hpp"

namespace twinloop::hil {
namespace {

const std::filesystem::path kFile = std::filesystem::path(TWINLOOP_SHARED_DATA) /
                                    "v1_gratings_ecker2010" / "data_v1_binned_moving.mat";

// The file is decompressed whole on every load (~2 s): the tests share one read.
const std::vector<RecordedResponses>& all_sessions() {
  static const std::vector<RecordedResponses> sessions = RecordedResponses::load_all(kFile);
  return sessions;
}

protocols::Stimulus direction(double deg) {
  protocols::Stimulus s;
  s.dimension_count = 2;
  s.values[0] = deg;
  s.values[1] = 1.0;
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const RecordedDataError& e) {
    return e.what();
  }
  return "(no RecordedDataError)";
}

// ---- a minimal MATLAB v5 writer (uncompressed, little-endian) for malformed test files ----
namespace mat5 {
constexpr std::uint32_t kInt8 = 1, kUint16 = 4, kInt32 = 5, kUint32 = 6, kDouble = 9, kMatrix = 14;
constexpr std::uint32_t kCellClass = 1, kStructClass = 2, kCharClass = 4, kDoubleClass = 6;

void put32(std::string& b, std::uint32_t v) {
  char bytes[4];
  std::memcpy(bytes, &v, 4);
  b.append(bytes, 4);
}
std::string element(std::uint32_t type, const std::string& data) {
  std::string b;
  put32(b, type);
  put32(b, static_cast<std::uint32_t>(data.size()));
  b += data;
  while (b.size() % 8 != 0) b.push_back('\0');
  return b;
}
std::string matrix(std::uint32_t cls, const std::vector<std::uint32_t>& dims,
                   const std::string& name, const std::string& body) {
  std::string flags, d;
  put32(flags, cls);
  put32(flags, 0);
  for (std::uint32_t x : dims) put32(d, x);
  return element(kMatrix,
                 element(kUint32, flags) + element(kInt32, d) + element(kInt8, name) + body);
}
std::string doubles(const std::vector<double>& v, const std::vector<std::uint32_t>& dims,
                    const std::string& name = "") {
  std::string d(v.size() * 8, '\0');
  std::memcpy(d.data(), v.data(), d.size());
  return matrix(kDoubleClass, dims, name, element(kDouble, d));
}
std::string text(const std::string& s) {
  std::string d;
  for (char c : s) {
    const auto u = static_cast<std::uint16_t>(c);
    d.append(reinterpret_cast<const char*>(&u), 2);
  }
  return matrix(kCharClass, {1, static_cast<std::uint32_t>(s.size())}, "", element(kUint16, d));
}
// A struct array: values[element][field], fields in order.
std::string structure(const std::vector<std::string>& fields,
                      const std::vector<std::vector<std::string>>& values) {
  constexpr std::uint32_t kNameLength = 32;
  std::string body;
  put32(body, (4u << 16) | kInt32);  // field name length, small element format
  put32(body, kNameLength);
  std::string names;
  for (const std::string& f : fields) {
    std::string n = f;
    n.resize(kNameLength, '\0');
    names += n;
  }
  body += element(kInt8, names);
  for (const auto& v : values) {
    for (const std::string& field_value : v) body += field_value;
  }
  return matrix(kStructClass, {static_cast<std::uint32_t>(values.size()), 1}, "", body);
}
// `variable` is a top-level matrix with its name (matrix(..., name, ...)).
void write(const std::filesystem::path& path, const std::string& variable) {
  std::string header(116, ' ');
  const std::string text = "MATLAB 5.0 MAT-file, written by twinloop's tests";
  header.replace(0, text.size(), text);
  header += std::string(8, '\0');        // no subsystem data
  header += std::string("\x00\x01", 2);  // version 0x0100
  header += "IM";                        // little-endian
  std::ofstream(path, std::ios::binary) << header << variable;
}
}  // namespace mat5

// One session struct of 2 units x 2 conditions x 3 bins x 2 repeats, with `skip` left out.
std::string session_struct(const std::string& skip = "", double direction1 = 90.0) {
  std::vector<std::string> fields;
  std::vector<std::string> values;
  const auto add = [&](const std::string& name, const std::string& value) {
    if (name == skip) return;
    fields.push_back(name);
    values.push_back(value);
  };
  std::vector<double> spikes(2 * 2 * 3 * 2);
  for (std::size_t i = 0; i < spikes.size(); ++i) spikes[i] = static_cast<double>(i % 3);
  add("date", mat5::text("2024-01-01"));
  add("subject", mat5::text("T"));
  add("conditions",
      mat5::structure({"contrast", "direction"},
                      {{mat5::doubles({100}, {1, 1}), mat5::doubles({0}, {1, 1})},
                       {mat5::doubles({100}, {1, 1}), mat5::doubles({direction1}, {1, 1})}}));
  add("contamination", mat5::doubles({0.01, 0.02}, {2, 1}));
  add("tetrode", mat5::doubles({1, 2}, {1, 2}));
  add("spikes", mat5::doubles(spikes, {2, 2, 3, 2}));
  add("times", mat5::doubles({-5, 5, 15}, {1, 3}));
  return mat5::structure(fields, {values});
}

std::filesystem::path temp_mat(const std::string& name, const std::string& session) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("twinloop_recorded_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  mat5::write(path, mat5::matrix(mat5::kCellClass, {1, 1}, "data", session));
  return path;
}

TEST(RecordedResponses, SessionsMatchVerifyTxt) {
  const std::vector<RecordedSessionInfo> sessions = list_recorded_sessions(kFile);
  ASSERT_EQ(sessions.size(), 27u);
  // VERIFY.txt: sess 0 2008-08-09_12-28-59 'H' (38, 16, 90, 13); sess 6 (22, 16, 90, 129);
  // sess 23 2003-06-30 'D' (16, 16, 90, 5).
  EXPECT_EQ(sessions[0].date, "2008-08-09_12-28-59");
  EXPECT_EQ(sessions[0].subject, "H");
  EXPECT_EQ(sessions[0].units, 38u);
  EXPECT_EQ(sessions[0].conditions, 16u);
  EXPECT_EQ(sessions[0].repeats, 13u);
  EXPECT_EQ(sessions[6].units, 22u);
  EXPECT_EQ(sessions[6].repeats, 129u);
  EXPECT_EQ(sessions[23].date, "2003-06-30");
  EXPECT_EQ(sessions[23].subject, "D");
  EXPECT_EQ(sessions[23].units, 16u);
  EXPECT_EQ(sessions[23].repeats, 5u);
  std::size_t min_units = 1000, max_units = 0;
  for (const RecordedSessionInfo& s : sessions) {
    min_units = std::min(min_units, s.units);
    max_units = std::max(max_units, s.units);
  }
  EXPECT_EQ(min_units, 14u);
  EXPECT_EQ(max_units, 38u);
}

TEST(RecordedResponses, CountsMatchVerifyTxt) {
  const RecordedResponses& s0 = all_sessions().at(0);
  EXPECT_EQ(s0.unit_count(), 38u);
  ASSERT_EQ(s0.condition_count(), 16u);
  EXPECT_EQ(s0.window_bins(), 50u);  // 50..550 ms in 10 ms bins
  EXPECT_DOUBLE_EQ(s0.bin_ms(), 10.0);
  for (std::size_t c = 0; c < 16; ++c) {
    EXPECT_DOUBLE_EQ(s0.conditions()[c].direction_deg, 22.5 * static_cast<double>(c));
    EXPECT_DOUBLE_EQ(s0.conditions()[c].contrast, 100.0);
    EXPECT_EQ(s0.conditions()[c].repeats, 13u);
  }
  // VERIFY.txt: "mean counts/trial per neuron (first 5): [21.64 0.08 0.15 8.14 0.09]", printed
  // to two decimals, over all conditions and repeats.
  const double expected_means[5] = {21.64, 0.08, 0.15, 8.14, 0.09};
  for (std::size_t u = 0; u < 5; ++u) {
    double sum = 0.0;
    for (std::size_t c = 0; c < 16; ++c) sum += s0.mean_count(c, u);
    EXPECT_NEAR(sum / 16.0, expected_means[u], 0.05) << "unit " << u;
  }
  // VERIFY.txt: "best neuron 31 curve" (mean count per direction, to two decimals).
  const double curve[16] = {1.46, 0.54, 0.08, 1.85, 9.77, 8.31, 3.0, 1.0,
                            0.69, 0.0,  0.31, 0.92, 1.08, 1.69, 2.0, 2.38};
  for (std::size_t c = 0; c < 16; ++c) {
    EXPECT_NEAR(s0.mean_count(c, 31), curve[c], 0.006) << "direction " << c;
  }
  // The D-monkey sessions store directions rounded to whole degrees.
  const RecordedResponses& s14 = all_sessions().at(14);
  EXPECT_DOUBLE_EQ(s14.conditions()[15].direction_deg, 336.0);
  EXPECT_EQ(s14.find_direction(337.5), 15u);
  EXPECT_EQ(s14.find_direction(315.0), 14u);
  EXPECT_EQ(s14.find_direction(22.5), 1u);
  EXPECT_FALSE(s14.find_direction(11.25).has_value());
}

TEST(RecordedResponses, WindowChangesTheCounts) {
  const RecordedResponses early = RecordedResponses::load(kFile, 23, {-200.0, 0.0});
  EXPECT_EQ(early.window_bins(), 20u);
  const RecordedResponses late = all_sessions().at(23);
  double baseline = 0.0, response = 0.0;
  for (std::size_t c = 0; c < 16; ++c) {
    for (std::size_t u = 0; u < early.unit_count(); ++u) {
      baseline += early.mean_count(c, u) / 0.2;  // spikes/s
      response += late.mean_count(c, u) / 0.5;
    }
  }
  EXPECT_GT(response, 1.3 * baseline);  // a visual response above the pre-stimulus rate
}

TEST(RecordedSubject, AnswersEachRepeatOnceThenSaysExhausted) {
  RecordedSubject subject(all_sessions().at(23), {.seed = 5});  // 5 repeats per direction
  EXPECT_EQ(subject.total(), 80u);
  std::vector<std::uint32_t> counts(subject.unit_count());
  std::set<std::size_t> repeats;
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(subject.available(direction(45.0)));
    const RecordedSubject::Response r = subject.respond(direction(45.0), counts);
    ASSERT_EQ(r.answer, RecordedAnswer::kAnswered);
    EXPECT_EQ(r.condition, 2u);
    repeats.insert(r.repeat);
    const auto recorded = subject.data().counts(2, r.repeat);
    EXPECT_TRUE(std::equal(recorded.begin(), recorded.end(), counts.begin()));
  }
  EXPECT_EQ(repeats.size(), 5u);  // every repeat once, none twice
  EXPECT_EQ(subject.remaining(2), 0u);
  EXPECT_FALSE(subject.available(direction(45.0)));
  std::fill(counts.begin(), counts.end(), 77u);
  const RecordedSubject::Response again = subject.respond(direction(45.0), counts);
  EXPECT_EQ(again.answer, RecordedAnswer::kExhausted);  // never resampled
  EXPECT_EQ(counts.front(), 77u);
  EXPECT_EQ(subject.used(), 5u);
  const std::vector<std::size_t> left = subject.available_conditions();
  EXPECT_EQ(left.size(), 15u);
  EXPECT_EQ(std::count(left.begin(), left.end(), 2u), 0);
  EXPECT_FALSE(subject.exhausted());
  for (double d = 0.0; d < 360.0; d += 22.5) {
    while (subject.respond(direction(d), counts).answer == RecordedAnswer::kAnswered) {
    }
  }
  EXPECT_TRUE(subject.exhausted());
  EXPECT_TRUE(subject.available_conditions().empty());
  EXPECT_EQ(subject.used(), 80u);
  subject.reset();
  EXPECT_EQ(subject.remaining(2), 5u);
}

TEST(RecordedSubject, OrderIsDeterministicFromTheSeed) {
  const auto sequence = [](std::uint64_t seed) {
    RecordedSubject subject(all_sessions().at(7), {.seed = seed});  // 6 repeats
    std::vector<std::uint32_t> counts(subject.unit_count());
    std::vector<std::size_t> order;
    for (int i = 0; i < 6; ++i) order.push_back(subject.respond(direction(90.0), counts).repeat);
    return order;
  };
  EXPECT_EQ(sequence(3), sequence(3));
  bool differs = false;
  for (std::uint64_t seed = 4; seed < 10 && !differs; ++seed)
    differs = sequence(seed) != sequence(3);
  EXPECT_TRUE(differs);
}

TEST(RecordedSubject, BadStimuliAreStatusesNotCrashes) {
  RecordedSubject subject(all_sessions().at(0), {});
  std::vector<std::uint32_t> counts(subject.unit_count(), 9u);
  EXPECT_EQ(subject.respond(direction(10.0), counts).answer, RecordedAnswer::kNoSuchCondition);
  EXPECT_EQ(counts.front(), 9u);
  EXPECT_FALSE(subject.available(direction(10.0)));
  EXPECT_FALSE(subject.condition_of(direction(std::nan(""))).has_value());
  std::vector<std::uint32_t> wrong(3);
  EXPECT_THROW((void)subject.respond(direction(0.0), wrong), std::invalid_argument);
  EXPECT_EQ(subject.used(), 0u);
  EXPECT_THROW(RecordedSubject(all_sessions().at(0), {.direction_dimension = 9}),
               std::invalid_argument);
  EXPECT_THROW((void)subject.data().counts(16, 0), std::out_of_range);
  EXPECT_THROW((void)subject.data().counts(0, 13), std::out_of_range);
}

TEST(RecordedResponses, BadInputNamesFileAndField) {
  const std::string missing = error_of([] { (void)RecordedResponses::load("/no/such.mat", 0); });
  EXPECT_NE(missing.find("/no/such.mat"), std::string::npos) << missing;
  EXPECT_NE(missing.find("no such file"), std::string::npos) << missing;

  const std::string out_of_range = error_of([] { (void)RecordedResponses::load(kFile, 27); });
  EXPECT_NE(out_of_range.find(kFile.string()), std::string::npos) << out_of_range;
  EXPECT_NE(out_of_range.find("session 27 is out of range"), std::string::npos) << out_of_range;
  EXPECT_NE(out_of_range.find("27 sessions (0..26)"), std::string::npos) << out_of_range;

  const std::string window = error_of([] {
    (void)RecordedResponses::load(kFile, 0, {50.0, 800.0});
  });
  EXPECT_NE(window.find("outside the recorded bins (-200..700 ms)"), std::string::npos) << window;

  const auto dir =
      std::filesystem::temp_directory_path() / ("twinloop_recorded_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto text_file = dir / "not_a_mat.mat";
  std::ofstream(text_file) << "date,subject\n2024,T\n";
  const std::string foreign = error_of([&] { (void)RecordedResponses::load(text_file, 0); });
  EXPECT_NE(foreign.find(text_file.string()), std::string::npos) << foreign;
  EXPECT_NE(foreign.find("MATLAB"), std::string::npos) << foreign;

  // A well-formed session written by the test reads back...
  const auto good = temp_mat("good.mat", session_struct());
  const RecordedResponses r = RecordedResponses::load(good, 0, {0.0, 20.0});
  EXPECT_EQ(r.unit_count(), 2u);
  EXPECT_EQ(r.condition_count(), 2u);
  EXPECT_EQ(r.window_bins(), 2u);  // centres 5 and 15
  // spikes(u, c, t, rep) = (u + 2c + 4t + 12rep) % 3; unit 1, condition 1, repeat 0: t = 1, 2.
  EXPECT_EQ(r.counts(1, 0)[1], static_cast<std::uint32_t>((1 + 2 + 4) % 3 + (1 + 2 + 8) % 3));
  // ...and every missing field is named.
  for (const std::string field :
       {"spikes", "times", "conditions", "date", "subject", "contamination", "tetrode"}) {
    const auto path = temp_mat("no_" + field + ".mat", session_struct(field));
    const std::string e = error_of([&] { (void)RecordedResponses::load(path, 0, {0.0, 20.0}); });
    EXPECT_NE(e.find(path.string()), std::string::npos) << e;
    EXPECT_NE(e.find("data{0}: missing field '" + field + "'"), std::string::npos) << e;
  }
  // A truncated file is an error, never a crash (libmatio leaves partly read variables).
  std::string bytes;
  {
    std::ifstream in(good, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto cut = dir / "truncated.mat";
  for (std::size_t n = 0; n + 1 < bytes.size(); n += 8) {
    std::ofstream(cut, std::ios::binary | std::ios::trunc) << bytes.substr(0, n);
    try {
      (void)RecordedResponses::load(cut, 0, {0.0, 20.0});
    } catch (const RecordedDataError& e) {
      EXPECT_NE(std::string(e.what()).find(cut.string()), std::string::npos) << e.what();
    }
  }
  // A variable that is not a cell array of sessions.
  const auto not_cell = dir / "not_cell.mat";
  mat5::write(not_cell, mat5::doubles({1, 2, 3}, {1, 3}, "data"));
  const std::string e = error_of([&] { (void)RecordedResponses::load(not_cell, 0); });
  EXPECT_NE(e.find("data: expected a cell array"), std::string::npos) << e;
  const auto other_name = dir / "other_name.mat";
  mat5::write(other_name, mat5::doubles({1}, {1, 1}, "responses"));
  const std::string e2 = error_of([&] { (void)RecordedResponses::load(other_name, 0); });
  EXPECT_NE(e2.find("no readable variable 'data'"), std::string::npos) << e2;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace twinloop::hil

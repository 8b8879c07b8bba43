// `twinloop export`: a session directory to an NWB 2.x file, written with libhdf5's C API.
//
// Layout facts (NWB core schema 2.5.0: core/nwb.file.yaml, nwb.epoch.yaml, nwb.misc.yaml; and
// hdmf-common 1.5.0: common/table.yaml), as HDF5 objects:
// - every typed group or dataset carries the attributes `namespace` ("core" or "hdmf-common"),
//   `neurodata_type` (the type name) and `object_id` (a UUID, unique per object);
// - the root group is an NWBFile: attribute `nwb_version`; datasets `file_create_date` (1-D array
//   of ISO 8601 text), `identifier`, `session_description`, `session_start_time`,
//   `timestamps_reference_time`; groups `acquisition`, `analysis`, `processing`,
//   `stimulus/presentation`, `stimulus/templates`, `general`; optional `intervals`, `units`;
// - a DynamicTable is a group with attributes `colnames` (1-D text array, the columns in order,
//   index columns not listed) and `description`, a dataset `id` (ElementIdentifiers, integers),
//   and one VectorData dataset per column (attribute `description`); a ragged column is a
//   VectorData of all values plus a VectorIndex `<name>_index` holding, per row, the end offset
//   of that row's values, with attribute `target` (an object reference to the VectorData);
// - /intervals/trials is a TimeIntervals table (required columns start_time, stop_time, seconds);
//   /units is a Units table (spike_times: float64 seconds, ragged, optional attribute
//   `resolution`).
// The cached specification (/specifications) is not written: see docs/export.md.
#include "twinloop/daemon/nwb_export.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/protocols/diagnostic.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

namespace fs = std::filesystem;

constexpr const char* kNwbVersion = "2.5.0";          // NWB core schema the layout follows
constexpr std::uint32_t kApplicationId = 0x54574C50;  // 'TWLP', docs/session-record.md
constexpr int kRecordFormat = 2;  // 2 added predictions.rival_differences, not exported
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Refused input or failed work; the message already names the file.
struct ExportError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// The session record, read-only.

class ReadOnlyDb {
 public:
  explicit ReadOnlyDb(const fs::path& file) : file_(file.string()) {
    if (sqlite3_open_v2(file_.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      throw ExportError(file_ + ": cannot open: " + why);
    }
    sqlite3_busy_timeout(db_, 5000);
  }
  ~ReadOnlyDb() { sqlite3_close(db_); }
  ReadOnlyDb(const ReadOnlyDb&) = delete;
  ReadOnlyDb& operator=(const ReadOnlyDb&) = delete;

  void exec(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      const std::string why = message != nullptr ? message : sqlite3_errmsg(db_);
      sqlite3_free(message);
      throw ExportError(file_ + ": " + why);
    }
  }

  /// Runs `sql` and calls `row(statement)` for each result row.
  template <typename F>
  void query(const char* sql, F&& row) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
      throw ExportError(file_ + ": " + sqlite3_errmsg(db_) + " (is this a twinloop session?)");
    }
    int rc = SQLITE_ROW;
    try {
      while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
    } catch (...) {
      sqlite3_finalize(stmt);
      throw;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) throw ExportError(file_ + ": " + sqlite3_errmsg(db_));
  }

  [[nodiscard]] std::int64_t integer(const char* sql) {
    std::int64_t value = 0;
    query(sql, [&](sqlite3_stmt* s) { value = sqlite3_column_int64(s, 0); });
    return value;
  }

  [[nodiscard]] const std::string& file() const noexcept { return file_; }

 private:
  std::string file_;
  sqlite3* db_ = nullptr;
};

std::string text_column(sqlite3_stmt* s, int column) {
  const auto* p = sqlite3_column_text(s, column);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p),
                                    static_cast<std::size_t>(sqlite3_column_bytes(s, column)))
                      : std::string();
}

std::optional<double> real_column(sqlite3_stmt* s, int column) {
  if (sqlite3_column_type(s, column) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_double(s, column);
}

std::string hex_column(sqlite3_stmt* s, int column) {
  const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(s, column));
  const int n = sqlite3_column_bytes(s, column);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (int i = 0; i < n; ++i) {
    hex += kDigits[p[i] >> 4];
    hex += kDigits[p[i] & 0xf];
  }
  return hex;
}

struct DeliveredTrial {
  std::int64_t trial = 0;
  std::int64_t candidate = -1;
  std::string stimulus_json;
  std::string strategy;
  bool is_validation = false;
  double expected_information_gain = kNaN;  ///< NaN: not computed (NULL on record)
  std::string status;
  std::int64_t onset_sample = 0;
  std::optional<std::int64_t> window_start, window_end;  ///< samples; absent: not scored
};

struct UnitRow {
  std::int64_t id = 0;
  std::int64_t probe = 0;
  std::int64_t channel = -1;
  std::string label;
};

struct SessionData {
  std::string protocol_text;
  std::string config_json;
  std::int64_t created_at_ns = 0;
  std::string twinloop_version;
  std::vector<std::string> hypotheses;  ///< "name (family)"
  std::vector<UnitRow> units;           ///< units.id order
  std::vector<DeliveredTrial> trials;   ///< the delivered trials, in trial order
  std::int64_t trials_on_record = 0;    ///< every trial, delivered or not
  std::int64_t resumes = 0;             ///< `resumed` events
  std::int64_t chain_links = 0;
  std::string genesis_hash;  ///< hex of chain link 0: unique to the session
  std::string head_hash;     ///< hex of the newest link
};

SessionData read_record(const fs::path& file) {
  ReadOnlyDb db(file);
  SessionData d;
  // One read transaction: every SELECT below sees the same snapshot, even while a live session
  // keeps appending (WAL readers never block the writer).
  db.exec("BEGIN");
  if (static_cast<std::uint32_t>(db.integer("PRAGMA application_id")) != kApplicationId) {
    throw ExportError(db.file() + ": not a twinloop session record (wrong application_id)");
  }
  if (const auto format = db.integer("PRAGMA user_version"); format < 1 || format > kRecordFormat) {
    throw ExportError(db.file() + ": record format " + std::to_string(format) +
                      ", this build reads format " + std::to_string(kRecordFormat));
  }
  bool have_session = false;
  db.query(
      "SELECT protocol_text, config_json, created_at_ns, twinloop_version FROM session WHERE id = "
      "1",
      [&](sqlite3_stmt* s) {
        d.protocol_text = text_column(s, 0);
        d.config_json = text_column(s, 1);
        d.created_at_ns = sqlite3_column_int64(s, 2);
        d.twinloop_version = text_column(s, 3);
        have_session = true;
      });
  if (!have_session) throw ExportError(db.file() + ": the record has no session row");
  db.query("SELECT name, family FROM hypotheses ORDER BY id", [&](sqlite3_stmt* s) {
    d.hypotheses.push_back(text_column(s, 0) + " (" + text_column(s, 1) + ")");
  });
  db.query("SELECT id, probe, channel, label FROM units ORDER BY id", [&](sqlite3_stmt* s) {
    d.units.push_back({sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1),
                       sqlite3_column_int64(s, 2), text_column(s, 3)});
  });
  d.trials_on_record = db.integer("SELECT count(*) FROM trials");
  db.query(
      "SELECT t.trial, t.candidate, t.stimulus_json, t.strategy, t.is_validation,"
      " t.expected_information_gain, t.status, d.onset_sample, o.window_start, o.window_end"
      " FROM trials t JOIN deliveries d ON d.trial = t.trial"
      " LEFT JOIN outcomes o ON o.trial = t.trial ORDER BY t.trial",
      [&](sqlite3_stmt* s) {
        DeliveredTrial t;
        t.trial = sqlite3_column_int64(s, 0);
        t.candidate = sqlite3_column_int64(s, 1);
        t.stimulus_json = text_column(s, 2);
        t.strategy = text_column(s, 3);
        t.is_validation = sqlite3_column_int64(s, 4) != 0;
        t.expected_information_gain = real_column(s, 5).value_or(kNaN);
        t.status = text_column(s, 6);
        t.onset_sample = sqlite3_column_int64(s, 7);
        if (sqlite3_column_type(s, 8) != SQLITE_NULL) {
          t.window_start = sqlite3_column_int64(s, 8);
          t.window_end = sqlite3_column_int64(s, 9);
        }
        d.trials.push_back(std::move(t));
      });
  d.resumes = db.integer("SELECT count(*) FROM events WHERE kind = 'resumed'");
  d.chain_links = db.integer("SELECT count(*) FROM chain");
  db.query("SELECT hash FROM chain WHERE seq = 0",
           [&](sqlite3_stmt* s) { d.genesis_hash = hex_column(s, 0); });
  db.query("SELECT hash FROM chain ORDER BY seq DESC LIMIT 1",
           [&](sqlite3_stmt* s) { d.head_hash = hex_column(s, 0); });
  db.exec("COMMIT");
  return d;
}

// ---------------------------------------------------------------------------------------------
// Spike files (Phy layout, spike_files.hpp): one cluster per unit, cluster id = units.id.

struct UnitSpikes {
  std::vector<double> times_s;        ///< every unit's spike times, seconds, unit-major, ascending
  std::vector<std::uint64_t> ends;    ///< per unit: end offset into times_s (the VectorIndex)
  std::vector<std::int64_t> samples;  ///< the same spikes in samples, for the summary line
};

UnitSpikes read_spikes(const fs::path& dir, const std::vector<UnitRow>& units, double rate_hz) {
  const fs::path times_file = dir / "spike_times.npy";
  const fs::path clusters_file = dir / "spike_clusters.npy";
  for (const fs::path& f : {times_file, clusters_file}) {
    if (!fs::is_regular_file(f)) {
      throw ExportError(f.string() +
                        ": missing (the spike files are written when a session ends; a session "
                        "that was interrupted has none until it is resumed and ends)");
    }
  }
  std::vector<std::int64_t> times, clusters;
  try {
    times = drivers::read_npy_int64(times_file);
    clusters = drivers::read_npy_int64(clusters_file);
  } catch (const std::exception& e) {
    throw ExportError(e.what());
  }
  if (times.size() != clusters.size()) {
    throw ExportError(clusters_file.string() + ": " + std::to_string(clusters.size()) +
                      " entries, but spike_times.npy has " + std::to_string(times.size()));
  }
  std::map<std::int64_t, std::size_t> row_of;
  for (std::size_t r = 0; r < units.size(); ++r) row_of[units[r].id] = r;
  std::vector<std::vector<std::int64_t>> per_unit(units.size());
  for (std::size_t i = 0; i < times.size(); ++i) {
    const auto it = row_of.find(clusters[i]);
    if (it == row_of.end()) {
      throw ExportError(clusters_file.string() + ": cluster " + std::to_string(clusters[i]) +
                        " is not a unit of the session record");
    }
    if (times[i] < 0) {
      throw ExportError(times_file.string() + ": negative sample " + std::to_string(times[i]));
    }
    per_unit[it->second].push_back(times[i]);
  }
  UnitSpikes out;
  out.times_s.reserve(times.size());
  out.samples.reserve(times.size());
  for (auto& unit : per_unit) {
    std::sort(unit.begin(), unit.end());
    for (const std::int64_t sample : unit) {
      out.samples.push_back(sample);
      out.times_s.push_back(static_cast<double>(sample) / rate_hz);
    }
    out.ends.push_back(out.times_s.size());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// HDF5, through the C API.

/// Collects the messages on libhdf5's error stack (the API call first, the innermost cause last)
/// and clears it.
std::string hdf5_error() {
  std::vector<std::string> messages;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        if (e != nullptr && e->desc != nullptr && *e->desc != '\0') {
          static_cast<std::vector<std::string>*>(data)->emplace_back(e->desc);
        }
        return 0;
      },
      &messages);
  H5Eclear2(H5E_DEFAULT);
  if (messages.empty()) return "libhdf5 error";
  if (messages.size() == 1 || messages.front() == messages.back()) return messages.front();
  return messages.front() + ": " + messages.back();
}

/// Turns off libhdf5's printing of its error stack to stderr while an export runs (errors are
/// reported once, as exceptions naming the file) and restores the previous handler.
class QuietHdf5Errors {
 public:
  QuietHdf5Errors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietHdf5Errors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietHdf5Errors(const QuietHdf5Errors&) = delete;
  QuietHdf5Errors& operator=(const QuietHdf5Errors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

/// Owns one HDF5 identifier and closes it with the matching H5?close.
class Hid {
 public:
  using Close = herr_t (*)(hid_t);
  Hid(hid_t id, Close close, const std::string& what) : id_(id), close_(close) {
    if (id_ < 0) throw ExportError(what + ": " + hdf5_error());
  }
  ~Hid() {
    if (id_ >= 0) close_(id_);
  }
  Hid(Hid&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Hid& operator=(Hid&&) = delete;
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  [[nodiscard]] hid_t get() const noexcept { return id_; }
  /// Closes now and reports failure (a failed H5Fclose means the file was not completely written).
  void close(const std::string& what) {
    const herr_t rc = close_(id_);
    id_ = -1;
    if (rc < 0) throw ExportError(what + ": " + hdf5_error());
  }

 private:
  hid_t id_;
  Close close_;
};

std::string random_uuid4() {
  static std::mt19937_64 engine = [] {
    std::random_device device;
    std::seed_seq seq{device(), device(), device(), device()};
    return std::mt19937_64(seq);
  }();
  std::array<std::uint8_t, 16> b{};
  for (std::size_t i = 0; i < b.size(); i += 8) {
    const std::uint64_t r = engine();
    for (std::size_t k = 0; k < 8; ++k) b[i + k] = static_cast<std::uint8_t>(r >> (8 * k));
  }
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += kDigits[b[i] >> 4];
    s += kDigits[b[i] & 0xf];
  }
  return s;
}

/// ISO 8601 in UTC with an explicit offset, microseconds: "2024-05-01T12:34:56.123456+00:00".
std::string iso8601_utc(std::int64_t ns_since_epoch) {
  const std::int64_t seconds = ns_since_epoch >= 0 ? ns_since_epoch / 1'000'000'000
                                                   : (ns_since_epoch - 999'999'999) / 1'000'000'000;
  const std::int64_t micros = (ns_since_epoch - seconds * 1'000'000'000) / 1000;
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 64> buffer{};
  const std::size_t n = std::strftime(buffer.data(), buffer.size(), "%Y-%m-%dT%H:%M:%S", &tm);
  std::array<char, 32> fraction{};
  std::snprintf(fraction.data(), fraction.size(), ".%06lld+00:00", static_cast<long long>(micros));
  return std::string(buffer.data(), n) + fraction.data();
}

/// Writes the NWB objects into one open file. Every path it names is absolute within the file.
class NwbWriter {
 public:
  explicit NwbWriter(hid_t file, std::string file_name)
      : file_(file), name_(std::move(file_name)) {}

  [[nodiscard]] Hid group(hid_t parent, const std::string& path) {
    return Hid(H5Gcreate2(parent, path.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
               where(path));
  }

  /// The three attributes every typed object carries.
  void typed(hid_t object, const char* name_space, const char* type, const std::string& path) {
    text_attribute(object, "namespace", name_space, path);
    text_attribute(object, "neurodata_type", type, path);
    text_attribute(object, "object_id", random_uuid4(), path);
  }

  void text_attribute(hid_t object, const char* name, const std::string& value,
                      const std::string& path) {
    const Hid type = text_type(true);
    const Hid space(H5Screate(H5S_SCALAR), H5Sclose, where(path));
    const Hid attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        H5Aclose, where(path + "@" + name));
    const char* p = value.c_str();
    check(H5Awrite(attribute.get(), type.get(), &p), path + "@" + name);
  }

  void text_array_attribute(hid_t object, const char* name, const std::vector<std::string>& values,
                            const std::string& path) {
    const Hid type = text_type(true);
    const hsize_t n = values.size();
    const Hid space(H5Screate_simple(1, &n, nullptr), H5Sclose, where(path));
    const Hid attribute(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                        H5Aclose, where(path + "@" + name));
    std::vector<const char*> pointers;
    for (const auto& v : values) pointers.push_back(v.c_str());
    if (!pointers.empty()) {
      check(H5Awrite(attribute.get(), type.get(), pointers.data()), path + "@" + name);
    }
  }

  void double_attribute(hid_t object, const char* name, double value, const std::string& path) {
    const Hid space(H5Screate(H5S_SCALAR), H5Sclose, where(path));
    const Hid attribute(
        H5Acreate2(object, name, H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
        where(path + "@" + name));
    check(H5Awrite(attribute.get(), H5T_NATIVE_DOUBLE, &value), path + "@" + name);
  }

  /// An object reference to `target` (an absolute path in this file).
  void reference_attribute(hid_t object, const char* name, const std::string& target,
                           const std::string& path) {
    hobj_ref_t reference{};
    check(H5Rcreate(&reference, file_, target.c_str(), H5R_OBJECT, -1), path + "@" + name);
    const Hid space(H5Screate(H5S_SCALAR), H5Sclose, where(path));
    const Hid attribute(
        H5Acreate2(object, name, H5T_STD_REF_OBJ, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
        where(path + "@" + name));
    check(H5Awrite(attribute.get(), H5T_STD_REF_OBJ, &reference), path + "@" + name);
  }

  /// A scalar text dataset. `ascii` for NWB's isodatetime, UTF-8 for text.
  Hid text(hid_t parent, const std::string& path, const std::string& value, bool ascii = false) {
    const Hid type = text_type(!ascii);
    const Hid space(H5Screate(H5S_SCALAR), H5Sclose, where(path));
    Hid dataset(H5Dcreate2(parent, path.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                           H5P_DEFAULT),
                H5Dclose, where(path));
    const char* p = value.c_str();
    check(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), path);
    return dataset;
  }

  Hid text_array(hid_t parent, const std::string& path, const std::vector<std::string>& values,
                 bool ascii = false) {
    const Hid type = text_type(!ascii);
    std::vector<const char*> pointers;
    for (const auto& v : values) pointers.push_back(v.c_str());
    return dataset(parent, path, type.get(), type.get(), values.size(), pointers.data());
  }

  Hid f64(hid_t parent, const std::string& path, std::span<const double> values) {
    return dataset(parent, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.size(), values.data());
  }
  Hid i64(hid_t parent, const std::string& path, std::span<const std::int64_t> values) {
    return dataset(parent, path, H5T_STD_I64LE, H5T_NATIVE_INT64, values.size(), values.data());
  }
  Hid u64(hid_t parent, const std::string& path, std::span<const std::uint64_t> values) {
    return dataset(parent, path, H5T_STD_U64LE, H5T_NATIVE_UINT64, values.size(), values.data());
  }
  /// Booleans as h5py and hdmf store them: an int8 enum {FALSE = 0, TRUE = 1}.
  Hid boolean(hid_t parent, const std::string& path, const std::vector<std::int8_t>& values) {
    const Hid type(H5Tenum_create(H5T_NATIVE_INT8), H5Tclose, where(path));
    const std::int8_t no = 0, yes = 1;
    check(H5Tenum_insert(type.get(), "FALSE", &no), path);
    check(H5Tenum_insert(type.get(), "TRUE", &yes), path);
    return dataset(parent, path, type.get(), type.get(), values.size(), values.data());
  }

 private:
  [[nodiscard]] std::string where(const std::string& path) const {
    return name_ + ": cannot write " + path;
  }
  void check(herr_t rc, const std::string& path) const {
    if (rc < 0) throw ExportError(where(path) + ": " + hdf5_error());
  }
  [[nodiscard]] Hid text_type(bool utf8) const {
    Hid type(H5Tcopy(H5T_C_S1), H5Tclose, name_ + ": string type");
    check(H5Tset_size(type.get(), H5T_VARIABLE), "string type");
    check(H5Tset_cset(type.get(), utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII), "string type");
    return type;
  }
  Hid dataset(hid_t parent, const std::string& path, hid_t file_type, hid_t memory_type,
              std::size_t n, const void* data) {
    const hsize_t dims = n;
    const Hid space(H5Screate_simple(1, &dims, nullptr), H5Sclose, where(path));
    Hid d(H5Dcreate2(parent, path.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                     H5P_DEFAULT),
          H5Dclose, where(path));
    if (n > 0) check(H5Dwrite(d.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path);
    return d;
  }

  hid_t file_;
  std::string name_;
};

// ---------------------------------------------------------------------------------------------
// The session, as NWB.

struct ExportContext {
  SessionData record;
  protocols::Protocol protocol;
  double rate_hz = 0.0;
  UnitSpikes spikes;
  std::string session_id;              ///< the session directory's name
  std::optional<std::string> verdict;  ///< from summary.json, when readable
};

/// A VectorData column of a table: the dataset plus its `description`.
void vector_data(NwbWriter& w, const Hid& column, const std::string& path,
                 const std::string& description) {
  w.text_attribute(column.get(), "description", description, path);
  w.typed(column.get(), "hdmf-common", "VectorData", path);
}

void table_id(NwbWriter& w, hid_t table, const std::string& path,
              std::span<const std::int64_t> ids) {
  const Hid id = w.i64(table, path + "/id", ids);
  w.typed(id.get(), "hdmf-common", "ElementIdentifiers", path + "/id");
}

void write_trials(NwbWriter& w, hid_t file, const ExportContext& c) {
  const std::string path = "/intervals/trials";
  const Hid table = w.group(file, path);
  const auto& trials = c.record.trials;
  const protocols::TrialTiming& timing = c.protocol.timing;
  const std::size_t n = trials.size();

  std::vector<std::int64_t> ids(n), onset_samples(n), candidates(n);
  std::vector<double> start(n), stop(n), onset(n), offset(n), window_start(n), window_stop(n),
      eig(n);
  std::vector<std::int8_t> validation(n);
  std::vector<std::string> status(n), strategy(n);
  const auto& dims = c.protocol.stimulus.dimensions;
  std::vector<std::vector<double>> stimulus(dims.size(), std::vector<double>(n, kNaN));
  const std::optional<std::string>& duration_dimension = c.protocol.safety.duration_dimension;
  for (std::size_t i = 0; i < n; ++i) {
    const DeliveredTrial& t = trials[i];
    ids[i] = t.trial;
    onset_samples[i] = t.onset_sample;
    candidates[i] = t.candidate;
    onset[i] = static_cast<double>(t.onset_sample) / c.rate_hz;
    start[i] = onset[i] - timing.baseline_ms * 1e-3;
    stop[i] = onset[i] + (timing.stimulus_ms + timing.inter_trial_ms) * 1e-3;
    double on_ms = timing.stimulus_ms;
    nlohmann::json stim;
    try {
      stim = nlohmann::json::parse(t.stimulus_json);
    } catch (const std::exception& e) {
      throw ExportError(c.session_id + "/session.sqlite: trial " + std::to_string(t.trial) +
                        ": stimulus_json is not JSON: " + e.what());
    }
    for (std::size_t d = 0; d < dims.size(); ++d) {
      const auto it = stim.find(dims[d].name);
      if (it != stim.end() && it->is_number()) stimulus[d][i] = it->get<double>();
      if (duration_dimension && dims[d].name == *duration_dimension &&
          std::isfinite(stimulus[d][i])) {
        on_ms = stimulus[d][i];
      }
    }
    offset[i] = onset[i] + on_ms * 1e-3;
    window_start[i] = t.window_start ? static_cast<double>(*t.window_start) / c.rate_hz : kNaN;
    window_stop[i] = t.window_end ? static_cast<double>(*t.window_end) / c.rate_hz : kNaN;
    eig[i] = t.expected_information_gain;
    validation[i] = t.is_validation ? 1 : 0;
    status[i] = t.status;
    strategy[i] = t.strategy;
  }

  std::vector<std::string> colnames;
  auto column = [&](const std::string& name, Hid dataset, const std::string& description) {
    vector_data(w, dataset, path + "/" + name, description);
    colnames.push_back(name);
  };
  column("start_time", w.f64(table.get(), path + "/start_time", start),
         "Start of the trial's baseline: stimulus onset minus the protocol's baseline_ms, "
         "seconds.");
  column("stop_time", w.f64(table.get(), path + "/stop_time", stop),
         "End of the trial: stimulus onset plus the protocol's stimulus_ms and inter_trial_ms, "
         "seconds.");
  column("stimulus_onset_time", w.f64(table.get(), path + "/stimulus_onset_time", onset),
         "Stimulus onset as recorded by the rig (deliveries.onset_sample / sample rate), seconds.");
  column("stimulus_offset_time", w.f64(table.get(), path + "/stimulus_offset_time", offset),
         "Stimulus offset: onset plus the stimulus on-time (the protocol's duration dimension "
         "when it names one, else stimulus_ms), seconds.");
  column("onset_sample", w.i64(table.get(), path + "/onset_sample", onset_samples),
         "Stimulus onset on the acquisition sample clock (deliveries.onset_sample), samples.");
  for (std::size_t d = 0; d < dims.size(); ++d) {
    std::string name = dims[d].name;
    if (std::find(colnames.begin(), colnames.end(), name) != colnames.end() || name == "id" ||
        name == "tags" || name == "timeseries" || name.ends_with("_index") || name == "candidate" ||
        name == "strategy" || name == "is_validation" || name == "status" ||
        name == "expected_information_gain") {
      name = "stimulus_" + name;
    }
    column(name, w.f64(table.get(), path + "/" + name, stimulus[d]),
           "Stimulus parameter '" + dims[d].name + "' of the trial (" + dims[d].unit +
               "), from trials.stimulus_json; NaN when absent.");
  }
  column("response_window_start_time",
         w.f64(table.get(), path + "/response_window_start_time", window_start),
         "Start of the window whose spike counts scored the trial (outcomes.window_start), "
         "seconds; NaN when the trial was not scored.");
  column("response_window_stop_time",
         w.f64(table.get(), path + "/response_window_stop_time", window_stop),
         "End (exclusive) of the scoring window (outcomes.window_end), seconds; NaN when the "
         "trial was not scored.");
  column("candidate", w.i64(table.get(), path + "/candidate", candidates),
         "Index of the candidate stimulus in the protocol's stimulus space (candidates.id); -1: "
         "off the grid.");
  column("strategy", w.text_array(table.get(), path + "/strategy", strategy),
         "How the designer chose the stimulus (trials.strategy).");
  column("is_validation", w.boolean(table.get(), path + "/is_validation", validation),
         "True for a validation trial: chosen at random, not to discriminate, so its outcome "
         "checks the hypotheses' predictions without selection bias.");
  column("status", w.text_array(table.get(), path + "/status", status),
         "Trial status on record: delivered, scored, flagged (touched by a fault; suspect) or "
         "aborted.");
  column("expected_information_gain", w.f64(table.get(), path + "/expected_information_gain", eig),
         "The designer's expected information gain for the chosen stimulus, nats; NaN when not "
         "computed.");
  table_id(w, table.get(), path, ids);

  const std::int64_t left_out = c.record.trials_on_record - static_cast<std::int64_t>(n);
  w.text_attribute(table.get(), "description",
                   "Trials of the twinloop session whose stimulus was delivered (" +
                       std::to_string(n) + " of " + std::to_string(c.record.trials_on_record) +
                       " on record; " + std::to_string(left_out) +
                       " designed but never delivered are not listed). id is the record's trial "
                       "number. Times are seconds on the acquisition sample clock.",
                   path);
  w.text_array_attribute(table.get(), "colnames", colnames, path);
  w.typed(table.get(), "core", "TimeIntervals", path);
}

void write_units(NwbWriter& w, hid_t file, const ExportContext& c) {
  const std::string path = "/units";
  const Hid table = w.group(file, path);
  const auto& units = c.record.units;
  std::vector<std::int64_t> ids, probes, channels;
  std::vector<std::string> labels;
  for (const UnitRow& u : units) {
    ids.push_back(u.id);
    probes.push_back(u.probe);
    channels.push_back(u.channel);
    labels.push_back(u.label);
  }
  {
    const Hid times = w.f64(table.get(), path + "/spike_times", c.spikes.times_s);
    vector_data(w, times, path + "/spike_times",
                "Times of the spikes detected live during the session (spike_times.npy / sample "
                "rate), seconds on the acquisition sample clock; each unit's, ascending.");
    w.double_attribute(times.get(), "resolution", 1.0 / c.rate_hz, path + "/spike_times");
  }
  {
    const Hid index = w.u64(table.get(), path + "/spike_times_index", c.spikes.ends);
    w.text_attribute(index.get(), "description", "Index into the spike_times dataset.",
                     path + "/spike_times_index");
    w.reference_attribute(index.get(), "target", path + "/spike_times",
                          path + "/spike_times_index");
    w.typed(index.get(), "hdmf-common", "VectorIndex", path + "/spike_times_index");
  }
  vector_data(w, w.i64(table.get(), path + "/probe", probes), path + "/probe",
              "Index of the probe in the protocol's probe list (units.probe).");
  vector_data(w, w.i64(table.get(), path + "/peak_channel", channels), path + "/peak_channel",
              "Peak (detection) channel of the unit on its probe (units.channel); -1: unknown.");
  vector_data(w, w.text_array(table.get(), path + "/label", labels), path + "/label",
              "The unit's label on record (units.label).");
  table_id(w, table.get(), path, ids);
  w.text_attribute(table.get(), "description",
                   "Units of the twinloop session as recorded: one per detection channel "
                   "(threshold crossings, not spike-sorted). id is the record's unit id, which is "
                   "also the Phy cluster id in spike_clusters.npy.",
                   path);
  w.text_array_attribute(table.get(), "colnames", {"spike_times", "probe", "peak_channel", "label"},
                         path);
  w.typed(table.get(), "core", "Units", path);
}

void write_general(NwbWriter& w, hid_t file, const ExportContext& c) {
  const Hid general = w.group(file, "/general");
  const protocols::Protocol& p = c.protocol;
  (void)w.text(general.get(), "/general/session_id", c.session_id);
  (void)w.text(general.get(), "/general/experiment_description",
               p.description.value_or("twinloop protocol '" + p.name + "'"));
  (void)w.text(general.get(), "/general/protocol", c.record.protocol_text);
  (void)w.text(general.get(), "/general/stimulus",
               std::string("Parametric ") + std::string(protocols::to_string(p.stimulus.kind)) +
                   " stimuli chosen trial by trial by the twinloop designer; each trial's "
                   "parameters are columns of /intervals/trials.");
  (void)w.text(general.get(), "/general/data_collection",
               "Spikes detected live by twinloop " + c.record.twinloop_version +
                   " (filtered, common-referenced, MAD threshold), one unit per detection "
                   "channel, at " +
                   std::to_string(c.rate_hz) + " Hz on probe '" + p.probes.front().name + "'.");
  std::string notes = "Exported by twinloop export from " + c.session_id + "/session.sqlite (" +
                      std::to_string(c.record.chain_links) + " chained rows, head " +
                      c.record.head_hash + "). Hypotheses:";
  for (const auto& h : c.record.hypotheses) notes += " " + h + ";";
  if (c.verdict) notes += " Verdict (summary.json): " + *c.verdict + ".";
  notes +=
      " Time zero is sample 0 of the acquisition clock, which starts just before the record "
      "is created (session_start_time).";
  (void)w.text(general.get(), "/general/notes", notes);
  const Hid subject = w.group(general.get(), "/general/subject");
  (void)w.text(subject.get(), "/general/subject/subject_id", p.subject.id);
  (void)w.text(subject.get(), "/general/subject/species", p.subject.species);
  if (p.subject.notes)
    (void)w.text(subject.get(), "/general/subject/description", *p.subject.notes);
  w.typed(subject.get(), "core", "Subject", "/general/subject");
}

void write_nwb(const fs::path& out, const ExportContext& c, std::int64_t now_ns) {
  const std::string name = out.string();
  Hid file(H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
           name + ": cannot create");
  {
    NwbWriter w(file.get(), name);
    // Required by NWBFile even when empty: raw data stays in the session directory.
    for (const char* group : {"/acquisition", "/analysis", "/processing", "/stimulus",
                              "/stimulus/presentation", "/stimulus/templates"}) {
      (void)w.group(file.get(), group);
    }
    const std::string start = iso8601_utc(c.record.created_at_ns);
    (void)w.text_array(file.get(), "/file_create_date", {iso8601_utc(now_ns)}, true);
    (void)w.text(file.get(), "/identifier", "twinloop-" + c.record.genesis_hash);
    std::string description = "twinloop closed-loop session, protocol '" + c.protocol.name +
                              "': " + std::to_string(c.record.trials.size()) +
                              " delivered trials designed to tell " +
                              std::to_string(c.record.hypotheses.size()) + " hypotheses apart";
    if (c.verdict) description += "; verdict " + *c.verdict;
    (void)w.text(file.get(), "/session_description", description);
    (void)w.text(file.get(), "/session_start_time", start, true);
    (void)w.text(file.get(), "/timestamps_reference_time", start, true);
    write_general(w, file.get(), c);
    (void)w.group(file.get(), "/intervals");
    write_trials(w, file.get(), c);
    write_units(w, file.get(), c);
    w.text_attribute(file.get(), "nwb_version", kNwbVersion, "/");
    w.typed(file.get(), "core", "NWBFile", "/");
  }
  file.close(name + ": cannot complete");
}

/// fsync, so the rename never publishes a name whose contents are not on disk yet.
void sync_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    if (fd >= 0) ::close(fd);
    throw ExportError(path.string() + ": cannot flush to disk");
  }
  ::close(fd);
}

std::optional<std::string> read_verdict(const fs::path& summary) {
  std::ifstream in(summary);
  if (!in) return std::nullopt;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.contains("verdict") && j["verdict"].is_string()) return j["verdict"].get<std::string>();
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

int export_checked(const ExportOptions& options) {
  const fs::path& dir = options.session_dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw ExportError(dir.string() + ": no such session directory");
  }
  const fs::path record_file = dir / "session.sqlite";
  if (!fs::is_regular_file(record_file, ec)) {
    throw ExportError(dir.string() + ": not a session directory (no session.sqlite)");
  }
  const fs::path& out = options.nwb;
  if (out.empty()) throw ExportError("--nwb: no output file named");
  if (fs::is_directory(out, ec)) throw ExportError(out.string() + ": is a directory");
  if (const fs::path folder = out.parent_path(); !folder.empty() && !fs::is_directory(folder, ec)) {
    throw ExportError(out.string() + ": cannot write there: " + folder.string() +
                      " is not an existing directory");
  }
  if (fs::exists(out, ec) && !options.force) {
    throw ExportError(out.string() + ": exists (use --force to replace it)");
  }

  ExportContext c;
  c.record = read_record(record_file);
  if (c.record.resumes > 0) {
    throw ExportError(
        record_file.string() + ": the session was resumed " + std::to_string(c.record.resumes) +
        " time(s); each resume restarts the acquisition sample clock and the spike files hold "
        "only the last part, so its trials and spikes cannot be put on one time axis (not "
        "supported yet)");
  }
  protocols::ProtocolLoadResult loaded =
      protocols::load_protocol_text(c.record.protocol_text, record_file.string());
  if (!loaded.ok()) {
    throw ExportError(protocols::format_diagnostics(loaded.diagnostics) + record_file.string() +
                      ": the protocol on record is refused by this build, so its sample rate "
                      "and timing are unknown");
  }
  c.protocol = std::move(*loaded.protocol);
  if (c.protocol.probes.empty() || !(c.protocol.probes.front().sample_rate_hz > 0.0)) {
    throw ExportError(record_file.string() + ": the protocol on record has no sample rate");
  }
  c.rate_hz = c.protocol.probes.front().sample_rate_hz;
  c.spikes = read_spikes(dir, c.record.units, c.rate_hz);
  c.session_id = fs::absolute(dir, ec).lexically_normal().filename().string();
  if (c.session_id.empty()) {
    c.session_id = fs::absolute(dir, ec).lexically_normal().parent_path().filename().string();
  }
  c.verdict = read_verdict(dir / "summary.json");

  const fs::path partial = fs::path(out.string() + ".partial");
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const QuietHdf5Errors quiet;
  try {
    write_nwb(partial, c, std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
    sync_file(partial);
    fs::rename(partial, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove(partial, ec);
    throw ExportError(out.string() + ": cannot replace with " + partial.string() + ": " +
                      e.code().message());
  } catch (...) {
    fs::remove(partial, ec);
    throw;
  }
  if (!options.quiet) {
    std::printf(
        "twinloop export: wrote %s (NWB %s): %zu trials (%lld on record), %zu units, "
        "%zu spikes at %.0f Hz\n",
        out.string().c_str(), kNwbVersion, c.record.trials.size(),
        static_cast<long long>(c.record.trials_on_record), c.record.units.size(),
        c.spikes.times_s.size(), c.rate_hz);
  }
  return kExitOk;
}

}  // namespace

int export_session(const ExportOptions& options) {
  try {
    return export_checked(options);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop export: %s\n", e.what());
    return kExitRefused;
  }
}

}  // namespace twinloop::daemon

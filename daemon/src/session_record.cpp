// SessionRecord and verify(): the session record on SQLite, with a SHA-256 hash chain over every
// appended row. See session_record.hpp for the contract and docs/session-record.md for the schema.
//
// One rule keeps writer and verifier from ever disagreeing about what was hashed: the writer does
// not hash the values it meant to store, it reads each appended row back with the very SELECT the
// verifier uses and hashes what SQLite actually holds (so NaN stored as NULL, -0.0 stored as 0,
// and any other conversion SQLite applies are hashed identically on both sides).
#include "twinloop/daemon/session_record.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

namespace twinloop::daemon {

namespace fs = std::filesystem;

namespace {

// 2: predictions.rival_differences (the encompassing test's directions). verify() reads 1 too.
constexpr int kFormatVersion = 2;
// 'TWLP': lets `file`, sqlite3 and our own open tell a session record from any other database.
constexpr int kApplicationId = 0x54574C50;

using Hash = std::array<std::uint8_t, 32>;

constexpr std::string_view kSchema = R"sql(
CREATE TABLE session(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  format_version INTEGER NOT NULL,
  protocol_text TEXT NOT NULL,
  protocol_sha256 BLOB NOT NULL,
  config_json TEXT NOT NULL,
  created_at_ns INTEGER NOT NULL,
  twinloop_version TEXT NOT NULL);
CREATE TABLE hypotheses(id INTEGER PRIMARY KEY, name TEXT NOT NULL, family TEXT NOT NULL);
CREATE TABLE units(id INTEGER PRIMARY KEY, probe INTEGER NOT NULL, channel INTEGER NOT NULL,
                   label TEXT NOT NULL);
CREATE TABLE candidates(id INTEGER PRIMARY KEY, stimulus_json TEXT NOT NULL);
CREATE TABLE trials(
  trial INTEGER PRIMARY KEY,
  candidate INTEGER NOT NULL,
  stimulus_json TEXT NOT NULL,
  strategy TEXT NOT NULL,
  is_validation INTEGER NOT NULL,
  designed_at_ns INTEGER NOT NULL,
  expected_information_gain REAL,
  status TEXT NOT NULL CHECK (status IN
    ('designed','preregistered','delivered','scored','flagged','aborted')));
CREATE TABLE predictions(
  id INTEGER PRIMARY KEY,
  trial INTEGER NOT NULL REFERENCES trials(trial),
  hypothesis INTEGER NOT NULL REFERENCES hypotheses(id),
  units INTEGER NOT NULL,
  mean BLOB NOT NULL,
  dispersion BLOB NOT NULL,
  rival_differences BLOB,
  committed_at_ns INTEGER NOT NULL,
  committed_monotonic_ns INTEGER NOT NULL,
  UNIQUE (trial, hypothesis));
CREATE TABLE deliveries(
  id INTEGER PRIMARY KEY,
  trial INTEGER NOT NULL UNIQUE REFERENCES trials(trial),
  onset_sample INTEGER NOT NULL,
  delivered_at_ns INTEGER NOT NULL,
  delivered_monotonic_ns INTEGER NOT NULL);
CREATE TABLE outcomes(
  id INTEGER PRIMARY KEY,
  trial INTEGER NOT NULL UNIQUE REFERENCES trials(trial),
  units INTEGER NOT NULL,
  counts BLOB NOT NULL,
  window_start INTEGER NOT NULL,
  window_end INTEGER NOT NULL);
CREATE TABLE posteriors(
  id INTEGER PRIMARY KEY,
  trial INTEGER NOT NULL REFERENCES trials(trial),
  hypothesis INTEGER NOT NULL REFERENCES hypotheses(id),
  probability REAL,
  log_evidence REAL,
  UNIQUE (trial, hypothesis));
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  at_ns INTEGER NOT NULL,
  monotonic_ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  trial INTEGER REFERENCES trials(trial),
  detail_json TEXT NOT NULL);
CREATE TABLE chain(
  seq INTEGER PRIMARY KEY,
  table_name TEXT NOT NULL,
  row_id INTEGER NOT NULL,
  hash BLOB NOT NULL);
)sql";

// The chained tables and the columns, in hashing order, that make up each row's canonical bytes.
// Predictions also carry their trial's design, so the stimulus a prediction was made for cannot
// be changed afterwards without breaking the chain.
struct ChainedTable {
  std::string_view name;
  std::string_view canonical_sql;  // one parameter: the row id
};
constexpr std::array<ChainedTable, 5> kChainedTables{{
    {"predictions",
     "SELECT p.trial, p.hypothesis, p.units, p.mean, p.dispersion, p.rival_differences, "
     "p.committed_at_ns, p.committed_monotonic_ns, t.candidate, t.stimulus_json, t.strategy, "
     "t.is_validation, t.designed_at_ns, t.expected_information_gain FROM predictions p LEFT "
     "JOIN trials t ON t.trial = p.trial WHERE p.id = ?1"},
    {"deliveries",
     "SELECT trial, onset_sample, delivered_at_ns, delivered_monotonic_ns FROM deliveries "
     "WHERE id = ?1"},
    {"outcomes",
     "SELECT trial, units, counts, window_start, window_end FROM outcomes WHERE id = ?1"},
    {"posteriors",
     "SELECT trial, hypothesis, probability, log_evidence FROM posteriors WHERE id = ?1"},
    {"events", "SELECT at_ns, monotonic_ns, kind, trial, detail_json FROM events WHERE id = ?1"},
}};
enum TableIndex : std::size_t { kPredictions, kDeliveries, kOutcomes, kPosteriors, kEvents };
// Format 1 had no rival_differences: its predictions were hashed without them.
constexpr std::string_view kPredictionsCanonicalFormat1 =
    "SELECT p.trial, p.hypothesis, p.units, p.mean, p.dispersion, p.committed_at_ns, "
    "p.committed_monotonic_ns, t.candidate, t.stimulus_json, t.strategy, t.is_validation, "
    "t.designed_at_ns, t.expected_information_gain FROM predictions p LEFT JOIN trials t "
    "ON t.trial = p.trial WHERE p.id = ?1";
constexpr std::string_view kSessionLink = "session";

// Canonical bytes: every value tagged with its SQLite storage class, numbers little-endian,
// strings and blobs length-prefixed, so no two different rows can encode to the same bytes.
class Canon {
 public:
  void clear() { bytes_.clear(); }
  void null() { bytes_.push_back(0); }
  void i64(std::int64_t v) {
    bytes_.push_back(1);
    put_u64(static_cast<std::uint64_t>(v));
  }
  void f64(double v) {
    bytes_.push_back(2);
    put_u64(std::bit_cast<std::uint64_t>(v));
  }
  void text(std::string_view s) { bytes(3, s.data(), s.size()); }
  void blob(const void* data, std::size_t size) { bytes(4, data, size); }
  // Appends the current row of `stmt` column by column, as stored.
  void row(sqlite3_stmt* stmt) {
    const int columns = sqlite3_column_count(stmt);
    for (int c = 0; c < columns; ++c) {
      switch (sqlite3_column_type(stmt, c)) {
        case SQLITE_INTEGER:
          i64(sqlite3_column_int64(stmt, c));
          break;
        case SQLITE_FLOAT:
          f64(sqlite3_column_double(stmt, c));
          break;
        case SQLITE_TEXT:
          text({reinterpret_cast<const char*>(sqlite3_column_text(stmt, c)),
                static_cast<std::size_t>(sqlite3_column_bytes(stmt, c))});
          break;
        case SQLITE_BLOB:
          blob(sqlite3_column_blob(stmt, c),
               static_cast<std::size_t>(sqlite3_column_bytes(stmt, c)));
          break;
        default:
          null();
          break;
      }
    }
  }
  [[nodiscard]] const std::vector<std::uint8_t>& data() const noexcept { return bytes_; }

 private:
  void put_u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void bytes(std::uint8_t tag, const void* data, std::size_t size) {
    bytes_.push_back(tag);
    put_u64(size);
    const auto* p = static_cast<const std::uint8_t*>(data);
    if (size > 0) bytes_.insert(bytes_.end(), p, p + size);
  }
  std::vector<std::uint8_t> bytes_;
};

// SHA-256 through OpenSSL's EVP interface; one context reused for every link.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr) throw RecordError("session record: cannot allocate a SHA-256 context");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  Hash digest(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b = {}) {
    Hash out{};
    unsigned int size = 0;
    if (EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(ctx_, a.data(), a.size()) != 1 ||
        EVP_DigestUpdate(ctx_, b.data(), b.size()) != 1 ||
        EVP_DigestFinal_ex(ctx_, out.data(), &size) != 1 || size != out.size()) {
      throw RecordError("session record: SHA-256 failed in OpenSSL");
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

// Values bound as BLOBs are little-endian whatever the host; on little-endian hosts (every rig
// PC) the caller's memory is bound directly, without a copy.
template <typename T>
std::span<const std::uint8_t> little_endian(std::span<const T> values,
                                            std::vector<std::uint8_t>& scratch) {
  static_assert(std::is_trivially_copyable_v<T>);
  if constexpr (std::endian::native == std::endian::little) {
    return {reinterpret_cast<const std::uint8_t*>(values.data()), values.size_bytes()};
  } else {
    scratch.resize(values.size_bytes());
    for (std::size_t i = 0; i < values.size(); ++i) {
      auto raw = std::bit_cast<std::array<std::uint8_t, sizeof(T)>>(values[i]);
      std::reverse(raw.begin(), raw.end());
      std::memcpy(scratch.data() + i * sizeof(T), raw.data(), sizeof(T));
    }
    return scratch;
  }
}

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the record itself is already committed
  (void)::fsync(fd);
  ::close(fd);
}

bool valid_json(std::string_view text) {
  return nlohmann::json::accept(text);
}

bool valid_kind(std::string_view kind) {
  return !kind.empty() && std::all_of(kind.begin(), kind.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// A database handle that names its file in every error.
class Db {
 public:
  Db() = default;
  Db(const fs::path& file, int flags) : file_(file) {
    const int rc = sqlite3_open_v2(file.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
      const std::string message = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw RecordError(file.string() + ": cannot open the session record: " + message);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, 5000);
  }
  Db(Db&& other) noexcept : file_(std::move(other.file_)), db_(std::exchange(other.db_, nullptr)) {}
  Db& operator=(Db&& other) noexcept {
    if (this != &other) {
      sqlite3_close_v2(db_);
      file_ = std::move(other.file_);
      db_ = std::exchange(other.db_, nullptr);
    }
    return *this;
  }
  ~Db() { sqlite3_close_v2(db_); }

  [[nodiscard]] sqlite3* get() const noexcept { return db_; }
  [[nodiscard]] const fs::path& file() const noexcept { return file_; }

  [[noreturn]] void fail(std::string_view what) const {
    throw RecordError(file_.string() + ": " + std::string(what) + ": " + sqlite3_errmsg(db_));
  }
  void check(int rc, std::string_view what) const {
    if (rc != SQLITE_OK) fail(what);
  }
  void exec(std::string_view sql) const {
    char* error = nullptr;
    if (sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      const std::string message = error != nullptr ? error : sqlite3_errmsg(db_);
      sqlite3_free(error);
      throw RecordError(file_.string() + ": " + message +
                        " (in: " + std::string(sql.substr(0, 60)) + ")");
    }
  }
  [[nodiscard]] std::int64_t pragma_int(std::string_view pragma) const;

 private:
  fs::path file_;
  sqlite3* db_ = nullptr;
};

// A statement prepared once; every use binds, steps and resets.
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Db& db, std::string_view sql) : db_(&db) {
    if (sqlite3_prepare_v3(db.get(), sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK) {
      db.fail("cannot prepare '" + std::string(sql.substr(0, 60)) + "'");
    }
  }
  Stmt(Stmt&& other) noexcept : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}
  Stmt& operator=(Stmt&& other) noexcept {
    if (this != &other) {
      sqlite3_finalize(stmt_);
      db_ = other.db_;
      stmt_ = std::exchange(other.stmt_, nullptr);
    }
    return *this;
  }
  ~Stmt() { sqlite3_finalize(stmt_); }

  [[nodiscard]] sqlite3_stmt* get() const noexcept { return stmt_; }
  Stmt& bind(int i, std::int64_t v) {
    db_->check(sqlite3_bind_int64(stmt_, i, v), "cannot bind");
    return *this;
  }
  Stmt& bind(int i, double v) {
    // SQLite has no NaN: binding one stores NULL. Bind NULL explicitly to say so.
    db_->check(std::isnan(v) ? sqlite3_bind_null(stmt_, i) : sqlite3_bind_double(stmt_, i, v),
               "cannot bind");
    return *this;
  }
  Stmt& bind(int i, std::string_view v) {
    db_->check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8),
               "cannot bind");
    return *this;
  }
  Stmt& bind(int i, std::span<const std::uint8_t> v) {
    // A null pointer would bind SQL NULL; an empty blob must stay a (zero-length) blob.
    static constexpr std::uint8_t kEmpty = 0;
    db_->check(
        sqlite3_bind_blob64(stmt_, i, v.empty() ? &kEmpty : v.data(), v.size(), SQLITE_STATIC),
        "cannot bind");
    return *this;
  }
  Stmt& bind_null(int i) {
    db_->check(sqlite3_bind_null(stmt_, i), "cannot bind");
    return *this;
  }
  // Steps once: true with a row to read, false when done. Errors throw (after a reset).
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const std::string message = sqlite3_errmsg(db_->get());
    sqlite3_reset(stmt_);
    throw RecordError(db_->file().string() + ": " + message + " (in: " + sql_head() + ")");
  }
  void run() {
    step();
    reset();
  }
  void reset() noexcept {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  [[nodiscard]] std::string sql_head() const {
    const char* sql = sqlite3_sql(stmt_);
    return sql != nullptr ? std::string(sql).substr(0, 60) : std::string();
  }
  const Db* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

std::int64_t Db::pragma_int(std::string_view pragma) const {
  Stmt s(*this, "PRAGMA " + std::string(pragma));
  const std::int64_t value = s.step() ? sqlite3_column_int64(s.get(), 0) : 0;
  s.reset();
  return value;
}

std::string column_text(sqlite3_stmt* stmt, int c) {
  const auto* p = sqlite3_column_text(stmt, c);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p),
                                    static_cast<std::size_t>(sqlite3_column_bytes(stmt, c)))
                      : std::string();
}

Hash column_hash(sqlite3_stmt* stmt, int c) {
  Hash h{};
  if (sqlite3_column_bytes(stmt, c) == static_cast<int>(h.size())) {
    std::memcpy(h.data(), sqlite3_column_blob(stmt, c), h.size());
  }
  return h;
}

// The genesis link covers everything fixed at creation: the session row, hypotheses, units and
// candidates, in id order.
void encode_genesis(const Db& db, Canon& canon) {
  canon.clear();
  canon.text(kSessionLink);
  canon.i64(0);
  canon.i64(1);
  for (std::string_view sql :
       {"SELECT id, format_version, protocol_text, protocol_sha256, config_json, created_at_ns, "
        "twinloop_version FROM session ORDER BY id",
        "SELECT id, name, family FROM hypotheses ORDER BY id",
        "SELECT id, probe, channel, label FROM units ORDER BY id",
        "SELECT id, stimulus_json FROM candidates ORDER BY id"}) {
    Stmt s(db, sql);
    while (s.step()) canon.row(s.get());
    s.reset();
  }
}

void encode_link(Canon& canon, std::string_view table, std::int64_t seq, std::int64_t row_id,
                 sqlite3_stmt* row) {
  canon.clear();
  canon.text(table);
  canon.i64(seq);
  canon.i64(row_id);
  canon.row(row);
}

void set_durable_pragmas(const Db& db) {
  // WAL lets readers (monitors, a live `twinloop verify`) read while the session writes, and
  // makes a commit one sequential append. synchronous=FULL fsyncs the WAL at every commit: in WAL
  // mode NORMAL only syncs at checkpoints, so a power cut could lose a commit that had already
  // returned, and a prediction that preregister() reported durable would then not be on disk
  // when the stimulus went out. That is exactly what pre-registration must rule out.
  Stmt wal(db, "PRAGMA journal_mode=WAL");
  const std::string mode = wal.step() ? column_text(wal.get(), 0) : std::string();
  wal.reset();
  if (mode != "wal") {
    throw RecordError(db.file().string() + ": cannot switch the record to WAL mode (got '" + mode +
                      "')");
  }
  db.exec("PRAGMA synchronous=FULL");
  db.exec("PRAGMA foreign_keys=ON");
}

std::int64_t count_rows(const Db& db, std::string_view table) {
  Stmt s(db, "SELECT count(*) FROM " + std::string(table));
  const std::int64_t n = s.step() ? sqlite3_column_int64(s.get(), 0) : 0;
  s.reset();
  return n;
}

}  // namespace

std::string_view to_string(TrialStatus status) noexcept {
  switch (status) {
    case TrialStatus::kDesigned:
      return "designed";
    case TrialStatus::kPreregistered:
      return "preregistered";
    case TrialStatus::kDelivered:
      return "delivered";
    case TrialStatus::kScored:
      return "scored";
    case TrialStatus::kFlagged:
      return "flagged";
    case TrialStatus::kAborted:
      return "aborted";
  }
  return "?";
}

std::optional<TrialStatus> parse_trial_status(std::string_view text) noexcept {
  for (TrialStatus s :
       {TrialStatus::kDesigned, TrialStatus::kPreregistered, TrialStatus::kDelivered,
        TrialStatus::kScored, TrialStatus::kFlagged, TrialStatus::kAborted}) {
    if (to_string(s) == text) return s;
  }
  return std::nullopt;
}

Timestamp Timestamp::now() noexcept {
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  return {duration_cast<nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count(),
          duration_cast<nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count()};
}

struct SessionRecord::Impl {
  fs::path dir;
  Db db;
  std::size_t hypotheses = 0;
  std::size_t units = 0;
  Hash head{};
  std::int64_t next_seq = 0;
  Sha256 sha;
  Canon canon;
  std::vector<std::uint8_t> scratch_a, scratch_b, scratch_c;  // bound SQLITE_STATIC: one per column

  Stmt begin, commit, rollback;
  Stmt select_trial, insert_trial, update_status, insert_prediction, insert_delivery,
      insert_outcome, insert_posterior, insert_event, insert_chain;
  std::array<Stmt, kChainedTables.size()> canonical;

  // Chain state of the open transaction, applied to head/next_seq only once COMMIT succeeds.
  Hash pending_head{};
  std::int64_t pending_seq = 0;

  Impl(fs::path directory, Db database) : dir(std::move(directory)), db(std::move(database)) {}

  void prepare() {
    begin = Stmt(db, "BEGIN IMMEDIATE");
    commit = Stmt(db, "COMMIT");
    rollback = Stmt(db, "ROLLBACK");
    select_trial = Stmt(db,
                        "SELECT status, (SELECT count(*) FROM deliveries d WHERE d.trial = ?1) "
                        "FROM trials WHERE trial = ?1");
    insert_trial = Stmt(db,
                        "INSERT INTO trials(trial, candidate, stimulus_json, strategy, "
                        "is_validation, designed_at_ns, expected_information_gain, status) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'designed')");
    update_status = Stmt(db, "UPDATE trials SET status = ?2 WHERE trial = ?1");
    insert_prediction = Stmt(db,
                             "INSERT INTO predictions(trial, hypothesis, units, mean, dispersion, "
                             "committed_at_ns, committed_monotonic_ns, rival_differences) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    insert_delivery = Stmt(db,
                           "INSERT INTO deliveries(trial, onset_sample, delivered_at_ns, "
                           "delivered_monotonic_ns) VALUES (?1, ?2, ?3, ?4)");
    insert_outcome = Stmt(db,
                          "INSERT INTO outcomes(trial, units, counts, window_start, window_end) "
                          "VALUES (?1, ?2, ?3, ?4, ?5)");
    insert_posterior = Stmt(db,
                            "INSERT INTO posteriors(trial, hypothesis, probability, log_evidence) "
                            "VALUES (?1, ?2, ?3, ?4)");
    insert_event = Stmt(db,
                        "INSERT INTO events(at_ns, monotonic_ns, kind, trial, detail_json) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)");
    insert_chain =
        Stmt(db, "INSERT INTO chain(seq, table_name, row_id, hash) VALUES (?1, ?2, ?3, ?4)");
    for (std::size_t t = 0; t < kChainedTables.size(); ++t) {
      canonical[t] = Stmt(db, kChainedTables[t].canonical_sql);
    }
  }

  // One transaction: runs `body`, commits durably, then publishes the new chain head. Any
  // exception rolls back, leaving both the file and the in-memory head as they were.
  template <typename Body>
  void transaction(Body&& body) {
    begin.run();
    pending_head = head;
    pending_seq = next_seq;
    try {
      body();
      commit.run();
    } catch (...) {
      // A failed COMMIT may already have rolled back; a second ROLLBACK error is not news.
      try {
        rollback.run();
      } catch (const RecordError&) {
      }
      throw;
    }
    head = pending_head;
    next_seq = pending_seq;
  }

  void chain_insert(std::string_view table, std::int64_t row_id, const Hash& hash) {
    insert_chain.bind(1, pending_seq)
        .bind(2, table)
        .bind(3, row_id)
        .bind(4, std::span<const std::uint8_t>(hash))
        .run();
    pending_head = hash;
    ++pending_seq;
  }

  // Appends the chain link for a row just inserted into `table`, hashing it as stored.
  void link(std::size_t table, std::int64_t row_id) {
    Stmt& read = canonical[table];
    read.bind(1, row_id);
    if (!read.step()) {
      read.reset();
      throw RecordError(db.file().string() + ": internal: row " + std::to_string(row_id) + " of " +
                        std::string(kChainedTables[table].name) + " vanished");
    }
    encode_link(canon, kChainedTables[table].name, pending_seq, row_id, read.get());
    read.reset();
    chain_insert(kChainedTables[table].name, row_id, sha.digest(pending_head, canon.data()));
  }

  // The trial's status and whether it has a delivery; throws when there is no such trial.
  std::pair<TrialStatus, bool> trial_state(std::uint64_t trial) {
    select_trial.bind(1, static_cast<std::int64_t>(trial));
    if (!select_trial.step()) {
      select_trial.reset();
      throw RecordError(db.file().string() + ": no trial " + std::to_string(trial) +
                        " in the record (begin_trial first)");
    }
    const auto status = parse_trial_status(column_text(select_trial.get(), 0));
    const bool delivered = sqlite3_column_int64(select_trial.get(), 1) > 0;
    select_trial.reset();
    if (!status) throw RecordError(db.file().string() + ": trial with an unknown status");
    return {*status, delivered};
  }

  void set_status(std::uint64_t trial, TrialStatus status) {
    update_status.bind(1, static_cast<std::int64_t>(trial)).bind(2, to_string(status)).run();
  }

  std::int64_t append_event(std::string_view kind, std::optional<std::uint64_t> trial,
                            std::string_view detail, const Timestamp& at) {
    insert_event.bind(1, at.wall_ns).bind(2, at.monotonic_ns).bind(3, kind);
    if (trial) {
      insert_event.bind(4, static_cast<std::int64_t>(*trial));
    } else {
      insert_event.bind_null(4);
    }
    insert_event.bind(5, detail).run();
    const std::int64_t id = sqlite3_last_insert_rowid(db.get());
    link(kEvents, id);
    return id;
  }

  [[noreturn]] void refuse(const std::string& what) const {
    throw RecordError(db.file().string() + ": " + what);
  }
};

SessionRecord::SessionRecord(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SessionRecord::SessionRecord(SessionRecord&&) noexcept = default;
SessionRecord& SessionRecord::operator=(SessionRecord&&) noexcept = default;
SessionRecord::~SessionRecord() = default;

SessionRecord SessionRecord::create(const fs::path& dir, const SessionSetup& setup) {
  if (setup.hypotheses.empty()) throw RecordError(dir.string() + ": a session needs hypotheses");
  if (!valid_json(setup.config_json)) {
    throw RecordError(dir.string() + ": config_json is not valid JSON");
  }
  for (std::size_t c = 0; c < setup.candidates_json.size(); ++c) {
    if (!valid_json(setup.candidates_json[c])) {
      throw RecordError(dir.string() + ": candidate " + std::to_string(c) +
                        " stimulus is not valid JSON");
    }
  }
  // A session is never written into a directory that already exists: create_directory reports
  // whether it made the directory, so two sessions racing for one name cannot both win.
  std::error_code ec;
  if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
  if (!fs::create_directory(dir, ec)) {
    throw RecordError(dir.string() + (ec ? ": cannot create the session directory: " + ec.message()
                                         : ": refused: the directory already exists (a session "
                                           "record is never written over another)"));
  }
  const fs::path file = dir / kFileName;
  auto impl = std::make_unique<Impl>(dir, Db(file, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
  const Db& db = impl->db;
  set_durable_pragmas(db);
  db.exec("PRAGMA application_id=" + std::to_string(kApplicationId));
  db.exec("PRAGMA user_version=" + std::to_string(kFormatVersion));

  const Hash protocol_hash = impl->sha.digest(as_bytes(setup.protocol_text));
  db.exec("BEGIN IMMEDIATE");
  try {
    db.exec(kSchema);
    Stmt session(
        db,
        "INSERT INTO session(id, format_version, protocol_text, protocol_sha256, "
        "config_json, created_at_ns, twinloop_version) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)");
    session.bind(1, std::int64_t{kFormatVersion})
        .bind(2, std::string_view(setup.protocol_text))
        .bind(3, std::span<const std::uint8_t>(protocol_hash))
        .bind(4, std::string_view(setup.config_json))
        .bind(5, Timestamp::now().wall_ns)
        .bind(6, std::string_view(setup.twinloop_version))
        .run();
    Stmt hyp(db, "INSERT INTO hypotheses(id, name, family) VALUES (?1, ?2, ?3)");
    for (std::size_t h = 0; h < setup.hypotheses.size(); ++h) {
      hyp.bind(1, static_cast<std::int64_t>(h))
          .bind(2, std::string_view(setup.hypotheses[h].name))
          .bind(3, std::string_view(setup.hypotheses[h].family))
          .run();
    }
    Stmt unit(db, "INSERT INTO units(id, probe, channel, label) VALUES (?1, ?2, ?3, ?4)");
    for (std::size_t u = 0; u < setup.units.size(); ++u) {
      unit.bind(1, static_cast<std::int64_t>(u))
          .bind(2, static_cast<std::int64_t>(setup.units[u].probe))
          .bind(3, setup.units[u].channel)
          .bind(4, std::string_view(setup.units[u].label))
          .run();
    }
    Stmt cand(db, "INSERT INTO candidates(id, stimulus_json) VALUES (?1, ?2)");
    for (std::size_t c = 0; c < setup.candidates_json.size(); ++c) {
      cand.bind(1, static_cast<std::int64_t>(c))
          .bind(2, std::string_view(setup.candidates_json[c]))
          .run();
    }
    impl->hypotheses = setup.hypotheses.size();
    impl->units = setup.units.size();
    impl->prepare();
    // The first link starts from the protocol hash and covers the whole setup.
    encode_genesis(db, impl->canon);
    impl->pending_head = protocol_hash;
    impl->pending_seq = 0;
    impl->chain_insert(kSessionLink, 1, impl->sha.digest(protocol_hash, impl->canon.data()));
    db.exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  impl->head = impl->pending_head;
  impl->next_seq = impl->pending_seq;
  // The commit is durable in the WAL; make the directory entries for the new files durable too.
  fsync_directory(dir);
  if (dir.has_parent_path()) fsync_directory(dir.parent_path());
  return SessionRecord(std::move(impl));
}

SessionRecord SessionRecord::open_existing(const fs::path& dir, ResumeState* state) {
  const fs::path file = dir / kFileName;
  if (!fs::is_regular_file(file)) {
    throw RecordError(file.string() + ": no session record here");
  }
  auto impl = std::make_unique<Impl>(dir, Db(file, SQLITE_OPEN_READWRITE));
  const Db& db = impl->db;
  if (db.pragma_int("application_id") != kApplicationId) {
    throw RecordError(file.string() + ": not a twinloop session record");
  }
  if (const auto version = db.pragma_int("user_version"); version != kFormatVersion) {
    throw RecordError(file.string() + ": session record format " + std::to_string(version) +
                      ", this twinloop reads format " + std::to_string(kFormatVersion));
  }
  set_durable_pragmas(db);
  impl->hypotheses = static_cast<std::size_t>(count_rows(db, "hypotheses"));
  impl->units = static_cast<std::size_t>(count_rows(db, "units"));
  {
    Stmt last(db, "SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1");
    if (!last.step()) throw RecordError(file.string() + ": the record has no chain");
    impl->next_seq = sqlite3_column_int64(last.get(), 0) + 1;
    impl->head = column_hash(last.get(), 1);
    last.reset();
  }
  impl->prepare();
  SessionRecord record(std::move(impl));
  if (state != nullptr) *state = record.resume_state();
  return record;
}

const fs::path& SessionRecord::directory() const noexcept {
  return impl_->dir;
}
std::size_t SessionRecord::hypothesis_count() const noexcept {
  return impl_->hypotheses;
}
std::size_t SessionRecord::unit_count() const noexcept {
  return impl_->units;
}
std::array<std::uint8_t, 32> SessionRecord::head_hash() const noexcept {
  return impl_->head;
}

ResumeState SessionRecord::resume_state() const {
  ResumeState state;
  Stmt s(impl_->db, "SELECT trial, status FROM trials ORDER BY trial");
  while (s.step()) {
    const auto trial = static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0));
    const auto status = parse_trial_status(column_text(s.get(), 1));
    ++state.trials;
    if (status == TrialStatus::kScored || status == TrialStatus::kFlagged) {
      state.last_complete_trial = std::max(state.last_complete_trial.value_or(0), trial);
    } else if (status != TrialStatus::kAborted) {
      state.in_flight.push_back(trial);
    }
  }
  s.reset();
  return state;
}

namespace {

template <typename T>
std::vector<T> column_values(sqlite3_stmt* stmt, int c) {
  const auto bytes = static_cast<std::size_t>(sqlite3_column_bytes(stmt, c));
  std::vector<T> values(bytes / sizeof(T));
  const auto* data = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt, c));
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::array<std::uint8_t, sizeof(T)> raw{};
    std::memcpy(raw.data(), data + i * sizeof(T), sizeof(T));
    if constexpr (std::endian::native != std::endian::little) std::reverse(raw.begin(), raw.end());
    values[i] = std::bit_cast<T>(raw);
  }
  return values;
}

}  // namespace

std::string SessionRecord::protocol_text() const {
  Stmt s(impl_->db, "SELECT protocol_text FROM session WHERE id = 1");
  std::string text = s.step() ? column_text(s.get(), 0) : std::string();
  s.reset();
  return text;
}

std::string SessionRecord::config_json() const {
  Stmt s(impl_->db, "SELECT config_json FROM session WHERE id = 1");
  std::string text = s.step() ? column_text(s.get(), 0) : std::string();
  s.reset();
  return text;
}

SessionSetup SessionSetup::for_protocol(const protocols::Protocol& protocol) {
  SessionSetup setup;
  setup.protocol_text = protocol.source_text;
  for (const auto& h : protocol.hypotheses) {
    setup.hypotheses.push_back({h.name, std::string(protocols::to_string(h.family))});
  }
  const protocols::StimulusSpace& space = protocol.stimulus;
  for (std::size_t c = 0; c < space.candidate_count(); ++c) {
    nlohmann::json j = nlohmann::json::object();
    for (std::size_t d = 0; d < space.dimension_count(); ++d) {
      j[space.dimensions[d].name] = space.candidate_value(c, d);
    }
    setup.candidates_json.push_back(j.dump());
  }
  return setup;
}

void SessionSetup::add_detection_channels(std::size_t count) {
  for (std::size_t c = 0; c < count; ++c) {
    units.push_back({0, static_cast<std::int64_t>(c), "channel " + std::to_string(c)});
  }
}

std::vector<RecordedTrial> SessionRecord::trials() const {
  const Db& db = impl_->db;
  std::vector<RecordedTrial> trials;
  std::map<std::uint64_t, std::size_t> index;
  {
    Stmt s(db,
           "SELECT trial, candidate, status, is_validation, strategy FROM trials ORDER BY trial");
    while (s.step()) {
      RecordedTrial t;
      t.trial = static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0));
      t.candidate = sqlite3_column_int64(s.get(), 1);
      t.status = parse_trial_status(column_text(s.get(), 2)).value_or(TrialStatus::kAborted);
      t.is_validation = sqlite3_column_int64(s.get(), 3) != 0;
      t.strategy = column_text(s.get(), 4);
      index[t.trial] = trials.size();
      trials.push_back(std::move(t));
    }
    s.reset();
  }
  const std::size_t hypotheses = impl_->hypotheses;
  {
    Stmt s(db,
           "SELECT trial, hypothesis, mean, dispersion, rival_differences FROM predictions ORDER "
           "BY trial, hypothesis");
    while (s.step()) {
      const auto it = index.find(static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0)));
      const auto h = static_cast<std::size_t>(sqlite3_column_int64(s.get(), 1));
      if (it == index.end() || h >= hypotheses) continue;  // verify() reports such rows
      RecordedTrial& t = trials[it->second];
      t.mean.resize(hypotheses);
      t.dispersion.resize(hypotheses);
      t.rival_differences.resize(hypotheses);
      t.mean[h] = column_values<double>(s.get(), 2);
      t.dispersion[h] = column_values<double>(s.get(), 3);
      t.rival_differences[h] = column_values<double>(s.get(), 4);
    }
    s.reset();
  }
  {
    Stmt s(db, "SELECT trial, counts, window_start, window_end FROM outcomes");
    while (s.step()) {
      const auto it = index.find(static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0)));
      if (it == index.end()) continue;
      RecordedTrial& t = trials[it->second];
      t.counts = column_values<std::uint32_t>(s.get(), 1);
      t.window_start = sqlite3_column_int64(s.get(), 2);
      t.window_end = sqlite3_column_int64(s.get(), 3);
    }
    s.reset();
  }
  {
    Stmt s(db, "SELECT trial, onset_sample FROM deliveries");
    while (s.step()) {
      const auto it = index.find(static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0)));
      if (it != index.end()) trials[it->second].onset_sample = sqlite3_column_int64(s.get(), 1);
    }
    s.reset();
  }
  {
    Stmt s(db, "SELECT trial, hypothesis, probability FROM posteriors ORDER BY trial, hypothesis");
    while (s.step()) {
      const auto it = index.find(static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0)));
      const auto h = static_cast<std::size_t>(sqlite3_column_int64(s.get(), 1));
      if (it == index.end() || h >= hypotheses) continue;
      RecordedTrial& t = trials[it->second];
      t.posterior.resize(hypotheses, std::numeric_limits<double>::quiet_NaN());
      if (sqlite3_column_type(s.get(), 2) != SQLITE_NULL) {
        t.posterior[h] = sqlite3_column_double(s.get(), 2);
      }
    }
    s.reset();
  }
  return trials;
}

void SessionRecord::begin_trial(const TrialDesign& design) {
  Impl& m = *impl_;
  if (!valid_json(design.stimulus_json)) {
    m.refuse("trial " + std::to_string(design.trial) + ": stimulus_json is not valid JSON");
  }
  m.transaction([&] {
    m.insert_trial.bind(1, static_cast<std::int64_t>(design.trial))
        .bind(2, design.candidate)
        .bind(3, std::string_view(design.stimulus_json))
        .bind(4, std::string_view(design.strategy))
        .bind(5, std::int64_t{design.is_validation ? 1 : 0})
        .bind(6, Timestamp::now().wall_ns)
        .bind(7, design.expected_information_gain)
        .run();
  });
}

Timestamp SessionRecord::preregister(std::uint64_t trial,
                                     std::span<const HypothesisPrediction> predictions) {
  Impl& m = *impl_;
  const std::string name = "trial " + std::to_string(trial);
  if (predictions.size() != m.hypotheses) {
    m.refuse(name + ": " + std::to_string(predictions.size()) + " predictions for " +
             std::to_string(m.hypotheses) + " hypotheses");
  }
  for (std::size_t h = 0; h < predictions.size(); ++h) {
    if (predictions[h].mean.size() != m.units || predictions[h].dispersion.size() != m.units) {
      m.refuse(name + ": hypothesis " + std::to_string(h) + " predicts " +
               std::to_string(predictions[h].mean.size()) + " means and " +
               std::to_string(predictions[h].dispersion.size()) + " dispersions for " +
               std::to_string(m.units) + " units");
    }
    const std::size_t differences = predictions[h].rival_differences.size();
    if (differences != 0 && differences != (m.hypotheses - 1) * m.units) {
      m.refuse(name + ": hypothesis " + std::to_string(h) + " has " + std::to_string(differences) +
               " rival differences for " + std::to_string(m.hypotheses - 1) + " rivals x " +
               std::to_string(m.units) + " units");
    }
  }
  Timestamp committed{};
  m.transaction([&] {
    const auto [status, delivered] = m.trial_state(trial);
    if (status != TrialStatus::kDesigned || delivered) {
      m.refuse(name + ": cannot pre-register a trial that is " + std::string(to_string(status)) +
               (delivered ? " and already delivered" : ""));
    }
    // Taken inside the transaction, before COMMIT: the recorded commit time is a lower bound on
    // when the predictions became durable, and preregister() returns only after that.
    committed = Timestamp::now();
    for (std::size_t h = 0; h < predictions.size(); ++h) {
      m.insert_prediction.bind(1, static_cast<std::int64_t>(trial))
          .bind(2, static_cast<std::int64_t>(h))
          .bind(3, static_cast<std::int64_t>(m.units))
          .bind(4, little_endian(predictions[h].mean, m.scratch_a))
          .bind(5, little_endian(predictions[h].dispersion, m.scratch_b))
          .bind(6, committed.wall_ns)
          .bind(7, committed.monotonic_ns);
      if (predictions[h].rival_differences.empty()) {
        m.insert_prediction.bind_null(8);
      } else {
        m.insert_prediction.bind(8, little_endian(predictions[h].rival_differences, m.scratch_c));
      }
      m.insert_prediction.run();
      m.link(kPredictions, sqlite3_last_insert_rowid(m.db.get()));
    }
    m.set_status(trial, TrialStatus::kPreregistered);
  });
  return committed;
}

void SessionRecord::record_delivery(std::uint64_t trial, std::int64_t onset_sample,
                                    std::optional<Timestamp> delivered_at) {
  Impl& m = *impl_;
  const Timestamp at = delivered_at.value_or(Timestamp::now());
  m.transaction([&] {
    const auto [status, delivered] = m.trial_state(trial);
    if (delivered) m.refuse("trial " + std::to_string(trial) + ": already delivered");
    if (status == TrialStatus::kScored || status == TrialStatus::kAborted) {
      m.refuse("trial " + std::to_string(trial) + ": cannot deliver a trial that is " +
               std::string(to_string(status)));
    }
    m.insert_delivery.bind(1, static_cast<std::int64_t>(trial))
        .bind(2, onset_sample)
        .bind(3, at.wall_ns)
        .bind(4, at.monotonic_ns)
        .run();
    m.link(kDeliveries, sqlite3_last_insert_rowid(m.db.get()));
    if (status != TrialStatus::kFlagged) m.set_status(trial, TrialStatus::kDelivered);
  });
}

void SessionRecord::record_outcome(std::uint64_t trial, std::span<const std::uint32_t> counts,
                                   std::int64_t window_start, std::int64_t window_end) {
  Impl& m = *impl_;
  const std::string name = "trial " + std::to_string(trial);
  if (counts.size() != m.units) {
    m.refuse(name + ": " + std::to_string(counts.size()) + " counts for " +
             std::to_string(m.units) + " units");
  }
  if (window_end < window_start) m.refuse(name + ": response window ends before it starts");
  m.transaction([&] {
    const auto [status, delivered] = m.trial_state(trial);
    if (!delivered) m.refuse(name + ": an outcome for a trial that was never delivered");
    m.insert_outcome.bind(1, static_cast<std::int64_t>(trial))
        .bind(2, static_cast<std::int64_t>(m.units))
        .bind(3, little_endian(counts, m.scratch_a))
        .bind(4, window_start)
        .bind(5, window_end)
        .run();
    m.link(kOutcomes, sqlite3_last_insert_rowid(m.db.get()));
  });
}

void SessionRecord::record_posterior(std::uint64_t trial, std::span<const double> probability,
                                     std::span<const double> log_evidence) {
  Impl& m = *impl_;
  const std::string name = "trial " + std::to_string(trial);
  if (probability.size() != m.hypotheses || log_evidence.size() != m.hypotheses) {
    m.refuse(name + ": a posterior needs one probability and one log evidence per hypothesis (" +
             std::to_string(m.hypotheses) + ")");
  }
  m.transaction([&] {
    const auto [status, delivered] = m.trial_state(trial);
    if (!delivered) m.refuse(name + ": a posterior for a trial that was never delivered");
    for (std::size_t h = 0; h < m.hypotheses; ++h) {
      m.insert_posterior.bind(1, static_cast<std::int64_t>(trial))
          .bind(2, static_cast<std::int64_t>(h))
          .bind(3, probability[h])
          .bind(4, log_evidence[h])
          .run();
      m.link(kPosteriors, sqlite3_last_insert_rowid(m.db.get()));
    }
    if (status == TrialStatus::kDelivered) m.set_status(trial, TrialStatus::kScored);
  });
}

std::int64_t SessionRecord::record_event(std::string_view kind, std::optional<std::uint64_t> trial,
                                         std::string_view detail_json) {
  Impl& m = *impl_;
  if (!valid_kind(kind)) m.refuse("event kind '" + std::string(kind) + "' is not lower_snake_case");
  if (!valid_json(detail_json)) m.refuse("event '" + std::string(kind) + "': detail is not JSON");
  std::int64_t id = 0;
  const Timestamp at = Timestamp::now();
  m.transaction([&] {
    if (trial) (void)m.trial_state(*trial);
    id = m.append_event(kind, trial, detail_json, at);
  });
  return id;
}

void SessionRecord::mark_trial(std::uint64_t trial, TrialStatus status,
                               std::string_view detail_json) {
  Impl& m = *impl_;
  // The earlier states are the record's own to set: letting a caller move a delivered trial back
  // to `designed` would invite pre-registering after the fact.
  if (status != TrialStatus::kScored && status != TrialStatus::kFlagged &&
      status != TrialStatus::kAborted) {
    m.refuse("trial " + std::to_string(trial) +
             ": mark_trial sets only scored, flagged or aborted");
  }
  if (!valid_json(detail_json)) m.refuse("trial " + std::to_string(trial) + ": detail is not JSON");
  const Timestamp at = Timestamp::now();
  m.transaction([&] {
    (void)m.trial_state(trial);
    m.set_status(trial, status);
    if (status == TrialStatus::kFlagged) {
      m.append_event(event_kind::kTrialFlagged, trial, detail_json, at);
    } else if (status == TrialStatus::kAborted) {
      m.append_event(event_kind::kTrialAborted, trial, detail_json, at);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// verify

VerifyReport verify(const fs::path& dir) {
  const fs::path file = dir / SessionRecord::kFileName;
  if (!fs::is_regular_file(file)) throw RecordError(file.string() + ": no session record here");
  const Db db(file, SQLITE_OPEN_READONLY);
  VerifyReport report;
  auto violation = [&](std::string_view table, std::int64_t row, std::string what) {
    report.violations.push_back({std::string(table), row, std::move(what)});
  };
  if (db.pragma_int("application_id") != kApplicationId) {
    throw RecordError(file.string() + ": not a twinloop session record");
  }
  Sha256 sha;
  Canon canon;

  // The protocol text must still match its hash; the hash is where the chain starts.
  Hash protocol_hash{};
  {
    Stmt s(db, "SELECT protocol_text, protocol_sha256 FROM session WHERE id = 1");
    if (s.step()) {
      protocol_hash = column_hash(s.get(), 1);
      if (sha.digest(as_bytes(column_text(s.get(), 0))) != protocol_hash) {
        violation("session", 1, "the protocol text does not match its SHA-256");
      }
    } else {
      violation("session", 1, "the session row is missing");
    }
    s.reset();
  }
  const std::int64_t hypotheses = count_rows(db, "hypotheses");
  const std::int64_t units = count_rows(db, "units");

  // 1. The chain, in order. Each link is checked against the stored previous hash, so a single
  // edited row is named alone instead of every link after it.
  std::map<std::string, std::map<std::int64_t, std::int64_t>> chained;  // table -> row -> seq
  {
    std::map<std::string, Stmt, std::less<>> readers;
    const bool format1 = db.pragma_int("user_version") == 1;
    for (const auto& t : kChainedTables) {
      readers.emplace(std::string(t.name),
                      Stmt(db, format1 && t.name == "predictions" ? kPredictionsCanonicalFormat1
                                                                  : t.canonical_sql));
    }
    Stmt links(db, "SELECT seq, table_name, row_id, hash FROM chain ORDER BY seq");
    Hash prev = protocol_hash;
    std::int64_t expected_seq = 0;
    auto broken = [&](std::int64_t seq, std::string what) {
      report.chain_intact = false;
      violation("chain", seq, std::move(what));
    };
    while (links.step()) {
      const std::int64_t seq = sqlite3_column_int64(links.get(), 0);
      const std::string table = column_text(links.get(), 1);
      const std::int64_t row_id = sqlite3_column_int64(links.get(), 2);
      const Hash stored = column_hash(links.get(), 3);
      ++report.chain_links;
      if (seq != expected_seq) {
        broken(seq, "links " + std::to_string(expected_seq) + ".." + std::to_string(seq - 1) +
                        " are missing");
      }
      expected_seq = seq + 1;
      bool encoded = false;
      if (table == kSessionLink) {
        if (seq != 0 || row_id != 1) broken(seq, "a second genesis link");
        encode_genesis(db, canon);
        encoded = true;
      } else if (auto r = readers.find(table); r != readers.end()) {
        Stmt& read = r->second;
        read.bind(1, row_id);
        if (read.step()) {
          encode_link(canon, table, seq, row_id, read.get());
          encoded = true;
        } else {
          violation(table, row_id,
                    "row is chained (link " + std::to_string(seq) + ") but has been deleted");
          report.chain_intact = false;
        }
        read.reset();
        if (!chained[table].emplace(row_id, seq).second) {
          broken(seq, table + " row " + std::to_string(row_id) + " is chained twice");
        }
      } else {
        broken(seq, "link names unknown table '" + table + "'");
      }
      if (seq == 0 && table != kSessionLink) broken(seq, "the chain does not start at the session");
      if (encoded && sha.digest(prev, canon.data()) != stored) {
        if (table == kSessionLink) {
          broken(seq,
                 "hash mismatch: the session setup (protocol, config, hypotheses, units or "
                 "candidates) was changed");
        } else {
          broken(seq, "hash mismatch: " + table + " row " + std::to_string(row_id) +
                          " was changed, or links were reordered");
          violation(table, row_id, "does not match its chain link " + std::to_string(seq));
        }
      }
      prev = stored;
    }
    links.reset();
    report.head_hash_hex = hex(prev);
    if (report.chain_links == 0) {
      report.chain_intact = false;
      violation("chain", 0, "the chain is empty");
    }
  }

  // 2. Every row of a chained table must be in the chain (no rows slipped in afterwards).
  for (const auto& t : kChainedTables) {
    const std::string table(t.name);
    Stmt ids(db, "SELECT id FROM " + table + " ORDER BY id");
    std::size_t rows = 0;
    while (ids.step()) {
      ++rows;
      const std::int64_t id = sqlite3_column_int64(ids.get(), 0);
      if (!chained[table].contains(id)) {
        report.chain_intact = false;
        violation(table, id, "row is not in the chain (added outside the record)");
      }
    }
    ids.reset();
    if (table == "predictions") report.predictions = rows;
    if (table == "deliveries") report.deliveries = rows;
    if (table == "outcomes") report.outcomes = rows;
    if (table == "posteriors") report.posteriors = rows;
    if (table == "events") report.events = rows;
  }

  // 3. Pre-registration: every delivered trial has one prediction per hypothesis, each committed
  // (by wall clock, and by chain order, which cannot be forged without breaking the chain)
  // before the delivery.
  auto seq_of = [&](const std::string& table, std::int64_t id) -> std::optional<std::int64_t> {
    const auto& rows = chained[table];
    const auto it = rows.find(id);
    return it == rows.end() ? std::nullopt : std::optional(it->second);
  };
  {
    Stmt trials(db,
                "SELECT t.trial, t.status, d.id, d.delivered_at_ns, "
                "(SELECT count(*) FROM outcomes o WHERE o.trial = t.trial) "
                "FROM trials t LEFT JOIN deliveries d ON d.trial = t.trial ORDER BY t.trial");
    Stmt preds(db,
               "SELECT id, committed_at_ns, units, length(mean), length(dispersion) "
               "FROM predictions WHERE trial = ?1 ORDER BY id");
    while (trials.step()) {
      ++report.trials;
      const std::int64_t trial = sqlite3_column_int64(trials.get(), 0);
      const std::string status = column_text(trials.get(), 1);
      const bool delivered = sqlite3_column_type(trials.get(), 2) != SQLITE_NULL;
      const std::int64_t delivery_id = sqlite3_column_int64(trials.get(), 2);
      const std::int64_t delivered_at = sqlite3_column_int64(trials.get(), 3);
      const std::int64_t outcomes = sqlite3_column_int64(trials.get(), 4);
      const std::string name = "trial " + std::to_string(trial);
      const auto delivery_seq = delivered ? seq_of("deliveries", delivery_id) : std::nullopt;

      std::int64_t predictions = 0;
      preds.bind(1, trial);
      while (preds.step()) {
        ++predictions;
        const std::int64_t id = sqlite3_column_int64(preds.get(), 0);
        const std::int64_t committed_at = sqlite3_column_int64(preds.get(), 1);
        const std::int64_t n = sqlite3_column_int64(preds.get(), 2);
        if (n != units || sqlite3_column_int64(preds.get(), 3) != 8 * units ||
            sqlite3_column_int64(preds.get(), 4) != 8 * units) {
          violation("predictions", id, name + ": arrays do not hold one float64 per unit");
        }
        if (!delivered) continue;
        if (committed_at >= delivered_at) {
          violation("predictions", id,
                    name + ": committed at " + std::to_string(committed_at) +
                        " ns, not before the delivery at " + std::to_string(delivered_at) + " ns");
        }
        const auto seq = seq_of("predictions", id);
        if (seq && delivery_seq && *seq > *delivery_seq) {
          violation("predictions", id, name + ": appended to the chain after the delivery");
        }
      }
      preds.reset();
      if (delivered && predictions == 0) {
        violation("deliveries", delivery_id,
                  name + ": delivered without pre-registered predictions");
      } else if (delivered && predictions != hypotheses) {
        violation("deliveries", delivery_id,
                  name + ": delivered with predictions from " + std::to_string(predictions) +
                      " of " + std::to_string(hypotheses) + " hypotheses");
      } else if (!delivered && status == "preregistered" && predictions != hypotheses) {
        violation("trials", trial,
                  name + ": pre-registered with predictions from " + std::to_string(predictions) +
                      " of " + std::to_string(hypotheses) + " hypotheses");
      }
      if (status == "scored" && (!delivered || outcomes == 0)) {
        violation("trials", trial, name + ": scored without a delivery and an outcome");
      }
    }
    trials.reset();
  }
  // Rows that point at trials that are not in the record.
  for (std::string_view table : {"predictions", "deliveries", "outcomes", "posteriors", "events"}) {
    Stmt orphans(db, "SELECT x.id FROM " + std::string(table) +
                         " x WHERE x.trial IS NOT NULL AND NOT EXISTS "
                         "(SELECT 1 FROM trials t WHERE t.trial = x.trial)");
    while (orphans.step()) {
      violation(table, sqlite3_column_int64(orphans.get(), 0), "names a trial not in the record");
    }
    orphans.reset();
  }
  return report;
}

protocols::DesignerDefaults recorded_protocol_defaults(std::string_view config_json) {
  const nlohmann::json config = nlohmann::json::parse(config_json, nullptr, false);
  if (!config.is_object() || !config.contains("protocol_defaults")) {
    return protocols::kDefaultsBeforeCriticism;
  }
  const nlohmann::json& entry = config.at("protocol_defaults");
  const auto bad = [] {
    return RecordError(
        "config_json's protocol_defaults is not {criticism_trials: integer >= 0, "
        "criticism_power: number in (0, 1) or null}");
  };
  if (!entry.is_object() || !entry.contains("criticism_trials") ||
      !entry.at("criticism_trials").is_number_unsigned() || !entry.contains("criticism_power")) {
    throw bad();
  }
  protocols::DesignerDefaults defaults;
  const auto trials = entry.at("criticism_trials").get<std::uint64_t>();
  if (trials > std::numeric_limits<std::uint32_t>::max()) throw bad();
  defaults.criticism_trials = static_cast<std::uint32_t>(trials);
  const nlohmann::json& power = entry.at("criticism_power");
  if (power.is_null()) {
    defaults.criticism_power.reset();
  } else if (power.is_number() && power.get<double>() > 0.0 && power.get<double>() < 1.0) {
    defaults.criticism_power = power.get<double>();
  } else {
    throw bad();
  }
  return defaults;
}

}  // namespace twinloop::daemon

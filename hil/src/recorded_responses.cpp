#include "twinloop/hil/recorded_responses.hpp"

#include <matio.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>

#include "twinloop/hil/details/random.hpp"

namespace twinloop::hil {
namespace {

// libmatio reports problems through a process-wide log function; without one it stays silent.
// Installing ours keeps its critical messages (e.g. why a file would not open) for our errors
// instead of printing them. Its ERROR level aborts whatever the function does (Mat_Error), which
// the reading paths used here do not call.
thread_local std::string matio_last_message;

void keep_matio_message(int level, char* message) {
  if ((level & (MATIO_LOG_LEVEL_CRITICAL | MATIO_LOG_LEVEL_ERROR)) != 0 && message != nullptr) {
    matio_last_message = message;
  }
}

void install_matio_log() {
  static std::once_flag once;
  std::call_once(once, [] { Mat_LogInitFunc("twinloop", &keep_matio_message); });
}

struct MatCloser {
  void operator()(mat_t* m) const noexcept { Mat_Close(m); }
};
struct VarFreer {
  void operator()(matvar_t* v) const noexcept { Mat_VarFree(v); }
};
using MatFile = std::unique_ptr<mat_t, MatCloser>;
using MatVar = std::unique_ptr<matvar_t, VarFreer>;

constexpr std::string_view kDataVariable = "data";

const char* class_name(int c) {
  switch (c) {
    case MAT_C_CELL:
      return "cell";
    case MAT_C_STRUCT:
      return "struct";
    case MAT_C_CHAR:
      return "char";
    case MAT_C_DOUBLE:
      return "double";
    case MAT_C_SINGLE:
      return "single";
    case MAT_C_INT8:
    case MAT_C_UINT8:
    case MAT_C_INT16:
    case MAT_C_UINT16:
    case MAT_C_INT32:
    case MAT_C_UINT32:
    case MAT_C_INT64:
    case MAT_C_UINT64:
      return "integer";
    case MAT_C_SPARSE:
      return "sparse";
    case MAT_C_FUNCTION:
      return "function";
    case MAT_C_OBJECT:
      return "object";
    default:
      return "empty or unknown";
  }
}

// Elements of a variable (product of its dimensions); SIZE_MAX when the product overflows, so
// that no size check built on it can pass.
std::size_t element_count(const matvar_t* v) {
  if (v->rank <= 0 || v->dims == nullptr) return 0;
  std::size_t n = 1;
  for (int r = 0; r < v->rank; ++r) {
    if (v->dims[r] != 0 && n > std::numeric_limits<std::size_t>::max() / v->dims[r]) {
      return std::numeric_limits<std::size_t>::max();
    }
    n *= v->dims[r];
  }
  return n;
}

// libmatio's Mat_VarGetCell and Mat_VarGetStructFieldByName index the variable's data without
// checking that it was read: a truncated file makes them dereference a null or short array.
// These check first and return null for anything absent or unreadable.
matvar_t* cell_at(const matvar_t* cell, std::size_t index) {
  const std::size_t n = element_count(cell);
  if (cell->class_type != MAT_C_CELL || index >= n || cell->data == nullptr ||
      cell->nbytes / sizeof(matvar_t*) < n) {
    return nullptr;
  }
  return static_cast<matvar_t* const*>(cell->data)[index];
}

matvar_t* struct_field(matvar_t* s, const char* name, std::size_t index) {
  if (s->class_type != MAT_C_STRUCT) return nullptr;
  const std::size_t fields = Mat_VarGetNumberOfFields(s);
  char* const* names = Mat_VarGetStructFieldnames(s);
  const std::size_t n = element_count(s);
  if (fields == 0 || names == nullptr || index >= n || s->data == nullptr ||
      n > std::numeric_limits<std::size_t>::max() / fields ||
      s->nbytes / sizeof(matvar_t*) < n * fields) {
    return nullptr;
  }
  for (std::size_t f = 0; f < fields; ++f) {
    if (names[f] != nullptr && std::strcmp(names[f], name) == 0) {
      return static_cast<matvar_t* const*>(s->data)[index * fields + f];
    }
  }
  return nullptr;
}

bool is_numeric(const matvar_t* v) {
  if (v->rank > 0 && v->dims == nullptr) return false;
  switch (v->class_type) {
    case MAT_C_DOUBLE:
    case MAT_C_SINGLE:
    case MAT_C_INT8:
    case MAT_C_UINT8:
    case MAT_C_INT16:
    case MAT_C_UINT16:
    case MAT_C_INT32:
    case MAT_C_UINT32:
    case MAT_C_INT64:
    case MAT_C_UINT64:
      return v->isComplex == 0;
    default:
      return false;
  }
}

// Element i of a numeric variable whose data matio converted to its class type on reading.
double element(const matvar_t* v, std::size_t i) noexcept {
  switch (v->class_type) {
    case MAT_C_DOUBLE:
      return static_cast<const double*>(v->data)[i];
    case MAT_C_SINGLE:
      return static_cast<const float*>(v->data)[i];
    case MAT_C_INT8:
      return static_cast<const std::int8_t*>(v->data)[i];
    case MAT_C_UINT8:
      return static_cast<const std::uint8_t*>(v->data)[i];
    case MAT_C_INT16:
      return static_cast<const std::int16_t*>(v->data)[i];
    case MAT_C_UINT16:
      return static_cast<const std::uint16_t*>(v->data)[i];
    case MAT_C_INT32:
      return static_cast<const std::int32_t*>(v->data)[i];
    case MAT_C_UINT32:
      return static_cast<const std::uint32_t*>(v->data)[i];
    case MAT_C_INT64:
      return static_cast<double>(static_cast<const std::int64_t*>(v->data)[i]);
    case MAT_C_UINT64:
      return static_cast<double>(static_cast<const std::uint64_t*>(v->data)[i]);
    default:
      return std::numeric_limits<double>::quiet_NaN();
  }
}

std::string format_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

}  // namespace

// Reads the documented layout, naming the file and the field in every error.
struct RecordedReader {
  std::filesystem::path file;

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw RecordedDataError(file.string() + ": " + where + ": " + what);
  }

  MatVar read_data() const {
    install_matio_log();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) {
      throw RecordedDataError(file.string() +
                              ": no such file (expected the MATLAB v5 file of "
                              "recorded responses)");
    }
    matio_last_message.clear();
    MatFile mat(Mat_Open(file.string().c_str(), MAT_ACC_RDONLY));
    if (!mat) {
      throw RecordedDataError(file.string() + ": not a readable MATLAB file" +
                              (matio_last_message.empty() ? "" : " (" + matio_last_message + ")"));
    }
    if (Mat_GetVersion(mat.get()) != MAT_FT_MAT5) {
      throw RecordedDataError(file.string() + ": not a MATLAB v5 file (found another version)");
    }
    MatVar data(Mat_VarRead(mat.get(), std::string(kDataVariable).c_str()));
    if (!data) {
      fail("data", "no readable variable 'data' (expected a cell array of session structs)" +
                       (matio_last_message.empty() ? "" : " (" + matio_last_message + ")"));
    }
    if (data->class_type != MAT_C_CELL) {
      fail("data", std::string("expected a cell array of session structs, found a ") +
                       class_name(data->class_type));
    }
    const std::size_t n = element_count(data.get());
    if (n == std::numeric_limits<std::size_t>::max() ||
        (n > 0 && (data->data == nullptr || data->nbytes / sizeof(matvar_t*) < n))) {
      fail("data", "could not be read whole (a truncated or damaged file?)");
    }
    return data;
  }

  static std::size_t session_count(const matvar_t* data) { return element_count(data); }

  matvar_t* session(matvar_t* data, std::size_t index) const {
    const std::size_t n = session_count(data);
    if (index >= n) {
      fail("data", "session " + std::to_string(index) + " is out of range: the file holds " +
                       std::to_string(n) + " sessions (0.." + std::to_string(n == 0 ? 0 : n - 1) +
                       ")");
    }
    matvar_t* s = cell_at(data, index);
    const std::string where = "data{" + std::to_string(index) + "}";
    if (s == nullptr || s->class_type != MAT_C_STRUCT || element_count(s) != 1) {
      fail(where, std::string("expected one session struct, found ") +
                      (s == nullptr ? "nothing" : class_name(s->class_type)));
    }
    return s;
  }

  matvar_t* field(matvar_t* s, const std::string& where, const char* name,
                  std::size_t index = 0) const {
    matvar_t* f = struct_field(s, name, index);
    if (f == nullptr) fail(where, std::string("missing field '") + name + "'");
    return f;
  }

  std::string text(matvar_t* s, const std::string& where, const char* name) const {
    const matvar_t* f = field(s, where, name);
    if (f->class_type != MAT_C_CHAR) {
      fail(where + "." + name, std::string("expected text, found ") + class_name(f->class_type));
    }
    std::string out;
    const std::size_t n = element_count(f);
    if (n == 0 || f->data == nullptr) return out;
    const std::size_t width = Mat_SizeOf(f->data_type);
    if (width != 1 && width != 2 && width != 4) {
      fail(where + "." + name, "text in an unreadable encoding");
    }
    for (std::size_t i = 0; i < n && i < f->nbytes / width; ++i) {
      unsigned value = 0;
      if (width == 1) value = static_cast<const unsigned char*>(f->data)[i];
      if (width == 2) value = static_cast<const std::uint16_t*>(f->data)[i];
      if (width == 4) value = static_cast<const std::uint32_t*>(f->data)[i];
      out.push_back(value < 0x80 ? static_cast<char>(value) : '?');
    }
    return out;
  }

  // A numeric field with `expected` elements (any orientation), as doubles.
  std::vector<double> numbers(const matvar_t* f, const std::string& where,
                              std::size_t expected) const {
    if (!is_numeric(f)) {
      fail(where, std::string("expected real numbers, found ") + class_name(f->class_type));
    }
    const std::size_t n = element_count(f);
    if (n != expected) {
      fail(where, "expected " + std::to_string(expected) + " values, found " + std::to_string(n));
    }
    if (n > 0 && (f->data == nullptr || f->nbytes / Mat_SizeOfClass(f->class_type) < n)) {
      fail(where, "holds fewer values than its dimensions say");
    }
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = element(f, i);
    return out;
  }

  RecordedSessionInfo info(matvar_t* data, std::size_t index) const {
    matvar_t* s = session(data, index);
    const std::string where = "data{" + std::to_string(index) + "}";
    RecordedSessionInfo info;
    info.index = index;
    info.date = text(s, where, "date");
    info.subject = text(s, where, "subject");
    const matvar_t* spikes = field(s, where, "spikes");
    if (!is_numeric(spikes) || spikes->rank < 2 || spikes->rank > 4) {
      fail(where + ".spikes", "expected a numeric array units x conditions x bins x repeats");
    }
    info.units = spikes->dims[0];
    info.conditions = spikes->dims[1];
    info.repeats = spikes->rank == 4 ? spikes->dims[3] : 1;
    return info;
  }

  RecordedResponses parse(matvar_t* data, std::size_t index, ResponseWindowMs window) const {
    matvar_t* s = session(data, index);
    const std::string where = "data{" + std::to_string(index) + "}";
    RecordedResponses r;
    r.file_ = file;
    r.session_ = index;
    r.date_ = text(s, where, "date");
    r.subject_ = text(s, where, "subject");

    const matvar_t* spikes = field(s, where, "spikes");
    const std::string spikes_where = where + ".spikes";
    if (!is_numeric(spikes)) {
      fail(spikes_where,
           std::string("expected a numeric array, found ") + class_name(spikes->class_type));
    }
    // MATLAB drops trailing singleton dimensions: one repeat (or one bin and one repeat) makes
    // the array rank 3 (or 2).
    if (spikes->rank < 2 || spikes->rank > 4) {
      fail(spikes_where, "expected units x conditions x bins x repeats, found rank " +
                             std::to_string(spikes->rank));
    }
    const std::size_t units = spikes->dims[0];
    const std::size_t conditions = spikes->dims[1];
    const std::size_t bins = spikes->rank >= 3 ? spikes->dims[2] : 1;
    const std::size_t repeats = spikes->rank == 4 ? spikes->dims[3] : 1;
    if (units == 0 || conditions == 0 || bins == 0 || repeats == 0) {
      fail(spikes_where, "is empty (a dimension is 0)");
    }
    const std::size_t n = element_count(spikes);
    if (n == std::numeric_limits<std::size_t>::max() || spikes->data == nullptr ||
        spikes->nbytes / Mat_SizeOfClass(spikes->class_type) < n) {
      fail(spikes_where, "holds fewer values than its dimensions say");
    }
    r.units_ = units;

    // Bin centres: increasing, evenly spaced.
    const std::vector<double> times = numbers(field(s, where, "times"), where + ".times", bins);
    r.bin_ms_ = bins >= 2 ? times[1] - times[0] : 0.0;
    if (!(r.bin_ms_ > 0.0)) fail(where + ".times", "expected at least two increasing bin centres");
    for (std::size_t t = 1; t < bins; ++t) {
      if (!(std::abs(times[t] - times[t - 1] - r.bin_ms_) < 1e-6 * r.bin_ms_)) {
        fail(where + ".times", "bin centres are not evenly spaced (at bin " + std::to_string(t) +
                                   ": " + format_number(times[t]) + " ms)");
      }
    }
    const double first_edge = times.front() - 0.5 * r.bin_ms_;
    const double last_edge = times.back() + 0.5 * r.bin_ms_;
    if (!(window.start_ms < window.end_ms) || !std::isfinite(window.start_ms) ||
        !std::isfinite(window.end_ms)) {
      fail(where, "response window " + format_number(window.start_ms) + ".." +
                      format_number(window.end_ms) + " ms: expected start < end, both finite");
    }
    if (window.start_ms < first_edge - 1e-9 || window.end_ms > last_edge + 1e-9) {
      fail(where, "response window " + format_number(window.start_ms) + ".." +
                      format_number(window.end_ms) + " ms lies outside the recorded bins (" +
                      format_number(first_edge) + ".." + format_number(last_edge) + " ms)");
    }
    std::vector<std::size_t> in_window;
    for (std::size_t t = 0; t < bins; ++t) {
      if (times[t] >= window.start_ms && times[t] < window.end_ms) in_window.push_back(t);
    }
    if (in_window.empty()) {
      fail(where, "response window " + format_number(window.start_ms) + ".." +
                      format_number(window.end_ms) + " ms holds no bin centre");
    }
    r.window_ = window;
    r.window_bins_ = in_window.size();

    // Conditions: a struct array with one element per condition.
    matvar_t* cond = field(s, where, "conditions");
    const std::string cond_where = where + ".conditions";
    if (cond->class_type != MAT_C_STRUCT) {
      fail(cond_where,
           std::string("expected a struct array, found ") + class_name(cond->class_type));
    }
    if (element_count(cond) != conditions) {
      fail(cond_where, "holds " + std::to_string(element_count(cond)) + " conditions; spikes has " +
                           std::to_string(conditions));
    }
    r.conditions_.resize(conditions);
    for (std::size_t c = 0; c < conditions; ++c) {
      const std::string here = cond_where + "(" + std::to_string(c) + ")";
      const matvar_t* direction = struct_field(cond, "direction", c);
      if (direction == nullptr) fail(here, "missing field 'direction'");
      r.conditions_[c].direction_deg = numbers(direction, here + ".direction", 1)[0];
      if (!std::isfinite(r.conditions_[c].direction_deg)) {
        fail(here + ".direction", "expected a finite direction in degrees");
      }
      if (const matvar_t* contrast = struct_field(cond, "contrast", c)) {
        r.conditions_[c].contrast = numbers(contrast, here + ".contrast", 1)[0];
      }
    }

    r.contamination_ = numbers(field(s, where, "contamination"), where + ".contamination", units);
    r.tetrode_ = numbers(field(s, where, "tetrode"), where + ".tetrode", units);

    // Counts. A (condition, repeat) that is NaN for every unit and bin is padding (fewer repeats
    // of that condition); a partly NaN one, a negative or a fractional count is an error.
    r.max_repeats_ = repeats;
    r.counts_.assign(conditions * repeats * units, 0);
    const auto at = [&](std::size_t u, std::size_t c, std::size_t t, std::size_t rep) {
      return element(spikes, u + units * (c + conditions * (t + bins * rep)));
    };
    std::vector<std::uint64_t> sums(units);
    for (std::size_t c = 0; c < conditions; ++c) {
      std::size_t kept = 0;
      for (std::size_t rep = 0; rep < repeats; ++rep) {
        std::size_t nan = 0;
        std::fill(sums.begin(), sums.end(), 0);
        for (std::size_t t = 0; t < bins; ++t) {
          const bool counted = std::binary_search(in_window.begin(), in_window.end(), t);
          for (std::size_t u = 0; u < units; ++u) {
            const double v = at(u, c, t, rep);
            if (std::isnan(v)) {
              ++nan;
              continue;
            }
            if (!(v >= 0.0) || v != std::floor(v) || v > 1e6) {
              fail(spikes_where, "value " + format_number(v) + " at unit " + std::to_string(u) +
                                     ", condition " + std::to_string(c) + ", bin " +
                                     std::to_string(t) + ", repeat " + std::to_string(rep) +
                                     ": expected a non-negative whole spike count");
            }
            if (counted) sums[u] += static_cast<std::uint64_t>(v);
          }
        }
        if (nan == units * bins) continue;  // padding
        if (nan != 0) {
          fail(spikes_where, "condition " + std::to_string(c) + ", repeat " + std::to_string(rep) +
                                 " is partly NaN (" + std::to_string(nan) + " of " +
                                 std::to_string(units * bins) + " values)");
        }
        std::uint32_t* row = r.counts_.data() + (c * repeats + kept) * units;
        for (std::size_t u = 0; u < units; ++u) {
          row[u] = static_cast<std::uint32_t>(
              std::min<std::uint64_t>(sums[u], std::numeric_limits<std::uint32_t>::max()));
        }
        ++kept;
      }
      r.conditions_[c].repeats = kept;
    }
    return r;
  }
};

RecordedResponses RecordedResponses::load(const std::filesystem::path& file, std::size_t session,
                                          ResponseWindowMs window) {
  const RecordedReader reader{file};
  const MatVar data = reader.read_data();
  return reader.parse(data.get(), session, window);
}

std::vector<RecordedResponses> RecordedResponses::load_all(const std::filesystem::path& file,
                                                           ResponseWindowMs window) {
  const RecordedReader reader{file};
  const MatVar data = reader.read_data();
  std::vector<RecordedResponses> out;
  const std::size_t n = RecordedReader::session_count(data.get());
  out.reserve(n);
  for (std::size_t s = 0; s < n; ++s) out.push_back(reader.parse(data.get(), s, window));
  return out;
}

std::vector<RecordedSessionInfo> list_recorded_sessions(const std::filesystem::path& file) {
  const RecordedReader reader{file};
  const MatVar data = reader.read_data();
  std::vector<RecordedSessionInfo> out;
  const std::size_t n = RecordedReader::session_count(data.get());
  for (std::size_t s = 0; s < n; ++s) out.push_back(reader.info(data.get(), s));
  return out;
}

std::span<const std::uint32_t> RecordedResponses::counts(std::size_t condition,
                                                         std::size_t repeat) const {
  if (condition >= conditions_.size() || repeat >= conditions_[condition].repeats) {
    throw std::out_of_range("recorded responses: condition " + std::to_string(condition) +
                            ", repeat " + std::to_string(repeat) + " is not recorded");
  }
  return {counts_.data() + (condition * max_repeats_ + repeat) * units_, units_};
}

double RecordedResponses::mean_count(std::size_t condition, std::size_t unit) const {
  if (condition >= conditions_.size() || unit >= units_ || conditions_[condition].repeats == 0) {
    throw std::out_of_range("recorded responses: condition " + std::to_string(condition) +
                            ", unit " + std::to_string(unit) + " is not recorded");
  }
  double sum = 0.0;
  const std::size_t n = conditions_[condition].repeats;
  for (std::size_t r = 0; r < n; ++r) sum += counts(condition, r)[unit];
  return sum / static_cast<double>(n);
}

std::optional<std::size_t> RecordedResponses::find_direction(double direction_deg,
                                                             double tolerance_deg) const noexcept {
  if (!std::isfinite(direction_deg)) return std::nullopt;
  std::optional<std::size_t> best;
  double best_distance = std::numeric_limits<double>::infinity();
  for (std::size_t c = 0; c < conditions_.size(); ++c) {
    double d = std::fmod(std::abs(direction_deg - conditions_[c].direction_deg), 360.0);
    d = std::min(d, 360.0 - d);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  if (!best || !(best_distance <= tolerance_deg)) return std::nullopt;
  return best;
}

std::string_view to_string(RecordedAnswer answer) noexcept {
  switch (answer) {
    case RecordedAnswer::kAnswered:
      return "answered";
    case RecordedAnswer::kExhausted:
      return "every recorded repeat of this condition is used";
    case RecordedAnswer::kNoSuchCondition:
      return "no recorded condition has this direction";
  }
  return "unknown";
}

RecordedSubject::RecordedSubject(RecordedResponses data, RecordedSubjectConfig config)
    : data_(std::move(data)), config_(config) {
  if (config_.direction_dimension < 0 ||
      config_.direction_dimension >= static_cast<int>(protocols::kMaxStimulusDimensions)) {
    throw std::invalid_argument(
        "RecordedSubjectConfig.direction_dimension: expected a stimulus value index");
  }
  if (!(config_.direction_tolerance_deg > 0.0) || !(config_.direction_tolerance_deg < 90.0)) {
    throw std::invalid_argument("RecordedSubjectConfig.direction_tolerance_deg: expected (0, 90)");
  }
  const std::size_t conditions = data_.condition_count();
  order_.resize(conditions);
  next_.assign(conditions, 0);
  for (std::size_t c = 0; c < conditions; ++c) {
    const std::size_t n = data_.conditions()[c].repeats;
    std::vector<std::uint32_t>& order = order_[c];
    order.resize(n);
    std::iota(order.begin(), order.end(), 0u);
    // Fisher-Yates from the condition's own stream: one condition's order never depends on
    // another's repeat count.
    details::Xoshiro256pp rng(details::derive_seed(config_.seed, c));
    for (std::size_t i = n; i > 1; --i) {
      // Unbiased index in [0, i) by rejection of the short last interval.
      const std::uint64_t bound = i;
      const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
      std::uint64_t x = rng.next();
      while (x >= limit) x = rng.next();
      std::swap(order[i - 1], order[static_cast<std::size_t>(x % bound)]);
    }
    total_ += n;
  }
}

std::optional<std::size_t> RecordedSubject::condition_of(
    const protocols::Stimulus& stimulus) const noexcept {
  const auto d = static_cast<std::size_t>(config_.direction_dimension);
  if (d >= stimulus.dimension_count) return std::nullopt;
  return data_.find_direction(stimulus.values[d], config_.direction_tolerance_deg);
}

std::size_t RecordedSubject::remaining(std::size_t condition) const noexcept {
  if (condition >= order_.size()) return 0;
  return order_[condition].size() - next_[condition];
}

bool RecordedSubject::available(const protocols::Stimulus& stimulus) const noexcept {
  const std::optional<std::size_t> c = condition_of(stimulus);
  return c && remaining(*c) > 0;
}

std::vector<std::size_t> RecordedSubject::available_conditions() const {
  std::vector<std::size_t> out;
  for (std::size_t c = 0; c < order_.size(); ++c) {
    if (remaining(c) > 0) out.push_back(c);
  }
  return out;
}

bool RecordedSubject::exhausted() const noexcept {
  return used_ == total_;
}

RecordedSubject::Response RecordedSubject::respond(const protocols::Stimulus& stimulus,
                                                   std::span<std::uint32_t> counts) {
  if (counts.size() != data_.unit_count()) {
    throw std::invalid_argument("RecordedSubject::respond: " + std::to_string(counts.size()) +
                                " counts for " + std::to_string(data_.unit_count()) + " units");
  }
  Response response;
  const std::optional<std::size_t> c = condition_of(stimulus);
  if (!c) return response;
  response.condition = *c;
  if (remaining(*c) == 0) {
    response.answer = RecordedAnswer::kExhausted;
    return response;
  }
  response.repeat = order_[*c][next_[*c]++];
  ++used_;
  const std::span<const std::uint32_t> recorded = data_.counts(*c, response.repeat);
  std::copy(recorded.begin(), recorded.end(), counts.begin());
  response.answer = RecordedAnswer::kAnswered;
  return response;
}

void RecordedSubject::reset() noexcept {
  std::fill(next_.begin(), next_.end(), 0);
  used_ = 0;
}

}  // namespace twinloop::hil

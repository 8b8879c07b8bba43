// Open Ephys binary recordings: structure.oebin parser and a replay source for one continuous
// stream (nlohmann_json stays private to this file).
#include "twinloop/drivers/openephys_binary_source.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "paced_file_read.hpp"
#include "twinloop/drivers/probeinterface.hpp"

namespace twinloop::drivers {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw std::runtime_error(std::string(source) + ": " + what);
}

int line_of_offset(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  return 1 +
         static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(offset), '\n'));
}

/// A short rendering of a JSON value for messages (long arrays/objects cut).
std::string show(const json& value) {
  std::string text = value.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

/// The value of a required key; `where` is the object's field path ("continuous[0]").
const json& required(const json& object, const char* key, std::string_view source,
                     const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end()) fail(source, where + "." + key + ": missing (required)");
  return *it;
}

std::string as_string(const json& value, std::string_view source, const std::string& field) {
  if (!value.is_string()) fail(source, field + ": expected a string, found " + show(value));
  return value.get<std::string>();
}

/// An optional descriptive string: read when it is a string, ignored otherwise.
std::string optional_text(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

double positive_number(const json& value, std::string_view source, const std::string& field) {
  if (!value.is_number()) fail(source, field + ": expected a number, found " + show(value));
  const double v = value.get<double>();
  if (!std::isfinite(v) || v <= 0.0) {
    fail(source, field + ": must be positive, found " + show(value));
  }
  return v;
}

std::size_t positive_integer(const json& value, std::string_view source, const std::string& field) {
  if (!value.is_number_integer()) {
    fail(source, field + ": expected an integer, found " + show(value));
  }
  const long long v = value.get<long long>();
  if (v <= 0) fail(source, field + ": must be positive, found " + show(value));
  return static_cast<std::size_t>(v);
}

/// channel_metadata [{name: "electrode_index", value: [e]}, ...] -> e, or -1.
int electrode_index_of(const json& channel, std::string_view source, const std::string& where) {
  const auto meta = channel.find("channel_metadata");
  if (meta == channel.end() || !meta->is_array()) return -1;
  for (std::size_t k = 0; k < meta->size(); ++k) {
    const json& entry = (*meta)[k];
    if (!entry.is_object()) continue;
    const auto name = entry.find("name");
    if (name == entry.end() || !name->is_string() || *name != "electrode_index") continue;
    const std::string at = where + ".channel_metadata[" + std::to_string(k) + "]";
    const std::string field = at + ".value";
    const json& value = required(entry, "value", source, at);
    const json* first = &value;
    if (value.is_array()) {
      if (value.empty()) fail(source, field + ": empty");
      first = &value[0];
    }
    if (!first->is_number_integer() || first->get<long long>() < 0 ||
        first->get<long long>() > std::numeric_limits<int>::max()) {
      fail(source, field + ": expected a non-negative integer, found " + show(value));
    }
    return static_cast<int>(first->get<long long>());
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// .npy: only what the start sample needs (header, first and last value), never the whole array,
// which is 8 bytes per sample (GBs for a long Neuropixels recording).

struct NpyIndexFile {
  bool integer = false;
  std::size_t item_bytes = 0;
  std::uint64_t count = 0;  ///< values present in the file (from its size, not the header)
  std::optional<std::uint64_t> header_count;
  std::int64_t first = 0;
  std::int64_t last = 0;
};

std::int64_t decode_integer(const unsigned char* bytes, std::size_t size, bool is_signed,
                            const std::string& path) {
  std::uint64_t u = 0;
  for (std::size_t i = 0; i < size; ++i) u |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  if (is_signed) {
    if (size < 8 && (u >> (8 * size - 1)) != 0) u |= ~std::uint64_t{0} << (8 * size);
    return static_cast<std::int64_t>(u);
  }
  if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    fail(path, "sample number " + std::to_string(u) + " does not fit a signed 64-bit index");
  }
  return static_cast<std::int64_t>(u);
}

/// Reads an .npy's header and, for integer arrays, its first and last value.
NpyIndexFile read_npy_index(const fs::path& path) {
  const std::string name = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(name, "cannot open");
  std::array<unsigned char, 12> prefix{};
  in.read(reinterpret_cast<char*>(prefix.data()), 10);
  if (in.gcount() != 10 || std::memcmp(prefix.data(), "\x93NUMPY", 6) != 0) {
    fail(name, "not a NumPy .npy file (no \\x93NUMPY magic)");
  }
  const int major = prefix[6];
  std::uint64_t header_len = 0;
  std::uint64_t data_offset = 0;
  if (major == 1) {
    header_len = prefix[8] | (static_cast<std::uint64_t>(prefix[9]) << 8);
    data_offset = 10 + header_len;
  } else if (major == 2 || major == 3) {
    in.read(reinterpret_cast<char*>(prefix.data()) + 10, 2);
    if (in.gcount() != 2) fail(name, "truncated .npy header");
    header_len = prefix[8] | (static_cast<std::uint64_t>(prefix[9]) << 8) |
                 (static_cast<std::uint64_t>(prefix[10]) << 16) |
                 (static_cast<std::uint64_t>(prefix[11]) << 24);
    data_offset = 12 + header_len;
  } else {
    fail(name, ".npy format version " + std::to_string(major) + " is not supported");
  }
  if (header_len > 65536) fail(name, ".npy header of " + std::to_string(header_len) + " bytes");
  std::string header(static_cast<std::size_t>(header_len), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (static_cast<std::uint64_t>(in.gcount()) != header_len) fail(name, "truncated .npy header");

  NpyIndexFile out;
  const std::size_t descr_key = header.find("'descr'");
  const std::size_t q1 =
      descr_key == std::string::npos ? descr_key : header.find('\'', descr_key + 7);
  const std::size_t q2 = q1 == std::string::npos ? q1 : header.find('\'', q1 + 1);
  if (q2 == std::string::npos || q2 - q1 < 3) fail(name, ".npy header has no 'descr'");
  const std::string descr = header.substr(q1 + 1, q2 - q1 - 1);
  const char order = descr[0];
  const char kind = descr[1];
  std::size_t size = 0;
  const auto [ptr, ec] = std::from_chars(descr.data() + 2, descr.data() + descr.size(), size);
  if (ec != std::errc{} || ptr != descr.data() + descr.size() || size == 0 || size > 8 ||
      (order != '<' && order != '|' && order != '=' && !(order == '>' && size == 1))) {
    fail(name, ".npy dtype '" + descr + "' is not a little-endian number");
  }
  out.item_bytes = size;
  out.integer = kind == 'i' || kind == 'u';
  if (const std::size_t shape = header.find("'shape'"); shape != std::string::npos) {
    const std::size_t open = header.find('(', shape);
    if (open != std::string::npos) {
      std::uint64_t n = 0;
      const char* begin = header.data() + open + 1;
      while (*begin == ' ') ++begin;
      const auto [p, e] = std::from_chars(begin, header.data() + header.size(), n);
      if (e == std::errc{} && p != begin) out.header_count = n;
    }
  }
  std::error_code size_ec;
  const std::uintmax_t file_bytes = fs::file_size(path, size_ec);
  if (size_ec) fail(name, "cannot read size: " + size_ec.message());
  out.count = file_bytes > data_offset ? (file_bytes - data_offset) / size : 0;
  if (!out.integer || out.count == 0) return out;

  std::array<unsigned char, 8> value{};
  in.seekg(static_cast<std::streamoff>(data_offset));
  in.read(reinterpret_cast<char*>(value.data()), static_cast<std::streamsize>(size));
  if (static_cast<std::size_t>(in.gcount()) != size) fail(name, "cannot read the first value");
  out.first = decode_integer(value.data(), size, kind == 'i', name);
  in.seekg(static_cast<std::streamoff>(data_offset + (out.count - 1) * size));
  in.read(reinterpret_cast<char*>(value.data()), static_cast<std::streamsize>(size));
  if (static_cast<std::size_t>(in.gcount()) != size) fail(name, "cannot read the last value");
  out.last = decode_integer(value.data(), size, kind == 'i', name);
  return out;
}

std::string strip_slashes(std::string folder) {
  while (!folder.empty() && (folder.back() == '/' || folder.back() == '\\')) folder.pop_back();
  return folder;
}

/// structure.oebin of a recording path, and the stream folder a continuous.dat path implies.
struct ResolvedPath {
  fs::path oebin;
  std::string implied_folder;
};

ResolvedPath resolve_recording(const fs::path& recording) {
  std::error_code ec;
  ResolvedPath out;
  if (fs::is_directory(recording, ec)) {
    out.oebin = recording / "structure.oebin";
  } else if (recording.filename() == "continuous.dat") {
    // <recording>/continuous/<folder_name>/continuous.dat
    const fs::path stream_dir = recording.parent_path();
    out.oebin = stream_dir.parent_path().parent_path() / "structure.oebin";
    out.implied_folder = stream_dir.filename().string();
  } else {
    out.oebin = recording;
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// structure.oebin

bool OpenEphysChannel::microvolts() const noexcept {
  return units.empty() || units == "uV" || units == "uv" || units == "\xC2\xB5V" ||
         units == "\xCE\xBCV";
}

std::string OpenEphysStream::folder() const {
  return strip_slashes(folder_name);
}

std::size_t OpenEphysStream::neural_channels() const noexcept {
  std::size_t n = 0;
  while (n < channels.size() && channels[n].microvolts()) ++n;
  return n;
}

OpenEphysStructure parse_openephys_structure_text(std::string_view json_text,
                                                  std::string_view source_name) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::parse_error& e) {
    throw std::runtime_error(
        std::string(source_name) + ":" +
        std::to_string(line_of_offset(json_text, e.byte == 0 ? 0 : e.byte - 1)) +
        ": malformed JSON: " + e.what());
  }
  if (!root.is_object())
    fail(source_name, "top level: expected a JSON object, found " + show(root));
  OpenEphysStructure out;
  out.source = std::string(source_name);
  out.gui_version = optional_text(root, "GUI version");
  const auto streams = root.find("continuous");
  if (streams == root.end()) fail(source_name, "continuous: missing (required)");
  if (!streams->is_array()) {
    fail(source_name, "continuous: expected an array, found " + show(*streams));
  }
  for (std::size_t i = 0; i < streams->size(); ++i) {
    const std::string where = "continuous[" + std::to_string(i) + "]";
    const json& s = (*streams)[i];
    if (!s.is_object()) fail(source_name, where + ": expected an object, found " + show(s));
    OpenEphysStream stream;
    stream.index = i;
    stream.folder_name = as_string(required(s, "folder_name", source_name, where), source_name,
                                   where + ".folder_name");
    if (strip_slashes(stream.folder_name).empty()) {
      fail(source_name, where + ".folder_name: empty");
    }
    stream.stream_name = optional_text(s, "stream_name");
    stream.source_processor_name = optional_text(s, "source_processor_name");
    stream.sample_rate_hz = positive_number(required(s, "sample_rate", source_name, where),
                                            source_name, where + ".sample_rate");
    stream.num_channels = positive_integer(required(s, "num_channels", source_name, where),
                                           source_name, where + ".num_channels");
    const json& channels = required(s, "channels", source_name, where);
    if (!channels.is_array()) {
      fail(source_name, where + ".channels: expected an array, found " + show(channels));
    }
    if (channels.size() != stream.num_channels) {
      fail(source_name, where + ".channels: lists " + std::to_string(channels.size()) +
                            " channels but " + where +
                            ".num_channels = " + std::to_string(stream.num_channels));
    }
    stream.channels.reserve(channels.size());
    for (std::size_t j = 0; j < channels.size(); ++j) {
      const std::string at = where + ".channels[" + std::to_string(j) + "]";
      const json& c = channels[j];
      if (!c.is_object()) fail(source_name, at + ": expected an object, found " + show(c));
      OpenEphysChannel channel;
      channel.bit_volts = positive_number(required(c, "bit_volts", source_name, at), source_name,
                                          at + ".bit_volts");
      if (const auto name = c.find("channel_name"); name != c.end()) {
        channel.name = as_string(*name, source_name, at + ".channel_name");
      }
      if (const auto units = c.find("units"); units != c.end()) {
        channel.units = as_string(*units, source_name, at + ".units");
      }
      channel.electrode_index = electrode_index_of(c, source_name, at);
      stream.channels.push_back(std::move(channel));
    }
    out.continuous.push_back(std::move(stream));
  }
  return out;
}

OpenEphysStructure parse_openephys_structure(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open structure.oebin");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_openephys_structure_text(text.str(), path.string());
}

bool is_openephys_recording(const fs::path& path) noexcept {
  try {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return fs::is_regular_file(path / "structure.oebin", ec);
    if (path.extension() == ".oebin") return true;
    if (path.filename() == "continuous.dat") {
      return fs::is_regular_file(resolve_recording(path).oebin, ec);
    }
  } catch (...) {
    // path manipulation may allocate; treat a failure as "not recognised"
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Replay source

OpenEphysBinarySource::OpenEphysBinarySource(OpenEphysBinarySourceConfig config)
    : config_(std::move(config)) {
  if (config_.block_samples == 0) config_.block_samples = 1;
  last_error_.reserve(256);  // read() assigns short messages without allocating
}

OpenEphysBinarySource::~OpenEphysBinarySource() {
  stop();
}

const OpenEphysStream& OpenEphysBinarySource::stream() const noexcept {
  return structure_.continuous[stream_];
}

bool OpenEphysBinarySource::start() {
  stop();
  warnings_.clear();
  last_error_.clear();
  try {
    if (!start_or_throw()) return false;
  } catch (const std::exception& e) {
    stop();
    last_error_ = e.what();
    return false;
  }
  last_error_.reserve(256);  // start() may have grown or replaced it
  next_row_ = 0;
  clock_started_ = false;
  return true;
}

bool OpenEphysBinarySource::start_or_throw() {
  const ResolvedPath resolved = resolve_recording(config_.recording);
  const std::string oebin = resolved.oebin.string();
  std::error_code ec;
  if (!fs::is_regular_file(resolved.oebin, ec)) {
    last_error_ =
        oebin + ": structure.oebin not found (recording " + config_.recording.string() + ")";
    return false;
  }
  structure_ = parse_openephys_structure(resolved.oebin);
  const std::vector<OpenEphysStream>& streams = structure_.continuous;
  if (streams.empty()) fail(oebin, "continuous: lists no stream");

  // Choose the stream.
  std::string wanted_folder = strip_slashes(config_.stream_folder);
  if (!resolved.implied_folder.empty()) {
    if (!wanted_folder.empty() && wanted_folder != resolved.implied_folder) {
      fail(oebin, "continuous: stream folder '" + wanted_folder + "' asked for, but the path " +
                      config_.recording.string() + " is stream '" + resolved.implied_folder + "'");
    }
    wanted_folder = resolved.implied_folder;
  }
  std::optional<std::size_t> chosen;
  if (config_.stream_index) {
    if (*config_.stream_index >= streams.size()) {
      fail(oebin, "continuous[" + std::to_string(*config_.stream_index) +
                      "]: stream index out of range (the file lists " +
                      std::to_string(streams.size()) + " continuous stream" +
                      (streams.size() == 1 ? "" : "s") + ")");
    }
    chosen = *config_.stream_index;
  }
  if (!wanted_folder.empty()) {
    std::string known;
    std::optional<std::size_t> by_folder;
    for (const OpenEphysStream& s : streams) {
      known += (known.empty() ? "'" : ", '") + s.folder_name + "'";
      if (!by_folder && s.folder() == wanted_folder) by_folder = s.index;
    }
    if (!by_folder) {
      fail(oebin,
           "continuous: no stream with folder_name '" + wanted_folder + "' (found " + known + ")");
    }
    if (chosen && *chosen != *by_folder) {
      fail(oebin, "continuous[" + std::to_string(*chosen) + "].folder_name is '" +
                      streams[*chosen].folder_name + "', not the stream folder '" + wanted_folder +
                      "' also asked for");
    }
    chosen = by_folder;
  }
  if (!chosen) {
    for (const OpenEphysStream& s : streams) {
      if (s.num_channels > 1) {
        chosen = s.index;
        break;
      }
    }
    if (!chosen) {
      fail(oebin, "continuous: no stream has more than one channel; choose one by index or folder");
    }
  }
  stream_ = *chosen;
  const OpenEphysStream& s = streams[stream_];
  const std::string where = "continuous[" + std::to_string(stream_) + "]";

  // Neural channels: the leading µV channels, one scale for all of them.
  const std::size_t neural = s.neural_channels();
  if (neural == 0) {
    fail(oebin, where + ".channels[0].units: '" + s.channels[0].units +
                    "': the stream starts with no microvolt channel to detect on");
  }
  const double bit_volts = s.channels[0].bit_volts;
  for (std::size_t j = 1; j < neural; ++j) {
    if (std::abs(s.channels[j].bit_volts - bit_volts) > 1e-6 * bit_volts) {
      fail(oebin, where + ".channels[" + std::to_string(j) +
                      "].bit_volts: " + std::to_string(s.channels[j].bit_volts) +
                      " differs from channels[0]'s " + std::to_string(bit_volts) +
                      " (one µV-per-bit scale per probe is all the pipeline applies)");
    }
  }
  for (std::size_t j = neural; j < s.channels.size(); ++j) {
    if (s.channels[j].microvolts()) {
      warnings_.push_back(oebin + ": " + where + ".channels[" + std::to_string(j) +
                          "] is in µV but follows a non-µV channel; only the first " +
                          std::to_string(neural) + " channels are treated as electrode sites");
      break;
    }
  }

  // The .dat.
  dat_path_ = resolved.oebin.parent_path() / "continuous" / s.folder() / "continuous.dat";
  const std::string dat = dat_path_.string();
  if (!fs::is_regular_file(dat_path_, ec)) {
    fail(dat, "continuous.dat not found (" + where + ".folder_name '" + s.folder_name + "' in " +
                  oebin + ")");
  }
  const std::uintmax_t dat_bytes = fs::file_size(dat_path_, ec);
  if (ec) fail(dat, "cannot read size: " + ec.message());
  const std::uint64_t frame_bytes = 2 * static_cast<std::uint64_t>(s.num_channels);
  total_samples_ = dat_bytes / frame_bytes;
  if (dat_bytes % frame_bytes != 0) {
    warnings_.push_back(
        dat + ": size " + std::to_string(dat_bytes) + " bytes is not a whole number of " +
        std::to_string(frame_bytes) + "-byte frames (" + where +
        ".num_channels = " + std::to_string(s.num_channels) + " in " + oebin +
        "): the truncated last frame (" + std::to_string(dat_bytes % frame_bytes) +
        " bytes) is ignored, " + std::to_string(total_samples_) + " whole frames are replayed");
  }
  if (total_samples_ == 0) {
    fail(dat, "holds no whole frame (" + std::to_string(dat_bytes) + " bytes; " + where +
                  ".num_channels = " + std::to_string(s.num_channels) + " in " + oebin + ")");
  }

  // The first sample number.
  first_sample_ = 0;
  sample_numbers_source_ = "none";
  const fs::path stream_dir = dat_path_.parent_path();
  const fs::path sample_numbers = stream_dir / "sample_numbers.npy";
  const fs::path timestamps = stream_dir / "timestamps.npy";
  std::optional<NpyIndexFile> index;
  fs::path index_path;
  if (fs::is_regular_file(sample_numbers, ec)) {
    index = read_npy_index(sample_numbers);
    index_path = sample_numbers;
    if (!index->integer) {
      fail(sample_numbers.string(), "expected integer sample numbers (int64)");
    }
  } else if (fs::is_regular_file(timestamps, ec)) {
    NpyIndexFile t = read_npy_index(timestamps);
    if (t.integer) {  // GUI <= 0.5: timestamps.npy holds the sample numbers
      index = t;
      index_path = timestamps;
    } else {
      warnings_.push_back(stream_dir.string() +
                          ": no sample_numbers.npy (timestamps.npy holds seconds); samples are "
                          "numbered from 0");
    }
  } else {
    warnings_.push_back(stream_dir.string() +
                        ": neither sample_numbers.npy nor timestamps.npy; samples are numbered "
                        "from 0");
  }
  if (index) {
    const std::string npy = index_path.string();
    if (index->count == 0) fail(npy, "holds no sample number");
    first_sample_ = index->first;
    sample_numbers_source_ = index_path.filename().string();
    if (index->count != total_samples_) {
      warnings_.push_back(npy + ": holds " + std::to_string(index->count) + " sample numbers but " +
                          dat + " holds " + std::to_string(total_samples_) + " frames");
    }
    if (index->header_count && *index->header_count != index->count) {
      warnings_.push_back(npy + ": header says " + std::to_string(*index->header_count) +
                          " values, the file holds " + std::to_string(index->count) +
                          " (a recording that did not stop cleanly?)");
    }
    if (index->last - index->first != static_cast<std::int64_t>(index->count) - 1) {
      warnings_.push_back(npy + ": sample numbers run from " + std::to_string(index->first) +
                          " to " + std::to_string(index->last) + " over " +
                          std::to_string(index->count) +
                          " values (not contiguous); blocks are stamped first + row");
    }
  }

  // Probe description.
  info_ = ProbeInfo{};
  info_.name = s.stream_name.empty() ? s.folder() : s.stream_name;
  info_.stored_channels = s.num_channels;
  info_.neural_channels = neural;
  info_.has_sync_word = false;
  info_.sample_rate_hz = s.sample_rate_hz;
  info_.microvolts_per_bit = bit_volts;  // units are µV: bit_volts is µV per bit
  if (config_.geometry) {
    if (!config_.probeinterface.empty()) {
      fail(config_.probeinterface.string(), "a probeinterface file and a given geometry together");
    }
    if (config_.geometry->sites.size() != neural) {
      fail(oebin, "the caller's probe layout (" + config_.geometry->model + ") has " +
                      std::to_string(config_.geometry->sites.size()) + " sites for the " +
                      std::to_string(neural) + " neural channels of " + where);
    }
    geometry_source_ = "given (" + config_.geometry->model + ")";
    info_.geometry = *config_.geometry;
  } else if (config_.probeinterface.empty()) {
    geometry_source_ = "default";
    info_.geometry.model = "openephys-default-linear";
    info_.geometry.sites.reserve(neural);
    for (std::size_t j = 0; j < neural; ++j) {
      const int electrode = s.channels[j].electrode_index;
      info_.geometry.sites.push_back(Site{0.0, kOpenEphysDefaultPitchUm * static_cast<double>(j), 0,
                                          electrode >= 0 ? electrode : static_cast<int>(j)});
    }
  } else {
    const std::string pi = config_.probeinterface.string();
    geometry_source_ = pi;
    ProbeGeometry probe = load_probeinterface(config_.probeinterface, config_.probe_index);
    if (probe.sites.size() == neural) {
      info_.geometry = std::move(probe);
    } else {
      const bool by_electrode =
          std::all_of(s.channels.begin(), s.channels.begin() + static_cast<std::ptrdiff_t>(neural),
                      [](const OpenEphysChannel& c) { return c.electrode_index >= 0; });
      if (!by_electrode) {
        fail(pi, "probes[" + std::to_string(config_.probe_index) + "] has " +
                     std::to_string(probe.sites.size()) + " contacts for the " +
                     std::to_string(neural) + " neural channels of " + oebin + " " + where +
                     ", whose channels carry no electrode_index to choose contacts by");
      }
      std::map<int, std::size_t> by_id;
      for (std::size_t k = 0; k < probe.sites.size(); ++k)
        by_id.emplace(probe.sites[k].electrode, k);
      info_.geometry.model = probe.model;
      info_.geometry.sites.reserve(neural);
      for (std::size_t j = 0; j < neural; ++j) {
        const auto it = by_id.find(s.channels[j].electrode_index);
        if (it == by_id.end()) {
          fail(pi, "no contact for electrode " + std::to_string(s.channels[j].electrode_index) +
                       " (" + oebin + " " + where + ".channels[" + std::to_string(j) +
                       "] electrode_index)");
        }
        info_.geometry.sites.push_back(probe.sites[it->second]);
      }
    }
  }

  file_ = std::fopen(dat_path_.c_str(), "rb");
  if (file_ == nullptr) fail(dat, "cannot open for reading");
  io_buffer_.resize(std::max<std::size_t>(frame_bytes * config_.block_samples, 64 * 1024));
  std::setvbuf(file_, io_buffer_.data(), _IOFBF, io_buffer_.size());
  return true;
}

ReadStatus OpenEphysBinarySource::read(SampleBlock& block) noexcept {
  const internal::PacedFile file{
      file_,        "continuous.dat",      info_.stored_channels, info_.sample_rate_hz,
      config_.pace, config_.block_samples, first_sample_,         total_samples_};
  return internal::read_paced_rows(file, next_row_, clock_started_, start_ns_, block, last_error_);
}

void OpenEphysBinarySource::stop() noexcept {
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
  }
}

}  // namespace twinloop::drivers

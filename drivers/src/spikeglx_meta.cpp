// SpikeGLX .meta parsing. Format facts: ../shared/data/FORMATS.md §1 (SpikeGLX Metadata_30.md).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "twinloop/drivers/spikeglx.hpp"

namespace twinloop::drivers {
namespace {

[[noreturn]] void fail(std::string_view source, int line, const std::string& what) {
  std::string message(source);
  if (line > 0) message += ":" + std::to_string(line);
  message += ": " + what;
  throw std::runtime_error(message);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  text = trim(text);
  if (text.empty()) return false;
  if (text.front() == '+') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc{} && ptr == end;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

/// Splits whitespace-separated fields (imro entries use single spaces).
std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > start) parts.push_back(s.substr(start, i - start));
  }
  return parts;
}

/// Context for messages about one key.
struct KeyRef {
  std::string_view source;
  std::string_view key;
  int line = 0;

  [[noreturn]] void fail(const std::string& what) const {
    twinloop::drivers::fail(source, line, std::string(key) + ": " + what);
  }
};

/// Splits a table value "(hdr)(e1)(e2)..." into the texts inside the parentheses.
std::vector<std::string_view> table_groups(std::string_view value, const KeyRef& ref) {
  std::vector<std::string_view> groups;
  std::size_t i = 0;
  value = trim(value);
  while (i < value.size()) {
    if (value[i] != '(') {
      ref.fail("expected '(' at character " + std::to_string(i + 1) + " of the table, found '" +
               std::string(1, value[i]) + "'");
    }
    const std::size_t close = value.find(')', i + 1);
    if (close == std::string_view::npos) {
      ref.fail("unterminated entry '" + std::string(value.substr(i, 40)) + "' (no ')')");
    }
    const std::string_view inner = value.substr(i + 1, close - i - 1);
    if (inner.find('(') != std::string_view::npos) {
      ref.fail("nested '(' in entry '" + std::string(inner) + "'");
    }
    groups.push_back(inner);
    i = close + 1;
  }
  if (groups.empty()) ref.fail("empty table (expected a '(header)')");
  return groups;
}

std::string entry_label(std::size_t index, std::string_view inner) {
  return "entry " + std::to_string(index) + " '(" + std::string(inner) + ")'";
}

/// Parses integer fields of an entry; fails naming the entry.
std::vector<int> int_fields(const std::vector<std::string_view>& fields, std::size_t index,
                            std::string_view inner, const KeyRef& ref) {
  std::vector<int> out(fields.size());
  for (std::size_t k = 0; k < fields.size(); ++k) {
    if (!parse_number(fields[k], out[k])) {
      ref.fail(entry_label(index, inner) + ": field " + std::to_string(k + 1) + " '" +
               std::string(fields[k]) + "' is not an integer");
    }
  }
  return out;
}

bool is_np1_like_type(int type) {
  return type == 0 || type == 1020 || type == 1030 || type == 1100 ||
         (type >= 1120 && type <= 1123) || type == 1200 || type == 1300;
}
bool is_np2_single_shank(int type) {
  return type == 21 || type == 2003;
}
bool is_np2_multi_shank(int type) {
  return type == 24 || type == 2013 || type == 2020;
}
/// Probe types whose gain is fixed at 80 (NP2.0 family).
bool has_fixed_gain_80(int type) {
  return is_np2_single_shank(type) || is_np2_multi_shank(type);
}

ImroTable parse_imro(std::string_view value, const KeyRef& ref) {
  const std::vector<std::string_view> groups = table_groups(value, ref);
  ImroTable table;
  const std::vector<std::string_view> header = split(groups[0], ',');
  std::vector<int> head(header.size());
  for (std::size_t k = 0; k < header.size(); ++k) {
    if (!parse_number(header[k], head[k])) {
      ref.fail("header '(" + std::string(groups[0]) + ")': field " + std::to_string(k + 1) +
               " is not an integer");
    }
  }
  std::size_t expected_fields = 0;
  if (head.size() == 3) {
    // Phase 3A: (serial number, probe option, channel count).
    table.layout = ImroLayout::kNp1Phase3A;
    table.probe_type = 0;
    table.header_channels = head[2];
    expected_fields = 5;
  } else if (head.size() == 6 && head[0] == 1110) {
    table.layout = ImroLayout::kUhd1110;
    table.probe_type = 1110;
    table.header_channels = 384;
    table.uhd_column_mode = head[1];
    table.uhd_ref_id = head[2];
    table.uhd_ap_gain = head[3];
    table.uhd_lf_gain = head[4];
    table.uhd_ap_highpass = head[5] != 0;
    expected_fields = 3;
  } else if (head.size() == 2) {
    table.probe_type = head[0];
    table.header_channels = head[1];
    if (is_np1_like_type(head[0])) {
      table.layout = ImroLayout::kNp1;
      expected_fields = 6;
    } else if (is_np2_single_shank(head[0])) {
      table.layout = ImroLayout::kNp2SingleShank;
      expected_fields = 4;
    } else if (is_np2_multi_shank(head[0])) {
      table.layout = ImroLayout::kNp2MultiShank;
      expected_fields = 5;
    } else {
      ref.fail("unsupported probe type " + std::to_string(head[0]) + " in header '(" +
               std::string(groups[0]) + ")'");
    }
  } else {
    ref.fail("header '(" + std::string(groups[0]) +
             ")' is neither (type,nChan), (serial,option,nChan) nor a 1110 header");
  }
  if (table.header_channels <= 0) ref.fail("header channel count must be positive");

  for (std::size_t g = 1; g < groups.size(); ++g) {
    const std::vector<std::string_view> fields = split_ws(groups[g]);
    if (fields.size() != expected_fields) {
      ref.fail(entry_label(g, groups[g]) + ": expected " + std::to_string(expected_fields) +
               " fields for probe type " + std::to_string(table.probe_type) + ", found " +
               std::to_string(fields.size()));
    }
    const std::vector<int> v = int_fields(fields, g, groups[g], ref);
    if (table.layout == ImroLayout::kUhd1110) {
      table.uhd_groups.push_back(ImroUhdGroup{v[0], v[1], v[2]});
      continue;
    }
    ImroEntry e;
    e.channel = v[0];
    switch (table.layout) {
      case ImroLayout::kNp1:
      case ImroLayout::kNp1Phase3A:
        e.bank = v[1];
        e.ref_id = v[2];
        e.ap_gain = v[3];
        e.lf_gain = v[4];
        e.ap_highpass = table.layout == ImroLayout::kNp1Phase3A ? true : v[5] != 0;
        if (e.ap_gain <= 0 || e.lf_gain <= 0) {
          ref.fail(entry_label(g, groups[g]) + ": gains must be positive");
        }
        break;
      case ImroLayout::kNp2SingleShank:
        e.bank_mask = v[1];
        e.ref_id = v[2];
        e.electrode = v[3];
        break;
      case ImroLayout::kNp2MultiShank:
        e.shank = v[1];
        e.bank = v[2];
        e.ref_id = v[3];
        e.electrode = v[4];
        break;
      case ImroLayout::kUhd1110:
        break;
    }
    if (e.channel != static_cast<int>(g - 1)) {
      ref.fail(entry_label(g, groups[g]) + ": channel " + std::to_string(e.channel) +
               " out of order (expected " + std::to_string(g - 1) + ")");
    }
    table.entries.push_back(e);
  }
  if (table.layout == ImroLayout::kUhd1110) {
    if (table.uhd_groups.size() != 24) {
      ref.fail("type 1110 table has " + std::to_string(table.uhd_groups.size()) +
               " group entries, expected 24");
    }
    if (table.uhd_ap_gain <= 0 || table.uhd_lf_gain <= 0) ref.fail("gains must be positive");
  } else if (table.entries.size() != static_cast<std::size_t>(table.header_channels)) {
    ref.fail("header says " + std::to_string(table.header_channels) +
             " channels but the table has " + std::to_string(table.entries.size()) + " entries");
  }
  return table;
}

/// Expands a SpikeGLX "printer-like" list: "0:383,768".
std::vector<int> parse_channel_list(std::string_view value, const KeyRef& ref) {
  std::vector<int> out;
  for (std::string_view part : split(trim(value), ',')) {
    part = trim(part);
    const std::size_t colon = part.find(':');
    int lo = 0;
    int hi = 0;
    if (colon == std::string_view::npos) {
      if (!parse_number(part, lo)) ref.fail("'" + std::string(part) + "' is not a channel");
      hi = lo;
    } else if (!parse_number(part.substr(0, colon), lo) ||
               !parse_number(part.substr(colon + 1), hi)) {
      ref.fail("'" + std::string(part) + "' is not a channel range a:b");
    }
    if (lo < 0 || hi < lo || hi - lo > 100000) {
      ref.fail("bad channel range '" + std::string(part) + "'");
    }
    for (int c = lo; c <= hi; ++c) out.push_back(c);
  }
  return out;
}

std::vector<SpikeGlxChannel> parse_chan_map(std::string_view value, const KeyRef& ref) {
  const std::vector<std::string_view> groups = table_groups(value, ref);
  std::vector<SpikeGlxChannel> channels;
  channels.reserve(groups.size() - 1);
  for (std::size_t g = 1; g < groups.size(); ++g) {
    const std::string_view inner = groups[g];
    const std::size_t semi = inner.find(';');
    const std::size_t colon = inner.find(':', semi == std::string_view::npos ? 0 : semi);
    SpikeGlxChannel ch;
    if (semi == std::string_view::npos || colon == std::string_view::npos || semi == 0 ||
        !parse_number(inner.substr(semi + 1, colon - semi - 1), ch.acquired_index) ||
        !parse_number(inner.substr(colon + 1), ch.display_order)) {
      ref.fail(entry_label(g, inner) + ": expected (name;acquired:display)");
    }
    ch.name = std::string(inner.substr(0, semi));
    channels.push_back(std::move(ch));
  }
  return channels;
}

/// Geometry parameters for converting an old ~snsShankMap (shank:col:row:used) to µm.
/// Facts: SpikeGLX/ProbeTable geometry (even-row x offset, odd-row x offset, column pitch, row
/// pitch, shank pitch), measured in the same frame as ~snsGeomMap (x from the shank's left edge).
struct ShankMapGeometry {
  double even_x = 0;
  double odd_x = 0;
  double col_pitch = 0;
  double row_pitch = 0;
};

bool shank_map_geometry(int probe_type, ShankMapGeometry& g) {
  switch (probe_type) {
    case 0:  // NP1.0 and 3A/3B: staggered, 32 µm columns, 20 µm rows
    case 1200:
      g = {27, 11, 32, 20};
      return true;
    case 1020:  // NHP staggered, 125 µm shank. Approximation: the linear NHP variants (NP1022,
    case 1030:  // NP1032) may share these type codes; their part numbers would say so.
      g = {27, 11, 87, 20};
      return true;
    case 1300:
      g = {11, 11, 48, 20};
      return true;
    case 1100:
    case 1110:
      g = {14, 14, 6, 6};
      return true;
    case 1120:
    case 1122:
      g = {6.75, 6.75, 4.5, 4.5};
      return true;
    case 1121:
      g = {6.25, 6.25, 3, 3};
      return true;
    case 1123:
      g = {10.25, 10.25, 3, 3};
      return true;
    case 21:
    case 2003:
    case 24:
    case 2013:
    case 2020:  // quad-base assumed to share the NP2.0 4-shank site layout
      g = {27, 27, 32, 15};
      return true;
    default:
      return false;
  }
}

const std::string& require(const SpikeGlxMeta& meta, std::string_view key) {
  const std::string* value = meta.find(key);
  if (value == nullptr) {
    fail(meta.source, 0,
         "missing required key '" + std::string(key) + "' (" + std::to_string(meta.values.size()) +
             " keys read)");
  }
  return *value;
}

KeyRef ref_of(const SpikeGlxMeta& meta, std::string_view key) {
  const auto it = meta.lines.find(key);
  return KeyRef{meta.source, key, it == meta.lines.end() ? 0 : it->second};
}

template <typename T>
T number_of(const SpikeGlxMeta& meta, std::string_view key) {
  T out{};
  if (!parse_number(require(meta, key), out)) {
    ref_of(meta, key).fail("'" + require(meta, key) + "' is not a number");
  }
  return out;
}

template <typename T>
T number_or(const SpikeGlxMeta& meta, std::string_view key, T fallback) {
  if (meta.find(key) == nullptr || trim(*meta.find(key)).empty()) return fallback;
  return number_of<T>(meta, key);
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

void decode_counts(SpikeGlxMeta& meta) {
  std::size_t ap = 0;
  std::size_t lf = 0;
  std::size_t sy = 0;
  for (const SpikeGlxChannel& ch : meta.channels) {
    if (starts_with(ch.name, "AP")) {
      ++ap;
    } else if (starts_with(ch.name, "LF")) {
      ++lf;
    } else if (starts_with(ch.name, "SY")) {
      ++sy;
    }
  }
  if (const std::string* counts = meta.find("snsApLfSy")) {
    const KeyRef ref = ref_of(meta, "snsApLfSy");
    const std::vector<std::string_view> parts = split(*counts, ',');
    std::size_t v[3] = {0, 0, 0};
    if (parts.size() != 3 || !parse_number(parts[0], v[0]) || !parse_number(parts[1], v[1]) ||
        !parse_number(parts[2], v[2])) {
      ref.fail("'" + *counts + "' is not 'AP,LF,SY'");
    }
    if (v[0] + v[1] + v[2] != meta.saved_channels) {
      ref.fail(std::to_string(v[0]) + "+" + std::to_string(v[1]) + "+" + std::to_string(v[2]) +
               " channels disagree with nSavedChans=" + std::to_string(meta.saved_channels));
    }
    if (!meta.channels.empty() && (v[0] != ap || v[1] != lf || v[2] != sy)) {
      ref.fail("counts " + *counts + " disagree with ~snsChanMap (" + std::to_string(ap) + "," +
               std::to_string(lf) + "," + std::to_string(sy) + ")");
    }
    meta.ap_count = v[0];
    meta.lf_count = v[1];
    meta.sy_count = v[2];
  } else {
    meta.ap_count = ap;
    meta.lf_count = lf;
    meta.sy_count = sy;
  }
  // Stored order puts neural channels first and the SY word(s) last; ProbeInfo relies on it.
  for (std::size_t i = 0; i < meta.channels.size(); ++i) {
    const bool neural = i < meta.ap_count + meta.lf_count;
    const bool is_sy = starts_with(meta.channels[i].name, "SY");
    if (meta.type_this == "imec" && neural == is_sy) {
      ref_of(meta, "~snsChanMap")
          .fail("channel '" + meta.channels[i].name + "' at stored position " + std::to_string(i) +
                ": expected neural channels first and SY words last");
    }
  }
}

/// Index of the imro entry that acquired channel `acquired` (AP or LF) reads.
std::size_t imro_channel_of(const SpikeGlxMeta& meta, int acquired) {
  const std::size_t n = meta.imro->layout == ImroLayout::kUhd1110
                            ? 384
                            : static_cast<std::size_t>(meta.imro->header_channels);
  return static_cast<std::size_t>(acquired) % n;
}

void decode_geometry(SpikeGlxMeta& meta) {
  const std::size_t neural = meta.neural_channels();
  std::vector<Site> sites(neural);
  const std::string* geom = meta.find("~snsGeomMap");
  const std::string* shank = meta.find("~snsShankMap");
  if (geom != nullptr) {
    const KeyRef ref = ref_of(meta, "~snsGeomMap");
    const std::vector<std::string_view> groups = table_groups(*geom, ref);
    const std::vector<std::string_view> head = split(groups[0], ',');
    if (head.size() != 4)
      ref.fail("header '(" + std::string(groups[0]) + ")' is not (part,nShanks,pitch,width)");
    meta.geometry.model = std::string(trim(head[0]));
    if (groups.size() - 1 != neural) {
      ref.fail("has " + std::to_string(groups.size() - 1) + " entries but " +
               std::to_string(neural) + " neural channels are saved");
    }
    for (std::size_t i = 0; i < neural; ++i) {
      const std::vector<std::string_view> f = split(groups[i + 1], ':');
      double x = 0;
      double z = 0;
      int s = 0;
      int used = 0;
      if (f.size() != 4 || !parse_number(f[0], s) || !parse_number(f[1], x) ||
          !parse_number(f[2], z) || !parse_number(f[3], used)) {
        ref.fail(entry_label(i + 1, groups[i + 1]) + ": expected (shank:x:z:used)");
      }
      sites[i] = Site{x, z, s, -1};
    }
  } else if (shank != nullptr) {
    const KeyRef ref = ref_of(meta, "~snsShankMap");
    ShankMapGeometry g;
    if (!shank_map_geometry(meta.probe_type, g)) {
      ref.fail("no site pitch known for probe type " + std::to_string(meta.probe_type) +
               " to convert columns/rows to µm");
    }
    const std::vector<std::string_view> groups = table_groups(*shank, ref);
    if (groups.size() - 1 != neural) {
      ref.fail("has " + std::to_string(groups.size() - 1) + " entries but " +
               std::to_string(neural) + " neural channels are saved");
    }
    // Approximation: the shank map only gives (column, row) indices; the µm positions come from
    // the probe type's nominal pitch and stagger (x from the shank's left edge, z from the tip
    // row), matching ~snsGeomMap for the standard probes but not any per-part deviation.
    for (std::size_t i = 0; i < neural; ++i) {
      const std::vector<std::string_view> f = split(groups[i + 1], ':');
      int s = 0;
      int col = 0;
      int row = 0;
      int used = 0;
      if (f.size() != 4 || !parse_number(f[0], s) || !parse_number(f[1], col) ||
          !parse_number(f[2], row) || !parse_number(f[3], used)) {
        ref.fail(entry_label(i + 1, groups[i + 1]) + ": expected (shank:col:row:used)");
      }
      const double x = (row % 2 == 0 ? g.even_x : g.odd_x) + col * g.col_pitch;
      sites[i] = Site{x, row * g.row_pitch, s, -1};
    }
  } else if (meta.imro &&
             (meta.imro->layout == ImroLayout::kNp1 ||
              meta.imro->layout == ImroLayout::kNp1Phase3A) &&
             meta.probe_type == 0) {
    // LF files of older versions carry no map: NP1.0 electrode positions from the imro banks.
    for (std::size_t i = 0; i < neural; ++i) {
      const ImroEntry& e =
          meta.imro->entries[imro_channel_of(meta, meta.channels[i].acquired_index)];
      const int electrode = e.bank * 384 + e.channel;
      const int row = electrode / 2;
      sites[i] = Site{(row % 2 == 0 ? 27.0 : 11.0) + (electrode % 2) * 32.0, row * 20.0, 0, -1};
    }
  } else if (neural > 0) {
    fail(meta.source, 0,
         "no ~snsGeomMap or ~snsShankMap to place the " + std::to_string(neural) +
             " neural channels");
  }
  // Electrode indices from the imro table where the layout defines them.
  if (meta.imro) {
    for (std::size_t i = 0; i < neural; ++i) {
      const std::size_t k = imro_channel_of(meta, meta.channels[i].acquired_index);
      if (meta.imro->layout == ImroLayout::kUhd1110 || k >= meta.imro->entries.size()) continue;
      const ImroEntry& e = meta.imro->entries[k];
      sites[i].electrode =
          (meta.imro->layout == ImroLayout::kNp1 || meta.imro->layout == ImroLayout::kNp1Phase3A)
              ? e.bank * 384 + e.channel
              : e.electrode;
    }
  }
  if (meta.geometry.model.empty()) {
    meta.geometry.model = !meta.probe_part_number.empty() ? meta.probe_part_number
                          : meta.probe_type_present       ? "type" + std::to_string(meta.probe_type)
                                                          : "3A";
  }
  meta.geometry.sites = std::move(sites);
}

void decode_gains(SpikeGlxMeta& meta) {
  const std::size_t neural = meta.neural_channels();
  meta.microvolts_per_bit.assign(neural, 0.0);
  if (!meta.imro || neural == 0) return;
  const double volts_per_count = meta.ai_range_max / static_cast<double>(meta.max_int);
  for (std::size_t i = 0; i < neural; ++i) {
    const bool lf = starts_with(meta.channels[i].name, "LF");
    double gain = 0.0;
    if (has_fixed_gain_80(meta.imro->probe_type)) {
      gain = 80.0;
    } else if (meta.imro->layout == ImroLayout::kUhd1110) {
      gain = lf ? meta.imro->uhd_lf_gain : meta.imro->uhd_ap_gain;
    } else {
      const ImroEntry& e =
          meta.imro->entries[imro_channel_of(meta, meta.channels[i].acquired_index)];
      gain = lf ? e.lf_gain : e.ap_gain;
    }
    meta.microvolts_per_bit[i] = volts_per_count / gain * 1e6;
  }
}

std::string stream_name_of(const SpikeGlxMeta& meta) {
  // "<run>_g0_t0.imec0.ap.bin": the token after the first '.' of the file name ("imec0", "nidq").
  std::string file = meta.find("fileName") ? *meta.find("fileName") : meta.source;
  const std::size_t slash = file.find_last_of("/\\");
  if (slash != std::string::npos) file = file.substr(slash + 1);
  for (std::string_view token : split(file, '.')) {
    if (starts_with(token, "imec") || token == "nidq" || starts_with(token, "obx")) {
      return std::string(token);
    }
  }
  return meta.type_this;
}

}  // namespace

const std::string* SpikeGlxMeta::find(std::string_view key) const {
  const auto it = values.find(key);
  return it == values.end() ? nullptr : &it->second;
}

ProbeInfo SpikeGlxMeta::to_probe_info() const {
  ProbeInfo info;
  info.name = stream_name_of(*this);
  info.stored_channels = saved_channels;
  info.neural_channels = neural_channels();
  info.has_sync_word = sy_count > 0 && type_this == "imec";
  info.sample_rate_hz = sample_rate_hz;
  info.microvolts_per_bit = microvolts_per_bit.empty() ? 0.0 : microvolts_per_bit.front();
  info.geometry = geometry;
  return info;
}

SpikeGlxMeta parse_spikeglx_meta_text(std::string_view text, std::string_view source_name) {
  SpikeGlxMeta meta;
  meta.source = std::string(source_name);
  int line_number = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = trim(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_number;
    if (line.empty()) continue;
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      fail(meta.source, line_number,
           "expected 'key=value', found '" + std::string(line.substr(0, 60)) + "'");
    }
    const std::string key(trim(line.substr(0, eq)));
    if (meta.values.count(key) != 0) {
      fail(meta.source, line_number,
           "duplicate key '" + key + "' (first on line " + std::to_string(meta.lines[key]) + ")");
    }
    meta.values.emplace(key, std::string(line.substr(eq + 1)));
    meta.lines.emplace(key, line_number);
  }

  meta.type_this = require(meta, "typeThis");
  meta.saved_channels = number_of<std::size_t>(meta, "nSavedChans");
  if (meta.saved_channels == 0) ref_of(meta, "nSavedChans").fail("must be positive");
  const bool imec = meta.type_this == "imec";
  const std::string rate_key =
      imec ? "imSampRate" : (meta.type_this == "obx" ? "obSampRate" : "niSampRate");
  meta.sample_rate_hz = number_of<double>(meta, rate_key);
  if (!(meta.sample_rate_hz > 0.0) || !std::isfinite(meta.sample_rate_hz)) {
    ref_of(meta, rate_key).fail("sample rate must be positive");
  }
  meta.file_size_bytes = number_or<std::uint64_t>(meta, "fileSizeBytes", 0);
  meta.file_time_secs = number_or<double>(meta, "fileTimeSecs", 0.0);
  meta.first_sample = number_or<std::int64_t>(meta, "firstSample", 0);

  if (const std::string* map = meta.find("~snsChanMap")) {
    const KeyRef ref = ref_of(meta, "~snsChanMap");
    meta.channels = parse_chan_map(*map, ref);
    if (meta.channels.size() != meta.saved_channels) {
      ref.fail("lists " + std::to_string(meta.channels.size()) +
               " saved channels but nSavedChans=" + std::to_string(meta.saved_channels) +
               " (line " + std::to_string(meta.lines["nSavedChans"]) + ")");
    }
  } else if (imec) {
    require(meta, "~snsChanMap");
  }

  if (const std::string* subset = meta.find("snsSaveChanSubset")) {
    const KeyRef ref = ref_of(meta, "snsSaveChanSubset");
    if (trim(*subset) == "all") {
      meta.save_all = true;
    } else {
      meta.save_subset = parse_channel_list(*subset, ref);
      if (meta.save_subset.size() != meta.saved_channels) {
        ref.fail("names " + std::to_string(meta.save_subset.size()) +
                 " channels but nSavedChans=" + std::to_string(meta.saved_channels));
      }
      for (std::size_t i = 0; i < meta.channels.size(); ++i) {
        if (meta.channels[i].acquired_index != meta.save_subset[i]) {
          ref.fail("saved channel " + std::to_string(i) + " is acquired channel " +
                   std::to_string(meta.save_subset[i]) + " here but " +
                   std::to_string(meta.channels[i].acquired_index) + " in ~snsChanMap");
        }
      }
    }
  }

  if (imec) decode_counts(meta);
  if (!imec) return meta;  // nidq/obx: no probe, no imro, no sites.

  if (const std::string* type = meta.find("imDatPrb_type")) {
    meta.probe_type_present = true;
    if (!parse_number(*type, meta.probe_type)) {
      ref_of(meta, "imDatPrb_type").fail("'" + *type + "' is not an integer");
    }
  }
  if (const std::string* pn = meta.find("imDatPrb_pn")) meta.probe_part_number = *pn;
  meta.max_int = number_or<int>(meta, "imMaxInt", has_fixed_gain_80(meta.probe_type) ? 8192 : 512);
  if (meta.max_int <= 0) ref_of(meta, "imMaxInt").fail("must be positive");
  meta.ai_range_max = number_of<double>(meta, "imAiRangeMax");
  meta.ai_range_min = number_of<double>(meta, "imAiRangeMin");
  if (!(meta.ai_range_max > 0.0)) ref_of(meta, "imAiRangeMax").fail("must be positive");

  {
    const KeyRef ref = ref_of(meta, "~imroTbl");
    meta.imro = parse_imro(require(meta, "~imroTbl"), ref);
    if (meta.probe_type_present && meta.imro->probe_type != meta.probe_type &&
        meta.imro->layout != ImroLayout::kNp1Phase3A) {
      ref.fail("probe type " + std::to_string(meta.imro->probe_type) +
               " disagrees with imDatPrb_type=" + std::to_string(meta.probe_type));
    }
    for (std::size_t i = 0; i < meta.neural_channels(); ++i) {
      const int acq = meta.channels[i].acquired_index;
      const std::size_t n = meta.imro->layout == ImroLayout::kUhd1110
                                ? 384
                                : static_cast<std::size_t>(meta.imro->header_channels);
      if (acq < 0 || static_cast<std::size_t>(acq) >= 2 * n) {
        ref_of(meta, "~snsChanMap")
            .fail("channel '" + meta.channels[i].name + "' has acquired index " +
                  std::to_string(acq) + ", outside the " + std::to_string(n) +
                  "-channel imro table");
      }
    }
  }
  decode_geometry(meta);
  decode_gains(meta);
  return meta;
}

SpikeGlxMeta parse_spikeglx_meta(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open .meta file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(path.string() + ": read error");
  return parse_spikeglx_meta_text(text.str(), path.string());
}

std::filesystem::path spikeglx_meta_path_for(const std::filesystem::path& bin_path) {
  std::filesystem::path meta = bin_path;
  meta.replace_extension(".meta");
  return meta;
}

}  // namespace twinloop::drivers

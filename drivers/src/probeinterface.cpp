// probeinterface JSON reader (nlohmann_json stays private to this file).
#include "twinloop/drivers/probeinterface.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace twinloop::drivers {
namespace {

using nlohmann::json;

[[noreturn]] void fail(std::string_view source, const std::string& what) {
  throw std::runtime_error(std::string(source) + ": " + what);
}

int line_of_offset(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  return 1 +
         static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(offset), '\n'));
}

const json& member(const json& object, const char* key, std::string_view source,
                   const std::string& where) {
  if (!object.is_object()) fail(source, where + ": expected an object");
  const auto it = object.find(key);
  if (it == object.end()) fail(source, where + ": missing key '" + key + "'");
  return *it;
}

double as_number(const json& value, std::string_view source, const std::string& where) {
  if (!value.is_number()) fail(source, where + ": expected a number, found " + value.dump());
  return value.get<double>();
}

int parse_shank(const json& value, std::string_view source, const std::string& where) {
  if (value.is_number_integer()) return value.get<int>();
  if (value.is_string()) {
    const std::string s = value.get<std::string>();
    if (s.empty()) return 0;
    int out = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec == std::errc{} && ptr == s.data() + s.size()) return out;
  }
  fail(source, where + ": shank id " + value.dump() + " is not an integer");
}

int electrode_of(const json* ids, std::size_t i) {
  if (ids != nullptr && (*ids)[i].is_string()) {
    const std::string s = (*ids)[i].get<std::string>();
    const char* begin = s.data();
    const char* end = s.data() + s.size();
    while (begin != end && (*begin < '0' || *begin > '9')) ++begin;
    int out = 0;
    const auto [ptr, ec] = std::from_chars(begin, end, out);
    if (begin != end && ec == std::errc{} && ptr == end) return out;
  }
  return static_cast<int>(i);
}

}  // namespace

ProbeGeometry parse_probeinterface(std::string_view json_text, std::string_view source_name,
                                   std::size_t probe_index) {
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end());
  } catch (const json::parse_error& e) {
    throw std::runtime_error(
        std::string(source_name) + ":" +
        std::to_string(line_of_offset(json_text, e.byte == 0 ? 0 : e.byte - 1)) +
        ": malformed JSON: " + e.what());
  }
  const json& probes = member(root, "probes", source_name, "top level");
  if (!probes.is_array()) fail(source_name, "'probes' must be an array");
  if (probe_index >= probes.size()) {
    fail(source_name, "probe " + std::to_string(probe_index) + " requested but the file has " +
                          std::to_string(probes.size()));
  }
  const std::string where = "probes[" + std::to_string(probe_index) + "]";
  const json& probe = probes[probe_index];
  if (const auto units = probe.find("si_units");
      units != probe.end() && units->is_string() && units->get<std::string>() != "um") {
    fail(source_name, where + ": si_units '" + units->get<std::string>() + "' (only 'um' is read)");
  }
  const json& positions = member(probe, "contact_positions", source_name, where);
  if (!positions.is_array()) fail(source_name, where + ".contact_positions must be an array");
  const std::size_t n = positions.size();

  const json* shank_ids = nullptr;
  if (const auto it = probe.find("shank_ids"); it != probe.end()) {
    if (!it->is_array() || it->size() != n) {
      fail(source_name, where + ".shank_ids must be an array of " + std::to_string(n));
    }
    shank_ids = &*it;
  }
  const json* contact_ids = nullptr;
  if (const auto it = probe.find("contact_ids"); it != probe.end()) {
    if (!it->is_array() || it->size() != n) {
      fail(source_name, where + ".contact_ids must be an array of " + std::to_string(n));
    }
    contact_ids = &*it;
  }

  std::vector<Site> all(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string at = where + ".contact_positions[" + std::to_string(i) + "]";
    const json& p = positions[i];
    if (!p.is_array() || p.size() < 2) fail(source_name, at + ": expected [x, y]");
    all[i].x_um = as_number(p[0], source_name, at);
    all[i].z_um = as_number(p[1], source_name, at);
    all[i].shank =
        shank_ids != nullptr ? parse_shank((*shank_ids)[i], source_name, where + ".shank_ids") : 0;
    all[i].electrode = electrode_of(contact_ids, i);
  }

  ProbeGeometry geometry;
  if (const auto ann = probe.find("annotations"); ann != probe.end() && ann->is_object()) {
    if (const auto name = ann->find("model_name"); name != ann->end() && name->is_string()) {
      geometry.model = name->get<std::string>();
    }
  }
  const auto channels = probe.find("device_channel_indices");
  if (channels == probe.end() || channels->is_null()) {
    geometry.sites = std::move(all);
    return geometry;
  }
  if (!channels->is_array() || channels->size() != n) {
    fail(source_name, where + ".device_channel_indices must be an array of " + std::to_string(n));
  }
  std::vector<int> owner;  // device channel -> contact
  for (std::size_t i = 0; i < n; ++i) {
    const json& c = (*channels)[i];
    if (!c.is_number_integer()) {
      fail(source_name,
           where + ".device_channel_indices[" + std::to_string(i) + "] is not an integer");
    }
    const long long channel = c.get<long long>();
    if (channel < 0) continue;  // not connected
    if (channel >= static_cast<long long>(n)) {
      fail(source_name, where + ".device_channel_indices[" + std::to_string(i) +
                            "] = " + std::to_string(channel) + " exceeds the contact count");
    }
    if (owner.size() <= static_cast<std::size_t>(channel)) owner.resize(channel + 1, -1);
    if (owner[channel] >= 0) {
      fail(source_name, where + ": device channel " + std::to_string(channel) +
                            " wired to contacts " + std::to_string(owner[channel]) + " and " +
                            std::to_string(i));
    }
    owner[channel] = static_cast<int>(i);
  }
  for (std::size_t ch = 0; ch < owner.size(); ++ch) {
    if (owner[ch] < 0) {
      fail(source_name, where + ": device channel " + std::to_string(ch) +
                            " is wired to no contact (channels must be 0..N-1 without holes)");
    }
    geometry.sites.push_back(all[static_cast<std::size_t>(owner[ch])]);
  }
  return geometry;
}

ProbeGeometry load_probeinterface(const std::filesystem::path& path, std::size_t probe_index) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open probeinterface file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_probeinterface(text.str(), path.string(), probe_index);
}

}  // namespace twinloop::drivers

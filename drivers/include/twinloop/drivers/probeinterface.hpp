// probeinterface JSON -> ProbeGeometry: loads the probe descriptions SpikeInterface and the
// probeinterface_library publish (format facts: ../shared/data/FORMATS.md §4), e.g. NP1000.json.
//
// One call reads one probe of the file: every contact in file order, or, when the probe carries
// `device_channel_indices`, only the wired contacts ordered by device channel (site i = channel i;
// -1 means not connected). x/z come from contact_positions (µm; the file's (0,0) is the centre of
// the lower-left contact), shank from shank_ids (0 when absent), electrode from contact_ids
// ("e123" -> 123; else the contact's index). Not for the real-time path: file I/O, may throw.
// Thread safety: free functions on values; no shared state.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string_view>

#include "twinloop/drivers/probe_geometry.hpp"

namespace twinloop::drivers {

/// Loads probe `probe_index` of a probeinterface JSON file.
/// \throws std::runtime_error "path:line: what" for malformed JSON, and "path: probes[i]: what"
///         for a missing key, a wrong type, mismatched array lengths or a bad channel index.
[[nodiscard]] ProbeGeometry load_probeinterface(const std::filesystem::path& path,
                                                std::size_t probe_index = 0);
/// Same from text; `source_name` labels messages.
[[nodiscard]] ProbeGeometry parse_probeinterface(std::string_view json_text,
                                                 std::string_view source_name = "<json>",
                                                 std::size_t probe_index = 0);

}  // namespace twinloop::drivers

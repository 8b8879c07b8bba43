// Protocol loader: reads a YAML protocol, checks every field, and returns either a Protocol or
// the full list of what is wrong with it.
//
// Loading never throws for bad input and never stops at the first problem: it collects every
// diagnostic it can (unknown keys, missing fields, wrong types, out-of-range values, unsafe
// candidates or timing) and returns them sorted by position. A protocol that loads is safe to
// run as written: its candidates respect the safety limits and its timing respects the duty
// cycle and minimum onset interval. Reads files only; no shared state; thread safe. Not for the
// real-time path (allocates, parses).
//
//   auto result = twinloop::protocols::load_protocol_file("protocol.yaml");
//   if (!result.ok()) { std::cerr << format_diagnostics(result.diagnostics); return 2; }
//   const Protocol& protocol = *result.protocol;
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/diagnostic.hpp"
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::protocols {

/// Largest protocol file the loader reads (bounded read of operator input).
inline constexpr std::size_t kMaxProtocolBytes = 1U << 20;
/// Most candidates a stimulus space may hold (Cartesian product included).
inline constexpr std::size_t kMaxCandidates = 100000;

/// Either a Protocol (`protocol` set, `diagnostics` empty) or the reasons it was refused.
struct ProtocolLoadResult {
  std::optional<Protocol> protocol;
  std::vector<Diagnostic> diagnostics;

  [[nodiscard]] bool ok() const noexcept { return protocol.has_value(); }
};

/// \param[in] path protocol file; its string form is used as the file name in diagnostics.
/// \return the protocol, or diagnostics (including "file not found", "unreadable", too large).
/// \throws nothing for bad input (std::bad_alloc only).
[[nodiscard]] ProtocolLoadResult load_protocol_file(const std::filesystem::path& path,
                                                    const DesignerDefaults& defaults = {});

/// \param[in] text YAML text of the protocol.
/// \param[in] display_name file name to put in diagnostics and Protocol::source_name.
/// \param[in] defaults what settings the text leaves out become: this build's, or for a
///   protocol on a session's record the ones that session ran with.
/// \return the protocol, or diagnostics.
/// \throws nothing for bad input (std::bad_alloc only).
[[nodiscard]] ProtocolLoadResult load_protocol_text(std::string_view text,
                                                    std::string_view display_name,
                                                    const DesignerDefaults& defaults = {});

}  // namespace twinloop::protocols

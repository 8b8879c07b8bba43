// Internal: reading a yaml-cpp node tree while collecting diagnostics.
//
// Checker owns the diagnostic list for one load and knows the source text (to tell an explicit
// `null` from an empty value). Field is a node plus its field path and 1-based location. MapView
// checks a mapping once (is a map, no duplicate keys, no unknown keys) and then hands out its
// fields. The typed readers report what they refuse and return nullopt; they never throw.
// Private to the protocols library: yaml-cpp stays out of the public headers.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "twinloop/protocols/diagnostic.hpp"

namespace twinloop::protocols::internal {

/// 1-based position; {0, 0} = the whole file.
struct Location {
  int line = 0;
  int column = 0;
};

/// A node, where it sits in the document (dotted path) and where it is in the text.
struct Field {
  YAML::Node node;
  std::string path;
  Location where;
};

/// Closed or open bounds for a number; infinities mean unbounded.
struct NumberRange {
  double lo;
  double hi;
  bool lo_open = false;
  bool hi_open = false;

  [[nodiscard]] bool contains(double v) const noexcept;
  [[nodiscard]] std::string describe(std::string_view noun) const;
};

/// Shortest text that reads back as the same double ("0.5", "22.5", "1e-06").
[[nodiscard]] std::string format_number(double value);
/// Four significant digits, for derived quantities ("0.6667").
[[nodiscard]] std::string format_rounded(double value);
/// "a.b" or "b" when the parent path is empty.
[[nodiscard]] std::string join_path(std::string_view parent, std::string_view key);
/// [A-Za-z_][A-Za-z0-9_]*
[[nodiscard]] bool is_identifier(std::string_view text) noexcept;

class Checker {
 public:
  Checker(std::string_view file, std::string_view text) : file_(file), text_(text) {}

  void error(Location where, std::string path, std::string found, std::string expected);
  [[nodiscard]] Location location(const YAML::Node& node) const;
  /// Words for what a node holds: its scalar text, "a list", "a map", "nothing".
  [[nodiscard]] std::string describe(const YAML::Node& node) const;
  /// Scalar text of a node, treating an explicit `null`/`~` token as that text.
  [[nodiscard]] std::optional<std::string> scalar_text(const YAML::Node& node) const;
  [[nodiscard]] std::size_t error_count() const noexcept { return diagnostics_.size(); }
  [[nodiscard]] std::vector<Diagnostic> take_sorted();

  [[nodiscard]] std::optional<double> number(const Field& field, const NumberRange& range);
  [[nodiscard]] std::optional<std::int64_t> integer(const Field& field, std::int64_t lo,
                                                    std::int64_t hi);
  /// A non-empty string; with `identifier`, also [A-Za-z_][A-Za-z0-9_]*.
  [[nodiscard]] std::optional<std::string> string(const Field& field, bool identifier = false);
  /// One of `words`; returns its index.
  [[nodiscard]] std::optional<std::size_t> choice(const Field& field,
                                                  std::span<const std::string_view> words);
  /// The items of a list (paths "x[i]"); nullopt (reported) when the node is not a list.
  [[nodiscard]] std::optional<std::vector<Field>> list(const Field& field,
                                                       std::string_view expected);

 private:
  std::string file_;
  std::string_view text_;
  std::vector<Diagnostic> diagnostics_;
};

/// One mapping, checked on construction.
class MapView {
 public:
  /// \param[in] allowed keys accepted; every other key is reported. With `open_keys` any key is
  ///            accepted (free maps such as the stimulus space); keys must still be unique.
  MapView(Checker& checker, const Field& map, std::span<const std::string_view> allowed,
          std::string_view expected, bool open_keys = false);

  [[nodiscard]] bool is_map() const noexcept { return is_map_; }
  [[nodiscard]] const Field& self() const noexcept { return self_; }
  [[nodiscard]] std::optional<Field> get(std::string_view key) const;
  /// Like get(), but reports a missing key at the map's location.
  [[nodiscard]] std::optional<Field> require(std::string_view key, std::string_view expected);
  /// Accepted entries in document order: key text, key location, value field.
  struct Entry {
    std::string key;
    Location key_where;
    Field value;
  };
  [[nodiscard]] const std::vector<Entry>& entries() const noexcept { return entries_; }

 private:
  Checker& checker_;
  Field self_;
  bool is_map_ = false;
  std::vector<Entry> entries_;
};

}  // namespace twinloop::protocols::internal

// Typed, diagnosing reads of yaml-cpp nodes (see yaml_checker.hpp).
#include "yaml_checker.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace twinloop::protocols::internal {
namespace {

constexpr std::size_t kMaxQuoted = 40;

std::string shorten(std::string_view text) {
  if (text.size() <= kMaxQuoted) return std::string(text);
  return std::string(text.substr(0, kMaxQuoted)) + "...";
}

bool is_plain(const YAML::Node& node) {
  return node.Tag() != "!";
}

std::optional<double> parse_double(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return std::nullopt;
  double value = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return std::nullopt;
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string one_of(std::span<const std::string_view> words) {
  std::string out = "one of ";
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += ", ";
    out += words[i];
  }
  return out;
}

}  // namespace

bool NumberRange::contains(double v) const noexcept {
  const bool above = lo_open ? v > lo : v >= lo;
  const bool below = hi_open ? v < hi : v <= hi;
  return above && below;
}

std::string NumberRange::describe(std::string_view noun) const {
  std::string out(noun);
  const bool lo_bounded = std::isfinite(lo);
  const bool hi_bounded = std::isfinite(hi);
  if (lo_bounded && hi_bounded) {
    out += " in ";
    out += lo_open ? "(" : "[";
    out += format_number(lo) + ", " + format_number(hi);
    out += hi_open ? ")" : "]";
  } else if (lo_bounded) {
    out += (lo_open ? " > " : " >= ") + format_number(lo);
  } else if (hi_bounded) {
    out += (hi_open ? " < " : " <= ") + format_number(hi);
  }
  return out;
}

std::string format_number(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

std::string format_rounded(double value) {
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::general, 4);
  return std::string(buffer, result.ptr);
}

std::string join_path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  std::string out(parent);
  out += '.';
  out += key;
  return out;
}

bool is_identifier(std::string_view text) noexcept {
  if (text.empty()) return false;
  const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(text.front()) && text.front() != '_') return false;
  return std::all_of(text.begin(), text.end(),
                     [&](char c) { return alpha(c) || (c >= '0' && c <= '9') || c == '_'; });
}

void Checker::error(Location where, std::string path, std::string found, std::string expected) {
  diagnostics_.push_back(Diagnostic{file_, where.line, where.column, std::move(path),
                                    std::move(found), std::move(expected)});
}

Location Checker::location(const YAML::Node& node) const {
  if (!node.IsDefined()) return {};
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return {};
  return {mark.line + 1, mark.column + 1};
}

std::optional<std::string> Checker::scalar_text(const YAML::Node& node) const {
  if (!node.IsDefined()) return std::nullopt;
  if (node.IsScalar()) return node.Scalar();
  if (!node.IsNull()) return std::nullopt;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.pos < 0 || static_cast<std::size_t>(mark.pos) >= text_.size()) {
    return std::nullopt;
  }
  const std::string_view rest = text_.substr(static_cast<std::size_t>(mark.pos));
  for (const std::string_view token : {"null", "Null", "NULL", "~"}) {
    if (rest.substr(0, token.size()) != token) continue;
    const std::string_view after = rest.substr(token.size());
    if (after.empty() ||
        std::string_view(" \t\r\n,]}#").find(after.front()) != std::string_view::npos) {
      return std::string(token);
    }
  }
  return std::nullopt;
}

std::string Checker::describe(const YAML::Node& node) const {
  if (!node.IsDefined()) return "nothing";
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      if (!is_plain(node)) return "the quoted string \"" + shorten(node.Scalar()) + "\"";
      return shorten(node.Scalar());
    default: {
      const auto text = scalar_text(node);
      return text ? *text : "nothing";
    }
  }
}

std::vector<Diagnostic> Checker::take_sorted() {
  std::stable_sort(diagnostics_.begin(), diagnostics_.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  return std::move(diagnostics_);
}

std::optional<double> Checker::number(const Field& field, const NumberRange& range) {
  const std::string expected = range.describe("a number");
  if (!field.node.IsScalar() || !is_plain(field.node)) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  const auto value = parse_double(field.node.Scalar());
  if (!value || !range.contains(*value)) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  return value;
}

std::optional<std::int64_t> Checker::integer(const Field& field, std::int64_t lo, std::int64_t hi) {
  std::string expected = "an integer";
  if (hi == std::numeric_limits<std::int64_t>::max()) {
    expected += " >= " + std::to_string(lo);
  } else {
    expected += " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  }
  if (!field.node.IsScalar() || !is_plain(field.node)) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  const auto value = parse_int(field.node.Scalar());
  if (!value || *value < lo || *value > hi) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> Checker::string(const Field& field, bool identifier) {
  const char* expected = identifier ? "a name made of letters, digits and _ (not starting "
                                      "with a digit)"
                                    : "a non-empty string";
  if (!field.node.IsScalar() || field.node.Scalar().empty()) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  if (identifier && !is_identifier(field.node.Scalar())) {
    error(field.where, field.path, describe(field.node), expected);
    return std::nullopt;
  }
  return field.node.Scalar();
}

std::optional<std::size_t> Checker::choice(const Field& field,
                                           std::span<const std::string_view> words) {
  const auto text = scalar_text(field.node);
  if (text) {
    for (std::size_t i = 0; i < words.size(); ++i) {
      if (*text == words[i]) return i;
    }
  }
  error(field.where, field.path, describe(field.node), one_of(words));
  return std::nullopt;
}

std::optional<std::vector<Field>> Checker::list(const Field& field, std::string_view expected) {
  if (!field.node.IsSequence()) {
    error(field.where, field.path, describe(field.node), std::string(expected));
    return std::nullopt;
  }
  std::vector<Field> items;
  items.reserve(field.node.size());
  std::size_t index = 0;
  for (const auto& item : field.node) {
    const Location where = location(item);
    items.push_back(Field{item, field.path + "[" + std::to_string(index) + "]",
                          where.line > 0 ? where : field.where});
    ++index;
  }
  return items;
}

MapView::MapView(Checker& checker, const Field& map, std::span<const std::string_view> allowed,
                 std::string_view expected, bool open_keys)
    : checker_(checker), self_(map) {
  if (!map.node.IsMap()) {
    checker_.error(map.where, map.path, checker_.describe(map.node), std::string(expected));
    return;
  }
  is_map_ = true;
  for (auto it = map.node.begin(); it != map.node.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    const Location key_where = checker_.location(key);
    if (!key.IsScalar()) {
      checker_.error(key_where, map.path, checker_.describe(key) + " as a key", "a plain key name");
      continue;
    }
    const std::string& name = key.Scalar();
    const std::string path = join_path(map.path, name);
    if (!open_keys && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string hint = one_of(allowed);
      std::size_t best = 3;
      std::string_view guess;
      for (const auto word : allowed) {
        const std::size_t distance = edit_distance(name, word);
        if (distance < best) {
          best = distance;
          guess = word;
        }
      }
      if (!guess.empty()) hint += " (did you mean \"" + std::string(guess) + "\"?)";
      checker_.error(key_where, path, "unknown key \"" + shorten(name) + "\"", hint);
      continue;
    }
    const auto previous = std::find_if(entries_.begin(), entries_.end(),
                                       [&](const Entry& entry) { return entry.key == name; });
    if (previous != entries_.end()) {
      checker_.error(
          key_where, path, "duplicate key \"" + shorten(name) + "\"",
          "each key once (first given at line " + std::to_string(previous->key_where.line) + ")");
      continue;
    }
    // An empty value (`key:` then a newline) has the mark of the next token; point at the key.
    Location value_where = checker_.location(value);
    if (value.IsNull() && (value_where.line != key_where.line || value_where.line == 0)) {
      value_where = key_where;
    }
    entries_.push_back(Entry{name, key_where, Field{value, path, value_where}});
  }
}

std::optional<Field> MapView::get(std::string_view key) const {
  for (const auto& entry : entries_) {
    if (entry.key == key) return entry.value;
  }
  return std::nullopt;
}

std::optional<Field> MapView::require(std::string_view key, std::string_view expected) {
  auto field = get(key);
  if (!field && is_map_) {
    checker_.error(self_.where, join_path(self_.path, key), "nothing (the key is missing)",
                   std::string(expected) + " (required)");
  }
  return field;
}

}  // namespace twinloop::protocols::internal

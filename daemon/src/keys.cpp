#include "twinloop/daemon/keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "twinloop/daemon/commands.hpp"

namespace twinloop::daemon {
namespace {

// Key files are a few lines; anything much larger is not a key file and is not read whole.
constexpr std::uintmax_t kMaxKeyFileBytes = 1U << 20;

std::string read_text(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    throw KeyFileError(path.string() + ": cannot read: " + ec.message());
  }
  if (size > kMaxKeyFileBytes) {
    throw KeyFileError(path.string() + ": too large for a key file (" + std::to_string(size) +
                       " bytes)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw KeyFileError(path.string() + ": cannot open");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\r';
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

struct KeyLine {
  int line = 0;
  std::string_view key;   // first word
  std::string_view rest;  // the remainder, trimmed
};

// The lines that are not blank or comments, split into first word and remainder.
std::vector<KeyLine> key_lines(std::string_view text) {
  std::vector<KeyLine> lines;
  int number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view raw = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    const std::string_view line = trim(raw);
    if (line.empty()) continue;
    std::size_t word_end = 0;
    while (word_end < line.size() && !is_blank(line[word_end])) ++word_end;
    const std::string_view word = line.substr(0, word_end);
    // '#' is a Z85 digit, so a whole key may start with it; anything else starting with '#' is a
    // comment.
    if (word.front() == '#' && !is_z85_key(word)) continue;
    lines.push_back({number, word, trim(line.substr(word_end))});
  }
  return lines;
}

std::string where(std::string_view file, int line) {
  return std::string(file) + ":" + std::to_string(line) + ": ";
}

// Printable for an error message: keys are short, but a wrong line may be anything.
std::string shown(std::string_view word) {
  constexpr std::size_t kMaxShown = 48;
  std::string out;
  for (const char c : word.substr(0, kMaxShown)) {
    out +=
        (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) ? '?' : c;
  }
  if (word.size() > kMaxShown) out += "...";
  return "'" + out + "'";
}

std::string key_problem(std::string_view word) {
  if (word.size() != kZ85KeyLength) {
    return "found " + shown(word) + " (" + std::to_string(word.size()) +
           " characters), expected a 40-character Z85 CURVE key";
  }
  return "found " + shown(word) + ", expected a Z85 CURVE key (characters outside Z85)";
}

// The one key line of a key file.
KeyLine single_key(const std::filesystem::path& path, std::string_view text) {
  const std::vector<KeyLine> lines = key_lines(text);
  const std::string file = path.string();
  if (lines.empty()) {
    throw KeyFileError(file + ": no key found (only comments or blank lines)");
  }
  if (lines.size() > 1) {
    throw KeyFileError(where(file, lines[1].line) + "a key file holds one key; found another line");
  }
  if (!is_z85_key(lines[0].key)) {
    throw KeyFileError(where(file, lines[0].line) + key_problem(lines[0].key));
  }
  return lines[0];
}

// Creates (or, with `force`, truncates) `path` with `mode` and writes `text`; mode is applied
// with fchmod too, since open() honours it only on creation and masks it with the umask.
bool write_file(const std::filesystem::path& path, const std::string& text, mode_t mode,
                bool force) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) {
    std::fprintf(stderr, "%s: cannot create: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  ok = (::fsync(fd) == 0) && ok;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    std::fprintf(stderr, "%s: cannot write: %s\n", path.c_str(), std::strerror(errno));
  }
  return ok;
}

}  // namespace

bool is_z85_key(std::string_view text) noexcept {
  if (text.size() != kZ85KeyLength) return false;
  static constexpr std::string_view kZ85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  for (const char c : text) {
    if (kZ85.find(c) == std::string_view::npos) return false;
  }
  // Every 5 Z85 digits are a base-85 number that must fit 32 bits; zmq_z85_decode checks it.
  std::array<char, kZ85KeyLength + 1> z85{};
  std::memcpy(z85.data(), text.data(), kZ85KeyLength);
  std::array<std::uint8_t, 32> key{};
  return zmq_z85_decode(key.data(), z85.data()) != nullptr;
}

Keypair generate_keypair() {
  if (zmq_has("curve") == 0) {
    throw std::runtime_error("this libzmq was built without CURVE support");
  }
  std::array<char, kZ85KeyLength + 1> pub{};
  std::array<char, kZ85KeyLength + 1> sec{};
  do {
    if (zmq_curve_keypair(pub.data(), sec.data()) != 0) {
      throw std::runtime_error(std::string("zmq_curve_keypair: ") + zmq_strerror(zmq_errno()));
    }
  } while (pub[0] == '#');
  return {std::string(pub.data()), std::string(sec.data())};
}

int keygen(const KeygenOptions& options) {
  if (options.out_prefix.empty()) {
    std::fputs("keygen: an output prefix is required\n", stderr);
    return kExitUsage;
  }
  const std::filesystem::path secret_path = options.out_prefix.string() + ".key_secret";
  const std::filesystem::path public_path = options.out_prefix.string() + ".key";
  if (!options.force) {
    bool exists = false;
    for (const auto& path : {secret_path, public_path}) {
      std::error_code ec;
      if (std::filesystem::symlink_status(path, ec).type() !=
          std::filesystem::file_type::not_found) {
        std::fprintf(stderr, "%s: exists; refusing to overwrite (use --force)\n", path.c_str());
        exists = true;
      }
    }
    if (exists) return kExitRefused;
  }
  Keypair pair;
  try {
    pair = generate_keypair();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keygen: %s\n", e.what());
    return kExitRefused;
  }
  const std::string name = options.out_prefix.filename().string();
  const std::string secret_text =
      "# twinloop CURVE secret key (Z85). Keep it private: whoever holds it is '" + name + "'.\n" +
      pair.secret_key + "\n";
  const std::string public_text =
      "# twinloop CURVE public key (Z85) and name; append this line to an allow-list.\n" +
      pair.public_key + " " + name + "\n";
  // Secret first: a public key without its secret is useless, the reverse is recoverable.
  if (!write_file(secret_path, secret_text, S_IRUSR | S_IWUSR, options.force)) {
    return kExitRefused;
  }
  if (!write_file(public_path, public_text, S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH, options.force)) {
    return kExitRefused;
  }
  std::printf("secret key: %s\npublic key: %s\n%s\n", secret_path.c_str(), public_path.c_str(),
              pair.public_key.c_str());
  return kExitOk;
}

Keypair load_keypair(const std::filesystem::path& secret_file) {
  const std::string text = read_text(secret_file);
  const KeyLine line = single_key(secret_file, text);
  if (!line.rest.empty()) {
    throw KeyFileError(where(secret_file.string(), line.line) +
                       "unexpected text after the secret key");
  }
  Keypair pair;
  pair.secret_key = std::string(line.key);
  std::array<char, kZ85KeyLength + 1> pub{};
  if (zmq_curve_public(pub.data(), pair.secret_key.c_str()) != 0) {
    throw KeyFileError(where(secret_file.string(), line.line) +
                       "cannot derive the public key: " + zmq_strerror(zmq_errno()));
  }
  pair.public_key = pub.data();
  return pair;
}

std::string load_public_key(const std::filesystem::path& public_file) {
  const std::string text = read_text(public_file);
  return std::string(single_key(public_file, text).key);
}

std::vector<AllowedKey> parse_allow_list(std::string_view text, std::string_view display_name) {
  std::vector<AllowedKey> keys;
  std::string errors;
  std::set<std::string_view> seen;
  for (const KeyLine& line : key_lines(text)) {
    if (!is_z85_key(line.key)) {
      errors += where(display_name, line.line) + key_problem(line.key) + "\n";
      continue;
    }
    if (!seen.insert(line.key).second) {
      errors += where(display_name, line.line) + "duplicate key " + shown(line.key) + "\n";
      continue;
    }
    AllowedKey key;
    key.public_key = std::string(line.key);
    key.name = line.rest.empty() ? key.public_key : std::string(line.rest);
    key.line = line.line;
    keys.push_back(std::move(key));
  }
  if (!errors.empty()) {
    errors.pop_back();
    throw KeyFileError(errors);
  }
  return keys;
}

std::vector<AllowedKey> load_allow_list(const std::filesystem::path& file) {
  const std::string text = read_text(file);
  return parse_allow_list(text, file.string());
}

}  // namespace twinloop::daemon

// Test helpers: temp directories and small SpikeGLX .bin fixtures shaped from the real .meta files
// in ../shared/data/spikeglx_meta/ (written at test time, never committed).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace twinloop::drivers::testing_fixtures {

inline std::filesystem::path real_meta(const std::string& name) {
  return std::filesystem::path(TWINLOOP_SHARED_DATA) / "spikeglx_meta" / name;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

/// A fresh, unique directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("twinloop_" + tag + "_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Replaces the value of `key=` (whole line) in meta text; appends it if absent.
inline std::string set_key(std::string text, const std::string& key, const std::string& value) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, key.size() + 1, key + "=") == 0) {
      std::size_t value_end = end;
      if (value_end > pos && text[value_end - 1] == '\r') --value_end;
      text.replace(pos + key.size() + 1, value_end - pos - key.size() - 1, value);
      return text;
    }
    pos = end + 1;
  }
  if (!text.empty() && text.back() != '\n') text += '\n';
  return text + key + "=" + value + "\n";
}

/// 1-based line on which `key=` starts.
inline int line_of(const std::string& text, const std::string& key) {
  int line = 1;
  std::size_t pos = 0;
  while (pos < text.size()) {
    if (text.compare(pos, key.size() + 1, key + "=") == 0) return line;
    const std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;
    pos = end + 1;
    ++line;
  }
  return -1;
}

/// Known test signal: distinct per row and channel, wraps within int16.
inline std::int16_t pattern(std::uint64_t row, std::size_t channel) {
  return static_cast<std::int16_t>(static_cast<std::uint16_t>(row * 7919u + channel * 131u + 17u));
}

/// Writes `<dir>/<stem>.bin` with `rows` rows of `channels` words (pattern()), plus `<stem>.meta`
/// copied from a real meta with fileSizeBytes/fileTimeSecs patched to `meta_rows` rows.
inline std::filesystem::path make_fixture(const std::filesystem::path& dir, const std::string& stem,
                                          const std::string& real_meta_name, std::size_t channels,
                                          double rate_hz, std::uint64_t rows,
                                          std::uint64_t meta_rows, std::size_t extra_bytes = 0) {
  std::string meta = read_text(real_meta(real_meta_name));
  const std::uint64_t size = meta_rows * channels * 2;
  meta = set_key(meta, "fileSizeBytes", std::to_string(size));
  std::ostringstream secs;
  secs.precision(17);
  secs << static_cast<double>(meta_rows) / rate_hz;
  meta = set_key(meta, "fileTimeSecs", secs.str());
  const std::filesystem::path bin = dir / (stem + ".bin");
  write_text(dir / (stem + ".meta"), meta);
  std::vector<std::int16_t> data(rows * channels);
  for (std::uint64_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < channels; ++c) data[r * channels + c] = pattern(r, c);
  }
  std::ofstream out(bin, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size() * sizeof(std::int16_t)));
  const std::string tail(extra_bytes, '\x01');
  out << tail;
  return bin;
}

}  // namespace twinloop::drivers::testing_fixtures

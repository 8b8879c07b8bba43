#include "twinloop/drivers/npy.hpp"

#include <cstring>
#include <fstream>
#include <stdexcept>

namespace twinloop::drivers {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLength = 6;

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += std::to_string(shape[i]);
    text += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
    if (i + 1 < shape.size()) text += " ";
  }
  return text + ")";
}

void write_raw(const std::filesystem::path& path, const char* descr,
               const std::vector<std::size_t>& shape, const void* data, std::size_t bytes) {
  std::string header = "{'descr': '" + std::string(descr) +
                       "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // Total of magic(6) + version(2) + length(2) + header must be a multiple of 64.
  const std::size_t unpadded = kMagicLength + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path.string() + ": cannot open for writing");
  out.write(kMagic, kMagicLength);
  const unsigned char version[2] = {1, 0};
  out.write(reinterpret_cast<const char*>(version), 2);
  const std::uint16_t length = static_cast<std::uint16_t>(header.size());
  const unsigned char length_le[2] = {static_cast<unsigned char>(length & 0xff),
                                      static_cast<unsigned char>(length >> 8)};
  out.write(reinterpret_cast<const char*>(length_le), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

template <typename T>
void write_1d(const std::filesystem::path& path, const char* descr, std::span<const T> values) {
  write_raw(path, descr, {values.size()}, values.data(), values.size_bytes());
}

struct Parsed {
  NpyArray header;
  std::vector<char> data;
};

std::string dict_value(const std::string& header, const std::string& key,
                       const std::filesystem::path& path) {
  const std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos)
    throw std::runtime_error(path.string() + ": npy header lacks " + key);
  std::size_t colon = header.find(':', at);
  std::size_t start = header.find_first_not_of(' ', colon + 1);
  std::size_t end = header[start] == '('    ? header.find(')', start) + 1
                    : header[start] == '\'' ? header.find('\'', start + 1) + 1
                                            : header.find(',', start);
  return header.substr(start, end - start);
}

Parsed read_raw(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  char magic[kMagicLength];
  unsigned char version[2];
  in.read(magic, kMagicLength);
  in.read(reinterpret_cast<char*>(version), 2);
  if (!in || std::memcmp(magic, kMagic, kMagicLength) != 0) {
    throw std::runtime_error(path.string() + ": not a .npy file (bad magic)");
  }
  std::size_t header_length = 0;
  if (version[0] == 1) {
    unsigned char len[2];
    in.read(reinterpret_cast<char*>(len), 2);
    header_length = len[0] | (static_cast<std::size_t>(len[1]) << 8);
  } else {
    unsigned char len[4];
    in.read(reinterpret_cast<char*>(len), 4);
    header_length =
        len[0] | (len[1] << 8) | (len[2] << 16) | (static_cast<std::size_t>(len[3]) << 24);
  }
  std::string header(header_length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_length));
  if (!in) throw std::runtime_error(path.string() + ": truncated npy header");
  Parsed parsed;
  std::string descr = dict_value(header, "descr", path);
  parsed.header.dtype = descr.substr(1, descr.size() - 2);
  if (dict_value(header, "fortran_order", path) != "False") {
    throw std::runtime_error(path.string() + ": Fortran-order arrays are not supported");
  }
  std::string shape = dict_value(header, "shape", path);
  std::size_t pos = 1;
  while (pos < shape.size()) {
    std::size_t next = shape.find_first_of(",)", pos);
    std::string item = shape.substr(pos, next - pos);
    if (item.find_first_not_of(' ') != std::string::npos) {
      parsed.header.shape.push_back(std::stoull(item));
    }
    pos = next + 1;
  }
  std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  parsed.data = std::move(data);
  return parsed;
}

std::size_t element_count(const NpyArray& header) {
  std::size_t n = 1;
  for (std::size_t d : header.shape) n *= d;
  return n;
}

template <typename Out>
std::vector<Out> convert(const Parsed& parsed, const std::filesystem::path& path,
                         bool allow_float) {
  const std::string& t = parsed.header.dtype;
  const std::size_t n = element_count(parsed.header);
  std::vector<Out> out(n);
  auto take = [&](auto tag) {
    using T = decltype(tag);
    if (parsed.data.size() < n * sizeof(T)) {
      throw std::runtime_error(path.string() + ": data shorter than its shape says");
    }
    for (std::size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, parsed.data.data() + i * sizeof(T), sizeof(T));
      out[i] = static_cast<Out>(v);
    }
  };
  if (t == "<i8")
    take(std::int64_t{});
  else if (t == "<u8")
    take(std::uint64_t{});
  else if (t == "<i4")
    take(std::int32_t{});
  else if (t == "<u4")
    take(std::uint32_t{});
  else if (t == "<i2")
    take(std::int16_t{});
  else if (t == "<u2")
    take(std::uint16_t{});
  else if (t == "|i1")
    take(std::int8_t{});
  else if (t == "|u1" || t == "|b1")
    take(std::uint8_t{});
  else if (allow_float && t == "<f8")
    take(double{});
  else if (allow_float && t == "<f4")
    take(float{});
  else
    throw std::runtime_error(path.string() + ": unsupported dtype '" + t + "'");
  return out;
}

}  // namespace

void write_npy(const std::filesystem::path& p, std::span<const std::int64_t> v) {
  write_1d(p, "<i8", v);
}
void write_npy(const std::filesystem::path& p, std::span<const std::uint64_t> v) {
  write_1d(p, "<u8", v);
}
void write_npy(const std::filesystem::path& p, std::span<const std::int32_t> v) {
  write_1d(p, "<i4", v);
}
void write_npy(const std::filesystem::path& p, std::span<const std::uint32_t> v) {
  write_1d(p, "<u4", v);
}
void write_npy(const std::filesystem::path& p, std::span<const float> v) {
  write_1d(p, "<f4", v);
}
void write_npy(const std::filesystem::path& p, std::span<const double> v) {
  write_1d(p, "<f8", v);
}

void write_npy_2d(const std::filesystem::path& path, std::span<const float> values,
                  std::size_t rows) {
  if (rows == 0 || values.size() % rows != 0) {
    throw std::invalid_argument(path.string() + ": values do not divide into rows");
  }
  write_raw(path, "<f4", {rows, values.size() / rows}, values.data(), values.size_bytes());
}

std::vector<std::int64_t> read_npy_int64(const std::filesystem::path& path, NpyArray* header) {
  Parsed parsed = read_raw(path);
  if (header) *header = parsed.header;
  return convert<std::int64_t>(parsed, path, false);
}

std::vector<double> read_npy_double(const std::filesystem::path& path, NpyArray* header) {
  Parsed parsed = read_raw(path);
  if (header) *header = parsed.header;
  return convert<double>(parsed, path, true);
}

}  // namespace twinloop::drivers

// NumPy .npy files (format version 1.0), 1-D and 2-D little-endian arrays: the layout Phy and
// Kilosort use for spike_times.npy / spike_clusters.npy, readable by numpy.load unchanged.
//
// Format facts from NumPy's "NEP 1 / numpy.lib.format" description: magic "\x93NUMPY", version
// bytes, a little-endian uint16 header length, an ASCII dict header padded with spaces to a
// multiple of 64 bytes (16 in old versions) and ended by '\n', then the raw C-order data.
// Not for the real-time path (file I/O, may throw std::runtime_error naming the file).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace twinloop::drivers {

void write_npy(const std::filesystem::path& path, std::span<const std::int64_t> values);
void write_npy(const std::filesystem::path& path, std::span<const std::uint64_t> values);
void write_npy(const std::filesystem::path& path, std::span<const std::int32_t> values);
void write_npy(const std::filesystem::path& path, std::span<const std::uint32_t> values);
void write_npy(const std::filesystem::path& path, std::span<const float> values);
void write_npy(const std::filesystem::path& path, std::span<const double> values);
/// 2-D array, C order, `rows` x (values.size() / rows).
void write_npy_2d(const std::filesystem::path& path, std::span<const float> values,
                  std::size_t rows);

/// A loaded array: shape and values converted to int64 or double (whichever was asked).
struct NpyArray {
  std::string dtype;  ///< numpy descr, e.g. "<i8"
  std::vector<std::size_t> shape;
};

/// Reads a 1-D or 2-D integer array (any of <i1 <i2 <i4 <i8 <u1 <u2 <u4 <u8, |b1), widened.
[[nodiscard]] std::vector<std::int64_t> read_npy_int64(const std::filesystem::path& path,
                                                       NpyArray* header = nullptr);
/// Reads a 1-D or 2-D float array (<f4, <f8) or an integer one, as double.
[[nodiscard]] std::vector<double> read_npy_double(const std::filesystem::path& path,
                                                  NpyArray* header = nullptr);

}  // namespace twinloop::drivers

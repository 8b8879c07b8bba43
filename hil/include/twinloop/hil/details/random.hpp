// Random numbers for the simulator: a small, fast, seedable PRNG and a table-based Gaussian.
//
// The generator thread needs hundreds of millions of Gaussian samples per second of wall time, so
// thermal noise uses 16-bit indices into a table of normal quantiles (four draws per 64-bit PRNG
// output) instead of Box-Muller. The table's tails stop near 4.2 sigma, which is harmless for
// background noise. Everything else (spike times, gains, unit layout) uses exact samplers.
//
// Xoshiro256++ (Blackman & Vigna) seeded through SplitMix64, as its authors recommend; one
// instance per stream and per thread, never shared. No allocation.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace twinloop::hil::details {

/// One SplitMix64 step: advances `state` and returns a well-mixed 64-bit value.
[[nodiscard]] constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  state += 0x9E3779B97F4A7C15ULL;
  std::uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/// Seed of an independent stream `stream` derived from the simulation seed, so that adding a
/// stream (or a unit) never shifts the numbers another stream sees.
[[nodiscard]] constexpr std::uint64_t derive_seed(std::uint64_t seed,
                                                  std::uint64_t stream) noexcept {
  std::uint64_t state = seed ^ (0xD1B54A32D192ED03ULL * (stream + 1));
  (void)splitmix64(state);
  return splitmix64(state);
}

class Xoshiro256pp {
 public:
  explicit Xoshiro256pp(std::uint64_t seed = 0) noexcept { reseed(seed); }

  void reseed(std::uint64_t seed) noexcept {
    std::uint64_t state = seed;
    for (auto& word : s_) word = splitmix64(state);
  }

  [[nodiscard]] std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[0] + s_[3], 23) + s_[0];
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform on the open interval (0, 1): safe to take the log of.
  [[nodiscard]] double uniform() noexcept {
    return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53;
  }
  [[nodiscard]] double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }
  /// Log-uniform on [lo, hi], both > 0.
  [[nodiscard]] double log_uniform(double lo, double hi) noexcept {
    return std::exp(uniform(std::log(lo), std::log(hi)));
  }
  /// Exponential with mean 1.
  [[nodiscard]] double exponential() noexcept { return -std::log(uniform()); }
  /// Exact standard normal (Marsaglia polar method; the second value is dropped for simplicity).
  [[nodiscard]] double normal() noexcept {
    for (;;) {
      const double u = 2.0 * uniform() - 1.0;
      const double v = 2.0 * uniform() - 1.0;
      const double s = u * u + v * v;
      if (s > 0.0 && s < 1.0) return u * std::sqrt(-2.0 * std::log(s) / s);
    }
  }
  /// Gamma(shape, scale 1) by Marsaglia & Tsang; shapes below 1 use the u^(1/shape) boost.
  [[nodiscard]] double gamma(double shape) noexcept {
    if (shape <= 0.0) return 0.0;
    if (shape < 1.0) return gamma(shape + 1.0) * std::pow(uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      const double x = normal();
      double v = 1.0 + c * x;
      if (v <= 0.0) continue;
      v = v * v * v;
      const double u = uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }
  std::array<std::uint64_t, 4> s_{};
};

inline constexpr std::size_t kGaussianTableSize = 65536;

/// Standard-normal quantiles at the midpoints (i + 0.5) / 65536, rescaled to unit variance exactly.
/// Built once (thread-safe static initialisation, ~10 ms), then read-only.
[[nodiscard]] const std::array<float, kGaussianTableSize>& gaussian_table() noexcept;

}  // namespace twinloop::hil::details

#include "twinloop/designer/random_strategy.hpp"

namespace twinloop::designer {

RandomStrategy::RandomStrategy(std::uint64_t seed) noexcept : state_(seed) {}

// SplitMix64 (Steele, Lea & Flood 2014): a full-period 64-bit generator whose every seed,
// including 0, gives a good stream; enough for choosing stimuli.
std::uint64_t RandomStrategy::next() noexcept {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Unbiased integer in [0, bound) by rejection of the short last interval.
std::uint64_t RandomStrategy::below(std::uint64_t bound) noexcept {
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
  std::uint64_t x = next();
  while (x >= limit) x = next();
  return x % bound;
}

std::uint32_t RandomStrategy::choose(std::uint32_t count) noexcept {
  return static_cast<std::uint32_t>(below(count));
}

std::optional<std::uint32_t> RandomStrategy::choose(std::span<const bool> allowed) noexcept {
  std::uint64_t available = 0;
  for (bool a : allowed) available += a ? 1 : 0;
  if (available == 0) return std::nullopt;
  std::uint64_t pick = below(available);
  for (std::uint32_t i = 0; i < allowed.size(); ++i) {
    if (!allowed[i]) continue;
    if (pick-- == 0) return i;
  }
  return std::nullopt;  // unreachable: pick < available
}

}  // namespace twinloop::designer

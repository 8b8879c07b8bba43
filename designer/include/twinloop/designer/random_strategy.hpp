// RandomStrategy: chooses the next stimulus uniformly among the candidates still allowed. The
// baseline every adaptive strategy is measured against, and the source of validation trials,
// which must be drawn independently of what an adaptive designer would choose.
//
// Deterministic from its seed. choose() does not allocate, lock or throw (real-time path).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace twinloop::designer {

class RandomStrategy {
 public:
  explicit RandomStrategy(std::uint64_t seed) noexcept;

  /// \param allowed  one flag per candidate (false: exhausted or refused by safety limits)
  /// \return the chosen candidate index, or nullopt when none is allowed
  [[nodiscard]] std::optional<std::uint32_t> choose(std::span<const bool> allowed) noexcept;
  /// Uniform on [0, count); count must be > 0.
  [[nodiscard]] std::uint32_t choose(std::uint32_t count) noexcept;

 private:
  [[nodiscard]] std::uint64_t next() noexcept;
  [[nodiscard]] std::uint64_t below(std::uint64_t bound) noexcept;
  std::uint64_t state_;
};

}  // namespace twinloop::designer

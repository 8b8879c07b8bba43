// Stimulus space: the named dimensions a protocol varies and the finite list of candidate stimuli.
//
// A StimulusSpace is a plain value built once by the protocol loader (not on the real-time path)
// and then only read. Each dimension has a unit and a sorted-as-written list of discrete values;
// the candidates are either the Cartesian product of those values (first dimension varies
// slowest, like nested loops in the order the dimensions are written) or an explicit list of
// points taken from them. Candidate values are stored candidate-major in one flat vector, so
// `stimulus(i)` is a bounded copy with no allocation. Reading from several threads at once is
// safe; nothing here mutates after loading.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/stimulus.hpp"

namespace twinloop::protocols {

/// What kind of perturbation the stimulus path delivers.
enum class StimulusKind { kGrating, kOptogenetic, kElectrical };

/// \return the YAML spelling ("grating", "optogenetic", "electrical").
[[nodiscard]] std::string_view to_string(StimulusKind kind) noexcept;

/// One named axis of the stimulus space, e.g. direction in degrees or amplitude in mW.
struct StimulusDimension {
  std::string name;            ///< unique within the space; an identifier ([A-Za-z_][A-Za-z0-9_]*)
  std::string unit;            ///< free text, e.g. "deg", "fraction", "mW", "ms", "uA"
  std::vector<double> values;  ///< the discrete values, in the order written (grids: ascending)
};

/// The candidate stimuli a designer may choose from.
struct StimulusSpace {
  StimulusKind kind = StimulusKind::kGrating;
  std::vector<StimulusDimension> dimensions;  ///< at most kMaxStimulusDimensions
  bool explicit_candidates = false;  ///< true: `candidates:` list; false: Cartesian product
  /// Candidate-major values: candidate c, dimension d at [c * dimensions.size() + d].
  std::vector<double> candidate_values;

  [[nodiscard]] std::size_t dimension_count() const noexcept { return dimensions.size(); }
  [[nodiscard]] std::size_t candidate_count() const noexcept {
    return dimensions.empty() ? 0 : candidate_values.size() / dimensions.size();
  }

  /// \param[in] name dimension name (exact, case-sensitive).
  /// \return the dimension's index, or nullopt when the space has no dimension of that name.
  /// \note Real-time safe: no allocation.
  [[nodiscard]] std::optional<std::size_t> dimension_index(std::string_view name) const noexcept;

  /// \param[in] name dimension name (exact, case-sensitive).
  /// \return the dimension, or nullptr when the space has no dimension of that name.
  /// \note Real-time safe: no allocation.
  [[nodiscard]] const StimulusDimension* find_dimension(std::string_view name) const noexcept;

  /// \param[in] candidate index in [0, candidate_count()).
  /// \param[in] dimension index in [0, dimension_count()).
  /// \return the candidate's value on that dimension, in the dimension's unit.
  /// \throws std::out_of_range when either index is out of range.
  [[nodiscard]] double candidate_value(std::size_t candidate, std::size_t dimension) const;

  /// \param[in] candidate index in [0, candidate_count()).
  /// \return the Stimulus for that candidate (`Stimulus::candidate` set to the index).
  /// \throws std::out_of_range when the index is out of range.
  /// \note No allocation; safe on the real-time path once the index is known to be valid.
  [[nodiscard]] Stimulus stimulus(std::size_t candidate) const;
};

}  // namespace twinloop::protocols

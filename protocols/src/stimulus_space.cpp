// StimulusSpace lookups and Stimulus construction.
#include "twinloop/protocols/stimulus_space.hpp"

#include <stdexcept>

namespace twinloop::protocols {

std::string_view to_string(StimulusKind kind) noexcept {
  switch (kind) {
    case StimulusKind::kGrating:
      return "grating";
    case StimulusKind::kOptogenetic:
      return "optogenetic";
    case StimulusKind::kElectrical:
      return "electrical";
  }
  return "unknown";
}

std::optional<std::size_t> StimulusSpace::dimension_index(std::string_view name) const noexcept {
  for (std::size_t d = 0; d < dimensions.size(); ++d) {
    if (dimensions[d].name == name) return d;
  }
  return std::nullopt;
}

const StimulusDimension* StimulusSpace::find_dimension(std::string_view name) const noexcept {
  const auto index = dimension_index(name);
  return index ? &dimensions[*index] : nullptr;
}

double StimulusSpace::candidate_value(std::size_t candidate, std::size_t dimension) const {
  if (candidate >= candidate_count() || dimension >= dimension_count()) {
    throw std::out_of_range("StimulusSpace::candidate_value: index out of range");
  }
  return candidate_values[candidate * dimensions.size() + dimension];
}

Stimulus StimulusSpace::stimulus(std::size_t candidate) const {
  if (candidate >= candidate_count() || dimensions.size() > kMaxStimulusDimensions) {
    throw std::out_of_range("StimulusSpace::stimulus: candidate index out of range");
  }
  Stimulus result;
  result.candidate = static_cast<std::uint32_t>(candidate);
  result.dimension_count = static_cast<std::uint8_t>(dimensions.size());
  for (std::size_t d = 0; d < dimensions.size(); ++d) {
    result.values[d] = candidate_values[candidate * dimensions.size() + d];
  }
  return result;
}

}  // namespace twinloop::protocols

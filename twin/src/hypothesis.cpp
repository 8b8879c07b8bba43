#include "twinloop/twin/hypothesis.hpp"

#include <stdexcept>
#include <string>

#include "families.hpp"

namespace twinloop::twin {

std::unique_ptr<Hypothesis> make_hypothesis(const protocols::HypothesisSpec& spec,
                                            const protocols::StimulusSpace& space,
                                            std::size_t units, const TwinOptions& options) {
  switch (spec.family) {
    case protocols::HypothesisFamily::kDirectionTuning:
      return detail::make_direction_tuning(spec, space, units, options);
    case protocols::HypothesisFamily::kOrientationTuning:
      return detail::make_orientation_tuning(spec, space, units, options);
    case protocols::HypothesisFamily::kLnp:
      return detail::make_lnp(spec, space, units, options);
    case protocols::HypothesisFamily::kNull:
      return detail::make_null(spec, space, units, options);
    case protocols::HypothesisFamily::kTorchScript:
      return detail::make_torchscript(spec, space, units, options);
  }
  throw std::invalid_argument(
      "hypothesis '" + spec.name + "': unknown family (value " +
      std::to_string(static_cast<int>(spec.family)) +
      "); expected direction_tuning, orientation_tuning, lnp, null or torchscript");
}

}  // namespace twinloop::twin

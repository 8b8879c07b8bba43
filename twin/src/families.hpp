// Private to twin/src: constructors of each hypothesis family, for make_hypothesis to dispatch
// to. Torch-free, so hypothesis.cpp does not need to know how any family is built.
#pragma once

#include <cstddef>
#include <memory>

#include "twinloop/twin/hypothesis.hpp"

namespace twinloop::twin::detail {

/// Lowest expected firing rate any built-in family predicts, hertz. A unit that never fired
/// still gets a small positive mean, so one spike later is improbable rather than impossible
/// (log-likelihood -inf would end the comparison of hypotheses on a single count).
inline constexpr double kMinRateHz = 0.01;
/// Rate predicted before any trial when the protocol gives none, hertz.
inline constexpr double kDefaultRateHz = 5.0;
/// Ceiling on the fitted NB2 dispersion: beyond it the distribution is so wide that the
/// estimate is noise (few trials, one outlier).
inline constexpr double kMaxDispersion = 10.0;

[[nodiscard]] std::unique_ptr<Hypothesis> make_direction_tuning(
    const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space, std::size_t units,
    const TwinOptions& options);
[[nodiscard]] std::unique_ptr<Hypothesis> make_orientation_tuning(
    const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space, std::size_t units,
    const TwinOptions& options);
[[nodiscard]] std::unique_ptr<Hypothesis> make_lnp(const protocols::HypothesisSpec& spec,
                                                   const protocols::StimulusSpace& space,
                                                   std::size_t units, const TwinOptions& options);
[[nodiscard]] std::unique_ptr<Hypothesis> make_null(const protocols::HypothesisSpec& spec,
                                                    const protocols::StimulusSpace& space,
                                                    std::size_t units, const TwinOptions& options);
[[nodiscard]] std::unique_ptr<Hypothesis> make_torchscript(const protocols::HypothesisSpec& spec,
                                                           const protocols::StimulusSpace& space,
                                                           std::size_t units,
                                                           const TwinOptions& options);

}  // namespace twinloop::twin::detail

// Hypothesis: one digital twin, a competing model of how the recorded units respond to stimuli.
// It maps a batch of stimuli to predicted count distributions per unit (PredictionBatch) and
// learns from (stimulus, counts) pairs. Built-in families and users' TorchScript networks sit
// behind this interface; LibTorch stays inside twin/ (this header does not include it).
//
// Thread safety: one thread at a time per object. predict() on an already sized batch should not
// allocate for built-in families (the designer calls it on the decision path).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "twinloop/protocols/protocol.hpp"
#include "twinloop/twin/prediction.hpp"

namespace twinloop::twin {

class Hypothesis {
 public:
  virtual ~Hypothesis() = default;

  /// The protocol's name for this hypothesis (HypothesisSpec::name).
  [[nodiscard]] virtual const std::string& name() const noexcept = 0;
  /// "direction_tuning", "orientation_tuning", "lnp", "null" or "torchscript".
  [[nodiscard]] virtual std::string_view family() const noexcept = 0;

  /// Predicts every unit's count distribution for each stimulus. `out` must be sized
  /// (stimuli.size(), unit_count()).
  virtual void predict(std::span<const protocols::Stimulus> stimuli, PredictionBatch& out) = 0;

  /// Refits the parameters to all trials so far: counts is trials x units, row-major, aligned
  /// with `stimuli`. Called between trials, never on the decision path.
  virtual void update(std::span<const protocols::Stimulus> stimuli,
                      std::span<const std::uint32_t> counts) = 0;

  [[nodiscard]] virtual std::size_t unit_count() const noexcept = 0;

  /// For the model check's encompassing test: removes from each of `count` differences (another
  /// hypothesis's predicted means for the protocol's candidates minus this one's, each sized
  /// candidates x units, candidate-major like PredictionBatch, laid end to end) the part that
  /// this twin could itself produce: each unit's weighted least-squares projection on the
  /// slopes of its means with respect to its parameters at the fit (and the shift from those
  /// means to its predictions, the mean over parameter draws). A rival left with almost
  /// nothing (1% of its weighted square) is contained in this twin and left with nothing.
  /// What remains is what a rival says that no refit of this twin could say (ModelCheck, file
  /// comment). Call after predict() on the same fit. Returns false, leaving them unchanged,
  /// where the twin cannot say how its predictions move (plug-in predictions, TorchScript
  /// twins). Not for the real-time path.
  virtual bool remove_own_directions(std::span<double> differences, std::size_t count) {
    (void)differences;
    (void)count;
    return false;
  }
};

/// Where the twins compute: "cpu" (always available) or e.g. "cuda:0" when LibTorch was built
/// with CUDA. Unknown or unavailable devices are refused with a message.
struct TwinOptions {
  std::string device = "cpu";
  double window_seconds = 1.0;  ///< response window length (rates -> counts)
};

/// Builds the hypothesis a protocol names.
/// \throws std::invalid_argument naming the hypothesis and what is wrong (unknown family,
///         unreadable TorchScript file, a module whose output has the wrong shape, ...)
[[nodiscard]] std::unique_ptr<Hypothesis> make_hypothesis(const protocols::HypothesisSpec& spec,
                                                          const protocols::StimulusSpace& space,
                                                          std::size_t units,
                                                          const TwinOptions& options);

}  // namespace twinloop::twin

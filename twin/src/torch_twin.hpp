// Private to twin/src: the LibTorch machinery every hypothesis family shares. Kept out of
// twin/include so that no other folder ever compiles a torch header (they cost seconds per
// translation unit).
//
// TorchTwin owns what all families have in common: the device, the protocol's candidate
// stimuli as a tensor, the count likelihood used for fitting, the moment estimate of NB2
// dispersion, and the cache of predictions for the fixed candidate set that makes predict()
// a copy. A family supplies evaluate() (stimuli -> mean counts) and fit() (trials -> params).
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "twinloop/protocols/protocol.hpp"
#include "twinloop/twin/hypothesis.hpp"

namespace twinloop::twin::detail {

/// Parses TwinOptions::device; refuses unknown strings, device kinds LibTorch cannot run here
/// and CUDA devices this build or machine does not have. `who` names the hypothesis.
[[nodiscard]] torch::Device parse_device(const std::string& device, const std::string& who);

/// Stimuli as a [N x D] tensor (values in the space's dimension order and units).
[[nodiscard]] torch::Tensor stimuli_tensor(std::span<const protocols::Stimulus> stimuli,
                                           std::size_t dimensions, torch::Device device,
                                           torch::ScalarType dtype);

/// Negative log-likelihood of counts `y` under NB2(mu, alpha), up to terms free of mu, summed
/// over trials: one value per column ([U]). alpha ([U] or [N x U]) == 0 is the Poisson
/// likelihood.
[[nodiscard]] torch::Tensor count_nll_per_unit(const torch::Tensor& mu, const torch::Tensor& y,
                                               const torch::Tensor& alpha);

/// Method-of-moments NB2 dispersion per unit from residuals: Var(y) = mu + alpha mu^2, so
/// alpha = sum((y - mu)^2 - mu) / sum(mu^2), corrected for `fitted_params` per unit and clipped
/// to [0, max_dispersion]. [U], double, same device.
[[nodiscard]] torch::Tensor moment_dispersion(const torch::Tensor& mu, const torch::Tensor& y,
                                              double fitted_params, double max_dispersion);

/// softplus^-1(v) for v > 0, elementwise: the raw value whose softplus is v.
[[nodiscard]] torch::Tensor inverse_softplus(const torch::Tensor& v);

/// Reads a numeric family parameter, or `fallback` when the protocol did not give it.
[[nodiscard]] double param_or(const protocols::HypothesisSpec& spec, std::string_view key,
                              double fallback);

/// Refuses parameters the family does not know (a misspelt key would otherwise be ignored).
void check_params(const protocols::HypothesisSpec& spec,
                  std::initializer_list<std::string_view> allowed);
/// The same, for a family whose parameter names depend on the stimulus space.
void check_params(const protocols::HypothesisSpec& spec, const std::vector<std::string>& allowed);

class TorchTwin : public Hypothesis {
 public:
  TorchTwin(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
            std::size_t units, const TwinOptions& options);

  [[nodiscard]] const std::string& name() const noexcept override { return name_; }
  [[nodiscard]] std::size_t unit_count() const noexcept override { return units_; }

  void predict(std::span<const protocols::Stimulus> stimuli, PredictionBatch& out) override;
  void update(std::span<const protocols::Stimulus> stimuli,
              std::span<const std::uint32_t> counts) override;
  bool remove_own_directions(std::span<double> differences, std::size_t count) override;

 protected:
  struct Evaluation {
    torch::Tensor mean;        ///< [N x U], expected counts, >= 0
    torch::Tensor dispersion;  ///< [N x U] or [U], >= 0
  };

  /// The family's prediction for stimuli `x` ([N x D], double, on device()).
  [[nodiscard]] virtual Evaluation evaluate(const torch::Tensor& x) = 0;
  /// Refits to all trials: x [N x D] double, y [N x U] double (counts), both on device().
  virtual void fit(const torch::Tensor& x, const torch::Tensor& y) = 0;
  /// How the family's predicted means at `x` move with its parameters: [S x N x U], each of the
  /// S slices the slope of the means along one direction in parameter space (the built-in
  /// families: central differences along Laplace draws' offsets, spanning every parameter).
  /// Undefined (the default) where the family cannot say.
  [[nodiscard]] virtual torch::Tensor mean_directions(const torch::Tensor& x) {
    (void)x;
    return {};
  }
  /// The means at the fitted parameters themselves ([N x U]), where the predictions are the
  /// mean over parameter draws; undefined (the default) where the two are the same.
  [[nodiscard]] virtual torch::Tensor plug_in_mean(const torch::Tensor& x) {
    (void)x;
    return {};
  }

  /// Recomputes the cached predictions for every candidate; the constructor of each family
  /// calls it once its parameters exist, update() after every fit.
  void refresh_cache();

  [[nodiscard]] const protocols::StimulusSpace& space() const noexcept { return space_; }
  [[nodiscard]] torch::Device device() const noexcept { return device_; }
  [[nodiscard]] const TwinOptions& options() const noexcept { return options_; }
  [[nodiscard]] const torch::Tensor& candidates() const noexcept { return candidates_; }
  [[nodiscard]] torch::TensorOptions real() const {
    return torch::TensorOptions().dtype(torch::kDouble).device(device_);
  }

 private:
  [[nodiscard]] bool is_cached_candidate(const protocols::Stimulus& s) const noexcept;
  // remove_own_directions() once its sizes are checked; may throw (LibTorch).
  bool project_out_directions(std::span<double> differences, std::size_t count);

  std::string name_;
  protocols::StimulusSpace space_;
  std::size_t units_;
  TwinOptions options_;
  torch::Device device_;
  torch::Tensor candidates_;  ///< [C x D] double on device_
  // Predictions for every candidate after the latest fit, candidate-major like PredictionBatch,
  // in host memory so that predict() is a row copy.
  std::vector<double> cache_mean_;
  std::vector<double> cache_dispersion_;
  std::vector<std::size_t> fallback_rows_;  ///< reused scratch for non-candidate stimuli
};

}  // namespace twinloop::twin::detail

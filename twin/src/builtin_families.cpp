// The built-in families: direction tuning (von Mises x Naka-Rushton), LNP and null.
//
// All three work in expected counts per response window (rate x window), on the twin's device,
// in double precision. Mean parameters are fitted by maximum likelihood under NB2 with the
// dispersion of the previous fit held fixed (Poisson on the first fit); the dispersion is then
// re-estimated by moments from the new residuals, so the two settle together over updates.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "families.hpp"
#include "torch_twin.hpp"

namespace twinloop::twin::detail {
namespace {

constexpr double kDegToRad = std::numbers::pi / 180.0;

bool is_degrees(const protocols::StimulusDimension& d) {
  return d.unit == "deg" || d.unit == "degree" || d.unit == "degrees";
}

/// Minimises sum(per_unit_loss()) / trials over `params` with LBFGS (strong Wolfe line search),
/// at most `max_iterations` iterations, starting from the parameters' current values (the warm
/// start). Units whose loss or parameters end non-finite are put back where they started, so
/// one pathological unit cannot poison the others. Every parameter has units on dimension 0.
torch::Tensor minimise(std::vector<torch::Tensor> params,
                       const std::function<torch::Tensor()>& per_unit_loss, double trials,
                       int max_iterations, const std::function<torch::Tensor()>& penalty = {}) {
  std::vector<torch::Tensor> saved;
  for (auto& p : params) {
    saved.push_back(p.detach().clone());
    p.set_requires_grad(true);
  }
  torch::optim::LBFGS optimiser(params, torch::optim::LBFGSOptions(1.0)
                                            .max_iter(max_iterations)
                                            .history_size(20)
                                            .tolerance_grad(1e-7)
                                            .tolerance_change(1e-10)
                                            .line_search_fn("strong_wolfe"));
  auto closure = [&] {
    optimiser.zero_grad();
    auto loss = per_unit_loss().sum() / trials;
    if (penalty) loss = loss + penalty();
    loss.backward();
    return loss;
  };
  optimiser.step(closure);

  torch::NoGradGuard no_grad;
  auto per_unit = per_unit_loss();
  auto ok = torch::isfinite(per_unit);
  for (const auto& p : params) ok = ok & torch::isfinite(p).reshape({p.size(0), -1}).all(1);
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::vector<std::int64_t> shape(static_cast<std::size_t>(params[i].dim()), 1);
    shape[0] = -1;
    const auto mask = ok.reshape(shape);
    params[i].copy_(torch::where(mask, params[i], saved[i]));
    params[i].set_requires_grad(false);
  }
  return per_unit_loss().nan_to_num(std::numeric_limits<double>::infinity(),
                                    std::numeric_limits<double>::infinity());
}

// ------------------------------------------------------------------------------------------
// direction_tuning: rate = baseline + amplitude * exp(kappa (cos(theta - pref) - 1)) * NR(c),
// NR(c) = c^n / (c^n + c50^n), 1 without a contrast dimension.

class DirectionTuning final : public TorchTwin {
 public:
  DirectionTuning(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
                  std::size_t units, const TwinOptions& options)
      : TorchTwin(spec, space, units, options) {
    check_params(spec, {"preferred_deg", "kappa", "baseline_hz", "amplitude_hz", "c50", "n",
                        "max_iterations", "poisson"});
    direction_ = space.dimension_index("direction");
    if (!direction_) {
      for (std::size_t d = 0; d < space.dimension_count(); ++d) {
        if (is_degrees(space.dimensions[d])) {
          direction_ = d;
          break;
        }
      }
    }
    if (!direction_) {
      throw std::invalid_argument(
          "hypothesis '" + spec.name +
          "': family direction_tuning needs a stimulus dimension named 'direction' or one whose "
          "unit is 'deg'; this stimulus space has none");
    }
    contrast_ = space.dimension_index("contrast");
    if (contrast_) {
      for (const double v : space.dimensions[*contrast_].values) {
        max_contrast_ = std::max(max_contrast_, std::abs(v));
      }
      if (!(max_contrast_ > 0.0)) max_contrast_ = 1.0;
    }
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    kappa0_ = param_or(spec, "kappa", 2.0);
    c500_ = param_or(spec, "c50", 0.3 * max_contrast_);
    n0_ = param_or(spec, "n", 2.0);
    max_iterations_ = static_cast<int>(param_or(spec, "max_iterations", 100));
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    if (!(kappa0_ >= 0.0) || !(c500_ > 0.0) || !(n0_ > 0.0) || max_iterations_ < 1) {
      throw std::invalid_argument("hypothesis '" + spec.name +
                                  "': kappa must be >= 0, c50 and n > 0, max_iterations >= 1");
    }
    // The prior: what the hypothesis predicts before any trial. Untuned 5 Hz unless the
    // protocol states a tuning.
    const auto u = static_cast<std::int64_t>(units);
    const double base = std::max(param_or(spec, "baseline_hz", kDefaultRateHz) * w, 1e-9);
    const double amp = std::max(param_or(spec, "amplitude_hz", 0.0) * w, 1e-9);
    raw_baseline_ = inverse_softplus(torch::full({u}, base, real()));
    raw_amplitude_ = inverse_softplus(torch::full({u}, amp, real()));
    preferred_ = torch::full({u}, param_or(spec, "preferred_deg", 0.0) * kDegToRad, real());
    raw_kappa_ = inverse_softplus(torch::full({u}, std::max(kappa0_, 1e-6), real()));
    raw_c50_ = torch::full({u}, logit(c500_ / max_contrast_), real());
    raw_n_ = inverse_softplus(torch::full({u}, std::max(n0_ - 0.5, 1e-6), real()));
    dispersion_ = torch::zeros({u}, real());
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return "direction_tuning"; }

 private:
  struct Params {
    torch::Tensor baseline, amplitude, preferred, kappa, c50, n;  // raw, each [K]
  };

  static double logit(double p) {
    p = std::clamp(p, 1e-6, 1.0 - 1e-6);
    return std::log(p / (1.0 - p));
  }

  [[nodiscard]] Params current() const {
    return {raw_baseline_, raw_amplitude_, preferred_, raw_kappa_, raw_c50_, raw_n_};
  }

  /// NR(c) for every trial and column: [N x K] (or [N x 1] / 1 when it does not vary).
  [[nodiscard]] torch::Tensor contrast_gain(const torch::Tensor& x, const Params& p) const {
    if (!contrast_) return torch::ones({1, 1}, real());
    const auto c = x.select(1, static_cast<std::int64_t>(*contrast_)).abs().clamp_min(1e-9);
    const auto c50 = torch::sigmoid(p.c50) * max_contrast_;
    const auto n = torch::nn::functional::softplus(p.n) + 0.5;
    // c^n / (c^n + c50^n) = sigmoid(n (log c - log c50)): stable for c -> 0 and large n.
    return torch::sigmoid(n.unsqueeze(0) * (c.log().unsqueeze(1) - c50.log().unsqueeze(0)));
  }

  [[nodiscard]] torch::Tensor mean(const torch::Tensor& x, const Params& p) const {
    namespace F = torch::nn::functional;
    const auto theta = x.select(1, static_cast<std::int64_t>(*direction_)).unsqueeze(1) * kDegToRad;
    const auto kappa = F::softplus(p.kappa).unsqueeze(0);
    const auto shape = torch::exp(kappa * (torch::cos(theta - p.preferred.unsqueeze(0)) - 1.0));
    return floor_ + F::softplus(p.baseline).unsqueeze(0) +
           F::softplus(p.amplitude).unsqueeze(0) * shape * contrast_gain(x, p);
  }

  Evaluation evaluate(const torch::Tensor& x) override { return {mean(x, current()), dispersion_}; }

  /// Starts read from the data: preferred direction at the arg-max (`vector_sum` false) or at
  /// the circular mean (true) of the mean count per direction, baseline at the least
  /// responsive direction, amplitude at the range.
  [[nodiscard]] Params data_start(const torch::Tensor& x, const torch::Tensor& y,
                                  bool vector_sum) const {
    const auto& values = space().dimensions[*direction_].values;
    const auto dirs = torch::tensor(values, real());  // [K]
    const auto theta = x.select(1, static_cast<std::int64_t>(*direction_));
    const auto onehot = ((theta.unsqueeze(1) - dirs.unsqueeze(0)).abs() < 1e-6).to(torch::kDouble);
    const auto trials = onehot.sum(0);                                             // [K]
    const auto seen = (trials > 0).unsqueeze(1);                                   // [K x 1]
    const auto means = onehot.t().matmul(y) / trials.clamp_min(1.0).unsqueeze(1);  // [K x U]
    const double inf = std::numeric_limits<double>::infinity();
    const auto hi = torch::where(seen, means, torch::full_like(means, -inf)).amax(0);
    const auto lo = torch::where(seen, means, torch::full_like(means, inf)).amin(0);
    torch::Tensor preferred;
    if (vector_sum) {
      const auto weight = torch::where(seen, means - lo.unsqueeze(0), torch::zeros_like(means));
      const auto rad = (dirs * kDegToRad).unsqueeze(1);
      preferred =
          torch::atan2((weight * torch::sin(rad)).sum(0), (weight * torch::cos(rad)).sum(0));
    } else {
      preferred =
          dirs.index_select(0, torch::where(seen, means, torch::full_like(means, -inf)).argmax(0)) *
          kDegToRad;
    }
    const auto u = static_cast<std::int64_t>(y.size(1));
    Params p;
    p.c50 = torch::full({u}, logit(c500_ / max_contrast_), real());
    p.n = inverse_softplus(torch::full({u}, std::max(n0_ - 0.5, 1e-6), real()));
    const double gain = contrast_gain(x, p).mean().item<double>();
    const auto overall = y.mean(0);
    p.baseline = inverse_softplus(torch::where(torch::isfinite(lo), lo, overall).clamp_min(1e-3));
    p.amplitude = inverse_softplus(
        (torch::where(torch::isfinite(hi - lo), hi - lo, torch::zeros_like(overall)) /
         std::max(gain, 1e-3))
            .clamp_min(1e-3 + 0.05 * overall));
    p.preferred = preferred;
    p.kappa = inverse_softplus(
        torch::full({u}, std::max(vector_sum ? 0.5 * kappa0_ : kappa0_, 0.1), real()));
    return p;
  }

  void fit(const torch::Tensor& x, const torch::Tensor& y) override {
    // Several starts per unit, fitted side by side as extra columns, and the best kept per
    // unit: the likelihood is not convex in (preferred, kappa), and warm-starting alone would
    // keep a unit in the basin an early, noisy fit put it in.
    // Two starts: the previous fit (warm) and the arg-max of the data; on the first fit, the
    // arg-max and the circular mean. Each start costs a full set of columns in every iteration.
    std::vector<Params> starts;
    if (fitted_) starts.push_back(current());
    starts.push_back(data_start(x, y, false));
    if (!fitted_) starts.push_back(data_start(x, y, true));
    const auto s = static_cast<std::int64_t>(starts.size());
    const auto u = y.size(1);
    auto stack = [&](auto member) {
      std::vector<torch::Tensor> parts;
      for (const auto& p : starts) parts.push_back(p.*member);
      return torch::cat(parts).detach().clone();
    };
    Params all{stack(&Params::baseline), stack(&Params::amplitude), stack(&Params::preferred),
               stack(&Params::kappa),    stack(&Params::c50),       stack(&Params::n)};
    const auto y_all = y.repeat({1, s});
    const auto alpha_all = dispersion_.repeat({s});
    auto per_unit = [&] { return count_nll_per_unit(mean(x, all), y_all, alpha_all); };
    auto loss = minimise({all.baseline, all.amplitude, all.preferred, all.kappa, all.c50, all.n},
                         per_unit, static_cast<double>(y.size(0)), max_iterations_);

    torch::NoGradGuard no_grad;
    const auto best = loss.reshape({s, u}).argmin(0).unsqueeze(0);  // [1 x U]
    auto pick = [&](const torch::Tensor& t) {
      return t.reshape({s, u}).gather(0, best).squeeze(0);
    };
    raw_baseline_ = pick(all.baseline);
    raw_amplitude_ = pick(all.amplitude);
    // Keep the preferred direction in (-pi, pi] so it reads as an angle.
    const auto pref = pick(all.preferred);
    preferred_ = torch::atan2(torch::sin(pref), torch::cos(pref));
    raw_kappa_ = pick(all.kappa);
    raw_c50_ = pick(all.c50);
    raw_n_ = pick(all.n);
    fitted_ = true;
    const double fitted_params = contrast_ ? 6.0 : 4.0;
    dispersion_ = poisson_
                      ? torch::zeros({u}, real())
                      : moment_dispersion(mean(x, current()), y, fitted_params, kMaxDispersion);
  }

  std::optional<std::size_t> direction_;
  std::optional<std::size_t> contrast_;
  double max_contrast_ = 1.0;
  double floor_ = 0.0;
  double kappa0_ = 2.0;
  double c500_ = 0.3;
  double n0_ = 2.0;
  int max_iterations_ = 100;
  bool poisson_ = false;
  bool fitted_ = false;
  torch::Tensor raw_baseline_, raw_amplitude_, preferred_, raw_kappa_, raw_c50_, raw_n_;
  torch::Tensor dispersion_;
};

// ------------------------------------------------------------------------------------------
// lnp: rate = exp(w . features(stimulus) + b). Features: each non-angular dimension scaled to
// [0, 1] over its values; each angular dimension (unit deg) as cos and sin only, since a
// linear term in an angle would make 0 and 360 degrees different stimuli.

class Lnp final : public TorchTwin {
 public:
  Lnp(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
      std::size_t units, const TwinOptions& options)
      : TorchTwin(spec, space, units, options) {
    check_params(spec, {"rate_hz", "l2", "max_iterations", "poisson"});
    for (std::size_t d = 0; d < space.dimension_count(); ++d) {
      const auto& dim = space.dimensions[d];
      if (is_degrees(dim)) {
        angular_.push_back(static_cast<std::int64_t>(d));
        continue;
      }
      double lo = std::numeric_limits<double>::infinity();
      double hi = -lo;
      for (const double v : dim.values) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      linear_.push_back(static_cast<std::int64_t>(d));
      offset_.push_back(std::isfinite(lo) ? lo : 0.0);
      scale_.push_back(hi > lo ? 1.0 / (hi - lo) : 0.0);  // a constant dimension adds nothing
    }
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    l2_ = param_or(spec, "l2", 1e-3);
    max_iterations_ = static_cast<int>(param_or(spec, "max_iterations", 100));
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    const double rate = param_or(spec, "rate_hz", kDefaultRateHz);
    if (!(rate > 0.0) || !(l2_ >= 0.0) || max_iterations_ < 1) {
      throw std::invalid_argument("hypothesis '" + spec.name +
                                  "': rate_hz must be > 0, l2 >= 0, max_iterations >= 1");
    }
    const auto u = static_cast<std::int64_t>(units);
    const auto f = static_cast<std::int64_t>(linear_.size() + 2 * angular_.size());
    weights_ = torch::zeros({u, f}, real());
    bias_ = torch::full({u}, std::log(std::max(rate * w - floor_, 1e-9)), real());
    dispersion_ = torch::zeros({u}, real());
    if (!linear_.empty()) {
      linear_index_ = torch::tensor(linear_, torch::TensorOptions().device(device()));
      offset_t_ = torch::tensor(offset_, real());
      scale_t_ = torch::tensor(scale_, real());
    }
    if (!angular_.empty()) {
      angular_index_ = torch::tensor(angular_, torch::TensorOptions().device(device()));
    }
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return "lnp"; }

 private:
  [[nodiscard]] torch::Tensor features(const torch::Tensor& x) const {
    std::vector<torch::Tensor> parts;
    if (!linear_.empty())
      parts.push_back((x.index_select(1, linear_index_) - offset_t_) * scale_t_);
    if (!angular_.empty()) {
      const auto rad = x.index_select(1, angular_index_) * kDegToRad;
      parts.push_back(torch::cos(rad));
      parts.push_back(torch::sin(rad));
    }
    return torch::cat(parts, 1);
  }

  [[nodiscard]] torch::Tensor mean(const torch::Tensor& features) const {
    // The clamp only guards the line search against overflow; e^30 counts is not a neuron.
    return floor_ +
           torch::exp((features.matmul(weights_.t()) + bias_.unsqueeze(0)).clamp_max(30.0));
  }

  Evaluation evaluate(const torch::Tensor& x) override { return {mean(features(x)), dispersion_}; }

  void fit(const torch::Tensor& x, const torch::Tensor& y) override {
    const auto f = features(x);
    if (!fitted_) {
      torch::NoGradGuard no_grad;
      bias_ = torch::log((y.mean(0) - floor_).clamp_min(1e-6));
      weights_.zero_();
    }
    auto per_unit = [&] { return count_nll_per_unit(mean(f), y, dispersion_); };
    // A light ridge keeps the weights finite where a feature never varies in the data so far
    // (early trials) and for units that never fire.
    auto penalty = [&] { return l2_ * weights_.square().sum(); };
    (void)minimise({weights_, bias_}, per_unit, static_cast<double>(y.size(0)), max_iterations_,
                   penalty);
    fitted_ = true;
    torch::NoGradGuard no_grad;
    dispersion_ = poisson_ ? torch::zeros_like(dispersion_)
                           : moment_dispersion(mean(f), y, static_cast<double>(f.size(1) + 1),
                                               kMaxDispersion);
  }

  std::vector<std::int64_t> linear_, angular_;
  std::vector<double> offset_, scale_;
  torch::Tensor linear_index_, angular_index_, offset_t_, scale_t_;
  double floor_ = 0.0;
  double l2_ = 1e-3;
  int max_iterations_ = 100;
  bool poisson_ = false;
  bool fitted_ = false;
  torch::Tensor weights_, bias_, dispersion_;
};

// ------------------------------------------------------------------------------------------
// null: a constant rate per unit. The maximum-likelihood mean under Poisson and under NB2 is the
// sample mean, so it is computed directly rather than by iteration.

class Null final : public TorchTwin {
 public:
  Null(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
       std::size_t units, const TwinOptions& options)
      : TorchTwin(spec, space, units, options) {
    check_params(spec, {"rate_hz", "poisson"});
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    const double rate = param_or(spec, "rate_hz", kDefaultRateHz);
    if (!(rate > 0.0)) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': rate_hz must be > 0");
    }
    const auto u = static_cast<std::int64_t>(units);
    mean_ = torch::full({u}, std::max(rate * w, floor_), real());
    dispersion_ = torch::zeros({u}, real());
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return "null"; }

 private:
  Evaluation evaluate(const torch::Tensor& x) override {
    return {mean_.unsqueeze(0).expand({x.size(0), mean_.size(0)}), dispersion_};
  }

  void fit(const torch::Tensor& /*x*/, const torch::Tensor& y) override {
    mean_ = y.mean(0).clamp_min(floor_);
    dispersion_ = poisson_
                      ? torch::zeros_like(dispersion_)
                      : moment_dispersion(mean_.unsqueeze(0).expand_as(y), y, 1.0, kMaxDispersion);
  }

  double floor_ = 0.0;
  bool poisson_ = false;
  torch::Tensor mean_, dispersion_;
};

}  // namespace

std::unique_ptr<Hypothesis> make_direction_tuning(const protocols::HypothesisSpec& spec,
                                                  const protocols::StimulusSpace& space,
                                                  std::size_t units, const TwinOptions& options) {
  return std::make_unique<DirectionTuning>(spec, space, units, options);
}

std::unique_ptr<Hypothesis> make_lnp(const protocols::HypothesisSpec& spec,
                                     const protocols::StimulusSpace& space, std::size_t units,
                                     const TwinOptions& options) {
  return std::make_unique<Lnp>(spec, space, units, options);
}

std::unique_ptr<Hypothesis> make_null(const protocols::HypothesisSpec& spec,
                                      const protocols::StimulusSpace& space, std::size_t units,
                                      const TwinOptions& options) {
  return std::make_unique<Null>(spec, space, units, options);
}

}  // namespace twinloop::twin::detail

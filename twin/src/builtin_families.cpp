// The built-in families: direction tuning and orientation tuning (von Mises x Naka-Rushton),
// LNP and null.
//
// All of them work in expected counts per response window (rate x window), on the twin's device,
// in double precision. Mean parameters are fitted under NB2 with the dispersion of the previous
// fit held fixed (Poisson on the first fit); the dispersion is then re-estimated by moments from
// the new residuals, so the two settle together over updates.
//
// Direction tuning and LNP are fitted as maximum a posteriori (MAP) estimates, not maximum
// likelihood: the closed loop refits them after as few as 8 trials spread over dozens of
// candidates, where a 6-parameter tuning curve per unit can pass through every count (a narrow
// peak on one lucky trial). Its prequential predictions are then far worse than the null
// model's and the designer, which seeks stimuli where the hypotheses disagree, chases those
// extremes. Weakly-informative priors (Gelman et al. 2008, "A weakly informative default prior
// distribution for logistic and other regression models") make a fit with few trials predict
// close to the unit's mean count and depart from it only as the likelihood, which grows with the
// trial count while the prior does not, outweighs them. With hundreds of trials the prior is a
// negligible fraction of the objective and the fit is the maximum-likelihood one.
//
// The dispersion is estimated conservatively for the same reason: a mean fitted to few trials
// sits closer to them than the truth does, so the moment estimate is shrunk toward a prior value
// with a pseudo-trial weight (see shrunk_dispersion).
//
// A fit to few trials also knows its parameters only roughly, and its predictions say so
// (family parameter "parameter_uncertainty", default 1; 0 gives plug-in predictions at the fit):
// the tuned families and LNP draw parameters from the Laplace approximation of their posterior
// at the fit (laplace_draws) and predict the posterior predictive, the draws' mean count with a
// dispersion widened by the draws' spread (predictive_from_draws); null widens by the variance
// of its sample mean (dispersion_with_uncertainty). The dispersion prior then weighs 4
// pseudo-trials instead of 16: the heavier weight had stood in for parameter uncertainty, and
// kept beside the draws it counts it twice (with 16, the draws' variance and the prior's added
// up to predictions wider than the errors they had on the held-out trials of tests/twin's
// Fitted population; with 4, direction_tuning after 24 trials scores -13217 nats there,
// plug-in -13232).
//
// The draws' mean overstates a unit's overall level where the unit has few spikes: the draws
// are Gaussian in the log of a rate, and for a single Poisson rate seen as k spikes in n trials
// that overstates its posterior mean (k / n under a flat prior on the log rate) by about
// exp(1 / 2k). On a sparse probe, where most channels that fire at all have a spike or two,
// direction_tuning predicted them 17% above the null (median over 53 such channels,
// --sim-units 1 --seed 1 in docs/session.md) and lost there about as much as its tuned channels
// earned. So direction_tuning scales each unit's draws above the floor by exp(-1 / 2K) for its
// K spikes (level_correction), which leaves units with hundreds of spikes as they were. On 48
// untuned units with 1-6 spikes in 60 trials (tests/twin's UnitsWithAFewSpikes...), its level
// went from 1.18 times the null's to 1.06. lnp's draws overstate the same units' level by 1.45
// and are left so: shifting their biases together until their mean count over the trials seen
// is the unit's spike count (exact for a log link; 1.03 on those units) changes its predictions
// of well-measured units too, and in the 16 sparse-probe sessions of docs/session.md one then
// ended on 'lnp_contrast', which led the true twin on that probe's strongest channels; with
// direction_tuning's correction alone all 16 named the truth. Whether that was chance needs
// more sessions than were run.
//
// The draws' mean, not the fit's: a MAP fit shrunk by its prior sits below the peaks the data
// support, and on bench_check_size (16 simulated tuned units) the model check saw that bias: PIT
// values piled up in the top bin with plug-in predictions, and with widened predictions at the
// fit's mean the low bins emptied and the true twin was rejected in 7 of 100 sessions (plug-in
// 1). With the draws' mean the histogram is flat within noise and the rate is 1 in 100.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "families.hpp"
#include "torch_twin.hpp"

namespace twinloop::twin::detail {
namespace {

constexpr double kDegToRad = std::numbers::pi / 180.0;

bool is_degrees(const protocols::StimulusDimension& d) {
  return d.unit == "deg" || d.unit == "degree" || d.unit == "degrees";
}

/// Negative log density of N(centre, sd^2) at `value`, up to a constant, elementwise.
torch::Tensor gaussian_nll(const torch::Tensor& value, const torch::Tensor& centre, double sd) {
  return 0.5 * ((value - centre) / sd).square();
}
torch::Tensor gaussian_nll(const torch::Tensor& value, double centre, double sd) {
  return 0.5 * ((value - centre) / sd).square();
}

/// Pseudo-trials of the dispersion prior: the moment estimate from n trials is averaged with
/// kDispersionPrior as if the prior were kDispersionPseudoTrials further trials. With few trials
/// the (overfitted) residuals understate the scatter, so the estimate leans on a modest
/// over-dispersion (Fano factor 1 + 0.1 mu, typical of cortical counts in short windows; Goris,
/// Movshon & Simoncelli 2014); with many it is the moment estimate.
constexpr double kDispersionPrior = 0.1;
constexpr double kDispersionPseudoTrials = 16.0;
/// The same prior's weight beside parameter draws (see the file comment).
constexpr double kDispersionPseudoTrialsWithDraws = 4.0;

/// The smallest mean count above the rate floor that the tuned families' priors centre a unit's
/// scale on, as a fraction of the floor: a unit that has never fired is then predicted at the
/// floor, as the null family predicts it. A probe has hundreds of channels that see no unit, and
/// a twin that predicted them above the null's floor paid for it on each of them at every trial.
constexpr double kSilentScale = 1e-3;

/// Each unit's mean count above `floor` over trials `y` [N x U], at least kSilentScale floors.
torch::Tensor mean_above_floor(const torch::Tensor& y, double floor) {
  return (y.mean(0) - floor).clamp_min(kSilentScale * floor);
}

double dispersion_pseudo_trials(bool with_parameter_draws) {
  return with_parameter_draws ? kDispersionPseudoTrialsWithDraws : kDispersionPseudoTrials;
}

torch::Tensor shrunk_dispersion(const torch::Tensor& moment, double trials, double pseudo_trials) {
  return (moment * trials + kDispersionPrior * pseudo_trials) / (trials + pseudo_trials);
}

/// Parameter uncertainty folded into a count distribution. A twin fitted to few trials knows
/// its parameters only roughly; predicting with the fitted values alone (a plug-in prediction)
/// claims more certainty than it has, so its misses are scored as refutations and the designer
/// chases stimuli where an uncertain curve happens to disagree with the others. With parameter
/// draws theta_s from an approximate posterior, the predictive count has variance
///   E_s[mu_s + alpha mu_s^2] + Var_s[mu_s],
/// which an NB2 with mean m = E_s[mu_s] matches with alpha' = alpha + (1 + alpha) V / m^2,
/// V = Var_s[mu_s]. (null passes its sample mean and that mean's variance.)
torch::Tensor dispersion_with_uncertainty(const torch::Tensor& alpha, const torch::Tensor& m,
                                          const torch::Tensor& v) {
  const auto a = alpha.dim() == 1 ? alpha.unsqueeze(0) : alpha;
  const auto extra = (1.0 + a) * v / m.square().clamp_min(1e-12);
  return (a + extra).clamp(0.0, kMaxDispersion).nan_to_num(0.0);
}

/// Each unit's factor [1 x U] on its draws' counts above the floor that takes out what the
/// draws, Gaussian in the log of a rate, add to its overall level (see the file comment). For a
/// Poisson rate seen as k spikes in n trials, with a flat prior on its log, the posterior is
/// Gamma(k, n) with mean k / n; the Gaussian at its mode with the curvature there,
/// N(log(k / n), 1 / k), has mean (k / n) exp(1 / 2k). A unit's K spikes in all fix its overall
/// level to that 1 / K in the log, so exp(-1 / 2K) removes that part and leaves the spread of
/// its shape (where its peak is, how high) as the draws have it: 22% for a unit with 2 spikes,
/// under 0.5% for one with a hundred.
torch::Tensor level_correction(const torch::Tensor& y) {
  return torch::exp(-0.5 / y.sum(0).clamp_min(1.0)).unsqueeze(0);
}

/// The posterior predictive of the counts under parameter draws: mean E_s[mu_s], and the NB2
/// dispersion that matches its variance E_s[mu_s + alpha mu_s^2] + Var_s[mu_s]. The mean is the
/// draws' and not the fit's: a MAP fit shrunk by its prior sits below a peak the data support
/// (the posterior of an amplitude is skewed toward larger values), and the model check saw that
/// bias in every young fit. One draw at a time, so memory stays at two [N x U] tables. With
/// `level` ([1 x U], level_correction), every draw's mean above `floor` is scaled by it, which
/// scales the draws' mean above the floor and their variance (by its square) alike.
std::pair<torch::Tensor, torch::Tensor> predictive_from_draws(
    const torch::Tensor& alpha, std::size_t draws,
    const std::function<torch::Tensor(std::size_t)>& mean_of_draw, const torch::Tensor& level = {},
    double floor = 0.0) {
  torch::Tensor sum, sum_of_squares;
  for (std::size_t s = 0; s < draws; ++s) {
    const auto mu = mean_of_draw(s);
    sum = s == 0 ? mu.clone() : sum + mu;
    sum_of_squares = s == 0 ? mu.square() : sum_of_squares + mu.square();
  }
  const auto n = static_cast<double>(draws);
  auto mean = sum / n;
  auto variance = (sum_of_squares / n - mean.square()).clamp_min(0.0);
  if (level.defined()) {
    mean = floor + level * (mean - floor);
    variance = variance * level.square();
  }
  return {mean, dispersion_with_uncertainty(alpha, mean, variance)};
}

/// Draws for the Laplace approximation are the same standard normals at every fit (a fixed
/// seed): a replayed or resumed session refits to the same trials and must predict the same
/// numbers, and common draws keep successive fits' predictions from jittering.
constexpr std::uint64_t kLaplaceSeed = 0x7717c0de;
/// The fraction of a draw's offset that mean_directions() steps either way: small enough that
/// the central difference is the slope (its error goes as the step squared), large enough that
/// it is not rounding.
constexpr double kSlopeStep = 1e-3;
constexpr std::int64_t kLaplaceDraws = 32;
/// How far (nats of a unit's negative log posterior) a start may trail the unit's best after the
/// joint L-BFGS run and still get Newton steps. Measured after 30 joint iterations, where the
/// order of the starts is not yet settled: at 2 nats the polished fits of 384 units lost about
/// half of what polishing every start gains over the joint run (bench_refit --convergence), at
/// 15 nats nothing, in a third less time than polishing every start.
constexpr double kPolishMargin = 15.0;
/// The lengths newton_polish tries along each unit's step (at most 1 in any coordinate).
constexpr std::array<double, 10> kNewtonStepLengths = {8.0,  4.0,   2.0,    1.0,     0.5,
                                                       0.25, 0.125, 0.0625, 0.03125, 0.015625};

/// Every unit's gradient [U x K] and Hessian block [U x K x K] of `loss` (a scalar, the sum of
/// independent per-unit terms) with respect to `theta` (leaves requiring grad, units on
/// dimension 0, [U] or [U x F]; K is the total width). Units are independent, so the Hessian is
/// block-diagonal and one second backward pass gives one row of every unit's block: K + 1 passes
/// in all, whatever the number of units.
struct UnitDerivatives {
  torch::Tensor gradient;
  torch::Tensor hessian;
};
UnitDerivatives unit_derivatives(const std::vector<torch::Tensor>& theta,
                                 const torch::Tensor& loss) {
  const auto u = theta.front().size(0);
  const auto options = theta.front().options().requires_grad(false);
  auto flat = [&](const std::vector<torch::Tensor>& parts) {
    std::vector<torch::Tensor> columns;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto width = theta[i].dim() == 1 ? 1 : theta[i].size(1);
      columns.push_back(parts[i].defined() ? parts[i].reshape({u, width})
                                           : torch::zeros({u, width}, options));
    }
    return torch::cat(columns, 1);  // [U x K]
  };
  const auto gradient = flat(torch::autograd::grad({loss}, theta, {}, true, true, true));
  std::vector<torch::Tensor> rows;
  for (std::int64_t k = 0; k < gradient.size(1); ++k) {
    rows.push_back(
        flat(torch::autograd::grad({gradient.select(1, k).sum()}, theta, {}, true, false, true)));
  }
  return {gradient.detach(), torch::stack(rows, 1).detach()};
}

/// The Laplace approximation of each unit's parameter posterior at a MAP fit: a Gaussian in the
/// fit's unconstrained coordinates whose covariance is the inverse Hessian of the negative log
/// posterior, and kLaplaceDraws draws from it. `theta` holds the fitted parameters, each with
/// units on dimension 0 ([U] or [U x F]); `negative_log_posterior` sums every unit's value.
/// A parameter without a prior (a preferred direction) can have ~0 curvature where the fit is
/// flat: every eigenvalue is floored at 1 / pi^2, a standard deviation of at most pi in any
/// direction (the whole circle for an angle), which keeps the Gaussian proper without claiming
/// knowledge the data do not give. A unit whose Hessian is not finite gets no spread rather than
/// an invented one. Returns the draws, each shaped as `theta`.
std::vector<std::vector<torch::Tensor>> laplace_draws(
    std::vector<torch::Tensor> theta,
    const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& negative_log_posterior) {
  const auto options = theta.front().options().requires_grad(false);
  const auto u = theta.front().size(0);
  std::vector<std::int64_t> widths;
  for (auto& t : theta) {
    t = t.detach().clone().set_requires_grad(true);
    widths.push_back(t.dim() == 1 ? 1 : t.size(1));
  }
  torch::Tensor hessian;
  {
    torch::AutoGradMode enable_grad(true);  // fits call this under their no-grad guards
    hessian = unit_derivatives(theta, negative_log_posterior(theta)).hessian;
  }
  torch::NoGradGuard no_grad;
  const auto k = hessian.size(1);
  hessian = 0.5 * (hessian + hessian.transpose(1, 2));
  const auto finite = torch::isfinite(hessian).reshape({u, -1}).all(1);
  hessian = torch::where(finite.reshape({u, 1, 1}), hessian,
                         torch::eye(k, options).unsqueeze(0).expand({u, k, k}));
  const auto [eigenvalues, eigenvectors] = torch::linalg_eigh(hessian);
  const double floor = 1.0 / (std::numbers::pi * std::numbers::pi);
  const auto scale = torch::where(finite.unsqueeze(1), eigenvalues.clamp_min(floor).rsqrt(),
                                  torch::zeros_like(eigenvalues));
  const auto factor = eigenvectors * scale.unsqueeze(1);  // [U x K x K]: Sigma = F F^T
  auto generator = at::make_generator<at::CPUGeneratorImpl>(kLaplaceSeed);
  // Antithetic pairs (z, -z): the draws' mean is exact for whatever is linear in the parameters,
  // so 32 draws estimate the predictive mean with little Monte Carlo error.
  const auto half = torch::randn({kLaplaceDraws / 2, u, k}, generator,
                                 torch::TensorOptions().dtype(torch::kDouble));
  const auto z = torch::cat({half, -half}).to(options.device());
  const auto delta = torch::einsum("ukj,suj->suk", {factor, z});  // [S x U x K]
  std::vector<std::vector<torch::Tensor>> draws;
  for (std::int64_t s = 0; s < kLaplaceDraws; ++s) {
    std::vector<torch::Tensor> draw;
    std::int64_t column = 0;
    for (std::size_t i = 0; i < theta.size(); ++i) {
      draw.push_back(theta[i].detach() +
                     delta[s].narrow(1, column, widths[i]).reshape(theta[i].sizes()));
      column += widths[i];
    }
    draws.push_back(std::move(draw));
  }
  return draws;
}

/// The loss of the units (columns) `columns` ([A] indices) with parameter rows `theta` (each [A]
/// or [A x F], in the fit's order of free parameters): one value per unit, [A].
using ColumnLoss =
    std::function<torch::Tensor(const std::vector<torch::Tensor>& theta, const torch::Tensor&)>;

/// Damped Newton steps on every unit's own loss, `iterations` at most, each unit with its own
/// step length. One L-BFGS run over every unit at once shares one line search and one curvature
/// memory among hundreds of independent problems: at 384 units it stops far from most units'
/// optima (bench_refit --convergence). A unit's few parameters make its exact Hessian cheap
/// (unit_derivatives), and Newton converges on each unit alone. Negative curvature is taken by
/// its magnitude (a saddle-free step, Dauphin et al. 2014, NeurIPS), a step is at most 1 in
/// every unconstrained coordinate, and each unit takes the multiple of it in
/// kNewtonStepLengths that lowers its loss most (none: it stays). `active` ([A] indices) says which
/// units to polish. A unit leaves that set once its gradient is ~0 or its loss falls by less than
/// 1e-4 nats, so later steps cost only what the units still moving need.
///
/// Off by default (newton_iterations 0): at 384 units it brings nearly every unit to the optimum
/// it has alone and predicts held-out trials better, but it doubles a refit, and at 24 trials a
/// converged fit's Laplace predictive scored below its own plug-in where the joint run's did not
/// (docs/session.md, "Fitting many units at once").
void newton_polish(const std::vector<torch::Tensor>& params, const ColumnLoss& loss_of,
                   int iterations, torch::Tensor active) {
  torch::NoGradGuard no_grad;
  std::vector<std::int64_t> widths;
  for (const auto& p : params) widths.push_back(p.dim() == 1 ? 1 : p.size(1));
  for (int iteration = 0; iteration < iterations && active.numel() > 0; ++iteration) {
    const auto a = active.numel();
    std::vector<torch::Tensor> theta;
    for (const auto& p : params) theta.push_back(p.index_select(0, active).detach());
    torch::Tensor loss;
    UnitDerivatives d;
    {
      torch::AutoGradMode enable_grad(true);
      for (auto& t : theta) t.set_requires_grad(true);
      const auto per_unit = loss_of(theta, active);
      d = unit_derivatives(theta, per_unit.sum());
      loss = per_unit.detach();
    }
    for (auto& t : theta) t = t.detach();
    const auto k = d.hessian.size(1);
    const auto symmetric = 0.5 * (d.hessian + d.hessian.transpose(1, 2));
    const auto usable = torch::isfinite(symmetric).reshape({a, -1}).all(1) &
                        torch::isfinite(d.gradient).all(1) & torch::isfinite(loss) &
                        (d.gradient.abs().amax(1) > 1e-6);
    const auto hessian =
        torch::where(usable.reshape({a, 1, 1}), symmetric,
                     torch::eye(k, symmetric.options()).unsqueeze(0).expand({a, k, k}));
    const auto [eigenvalues, eigenvectors] = torch::linalg_eigh(hessian);
    const auto inverse = eigenvalues.abs().clamp_min(1e-6).reciprocal();
    const auto projected = torch::einsum("ukj,uk->uj", {eigenvectors, d.gradient});
    auto step = -torch::einsum("ujk,uk->uj", {eigenvectors, inverse * projected});
    step = torch::where(usable.unsqueeze(1), step, torch::zeros_like(step));
    step = step / step.abs().amax(1, true).clamp_min(1.0);

    // Every length of a geometric grid, each unit keeping its best: longer than the capped step
    // too, because along negative curvature (most units still moving after a few steps, mainly
    // in the amplitude) the capped step alone crawls.
    std::vector<torch::Tensor> best = theta;
    auto best_loss = loss.clone();
    for (const double length : kNewtonStepLengths) {
      std::vector<torch::Tensor> trial_theta;
      std::int64_t column = 0;
      for (std::size_t i = 0; i < theta.size(); ++i) {
        trial_theta.push_back(theta[i] +
                              length * step.narrow(1, column, widths[i]).reshape(theta[i].sizes()));
        column += widths[i];
      }
      const auto trial = loss_of(trial_theta, active);
      const auto better = usable & torch::isfinite(trial) & (trial < best_loss);
      for (std::size_t i = 0; i < theta.size(); ++i) {
        std::vector<std::int64_t> shape(static_cast<std::size_t>(theta[i].dim()), 1);
        shape[0] = a;
        best[i] = torch::where(better.reshape(shape), trial_theta[i], best[i]);
      }
      best_loss = torch::where(better, trial, best_loss);
    }
    for (std::size_t i = 0; i < params.size(); ++i) params[i].index_copy_(0, active, best[i]);
    // Still moving: its loss fell by more than a change that could matter to a prediction.
    const auto keep = loss - best_loss > 1e-4;
    active = active.index_select(0, keep.nonzero().squeeze(1));
  }
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
// NR(c) = c^n / (c^n + c50^n), 1 without a contrast dimension. With a stimulus dimension named
// "spatial_frequency" (cycles/deg, all > 0) the evoked term is also scaled by
// G(sf) = exp(-(log2 sf - mu)^2 / (2 sigma^2)), a Gaussian on a log frequency axis, the usual
// description of V1 spatial-frequency tuning (De Valois, Albrecht & Thorell 1982); direction,
// contrast and spatial frequency act separably.
// orientation_tuning: the same with cos(2 (theta - pref)): a von Mises function of twice the
// direction, i.e. two equal lobes 180 deg apart, so a grating and its reverse drive the unit
// equally (Swindale 1998, Biol. Cybern. 78:45, reviews such orientation tuning functions). The
// two families differ only in that harmonic; a session that holds both asks whether the units
// are direction- or orientation-selective, and the stimuli that answer it are the preferred
// direction and its opposite.

//
// Priors (MAP fit; every standard deviation is multiplied by the family parameter
// "prior_width", default 1, so a protocol can weaken (> 1) or tighten (< 1) them all at once):
//  - log baseline ~ N(log m, 1.0), m = the unit's mean count so far above the rate floor (which
//    mean() adds back; at least 1/1000 of the floor): baseline may sit anywhere within a factor
//    ~e of the mean (an evoked response pulls it below), and a unit that has been silent is
//    predicted at the floor, as the null family predicts it. Centred at the mean itself, a silent
//    unit's baseline and amplitude sat near the floor each and it was predicted at ~3 floors; a
//    probe's hundreds of silent channels then cost a tuned twin ~0.01 nats each per trial,
//    enough to hand one tuned unit's session to the null.
//  - log amplitude ~ N(log(r m), 1.0), r = "prior_amplitude_ratio" (default 0.25): a small
//    modulation relative to the unit's mean, so a fit to few trials stays near flat; a peak
//    10x the prior's (amplitude 2.5 m, typical of a well-tuned V1 unit) costs ~2.7 nats per
//    unit, which a few dozen trials of such a unit pay many times over. With many units, log r
//    is learnt from them (empirical Bayes, the population's centre of log amplitude / mean):
//    after each fit it moves to (P log r0 + sum over units with a spike of the unit's fitted
//    log(amplitude / m)) / (P + those units), P = "prior_ratio_units" (default 16), so two units
//    barely move it and a probe's hundreds set it. The fixed r shrank every unit's young fit
//    the same way (toward flat), and the model check sums its units' errors within a trial, so
//    a bias they share grows as the units while their noise grows as the root: with an LNP
//    rival, which predicts more stimulus dependence, the check rejected the true twin in 13 of
//    100 sessions of 16 units and 53 of 100 of 128 (bench_check_size --lnp --units N); pooled,
//    3 of 100 and 8 of 50. Pooling the centres of kappa, c50 and n as well did no better.
//  - log kappa ~ N(log kappa0, 0.75), kappa0 = "kappa" (default 2, a half-width at half-height
//    of ~50 deg): V1 direction bandwidths are mostly 20-60 deg half-width (Gizzi et al. 1990;
//    Ringach, Shapley & Hawken 2002), kappa ~ 0.7-8; the prior keeps one lucky trial from
//    producing a needle-sharp peak. For orientation_tuning kappa acts on the doubled angle:
//    kappa 2 is a half-width of ~25 deg, kappa 0.7-8 spans ~12-45 deg, the range of V1
//    orientation bandwidths in the same surveys (and Niell & Stryker 2008 in mouse V1).
//  - logit(c50 / max contrast) ~ N(logit(c50_0), 1.0), c50_0 = "c50" (default 0.3 x max);
//    log n ~ N(log n0, 0.5), n0 = "n" (default 2): Naka-Rushton fits of V1 cells have
//    semi-saturation contrasts mostly 0.1-0.4 and exponents around 2 (1-4) (Albrecht & Hamilton
//    1982; Sclar, Maunsell & Lennie 1990).
//  - preferred direction (orientation): uniform on the circle (no prior).
//  - spatial frequency: mu ~ N(log2 sf0, max(1, half the log2 range of the protocol's values)),
//    sf0 = "preferred_sf_cpd" (default the values' geometric centre), so the preference may sit
//    anywhere among the values offered; log sigma ~ N(log sigma0, 0.5), sigma0 =
//    "sf_sigma_octaves" (default 0.6: a full width at half height of 1.4 octaves, the median of
//    macaque V1 cells in De Valois et al. 1982; most lie within 0.7-2.6 octaves).
// The prior is added once per fit while the likelihood grows with the trials, so after a few
// hundred trials it moves the estimates by a small fraction of their standard errors.

class AngularTuning final : public TorchTwin {
  static constexpr double kAmplitudeRatio = 0.25;
  static constexpr double kRatioPriorUnits = 16.0;
  static constexpr double kLogBaselineSd = 1.0;
  static constexpr double kLogAmplitudeSd = 1.0;
  static constexpr double kLogKappaSd = 0.75;
  static constexpr double kLogitC50Sd = 1.0;
  static constexpr double kLogNSd = 0.5;
  static constexpr double kMinKappa = 0.05;
  static constexpr double kLogSfSigmaSd = 0.5;
  static constexpr double kMinSfSigma = 0.05;  // octaves: keeps G smooth between grid values

 public:
  /// `cycles` 1: direction tuning; 2: orientation tuning (the harmonic of the direction).
  AngularTuning(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
                std::size_t units, const TwinOptions& options, int cycles)
      : TorchTwin(spec, space, units, options),
        cycles_(cycles),
        family_(cycles == 2 ? "orientation_tuning" : "direction_tuning") {
    check_params(spec, {"preferred_deg", "kappa", "baseline_hz", "amplitude_hz", "c50", "n",
                        "max_iterations", "newton_iterations", "poisson", "prior_amplitude_ratio",
                        "prior_ratio_units", "prior_width", "parameter_uncertainty",
                        "preferred_sf_cpd", "sf_sigma_octaves"});
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
          "hypothesis '" + spec.name + "': family " + std::string(family_) +
          " needs a stimulus dimension named 'direction' or one whose unit is 'deg'; this "
          "stimulus space has none");
    }
    contrast_ = space.dimension_index("contrast");
    if (contrast_) {
      for (const double v : space.dimensions[*contrast_].values) {
        max_contrast_ = std::max(max_contrast_, std::abs(v));
      }
      if (!(max_contrast_ > 0.0)) max_contrast_ = 1.0;
    }
    spatial_frequency_ = space.dimension_index("spatial_frequency");
    if (spatial_frequency_) {
      const auto& values = space.dimensions[*spatial_frequency_].values;
      double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0.0;
      for (const double v : values) {
        if (!(v > 0.0) || !std::isfinite(v)) {
          throw std::invalid_argument("hypothesis '" + spec.name + "': family " +
                                      std::string(family_) +
                                      " reads 'spatial_frequency' as cycles/deg, so every value "
                                      "must be > 0; it has " +
                                      std::to_string(v));
        }
        lo = std::min(lo, std::log2(v));
        hi = std::max(hi, std::log2(v));
        sum += std::log2(v);
      }
      sf_prior_sd_ = std::max(1.0, 0.5 * (hi - lo));
      log2_sf0_ = sum / static_cast<double>(values.size());
    }
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    kappa0_ = param_or(spec, "kappa", 2.0);
    c500_ = param_or(spec, "c50", 0.3 * max_contrast_);
    n0_ = param_or(spec, "n", 2.0);
    max_iterations_ = static_cast<int>(param_or(spec, "max_iterations", 100));
    newton_iterations_ = static_cast<int>(param_or(spec, "newton_iterations", 0));
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    amplitude_ratio_ = param_or(spec, "prior_amplitude_ratio", kAmplitudeRatio);
    ratio_prior_units_ = param_or(spec, "prior_ratio_units", kRatioPriorUnits);
    prior_width_ = param_or(spec, "prior_width", 1.0);
    parameter_uncertainty_ = param_or(spec, "parameter_uncertainty", 1.0) != 0.0;
    if (spec.params.contains("preferred_sf_cpd")) {
      const double sf0 = param_or(spec, "preferred_sf_cpd", 1.0);
      if (!(sf0 > 0.0)) {
        throw std::invalid_argument("hypothesis '" + spec.name +
                                    "': preferred_sf_cpd must be > 0 (cycles/deg)");
      }
      log2_sf0_ = std::log2(sf0);
    }
    sf_sigma0_ = param_or(spec, "sf_sigma_octaves", 0.6);
    if (!(sf_sigma0_ > kMinSfSigma)) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': sf_sigma_octaves must be > " +
                                  std::to_string(kMinSfSigma));
    }
    log_sf_sigma0_ = std::log(sf_sigma0_);
    if (!(kappa0_ >= 0.0) || !(c500_ > 0.0) || !(n0_ > 0.0) || max_iterations_ < 1 ||
        newton_iterations_ < 0 || !(amplitude_ratio_ > 0.0) || !(prior_width_ > 0.0) ||
        !(ratio_prior_units_ > 0.0)) {
      throw std::invalid_argument(
          "hypothesis '" + spec.name +
          "': kappa must be >= 0, c50, n, prior_amplitude_ratio, prior_ratio_units and "
          "prior_width > 0, max_iterations >= 1, newton_iterations >= 0");
    }
    log_amplitude_ratio_ = std::log(amplitude_ratio_);
    // Prior centres of the shape parameters: the protocol's stated tuning, else typical V1.
    log_kappa0_ = std::log(std::max(kappa0_, kMinKappa));
    logit_c500_ = logit(c500_ / max_contrast_);
    log_n0_ = std::log(std::max(n0_, 0.5 + 1e-3));
    // The prior: what the hypothesis predicts before any trial. Untuned 5 Hz unless the
    // protocol states a tuning.
    const auto u = static_cast<std::int64_t>(units);
    const double base = std::max(param_or(spec, "baseline_hz", kDefaultRateHz) * w, 1e-9);
    const double amp = std::max(param_or(spec, "amplitude_hz", 0.0) * w, 1e-9);
    // The rate floor is part of mean(): the baseline excludes it, so that an untuned prior
    // predicts exactly what the null family's prior does (else every stimulus would seem to
    // tell the two apart by the floor, and the designer would repeat one of them for nothing).
    raw_baseline_ = inverse_softplus(torch::full({u}, std::max(base - floor_, 1e-9), real()));
    raw_amplitude_ = inverse_softplus(torch::full({u}, amp, real()));
    preferred_ = torch::full({u}, param_or(spec, "preferred_deg", 0.0) * kDegToRad, real());
    preferred_ = wrap(preferred_);
    raw_kappa_ = inverse_softplus(torch::full({u}, std::max(kappa0_, 1e-6), real()));
    raw_c50_ = torch::full({u}, logit(c500_ / max_contrast_), real());
    raw_n_ = inverse_softplus(torch::full({u}, std::max(n0_ - 0.5, 1e-6), real()));
    sf_ = torch::full({u}, log2_sf0_, real());
    raw_sf_sigma_ = inverse_softplus(torch::full({u}, sf_sigma0_ - kMinSfSigma, real()));
    dispersion_ = torch::zeros({u}, real());
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return family_; }

 private:
  struct Params {
    // raw, each [K]; sf is the preferred log2 spatial frequency, sf_sigma its width (raw)
    torch::Tensor baseline, amplitude, preferred, kappa, c50, n, sf, sf_sigma;
  };

  /// The members of `p` that the stimulus space gives a meaning to, in the fit's order: those
  /// the fits move and the Laplace draws spread (the others have no curvature).
  [[nodiscard]] std::vector<torch::Tensor*> free_members(Params& p) const {
    std::vector<torch::Tensor*> members = {&p.baseline, &p.amplitude, &p.preferred, &p.kappa};
    if (contrast_) members.insert(members.end(), {&p.c50, &p.n});
    if (spatial_frequency_) members.insert(members.end(), {&p.sf, &p.sf_sigma});
    return members;
  }
  /// Rows `columns` of every member of `p`.
  [[nodiscard]] static Params select_columns(const Params& p, const torch::Tensor& columns) {
    return {p.baseline.index_select(0, columns),  p.amplitude.index_select(0, columns),
            p.preferred.index_select(0, columns), p.kappa.index_select(0, columns),
            p.c50.index_select(0, columns),       p.n.index_select(0, columns),
            p.sf.index_select(0, columns),        p.sf_sigma.index_select(0, columns)};
  }
  /// `base` with its free members replaced by `values`, in free_members() order.
  [[nodiscard]] Params with_free(Params base, const std::vector<torch::Tensor>& values) const {
    const std::vector<torch::Tensor*> members = free_members(base);
    for (std::size_t i = 0; i < members.size(); ++i) *members[i] = values[i];
    return base;
  }

  /// An angle (radians) into one period of the tuning curve, centred on 0: (-pi, pi] for
  /// direction, (-pi/2, pi/2] for orientation, so it reads as a direction or an orientation.
  [[nodiscard]] torch::Tensor wrap(const torch::Tensor& angle) const {
    const double c = cycles_;
    return torch::atan2(torch::sin(c * angle), torch::cos(c * angle)) / c;
  }

  static double logit(double p) {
    p = std::clamp(p, 1e-6, 1.0 - 1e-6);
    return std::log(p / (1.0 - p));
  }

  [[nodiscard]] Params current() const {
    return {raw_baseline_, raw_amplitude_, preferred_, raw_kappa_,
            raw_c50_,      raw_n_,         sf_,        raw_sf_sigma_};
  }

  /// Stimuli (trials or candidates) as each dimension's distinct values and, per row, which one.
  /// The tuning curve is separable, so its factors (the transcendental part of every evaluation)
  /// are computed once per distinct value and then gathered per row: a session has 16 directions
  /// but hundreds of trials, and a fit evaluates the curve and its gradient a hundred times.
  struct Levels {
    torch::Tensor values;   ///< [L] distinct values
    torch::Tensor inverse;  ///< [N] int64: row -> index into values
  };
  struct IndexedStimuli {
    Levels direction;
    std::optional<Levels> contrast, spatial_frequency;
  };

  [[nodiscard]] static Levels levels_of(const torch::Tensor& x, std::size_t d) {
    auto [values, inverse] =
        at::_unique(x.select(1, static_cast<std::int64_t>(d)).contiguous(), true, true);
    return {values, inverse};
  }

  [[nodiscard]] IndexedStimuli index_stimuli(const torch::Tensor& x) const {
    IndexedStimuli indexed{levels_of(x, *direction_), std::nullopt, std::nullopt};
    if (contrast_) indexed.contrast = levels_of(x, *contrast_);
    if (spatial_frequency_) indexed.spatial_frequency = levels_of(x, *spatial_frequency_);
    return indexed;
  }

  /// NR(c) for each contrast value and column: [L x K].
  [[nodiscard]] torch::Tensor contrast_gain(const torch::Tensor& contrast, const Params& p) const {
    const auto c = contrast.abs().clamp_min(1e-9);
    const auto c50 = torch::sigmoid(p.c50) * max_contrast_;
    const auto n = torch::nn::functional::softplus(p.n) + 0.5;
    // c^n / (c^n + c50^n) = sigmoid(n (log c - log c50)): stable for c -> 0 and large n.
    return torch::sigmoid(n.unsqueeze(0) * (c.log().unsqueeze(1) - c50.log().unsqueeze(0)));
  }

  /// G(sf) for each spatial-frequency value and column: [L x K].
  [[nodiscard]] torch::Tensor spatial_frequency_gain(const torch::Tensor& frequency,
                                                     const Params& p) const {
    const auto log2_sf = frequency.clamp_min(1e-12).log2();
    const auto sigma = torch::nn::functional::softplus(p.sf_sigma) + kMinSfSigma;
    const auto octaves = log2_sf.unsqueeze(1) - p.sf.unsqueeze(0);
    return torch::exp(-octaves.square() / (2.0 * sigma.square()).unsqueeze(0));
  }

  /// NR(c) G(sf) for every row and column: [N x K], or an undefined tensor when the space has
  /// neither dimension (the factor is 1).
  [[nodiscard]] torch::Tensor stimulus_gain(const IndexedStimuli& xi, const Params& p) const {
    torch::Tensor gain;
    if (xi.contrast) {
      gain = contrast_gain(xi.contrast->values, p).index_select(0, xi.contrast->inverse);
    }
    if (xi.spatial_frequency) {
      const auto g = spatial_frequency_gain(xi.spatial_frequency->values, p)
                         .index_select(0, xi.spatial_frequency->inverse);
      gain = gain.defined() ? gain * g : g;
    }
    return gain;
  }

  [[nodiscard]] torch::Tensor mean(const IndexedStimuli& xi, const Params& p) const {
    namespace F = torch::nn::functional;
    const auto theta = xi.direction.values.unsqueeze(1) * kDegToRad;
    const auto kappa = F::softplus(p.kappa).unsqueeze(0);
    auto evoked =
        torch::exp(kappa * (torch::cos(double(cycles_) * (theta - p.preferred.unsqueeze(0))) - 1.0))
            .index_select(0, xi.direction.inverse);
    const auto gain = stimulus_gain(xi, p);
    if (gain.defined()) evoked = evoked * gain;
    return floor_ + F::softplus(p.baseline).unsqueeze(0) +
           F::softplus(p.amplitude).unsqueeze(0) * evoked;
  }

  Evaluation evaluate(const torch::Tensor& x) override {
    const IndexedStimuli xi = index_stimuli(x);
    if (draws_.empty()) return {mean(xi, current()), dispersion_};
    auto [predicted, dispersion] = predictive_from_draws(
        dispersion_, draws_.size(), [&](std::size_t s) { return mean(xi, draws_[s]); }, level_,
        floor_);
    return {predicted, dispersion};
  }

  /// The means' slopes along the first half of the Laplace draws' offsets (the second half
  /// are their antithetic mirrors), by central differences at the fit: the tangent of the
  /// family at its fit, K dimensions for K free parameters. K + 2 random offsets span it (with
  /// two to spare against a near-degenerate draw); more would only cost. The draws themselves
  /// would add their curvature's directions too, and with a few dozen candidates they span
  /// nearly everything.
  torch::Tensor mean_directions(const torch::Tensor& x) override {
    if (draws_.empty()) return {};
    const IndexedStimuli xi = index_stimuli(x);
    const Params fitted = current();
    const auto along = [&](const Params& draw, double step) {
      const auto move = [&](const torch::Tensor& at, const torch::Tensor& to) {
        return at + step * (to - at);
      };
      return Params{move(fitted.baseline, draw.baseline),
                    move(fitted.amplitude, draw.amplitude),
                    move(fitted.preferred, draw.preferred),
                    move(fitted.kappa, draw.kappa),
                    move(fitted.c50, draw.c50),
                    move(fitted.n, draw.n),
                    move(fitted.sf, draw.sf),
                    move(fitted.sf_sigma, draw.sf_sigma)};
    };
    std::vector<torch::Tensor> slopes;
    Params copy = fitted;
    const std::size_t directions = std::min(draws_.size() / 2, free_members(copy).size() + 2);
    for (std::size_t s = 0; s < directions; ++s) {
      slopes.push_back(
          level_ *
          (mean(xi, along(draws_[s], kSlopeStep)) - mean(xi, along(draws_[s], -kSlopeStep))) /
          (2.0 * kSlopeStep));
    }
    return torch::stack(slopes);
  }

  torch::Tensor plug_in_mean(const torch::Tensor& x) override {
    if (draws_.empty()) return {};
    return floor_ + level_ * (mean(index_stimuli(x), current()) - floor_);
  }

  /// Each column's negative log posterior: the likelihood of every trial plus the prior once.
  [[nodiscard]] torch::Tensor negative_log_posterior(const IndexedStimuli& xi, const Params& p,
                                                     const torch::Tensor& y,
                                                     const torch::Tensor& alpha,
                                                     const torch::Tensor& overall) const {
    return count_nll_per_unit(mean(xi, p), y, alpha) + prior_nll(p, overall);
  }
  /// Laplace draws of every unit's parameters at the fit (see laplace_draws).
  void draw_parameters(const IndexedStimuli& xi, const torch::Tensor& y,
                       const torch::Tensor& overall) {
    draws_.clear();
    if (!parameter_uncertainty_) return;
    Params fitted = current();
    std::vector<torch::Tensor> theta;
    for (const torch::Tensor* member : free_members(fitted)) theta.push_back(*member);
    auto as_params = [&](const std::vector<torch::Tensor>& t) { return with_free(fitted, t); };
    for (const auto& draw : laplace_draws(theta, [&](const std::vector<torch::Tensor>& t) {
           return negative_log_posterior(xi, as_params(t), y, dispersion_, overall).sum();
         })) {
      draws_.push_back(as_params(draw));
    }
    level_ = level_correction(y);
  }

  /// Every unit's mean count at each value of dimension `d`, over the trials that had it.
  struct LevelMeans {
    torch::Tensor levels;  ///< [L] the space's values
    torch::Tensor seen;    ///< [L x 1] whether any trial had the value
    torch::Tensor means;   ///< [L x U] (0 where unseen)
  };
  [[nodiscard]] LevelMeans level_means(const torch::Tensor& x, const torch::Tensor& y,
                                       std::size_t d) const {
    auto levels = torch::tensor(space().dimensions[d].values, real());
    const auto value = x.select(1, static_cast<std::int64_t>(d));
    const auto onehot =
        ((value.unsqueeze(1) - levels.unsqueeze(0)).abs() < 1e-6).to(torch::kDouble);  // [N x L]
    const auto trials = onehot.sum(0);
    return {levels, (trials > 0).unsqueeze(1),
            onehot.t().matmul(y) / trials.clamp_min(1.0).unsqueeze(1)};
  }

  /// Each unit's value of dimension `d` with the highest mean count: [U].
  [[nodiscard]] torch::Tensor best_level(const torch::Tensor& x, const torch::Tensor& y,
                                         std::size_t d) const {
    const auto [levels, seen, means] = level_means(x, y, d);
    const auto best = torch::where(seen, means, torch::full_like(means, -1.0)).argmax(0);
    return levels.index_select(0, best);
  }

  /// Starts read from the data: preferred direction at the arg-max (`vector_sum` false) or at
  /// the circular mean (true; of the doubled angles for orientation) of the mean count per
  /// direction, baseline at the least responsive direction, amplitude at the range.
  [[nodiscard]] Params data_start(const torch::Tensor& x, const torch::Tensor& y,
                                  bool vector_sum) const {
    const auto [dirs, seen, means] = level_means(x, y, *direction_);
    const double inf = std::numeric_limits<double>::infinity();
    const auto hi = torch::where(seen, means, torch::full_like(means, -inf)).amax(0);
    const auto lo = torch::where(seen, means, torch::full_like(means, inf)).amin(0);
    torch::Tensor preferred;
    if (vector_sum) {
      const auto weight = torch::where(seen, means - lo.unsqueeze(0), torch::zeros_like(means));
      const auto rad = (dirs * (kDegToRad * cycles_)).unsqueeze(1);
      preferred =
          torch::atan2((weight * torch::sin(rad)).sum(0), (weight * torch::cos(rad)).sum(0)) /
          double(cycles_);
    } else {
      preferred =
          dirs.index_select(0, torch::where(seen, means, torch::full_like(means, -inf)).argmax(0)) *
          kDegToRad;
    }
    const auto u = static_cast<std::int64_t>(y.size(1));
    Params p;
    p.c50 = torch::full({u}, logit(c500_ / max_contrast_), real());
    p.n = inverse_softplus(torch::full({u}, std::max(n0_ - 0.5, 1e-6), real()));
    p.sf = spatial_frequency_ ? best_level(x, y, *spatial_frequency_).log2()
                              : torch::full({u}, log2_sf0_, real());
    p.sf_sigma = inverse_softplus(torch::full({u}, sf_sigma0_ - kMinSfSigma, real()));
    const auto stimulus = stimulus_gain(index_stimuli(x), p);
    const double gain = stimulus.defined() ? stimulus.mean().item<double>() : 1.0;
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
    // A third start sits at the prior's centre (flat at the unit's mean), the mode a fit to
    // few trials should settle in when the data do not show a tuning.
    const IndexedStimuli xi = index_stimuli(x);
    const auto overall = mean_above_floor(y, floor_);
    std::vector<Params> starts;
    if (fitted_) starts.push_back(current());
    starts.push_back(data_start(x, y, false));
    if (!fitted_) starts.push_back(data_start(x, y, true));
    starts.push_back(flat_start(y, overall));
    const auto s = static_cast<std::int64_t>(starts.size());
    const auto u = y.size(1);
    auto stack = [&](auto member) {
      std::vector<torch::Tensor> parts;
      for (const auto& p : starts) parts.push_back(p.*member);
      return torch::cat(parts).detach().clone();
    };
    Params all{stack(&Params::baseline), stack(&Params::amplitude), stack(&Params::preferred),
               stack(&Params::kappa),    stack(&Params::c50),       stack(&Params::n),
               stack(&Params::sf),       stack(&Params::sf_sigma)};
    const auto y_all = y.repeat({1, s});
    const auto alpha_all = dispersion_.repeat({s});
    const auto overall_all = overall.repeat({s});
    auto per_unit = [&] { return negative_log_posterior(xi, all, y_all, alpha_all, overall_all); };
    std::vector<torch::Tensor> free;
    for (const torch::Tensor* member : free_members(all)) free.push_back(*member);
    // The same loss for a subset of columns, for the Newton steps on each unit.
    auto column_loss = [&](const std::vector<torch::Tensor>& theta, const torch::Tensor& columns) {
      return negative_log_posterior(
          xi, with_free(select_columns(all, columns), theta), y_all.index_select(1, columns),
          alpha_all.index_select(0, columns), overall_all.index_select(0, columns));
    };
    auto loss = minimise(free, per_unit, static_cast<double>(y.size(0)), max_iterations_);

    torch::NoGradGuard no_grad;
    if (newton_iterations_ > 0) {
      // Newton steps on each unit's starts that are still in the running: a start more than
      // kPolishMargin behind its unit's best after the joint run seldom overtakes it, and each
      // polished start costs its share of every Hessian.
      const auto by_start = loss.reshape({s, u});
      const auto near = (by_start <= by_start.amin(0, true) + kPolishMargin).reshape({-1});
      newton_polish(free, column_loss, newton_iterations_, near.nonzero().squeeze(1));
      loss = per_unit().nan_to_num(std::numeric_limits<double>::infinity(),
                                   std::numeric_limits<double>::infinity());
    }
    const auto best = loss.reshape({s, u}).argmin(0).unsqueeze(0);  // [1 x U]
    auto pick = [&](const torch::Tensor& t) {
      return t.reshape({s, u}).gather(0, best).squeeze(0);
    };
    raw_baseline_ = pick(all.baseline);
    raw_amplitude_ = pick(all.amplitude);
    preferred_ = wrap(pick(all.preferred));
    raw_kappa_ = pick(all.kappa);
    raw_c50_ = pick(all.c50);
    raw_n_ = pick(all.n);
    sf_ = pick(all.sf);
    raw_sf_sigma_ = pick(all.sf_sigma);
    fitted_ = true;
    pool_amplitude_ratio(y, overall);
    const double fitted_params = 4.0 + (contrast_ ? 2.0 : 0.0) + (spatial_frequency_ ? 2.0 : 0.0);
    dispersion_ =
        poisson_
            ? torch::zeros({u}, real())
            : shrunk_dispersion(
                  moment_dispersion(mean(xi, current()), y, fitted_params, kMaxDispersion),
                  static_cast<double>(y.size(0)), dispersion_pseudo_trials(parameter_uncertainty_));
    draw_parameters(xi, y, overall);
  }

  /// Moves the prior's centre of log(amplitude / mean) toward the fitted units' (the file
  /// comment's empirical Bayes), for the next fit. Units without a spike carry nothing about it.
  /// Repeated fits approach the population's centre: a unit the data say little about sits at
  /// the centre it was fitted under, which only slows the approach.
  void pool_amplitude_ratio(const torch::Tensor& y, const torch::Tensor& overall) {
    namespace F = torch::nn::functional;
    const auto seen = y.sum(0) > 0;
    const auto units_seen = static_cast<double>(seen.sum().item<std::int64_t>());
    if (units_seen == 0.0) return;
    const auto log_ratio = (F::softplus(raw_amplitude_) + 1e-12).log() - overall.log();
    const double sum = log_ratio.masked_select(seen).sum().item<double>();
    const double prior = std::log(amplitude_ratio_);
    const double pooled = (ratio_prior_units_ * prior + sum) / (ratio_prior_units_ + units_seen);
    // Three prior standard deviations either way: far beyond any population this prior
    // describes, so the clamp only guards against a degenerate fit.
    log_amplitude_ratio_ =
        std::clamp(pooled, prior - 3.0 * kLogAmplitudeSd, prior + 3.0 * kLogAmplitudeSd);
  }

  /// Negative log prior density of each column's parameters ([K]), up to a constant. Gaussian
  /// in the unconstrained coordinates the fit moves in (log for positive quantities, logit for
  /// c50 as a fraction of the largest contrast); the preferred direction is uniform. `overall`
  /// is each column's mean count above the floor over the trials so far (an empirical-Bayes
  /// centre: the scale of a unit's rate is read from its data, its shape is not).
  [[nodiscard]] torch::Tensor prior_nll(const Params& p, const torch::Tensor& overall) const {
    namespace F = torch::nn::functional;
    const double w = prior_width_;
    const auto log_overall = overall.log();
    auto nll =
        gaussian_nll((F::softplus(p.baseline) + 1e-12).log(), log_overall, kLogBaselineSd * w) +
        gaussian_nll((F::softplus(p.amplitude) + 1e-12).log(), log_overall + log_amplitude_ratio_,
                     kLogAmplitudeSd * w) +
        gaussian_nll((F::softplus(p.kappa) + 1e-12).log(), log_kappa0_, kLogKappaSd * w);
    if (contrast_) {
      nll = nll + gaussian_nll(p.c50, logit_c500_, kLogitC50Sd * w) +
            gaussian_nll((F::softplus(p.n) + 0.5).log(), log_n0_, kLogNSd * w);
    }
    if (spatial_frequency_) {
      nll = nll + gaussian_nll(p.sf, log2_sf0_, sf_prior_sd_ * w) +
            gaussian_nll((F::softplus(p.sf_sigma) + kMinSfSigma).log(), log_sf_sigma0_,
                         kLogSfSigmaSd * w);
    }
    return nll;
  }

  /// The prior's centre: baseline at the unit's mean count above the floor, amplitude at the
  /// prior's small amplitude, preferred direction 0, shape at its prior centres.
  [[nodiscard]] Params flat_start(const torch::Tensor& y, const torch::Tensor& overall) const {
    const auto u = static_cast<std::int64_t>(y.size(1));
    Params p;
    p.baseline = inverse_softplus(overall);
    p.amplitude = inverse_softplus(overall * std::exp(log_amplitude_ratio_));
    p.preferred = torch::zeros({u}, real());
    p.kappa = inverse_softplus(torch::full({u}, std::max(kappa0_, kMinKappa), real()));
    p.c50 = torch::full({u}, logit_c500_, real());
    p.n = inverse_softplus(torch::full({u}, std::max(n0_ - 0.5, 1e-6), real()));
    p.sf = torch::full({u}, log2_sf0_, real());
    p.sf_sigma = inverse_softplus(torch::full({u}, sf_sigma0_ - kMinSfSigma, real()));
    return p;
  }

  int cycles_ = 1;
  std::string_view family_;
  std::optional<std::size_t> direction_;
  std::optional<std::size_t> contrast_;
  std::optional<std::size_t> spatial_frequency_;
  double max_contrast_ = 1.0;
  double log2_sf0_ = 0.0, sf_prior_sd_ = 1.0, sf_sigma0_ = 0.6, log_sf_sigma0_ = 0.0;
  double floor_ = 0.0;
  double kappa0_ = 2.0;
  double c500_ = 0.3;
  double n0_ = 2.0;
  int max_iterations_ = 100;   ///< of the joint L-BFGS run over every unit and start
  int newton_iterations_ = 0;  ///< on each unit after it (newton_polish; see its comment)
  bool poisson_ = false;
  bool fitted_ = false;
  double amplitude_ratio_ = kAmplitudeRatio;
  double ratio_prior_units_ = kRatioPriorUnits;
  double log_amplitude_ratio_ = 0.0;  ///< the prior's current centre (pool_amplitude_ratio)
  double prior_width_ = 1.0;
  bool parameter_uncertainty_ = true;
  std::vector<Params> draws_;  ///< Laplace draws of the parameters (raw), empty for plug-in
  torch::Tensor level_;        ///< [1 x U] level_correction() of the draws
  double log_kappa0_ = 0.0, logit_c500_ = 0.0, log_n0_ = 0.0;
  torch::Tensor raw_baseline_, raw_amplitude_, preferred_, raw_kappa_, raw_c50_, raw_n_;
  torch::Tensor sf_, raw_sf_sigma_;
  torch::Tensor dispersion_;
};

// ------------------------------------------------------------------------------------------
// lnp: rate = exp(w . features(stimulus) + b). Features: each non-angular dimension scaled to
// [0, 1] over its values; each angular dimension (unit deg) as cos and sin only, since a
// linear term in an angle would make 0 and 360 degrees different stimuli. "ignore_<dimension>: 1"
// leaves a dimension out, so two lnp hypotheses can ask whether the response depends on it.
//
// Prior (MAP fit): each weight ~ N(0, s^2), s = "prior_weight_sd" (default 1): with features on
// [0, 1] or [-1, 1], a weight of 1 changes the rate e-fold across a feature's range, so the
// prior allows modulations of a few-fold and shrinks a fit to few trials toward a constant rate
// (Gelman et al. 2008 use the same scale reasoning for standardised logistic inputs).
// The bias ~ N(log m, 1), m = the unit's mean count so far above the rate floor (at least
// kSilentScale floors): any unit that fires determines its bias far better than that, but a
// unit that has never fired leaves it without curvature, and its Laplace draws (standard
// deviation pi) then predicted it up to ~1.2 floors where the null predicts one.

class Lnp final : public TorchTwin {
  static constexpr double kWeightSd = 1.0;
  static constexpr double kLogBiasSd = 1.0;

 public:
  Lnp(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
      std::size_t units, const TwinOptions& options)
      : TorchTwin(spec, space, units, options) {
    std::vector<std::string> known{
        "rate_hz", "l2", "max_iterations", "poisson", "prior_weight_sd", "parameter_uncertainty"};
    for (const auto& dim : space.dimensions) known.push_back("ignore_" + dim.name);
    check_params(spec, known);
    for (std::size_t d = 0; d < space.dimension_count(); ++d) {
      const auto& dim = space.dimensions[d];
      const double ignore = param_or(spec, "ignore_" + dim.name, 0.0);
      if (ignore != 0.0 && ignore != 1.0) {
        throw std::invalid_argument("hypothesis '" + spec.name + "': ignore_" + dim.name +
                                    " must be 0 or 1, found " + std::to_string(ignore));
      }
      if (ignore == 1.0) continue;
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
    if (linear_.empty() && angular_.empty()) {
      throw std::invalid_argument("hypothesis '" + spec.name +
                                  "': lnp ignores every stimulus dimension; a rate that does not "
                                  "depend on the stimulus is family null");
    }
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    l2_ = param_or(spec, "l2", 1e-3);
    weight_sd_ = param_or(spec, "prior_weight_sd", kWeightSd);
    max_iterations_ = static_cast<int>(param_or(spec, "max_iterations", 100));
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    parameter_uncertainty_ = param_or(spec, "parameter_uncertainty", 1.0) != 0.0;
    const double rate = param_or(spec, "rate_hz", kDefaultRateHz);
    if (!(rate > 0.0) || !(l2_ >= 0.0) || max_iterations_ < 1 || !(weight_sd_ > 0.0)) {
      throw std::invalid_argument(
          "hypothesis '" + spec.name +
          "': rate_hz and prior_weight_sd must be > 0, l2 >= 0, max_iterations >= 1");
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
    return mean(features, weights_, bias_);
  }
  [[nodiscard]] torch::Tensor mean(const torch::Tensor& features, const torch::Tensor& weights,
                                   const torch::Tensor& bias) const {
    // The clamp only guards the line search against overflow; e^30 counts is not a neuron.
    return floor_ + torch::exp((features.matmul(weights.t()) + bias.unsqueeze(0)).clamp_max(30.0));
  }

  Evaluation evaluate(const torch::Tensor& x) override {
    const auto f = features(x);
    if (draws_.empty()) return {mean(f), dispersion_};
    auto [predicted, dispersion] =
        predictive_from_draws(dispersion_, draws_.size(),
                              [&](std::size_t s) { return mean(f, draws_[s][0], draws_[s][1]); });
    return {predicted, dispersion};
  }

  torch::Tensor plug_in_mean(const torch::Tensor& x) override {
    if (draws_.empty()) return {};
    return mean(features(x));
  }

  /// As direction_tuning's: slopes along K + 2 of the draws' offsets (K: weights and bias).
  torch::Tensor mean_directions(const torch::Tensor& x) override {
    if (draws_.empty()) return {};
    const auto f = features(x);
    std::vector<torch::Tensor> slopes;
    const auto k = static_cast<std::size_t>(weights_.size(1)) + 1;
    for (std::size_t s = 0; s < std::min(draws_.size() / 2, k + 2); ++s) {
      const auto dw = draws_[s][0] - weights_;
      const auto db = draws_[s][1] - bias_;
      slopes.push_back((mean(f, weights_ + kSlopeStep * dw, bias_ + kSlopeStep * db) -
                        mean(f, weights_ - kSlopeStep * dw, bias_ - kSlopeStep * db)) /
                       (2.0 * kSlopeStep));
    }
    return torch::stack(slopes);
  }

  void fit(const torch::Tensor& x, const torch::Tensor& y) override {
    const auto f = features(x);
    if (!fitted_) {
      torch::NoGradGuard no_grad;
      bias_ = torch::log((y.mean(0) - floor_).clamp_min(1e-6));
      weights_.zero_();
    }
    // MAP: the likelihood plus the Gaussian priors, once per unit (see the class comment).
    const auto log_scale = mean_above_floor(y, floor_).log();
    auto prior_nll = [&](const torch::Tensor& weights, const torch::Tensor& bias) {
      return gaussian_nll(weights, 0.0, weight_sd_).sum(1) +
             gaussian_nll(bias, log_scale, kLogBiasSd);
    };
    auto per_unit = [&] {
      return count_nll_per_unit(mean(f), y, dispersion_) + prior_nll(weights_, bias_);
    };
    // A light per-trial ridge on top keeps the weights finite where a feature never varies in
    // the data so far and for units that never fire, however many trials there are.
    auto penalty = [&] { return l2_ * weights_.square().sum(); };
    (void)minimise({weights_, bias_}, per_unit, static_cast<double>(y.size(0)), max_iterations_,
                   penalty);
    fitted_ = true;
    torch::NoGradGuard no_grad;
    dispersion_ =
        poisson_
            ? torch::zeros_like(dispersion_)
            : shrunk_dispersion(
                  moment_dispersion(mean(f), y, static_cast<double>(f.size(1) + 1), kMaxDispersion),
                  static_cast<double>(y.size(0)), dispersion_pseudo_trials(parameter_uncertainty_));
    draws_.clear();
    if (!parameter_uncertainty_) return;
    // The per-trial ridge is part of what was minimised (times the trial count, as minimise()
    // divides the rest by it), so it is part of the curvature too.
    const double trials = static_cast<double>(y.size(0));
    draws_ = laplace_draws({weights_, bias_}, [&](const std::vector<torch::Tensor>& t) {
      return (count_nll_per_unit(mean(f, t[0], t[1]), y, dispersion_) + prior_nll(t[0], t[1]))
                 .sum() +
             trials * l2_ * t[0].square().sum();
    });
  }

  std::vector<std::int64_t> linear_, angular_;
  std::vector<double> offset_, scale_;
  torch::Tensor linear_index_, angular_index_, offset_t_, scale_t_;
  double floor_ = 0.0;
  double l2_ = 1e-3;
  double weight_sd_ = kWeightSd;
  int max_iterations_ = 100;
  bool poisson_ = false;
  bool fitted_ = false;
  bool parameter_uncertainty_ = true;
  std::vector<std::vector<torch::Tensor>> draws_;  ///< Laplace draws {weights, bias}
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
    check_params(spec, {"rate_hz", "poisson", "parameter_uncertainty"});
    const double w = options.window_seconds;
    floor_ = kMinRateHz * w;
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    parameter_uncertainty_ = param_or(spec, "parameter_uncertainty", 1.0) != 0.0;
    const double rate = param_or(spec, "rate_hz", kDefaultRateHz);
    if (!(rate > 0.0)) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': rate_hz must be > 0");
    }
    const auto u = static_cast<std::int64_t>(units);
    mean_ = torch::full({u}, std::max(rate * w, floor_), real());
    dispersion_ = torch::zeros({u}, real());
    predictive_dispersion_ = dispersion_;
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return "null"; }

 private:
  Evaluation evaluate(const torch::Tensor& x) override {
    return {mean_.unsqueeze(0).expand({x.size(0), mean_.size(0)}), predictive_dispersion_};
  }

  /// The null's one direction: every candidate's mean moves with the unit's level, by the
  /// sample mean's standard error.
  torch::Tensor mean_directions(const torch::Tensor& x) override {
    if (!parameter_uncertainty_ || !fitted_) return {};
    const auto se = ((mean_ + dispersion_ * mean_.square()) / trials_).sqrt();
    return se.view({1, 1, -1}).expand({1, x.size(0), se.size(0)});
  }

  void fit(const torch::Tensor& /*x*/, const torch::Tensor& y) override {
    fitted_ = true;
    trials_ = static_cast<double>(y.size(0));
    mean_ = y.mean(0).clamp_min(floor_);
    dispersion_ = poisson_
                      ? torch::zeros_like(dispersion_)
                      : moment_dispersion(mean_.unsqueeze(0).expand_as(y), y, 1.0, kMaxDispersion);
    // The sample mean of n trials has variance (m + alpha m^2) / n; folded in as for the tuned
    // families (for Poisson counts this is the Gamma-Poisson predictive of a flat prior on the
    // rate: NB with size sum(y)), so a flat model is not more certain than its trials.
    predictive_dispersion_ =
        parameter_uncertainty_
            ? dispersion_with_uncertainty(
                  dispersion_, mean_,
                  (mean_ + dispersion_ * mean_.square()) / static_cast<double>(y.size(0)))
                  .squeeze(0)
            : dispersion_;
  }

  double floor_ = 0.0;
  bool poisson_ = false;
  bool parameter_uncertainty_ = true;
  torch::Tensor mean_, dispersion_, predictive_dispersion_;
  bool fitted_ = false;
  double trials_ = 0.0;  ///< trials of the last fit
};

}  // namespace

std::unique_ptr<Hypothesis> make_direction_tuning(const protocols::HypothesisSpec& spec,
                                                  const protocols::StimulusSpace& space,
                                                  std::size_t units, const TwinOptions& options) {
  return std::make_unique<AngularTuning>(spec, space, units, options, 1);
}

std::unique_ptr<Hypothesis> make_orientation_tuning(const protocols::HypothesisSpec& spec,
                                                    const protocols::StimulusSpace& space,
                                                    std::size_t units, const TwinOptions& options) {
  return std::make_unique<AngularTuning>(spec, space, units, options, 2);
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

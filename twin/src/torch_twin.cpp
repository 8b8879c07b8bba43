#include "torch_twin.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "twinloop/twin/model_check.hpp"

namespace twinloop::twin::detail {

torch::Device parse_device(const std::string& device, const std::string& who) {
  std::optional<torch::Device> parsed;
  try {
    parsed.emplace(device);
  } catch (const std::exception&) {
    throw std::invalid_argument("hypothesis '" + who + "': unknown device '" + device +
                                "' (expected \"cpu\" or \"cuda[:N]\")");
  }
  if (parsed->is_cpu()) return *parsed;
  if (parsed->is_cuda()) {
    if (!torch::cuda::is_available()) {
      throw std::invalid_argument("hypothesis '" + who + "': device '" + device +
                                  "' is not available (this LibTorch build or machine has no "
                                  "CUDA device); use \"cpu\"");
    }
    const auto count = static_cast<int>(torch::cuda::device_count());
    if (parsed->has_index() && parsed->index() >= count) {
      throw std::invalid_argument("hypothesis '" + who + "': device '" + device +
                                  "' does not exist (" + std::to_string(count) +
                                  " CUDA device(s))");
    }
    return *parsed;
  }
  throw std::invalid_argument("hypothesis '" + who + "': device '" + device +
                              "' is not supported (expected \"cpu\" or \"cuda[:N]\")");
}

torch::Tensor stimuli_tensor(std::span<const protocols::Stimulus> stimuli, std::size_t dimensions,
                             torch::Device device, torch::ScalarType dtype) {
  auto host = torch::empty(
      {static_cast<std::int64_t>(stimuli.size()), static_cast<std::int64_t>(dimensions)},
      torch::kDouble);
  auto* data = host.data_ptr<double>();
  for (std::size_t i = 0; i < stimuli.size(); ++i) {
    if (stimuli[i].dimension_count != dimensions) {
      throw std::invalid_argument(
          "stimulus " + std::to_string(i) + " has " + std::to_string(stimuli[i].dimension_count) +
          " dimensions; the stimulus space has " + std::to_string(dimensions));
    }
    for (std::size_t d = 0; d < dimensions; ++d) data[i * dimensions + d] = stimuli[i].value(d);
  }
  return host.to(device, dtype);
}

torch::Tensor count_nll_per_unit(const torch::Tensor& mu, const torch::Tensor& y,
                                 const torch::Tensor& alpha) {
  // NB2 with size r = 1/alpha: -log P = (y + r) log(1 + alpha mu) - y log mu + terms free of mu.
  // As alpha -> 0, r log(1 + alpha mu) -> mu and y log(1 + alpha mu) -> 0, the Poisson terms. A
  // Poisson column (alpha 0) is computed at alpha 1e-12, where the first is mu within a relative
  // 5e-13 mu and the second 1e-12 y mu: one expression serves both with a finite gradient, and a
  // fit, which evaluates it about a hundred times over every trial, needs no branches.
  const auto a = (alpha.dim() == 1 ? alpha.unsqueeze(0) : alpha).clamp_min(1e-12);
  return ((y + 1.0 / a) * torch::log1p(a * mu) - y * torch::log(mu)).sum(0);
}

torch::Tensor moment_dispersion(const torch::Tensor& mu, const torch::Tensor& y,
                                double fitted_params, double max_dispersion) {
  const auto n = static_cast<double>(mu.size(0));
  if (n <= fitted_params + 1.0) return torch::zeros({mu.size(1)}, mu.options());
  const auto excess = ((y - mu).square() - mu).sum(0) * (n / (n - fitted_params));
  const auto scale = mu.square().sum(0).clamp_min(1e-12);
  const auto dispersion = (excess / scale).clamp(0.0, max_dispersion).nan_to_num(0.0);
  // What is left of an exactly Poisson fit is rounding residue: say Poisson exactly.
  return torch::where(dispersion > kPoissonDispersion, dispersion, torch::zeros_like(dispersion));
}

torch::Tensor inverse_softplus(const torch::Tensor& v) {
  // log(exp(v) - 1), written so that large v does not overflow and tiny v stays finite.
  const auto x = v.clamp_min(1e-9);
  return x + torch::log(-torch::expm1(-x));
}

double param_or(const protocols::HypothesisSpec& spec, std::string_view key, double fallback) {
  const auto it = spec.params.find(std::string(key));
  return it == spec.params.end() ? fallback : it->second;
}

void check_params(const protocols::HypothesisSpec& spec, const std::vector<std::string>& allowed) {
  for (const auto& [key, value] : spec.params) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw std::invalid_argument("hypothesis '" + spec.name + "': unknown parameter '" + key +
                                "' for family " + std::string(protocols::to_string(spec.family)) +
                                " (known: " + list + ")");
  }
}

void check_params(const protocols::HypothesisSpec& spec,
                  std::initializer_list<std::string_view> allowed) {
  check_params(spec, std::vector<std::string>(allowed.begin(), allowed.end()));
}

TorchTwin::TorchTwin(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
                     std::size_t units, const TwinOptions& options)
    : name_(spec.name),
      space_(space),
      units_(units),
      options_(options),
      device_(parse_device(options.device, spec.name)) {
  if (units == 0) throw std::invalid_argument("hypothesis '" + name_ + "': no units to predict");
  if (space.dimension_count() == 0) {
    throw std::invalid_argument("hypothesis '" + name_ + "': the stimulus space has no dimensions");
  }
  if (!(options.window_seconds > 0.0)) {
    throw std::invalid_argument("hypothesis '" + name_ + "': window_seconds must be > 0");
  }
  const auto c = static_cast<std::int64_t>(space.candidate_count());
  const auto d = static_cast<std::int64_t>(space.dimension_count());
  candidates_ =
      torch::from_blob(const_cast<double*>(space_.candidate_values.data()), {c, d}, torch::kDouble)
          .to(device_, torch::kDouble, /*non_blocking=*/false, /*copy=*/true);
}

void TorchTwin::refresh_cache() {
  torch::NoGradGuard no_grad;
  const auto c = space_.candidate_count();
  const auto e = evaluate(candidates_);
  const auto mean = e.mean.to(torch::kCPU, torch::kDouble).contiguous();
  const auto disp = e.dispersion.to(torch::kCPU, torch::kDouble)
                        .expand({static_cast<std::int64_t>(c), static_cast<std::int64_t>(units_)})
                        .contiguous();
  cache_mean_.assign(mean.data_ptr<double>(), mean.data_ptr<double>() + c * units_);
  cache_dispersion_.assign(disp.data_ptr<double>(), disp.data_ptr<double>() + c * units_);
}

bool TorchTwin::is_cached_candidate(const protocols::Stimulus& s) const noexcept {
  const auto d = space_.dimension_count();
  if (s.candidate >= space_.candidate_count() || s.dimension_count != d) return false;
  // The index alone is not trusted: a stimulus built by hand keeps candidate = 0.
  const double* row = space_.candidate_values.data() + s.candidate * d;
  for (std::size_t i = 0; i < d; ++i) {
    if (row[i] != s.values[i]) return false;
  }
  return true;
}

void TorchTwin::predict(std::span<const protocols::Stimulus> stimuli, PredictionBatch& out) {
  if (out.candidates != stimuli.size() || out.units != units_ ||
      out.mean.size() != stimuli.size() * units_ ||
      out.dispersion.size() != stimuli.size() * units_) {
    throw std::invalid_argument("hypothesis '" + name_ + "': prediction batch is sized " +
                                std::to_string(out.candidates) + " x " + std::to_string(out.units) +
                                ", expected " + std::to_string(stimuli.size()) + " x " +
                                std::to_string(units_));
  }
  fallback_rows_.clear();
  const std::size_t bytes = units_ * sizeof(double);
  for (std::size_t i = 0; i < stimuli.size(); ++i) {
    if (!is_cached_candidate(stimuli[i])) {
      fallback_rows_.push_back(i);
      continue;
    }
    const std::size_t from = stimuli[i].candidate * units_;
    std::memcpy(out.mean.data() + i * units_, cache_mean_.data() + from, bytes);
    std::memcpy(out.dispersion.data() + i * units_, cache_dispersion_.data() + from, bytes);
  }
  if (fallback_rows_.empty()) return;

  // Stimuli outside the candidate set (or hand-built ones): compute them now. This path
  // allocates; the designer never takes it because it predicts the protocol's candidates.
  std::vector<protocols::Stimulus> rest;
  rest.reserve(fallback_rows_.size());
  for (const auto i : fallback_rows_) rest.push_back(stimuli[i]);
  torch::NoGradGuard no_grad;
  const auto x = stimuli_tensor(rest, space_.dimension_count(), device_, torch::kDouble);
  const auto e = evaluate(x);
  const auto n = static_cast<std::int64_t>(rest.size());
  const auto mean = e.mean.to(torch::kCPU, torch::kDouble).contiguous();
  const auto disp = e.dispersion.to(torch::kCPU, torch::kDouble)
                        .expand({n, static_cast<std::int64_t>(units_)})
                        .contiguous();
  for (std::size_t k = 0; k < rest.size(); ++k) {
    const std::size_t to = fallback_rows_[k] * units_;
    std::memcpy(out.mean.data() + to, mean.data_ptr<double>() + k * units_, bytes);
    std::memcpy(out.dispersion.data() + to, disp.data_ptr<double>() + k * units_, bytes);
  }
}

namespace {
/// The share of a rival's difference (weighted square over units and candidates) that this
/// twin's own directions must explain for the rival to count as contained in it
/// (remove_own_directions). On two-unit columns (bench_efficiency --misspecified-only two-lobe)
/// direction and orientation tuning left at most 7e-7 of the null's difference (rounding), and
/// 5% or more of each other's (median 57%).
constexpr double kNestedShare = 0.99;
}  // namespace

bool TorchTwin::remove_own_directions(std::span<double> differences, std::size_t count) {
  const auto c = static_cast<std::int64_t>(space_.candidate_count());
  const auto u = static_cast<std::int64_t>(units_);
  if (count == 0 || differences.size() != count * static_cast<std::size_t>(c * u) ||
      cache_mean_.size() != static_cast<std::size_t>(c * u)) {
    return false;
  }
  try {
    return project_out_directions(differences, count);
  } catch (const std::exception&) {
    return false;  // e.g. a solver failure: `differences` are written only at the very end
  }
}

bool TorchTwin::project_out_directions(std::span<double> differences, std::size_t count) {
  const auto c = static_cast<std::int64_t>(space_.candidate_count());
  const auto u = static_cast<std::int64_t>(units_);
  torch::NoGradGuard no_grad;
  torch::Tensor directions = mean_directions(candidates_);  // [S x C x U]
  if (!directions.defined() || directions.size(0) == 0) return false;
  const auto host = torch::TensorOptions().dtype(torch::kDouble);
  const auto mean = torch::from_blob(cache_mean_.data(), {c, u}, host);
  // The slopes are taken at the fit, the predictions are the draws' mean: the shift between the
  // two (the curvature's share of the predictions) is this twin's own too. Without it a null
  // rival kept 1-9% of its difference on two-unit columns (0.1-0.3% on 128 units).
  if (const torch::Tensor at_fit = plug_in_mean(candidates_); at_fit.defined()) {
    directions = torch::cat({directions, (mean.to(device_) - at_fit).unsqueeze(0)});
  }
  // Weighted least squares per unit, over the candidates: each difference's component in the
  // span of the unit's directions, weighted as the check weighs a unit (1 / its predictive
  // variance, floored as twin::encompassing_weight floors it), is removed.
  const auto dispersion = torch::from_blob(cache_dispersion_.data(), {c, u}, host);
  const auto root_weight = (mean + dispersion * mean.square())
                               .clamp_min(kEncompassingVarianceFloor)
                               .rsqrt()
                               .to(device_);  // [C x U]
  const auto basis = (directions.to(torch::kDouble) * root_weight.unsqueeze(0))
                         .permute({2, 1, 0})
                         .contiguous();  // [U x C x S]
  const auto r = static_cast<std::int64_t>(count);
  const auto target = torch::from_blob(differences.data(), {r, c, u}, host)
                          .to(device_)
                          .mul(root_weight.unsqueeze(0))
                          .permute({2, 1, 0})
                          .contiguous();  // [U x C x R]
  // The projection through the pseudo-inverse of each unit's small Gram matrix of weighted
  // slopes. A family gives a few more slopes than it has parameters; the spare ones add only
  // the central differences' error (the step squared, 1e-6 of the slopes), so directions whose
  // singular value is below 1e-4 of the largest (eigenvalue 1e-8) are dropped.
  const auto basis_t = basis.transpose(1, 2);
  const auto [eigenvalues, eigenvectors] = torch::linalg_eigh(basis_t.matmul(basis));  // [U x S]
  const auto spanned = eigenvalues > 1e-8 * eigenvalues.amax(1, true);
  const auto inverse = torch::where(spanned, 1.0 / eigenvalues.clamp_min(1e-300),
                                    torch::zeros_like(eigenvalues));  // [U x S]
  const auto coefficients = eigenvectors.matmul(
      inverse.unsqueeze(2) * eigenvectors.transpose(1, 2).matmul(basis_t.matmul(target)));
  auto residual = target - basis.matmul(coefficients);  // [U x C x R], weighted
  // A rival whose difference is all but entirely this twin's own (at least kNestedShare of its
  // weighted square, over every unit and candidate) keeps none: the rest is the slopes'
  // curvature, the floor and rounding, and this twin contains that rival near its fit.
  const auto kept =
      residual.square().sum(torch::IntArrayRef{0, 1}, true) >
      (1.0 - kNestedShare) * target.square().sum(torch::IntArrayRef{0, 1}, true);  // [1 x 1 x R]
  residual = residual * kept;
  const auto left = (residual / root_weight.t().unsqueeze(2))
                        .permute({2, 1, 0})
                        .to(torch::kCPU, torch::kDouble)
                        .contiguous();  // [R x C x U]
  std::memcpy(differences.data(), left.data_ptr<double>(), differences.size() * sizeof(double));
  return true;
}

void TorchTwin::update(std::span<const protocols::Stimulus> stimuli,
                       std::span<const std::uint32_t> counts) {
  if (counts.size() != stimuli.size() * units_) {
    throw std::invalid_argument(
        "hypothesis '" + name_ + "': update got " + std::to_string(counts.size()) + " counts for " +
        std::to_string(stimuli.size()) + " trials x " + std::to_string(units_) + " units");
  }
  if (stimuli.empty()) return;  // nothing learnt: keep the current fit (or the prior)
  const auto x = stimuli_tensor(stimuli, space_.dimension_count(), device_, torch::kDouble);
  auto host_counts =
      torch::empty({static_cast<std::int64_t>(stimuli.size()), static_cast<std::int64_t>(units_)},
                   torch::kDouble);
  std::transform(counts.begin(), counts.end(), host_counts.data_ptr<double>(),
                 [](std::uint32_t k) { return static_cast<double>(k); });
  fit(x, host_counts.to(device_));
  refresh_cache();
}

}  // namespace twinloop::twin::detail

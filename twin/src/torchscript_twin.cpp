// torchscript: a user's network, saved with torch.jit.save, as a hypothesis.
//
// Contract (docs in examples/twins/export_torchscript_twin.py): forward takes float32 [N x D],
// the stimulus values in the space's dimension order and units, and returns the EXPECTED
// COUNT in the response window, [N x units], >= 0 — or a tuple (mean, dispersion) with the
// NB2 dispersion as [N x units], [units] or a scalar. Counts rather than rates so that the
// module's author decides how the window enters (an onset transient is not rate x window).
//
// The module is checked when it is loaded, by running it on every candidate stimulus: a wrong
// shape, a negative or non-finite value, or a forward that throws is refused there, naming the
// file, not on the decision path. By default the network is a fixed, pre-registered hypothesis:
// update() fits only a per-unit dispersion (when the module gives none). With the parameter
// fine_tune = 1 its weights are also refitted by maximum likelihood (Adam, warm-started from
// the current weights; the file is never written).
#include <torch/script.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "families.hpp"
#include "torch_twin.hpp"

namespace twinloop::twin::detail {
namespace {

class TorchScriptTwin final : public TorchTwin {
 public:
  TorchScriptTwin(const protocols::HypothesisSpec& spec, const protocols::StimulusSpace& space,
                  std::size_t units, const TwinOptions& options)
      : TorchTwin(spec, space, units, options) {
    check_params(spec, {"fine_tune", "max_iterations", "learning_rate", "poisson"});
    if (!spec.path || spec.path->empty()) {
      throw std::invalid_argument("hypothesis '" + spec.name +
                                  "': family torchscript needs a path to the module file");
    }
    path_ = *spec.path;
    fine_tune_ = param_or(spec, "fine_tune", 0.0) != 0.0;
    max_iterations_ = static_cast<int>(param_or(spec, "max_iterations", 200));
    learning_rate_ = param_or(spec, "learning_rate", 1e-2);
    poisson_ = param_or(spec, "poisson", 0.0) != 0.0;
    if (max_iterations_ < 1 || !(learning_rate_ > 0.0)) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': max_iterations must be >= 1 " +
                                  "and learning_rate > 0");
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path_, ec)) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': TorchScript file '" + path_ +
                                  "' does not exist or is not a file");
    }
    try {
      module_ = torch::jit::load(path_, device());
    } catch (const std::exception& e) {
      throw std::invalid_argument("hypothesis '" + spec.name + "': cannot load TorchScript file '" +
                                  path_ + "': " + first_line(e.what()));
    }
    module_.eval();
    dispersion_ = torch::zeros({static_cast<std::int64_t>(units)}, real());

    // Validate once on the whole candidate set (or one stimulus at the middle of every
    // dimension when the space lists none) and keep the result as the prediction cache.
    torch::Tensor probe = candidates();
    if (probe.size(0) == 0) {
      std::vector<double> mid;
      for (const auto& d : space.dimensions) {
        mid.push_back(d.values.empty() ? 0.0 : 0.5 * (d.values.front() + d.values.back()));
      }
      probe = torch::tensor(mid, real()).unsqueeze(0);
    }
    {
      torch::NoGradGuard no_grad;
      const auto e = evaluate(probe);
      if (!torch::isfinite(e.mean).all().item<bool>() || (e.mean < 0).any().item<bool>()) {
        throw std::invalid_argument("hypothesis '" + spec.name + "': TorchScript file '" + path_ +
                                    "' returned negative or non-finite expected counts");
      }
      if (!torch::isfinite(e.dispersion).all().item<bool>() ||
          (e.dispersion < 0).any().item<bool>()) {
        throw std::invalid_argument("hypothesis '" + spec.name + "': TorchScript file '" + path_ +
                                    "' returned a negative or non-finite dispersion");
      }
    }
    refresh_cache();
  }

  [[nodiscard]] std::string_view family() const noexcept override { return "torchscript"; }

 private:
  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  [[noreturn]] void refuse(const std::string& what) const {
    throw std::invalid_argument("hypothesis '" + name() + "': TorchScript file '" + path_ + "' " +
                                what);
  }

  /// Runs the module; its outputs as doubles on the device, shapes checked.
  Evaluation run(const torch::Tensor& x) {
    torch::jit::IValue out;
    try {
      out = module_.forward({x.to(torch::kFloat)});
    } catch (const std::exception& e) {
      refuse("failed on a [" + std::to_string(x.size(0)) + " x " + std::to_string(x.size(1)) +
             "] float32 stimulus batch: " + first_line(e.what()));
    }
    torch::Tensor mean;
    torch::Tensor dispersion;
    if (out.isTensor()) {
      mean = out.toTensor();
    } else if (out.isTuple() && out.toTupleRef().elements().size() == 2 &&
               out.toTupleRef().elements()[0].isTensor() &&
               out.toTupleRef().elements()[1].isTensor()) {
      mean = out.toTupleRef().elements()[0].toTensor();
      dispersion = out.toTupleRef().elements()[1].toTensor();
    } else {
      refuse("must return a tensor or a tuple (mean, dispersion) of tensors");
    }
    const auto n = x.size(0);
    const auto u = static_cast<std::int64_t>(unit_count());
    if (mean.dim() != 2 || mean.size(0) != n || mean.size(1) != u) {
      refuse("returned expected counts of shape " + shape(mean) + "; expected [" +
             std::to_string(n) + " x " + std::to_string(u) + "] (stimuli x units)");
    }
    if (dispersion.defined()) {
      const bool ok = dispersion.dim() == 0 || (dispersion.dim() == 1 && dispersion.size(0) == u) ||
                      (dispersion.dim() == 2 && dispersion.size(0) == n && dispersion.size(1) == u);
      if (!ok) {
        refuse("returned a dispersion of shape " + shape(dispersion) + "; expected [" +
               std::to_string(n) + " x " + std::to_string(u) + "], [" + std::to_string(u) +
               "] or a scalar");
      }
      module_dispersion_ = true;
      dispersion = dispersion.to(torch::kDouble).expand({n, u});
    } else {
      module_dispersion_ = false;
    }
    return {mean.to(torch::kDouble), dispersion};
  }

  static std::string shape(const torch::Tensor& t) {
    std::string s = "[";
    for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? " x " : "") + std::to_string(t.size(i));
    return s + "]";
  }

  Evaluation evaluate(const torch::Tensor& x) override {
    auto e = run(x);
    if (!e.dispersion.defined()) e.dispersion = dispersion_;
    return e;
  }

  void fit(const torch::Tensor& x, const torch::Tensor& y) override {
    if (fine_tune_) tune(x, y);
    if (module_dispersion_ || poisson_) return;
    torch::NoGradGuard no_grad;
    // The network's own parameters are not counted: it was fitted elsewhere.
    dispersion_ = moment_dispersion(run(x).mean.clamp_min(1e-9), y, 0.0, kMaxDispersion);
  }

  void tune(const torch::Tensor& x, const torch::Tensor& y) {
    std::vector<torch::Tensor> params;
    std::vector<torch::Tensor> saved;
    for (auto p : module_.parameters()) {
      if (!p.is_floating_point()) continue;
      saved.push_back(p.detach().clone());
      p.set_requires_grad(true);
      params.push_back(p);
    }
    if (params.empty()) return;
    auto loss_of = [&] {
      auto e = evaluate(x);
      const auto alpha = e.dispersion.dim() == 2 ? e.dispersion : dispersion_;
      return count_nll_per_unit(e.mean.clamp_min(1e-9), y, alpha).sum() /
             static_cast<double>(y.size(0));
    };
    torch::optim::Adam optimiser(params, torch::optim::AdamOptions(learning_rate_));
    for (int i = 0; i < max_iterations_; ++i) {
      optimiser.zero_grad();
      auto loss = loss_of();
      if (!torch::isfinite(loss).item<bool>()) break;
      loss.backward();
      optimiser.step();
    }
    torch::NoGradGuard no_grad;
    const auto e = evaluate(x);
    const bool sane = torch::isfinite(e.mean).all().item<bool>() &&
                      (e.mean >= 0).all().item<bool>() && torch::isfinite(loss_of()).item<bool>();
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (!sane) params[i].copy_(saved[i]);  // a diverged fine-tune keeps the previous weights
      params[i].set_requires_grad(false);
    }
  }

  std::string path_;
  torch::jit::Module module_;
  bool fine_tune_ = false;
  bool module_dispersion_ = false;
  bool poisson_ = false;
  int max_iterations_ = 200;
  double learning_rate_ = 1e-2;
  torch::Tensor dispersion_;
};

}  // namespace

std::unique_ptr<Hypothesis> make_torchscript(const protocols::HypothesisSpec& spec,
                                             const protocols::StimulusSpace& space,
                                             std::size_t units, const TwinOptions& options) {
  return std::make_unique<TorchScriptTwin>(spec, space, units, options);
}

}  // namespace twinloop::twin::detail

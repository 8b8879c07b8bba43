// YAML spellings of the protocol enums (the same words the loader accepts).
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::protocols {

std::string_view to_string(ProbeType type) noexcept {
  switch (type) {
    case ProbeType::kNP1000:
      return "NP1000";
    case ProbeType::kNP1010:
      return "NP1010";
    case ProbeType::kNP2000:
      return "NP2000";
    case ProbeType::kNP2010:
      return "NP2010";
    case ProbeType::kNP2013:
      return "NP2013";
    case ProbeType::kSim:
      return "sim";
  }
  return "unknown";
}

std::string_view to_string(ProbeSourceKind kind) noexcept {
  switch (kind) {
    case ProbeSourceKind::kSim:
      return "sim";
    case ProbeSourceKind::kSpikeGlx:
      return "spikeglx";
    case ProbeSourceKind::kOpenEphys:
      return "openephys";
  }
  return "unknown";
}

std::string_view to_string(DesignerStrategy strategy) noexcept {
  switch (strategy) {
    case DesignerStrategy::kRandom:
      return "random";
    case DesignerStrategy::kDiscriminate:
      return "discriminate";
  }
  return "unknown";
}

std::string_view to_string(HypothesisFamily family) noexcept {
  switch (family) {
    case HypothesisFamily::kDirectionTuning:
      return "direction_tuning";
    case HypothesisFamily::kLnp:
      return "lnp";
    case HypothesisFamily::kNull:
      return "null";
    case HypothesisFamily::kOrientationTuning:
      return "orientation_tuning";
    case HypothesisFamily::kTorchScript:
      return "torchscript";
  }
  return "unknown";
}

}  // namespace twinloop::protocols

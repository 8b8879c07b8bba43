#include "twinloop/drivers/probe_source.hpp"

namespace twinloop::drivers {

bool parse_pace(const std::string& text, Pace& out) noexcept {
  if (text == "realtime") {
    out = Pace::kRealtime;
    return true;
  }
  if (text == "max") {
    out = Pace::kMax;
    return true;
  }
  return false;
}

}  // namespace twinloop::drivers

// `twinloop control`: one authenticated request to a session's control socket.
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/control.hpp"
#include "twinloop/daemon/keys.hpp"

namespace twinloop::daemon {

int control_client(const ControlClientOptions& options) {
  try {
    const Keypair client = load_keypair(options.key);
    const std::string server = load_public_key(options.server_key);
    nlohmann::json request = {{"id", 1}, {"command", options.command}};
    if (options.posterior_threshold) request["posterior_threshold"] = *options.posterior_threshold;
    if (options.max_trials) request["max_trials"] = *options.max_trials;
    if (options.max_minutes) request["max_minutes"] = *options.max_minutes;
    if (options.command == "abort" && !options.reason.empty()) request["reason"] = options.reason;
    const auto timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_s * 1000.0));
    const std::optional<nlohmann::json> reply =
        control_request(options.endpoint, server, client, request, timeout);
    if (!reply) {
      std::fprintf(stderr,
                   "twinloop control: no reply from %s within %.1f s (is this key on the "
                   "session's allow-list, and the server key the session's?)\n",
                   options.endpoint.c_str(), options.timeout_s);
      return kExitRefused;
    }
    std::printf("%s\n", reply->dump(2).c_str());
    return reply->value("ok", false) ? kExitOk : kExitRefused;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop control: %s\n", e.what());
    return kExitRefused;
  }
}

}  // namespace twinloop::daemon

// The authenticated control socket: a ControlServer that takes JSON commands from clients whose
// CURVE public keys are on an allow-list, checks them strictly, and hands the valid ones to the
// session engine through the ControlHandler interface; plus control_request(), the client side.
//
// Security model (docs/control.md has the whole of it):
// - The ROUTER socket is a CURVE server; its ZAP handler (on the server's own context and thread)
//   lets a connection through only when the client proves a public key on the allow-list. NULL
//   and PLAIN connections, clients that cannot complete the CURVE handshake and unknown keys are
//   refused before any message is read, counted and logged (rate-limited).
// - A message from an allowed client is bounded in size and nesting, parsed, and checked field
//   by field; anything malformed gets an error reply and is counted, and never reaches the
//   handler. Nothing in this file throws out of the server thread.
// - The control path can only call the handler; no command delivers a stimulus. Stop-rule
//   changes and submitted protocols go through the engine, and so through the same safety gate
//   and protocol checks as everything else.
//
// Threads: the server thread owns the sockets (ZMQ sockets are not thread safe). It never calls
// the handler: it puts checked requests on a bounded queue, and the session engine runs them on
// its own thread with serve_pending(). That keeps every command between trials, on the thread
// that owns the session, so the engine needs no locks for control and a slow or stuck engine
// cannot stall authentication or monitoring of the socket (a full queue is refused as "busy", and
// a request the engine does not take in time is answered with an error). `on_request` lets an
// event loop learn that work is waiting (e.g. asio::post a call to serve_pending()).
//
//   ControlServer server({.endpoint = "tcp://*:5557", .keys = load_keypair("server.key_secret"),
//                         .allow_list = "clients.allow"});
//   // on the engine's thread, between trials:
//   server.serve_pending(engine);
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "twinloop/daemon/keys.hpp"
#include "twinloop/protocols/protocol.hpp"

namespace twinloop::daemon {

/// The commands the control socket knows, in wire order.
enum class ControlCommand : std::uint8_t {
  kStatus,
  kPause,
  kResume,
  kAbort,
  kSetStopRule,
  kSubmit
};
inline constexpr std::size_t kControlCommandCount = 6;
/// "status", "pause", "resume", "abort", "set_stop_rule", "submit".
[[nodiscard]] const char* to_string(ControlCommand command) noexcept;

/// Who sent a command: the name the allow-list gives its key (the key itself when unnamed).
struct ControlClient {
  std::string name;
  std::string public_key;  ///< Z85
};

/// set_stop_rule's arguments, each already range-checked as the protocol loader checks
/// StopRules; absent ones stay as they are. At least one is present.
struct StopRuleChange {
  std::optional<double> posterior_threshold;  ///< (0.5, 1)
  std::optional<std::uint32_t> max_trials;    ///< > 0
  std::optional<double> max_minutes;          ///< > 0, finite
};

/// What a handler answers. On success `data` (an object) is merged into the reply; on failure
/// `error` says why and the reply carries "ok": false.
struct ControlReply {
  bool ok = true;
  std::string error;
  nlohmann::json data = nlohmann::json::object();

  [[nodiscard]] static ControlReply success(nlohmann::json data = nlohmann::json::object()) {
    return {true, {}, std::move(data)};
  }
  [[nodiscard]] static ControlReply failure(std::string error) {
    return {false, std::move(error), nlohmann::json::object()};
  }
};

/// What the session engine implements. Every method is called from the thread that calls
/// ControlServer::serve_pending(), one at a time, with arguments already checked. A method may
/// refuse (failure) when the session's state does not allow the command. Exceptions are caught
/// and answered as "internal error", but should not be used for refusals.
class ControlHandler {
 public:
  virtual ~ControlHandler() = default;
  /// Read-only: the session's state for a monitor. Must not change anything.
  virtual ControlReply status(const ControlClient& client) = 0;
  /// The rest default to "not supported" so a read-only engine need implement only status().
  virtual ControlReply pause(const ControlClient& client);
  virtual ControlReply resume(const ControlClient& client);
  /// \param reason  the operator's words, possibly empty (at most 500 bytes)
  virtual ControlReply abort(const ControlClient& client, const std::string& reason);
  virtual ControlReply set_stop_rule(const ControlClient& client, const StopRuleChange& change);
  /// \param protocol  a protocol that protocols::load_protocol_text() accepted (source_text set)
  virtual ControlReply submit(const ControlClient& client, const protocols::Protocol& protocol);
};

/// Monotonic counts since the server started; each is read atomically, not all at one instant.
struct ControlCounters {
  std::uint64_t accepted = 0;                 ///< checked and queued for the engine
  std::uint64_t refused_unauthenticated = 0;  ///< NULL/PLAIN or failed CURVE handshakes
  std::uint64_t refused_unknown_key = 0;      ///< CURVE with a key not on the allow-list
  std::uint64_t malformed = 0;                ///< from allowed clients, refused by the checks
  std::uint64_t busy = 0;                     ///< refused because the queue was full
  std::uint64_t expired = 0;                  ///< the engine did not take them in time
  std::uint64_t handler_errors = 0;           ///< the handler threw
  std::uint64_t replies_dropped = 0;          ///< the client had gone when the reply was ready
  std::array<std::uint64_t, kControlCommandCount> by_command{};  ///< accepted, per command
};

struct ControlServerOptions {
  /// Where to bind; "tcp://HOST:*" takes an ephemeral port (see ControlServer::endpoint()).
  std::string endpoint = "tcp://127.0.0.1:*";
  Keypair keys;                              ///< the server's CURVE key pair
  std::filesystem::path allow_list;          ///< read at start and on reload()
  std::size_t max_request_bytes = 2U << 20;  ///< larger requests get an error reply
  std::size_t queue_capacity = 16;           ///< requests waiting for the engine
  /// A request the engine has not taken within this time is answered with an error.
  std::chrono::milliseconds request_timeout{5000};
  /// Called on the server thread after a request is queued: must be quick and must not throw.
  std::function<void()> on_request;
};

class ControlServer {
 public:
  /// Reads the allow-list, binds the ZAP handler and the socket, and starts the server thread.
  /// \throws KeyFileError (allow-list), std::invalid_argument (keys), std::runtime_error (no
  ///         CURVE in libzmq, cannot bind)
  explicit ControlServer(ControlServerOptions options);
  /// Stops the thread; queued requests are dropped unanswered.
  ~ControlServer();
  // Owns a thread and sockets that refer to this object.
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  ControlServer(ControlServer&&) = delete;
  ControlServer& operator=(ControlServer&&) = delete;

  /// The bound endpoint with the port resolved, e.g. "tcp://127.0.0.1:40231".
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] const std::string& public_key() const noexcept { return options_.keys.public_key; }

  /// Runs queued requests on the calling thread (the engine's), waiting up to `wait` for the
  /// first. Never throws; a handler's exception becomes an error reply.
  /// \return how many requests were run
  std::size_t serve_pending(ControlHandler& handler,
                            std::chrono::milliseconds wait = std::chrono::milliseconds{0});

  /// Re-reads the allow-list file; on success it replaces the old list for new connections
  /// (clients already connected stay connected). On failure the old list stays. Thread safe;
  /// the daemon calls it on SIGHUP.
  /// \throws KeyFileError naming file and line
  void reload();

  [[nodiscard]] ControlCounters counters() const noexcept;

 private:
  struct Impl;
  ControlServerOptions options_;
  std::string endpoint_;
  std::unique_ptr<Impl> impl_;
};

/// One request/reply as an authenticated client (DEALER, CURVE client role). `request` is sent
/// as JSON after an empty delimiter frame, so REQ sockets in other languages can talk to the
/// server too.
/// \return the reply, or nullopt when none arrived within `timeout` (e.g. the key was refused:
///         CURVE refusals are silent) or the reply was not JSON
/// \throws std::invalid_argument for keys that are not Z85, zmq::error_t for a bad endpoint
[[nodiscard]] std::optional<nlohmann::json> control_request(const std::string& endpoint,
                                                            const std::string& server_public_key,
                                                            const Keypair& client,
                                                            const nlohmann::json& request,
                                                            std::chrono::milliseconds timeout);

}  // namespace twinloop::daemon

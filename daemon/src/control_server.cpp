#include <spdlog/spdlog.h>
#include <zmq.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <zmq.hpp>

#include "twinloop/daemon/closed_loop.hpp"
#include "twinloop/daemon/control.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kZapEndpoint = "inproc://zeromq.zap.01";
constexpr std::string_view kMonitorEndpoint = "inproc://twinloop.control.monitor";
constexpr std::string_view kZapDomain = "twinloop-control";
// The server thread wakes this often to send replies the engine has produced and to expire
// requests it has not taken: the bound on the latency a reply adds.
constexpr std::chrono::milliseconds kPollInterval{5};
// Messages drained per socket per wake-up, so one busy socket cannot starve the others.
constexpr int kBatch = 64;
// Nesting deeper than this is refused before parsing: no request needs it, and it bounds the
// parser's work and stack.
constexpr std::size_t kMaxNesting = 16;
constexpr std::size_t kMaxIdBytes = 128;
constexpr std::size_t kMaxReasonBytes = 500;
constexpr std::size_t kMaxNameBytes = 128;
constexpr std::size_t kMaxShownBytes = 64;

constexpr std::array<const char*, kControlCommandCount> kCommandNames = {
    "status", "pause", "resume", "abort", "set_stop_rule", "submit"};

std::optional<ControlCommand> command_from(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kCommandNames.size(); ++i) {
    if (name == kCommandNames[i]) return static_cast<ControlCommand>(i);
  }
  return std::nullopt;
}

// Text from the network, made safe to put in a log line or an error message.
std::string shown(std::string_view text) {
  std::string out;
  for (const char c : text.substr(0, kMaxShownBytes)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u >= 0x7f) ? '?' : c;
  }
  if (text.size() > kMaxShownBytes) out += "...";
  return out;
}

std::string shown_json(const json& value) {
  return shown(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

bool printable(std::string_view text) noexcept {
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) return false;
  }
  return true;
}

bool nesting_within(std::string_view text, std::size_t limit) noexcept {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

std::string as_string(const zmq::message_t& frame) {
  return std::string(static_cast<const char*>(frame.data()), frame.size());
}

// Receives one whole multipart message without waiting for its first frame; empty when there is
// none. Frames past `max_frames` are read (so the message is consumed) and counted, not kept.
std::vector<zmq::message_t> receive(zmq::socket_t& socket, std::size_t max_frames,
                                    std::size_t& dropped) {
  std::vector<zmq::message_t> frames;
  dropped = 0;
  bool more = true;
  bool first = true;
  while (more) {
    zmq::message_t frame;
    const auto received =
        socket.recv(frame, first ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
    if (!received) return {};
    first = false;
    more = frame.more();
    if (frames.size() < max_frames) {
      frames.push_back(std::move(frame));
    } else {
      ++dropped;
    }
  }
  return frames;
}

// Limits repeated log lines per kind of event: refused peers reconnect every 100 ms.
class LogLimiter {
 public:
  enum Kind { kUnauthenticated, kUnknownKey, kMalformed, kBusy, kExpired, kHandler, kInternal, kN };
  template <typename... Args>
  void warn(Kind kind, spdlog::format_string_t<Args...> format, Args&&... args) {
    std::uint64_t suppressed = 0;
    {
      const std::lock_guard lock(mutex_);
      const auto now = Clock::now();
      Entry& entry = entries_[kind];
      if (entry.logged && now - entry.last < std::chrono::seconds{1}) {
        ++entry.suppressed;
        return;
      }
      entry.logged = true;
      entry.last = now;
      suppressed = std::exchange(entry.suppressed, 0);
    }
    try {
      spdlog::warn(format, std::forward<Args>(args)...);
      if (suppressed > 0) {
        spdlog::warn("control: ({} similar refusals not logged in the last second)", suppressed);
      }
    } catch (...) {  // logging must never take the server thread down
    }
  }

 private:
  struct Entry {
    bool logged = false;
    Clock::time_point last;
    std::uint64_t suppressed = 0;
  };
  std::mutex mutex_;
  std::array<Entry, kN> entries_{};
};

struct Pending {
  std::vector<std::string>
      envelope;  // routing id, then the empty delimiter when the client sent one
  json id;
  ControlCommand command = ControlCommand::kStatus;
  ControlClient client;
  StopRuleChange stop_rule;
  std::string reason;
  std::optional<protocols::Protocol> protocol;
  Clock::time_point queued;
};

struct Outgoing {
  std::vector<std::string> envelope;
  std::string body;
};

// A request refused by the checks.
struct Refusal {
  json id;
  std::string error;
  json extra = json::object();
};

std::string reply_body(const json& id, const ControlReply& reply,
                       std::optional<ControlCommand> command) {
  json out = reply.ok && reply.data.is_object() ? reply.data : json::object();
  out["id"] = id;
  out["ok"] = reply.ok;
  if (command) out["command"] = to_string(*command);
  if (!reply.ok) out["error"] = reply.error;
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string refusal_body(const Refusal& refusal) {
  json out = refusal.extra;
  out["id"] = refusal.id;
  out["ok"] = false;
  out["error"] = refusal.error;
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Type names for messages.
std::string kind_of(const json& value) {
  if (value.is_boolean()) return "a boolean";
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  if (value.is_string()) return "a string";
  if (value.is_array()) return "an array";
  if (value.is_object()) return "an object";
  return "null";
}

std::string found(const json& value) {
  return "found " + kind_of(value) + " " + shown_json(value);
}

// A number, not a boolean, finite: JSON has no NaN, but a float can overflow to infinity.
std::optional<double> finite_number(const json& value) {
  if (!value.is_number()) return std::nullopt;
  const double x = value.get<double>();
  if (!std::isfinite(x)) return std::nullopt;
  return x;
}

}  // namespace

const char* to_string(ControlCommand command) noexcept {
  const auto index = static_cast<std::size_t>(command);
  return index < kCommandNames.size() ? kCommandNames[index] : "unknown";
}

ControlReply ControlHandler::pause(const ControlClient& /*client*/) {
  return ControlReply::failure("pause is not supported by this session engine");
}
ControlReply ControlHandler::resume(const ControlClient& /*client*/) {
  return ControlReply::failure("resume is not supported by this session engine");
}
ControlReply ControlHandler::abort(const ControlClient& /*client*/, const std::string& /*reason*/) {
  return ControlReply::failure("abort is not supported by this session engine");
}
ControlReply ControlHandler::set_stop_rule(const ControlClient& /*client*/,
                                           const StopRuleChange& /*change*/) {
  return ControlReply::failure("set_stop_rule is not supported by this session engine");
}
ControlReply ControlHandler::submit(const ControlClient& /*client*/,
                                    const protocols::Protocol& /*protocol*/) {
  return ControlReply::failure("submit is not supported by this session engine");
}

struct ControlServer::Impl {
  explicit Impl(const ControlServerOptions& opts) : options(opts) {}

  const ControlServerOptions& options;
  // Declared before the sockets: they must close before the context terminates.
  zmq::context_t context{1};
  zmq::socket_t zap{context, zmq::socket_type::rep};
  zmq::socket_t router{context, zmq::socket_type::router};
  zmq::socket_t monitor{context, zmq::socket_type::pair};
  std::thread thread;
  std::atomic<bool> stop{false};

  std::mutex allow_mutex;
  std::shared_ptr<const std::unordered_map<std::string, std::string>> allowed;  // key -> name

  std::mutex queue_mutex;
  std::condition_variable queue_ready;
  std::deque<Pending> pending;
  std::mutex out_mutex;
  std::vector<Outgoing> outgoing;

  std::atomic<std::uint64_t> accepted{0}, unauthenticated{0}, unknown_key{0}, malformed{0}, busy{0},
      expired{0}, handler_errors{0}, replies_dropped{0};
  std::array<std::atomic<std::uint64_t>, kControlCommandCount> by_command{};
  LogLimiter log;

  void set_allow_list(const std::vector<AllowedKey>& keys) {
    auto map = std::make_shared<std::unordered_map<std::string, std::string>>();
    for (const AllowedKey& key : keys) map->emplace(key.public_key, key.name);
    const std::lock_guard lock(allow_mutex);
    allowed = std::move(map);
  }
  std::shared_ptr<const std::unordered_map<std::string, std::string>> allow_list() {
    const std::lock_guard lock(allow_mutex);
    return allowed;
  }

  void run() noexcept {
    std::array<zmq::pollitem_t, 3> items = {{{zap.handle(), 0, ZMQ_POLLIN, 0},
                                             {monitor.handle(), 0, ZMQ_POLLIN, 0},
                                             {router.handle(), 0, ZMQ_POLLIN, 0}}};
    while (!stop.load(std::memory_order_acquire)) {
      try {
        zmq::poll(items.data(), items.size(), kPollInterval);
        // ZAP first: a handshake waiting on it holds up that client's connection.
        if ((items[0].revents & ZMQ_POLLIN) != 0) serve_zap();
        if ((items[1].revents & ZMQ_POLLIN) != 0) read_monitor();
        if ((items[2].revents & ZMQ_POLLIN) != 0) read_requests();
        expire();
        flush();
      } catch (const zmq::error_t& e) {
        if (e.num() == ETERM) return;
        if (e.num() != EINTR)
          log.warn(LogLimiter::kInternal, "control: socket error: {}", e.what());
      } catch (const std::exception& e) {
        log.warn(LogLimiter::kInternal, "control: internal error: {}", e.what());
      } catch (...) {
        log.warn(LogLimiter::kInternal, "control: internal error");
      }
    }
  }

  // ZAP (RFC 27): frames version, request id, domain, address, identity, mechanism, credentials.
  void serve_zap() {
    for (int n = 0; n < kBatch; ++n) {
      std::size_t extra = 0;
      std::vector<zmq::message_t> frames = receive(zap, 8, extra);
      if (frames.empty()) return;
      const std::string request_id = frames.size() > 1 ? as_string(frames[1]) : std::string();
      const std::string address = frames.size() > 3 ? shown(as_string(frames[3])) : "?";
      const std::string mechanism = frames.size() > 5 ? as_string(frames[5]) : std::string();
      std::string status = "400", text, user_id;
      if (frames.size() < 6 || as_string(frames[0]) != "1.0") {
        status = "500";
        text = "malformed ZAP request";
      } else if (mechanism != "CURVE") {
        text = "CURVE required";
        unauthenticated.fetch_add(1, std::memory_order_relaxed);
        log.warn(LogLimiter::kUnauthenticated,
                 "control: refused {} connection from {}: CURVE required", shown(mechanism),
                 address);
      } else if (frames.size() != 7 || frames[6].size() != 32 || extra != 0) {
        text = "malformed CURVE credentials";
        unauthenticated.fetch_add(1, std::memory_order_relaxed);
        log.warn(LogLimiter::kUnauthenticated,
                 "control: refused connection from {}: malformed CURVE credentials", address);
      } else {
        std::array<char, kZ85KeyLength + 1> z85{};
        zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(frames[6].data()), 32);
        const std::string key(z85.data());
        const auto list = allow_list();
        if (list && list->contains(key)) {
          status = "200";
          text = "OK";
          user_id = key;
        } else {
          text = "key not allowed";
          unknown_key.fetch_add(1, std::memory_order_relaxed);
          log.warn(LogLimiter::kUnknownKey,
                   "control: refused connection from {}: public key {} is not on the allow-list",
                   address, key);
        }
      }
      const std::array<std::string, 6> reply = {"1.0", request_id, status, text, user_id, ""};
      for (std::size_t i = 0; i < reply.size(); ++i) {
        zap.send(zmq::buffer(reply[i]),
                 i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
  }

  // Handshakes that fail before ZAP is asked: NULL or PLAIN peers (mechanism mismatch), CURVE
  // clients that do not know the server's key, connections dropped mid-handshake.
  void read_monitor() {
    for (int n = 0; n < kBatch; ++n) {
      std::size_t extra = 0;
      std::vector<zmq::message_t> frames = receive(monitor, 2, extra);
      if (frames.empty()) return;
      if (frames[0].size() < 6) continue;
      std::uint16_t event = 0;
      std::uint32_t value = 0;
      std::memcpy(&event, frames[0].data(), sizeof event);
      std::memcpy(&value, static_cast<const char*>(frames[0].data()) + sizeof event, sizeof value);
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
          event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        unauthenticated.fetch_add(1, std::memory_order_relaxed);
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
          // The value is an errno: typically the peer hung up on seeing CURVE (a NULL client).
          log.warn(LogLimiter::kUnauthenticated,
                   "control: refused a connection: handshake did not complete ({}); a client "
                   "without CURVE, or one that hung up",
                   zmq_strerror(static_cast<int>(value)));
          continue;
        }
        const char* why = value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                              ? "the client does not use CURVE"
                          : value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
                              ? "CURVE handshake failed (wrong server key?)"
                              : "handshake failed";
        log.warn(LogLimiter::kUnauthenticated, "control: refused a connection: {} (code {:#x})",
                 why, value);
      }
      // HANDSHAKE_FAILED_AUTH is the ZAP handler's own refusal, already counted there.
    }
  }

  void read_requests() {
    for (int n = 0; n < kBatch; ++n) {
      std::size_t extra = 0;
      std::vector<zmq::message_t> frames = receive(router, 3, extra);
      if (frames.empty()) return;
      handle(frames, extra);
    }
  }

  void refuse(std::vector<std::string> envelope, const Refusal& refusal, const ControlClient& who) {
    malformed.fetch_add(1, std::memory_order_relaxed);
    log.warn(LogLimiter::kMalformed, "control: refused a request from {}: {}", who.name,
             shown(refusal.error));
    if (!envelope.empty()) push_reply({std::move(envelope), refusal_body(refusal)});
  }

  void handle(std::vector<zmq::message_t>& frames, std::size_t extra) {
    ControlClient client;
    // The ZAP handler's user id is the client's public key; the name comes from the allow-list
    // as it is now (a reloaded list may have renamed it).
    if (const char* key = zmq_msg_gets(frames.back().handle(), "User-Id"); key != nullptr) {
      client.public_key = key;
    }
    client.name = client.public_key;
    if (const auto list = allow_list(); list) {
      if (const auto it = list->find(client.public_key); it != list->end())
        client.name = it->second;
    }

    std::vector<std::string> envelope;
    envelope.push_back(as_string(frames[0]));
    const bool delimited = frames.size() >= 2 && frames[1].size() == 0;
    if (delimited) envelope.emplace_back();
    const std::size_t expected = delimited ? 3 : 2;
    if (frames.size() != expected || extra != 0) {
      refuse(std::move(envelope),
             {json(), "expected one JSON frame (after an optional empty delimiter frame)"}, client);
      return;
    }
    const std::string_view body(static_cast<const char*>(frames.back().data()),
                                frames.back().size());
    Pending request;
    std::optional<Refusal> refusal = check(body, request);
    if (refusal) {
      refuse(std::move(envelope), *refusal, client);
      return;
    }
    request.envelope = std::move(envelope);
    request.client = std::move(client);
    request.queued = Clock::now();
    const ControlCommand command = request.command;
    {
      const std::lock_guard lock(queue_mutex);
      if (pending.size() >= options.queue_capacity) {
        busy.fetch_add(1, std::memory_order_relaxed);
        log.warn(LogLimiter::kBusy, "control: refused {} from {}: {} requests already waiting",
                 to_string(command), request.client.name, pending.size());
        push_reply({std::move(request.envelope),
                    reply_body(request.id,
                               ControlReply::failure("busy: the session engine has " +
                                                     std::to_string(pending.size()) +
                                                     " requests waiting; try again"),
                               command)});
        return;
      }
      accepted.fetch_add(1, std::memory_order_relaxed);
      by_command[static_cast<std::size_t>(command)].fetch_add(1, std::memory_order_relaxed);
      if (command != ControlCommand::kStatus) {
        spdlog::info("control: {} from {} queued", to_string(command), request.client.name);
      }
      pending.push_back(std::move(request));
    }
    queue_ready.notify_one();
    if (options.on_request) {
      try {
        options.on_request();
      } catch (...) {
        log.warn(LogLimiter::kInternal, "control: on_request threw");
      }
    }
  }

  // Checks a request body and fills `out`; a Refusal says what is wrong.
  std::optional<Refusal> check(std::string_view body, Pending& out) const {
    if (body.size() > options.max_request_bytes) {
      return Refusal{json(), "request too large: " + std::to_string(body.size()) +
                                 " bytes, the limit is " +
                                 std::to_string(options.max_request_bytes)};
    }
    if (!nesting_within(body, kMaxNesting)) {
      return Refusal{json(), "request nested deeper than " + std::to_string(kMaxNesting)};
    }
    json request;
    try {
      request = json::parse(body);
    } catch (const json::exception& e) {
      return Refusal{json(), std::string("not JSON: ") + e.what()};
    }
    if (!request.is_object()) {
      return Refusal{json(), "a request is a JSON object; " + found(request)};
    }
    const auto id = request.find("id");
    if (id == request.end()) return Refusal{json(), "id: missing"};
    if (!(id->is_number_integer() || (id->is_string() && id->size() <= kMaxIdBytes &&
                                      id->get_ref<const std::string&>().size() <= kMaxIdBytes))) {
      return Refusal{json(), "id: " + found(*id) + ", expected an integer or a string of at most " +
                                 std::to_string(kMaxIdBytes) + " bytes"};
    }
    out.id = *id;
    const auto command = request.find("command");
    if (command == request.end()) return Refusal{out.id, "command: missing"};
    const std::optional<ControlCommand> known =
        command->is_string() ? command_from(command->get_ref<const std::string&>()) : std::nullopt;
    if (!known) {
      return Refusal{out.id, "command: " + found(*command) +
                                 ", expected one of status, pause, resume, abort, "
                                 "set_stop_rule, submit"};
    }
    out.command = *known;
    for (const auto& [key, value] : request.items()) {
      if (key == "id" || key == "command") continue;
      if (!argument_known(*known, key)) {
        return Refusal{out.id,
                       std::string(to_string(*known)) + ": unknown argument '" + shown(key) + "'"};
      }
    }
    switch (*known) {
      case ControlCommand::kStatus:
      case ControlCommand::kPause:
      case ControlCommand::kResume:
        return std::nullopt;
      case ControlCommand::kAbort:
        return check_abort(request, out);
      case ControlCommand::kSetStopRule:
        return check_stop_rule(request, out);
      case ControlCommand::kSubmit:
        return check_submit(request, out);
    }
    return Refusal{out.id, "command: not handled"};
  }

  static bool argument_known(ControlCommand command, std::string_view key) noexcept {
    switch (command) {
      case ControlCommand::kAbort:
        return key == "reason";
      case ControlCommand::kSetStopRule:
        return key == "posterior_threshold" || key == "max_trials" || key == "max_minutes";
      case ControlCommand::kSubmit:
        return key == "protocol" || key == "name";
      default:
        return false;
    }
  }

  static std::optional<Refusal> check_abort(const json& request, Pending& out) {
    if (const auto reason = request.find("reason"); reason != request.end()) {
      if (!reason->is_string() || reason->get_ref<const std::string&>().size() > kMaxReasonBytes) {
        return Refusal{out.id, "abort.reason: " + found(*reason) +
                                   ", expected a string of at most " +
                                   std::to_string(kMaxReasonBytes) + " bytes"};
      }
      out.reason = reason->get<std::string>();
    }
    return std::nullopt;
  }

  static std::optional<Refusal> check_stop_rule(const json& request, Pending& out) {
    StopRuleChange& change = out.stop_rule;
    if (const auto v = request.find("posterior_threshold"); v != request.end()) {
      const auto x = finite_number(*v);
      if (!x || !(*x > 0.5 && *x < 1.0)) {
        return Refusal{out.id, "set_stop_rule.posterior_threshold: " + found(*v) +
                                   ", expected a number in (0.5, 1)"};
      }
      change.posterior_threshold = *x;
    }
    if (const auto v = request.find("max_trials"); v != request.end()) {
      // Positive JSON integers parse as unsigned; negatives and fractions are refused here.
      const bool fits = v->is_number_unsigned() && v->get<std::uint64_t>() >= 1 &&
                        v->get<std::uint64_t>() <= std::numeric_limits<std::uint32_t>::max();
      if (!fits) {
        return Refusal{out.id, "set_stop_rule.max_trials: " + found(*v) +
                                   ", expected an integer in [1, 4294967295]"};
      }
      change.max_trials = static_cast<std::uint32_t>(v->get<std::uint64_t>());
    }
    if (const auto v = request.find("max_minutes"); v != request.end()) {
      const auto x = finite_number(*v);
      if (!x || !(*x > 0.0)) {
        return Refusal{out.id,
                       "set_stop_rule.max_minutes: " + found(*v) + ", expected a number > 0"};
      }
      change.max_minutes = *x;
    }
    if (!change.posterior_threshold && !change.max_trials && !change.max_minutes) {
      return Refusal{out.id,
                     "set_stop_rule: expected at least one of posterior_threshold, max_trials, "
                     "max_minutes"};
    }
    return std::nullopt;
  }

  static std::optional<Refusal> check_submit(const json& request, Pending& out) {
    const auto text = request.find("protocol");
    if (text == request.end()) return Refusal{out.id, "submit.protocol: missing"};
    if (!text->is_string() ||
        text->get_ref<const std::string&>().size() > protocols::kMaxProtocolBytes) {
      return Refusal{out.id, "submit.protocol: " + found(*text) +
                                 ", expected the protocol's YAML text as a string of at most " +
                                 std::to_string(protocols::kMaxProtocolBytes) + " bytes"};
    }
    std::string name = "submitted-protocol.yaml";
    if (const auto n = request.find("name"); n != request.end()) {
      const bool ok = n->is_string() && !n->get_ref<const std::string&>().empty() &&
                      n->get_ref<const std::string&>().size() <= kMaxNameBytes &&
                      printable(n->get_ref<const std::string&>());
      if (!ok) {
        return Refusal{out.id, "submit.name: " + found(*n) + ", expected printable text of 1 to " +
                                   std::to_string(kMaxNameBytes) + " bytes"};
      }
      name = n->get<std::string>();
    }
    protocols::ProtocolLoadResult loaded =
        protocols::load_protocol_text(text->get_ref<const std::string&>(), name);
    if (!loaded.ok()) {
      Refusal refusal{out.id, "submit: protocol refused (" +
                                  std::to_string(loaded.diagnostics.size()) + " problem" +
                                  (loaded.diagnostics.size() == 1 ? "" : "s") + "):\n" +
                                  protocols::format_diagnostics(loaded.diagnostics)};
      json diagnostics = json::array();
      for (const protocols::Diagnostic& d : loaded.diagnostics) {
        diagnostics.push_back(protocols::format_diagnostic(d));
      }
      refusal.extra["diagnostics"] = std::move(diagnostics);
      return refusal;
    }
    if (const std::vector<std::string> problems = twin_problems(*loaded.protocol);
        !problems.empty()) {
      std::string reason = "submit: protocol refused (" + std::to_string(problems.size()) +
                           " hypothes" + (problems.size() == 1 ? "is" : "es") +
                           " cannot be built):";
      for (const std::string& problem : problems) reason += "\n" + name + ": " + problem;
      return Refusal{out.id, reason};
    }
    out.protocol = std::move(loaded.protocol);
    return std::nullopt;
  }

  void push_reply(Outgoing reply) {
    const std::lock_guard lock(out_mutex);
    outgoing.push_back(std::move(reply));
  }

  void expire() {
    const auto deadline = Clock::now() - options.request_timeout;
    const std::lock_guard lock(queue_mutex);
    while (!pending.empty() && pending.front().queued < deadline) {
      Pending& late = pending.front();
      expired.fetch_add(1, std::memory_order_relaxed);
      log.warn(LogLimiter::kExpired,
               "control: {} from {} expired: the session engine did not take it",
               to_string(late.command), late.client.name);
      push_reply({std::move(late.envelope),
                  reply_body(late.id,
                             ControlReply::failure("the session engine did not take the request "
                                                   "within " +
                                                   std::to_string(options.request_timeout.count()) +
                                                   " ms"),
                             late.command)});
      pending.pop_front();
    }
  }

  void flush() {
    std::vector<Outgoing> batch;
    {
      const std::lock_guard lock(out_mutex);
      batch.swap(outgoing);
    }
    for (Outgoing& reply : batch) {
      try {
        bool sent = true;
        for (const std::string& frame : reply.envelope) {
          sent =
              sent &&
              router.send(zmq::buffer(frame), zmq::send_flags::sndmore | zmq::send_flags::dontwait)
                  .has_value();
        }
        sent = sent && router.send(zmq::buffer(reply.body), zmq::send_flags::dontwait).has_value();
        if (!sent) replies_dropped.fetch_add(1, std::memory_order_relaxed);
      } catch (const zmq::error_t& e) {
        // EHOSTUNREACH (ROUTER_MANDATORY): the client went away before its reply was ready.
        replies_dropped.fetch_add(1, std::memory_order_relaxed);
        if (e.num() != EHOSTUNREACH) throw;
      }
    }
  }

  ControlReply dispatch(ControlHandler& handler, const Pending& request) {
    switch (request.command) {
      case ControlCommand::kStatus:
        return handler.status(request.client);
      case ControlCommand::kPause:
        return handler.pause(request.client);
      case ControlCommand::kResume:
        return handler.resume(request.client);
      case ControlCommand::kAbort:
        return handler.abort(request.client, request.reason);
      case ControlCommand::kSetStopRule:
        return handler.set_stop_rule(request.client, request.stop_rule);
      case ControlCommand::kSubmit:
        return handler.submit(request.client, *request.protocol);
    }
    return ControlReply::failure("command not handled");
  }
};

ControlServer::ControlServer(ControlServerOptions options) : options_(std::move(options)) {
  if (zmq_has("curve") == 0) {
    throw std::runtime_error("control: this libzmq was built without CURVE support");
  }
  if (!is_z85_key(options_.keys.public_key) || !is_z85_key(options_.keys.secret_key)) {
    throw std::invalid_argument("control: the server key pair is not two Z85 CURVE keys");
  }
  std::array<char, kZ85KeyLength + 1> derived{};
  if (zmq_curve_public(derived.data(), options_.keys.secret_key.c_str()) != 0 ||
      options_.keys.public_key != derived.data()) {
    throw std::invalid_argument("control: the server's public key does not match its secret key");
  }
  if (options_.queue_capacity == 0 || options_.max_request_bytes == 0) {
    throw std::invalid_argument("control: queue_capacity and max_request_bytes must be > 0");
  }
  impl_ = std::make_unique<Impl>(options_);
  impl_->set_allow_list(load_allow_list(options_.allow_list));

  // The ZAP handler must be bound before the socket: without one, libzmq lets every CURVE
  // client in.
  for (zmq::socket_t* s : {&impl_->zap, &impl_->router, &impl_->monitor}) {
    s->set(zmq::sockopt::linger, 0);
  }
  impl_->zap.bind(std::string(kZapEndpoint));
  zmq::socket_t& router = impl_->router;
  router.set(zmq::sockopt::curve_server, true);
  router.set(zmq::sockopt::curve_secretkey, options_.keys.secret_key);
  router.set(zmq::sockopt::zap_domain, std::string(kZapDomain));
  router.set(zmq::sockopt::router_mandatory, true);
  // A little over the limit still gets an error reply; far over it the connection is dropped
  // by libzmq before the message is buffered.
  const auto hard_limit = static_cast<std::int64_t>(2 * options_.max_request_bytes + 4096);
  router.set(zmq::sockopt::maxmsgsize, hard_limit);
  if (zmq_socket_monitor(router.handle(), std::string(kMonitorEndpoint).c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
    throw std::runtime_error(std::string("control: cannot monitor the socket: ") +
                             zmq_strerror(zmq_errno()));
  }
  impl_->monitor.connect(std::string(kMonitorEndpoint));
  try {
    router.bind(options_.endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("control: cannot bind " + options_.endpoint + ": " + e.what());
  }
  endpoint_ = router.get(zmq::sockopt::last_endpoint);
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  spdlog::info("control: listening on {} (CURVE, {} allowed keys)", endpoint_,
               impl_->allow_list()->size());
}

ControlServer::~ControlServer() {
  impl_->stop.store(true, std::memory_order_release);
  impl_->queue_ready.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  zmq_socket_monitor(impl_->router.handle(), nullptr, 0);
}

std::size_t ControlServer::serve_pending(ControlHandler& handler, std::chrono::milliseconds wait) {
  std::deque<Pending> batch;
  {
    std::unique_lock lock(impl_->queue_mutex);
    if (wait.count() > 0) {
      impl_->queue_ready.wait_for(lock, wait, [this] {
        return !impl_->pending.empty() || impl_->stop.load(std::memory_order_acquire);
      });
    }
    batch.swap(impl_->pending);
  }
  for (Pending& request : batch) {
    ControlReply reply;
    try {
      reply = impl_->dispatch(handler, request);
    } catch (const std::exception& e) {
      impl_->handler_errors.fetch_add(1, std::memory_order_relaxed);
      impl_->log.warn(LogLimiter::kHandler, "control: {} from {} failed in the engine: {}",
                      to_string(request.command), request.client.name, e.what());
      reply = ControlReply::failure("internal error");
    } catch (...) {
      impl_->handler_errors.fetch_add(1, std::memory_order_relaxed);
      reply = ControlReply::failure("internal error");
    }
    try {
      impl_->push_reply(
          {std::move(request.envelope), reply_body(request.id, reply, request.command)});
    } catch (...) {
      impl_->handler_errors.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return batch.size();
}

void ControlServer::reload() {
  const std::vector<AllowedKey> keys = load_allow_list(options_.allow_list);
  impl_->set_allow_list(keys);
  spdlog::info("control: allow-list reloaded from {} ({} keys)", options_.allow_list.string(),
               keys.size());
}

ControlCounters ControlServer::counters() const noexcept {
  ControlCounters c;
  c.accepted = impl_->accepted.load(std::memory_order_relaxed);
  c.refused_unauthenticated = impl_->unauthenticated.load(std::memory_order_relaxed);
  c.refused_unknown_key = impl_->unknown_key.load(std::memory_order_relaxed);
  c.malformed = impl_->malformed.load(std::memory_order_relaxed);
  c.busy = impl_->busy.load(std::memory_order_relaxed);
  c.expired = impl_->expired.load(std::memory_order_relaxed);
  c.handler_errors = impl_->handler_errors.load(std::memory_order_relaxed);
  c.replies_dropped = impl_->replies_dropped.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kControlCommandCount; ++i) {
    c.by_command[i] = impl_->by_command[i].load(std::memory_order_relaxed);
  }
  return c;
}

std::optional<json> control_request(const std::string& endpoint,
                                    const std::string& server_public_key, const Keypair& client,
                                    const json& request, std::chrono::milliseconds timeout) {
  if (!is_z85_key(server_public_key) || !is_z85_key(client.public_key) ||
      !is_z85_key(client.secret_key)) {
    throw std::invalid_argument("control_request: keys must be 40-character Z85 CURVE keys");
  }
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, client.secret_key);
  socket.connect(endpoint);
  const std::string body = request.dump(-1, ' ', false, json::error_handler_t::replace);
  socket.send(zmq::message_t(), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(body), zmq::send_flags::none);

  const auto deadline = Clock::now() + timeout;
  const json* wanted_id = request.is_object() && request.contains("id") ? &request["id"] : nullptr;
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, left);
    if ((item.revents & ZMQ_POLLIN) == 0) continue;
    std::size_t extra = 0;
    std::vector<zmq::message_t> frames = receive(socket, 2, extra);
    if (frames.empty()) continue;
    json reply = json::parse(as_string(frames.back()), nullptr, false);
    if (reply.is_discarded()) return std::nullopt;
    // Replies whose id is not ours are stale (a reused id would be the caller's choice).
    if (wanted_id != nullptr && reply.is_object() && reply.contains("id") &&
        reply["id"] != *wanted_id && !reply["id"].is_null()) {
      continue;
    }
    return reply;
  }
}

}  // namespace twinloop::daemon

// `twinloop daemon --config FILE`: the long-running daemon, and `twinloop run --daemon`, its
// client. The daemon owns the control server and the publisher for its whole life; sessions come
// and go underneath them. Everything runs on one thread: while idle it serves the control socket
// from a small event loop; a submitted protocol becomes a session run by execute_session() on
// this same thread, which then serves the socket between trials. One session at a time: a submit
// while one runs is refused. SIGINT/SIGTERM end the running session after its trial in flight
// (its summary written, its record closed) and then the daemon.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "src/session_host.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/control.hpp"
#include "twinloop/daemon/daemon_config.hpp"
#include "twinloop/daemon/keys.hpp"
#include "twinloop/daemon/publisher.hpp"
#include "twinloop/protocols/diagnostic.hpp"
#include "twinloop/protocols/loader.hpp"

namespace twinloop::daemon {
namespace {

void warn(const std::string& text) {
  std::fprintf(stderr, "twinloop daemon: warning: %s\n", text.c_str());
}

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

// Places threads as the configuration asks. A thread created by this one inherits its CPU mask
// and scheduling policy, so the acquisition thread is placed by switching this thread just before
// it is created and back right after. Nothing here is required: a refusal is a warning.
class ThreadPlacement {
 public:
  explicit ThreadPlacement(const DaemonThreadsConfig& config) : config_(config) {
    CPU_ZERO(&original_);
    (void)pthread_getaffinity_np(pthread_self(), sizeof original_, &original_);
    if (config_.session_cpu && !pin_to(*config_.session_cpu)) {
      warn("cannot pin the session thread to CPU " + std::to_string(*config_.session_cpu) +
           "; it runs unpinned");
    }
  }

  void before_acquisition() {
    if (config_.acquisition_cpu && !pin_to(*config_.acquisition_cpu)) {
      warn("cannot pin the acquisition thread to CPU " + std::to_string(*config_.acquisition_cpu) +
           "; it runs unpinned");
    }
    if (config_.realtime.sched_fifo) {
      sched_param param{};
      param.sched_priority = config_.realtime.priority;
      const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param);
      if (rc != 0 && !fifo_warned_) {
        fifo_warned_ = true;
        warn(std::string("SCHED_FIFO not permitted (") + std::strerror(rc) +
             "); the acquisition thread runs with normal scheduling (see LimitRTPRIO in "
             "config/twinloopd.service)");
      }
    }
  }

  // On the refit thread: off the session's CPU (it inherited its pinning), to the one configured
  // or back to every CPU the daemon started with.
  void place_refit_thread() const {
    if (config_.refit_cpu) {
      if (!pin_to(*config_.refit_cpu)) {
        warn("cannot pin the refit thread to CPU " + std::to_string(*config_.refit_cpu) +
             "; it runs on any CPU");
        (void)pthread_setaffinity_np(pthread_self(), sizeof original_, &original_);
      }
    } else if (config_.session_cpu) {
      (void)pthread_setaffinity_np(pthread_self(), sizeof original_, &original_);
    }
  }

  void after_acquisition() {
    if (config_.realtime.sched_fifo) {
      sched_param param{};
      param.sched_priority = 0;
      (void)pthread_setschedparam(pthread_self(), SCHED_OTHER, &param);
    }
    if (config_.session_cpu) {
      (void)pin_to(*config_.session_cpu);
    } else if (config_.acquisition_cpu) {
      (void)pthread_setaffinity_np(pthread_self(), sizeof original_, &original_);
    }
  }

 private:
  DaemonThreadsConfig config_;
  cpu_set_t original_;
  bool fifo_warned_ = false;
};

std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::gmtime(&now));
  return stamp;
}

// The daemon as the control socket sees it while no session runs: it accepts one submit and
// answers the session commands with "no session running".
class IdleControl final : public ControlHandler {
 public:
  explicit IdleControl(std::filesystem::path sessions_dir)
      : sessions_dir_(std::move(sessions_dir)) {}

  ControlReply status(const ControlClient&) override {
    return ControlReply::success({{"state", pending_ ? "starting" : "idle"},
                                  {"sessions_run", sessions_run_},
                                  {"last_session", last_session_}});
  }
  ControlReply pause(const ControlClient&) override { return none(); }
  ControlReply resume(const ControlClient&) override { return none(); }
  ControlReply abort(const ControlClient&, const std::string&) override { return none(); }
  ControlReply set_stop_rule(const ControlClient&, const StopRuleChange&) override {
    return none();
  }
  ControlReply submit(const ControlClient& client, const protocols::Protocol& protocol) override {
    if (pending_) {
      return ControlReply::failure("busy: session " + pending_->dir.filename().string() +
                                   " running");
    }
    std::filesystem::path dir = sessions_dir_ / (protocol.name + "-" + utc_stamp());
    for (int n = 2; std::filesystem::exists(dir); ++n) {
      dir = sessions_dir_ / (protocol.name + "-" + utc_stamp() + "-" + std::to_string(n));
    }
    pending_ = Pending{protocol, dir};
    std::printf("twinloop daemon: %s submitted protocol '%s'; session %s\n", client.name.c_str(),
                protocol.name.c_str(), dir.string().c_str());
    std::fflush(stdout);
    return ControlReply::success(
        {{"state", "accepted"}, {"session", dir.filename().string()}, {"dir", dir.string()}});
  }

  struct Pending {
    protocols::Protocol protocol;
    std::filesystem::path dir;
  };
  std::optional<Pending> take() { return std::exchange(pending_, std::nullopt); }
  [[nodiscard]] bool has_pending() const noexcept { return pending_.has_value(); }
  void finished(const std::filesystem::path& dir) {
    ++sessions_run_;
    last_session_ = dir.string();
  }

 private:
  static ControlReply none() { return ControlReply::failure("no session running"); }

  std::filesystem::path sessions_dir_;
  std::optional<Pending> pending_;
  std::uint64_t sessions_run_ = 0;
  std::string last_session_;
};

}  // namespace

int run_daemon(const DaemonOptions& options) {
  const DaemonConfigLoadResult loaded = load_daemon_config_file(options.config);
  if (!loaded.ok()) {
    std::fputs(protocols::format_diagnostics(loaded.diagnostics).c_str(), stderr);
    std::fprintf(stderr, "twinloop daemon: %s refused; nothing was started\n",
                 options.config.string().c_str());
    return kExitRefused;
  }
  const DaemonConfig& config = *loaded.config;
  if (config.threads.realtime.mlockall && ::mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    warn(std::string("mlockall not permitted (") + std::strerror(errno) +
         "); memory stays pageable (see LimitMEMLOCK in config/twinloopd.service)");
  }
  ThreadPlacement placement(config.threads);

  internal::RequestRelay relay;
  std::unique_ptr<Publisher> publisher;
  std::unique_ptr<ControlServer> server;
  try {
    std::filesystem::create_directories(config.sessions_dir);
    if (!config.publish_endpoint.empty()) {
      PublisherOptions publisher_options;
      publisher_options.endpoint = config.publish_endpoint;
      publisher_options.json_messages = config.publish_queue;
      publisher_options.send_hwm = config.publish_hwm;
      publisher = std::make_unique<Publisher>(publisher_options);
    }
    ControlServerOptions control_options;
    control_options.endpoint = config.control_endpoint;
    control_options.keys = load_keypair(config.control_key);
    control_options.allow_list = config.control_allow;
    control_options.queue_capacity = config.control_queue;
    control_options.max_request_bytes = config.control_max_request_bytes;
    control_options.on_request = [&relay] { relay.notify(); };
    server = std::make_unique<ControlServer>(control_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop daemon: %s\n", e.what());
    return kExitRefused;
  }
  std::printf("twinloop daemon: control %s (CURVE; server key %s)%s%s; sessions in %s\n",
              server->endpoint().c_str(), server->public_key().c_str(),
              publisher ? "; monitoring " : "", publisher ? publisher->endpoint().c_str() : "",
              config.sessions_dir.string().c_str());
  std::fflush(stdout);

  RunOptions run;
  run.rig = config.rig.kind;
  run.probe_endpoint = config.rig.probe_endpoint;
  run.stimulus_endpoint = config.rig.stimulus_endpoint;
  run.heartbeat_endpoint = config.rig.heartbeat_endpoint;
  run.seed = config.rig.seed;
  run.pace = config.rig.pace;
  run.sim_model = config.rig.sim_model;
  run.sim_units = config.rig.sim_units;
  run.seconds = config.max_session_seconds;
  run.quiet = true;

  boost::asio::io_context io;
  IdleControl idle(config.sessions_dir);
  bool stop = false;
  int stop_signal = 0;
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    stop = true;
    stop_signal = signal;
  });
  // SIGHUP re-reads the allow-list (between sessions; one during a session waits for its end).
  boost::asio::signal_set hangup(io, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_hangup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        try {
          server->reload();
          std::fprintf(stderr, "twinloop daemon: allow-list reloaded\n");
        } catch (const std::exception& e) {
          std::fprintf(stderr, "twinloop daemon: allow-list not reloaded, the old one stays: %s\n",
                       e.what());
        }
        hangup.async_wait(on_hangup);
      };
  hangup.async_wait(on_hangup);
  const auto serve_idle = [&] { server->serve_pending(idle); };
  const auto listen_idle = [&] {
    relay.set([&io, &serve_idle] { boost::asio::post(io, serve_idle); });
    boost::asio::post(io, serve_idle);  // what queued while the relay pointed elsewhere
  };
  listen_idle();

  int status = kExitOk;
  while (!stop) {
    io.restart();
    io.run_for(std::chrono::milliseconds(100));
    if (stop || !idle.has_pending()) continue;
    IdleControl::Pending next = *idle.take();
    internal::SessionServices services;
    services.publisher = publisher.get();
    services.control = server.get();
    services.relay = &relay;
    services.before_acquisition = [&placement] { placement.before_acquisition(); };
    services.after_acquisition = [&placement] { placement.after_acquisition(); };
    services.on_refit_thread = [&placement] { placement.place_refit_thread(); };
    bool interrupted = false;
    services.interrupted = &interrupted;
    const int rc =
        internal::execute_session(next.protocol, run, next.dir, false, "daemon", services);
    std::printf("twinloop daemon: session %s ended (%s)\n", next.dir.string().c_str(),
                rc == kExitOk ? "ok" : "failed");
    std::fflush(stdout);
    idle.finished(next.dir);
    listen_idle();
    if (interrupted) stop = true;
  }
  relay.set(nullptr);
  signals.cancel();
  hangup.cancel();
  std::printf("twinloop daemon: %s: stopped\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  return status;
}

int submit_protocol(const SubmitOptions& options) {
  std::ifstream in(options.protocol, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "twinloop run: cannot read %s\n", options.protocol.string().c_str());
    return kExitRefused;
  }
  std::ostringstream text;
  text << in.rdbuf();
  try {
    const Keypair client = load_keypair(options.key);
    const std::string server = load_public_key(options.server_key);
    const nlohmann::json request = {{"id", 1},
                                    {"command", "submit"},
                                    {"name", options.protocol.filename().string()},
                                    {"protocol", text.str()}};
    const auto timeout =
        std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_s * 1000.0));
    const std::optional<nlohmann::json> reply =
        control_request(options.endpoint, server, client, request, timeout);
    if (!reply) {
      std::fprintf(stderr,
                   "twinloop run: no reply from the daemon at %s within %.1f s (is it running, "
                   "this key on its allow-list, and the server key its own?)\n",
                   options.endpoint.c_str(), options.timeout_s);
      return kExitRefused;
    }
    if (!reply->value("ok", false)) {
      std::fprintf(stderr, "twinloop run: the daemon refused %s: %s\n",
                   options.protocol.string().c_str(),
                   reply->value("error", std::string("no reason given")).c_str());
      return kExitRefused;
    }
    std::printf("twinloop run: accepted; session %s\n", reply->value("dir", std::string()).c_str());
    return kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop run: %s\n", e.what());
    return kExitRefused;
  }
}

}  // namespace twinloop::daemon

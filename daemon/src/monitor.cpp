// `twinloop monitor`: a SUB socket on the daemon's monitoring stream, decoded per
// docs/monitoring.md, folded into a small view model and drawn a few times a second. It never
// sends anything to the daemon (there is nothing to send on a SUB socket but subscriptions).
#include "twinloop/daemon/monitor.hpp"

#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/publisher.hpp"

namespace twinloop::daemon {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) {
  g_interrupted = 1;
}

constexpr auto kRedraw = std::chrono::milliseconds(250);
constexpr double kRateWindowS = 2.0;  // firing rates are averaged over this much acquisition time

std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint32_t get_u32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
std::uint16_t get_u16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | p[1] << 8);
}

struct TopicSeen {
  std::uint64_t messages = 0;
  std::uint64_t gaps = 0;  // messages missing between consecutive sequence numbers
  std::optional<std::uint64_t> last;
};

struct View {
  std::map<std::string, TopicSeen> topics;
  std::uint64_t malformed = 0;
  nlohmann::json session, trial, posterior, health;
  // Spikes in the current rate window, per channel, and the acquisition time it covers.
  std::map<std::uint32_t, std::uint64_t> window_counts;
  std::int64_t window_samples = 0;
  std::uint64_t spikes_seen = 0;
  std::chrono::steady_clock::time_point window_started = std::chrono::steady_clock::now();
  // The last complete window's rates (Hz) per channel, and the total.
  std::vector<std::pair<std::uint32_t, double>> rates;
  double total_rate = 0.0;
  bool have_rates = false;

  double sample_rate() const {
    if (!session.is_object()) return 0.0;
    return session.value("sample_rate_hz", 0.0);
  }

  // Rates over the current window; `close` keeps them for display and starts a new window,
  // which it does only once the window spans kRateWindowS (or `force` and any time at all).
  void close_window(bool force) {
    const double rate = sample_rate();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - window_started).count();
    const double seconds = rate > 0 ? static_cast<double>(window_samples) / rate : wall;
    const bool complete = seconds >= kRateWindowS;
    // Until a first window is complete, show the partial one rather than nothing.
    if (!complete && (have_rates || !force || seconds <= 0)) return;
    rates.clear();
    total_rate = 0.0;
    for (const auto& [channel, count] : window_counts) {
      const double hz = static_cast<double>(count) / seconds;
      rates.emplace_back(channel, hz);
      total_rate += hz;
    }
    std::sort(rates.begin(), rates.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    if (!complete) return;
    have_rates = true;
    window_counts.clear();
    window_samples = 0;
    window_started = std::chrono::steady_clock::now();
  }

  void take(const std::string& topic, const std::uint8_t* data, std::size_t size) {
    if (size < kMonitorHeaderBytes || std::memcmp(data, "TWMN", 4) != 0 ||
        get_u16(data + 4) != kMonitorWireVersion) {
      ++malformed;
      return;
    }
    const std::uint16_t encoding = get_u16(data + 6);
    const std::uint64_t sequence = get_u64(data + 8);
    TopicSeen& seen = topics[topic];
    ++seen.messages;
    // A lower sequence than before means the daemon restarted: start counting afresh.
    if (seen.last && sequence > *seen.last + 1) seen.gaps += sequence - *seen.last - 1;
    seen.last = sequence;
    const std::uint8_t* body = data + kMonitorHeaderBytes;
    const std::size_t body_size = size - kMonitorHeaderBytes;
    if (encoding == 2) {
      if (body_size < 24) {
        ++malformed;
        return;
      }
      const auto first = static_cast<std::int64_t>(get_u64(body));
      const auto end = static_cast<std::int64_t>(get_u64(body + 8));
      const std::uint32_t count = get_u32(body + 16);
      const std::uint32_t flags = get_u32(body + 20);
      if (body_size != 24 + std::size_t{count} * kMonitorSpikeRecordBytes) {
        ++malformed;
        return;
      }
      for (std::uint32_t i = 0; i < count; ++i)
        ++window_counts[get_u32(body + 24 + std::size_t{i} * kMonitorSpikeRecordBytes + 8)];
      spikes_seen += count;
      if ((flags & 1u) == 0 && end > first) window_samples += end - first;
      close_window(false);
      return;
    }
    if (encoding != 1) {
      ++malformed;
      return;
    }
    nlohmann::json doc = nlohmann::json::parse(body, body + body_size, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      ++malformed;
      return;
    }
    if (topic == "session") session = std::move(doc);
    if (topic == "trial") trial = std::move(doc);
    if (topic == "posterior") posterior = std::move(doc);
    if (topic == "health") health = std::move(doc);
  }
};

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string number_or_dash(const nlohmann::json& j, const char* key, int digits) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return "-";
  const double v = j[key].get<double>();
  return v < 0 ? "-" : fixed(v, digits);
}

std::string render(View& view, const std::string& endpoint, bool ansi) {
  std::ostringstream out;
  const char* bold = ansi ? "\x1b[1m" : "";
  const char* reset = ansi ? "\x1b[0m" : "";
  out << bold << "twinloop monitor" << reset << "  " << endpoint << "\n";
  const nlohmann::json& s = view.session;
  if (s.is_object())
    out << "session  " << s.value("name", "?") << "  protocol " << s.value("protocol", "?")
        << "  state " << s.value("state", "?") << "  rig " << s.value("rig", "?") << "  designer "
        << s.value("designer", "?") << "\n";
  else
    out << "session  (waiting for the daemon)\n";
  const nlohmann::json& t = view.trial;
  if (t.is_object()) {
    out << "trial    " << t.value("trial", 0) << "  " << t.value("stage", "?") << "  candidate "
        << t.value("candidate", 0) << (t.value("validation", false) ? "  (validation)" : "");
    if (t.contains("counts") && t.value("stage", "") != "designed")
      out << "  spikes " << t["counts"].value("total", 0);
    const std::string note = t.value("note", "");
    if (!note.empty()) out << "  " << note;
    out << "\n";
  } else {
    out << "trial    -\n";
  }
  out << "posterior";
  if (view.posterior.is_object()) {
    out << " after trial " << view.posterior.value("trial", 0) << "\n";
    std::size_t width = 4;
    for (const auto& h : view.posterior.value("hypotheses", nlohmann::json::array()))
      width = std::max(width, h.value("name", "").size());
    for (const auto& h : view.posterior.value("hypotheses", nlohmann::json::array())) {
      const std::string name = h.value("name", "?");
      const double p = h.contains("probability") && h["probability"].is_number()
                           ? std::clamp(h["probability"].get<double>(), 0.0, 1.0)
                           : 0.0;
      const int bar = static_cast<int>(p * 40.0 + 0.5);
      out << "  " << name << std::string(width - name.size(), ' ') << " |"
          << std::string(static_cast<std::size_t>(bar), '#')
          << std::string(static_cast<std::size_t>(40 - bar), ' ') << "| " << fixed(p, 3) << "\n";
    }
  } else {
    out << " -\n";
  }
  view.close_window(true);
  out << "rates    total " << fixed(view.total_rate, 1) << " Hz over " << view.rates.size()
      << " channels; spikes seen " << view.spikes_seen << "\n";
  if (!view.rates.empty()) {
    out << "  top";
    for (std::size_t i = 0; i < std::min<std::size_t>(view.rates.size(), 8); ++i)
      out << "  ch" << view.rates[i].first << " " << fixed(view.rates[i].second, 1);
    out << " Hz\n";
  }
  const nlohmann::json& h = view.health;
  if (h.is_object()) {
    const nlohmann::json q = h.value("event_queue", nlohmann::json::object());
    const nlohmann::json b = h.value("block_latency_ms", nlohmann::json::object());
    const nlohmann::json d = h.value("designer_latency_ms", nlohmann::json::object());
    out << "health   cpu " << number_or_dash(h, "cpu_percent", 0) << "%  block p50/p99 "
        << number_or_dash(b, "p50", 2) << "/" << number_or_dash(b, "p99", 2) << " ms  designer "
        << number_or_dash(d, "last", 1) << " ms (p99 " << number_or_dash(d, "p99", 1)
        << ")  deadline misses " << h.value("deadline_misses", 0) << "\n";
    out << "         spike queue " << q.value("depth", 0) << "/" << q.value("capacity", 0)
        << " dropped " << q.value("dropped", 0) << "  samples dropped "
        << h.value("dropped_samples", 0) << "\n";
    const nlohmann::json topics =
        h.value("publisher", nlohmann::json::object()).value("topics", nlohmann::json::object());
    out << "  daemon drops";
    for (const auto& [name, c] : topics.items())
      out << "  " << name << " " << c.value("queue_dropped", 0) + c.value("hwm_dropped", 0)
          << " (queue " << c.value("queue_depth", 0) << ")";
    out << "\n";
  } else {
    out << "health   -\n";
  }
  out << "  seen by me";
  for (const auto& [name, seen] : view.topics)
    out << "  " << name << " " << seen.messages << " msgs, " << seen.gaps << " missing";
  if (view.malformed > 0) out << "  malformed " << view.malformed;
  out << "\n";
  return out.str();
}

}  // namespace

int monitor(const MonitorOptions& options) {
  if (options.endpoint.empty() || options.seconds < 0) {
    std::fprintf(stderr, "monitor: an endpoint is required and --seconds must be >= 0\n");
    return kExitUsage;
  }
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_SUB);
  const int linger = 0, rcvhwm = 10000;
  const std::int64_t max_size = 64 << 20;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(socket, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
  zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max_size, sizeof max_size);
  zmq_setsockopt(socket, ZMQ_SUBSCRIBE, "", 0);
  if (zmq_connect(socket, options.endpoint.c_str()) != 0) {
    std::fprintf(stderr, "monitor: cannot connect to %s: %s\n", options.endpoint.c_str(),
                 zmq_strerror(zmq_errno()));
    zmq_close(socket);
    zmq_ctx_term(context);
    return kExitRefused;
  }
  g_interrupted = 0;
  auto* old_int = std::signal(SIGINT, on_interrupt);
  auto* old_term = std::signal(SIGTERM, on_interrupt);

  const bool ansi = !options.once_plain && isatty(STDOUT_FILENO) == 1;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(options.seconds));
  auto next_draw = start;
  View view;
  zmq_msg_t topic, payload;
  zmq_msg_init(&topic);
  zmq_msg_init(&payload);
  while (g_interrupted == 0) {
    const auto now = std::chrono::steady_clock::now();
    if (options.seconds > 0 && now >= deadline) break;
    if (!options.once_plain && now >= next_draw) {
      const std::string frame = render(view, options.endpoint, ansi);
      if (ansi) std::fputs("\x1b[H\x1b[2J", stdout);
      std::fputs(frame.c_str(), stdout);
      if (!ansi) std::fputs("--\n", stdout);
      std::fflush(stdout);
      next_draw = now + kRedraw;
    }
    zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 50) <= 0) continue;
    // Take everything that is there now, then draw again if it is time.
    for (int i = 0; i < 10000; ++i) {
      if (zmq_msg_recv(&topic, socket, ZMQ_DONTWAIT) < 0) break;
      if (!zmq_msg_more(&topic)) {
        ++view.malformed;
        continue;
      }
      if (zmq_msg_recv(&payload, socket, 0) < 0) break;
      bool extra = zmq_msg_more(&payload) != 0;
      if (!extra) {
        const std::string name(static_cast<const char*>(zmq_msg_data(&topic)),
                               zmq_msg_size(&topic));
        view.take(name, static_cast<const std::uint8_t*>(zmq_msg_data(&payload)),
                  zmq_msg_size(&payload));
      } else {
        ++view.malformed;
        while (extra && zmq_msg_recv(&payload, socket, 0) >= 0) extra = zmq_msg_more(&payload);
      }
    }
  }
  const std::string frame = render(view, options.endpoint, false);
  if (ansi) std::fputs("\x1b[H\x1b[2J", stdout);
  std::fputs(frame.c_str(), stdout);
  std::fflush(stdout);
  zmq_msg_close(&topic);
  zmq_msg_close(&payload);
  zmq_close(socket);
  zmq_ctx_term(context);
  std::signal(SIGINT, old_int);
  std::signal(SIGTERM, old_term);
  return kExitOk;
}

}  // namespace twinloop::daemon

// The daemon configuration loader. A small reader over yaml-cpp's node tree in the manner of the
// protocol loader (whose checker is private to protocols/): every problem is collected with its
// position and field path, so an operator fixes them all in one pass instead of one per restart.
#include "twinloop/daemon/daemon_config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>

namespace twinloop::daemon {
namespace {

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  void error(const YAML::Node& at, const std::string& path, std::string found,
             std::string expected) {
    const YAML::Mark mark = at.Mark();
    add(mark.is_null() ? 0 : mark.line + 1, mark.is_null() ? 0 : mark.column + 1, path,
        std::move(found), std::move(expected));
  }
  void add(int line, int column, std::string path, std::string found, std::string expected) {
    diagnostics_.push_back(
        {file_, line, column, std::move(path), std::move(found), std::move(expected)});
  }

  static std::string describe(const YAML::Node& node) {
    if (!node.IsDefined() || node.IsNull()) return "nothing";
    if (node.IsMap()) return "a map";
    if (node.IsSequence()) return "a list";
    return "'" + node.Scalar() + "'";
  }

  // Checks that `node` is a map whose keys are all in `allowed`, each once.
  bool map(const YAML::Node& node, const std::string& path,
           std::initializer_list<std::string_view> allowed, const std::string& expected) {
    if (!node.IsMap()) {
      error(node, path, describe(node), expected);
      return false;
    }
    std::set<std::string> seen;
    for (const auto& entry : node) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : describe(entry.first);
      const std::string where = path.empty() ? key : path + "." + key;
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        std::string words;
        for (const std::string_view a : allowed)
          words += (words.empty() ? "" : ", ") + std::string(a);
        error(entry.first, where, "an unknown key", "one of " + words);
      } else if (!seen.insert(key).second) {
        error(entry.first, where, "a second '" + key + "'", "each key once");
      }
    }
    return true;
  }

  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }

  std::optional<std::string> text(const YAML::Node& node, const std::string& path) {
    if (!node.IsScalar() || node.Scalar().empty()) {
      error(node, path, describe(node), "a non-empty string");
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<std::string> choice(const YAML::Node& node, const std::string& path,
                                    std::initializer_list<std::string_view> words) {
    std::string list;
    for (const std::string_view w : words) list += (list.empty() ? "" : ", ") + std::string(w);
    if (node.IsScalar() && std::find(words.begin(), words.end(), node.Scalar()) != words.end()) {
      return node.Scalar();
    }
    error(node, path, describe(node), "one of " + list);
    return std::nullopt;
  }

  std::optional<std::int64_t> integer(const YAML::Node& node, const std::string& path,
                                      std::int64_t lo, std::int64_t hi) {
    const std::string expected =
        "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    if (node.IsScalar()) {
      const std::string& s = node.Scalar();
      std::int64_t v = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc() && end == s.data() + s.size() && v >= lo && v <= hi) return v;
    }
    error(node, path, describe(node), expected);
    return std::nullopt;
  }

  std::optional<double> number(const YAML::Node& node, const std::string& path, double lo,
                               double hi) {
    std::ostringstream expected;
    expected << "a number in (" << lo << ", " << hi << "]";
    if (node.IsScalar()) {
      const std::string& s = node.Scalar();
      double v = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec == std::errc() && end == s.data() + s.size() && std::isfinite(v) && v > lo &&
          v <= hi) {
        return v;
      }
    }
    error(node, path, describe(node), expected.str());
    return std::nullopt;
  }

  std::optional<bool> boolean(const YAML::Node& node, const std::string& path) {
    if (node.IsScalar() && (node.Scalar() == "true" || node.Scalar() == "false")) {
      return node.Scalar() == "true";
    }
    error(node, path, describe(node), "true or false");
    return std::nullopt;
  }

  void missing(const YAML::Node& map, const std::string& path, std::string_view key,
               const std::string& expected) {
    error(map, join(path, key), "nothing", expected);
  }

  std::vector<protocols::Diagnostic> take() {
    std::stable_sort(diagnostics_.begin(), diagnostics_.end(), [](const auto& a, const auto& b) {
      return a.line != b.line ? a.line < b.line : a.column < b.column;
    });
    return std::move(diagnostics_);
  }
  [[nodiscard]] bool clean() const noexcept { return diagnostics_.empty(); }

 private:
  std::string file_;
  std::vector<protocols::Diagnostic> diagnostics_;
};

std::filesystem::path resolve(const std::filesystem::path& base, const std::string& text) {
  const std::filesystem::path p(text);
  return p.is_absolute() || base.empty() ? p : base / p;
}

void read_rig(Reader& r, const YAML::Node& node, DaemonRigConfig& rig) {
  const std::string path = "rig";
  if (!r.map(node, path,
             {"kind", "seed", "pace", "sim_model", "sim_units", "probe_endpoint",
              "stimulus_endpoint", "heartbeat_endpoint"},
             "a map with kind (sim, net or openephys)")) {
    return;
  }
  if (const YAML::Node k = node["kind"]; k) {
    if (auto v = r.choice(k, "rig.kind", {"sim", "net", "openephys"})) rig.kind = *v;
  } else {
    r.missing(node, path, "kind", "sim, net or openephys");
  }
  if (const YAML::Node n = node["seed"]; n) {
    if (auto v = r.integer(n, "rig.seed", 0, std::numeric_limits<std::int64_t>::max())) {
      rig.seed = static_cast<std::uint64_t>(*v);
    }
  }
  if (const YAML::Node n = node["pace"]; n) {
    if (auto v = r.choice(n, "rig.pace", {"realtime", "max"})) {
      (void)drivers::parse_pace(*v, rig.pace);
    }
  }
  if (const YAML::Node n = node["sim_model"]; n) {
    if (auto v = r.choice(n, "rig.sim_model", {"direction_tuning", "null", "mixed"})) {
      rig.sim_model = *v;
    }
  }
  if (const YAML::Node n = node["sim_units"]; n) {
    if (auto v = r.integer(n, "rig.sim_units", 1, 4096))
      rig.sim_units = static_cast<std::size_t>(*v);
  }
  for (const char* key : {"probe_endpoint", "stimulus_endpoint"}) {
    if (const YAML::Node n = node[key]; n) {
      if (auto v = r.text(n, Reader::join(path, key))) {
        (std::string_view(key) == "probe_endpoint" ? rig.probe_endpoint : rig.stimulus_endpoint) =
            *v;
      }
    } else if (rig.kind == "net" || rig.kind == "openephys") {
      r.missing(node, path, key, "a ZeroMQ endpoint (rig.kind is " + rig.kind + ")");
    }
  }
  if (const YAML::Node n = node["heartbeat_endpoint"]; n) {
    if (auto v = r.text(n, "rig.heartbeat_endpoint")) rig.heartbeat_endpoint = *v;
  }
}

void read_control(Reader& r, const YAML::Node& node, const std::filesystem::path& base,
                  DaemonConfig& c) {
  const std::string path = "control";
  if (!r.map(node, path, {"endpoint", "secret_key", "allow_list", "queue", "max_request_bytes"},
             "a map with endpoint, secret_key and allow_list")) {
    return;
  }
  if (const YAML::Node n = node["endpoint"]; n) {
    if (auto v = r.text(n, "control.endpoint")) c.control_endpoint = *v;
  } else {
    r.missing(node, path, "endpoint", "a ZeroMQ endpoint, e.g. tcp://*:5557");
  }
  if (const YAML::Node n = node["secret_key"]; n) {
    if (auto v = r.text(n, "control.secret_key")) c.control_key = resolve(base, *v);
  } else {
    r.missing(node, path, "secret_key", "the server's secret key file (twinloop keygen)");
  }
  if (const YAML::Node n = node["allow_list"]; n) {
    if (auto v = r.text(n, "control.allow_list")) c.control_allow = resolve(base, *v);
  } else {
    r.missing(node, path, "allow_list", "a file of allowed client public keys");
  }
  if (const YAML::Node n = node["queue"]; n) {
    if (auto v = r.integer(n, "control.queue", 1, 1024)) c.control_queue = *v;
  }
  if (const YAML::Node n = node["max_request_bytes"]; n) {
    if (auto v = r.integer(n, "control.max_request_bytes", 1024, 64 << 20)) {
      c.control_max_request_bytes = *v;
    }
  }
}

void read_publish(Reader& r, const YAML::Node& node, DaemonConfig& c) {
  const std::string path = "publish";
  if (!r.map(node, path, {"endpoint", "queue", "hwm"}, "a map with endpoint")) return;
  if (const YAML::Node n = node["endpoint"]; n) {
    if (auto v = r.text(n, "publish.endpoint")) c.publish_endpoint = *v;
  } else {
    r.missing(node, path, "endpoint", "a ZeroMQ endpoint, e.g. tcp://*:5560");
  }
  if (const YAML::Node n = node["queue"]; n) {
    if (auto v = r.integer(n, "publish.queue", 1, 1 << 20)) c.publish_queue = *v;
  }
  if (const YAML::Node n = node["hwm"]; n) {
    if (auto v = r.integer(n, "publish.hwm", 1, 1 << 20)) c.publish_hwm = static_cast<int>(*v);
  }
}

void read_threads(Reader& r, const YAML::Node& node, DaemonThreadsConfig& t) {
  if (!r.map(node, "threads", {"acquisition_cpu", "session_cpu", "refit_cpu", "realtime"},
             "a map")) {
    return;
  }
  if (const YAML::Node n = node["acquisition_cpu"]; n) {
    if (auto v = r.integer(n, "threads.acquisition_cpu", 0, 1023)) t.acquisition_cpu = *v;
  }
  if (const YAML::Node n = node["session_cpu"]; n) {
    if (auto v = r.integer(n, "threads.session_cpu", 0, 1023)) t.session_cpu = *v;
  }
  if (const YAML::Node n = node["refit_cpu"]; n) {
    if (auto v = r.integer(n, "threads.refit_cpu", 0, 1023)) t.refit_cpu = *v;
  }
  if (const YAML::Node rt = node["realtime"]; rt) {
    if (!r.map(rt, "threads.realtime", {"sched_fifo", "priority", "mlockall"},
               "a map with sched_fifo, priority, mlockall")) {
      return;
    }
    if (const YAML::Node n = rt["sched_fifo"]; n) {
      if (auto v = r.boolean(n, "threads.realtime.sched_fifo")) t.realtime.sched_fifo = *v;
    }
    if (const YAML::Node n = rt["priority"]; n) {
      if (auto v = r.integer(n, "threads.realtime.priority", 1, 99)) t.realtime.priority = *v;
    }
    if (const YAML::Node n = rt["mlockall"]; n) {
      if (auto v = r.boolean(n, "threads.realtime.mlockall")) t.realtime.mlockall = *v;
    }
  }
}

}  // namespace

DaemonConfigLoadResult load_daemon_config_text(std::string_view text,
                                               const std::string& display_name,
                                               const std::filesystem::path& base_dir) {
  DaemonConfigLoadResult result;
  Reader r(display_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::ParserException& e) {
    r.add(e.mark.is_null() ? 0 : e.mark.line + 1, e.mark.is_null() ? 0 : e.mark.column + 1, "",
          "a YAML syntax error (" + e.msg + ")", "well-formed YAML");
    result.diagnostics = r.take();
    return result;
  }
  DaemonConfig c;
  if (r.map(root, "", {"rig", "sessions_dir", "publish", "control", "threads", "limits"},
            "a map with rig, sessions_dir and control")) {
    if (const YAML::Node n = root["rig"]; n) {
      read_rig(r, n, c.rig);
    } else {
      r.missing(root, "", "rig", "a map with kind (sim or net)");
    }
    if (const YAML::Node n = root["sessions_dir"]; n) {
      if (auto v = r.text(n, "sessions_dir")) c.sessions_dir = resolve(base_dir, *v);
    } else {
      r.missing(root, "", "sessions_dir", "the folder sessions are written to");
    }
    if (const YAML::Node n = root["control"]; n) {
      read_control(r, n, base_dir, c);
    } else {
      r.missing(root, "", "control", "a map with endpoint, secret_key and allow_list");
    }
    if (const YAML::Node n = root["publish"]; n) read_publish(r, n, c);
    if (const YAML::Node n = root["threads"]; n) read_threads(r, n, c.threads);
    if (const YAML::Node n = root["limits"]; n) {
      if (r.map(n, "limits", {"max_session_seconds"}, "a map with max_session_seconds")) {
        if (const YAML::Node m = n["max_session_seconds"]; m) {
          if (auto v = r.number(m, "limits.max_session_seconds", 0.0, 7 * 86400.0)) {
            c.max_session_seconds = *v;
          }
        }
      }
    }
  }
  result.diagnostics = r.take();
  if (result.diagnostics.empty()) result.config = std::move(c);
  return result;
}

DaemonConfigLoadResult load_daemon_config_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    DaemonConfigLoadResult result;
    result.diagnostics.push_back(
        {path.string(), 0, 0, "", "a file that cannot be read", "a readable YAML file"});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return load_daemon_config_text(text.str(), path.string(), path.parent_path());
}

}  // namespace twinloop::daemon

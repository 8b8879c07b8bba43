// The authenticated control socket: allowed clients reach the handler; every kind of refusal is
// counted and never reaches it; key files and allow-lists.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "twinloop/daemon/commands.hpp"
#include "twinloop/daemon/control.hpp"
#include "twinloop/daemon/keys.hpp"

namespace twinloop::daemon {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::filesystem::path fresh_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  const auto dir =
      std::filesystem::temp_directory_path() / ("twinloop-control-" + std::to_string(::getpid()) +
                                                "-" + name + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string example_protocol() {
  return read(std::filesystem::path(TWINLOOP_SOURCE_DIR) /
              "config/examples/protocol_gratings.yaml");
}

// Records what reached it; status answers with a marker the test can see.
class FakeHandler final : public ControlHandler {
 public:
  ControlReply status(const ControlClient& client) override {
    note("status", client);
    return ControlReply::success({{"state", "running"}, {"trials", 7}});
  }
  ControlReply pause(const ControlClient& client) override {
    note("pause", client);
    return ControlReply::success();
  }
  ControlReply resume(const ControlClient& client) override {
    note("resume", client);
    return ControlReply::failure("not paused");
  }
  ControlReply abort(const ControlClient& client, const std::string& reason) override {
    note("abort:" + reason, client);
    return ControlReply::success();
  }
  ControlReply set_stop_rule(const ControlClient& client, const StopRuleChange& change) override {
    note("set_stop_rule", client);
    const std::lock_guard lock(mutex_);
    change_ = change;
    return ControlReply::success();
  }
  ControlReply submit(const ControlClient& client, const protocols::Protocol& protocol) override {
    note("submit:" + protocol.name, client);
    if (protocol.name == "throw") throw std::runtime_error("boom");
    return ControlReply::success({{"session", "s-1"}});
  }

  std::vector<std::string> calls() const {
    const std::lock_guard lock(mutex_);
    return calls_;
  }
  std::vector<std::string> clients() const {
    const std::lock_guard lock(mutex_);
    return clients_;
  }
  StopRuleChange change() const {
    const std::lock_guard lock(mutex_);
    return change_;
  }

 private:
  void note(const std::string& call, const ControlClient& client) {
    const std::lock_guard lock(mutex_);
    calls_.push_back(call);
    clients_.push_back(client.name);
  }
  mutable std::mutex mutex_;
  std::vector<std::string> calls_;
  std::vector<std::string> clients_;
  StopRuleChange change_;
};

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_dir("srv");
    server_keys_ = generate_keypair();
    client_ = generate_keypair();
    stranger_ = generate_keypair();
    allow_ = dir_ / "clients.allow";
    write(allow_, "# control clients\n\n" + client_.public_key + " operator\n");
  }
  void TearDown() override {
    stop_pump();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start(std::size_t max_request_bytes = 2U << 20, bool pump = true,
             std::chrono::milliseconds request_timeout = 5000ms) {
    ControlServerOptions options;
    options.endpoint = "tcp://127.0.0.1:*";
    options.keys = server_keys_;
    options.allow_list = allow_;
    options.max_request_bytes = max_request_bytes;
    options.request_timeout = request_timeout;
    server_ = std::make_unique<ControlServer>(std::move(options));
    if (pump) {
      pump_ = std::thread([this] {
        while (!stop_.load()) server_->serve_pending(handler_, 20ms);
      });
    }
  }
  void stop_pump() {
    stop_.store(true);
    if (pump_.joinable()) pump_.join();
  }

  std::optional<json> ask(const json& request, const Keypair& keys,
                          std::chrono::milliseconds timeout = 2000ms) {
    return control_request(server_->endpoint(), server_->public_key(), keys, request, timeout);
  }
  std::optional<json> ask(const json& request) { return ask(request, client_); }

  // Sends raw bytes as an allowed CURVE client (for bodies that are not JSON).
  std::optional<json> ask_raw(const std::string& body) {
    zmq::context_t context(1);
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::curve_serverkey, server_->public_key());
    socket.set(zmq::sockopt::curve_publickey, client_.public_key);
    socket.set(zmq::sockopt::curve_secretkey, client_.secret_key);
    socket.connect(server_->endpoint());
    socket.send(zmq::message_t(), zmq::send_flags::sndmore);
    socket.send(zmq::buffer(body), zmq::send_flags::none);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 2000ms);
    if ((item.revents & ZMQ_POLLIN) == 0) return std::nullopt;
    zmq::message_t frame;
    do {
      if (!socket.recv(frame)) return std::nullopt;
    } while (frame.more());
    return json::parse(frame.to_string(), nullptr, false);
  }

  // Waits (bounded) for a counter to reach `at_least`.
  template <typename Get>
  bool eventually(Get get, std::uint64_t at_least) {
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (get(server_->counters()) >= at_least) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  void expect_still_serving() {
    const auto reply = ask({{"id", "after"}, {"command", "status"}});
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ((*reply)["ok"], true);
    EXPECT_EQ((*reply)["id"], "after");
  }

  std::filesystem::path dir_;
  std::filesystem::path allow_;
  Keypair server_keys_, client_, stranger_;
  FakeHandler handler_;
  std::unique_ptr<ControlServer> server_;
  std::thread pump_;
  std::atomic<bool> stop_{false};
};

TEST_F(ControlTest, CurveIsAvailable) {
  EXPECT_NE(zmq_has("curve"), 0);
}

TEST_F(ControlTest, AllowedKeyReachesHandlerWithEveryCommand) {
  start();
  EXPECT_NE(server_->endpoint().find("tcp://127.0.0.1:"), std::string::npos);
  EXPECT_EQ(server_->endpoint().find('*'), std::string::npos);

  auto reply = ask({{"id", 1}, {"command", "status"}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["id"], 1);
  EXPECT_EQ((*reply)["ok"], true);
  EXPECT_EQ((*reply)["command"], "status");
  EXPECT_EQ((*reply)["state"], "running");
  EXPECT_EQ((*reply)["trials"], 7);
  EXPECT_FALSE(reply->contains("error"));

  EXPECT_EQ((*ask({{"id", "p"}, {"command", "pause"}}))["ok"], true);
  reply = ask({{"id", "r"}, {"command", "resume"}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);  // the handler's refusal is passed through
  EXPECT_EQ((*reply)["error"], "not paused");
  EXPECT_EQ((*ask({{"id", 3}, {"command", "abort"}, {"reason", "animal moved"}}))["ok"], true);
  EXPECT_EQ((*ask({{"id", 4},
                   {"command", "set_stop_rule"},
                   {"posterior_threshold", 0.99},
                   {"max_trials", 250},
                   {"max_minutes", 12.5}}))["ok"],
            true);
  reply = ask({{"id", 5}, {"command", "submit"}, {"protocol", example_protocol()}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], true) << reply->dump();
  EXPECT_EQ((*reply)["session"], "s-1");

  EXPECT_EQ(handler_.calls(),
            (std::vector<std::string>{"status", "pause", "resume", "abort:animal moved",
                                      "set_stop_rule", "submit:gratings_direction_contrast"}));
  for (const auto& name : handler_.clients()) EXPECT_EQ(name, "operator");
  const StopRuleChange change = handler_.change();
  EXPECT_EQ(change.posterior_threshold, 0.99);
  EXPECT_EQ(change.max_trials, 250U);
  EXPECT_EQ(change.max_minutes, 12.5);
  const ControlCounters counters = server_->counters();
  EXPECT_EQ(counters.accepted, 6U);
  for (const auto n : counters.by_command) EXPECT_EQ(n, 1U);
  EXPECT_EQ(counters.malformed, 0U);
  EXPECT_EQ(counters.refused_unknown_key, 0U);
  EXPECT_EQ(counters.refused_unauthenticated, 0U);
}

// A client without CURVE (NULL, or PLAIN) never gets a connection.
TEST_F(ControlTest, ClientWithoutCurveIsRefusedAndCounted) {
  start();
  for (const bool plain : {false, true}) {
    const auto before = server_->counters().refused_unauthenticated;
    zmq::context_t context(1);
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    if (plain) {
      socket.set(zmq::sockopt::plain_username, "operator");
      socket.set(zmq::sockopt::plain_password, "secret");
    }
    socket.connect(server_->endpoint());
    socket.send(zmq::message_t(), zmq::send_flags::sndmore);
    socket.send(zmq::str_buffer(R"({"id":1,"command":"abort"})"), zmq::send_flags::none);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 300ms);
    EXPECT_EQ(item.revents & ZMQ_POLLIN, 0) << (plain ? "PLAIN" : "NULL");
    EXPECT_TRUE(
        eventually([](const ControlCounters& c) { return c.refused_unauthenticated; }, before + 1))
        << (plain ? "PLAIN" : "NULL");
  }
  EXPECT_TRUE(handler_.calls().empty());
  EXPECT_EQ(server_->counters().accepted, 0U);
  expect_still_serving();
}

// A CURVE client that does not know the server's key fails the handshake too.
TEST_F(ControlTest, WrongServerKeyIsRefusedAndCounted) {
  start();
  const Keypair other = generate_keypair();
  EXPECT_FALSE(control_request(server_->endpoint(), other.public_key, client_,
                               {{"id", 1}, {"command", "pause"}}, 300ms)
                   .has_value());
  EXPECT_TRUE(eventually([](const ControlCounters& c) { return c.refused_unauthenticated; }, 1));
  EXPECT_TRUE(handler_.calls().empty());
}

TEST_F(ControlTest, UnknownKeyTimesOutAndIsCounted) {
  start();
  EXPECT_FALSE(ask({{"id", 1}, {"command", "abort"}}, stranger_, 300ms).has_value());
  EXPECT_TRUE(eventually([](const ControlCounters& c) { return c.refused_unknown_key; }, 1));
  EXPECT_TRUE(handler_.calls().empty());
  EXPECT_EQ(server_->counters().accepted, 0U);
  expect_still_serving();
}

TEST_F(ControlTest, MalformedRequestsGetErrorRepliesAndNeverReachTheHandler) {
  start();
  struct Case {
    std::string body;
    std::string error;  // a substring of the reply's error
  };
  const std::string deep = std::string(40, '[') + std::string(40, ']');
  const std::vector<Case> cases = {
      {"not json {", "not JSON"},
      {"", "not JSON"},
      {"[1, 2]", "a request is a JSON object"},
      {R"({"command":"status"})", "id: missing"},
      {R"({"id":{"a":1},"command":"status"})", "id: found an object"},
      {R"({"id":1})", "command: missing"},
      {R"({"id":1,"command":"launch"})", "command: found a string \"launch\""},
      {R"({"id":1,"command":7})", "command: found an integer"},
      {R"({"id":1,"command":"status","verbose":true})", "unknown argument 'verbose'"},
      {R"({"id":1,"command":"pause","stimulus":[1]})", "unknown argument 'stimulus'"},
      {R"({"id":1,"command":"set_stop_rule"})", "expected at least one of"},
      {R"({"id":1,"command":"set_stop_rule","posterior_threshold":0.5})", "(0.5, 1)"},
      {R"({"id":1,"command":"set_stop_rule","posterior_threshold":1.0})", "(0.5, 1)"},
      {R"({"id":1,"command":"set_stop_rule","posterior_threshold":"0.9"})", "found a string"},
      {R"({"id":1,"command":"set_stop_rule","posterior_threshold":true})", "found a boolean"},
      {R"({"id":1,"command":"set_stop_rule","posterior_threshold":1e999})", "not JSON"},
      {R"({"id":1,"command":"set_stop_rule","max_trials":0})", "max_trials"},
      {R"({"id":1,"command":"set_stop_rule","max_trials":-5})", "max_trials"},
      {R"({"id":1,"command":"set_stop_rule","max_trials":2.5})", "max_trials"},
      {R"({"id":1,"command":"set_stop_rule","max_trials":5000000000})", "max_trials"},
      {R"({"id":1,"command":"set_stop_rule","max_minutes":0})", "max_minutes"},
      {R"({"id":1,"command":"set_stop_rule","max_minutes":-1.5})", "max_minutes"},
      {R"({"id":1,"command":"abort","reason":5})", "abort.reason"},
      {R"({"id":1,"command":"submit"})", "submit.protocol: missing"},
      {R"({"id":1,"command":"submit","protocol":42})", "submit.protocol: found an integer"},
      {R"({"id":1,"command":"submit","protocol":"x","name":"a\nb"})", "submit.name"},
      {R"({"id":1,"command":"status","x":)" + deep + "}", "nested deeper"},
  };
  std::uint64_t malformed = 0;
  for (const Case& c : cases) {
    const auto reply = ask_raw(c.body);
    ASSERT_TRUE(reply.has_value()) << c.body;
    ASSERT_TRUE(reply->is_object()) << c.body;
    EXPECT_EQ((*reply)["ok"], false) << c.body;
    EXPECT_NE((*reply)["error"].get<std::string>().find(c.error), std::string::npos)
        << c.body << " -> " << reply->dump();
    EXPECT_EQ(server_->counters().malformed, ++malformed) << c.body;
  }
  // The id is echoed when it could be read, so a client can match the refusal.
  const auto reply = ask_raw(R"({"id":"q7","command":"launch"})");
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["id"], "q7");
  EXPECT_TRUE(handler_.calls().empty());
  EXPECT_EQ(server_->counters().accepted, 0U);
  expect_still_serving();
}

TEST_F(ControlTest, OversizedRequestIsRefusedAndServerKeepsServing) {
  start(4096);
  const auto reply = ask({{"id", 9}, {"command", "abort"}, {"reason", std::string(6000, 'x')}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);
  EXPECT_NE((*reply)["error"].get<std::string>().find("too large"), std::string::npos);
  EXPECT_EQ(server_->counters().malformed, 1U);
  EXPECT_TRUE(handler_.calls().empty());
  expect_still_serving();
}

TEST_F(ControlTest, BadProtocolIsRefusedWithItsDiagnostic) {
  start();
  std::string text = example_protocol();
  const std::size_t at = text.find("max_trials: 600");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, std::string("max_trials: 600").size(), "max_trials: -3 ");
  const auto line =
      1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  const auto reply =
      ask({{"id", "sub"}, {"command", "submit"}, {"name", "bad.yaml"}, {"protocol", text}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);
  const std::string error = (*reply)["error"];
  EXPECT_NE(error.find("bad.yaml:" + std::to_string(line) + ":"), std::string::npos) << error;
  EXPECT_NE(error.find("stop.max_trials"), std::string::npos) << error;
  ASSERT_TRUE((*reply)["diagnostics"].is_array());
  ASSERT_FALSE((*reply)["diagnostics"].empty());
  // bad.yaml:LINE:COLUMN: error ... (std::regex is avoided: GCC 12 warns inside it under ASan).
  const std::string first = (*reply)["diagnostics"][0].get<std::string>();
  ASSERT_EQ(first.rfind("bad.yaml:", 0), 0U) << first;
  std::size_t pos = std::string("bad.yaml:").size();
  for (int field = 0; field < 2; ++field) {  // line, then column: digits ended by ':'
    const std::size_t end = first.find(':', pos);
    ASSERT_NE(end, std::string::npos) << first;
    ASSERT_GT(end, pos) << first;
    EXPECT_EQ(first.substr(pos, end - pos).find_first_not_of("0123456789"), std::string::npos)
        << first;
    pos = end + 1;
  }
  EXPECT_EQ(first.compare(pos, 7, " error:"), 0) << first;
  EXPECT_EQ(server_->counters().malformed, 1U);
  EXPECT_TRUE(handler_.calls().empty());
}

// A protocol that loads but names a param its twin family does not take would fail only once
// its session started; submit refuses it up front instead.
TEST_F(ControlTest, ProtocolWhoseTwinsCannotBeBuiltIsRefused) {
  start();
  std::string text = example_protocol();
  const std::size_t at = text.find("family: lnp");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, std::string("family: lnp").size(), "family: lnp\n    params: {gain: 2}");
  const auto reply =
      ask({{"id", "sub"}, {"command", "submit"}, {"name", "gain.yaml"}, {"protocol", text}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);
  const std::string error = (*reply)["error"];
  EXPECT_NE(error.find("gain.yaml: hypotheses[1]"), std::string::npos) << error;
  EXPECT_NE(error.find("unknown parameter 'gain'"), std::string::npos) << error;
  EXPECT_TRUE(handler_.calls().empty());
  expect_still_serving();
}

TEST_F(ControlTest, HandlerExceptionBecomesAnErrorReply) {
  start();
  std::string text = example_protocol();
  const std::size_t at = text.find("name: gratings_direction_contrast");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, std::string("name: gratings_direction_contrast").size(), "name: throw");
  const auto reply = ask({{"id", 1}, {"command", "submit"}, {"protocol", text}});
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);
  EXPECT_EQ((*reply)["error"], "internal error");
  EXPECT_EQ(server_->counters().handler_errors, 1U);
  expect_still_serving();
}

TEST_F(ControlTest, RequestNotTakenByTheEngineExpires) {
  start(2U << 20, /*pump=*/false, /*request_timeout=*/150ms);
  const auto reply = ask({{"id", 1}, {"command", "pause"}}, client_, 2000ms);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], false);
  EXPECT_NE((*reply)["error"].get<std::string>().find("did not take"), std::string::npos);
  EXPECT_EQ(server_->counters().expired, 1U);
  EXPECT_EQ(server_->serve_pending(handler_), 0U);  // already answered, not run late
  EXPECT_TRUE(handler_.calls().empty());
}

TEST_F(ControlTest, ReloadAdmitsNewKeysAndKeepsTheOldListOnError) {
  start();
  write(allow_, "not-a-key\n");
  EXPECT_THROW(server_->reload(), KeyFileError);
  expect_still_serving();  // the old list still holds

  write(allow_, client_.public_key + " operator\n" + stranger_.public_key + " second\n");
  server_->reload();
  const auto reply = ask({{"id", 2}, {"command", "status"}}, stranger_);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["ok"], true);
  EXPECT_EQ(handler_.clients().back(), "second");
}

TEST(ControlKeys, KeygenWritesPrivateSecretAndRefusesToOverwrite) {
  const auto dir = fresh_dir("keygen");
  const auto prefix = dir / "rig1";
  ASSERT_EQ(keygen({prefix, false}), kExitOk);
  const auto secret = std::filesystem::path(prefix.string() + ".key_secret");
  const auto pub = std::filesystem::path(prefix.string() + ".key");
  struct stat st {};
  ASSERT_EQ(::stat(secret.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  ASSERT_EQ(::stat(pub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077 & ~0044, 0U);  // nobody else may write it

  const Keypair pair = load_keypair(secret);
  EXPECT_EQ(pair.public_key, load_public_key(pub));
  EXPECT_TRUE(is_z85_key(pair.secret_key));
  // The public file's line is an allow-list entry named after the prefix.
  const auto list = parse_allow_list(read(pub), "rig1.key");
  ASSERT_EQ(list.size(), 1U);
  EXPECT_EQ(list[0].public_key, pair.public_key);
  EXPECT_EQ(list[0].name, "rig1");
  EXPECT_EQ(read(secret).front(), '#');  // a comment header

  const std::string before = read(secret);
  EXPECT_EQ(keygen({prefix, false}), kExitRefused);
  EXPECT_EQ(read(secret), before);
  ::chmod(secret.c_str(), 0644);
  ASSERT_EQ(keygen({prefix, true}), kExitOk);
  EXPECT_NE(read(secret), before);
  ASSERT_EQ(::stat(secret.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);  // forced overwrite is private again
  EXPECT_EQ(load_keypair(secret).public_key, load_public_key(pub));

  EXPECT_EQ(keygen({{}, false}), kExitUsage);
  std::filesystem::remove_all(dir);
}

TEST(ControlKeys, AllowListErrorsNameFileAndLine) {
  const Keypair a = generate_keypair();
  const Keypair b = generate_keypair();
  const std::string text = "# lab keys\n" + a.public_key + " alice\n" + "tooshort bob\n" +
                           a.public_key + " again\n\n" + b.public_key + "\n";
  try {
    (void)parse_allow_list(text, "lab.allow");
    FAIL() << "expected KeyFileError";
  } catch (const KeyFileError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("lab.allow:3: found 'tooshort'"), std::string::npos) << what;
    EXPECT_NE(what.find("lab.allow:4: duplicate key"), std::string::npos) << what;
    EXPECT_EQ(what.find("lab.allow:2:"), std::string::npos) << what;
    EXPECT_EQ(what.find("lab.allow:6:"), std::string::npos) << what;
  }
  const auto list =
      parse_allow_list("# only\n" + a.public_key + " alice smith\n" + b.public_key, "ok.allow");
  ASSERT_EQ(list.size(), 2U);
  EXPECT_EQ(list[0].name, "alice smith");
  EXPECT_EQ(list[0].line, 2);
  EXPECT_EQ(list[1].name, b.public_key);
  EXPECT_TRUE(parse_allow_list("# nobody\n", "empty.allow").empty());

  const auto dir = fresh_dir("keys");
  EXPECT_THROW((void)load_allow_list(dir / "missing.allow"), KeyFileError);
  write(dir / "two.key_secret", "# x\n" + a.secret_key + "\n" + b.secret_key + "\n");
  try {
    (void)load_keypair(dir / "two.key_secret");
    FAIL() << "expected KeyFileError";
  } catch (const KeyFileError& e) {
    EXPECT_NE(std::string(e.what()).find("two.key_secret:3:"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace twinloop::daemon

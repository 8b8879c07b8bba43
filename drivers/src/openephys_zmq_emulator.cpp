// OpenEphysZmqEmulator: the Open Ephys ZMQ Interface plugin's server side, from the documented
// wire format (../shared/data/FORMATS.md §3; open-ephys-plugins/zmq-interface @ 38513917,
// Source/ZmqInterface.cpp "format of output packets" and its python client). No plugin code.
#include "twinloop/drivers/openephys_zmq_emulator.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>
#include <zmq.hpp>

namespace twinloop::drivers {
namespace {

using nlohmann::json;

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "DATA" / "EVENT" with the terminating NUL the plugin sends (strlen + 1 bytes).
std::string envelope(const char* name) {
  return std::string(name, std::strlen(name) + 1);
}

std::string float_frame(std::span<const float> values) {
  std::string out(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::string derive_heartbeat_endpoint(const std::string& data_endpoint) {
  const std::size_t colon = data_endpoint.rfind(':');
  if (data_endpoint.rfind("tcp://", 0) == 0 && colon != std::string::npos &&
      data_endpoint.substr(colon + 1) == "*") {
    return data_endpoint;  // both ephemeral
  }
  auto derived = openephys_heartbeat_endpoint(data_endpoint);
  if (!derived) {
    throw std::invalid_argument(
        "OpenEphysZmqEmulator: cannot derive the heartbeat endpoint from '" + data_endpoint +
        "': set heartbeat_endpoint");
  }
  return *derived;
}

}  // namespace

struct OpenEphysZmqEmulator::Impl {
  explicit Impl(OpenEphysZmqEmulatorConfig c) : config(std::move(c)) {}

  OpenEphysZmqEmulatorConfig config;
  zmq::context_t context{1};
  zmq::socket_t data{context, zmq::socket_type::xpub};
  zmq::socket_t rep{context, zmq::socket_type::rep};  // used only by rep_thread once started
  std::string data_endpoint;
  std::string heartbeat_endpoint;
  std::int64_t cursor = 0;
  std::int64_t message_num = 1;  // the plugin counts from 1 after each acquisition start
  std::vector<std::int16_t> last_buffer;
  std::int64_t last_first = 0;
  bool has_last = false;
  std::size_t subscriptions = 0;
  mutable std::mutex log_mutex;
  OpenEphysHeartbeatLog log;
  std::jthread rep_thread;  // last member: joined before the sockets close

  void send(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      data.send(zmq::buffer(frames[i]), flags);
    }
  }

  std::vector<std::string> data_frames(std::size_t channel, std::int64_t first,
                                       std::span<const float> values, const std::string& stream) {
    const json header = {{"message_num", message_num++},
                         {"type", "data"},
                         {"content",
                          {{"stream", stream.empty() ? config.stream : stream},
                           {"channel_num", channel},
                           {"channel_name", "CH" + std::to_string(channel)},
                           {"num_samples", values.size()},
                           {"sample_num", first},
                           {"sample_rate", config.sample_rate_hz}}},
                         {"data_size", values.size() * sizeof(float)},
                         {"timestamp", wall_ms()}};
    return {envelope("DATA"), header.dump(), float_frame(values)};
  }

  void publish_buffer(std::int64_t first, std::span<const std::int16_t> samples,
                      std::span<const std::size_t> only) {
    const std::size_t channels = config.channels;
    if (samples.size() % channels != 0) {
      throw std::invalid_argument("OpenEphysZmqEmulator: " + std::to_string(samples.size()) +
                                  " values are not whole rows of " + std::to_string(channels));
    }
    const std::size_t rows = samples.size() / channels;
    std::vector<float> values(rows);
    auto send_channel = [&](std::size_t c) {
      if (c >= channels) {
        throw std::invalid_argument("OpenEphysZmqEmulator: channel " + std::to_string(c) +
                                    " out of range");
      }
      for (std::size_t r = 0; r < rows; ++r) {
        values[r] = static_cast<float>(static_cast<double>(samples[r * channels + c]) *
                                       config.microvolts_per_bit);
      }
      send(data_frames(c, first, values, {}));
    };
    if (only.empty()) {
      for (std::size_t c = 0; c < channels; ++c) send_channel(c);
    } else {
      for (std::size_t c : only) send_channel(c);
    }
  }

  void serve_heartbeats(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      zmq_pollitem_t item{rep.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 20) <= 0 || (item.revents & ZMQ_POLLIN) == 0) continue;
      zmq::message_t request;
      try {
        if (!rep.recv(request, zmq::recv_flags::dontwait)) continue;
      } catch (const zmq::error_t&) {
        return;
      }
      std::string reply = "JSON message could not be read";
      try {
        const json j = json::parse(request.to_string_view());
        const std::string type = j.at("type").get<std::string>();
        std::lock_guard lock(log_mutex);
        if (type == "heartbeat") {
          ++log.heartbeats;
          log.last_application = j.value("application", "");
          log.last_uuid = j.value("uuid", "");
          reply = "heartbeat received";
        } else if (type == "event") {
          ++log.events;
          reply = "message correctly parsed";
        } else {
          ++log.unreadable;
        }
      } catch (const std::exception&) {
        std::lock_guard lock(log_mutex);
        ++log.unreadable;
      }
      try {
        rep.send(zmq::buffer(reply), zmq::send_flags::none);
      } catch (const zmq::error_t&) {
        return;
      }
    }
  }
};

OpenEphysZmqEmulator::OpenEphysZmqEmulator(OpenEphysZmqEmulatorConfig config) {
  if (config.channels == 0) throw std::invalid_argument("OpenEphysZmqEmulator: zero channels");
  if (!(config.sample_rate_hz > 0.0) || !(config.microvolts_per_bit > 0.0)) {
    throw std::invalid_argument(
        "OpenEphysZmqEmulator: sample_rate_hz and microvolts_per_bit must be positive");
  }
  if (config.heartbeat_endpoint.empty()) {
    config.heartbeat_endpoint = derive_heartbeat_endpoint(config.data_endpoint);
  }
  impl_ = std::make_unique<Impl>(std::move(config));
  Impl& m = *impl_;
  m.cursor = m.config.first_sample;
  auto bind = [](zmq::socket_t& socket, const std::string& endpoint) {
    try {
      socket.bind(endpoint);
    } catch (const zmq::error_t& e) {
      throw std::runtime_error("OpenEphysZmqEmulator: cannot bind '" + endpoint + "': " + e.what());
    }
    return socket.get(zmq::sockopt::last_endpoint);
  };
  m.data.set(zmq::sockopt::linger, 0);
  m.data.set(zmq::sockopt::sndhwm, m.config.send_high_water_mark);
  m.data.set(zmq::sockopt::xpub_verbose, 1);  // report every subscription, not only the first
  m.rep.set(zmq::sockopt::linger, 0);
  m.data_endpoint = bind(m.data, m.config.data_endpoint);
  m.heartbeat_endpoint = bind(m.rep, m.config.heartbeat_endpoint);
  m.rep_thread = std::jthread([&m](const std::stop_token& stop) { m.serve_heartbeats(stop); });
}

OpenEphysZmqEmulator::~OpenEphysZmqEmulator() = default;

const std::string& OpenEphysZmqEmulator::data_endpoint() const noexcept {
  return impl_->data_endpoint;
}
const std::string& OpenEphysZmqEmulator::heartbeat_endpoint() const noexcept {
  return impl_->heartbeat_endpoint;
}
const OpenEphysZmqEmulatorConfig& OpenEphysZmqEmulator::config() const noexcept {
  return impl_->config;
}

bool OpenEphysZmqEmulator::wait_for_subscribers(std::size_t count,
                                                std::chrono::milliseconds timeout) {
  Impl& m = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (m.subscriptions < count) {
    const auto remaining =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (remaining.count() <= 0) return false;
    zmq_pollitem_t item{m.data.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, static_cast<long>(remaining.count())) <= 0) continue;
    zmq::message_t message;
    while (m.data.recv(message, zmq::recv_flags::dontwait)) {
      // XPUB hands up subscriptions as frames: byte 1 = subscribe, 0 = unsubscribe, then topic.
      if (message.size() >= 1 && static_cast<const unsigned char*>(message.data())[0] == 1) {
        ++m.subscriptions;
      }
    }
  }
  return true;
}

void OpenEphysZmqEmulator::publish(std::span<const std::int16_t> samples) {
  Impl& m = *impl_;
  m.publish_buffer(m.cursor, samples, {});
  m.last_buffer.assign(samples.begin(), samples.end());
  m.last_first = m.cursor;
  m.has_last = true;
  m.cursor += static_cast<std::int64_t>(samples.size() / m.config.channels);
}

void OpenEphysZmqEmulator::publish_generated(std::size_t rows, const Generator& generator) {
  std::vector<std::int16_t> buffer(rows * impl_->config.channels);
  generator(impl_->cursor, rows, buffer);
  publish(buffer);
}

void OpenEphysZmqEmulator::publish_at(std::int64_t first_sample,
                                      std::span<const std::int16_t> samples,
                                      std::span<const std::size_t> only_channels) {
  impl_->publish_buffer(first_sample, samples, only_channels);
}

void OpenEphysZmqEmulator::skip(std::size_t rows) {
  impl_->cursor += static_cast<std::int64_t>(rows);
  impl_->message_num += static_cast<std::int64_t>(impl_->config.channels);
}

void OpenEphysZmqEmulator::repeat_last() {
  Impl& m = *impl_;
  if (!m.has_last) throw std::logic_error("OpenEphysZmqEmulator: nothing published to repeat");
  m.publish_buffer(m.last_first, m.last_buffer, {});
}

void OpenEphysZmqEmulator::restart(std::int64_t first_sample) {
  impl_->message_num = 1;
  impl_->cursor = first_sample;
  impl_->has_last = false;
}

void OpenEphysZmqEmulator::publish_event(std::int64_t sample_num,
                                         std::span<const std::uint8_t> payload) {
  Impl& m = *impl_;
  const json header = {{"message_num", m.message_num++},
                       {"type", "event"},
                       {"content",
                        {{"stream", m.config.stream},
                         {"source_node", 100},
                         {"type", "TTL"},
                         {"sample_num", sample_num}}},
                       {"data_size", payload.size()},
                       {"timestamp", wall_ms()}};
  std::vector<std::string> frames{envelope("EVENT"), header.dump()};
  if (!payload.empty()) frames.emplace_back(payload.begin(), payload.end());
  m.send(frames);
}

void OpenEphysZmqEmulator::publish_spike(std::int64_t sample_num, std::size_t channels,
                                         std::size_t samples) {
  Impl& m = *impl_;
  const json header = {{"message_num", m.message_num++},
                       {"type", "spike"},
                       {"spike",
                        {{"stream", m.config.stream},
                         {"source_node", 100},
                         {"electrode", "Electrode 1"},
                         {"sample_num", sample_num},
                         {"num_channels", channels},
                         {"num_samples", samples},
                         {"sorted_id", 0},
                         {"threshold", std::vector<double>(channels, -50.0)}}},
                       {"timestamp", wall_ms()}};
  const std::vector<float> waveform(channels * samples, -10.0F);
  m.send({envelope("EVENT"), header.dump(), float_frame(waveform)});
}

void OpenEphysZmqEmulator::inject_malformed(OpenEphysMalformed kind) {
  Impl& m = *impl_;
  // Malformed messages carry the next message_num without consuming it, so the client's
  // lost-message count stays a measure of real losses.
  const std::vector<float> four{1.0F, 2.0F, 3.0F, 4.0F};
  json header = {{"message_num", m.message_num},
                 {"type", "data"},
                 {"content",
                  {{"stream", m.config.stream},
                   {"channel_num", 0},
                   {"channel_name", "CH0"},
                   {"num_samples", 4},
                   {"sample_num", m.cursor},
                   {"sample_rate", m.config.sample_rate_hz}}},
                 {"data_size", 16},
                 {"timestamp", wall_ms()}};
  switch (kind) {
    case OpenEphysMalformed::kPartCount:
      m.send({envelope("DATA"), header.dump()});
      return;
    case OpenEphysMalformed::kEnvelope:
      m.send({envelope("STATUS"), header.dump(), float_frame(four)});
      return;
    case OpenEphysMalformed::kJson: {
      const std::string text = header.dump();
      m.send({envelope("DATA"), text.substr(0, text.size() / 2), float_frame(four)});
      return;
    }
    case OpenEphysMalformed::kField:
      header["content"].erase("sample_num");
      m.send({envelope("DATA"), header.dump(), float_frame(four)});
      return;
    case OpenEphysMalformed::kUnknownType:
      header["type"] = "waveform";
      m.send({envelope("DATA"), header.dump(), float_frame(four)});
      return;
    case OpenEphysMalformed::kDataSize:
      m.send({envelope("DATA"), header.dump(), float_frame(std::span<const float>(four).first(3))});
      return;
    case OpenEphysMalformed::kSampleRate:
      header["content"]["sample_rate"] = m.config.sample_rate_hz * 2.0;
      m.send({envelope("DATA"), header.dump(), float_frame(four)});
      return;
    case OpenEphysMalformed::kOversize:
      break;
  }
  throw std::invalid_argument("OpenEphysZmqEmulator: cannot inject '" +
                              std::string(to_string(kind)) + "'; build it with data_message()");
}

void OpenEphysZmqEmulator::publish_raw(const std::vector<std::string>& frames) {
  if (frames.empty()) throw std::invalid_argument("OpenEphysZmqEmulator: no frames to send");
  impl_->send(frames);
}

std::vector<std::string> OpenEphysZmqEmulator::data_message(std::size_t channel_num,
                                                            std::int64_t first_sample,
                                                            std::span<const float> values,
                                                            const std::string& stream) {
  return impl_->data_frames(channel_num, first_sample, values, stream);
}

std::int64_t OpenEphysZmqEmulator::next_sample() const noexcept {
  return impl_->cursor;
}

std::int64_t OpenEphysZmqEmulator::next_message_num() const noexcept {
  return impl_->message_num;
}

OpenEphysHeartbeatLog OpenEphysZmqEmulator::heartbeats() const {
  std::lock_guard lock(impl_->log_mutex);
  return impl_->log;
}

}  // namespace twinloop::drivers

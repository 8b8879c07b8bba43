// OpenEphysZmqSource against OpenEphysZmqEmulator (the plugin's documented wire format):
// exact round trip, channel selection, heartbeats, gaps, duplicates, overlaps, incomplete
// buffers, restarts, every malformed kind, events, a real Open Ephys recording, and no heap
// allocation in read(). Sockets are ephemeral loopback ports, so parallel runs never collide.
// This file holds test_drivers' counting operator new (include allocation_counter.hpp nowhere
// else in this executable).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <span>
#include <thread>
#include <vector>

#include "../support/allocation_counter.hpp"
#include "spikeglx_fixtures.hpp"
#include "twinloop/drivers/npy.hpp"
#include "twinloop/drivers/openephys_zmq_emulator.hpp"
#include "twinloop/drivers/openephys_zmq_source.hpp"

namespace twinloop::drivers {
namespace {

using namespace std::chrono_literals;

// A deterministic value per (sample, channel) that covers the whole int16 range.
std::int16_t pattern(std::int64_t sample, std::size_t channel) {
  const std::int64_t v = (sample * 7919 + static_cast<std::int64_t>(channel) * 104729) % 65536;
  return static_cast<std::int16_t>(v - 32768);
}

std::vector<std::int16_t> make_buffer(std::int64_t first, std::size_t rows, std::size_t channels) {
  std::vector<std::int16_t> out(rows * channels);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < channels; ++c) {
      out[r * channels + c] = pattern(first + static_cast<std::int64_t>(r), c);
    }
  }
  return out;
}

OpenEphysZmqEmulatorConfig emulator_config(std::size_t channels, std::int64_t first_sample = 0) {
  OpenEphysZmqEmulatorConfig c;
  c.data_endpoint = "tcp://127.0.0.1:*";
  c.channels = channels;
  c.sample_rate_hz = 30000.0;
  c.microvolts_per_bit = 0.195;
  c.first_sample = first_sample;
  return c;
}

OpenEphysZmqSourceConfig source_config(const OpenEphysZmqEmulator& emulator) {
  OpenEphysZmqSourceConfig c;
  c.endpoint = emulator.data_endpoint();
  c.heartbeat_endpoint = emulator.heartbeat_endpoint();
  c.heartbeat_interval = 0ms;  // the heartbeat tests turn it on
  c.channel_count = emulator.config().channels;
  c.sample_rate_hz = emulator.config().sample_rate_hz;
  c.microvolts_per_bit = emulator.config().microvolts_per_bit;
  c.max_block_samples = 1024;
  // Generous: data is published before it is read, so this bounds only a failing test.
  c.receive_timeout = 2000ms;
  return c;
}

void start_and_subscribe(OpenEphysZmqSource& source, OpenEphysZmqEmulator& emulator) {
  ASSERT_TRUE(source.start()) << source.last_error();
  ASSERT_TRUE(emulator.wait_for_subscribers(1, 5000ms)) << "no subscription reached the emulator";
}

// Reads one block and checks it holds `rows` rows of pattern() from `first`, columns mapping to
// channel numbers `channels` (empty: 0..stored-1).
void expect_block(OpenEphysZmqSource& source, SampleBlock& block, std::int64_t first,
                  std::size_t rows, const std::vector<int>& channels = {}) {
  ASSERT_EQ(source.read(block), ReadStatus::kOk) << source.last_error();
  EXPECT_EQ(block.first_sample, first);
  ASSERT_EQ(block.sample_count, rows);
  std::size_t mismatches = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < block.stored_channels; ++c) {
      const std::size_t channel = channels.empty() ? c : static_cast<std::size_t>(channels[c]);
      if (block.row(r)[c] != pattern(first + static_cast<std::int64_t>(r), channel)) ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0u) << "block at " << first;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds timeout = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(OpenEphysZmq, HeartbeatEndpointIsDataPortPlusOne) {
  EXPECT_EQ(openephys_heartbeat_endpoint("tcp://127.0.0.1:5556"), "tcp://127.0.0.1:5557");
  EXPECT_EQ(openephys_heartbeat_endpoint("tcp://rig-pc.local:6000"), "tcp://rig-pc.local:6001");
  EXPECT_EQ(openephys_heartbeat_endpoint("tcp://[::1]:5556"), "tcp://[::1]:5557");
  EXPECT_FALSE(openephys_heartbeat_endpoint("ipc:///tmp/oe"));
  EXPECT_FALSE(openephys_heartbeat_endpoint("tcp://127.0.0.1:*"));
  EXPECT_FALSE(openephys_heartbeat_endpoint("tcp://127.0.0.1:65535"));
  EXPECT_FALSE(openephys_heartbeat_endpoint("tcp://127.0.0.1"));
}

TEST(OpenEphysZmq, RefusesBadConfiguration) {
  auto make = [](auto edit) {
    OpenEphysZmqSourceConfig c;
    c.channel_count = 4;
    edit(c);
    OpenEphysZmqSource source(c);
  };
  EXPECT_NO_THROW(make([](OpenEphysZmqSourceConfig&) {}));
  EXPECT_THROW(make([](auto& c) { c.channels = {0, 2, 2}; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.channels = {-1}; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.channel_count = 0; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.sample_rate_hz = 0.0; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.microvolts_per_bit = -0.195; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.max_block_samples = 0; }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.geometry = neuropixels1_geometry(3); }), std::invalid_argument);
  EXPECT_THROW(make([](auto& c) { c.endpoint = "ipc:///tmp/oe-data"; }), std::invalid_argument);
  EXPECT_NO_THROW(make([](auto& c) {
    c.endpoint = "ipc:///tmp/oe-data";
    c.heartbeat_interval = 0ms;
  }));

  OpenEphysZmqSourceConfig c;
  c.channel_count = 4;
  OpenEphysZmqSource source(c);
  EXPECT_EQ(source.heartbeat_endpoint(), "tcp://127.0.0.1:5557");
  EXPECT_EQ(source.uuid().size(), 36u);
  SampleBlock block;
  block.allocate(16, 4);
  EXPECT_EQ(source.read(block), ReadStatus::kError);  // before start()
}

TEST(OpenEphysZmq, RoundTripsSamplesExactly) {
  OpenEphysZmqEmulator emulator(emulator_config(8, 5000));
  OpenEphysZmqSource source(source_config(emulator));
  EXPECT_EQ(source.info().stored_channels, 8u);
  EXPECT_EQ(source.info().neural_channels, 8u);
  EXPECT_FALSE(source.info().has_sync_word);
  EXPECT_DOUBLE_EQ(source.info().microvolts_per_bit, 0.195);
  ASSERT_EQ(source.info().geometry.sites.size(), 8u);
  start_and_subscribe(source, emulator);

  auto extremes = make_buffer(5000, 100, 8);
  extremes[0] = -32768;  // the int16 limits survive float32 and the µV scale
  extremes[1] = 32767;
  extremes[2] = 0;
  emulator.publish(extremes);
  emulator.publish(make_buffer(5100, 100, 8));
  emulator.publish(make_buffer(5200, 37, 8));

  SampleBlock block;
  block.allocate(256, 8);
  ASSERT_EQ(source.read(block), ReadStatus::kOk) << source.last_error();
  EXPECT_EQ(block.first_sample, 5000);
  ASSERT_EQ(block.sample_count, 100u);
  EXPECT_TRUE(std::equal(extremes.begin(), extremes.end(), block.samples.begin()));
  expect_block(source, block, 5100, 100);
  expect_block(source, block, 5200, 37);

  const OpenEphysZmqCounters n = source.counters();
  EXPECT_EQ(n.messages, 24u);
  EXPECT_EQ(n.data_messages, 24u);
  EXPECT_EQ(n.blocks, 3u);
  EXPECT_EQ(n.samples, 237u);
  EXPECT_EQ(n.gaps, 0u);
  EXPECT_EQ(n.malformed, 0u);
  EXPECT_EQ(n.lost_messages, 0u);
  EXPECT_EQ(n.clipped_samples, 0u);
  EXPECT_TRUE(source.last_error().empty()) << source.last_error();
}

TEST(OpenEphysZmq, SelectsAndReordersChannels) {
  OpenEphysZmqEmulator emulator(emulator_config(6));
  OpenEphysZmqSourceConfig config = source_config(emulator);
  config.channels = {4, 0, 2};
  OpenEphysZmqSource source(config);
  ASSERT_EQ(source.info().geometry.sites.size(), 3u);
  EXPECT_EQ(source.info().geometry.sites[0].electrode, 4);  // NP1.0 site of channel_num 4
  EXPECT_EQ(source.info().geometry.sites[1].electrode, 0);
  start_and_subscribe(source, emulator);

  emulator.publish(make_buffer(0, 50, 6));
  emulator.publish(make_buffer(50, 50, 6));
  SampleBlock block;
  block.allocate(64, 3);
  expect_block(source, block, 0, 50, {4, 0, 2});
  expect_block(source, block, 50, 50, {4, 0, 2});
  // Channels 1, 3, 5 of the first buffer and 1, 3 of the second: read() returns as soon as the
  // selected channels are complete, so channel 5 of the last buffer is still queued.
  EXPECT_EQ(source.counters().ignored, 5u);
  EXPECT_EQ(source.counters().data_messages, 6u);
}

TEST(OpenEphysZmq, SplitsLargeBufferOverReads) {
  OpenEphysZmqEmulator emulator(emulator_config(4, 100));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  emulator.publish(make_buffer(100, 300, 4));
  SampleBlock block;
  block.allocate(128, 4);
  expect_block(source, block, 100, 128);
  expect_block(source, block, 228, 128);
  expect_block(source, block, 356, 44);
}

TEST(OpenEphysZmq, WrongBlockShapeIsAnError) {
  OpenEphysZmqEmulator emulator(emulator_config(4));
  OpenEphysZmqSource source(source_config(emulator));
  ASSERT_TRUE(source.start());
  SampleBlock block;
  block.allocate(16, 5);
  EXPECT_EQ(source.read(block), ReadStatus::kError);
  EXPECT_NE(source.last_error().find("5 channels"), std::string::npos) << source.last_error();
}

TEST(OpenEphysZmq, HeartbeatReachesEmulator) {
  OpenEphysZmqEmulator emulator(emulator_config(2));
  OpenEphysZmqSourceConfig config = source_config(emulator);
  config.heartbeat_interval = 10ms;
  config.application = "twinloop-test";
  config.uuid = "0f0e0d0c-0b0a-4908-8706-050403020100";
  OpenEphysZmqSource source(config);
  ASSERT_TRUE(source.start()) << source.last_error();
  ASSERT_TRUE(eventually([&] { return emulator.heartbeats().heartbeats >= 2; }));
  ASSERT_TRUE(eventually([&] { return source.counters().heartbeat_replies >= 2; }));
  const OpenEphysHeartbeatLog log = emulator.heartbeats();
  EXPECT_EQ(log.last_application, "twinloop-test");
  EXPECT_EQ(log.last_uuid, config.uuid);
  EXPECT_EQ(log.unreadable, 0u);
  EXPECT_GE(source.counters().heartbeats_sent, 2u);
  source.stop();
  const std::uint64_t sent = source.counters().heartbeats_sent;
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(source.counters().heartbeats_sent, sent);  // stop() really stopped the thread
}

TEST(OpenEphysZmq, UnansweredHeartbeatIsCountedAndRetried) {
  OpenEphysZmqEmulator emulator(emulator_config(2));
  testing_fixtures::TempDir dir("oe_hb");
  OpenEphysZmqSourceConfig config = source_config(emulator);
  config.heartbeat_endpoint = "ipc://" + (dir.path() / "nobody-listens").string();
  config.heartbeat_interval = 5ms;
  config.heartbeat_reply_timeout = 20ms;
  OpenEphysZmqSource source(config);
  ASSERT_TRUE(source.start());
  ASSERT_TRUE(eventually([&] { return source.counters().heartbeats_unanswered >= 2; }));
  EXPECT_EQ(source.counters().heartbeat_replies, 0u);
  EXPECT_GE(source.counters().heartbeats_sent, 2u);  // a fresh socket each time, not stuck
}

TEST(OpenEphysZmq, GapIsDeliveredWithTrueSampleIndices) {
  OpenEphysZmqEmulator emulator(emulator_config(4, 1000));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  emulator.publish(make_buffer(1000, 64, 4));
  emulator.skip(64);  // a lost buffer: samples 1064..1127 never arrive
  emulator.publish(make_buffer(1128, 64, 4));

  SampleBlock block;
  block.allocate(64, 4);
  GapDetector detector;
  GapDetector::Gap gap;
  expect_block(source, block, 1000, 64);
  EXPECT_FALSE(detector.check(block.first_sample, block.sample_count, gap));
  expect_block(source, block, 1128, 64);
  ASSERT_TRUE(detector.check(block.first_sample, block.sample_count, gap));
  EXPECT_EQ(gap.expected_sample, 1064);
  EXPECT_EQ(gap.found_sample, 1128);
  EXPECT_EQ(detector.missing_samples(), 64);

  const OpenEphysZmqCounters n = source.counters();
  EXPECT_EQ(n.gaps, 1u);
  EXPECT_EQ(n.missing_samples, 64u);
  EXPECT_EQ(n.lost_messages, 4u);  // one message per channel of the lost buffer
  EXPECT_NE(source.last_error().find("gap: expected sample 1064"), std::string::npos)
      << source.last_error();
}

TEST(OpenEphysZmq, DuplicateBufferIsDropped) {
  OpenEphysZmqEmulator emulator(emulator_config(4));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  emulator.publish(make_buffer(0, 32, 4));
  emulator.repeat_last();
  emulator.publish(make_buffer(32, 32, 4));

  SampleBlock block;
  block.allocate(64, 4);
  expect_block(source, block, 0, 32);
  expect_block(source, block, 32, 32);  // the repeat never reached the consumer
  const OpenEphysZmqCounters n = source.counters();
  EXPECT_EQ(n.duplicates, 4u);
  EXPECT_EQ(n.blocks, 2u);
  EXPECT_EQ(n.gaps, 0u);
  EXPECT_EQ(n.overlaps, 0u);
}

TEST(OpenEphysZmq, ChannelSentTwiceInBufferIsDropped) {
  OpenEphysZmqEmulator emulator(emulator_config(3));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  const auto buffer = make_buffer(0, 16, 3);
  const std::vector<std::size_t> first_two{0, 1};
  const std::vector<std::size_t> again{1, 2};
  emulator.publish_at(0, buffer, first_two);
  emulator.publish_at(0, buffer, again);
  SampleBlock block;
  block.allocate(16, 3);
  expect_block(source, block, 0, 16);
  EXPECT_EQ(source.counters().duplicates, 1u);
  EXPECT_EQ(source.counters().incomplete_blocks, 0u);
}

TEST(OpenEphysZmq, OverlapIsDeliveredWithItsTrueStart) {
  OpenEphysZmqEmulator emulator(emulator_config(2));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  emulator.publish_at(0, make_buffer(0, 64, 2));
  emulator.publish_at(32, make_buffer(32, 64, 2));
  SampleBlock block;
  block.allocate(64, 2);
  GapDetector detector;
  GapDetector::Gap gap;
  expect_block(source, block, 0, 64);
  detector.check(block.first_sample, block.sample_count, gap);
  expect_block(source, block, 32, 64);
  ASSERT_TRUE(detector.check(block.first_sample, block.sample_count, gap));
  EXPECT_EQ(gap.expected_sample, 64);
  EXPECT_EQ(gap.found_sample, 32);
  EXPECT_EQ(source.counters().overlaps, 1u);
}

TEST(OpenEphysZmq, IncompleteBufferIsDroppedAndReported) {
  OpenEphysZmqEmulator emulator(emulator_config(4));
  OpenEphysZmqSourceConfig config = source_config(emulator);
  config.receive_timeout = 50ms;  // one read below must time out
  OpenEphysZmqSource source(config);
  start_and_subscribe(source, emulator);

  const std::vector<std::size_t> without_2{0, 1, 3};
  const std::vector<std::size_t> only_0{0};
  emulator.publish_at(0, make_buffer(0, 40, 4));
  emulator.publish_at(40, make_buffer(40, 40, 4), without_2);  // channel 2 never comes
  emulator.publish_at(80, make_buffer(80, 40, 4), only_0);     // next buffer begins

  SampleBlock block;
  block.allocate(64, 4);
  expect_block(source, block, 0, 40);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(source.read(block), ReadStatus::kWouldBlock);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  EXPECT_EQ(source.counters().incomplete_blocks, 1u);
  EXPECT_NE(source.last_error().find("incomplete buffer at sample 40"), std::string::npos)
      << source.last_error();
  EXPECT_NE(source.last_error().find("3 of 4 channels"), std::string::npos);
  EXPECT_NE(source.last_error().find("first missing channel_num 2"), std::string::npos);

  const std::vector<std::size_t> rest{1, 2, 3};
  emulator.publish_at(80, make_buffer(80, 40, 4), rest);
  expect_block(source, block, 80, 40);  // samples 40..79 are missing, never bridged
  EXPECT_EQ(source.counters().gaps, 1u);
  EXPECT_EQ(source.counters().missing_samples, 40u);
}

TEST(OpenEphysZmq, RestartStartsContinuityAfresh) {
  OpenEphysZmqEmulator emulator(emulator_config(2, 9000));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  emulator.publish(make_buffer(9000, 20, 2));
  emulator.restart(0);
  emulator.publish(make_buffer(0, 20, 2));
  SampleBlock block;
  block.allocate(32, 2);
  expect_block(source, block, 9000, 20);
  expect_block(source, block, 0, 20);  // not dropped as old, not renumbered
  EXPECT_EQ(source.counters().restarts, 1u);
  EXPECT_EQ(source.counters().duplicates, 0u);
}

TEST(OpenEphysZmq, EventsAndSpikesAreCountedAndSkipped) {
  OpenEphysZmqEmulator emulator(emulator_config(3));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  const std::vector<std::uint8_t> ttl{1, 0, 0, 0};
  emulator.publish(make_buffer(0, 25, 3));
  emulator.publish_event(10);
  emulator.publish_event(12, ttl);
  emulator.publish_spike(20, 4, 40);
  emulator.publish(make_buffer(25, 25, 3));
  SampleBlock block;
  block.allocate(32, 3);
  expect_block(source, block, 0, 25);
  expect_block(source, block, 25, 25);
  const OpenEphysZmqCounters n = source.counters();
  EXPECT_EQ(n.ignored, 3u);
  EXPECT_EQ(n.malformed, 0u);
  EXPECT_EQ(n.lost_messages, 0u);
  EXPECT_EQ(n.messages, 9u);
}

TEST(OpenEphysZmq, OtherStreamsAreIgnored) {
  OpenEphysZmqEmulator emulator(emulator_config(2));
  OpenEphysZmqSource source(source_config(emulator));  // stream empty: locks on "ProbeA"
  start_and_subscribe(source, emulator);
  emulator.publish(make_buffer(0, 10, 2));
  const std::vector<float> lfp(10, 3.0F);
  emulator.publish_raw(emulator.data_message(0, 0, lfp, "ProbeA-LFP"));
  emulator.publish_raw(emulator.data_message(1, 0, lfp, "ProbeA-LFP"));
  emulator.publish(make_buffer(10, 10, 2));
  SampleBlock block;
  block.allocate(16, 2);
  expect_block(source, block, 0, 10);
  expect_block(source, block, 10, 10);
  EXPECT_EQ(source.counters().ignored, 2u);
  EXPECT_EQ(source.counters().duplicates, 0u);
}

// One bad message, then a good buffer: the bad one is counted under its kind, named in
// last_error(), and the good buffer still arrives intact and in sequence.
TEST(OpenEphysZmq, EachMalformedKindIsCountedAndSkipped) {
  OpenEphysZmqEmulator emulator(emulator_config(2));
  OpenEphysZmqSourceConfig config = source_config(emulator);
  config.max_block_samples = 64;
  OpenEphysZmqSource source(config);
  start_and_subscribe(source, emulator);
  SampleBlock block;
  block.allocate(64, 2);

  std::int64_t next = 0;
  std::array<std::uint64_t, kOpenEphysMalformedKinds> expected{};
  auto check = [&](OpenEphysMalformed kind, const std::string& label) {
    SCOPED_TRACE(label);
    ++expected[static_cast<std::size_t>(kind)];
    emulator.publish(make_buffer(next, 16, 2));
    expect_block(source, block, next, 16);
    next += 16;
    EXPECT_NE(source.last_error().find(std::string(to_string(kind))), std::string::npos)
        << source.last_error();
    EXPECT_EQ(source.counters().malformed_by_kind, expected);
  };
  using K = OpenEphysMalformed;
  for (K kind : {K::kPartCount, K::kEnvelope, K::kJson, K::kField, K::kUnknownType, K::kDataSize,
                 K::kSampleRate}) {
    emulator.inject_malformed(kind);
    check(kind, std::string(to_string(kind)));
  }
  EXPECT_THROW(emulator.inject_malformed(K::kOversize), std::invalid_argument);

  const std::vector<float> big(65, 1.0F);  // one more than max_block_samples
  emulator.publish_raw(emulator.data_message(0, next, big));
  check(K::kOversize, "oversize");

  const std::string data_env("DATA\0", 5);
  const std::string good_header = emulator.data_message(0, next, big)[1];
  auto header_with = [&](const std::string& from, const std::string& to) {
    std::string h = good_header;
    const std::size_t at = h.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return h.replace(at, from.size(), to);
  };
  const std::string four_floats(16, '\0');
  emulator.publish_raw({data_env});
  check(K::kPartCount, "envelope only");
  emulator.publish_raw({data_env, good_header, std::string(65 * 4, '\0'), "extra"});
  check(K::kPartCount, "four frames");
  emulator.publish_raw({std::string("\xff\x00\x01", 3), good_header, four_floats});
  check(K::kEnvelope, "binary envelope");
  emulator.publish_raw({data_env, "[1, 2, 3]", four_floats});
  check(K::kJson, "array, not object");
  emulator.publish_raw({data_env, "", four_floats});
  check(K::kJson, "empty header");
  emulator.publish_raw({data_env, good_header + "}", four_floats});
  check(K::kJson, "trailing garbage");
  emulator.publish_raw(
      {data_env, "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}", four_floats});
  check(K::kJson, "deep nesting");
  emulator.publish_raw(
      {data_env, header_with("\"type\":\"data\"", "\"type\":\"da\x01ta\""), four_floats});
  check(K::kJson, "control character in string");
  emulator.publish_raw(
      {data_env, header_with("\"sample_num\":", "\"sample_num\":\"7\",\"x\":"), four_floats});
  check(K::kField, "sample_num as a string");
  emulator.publish_raw(
      {data_env, header_with("\"sample_num\":", "\"sample_num\":1.5,\"x\":"), four_floats});
  check(K::kField, "fractional sample_num");
  emulator.publish_raw(
      {data_env, header_with("\"channel_num\":0", "\"channel_num\":-3"), four_floats});
  check(K::kField, "negative channel_num");
  emulator.publish_raw(
      {data_env, header_with("\"data_size\":260", "\"data_size\":16"), std::string(65 * 4, '\0')});
  check(K::kOversize, "oversize checked before size");
  emulator.publish_raw({std::string("EVENT\0", 6), good_header, four_floats});
  check(K::kUnknownType, "data under EVENT");

  const std::vector<float> four(4, 1.0F);
  auto small = emulator.data_message(1, next, four);
  small[1].replace(small[1].find("\"data_size\":16"), 14, "\"data_size\":20");
  emulator.publish_raw(small);
  check(K::kDataSize, "data_size field disagrees with payload");

  const OpenEphysZmqCounters n = source.counters();
  std::uint64_t total = 0;
  for (auto v : expected) total += v;
  EXPECT_EQ(n.malformed, total);
  EXPECT_EQ(n.gaps, 0u);
  EXPECT_EQ(n.blocks, static_cast<std::uint64_t>(next / 16));
}

TEST(OpenEphysZmq, ReadDoesNotAllocate) {
  OpenEphysZmqEmulator emulator(emulator_config(16));
  OpenEphysZmqSource source(source_config(emulator));
  start_and_subscribe(source, emulator);
  SampleBlock block;
  block.allocate(256, 16);
  emulator.publish(make_buffer(0, 256, 16));
  expect_block(source, block, 0, 256);  // warm-up: connection and first messages

  // The steady state plus the error paths: a gap, a duplicate, malformed messages, an event.
  for (int i = 0; i < 8; ++i) emulator.publish(make_buffer(256 + 256 * i, 256, 16));
  emulator.repeat_last();
  emulator.inject_malformed(OpenEphysMalformed::kJson);
  emulator.inject_malformed(OpenEphysMalformed::kField);
  emulator.publish_event(3000);
  emulator.skip(256);
  emulator.publish(make_buffer(2560, 256, 16));

  test_support::allocations = 0;
  test_support::count_allocations_on_this_thread = true;
  std::size_t blocks = 0;
  std::int64_t last_first = -1;
  while (blocks < 9 && source.read(block) == ReadStatus::kOk) {
    ++blocks;
    last_first = block.first_sample;
  }
  test_support::count_allocations_on_this_thread = false;
  EXPECT_EQ(blocks, 9u) << source.last_error();
  EXPECT_EQ(last_first, 2560);
  EXPECT_EQ(test_support::allocations.load(), 0u);
  EXPECT_EQ(source.counters().gaps, 1u);
  EXPECT_EQ(source.counters().malformed, 2u);
}

// The real Open Ephys sample recording (16 ch, 40 kHz, int16 with bit_volts 0.05), read with a
// minimal test-local reader, streamed through the emulator in GUI-sized buffers: every sample
// arrives, at its recorded sample number.
TEST(OpenEphysZmq, StreamsRealOpenEphysRecordingIntact) {
  const std::filesystem::path root =
      std::filesystem::path(TWINLOOP_SHARED_DATA) / "openephys_16ch_hippocampus";
  std::ifstream oebin_file(root / "structure.oebin");
  ASSERT_TRUE(oebin_file) << root;
  const nlohmann::json oebin = nlohmann::json::parse(oebin_file);
  const nlohmann::json& stream = oebin.at("continuous").at(0);
  const auto channels = stream.at("num_channels").get<std::size_t>();
  const auto rate = stream.at("sample_rate").get<double>();
  const auto bit_volts = stream.at("channels").at(0).at("bit_volts").get<double>();
  for (const auto& ch : stream.at("channels"))
    ASSERT_EQ(ch.at("bit_volts").get<double>(), bit_volts);
  const std::filesystem::path folder =
      root / "continuous" / stream.at("folder_name").get<std::string>();

  std::ifstream dat(folder / "continuous.dat", std::ios::binary);
  ASSERT_TRUE(dat);
  std::vector<char> bytes((std::istreambuf_iterator<char>(dat)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size() % (2 * channels), 0u);
  const std::size_t total_rows = bytes.size() / (2 * channels);
  std::vector<std::int16_t> recording(total_rows * channels);
  std::memcpy(recording.data(), bytes.data(), bytes.size());  // little-endian host, as the file
  const std::vector<std::int64_t> sample_numbers = read_npy_int64(folder / "timestamps.npy");
  ASSERT_EQ(sample_numbers.size(), total_rows);
  for (std::size_t i = 1; i < total_rows; ++i) {
    ASSERT_EQ(sample_numbers[i], sample_numbers[0] + static_cast<std::int64_t>(i));
  }
  ASSERT_EQ(channels, 16u);
  ASSERT_EQ(total_rows, 66438u);

  OpenEphysZmqEmulatorConfig ec = emulator_config(channels, sample_numbers[0]);
  ec.sample_rate_hz = rate;
  ec.microvolts_per_bit = bit_volts;
  ec.stream = "data_stream_16ch_hippocampus";
  OpenEphysZmqEmulator emulator(ec);
  OpenEphysZmqSourceConfig sc = source_config(emulator);
  sc.stream = ec.stream;
  OpenEphysZmqSource source(sc);
  start_and_subscribe(source, emulator);

  constexpr std::size_t kBuffer = 1024;  // a typical GUI processing buffer
  for (std::size_t row = 0; row < total_rows; row += kBuffer) {
    const std::size_t rows = std::min(kBuffer, total_rows - row);
    emulator.publish(
        std::span<const std::int16_t>(recording).subspan(row * channels, rows * channels));
  }

  SampleBlock block;
  block.allocate(kBuffer, channels);
  GapDetector detector;
  GapDetector::Gap gap;
  std::size_t received = 0;
  std::size_t mismatches = 0;
  while (received < total_rows) {
    ASSERT_EQ(source.read(block), ReadStatus::kOk) << source.last_error();
    ASSERT_EQ(block.first_sample, sample_numbers[received]);
    EXPECT_FALSE(detector.check(block.first_sample, block.sample_count, gap));
    for (std::size_t i = 0; i < block.sample_count * channels; ++i) {
      if (block.samples[i] != recording[received * channels + i]) ++mismatches;
    }
    received += block.sample_count;
  }
  EXPECT_EQ(received, total_rows);
  EXPECT_EQ(mismatches, 0u);
  const OpenEphysZmqCounters n = source.counters();
  EXPECT_EQ(n.blocks, (total_rows + kBuffer - 1) / kBuffer);
  EXPECT_EQ(n.data_messages, n.blocks * channels);
  EXPECT_EQ(n.gaps + n.malformed + n.duplicates + n.lost_messages + n.clipped_samples, 0u);
}

}  // namespace
}  // namespace twinloop::drivers

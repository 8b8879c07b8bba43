// The wire format and the network transports against hand-driven fake peers: exact round trips,
// every stream fault (drop, duplicate, reorder, corruption, malformed, disconnect, timeout) and
// every stimulus outcome (on time, late, missing, refused).
#include <gtest/gtest.h>
#include <zmq.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/drivers/network_probe_source.hpp"
#include "twinloop/drivers/network_stimulus_sink.hpp"
#include "twinloop/drivers/wire_format.hpp"

namespace twinloop::drivers {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPatience = std::chrono::seconds(5);  // bound of every wait; never reached when ok
constexpr std::uint32_t kChannels = 4;
constexpr std::uint32_t kRows = 10;

std::vector<std::byte> bytes_of(std::span<const std::byte> s) {
  return {s.begin(), s.end()};
}

// Sample value of (row, channel) in a block starting at `first`: distinct everywhere.
std::int16_t sample_value(std::int64_t first, std::size_t row, std::size_t channel) {
  return static_cast<std::int16_t>(
      ((first + static_cast<std::int64_t>(row)) * 7 + static_cast<std::int64_t>(channel) * 1000) %
          30000 -
      15000);
}

std::vector<std::byte> make_block(std::uint64_t sequence, std::int64_t first,
                                  std::uint32_t rows = kRows, std::uint32_t channels = kChannels,
                                  std::uint32_t probe_id = 3) {
  std::vector<std::int16_t> samples(std::size_t{rows} * channels);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < channels; ++c)
      samples[r * channels + c] = sample_value(first, r, c);
  }
  wire::BlockHeader h;
  h.probe_id = probe_id;
  h.channel_count = channels;
  h.sequence = sequence;
  h.first_sample = first;
  h.sample_count = rows;
  std::vector<std::byte> out(wire::block_message_bytes(rows, channels));
  EXPECT_EQ(wire::encode_block(h, samples.data(), out), out.size());
  return out;
}

wire::StreamInfo make_info(std::uint32_t channels = kChannels, std::uint32_t probe_id = 3) {
  wire::StreamInfo info;
  info.probe_id = probe_id;
  info.block_samples = kRows;
  info.probe.name = "net0";
  info.probe.stored_channels = channels;
  info.probe.neural_channels = channels - 1;
  info.probe.has_sync_word = true;
  info.probe.sample_rate_hz = 30000.0;
  info.probe.microvolts_per_bit = 2.34375;
  info.probe.geometry.model = "NP1000";
  for (std::uint32_t c = 0; c + 1 < channels; ++c) {
    info.probe.geometry.sites.push_back(Site{16.0 * (c % 2), 20.0 * c, 0, static_cast<int>(c)});
  }
  return info;
}

// Rewrites the trailing CRC so that a deliberately wrong field is judged on its own.
void reseal(std::vector<std::byte>& m) {
  const std::uint32_t crc = wire::crc32(std::span<const std::byte>(m).first(m.size() - 4));
  for (int i = 0; i < 4; ++i) m[m.size() - 4 + i] = static_cast<std::byte>((crc >> (8 * i)) & 0xFF);
}

TEST(WireFormat, BlockRoundTripIsExact) {
  const auto message = make_block(41, 123456789012LL, 7, 5, 9);
  wire::BlockHeader h;
  ASSERT_EQ(wire::decode_block(message, h), wire::DecodeError::kNone);
  EXPECT_EQ(h.probe_id, 9u);
  EXPECT_EQ(h.channel_count, 5u);
  EXPECT_EQ(h.sequence, 41u);
  EXPECT_EQ(h.first_sample, 123456789012LL);
  EXPECT_EQ(h.sample_count, 7u);
  std::vector<std::int16_t> rows(3 * 5);
  wire::copy_block_rows(message, h, 2, 3, rows.data());
  for (std::size_t r = 0; r < 3; ++r) {
    for (std::size_t c = 0; c < 5; ++c) {
      EXPECT_EQ(rows[r * 5 + c], sample_value(123456789012LL, r + 2, c));
    }
  }
  // Little-endian on the wire: the magic reads "TWLN".
  EXPECT_EQ(std::memcmp(message.data(), "TWLN", 4), 0);
}

TEST(WireFormat, EveryFlippedBitFailsValidation) {
  const auto good = make_block(1, 0, 2, 3);
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto bad = good;
      bad[i] ^= static_cast<std::byte>(1 << bit);
      wire::BlockHeader h;
      EXPECT_NE(wire::decode_block(bad, h), wire::DecodeError::kNone) << "byte " << i;
    }
  }
}

TEST(WireFormat, StreamInfoRoundTripKeepsGeometry) {
  const wire::StreamInfo info = make_info(6, 4);
  const auto message = wire::encode_stream_info(info);
  wire::StreamInfo back;
  ASSERT_EQ(wire::decode_stream_info(message, back), wire::DecodeError::kNone);
  EXPECT_EQ(back.probe_id, 4u);
  EXPECT_EQ(back.probe.name, "net0");
  EXPECT_EQ(back.probe.stored_channels, 6u);
  EXPECT_EQ(back.probe.neural_channels, 5u);
  EXPECT_TRUE(back.probe.has_sync_word);
  EXPECT_EQ(back.probe.sample_rate_hz, 30000.0);
  EXPECT_EQ(back.probe.microvolts_per_bit, 2.34375);
  EXPECT_EQ(back.probe.geometry.model, "NP1000");
  ASSERT_EQ(back.probe.geometry.sites.size(), 5u);
  EXPECT_EQ(back.probe.geometry.sites[3].z_um, 60.0);
  EXPECT_EQ(back.probe.geometry.sites[3].x_um, 16.0);
  EXPECT_EQ(back.probe.geometry.sites[3].electrode, 3);
}

TEST(WireFormat, StimulusCommandAndReplyRoundTrip) {
  StimulusCommand c;
  c.trial = 17;
  c.earliest_onset_sample = 900000;
  c.duration_samples = 15000;
  c.stimulus.candidate = 5;
  c.stimulus.dimension_count = 3;
  c.stimulus.values = {90.0, 0.25, -1.5};
  std::array<std::byte, wire::kStimulusCommandMaxBytes> buffer{};
  const std::size_t n = wire::encode_stimulus_command(77, c, buffer);
  ASSERT_EQ(n, wire::kStimulusCommandHeaderBytes + 3 * 8 + 4);
  std::uint64_t id = 0;
  StimulusCommand back;
  ASSERT_EQ(wire::decode_stimulus_command(std::span(buffer).first(n), id, back),
            wire::DecodeError::kNone);
  EXPECT_EQ(id, 77u);
  EXPECT_EQ(back.trial, 17u);
  EXPECT_EQ(back.earliest_onset_sample, 900000);
  EXPECT_EQ(back.duration_samples, 15000);
  EXPECT_EQ(back.stimulus.candidate, 5u);
  EXPECT_EQ(back.stimulus.dimension_count, 3);
  EXPECT_EQ(back.stimulus.values[2], -1.5);

  wire::StimulusReply r;
  r.request_id = 77;
  r.trial = 17;
  r.status = wire::ReplyStatus::kRefused;
  const std::string reason = "amplitude 9 exceeds 5";
  r.reason_length = reason.size();
  std::memcpy(r.reason.data(), reason.data(), reason.size());
  std::array<std::byte, wire::kStimulusReplyMaxBytes> out{};
  const std::size_t m = wire::encode_stimulus_reply(r, out);
  wire::StimulusReply rb;
  ASSERT_EQ(wire::decode_stimulus_reply(std::span(out).first(m), rb), wire::DecodeError::kNone);
  EXPECT_EQ(rb.status, wire::ReplyStatus::kRefused);
  EXPECT_EQ(std::string(rb.reason.data(), rb.reason_length), reason);
  EXPECT_EQ(rb.onset_sample, -1);
}

TEST(WireFormat, DecodersSurviveRandomBytes) {
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::byte> m(rng() % 200);
    for (auto& b : m) b = static_cast<std::byte>(rng() & 0xFF);
    if (i % 3 == 0 && m.size() >= 8) {
      // A valid prefix of a random type: the typed decoders' own checks must catch the rest.
      std::memcpy(m.data(), "TWLN\x01\x00", 6);
      m[6] = static_cast<std::byte>(1 + rng() % 6);
      m[7] = std::byte{0};
      if (i % 2 == 0) reseal(m);
    }
    const bool sealed = i % 3 == 0 && m.size() >= 8 && i % 2 == 0;
    wire::BlockHeader h;
    wire::StreamInfo info;
    wire::StreamEnd end;
    wire::StimulusReply reply;
    StimulusCommand command;
    std::uint64_t id = 0;
    const std::array<wire::DecodeError, 6> results = {wire::decode_block(m, h),
                                                      wire::decode_stream_info(m, info),
                                                      wire::decode_stream_end(m, end),
                                                      wire::decode_stimulus_reply(m, reply),
                                                      wire::decode_stimulus_command(m, id, command),
                                                      wire::decode_stream_info_request(m, id)};
    // Random bytes without a matching checksum are never accepted (a random CRC-32 match is a
    // 1 in 2^32 event); resealed ones must be judged by the typed checks without crashing.
    if (!sealed) {
      for (const wire::DecodeError e : results) EXPECT_NE(e, wire::DecodeError::kNone) << i;
    }
  }
}

// ---- A fake rig: an XPUB the test drives by hand --------------------------------------------

class FakeStream {
 public:
  FakeStream() : context_(zmq_ctx_new()) { bind("tcp://127.0.0.1:*"); }
  ~FakeStream() {
    close();
    zmq_ctx_term(context_);
  }
  FakeStream(const FakeStream&) = delete;
  FakeStream& operator=(const FakeStream&) = delete;

  const std::string& endpoint() const { return endpoint_; }

  void bind(const std::string& where) {
    socket_ = zmq_socket(context_, ZMQ_XPUB);
    int one = 1, zero = 0;
    zmq_setsockopt(socket_, ZMQ_XPUB_VERBOSE, &one, sizeof one);
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof zero);
    // The old listener closes asynchronously; retry until the port is ours again.
    const auto deadline = Clock::now() + kPatience;
    while (zmq_bind(socket_, where.c_str()) != 0) {
      ASSERT_LT(Clock::now(), deadline) << zmq_strerror(errno);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::array<char, 256> buffer{};
    std::size_t size = buffer.size();
    zmq_getsockopt(socket_, ZMQ_LAST_ENDPOINT, buffer.data(), &size);
    endpoint_ = buffer.data();
  }
  void close() {
    if (socket_ != nullptr) zmq_close(socket_);
    socket_ = nullptr;
  }

  void send(std::span<const std::byte> m) {
    ASSERT_EQ(zmq_send(socket_, m.data(), m.size(), 0), static_cast<int>(m.size()));
  }

  // Waits for a subscription and answers it with the stream info, as the bench does.
  bool serve_subscription(const wire::StreamInfo& info) {
    const auto message = wire::encode_stream_info(info);
    const auto deadline = Clock::now() + kPatience;
    while (Clock::now() < deadline) {
      zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 10) <= 0) continue;
      std::array<std::byte, 64> sub{};
      if (zmq_recv(socket_, sub.data(), sub.size(), 0) >= 1 && sub[0] == std::byte{1}) {
        send(message);
        return true;
      }
    }
    return false;
  }

 private:
  void* context_;
  void* socket_ = nullptr;
  std::string endpoint_;
};

NetworkProbeConfig probe_config(const std::string& endpoint) {
  NetworkProbeConfig c;
  c.endpoint = endpoint;
  c.max_block_samples = 200;
  c.connect_timeout_ms = 5000;
  c.data_timeout_ms = 2000;  // only the timeout test relies on it
  return c;
}

// Starts `source` while the fake answers its subscription.
void connect(NetworkProbeSource& source, FakeStream& fake,
             const wire::StreamInfo& info = make_info()) {
  auto started = std::async(std::launch::async, [&source] { return source.start(); });
  ASSERT_TRUE(fake.serve_subscription(info));
  ASSERT_TRUE(started.get()) << source.last_error();
}

// Reads until a block arrives (or the stream ends); bounded.
ReadStatus read_next(NetworkProbeSource& source, SampleBlock& block) {
  const auto deadline = Clock::now() + kPatience;
  for (;;) {
    const ReadStatus s = source.read(block);
    if (s != ReadStatus::kWouldBlock || Clock::now() > deadline) return s;
  }
}

void expect_rows(const SampleBlock& block, std::int64_t first, std::size_t rows) {
  ASSERT_EQ(block.first_sample, first);
  ASSERT_EQ(block.sample_count, rows);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < block.stored_channels; ++c) {
      ASSERT_EQ(block.row(r)[c], sample_value(first, r, c)) << "row " << r << " channel " << c;
    }
  }
}

std::vector<FaultEvent> drain(NetworkProbeSource& source) {
  std::vector<FaultEvent> events(64);
  events.resize(source.drain_fault_events(events));
  return events;
}

class NetworkProbeSourceTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }
  void start(int data_timeout_ms = 2000) {
    auto config = probe_config(fake.endpoint());
    config.data_timeout_ms = data_timeout_ms;
    source = std::make_unique<NetworkProbeSource>(config);
    connect(*source, fake);
    block.allocate(kRows, kChannels);
  }
  FakeStream fake;
  std::unique_ptr<NetworkProbeSource> source;
  SampleBlock block;
};

TEST_F(NetworkProbeSourceTest, StartReadsTheStreamInfo) {
  EXPECT_EQ(source->info().stored_channels, kChannels);
  EXPECT_EQ(source->info().name, "net0");
  EXPECT_EQ(source->info().geometry.sites.size(), kChannels - 1);
  EXPECT_EQ(source->probe_id(), 3u);
  EXPECT_EQ(source->fault_counters().stream_infos, 1u);
}

TEST_F(NetworkProbeSourceTest, BlocksArriveExactly) {
  for (std::uint64_t s = 0; s < 5; ++s) fake.send(make_block(s, 1000 + 10 * static_cast<int>(s)));
  for (std::uint64_t s = 0; s < 5; ++s) {
    ASSERT_EQ(read_next(*source, block), ReadStatus::kOk) << source->last_error();
    expect_rows(block, 1000 + 10 * static_cast<std::int64_t>(s), kRows);
  }
  const auto c = source->fault_counters();
  EXPECT_EQ(c.blocks, 5u);
  EXPECT_EQ(c.samples, 50u);
  EXPECT_EQ(c.gaps + c.malformed + c.duplicates + c.out_of_order + c.checksum_failures, 0u);
  EXPECT_EQ(source->last_block_timing().sequence, 4u);
}

TEST_F(NetworkProbeSourceTest, LargeBlocksAreHandedOutOverSeveralReads) {
  fake.send(make_block(0, 500, 25));
  SampleBlock small;
  small.allocate(10, kChannels);
  ASSERT_EQ(read_next(*source, small), ReadStatus::kOk);
  expect_rows(small, 500, 10);
  ASSERT_EQ(read_next(*source, small), ReadStatus::kOk);
  expect_rows(small, 510, 10);
  ASSERT_EQ(read_next(*source, small), ReadStatus::kOk);
  expect_rows(small, 520, 5);
}

TEST_F(NetworkProbeSourceTest, DroppedBlockIsPassedThroughAsAGap) {
  fake.send(make_block(0, 0));
  fake.send(make_block(1, 10));
  fake.send(make_block(3, 30));  // block 2 (samples 20..29) lost
  GapDetector detector;
  GapDetector::Gap gap;
  int gaps = 0;
  for (const std::int64_t first : {0, 10, 30}) {
    ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
    expect_rows(block, first, kRows);
    gaps += detector.check(block.first_sample, block.sample_count, gap) ? 1 : 0;
  }
  EXPECT_EQ(gaps, 1);  // the acquisition loop's detector sees the same gap
  EXPECT_EQ(gap.expected_sample, 20);
  EXPECT_EQ(gap.found_sample, 30);
  const auto c = source->fault_counters();
  EXPECT_EQ(c.gaps, 1u);
  EXPECT_EQ(c.missing_samples, 10);
  const auto events = drain(*source);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, FaultKind::kGap);
  EXPECT_EQ(events[0].first_sample, 20);
  EXPECT_EQ(events[0].end_sample, 30);
  EXPECT_EQ(events[0].value, 10);
  EXPECT_EQ(events[0].sequence, 3u);
}

TEST_F(NetworkProbeSourceTest, DuplicateIsDroppedAndCounted) {
  fake.send(make_block(0, 0));
  fake.send(make_block(1, 10));
  fake.send(make_block(1, 10));
  fake.send(make_block(2, 20));
  for (const std::int64_t first : {0, 10, 20}) {
    ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
    expect_rows(block, first, kRows);
  }
  const auto c = source->fault_counters();
  EXPECT_EQ(c.duplicates, 1u);
  EXPECT_EQ(c.gaps, 0u);
  EXPECT_EQ(c.out_of_order, 0u);
  const auto events = drain(*source);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, FaultKind::kDuplicate);
  EXPECT_EQ(events[0].first_sample, 10);
  EXPECT_NE(source->last_error().find("duplicate"), std::string::npos);
}

TEST_F(NetworkProbeSourceTest, LateBlockIsNeverDeliveredBackwards) {
  fake.send(make_block(0, 0));
  fake.send(make_block(2, 20));
  fake.send(make_block(1, 10));  // arrives after its successor
  fake.send(make_block(3, 30));
  std::int64_t previous = -1;
  for (const std::int64_t first : {0, 20, 30}) {
    ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
    expect_rows(block, first, kRows);
    EXPECT_GT(block.first_sample, previous);
    previous = block.first_sample;
  }
  const auto c = source->fault_counters();
  EXPECT_EQ(c.out_of_order, 1u);
  EXPECT_EQ(c.gaps, 1u);
  EXPECT_EQ(c.missing_samples, 10);
  EXPECT_EQ(c.duplicates, 0u);
  const auto events = drain(*source);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, FaultKind::kGap);
  EXPECT_EQ(events[1].kind, FaultKind::kOutOfOrder);
  EXPECT_EQ(events[1].first_sample, 10);
  EXPECT_EQ(events[1].end_sample, 20);
}

TEST_F(NetworkProbeSourceTest, CorruptedBlockFailsTheChecksumAndLaterDataArrives) {
  fake.send(make_block(0, 0));
  auto bad = make_block(1, 10);
  bad[wire::kBlockHeaderBytes + 5] ^= std::byte{0x40};
  fake.send(bad);
  fake.send(make_block(2, 20));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  expect_rows(block, 0, kRows);
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  expect_rows(block, 20, kRows);
  const auto c = source->fault_counters();
  EXPECT_EQ(c.checksum_failures, 1u);
  EXPECT_EQ(c.malformed, 0u);
  EXPECT_EQ(c.gaps, 1u);
  EXPECT_NE(source->last_error().find("checksum"), std::string::npos) << source->last_error();
  const auto events = drain(*source);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, FaultKind::kChecksum);
  EXPECT_EQ(events[0].first_sample, 10);  // where the stream stood when it was noticed
  EXPECT_EQ(events[1].kind, FaultKind::kGap);
}

TEST_F(NetworkProbeSourceTest, MalformedMessagesAreDroppedCountedAndNamed) {
  struct Case {
    std::string name;
    std::vector<std::byte> message;
    std::string error_mentions;
  };
  std::vector<Case> cases;
  cases.push_back({"empty", {}, "truncated"});
  cases.push_back({"three bytes", {std::byte{'T'}, std::byte{'W'}, std::byte{'L'}}, "truncated"});
  {
    auto m = make_block(1, 10);
    m[0] = std::byte{'X'};
    cases.push_back({"bad magic", m, "magic"});
  }
  {
    auto m = make_block(1, 10);
    m[4] = std::byte{2};
    reseal(m);
    cases.push_back({"bad version", m, "version"});
  }
  {
    auto m = make_block(1, 10);
    m.resize(m.size() - 6);
    reseal(m);
    cases.push_back({"payload cut short", m, "length"});
  }
  cases.push_back({"wrong channel count", make_block(1, 10, kRows, kChannels + 1), "channels"});
  cases.push_back({"wrong probe", make_block(1, 10, kRows, kChannels, 8), "probe 8"});
  {
    std::array<std::byte, wire::kStimulusCommandMaxBytes> buffer{};
    StimulusCommand command;
    const std::size_t n = wire::encode_stimulus_command(1, command, buffer);
    cases.push_back(
        {"stimulus command on the probe stream", bytes_of(std::span(buffer).first(n)), "type"});
  }
  cases.push_back({"oversized", make_block(1, 10, 400), "exceeds"});
  {
    auto info = wire::encode_stream_info(make_info(kChannels + 2));
    cases.push_back({"stream info that changed", info, "changed"});
  }
  std::uint64_t sequence = 0;
  std::int64_t first = 0;
  fake.send(make_block(sequence++, first));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    fake.send(c.message);
    first += kRows;
    fake.send(make_block(sequence++, first));
    // The good block behind the bad message still arrives; the error names the bad one.
    ASSERT_EQ(read_next(*source, block), ReadStatus::kOk) << source->last_error();
    expect_rows(block, first, kRows);
    EXPECT_NE(source->last_error().find(c.error_mentions), std::string::npos)
        << source->last_error();
  }
  std::mt19937_64 rng(99);
  for (int i = 0; i < 50; ++i) {
    std::vector<std::byte> junk(rng() % 300);
    for (auto& b : junk) b = static_cast<std::byte>(rng() & 0xFF);
    fake.send(junk);
  }
  first += kRows;
  fake.send(make_block(sequence++, first));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  expect_rows(block, first, kRows);
  const auto c = source->fault_counters();
  EXPECT_EQ(c.malformed + c.checksum_failures, cases.size() + 50);
  EXPECT_EQ(c.gaps, 0u);
  EXPECT_EQ(c.blocks, sequence);
}

TEST_F(NetworkProbeSourceTest, DisconnectIsCountedAndDataResumesWithAGap) {
  fake.send(make_block(0, 0));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  const std::string endpoint = fake.endpoint();
  fake.close();
  const auto deadline = Clock::now() + kPatience;
  while (source->fault_counters().disconnects == 0 && Clock::now() < deadline) {
    ASSERT_EQ(source->read(block), ReadStatus::kWouldBlock);
  }
  ASSERT_EQ(source->fault_counters().disconnects, 1u);
  EXPECT_EQ(source->fault_counters().data_timeouts, 0u);  // the socket monitor saw it first
  fake.bind(endpoint);
  // The source re-subscribes on its own; serve it while it keeps reading.
  auto resubscribed =
      std::async(std::launch::async, [&] { return fake.serve_subscription(make_info()); });
  while (resubscribed.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
    ASSERT_EQ(source->read(block), ReadStatus::kWouldBlock);
  }
  ASSERT_TRUE(resubscribed.get());
  fake.send(make_block(50, 500));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  expect_rows(block, 500, kRows);
  const auto c = source->fault_counters();
  EXPECT_EQ(c.disconnects, 1u);
  EXPECT_EQ(c.reconnects, 1u);
  EXPECT_EQ(c.gaps, 1u);
  EXPECT_EQ(c.missing_samples, 490);
  EXPECT_EQ(c.stream_infos, 2u);
  const auto events = drain(*source);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].kind, FaultKind::kDisconnect);
  EXPECT_EQ(events[0].first_sample, 10);
  EXPECT_EQ(events[0].value, 1);
  EXPECT_EQ(events[1].kind, FaultKind::kReconnect);
  EXPECT_EQ(events[2].kind, FaultKind::kGap);
  EXPECT_EQ(events[2].first_sample, 10);
  EXPECT_EQ(events[2].end_sample, 500);
}

TEST_F(NetworkProbeSourceTest, SilenceBeyondTheDataTimeoutIsADisconnect) {
  start(60);
  fake.send(make_block(0, 0));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  const auto deadline = Clock::now() + kPatience;
  while (source->fault_counters().disconnects == 0 && Clock::now() < deadline) {
    ASSERT_EQ(source->read(block), ReadStatus::kWouldBlock);
  }
  EXPECT_EQ(source->fault_counters().data_timeouts, 1u);
  fake.send(make_block(1, 10));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  expect_rows(block, 10, kRows);
  EXPECT_EQ(source->fault_counters().reconnects, 1u);
  EXPECT_EQ(source->fault_counters().gaps, 0u);
}

TEST_F(NetworkProbeSourceTest, StreamEndEndsTheStream) {
  fake.send(make_block(0, 0));
  std::array<std::byte, wire::kStreamEndBytes> end{};
  const std::size_t n = wire::encode_stream_end({3, 10, 1}, end);
  fake.send(std::span(end).first(n));
  ASSERT_EQ(read_next(*source, block), ReadStatus::kOk);
  EXPECT_EQ(read_next(*source, block), ReadStatus::kEndOfStream);
  EXPECT_EQ(source->read(block), ReadStatus::kEndOfStream);
}

TEST(NetworkProbeSource, StartFailsWhenNoStreamInfoArrives) {
  std::string endpoint;
  { endpoint = FakeStream().endpoint(); }  // a port nobody listens on any more
  auto config = probe_config(endpoint);
  config.connect_timeout_ms = 100;
  NetworkProbeSource source(config);
  EXPECT_FALSE(source.start());
  EXPECT_NE(source.last_error().find("no stream info"), std::string::npos) << source.last_error();
  SampleBlock block;
  block.allocate(10, 4);
  EXPECT_EQ(source.read(block), ReadStatus::kError);
}

TEST(NetworkProbeSource, RejectsAnEmptyEndpoint) {
  EXPECT_THROW(NetworkProbeSource(NetworkProbeConfig{}), std::invalid_argument);
  EXPECT_THROW(NetworkStimulusSink(NetworkStimulusConfig{}), std::invalid_argument);
}

// ---- A fake stimulator: a ROUTER on its own thread, answering by a script --------------------

using Replies = std::vector<std::vector<std::byte>>;

struct FakeStimulator {
  using Script =
      std::function<Replies(std::uint64_t index, std::uint64_t request_id, const StimulusCommand&)>;

  explicit FakeStimulator(Script s) : context(zmq_ctx_new()), script(std::move(s)) {
    socket = zmq_socket(context, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &zero, sizeof zero);
    EXPECT_EQ(zmq_bind(socket, "tcp://127.0.0.1:*"), 0);
    std::array<char, 256> buffer{};
    std::size_t size = buffer.size();
    zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, buffer.data(), &size);
    endpoint = buffer.data();
    thread = std::thread([this] { run(); });
  }
  ~FakeStimulator() {
    stop = true;
    thread.join();
    zmq_close(socket);
    zmq_ctx_term(context);
  }

  void run() {
    std::uint64_t index = 0;
    while (!stop) {
      zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 10) <= 0) continue;
      std::array<std::byte, 256> identity{};
      std::array<std::byte, 1024> message{};
      const int id = zmq_recv(socket, identity.data(), identity.size(), 0);
      const int n = zmq_recv(socket, message.data(), message.size(), 0);
      std::uint64_t request_id = 0;
      StimulusCommand command;
      if (id < 0 || n < 0 ||
          wire::decode_stimulus_command(std::span(message).first(static_cast<std::size_t>(n)),
                                        request_id, command) != wire::DecodeError::kNone) {
        continue;
      }
      for (const auto& reply : script(index++, request_id, command)) {
        zmq_send(socket, identity.data(), static_cast<std::size_t>(id), ZMQ_SNDMORE);
        zmq_send(socket, reply.data(), reply.size(), 0);
      }
    }
  }

  void* context;
  void* socket;
  std::string endpoint;
  Script script;
  std::atomic<bool> stop{false};
  std::thread thread;
};

std::vector<std::byte> reply_bytes(std::uint64_t request_id, const StimulusCommand& c,
                                   std::int64_t onset, const std::string& refusal = {}) {
  wire::StimulusReply r;
  r.request_id = request_id;
  r.trial = c.trial;
  r.onset_sample = refusal.empty() ? onset : -1;
  r.status = refusal.empty() ? wire::ReplyStatus::kDelivered : wire::ReplyStatus::kRefused;
  r.reason_length = refusal.size();
  std::memcpy(r.reason.data(), refusal.data(), refusal.size());
  std::vector<std::byte> out(wire::kStimulusReplyMaxBytes);
  out.resize(wire::encode_stimulus_reply(r, out));
  return out;
}

StimulusCommand command_for(std::uint64_t trial, std::int64_t earliest) {
  StimulusCommand c;
  c.trial = trial;
  c.earliest_onset_sample = earliest;
  c.duration_samples = 300;
  c.stimulus.dimension_count = 2;
  c.stimulus.values[0] = 45.0;
  c.stimulus.values[1] = 1.0;
  return c;
}

NetworkStimulusConfig sink_config(const std::string& endpoint, int reply_timeout_ms = 2000) {
  NetworkStimulusConfig c;
  c.endpoint = endpoint;
  c.reply_timeout_ms = reply_timeout_ms;
  c.late_tolerance_samples = 30;
  return c;
}

TEST(NetworkStimulusSink, OnTimeOnsetIsDelivered) {
  FakeStimulator fake([](std::uint64_t, std::uint64_t id, const StimulusCommand& c) {
    return Replies{reply_bytes(id, c, c.earliest_onset_sample + 30)};
  });
  NetworkStimulusSink sink(sink_config(fake.endpoint));
  ASSERT_TRUE(sink.start()) << sink.last_error();
  const StimulusOnset onset = sink.deliver(command_for(1, 3000));
  EXPECT_TRUE(onset.delivered);
  EXPECT_EQ(onset.onset_sample, 3030);
  EXPECT_EQ(sink.last_result().outcome, DeliveryOutcome::kDelivered);
  EXPECT_GT(sink.last_result().round_trip_ns, 0);
  EXPECT_EQ(sink.fault_counters().delivered, 1u);
  std::array<FaultEvent, 4> events{};
  EXPECT_EQ(sink.drain_fault_events(events), 0u);
}

TEST(NetworkStimulusSink, LateOnsetIsFlaggedWithTheRealOnset) {
  FakeStimulator fake([](std::uint64_t, std::uint64_t id, const StimulusCommand& c) {
    return Replies{reply_bytes(id, c, c.earliest_onset_sample + 150)};
  });
  NetworkStimulusSink sink(sink_config(fake.endpoint));
  ASSERT_TRUE(sink.start()) << sink.last_error();
  const DeliveryResult r = sink.deliver_with_result(command_for(4, 6000));
  EXPECT_EQ(r.outcome, DeliveryOutcome::kLate);
  EXPECT_TRUE(r.delivered());
  EXPECT_EQ(r.onset_sample, 6150);
  EXPECT_NE(sink.last_error().find("late onset"), std::string::npos) << sink.last_error();
  EXPECT_EQ(sink.fault_counters().late_onsets, 1u);
  std::array<FaultEvent, 4> events{};
  ASSERT_EQ(sink.drain_fault_events(events), 1u);
  EXPECT_EQ(events[0].kind, FaultKind::kLateOnset);
  EXPECT_EQ(events[0].trial, 4u);
  EXPECT_EQ(events[0].first_sample, 6000);
  EXPECT_EQ(events[0].end_sample, 6150);
  EXPECT_EQ(events[0].value, 150);
}

TEST(NetworkStimulusSink, MissingOnsetTimesOutAndTheNextCommandStillWorks) {
  std::atomic<std::uint64_t> first_id{0};
  FakeStimulator fake([&](std::uint64_t index, std::uint64_t id, const StimulusCommand& c) {
    if (index == 0) {
      first_id = id;
      return Replies{};  // never acknowledged
    }
    // The lost acknowledgement turns up late, before the real one.
    StimulusCommand old = c;
    old.trial = 1;
    return Replies{reply_bytes(first_id, old, 1), reply_bytes(id, c, c.earliest_onset_sample)};
  });
  NetworkStimulusSink sink(sink_config(fake.endpoint, 150));
  ASSERT_TRUE(sink.start()) << sink.last_error();
  const DeliveryResult missing = sink.deliver_with_result(command_for(1, 3000));
  EXPECT_EQ(missing.outcome, DeliveryOutcome::kMissing);
  EXPECT_FALSE(missing.delivered());
  EXPECT_GE(missing.round_trip_ns, 150'000'000);
  EXPECT_NE(sink.last_error().find("no onset acknowledgement"), std::string::npos);
  const DeliveryResult next = sink.deliver_with_result(command_for(2, 9000));
  EXPECT_EQ(next.outcome, DeliveryOutcome::kDelivered);
  EXPECT_EQ(next.onset_sample, 9000);
  const auto c = sink.fault_counters();
  EXPECT_EQ(c.missing_onsets, 1u);
  EXPECT_EQ(c.stale_replies, 1u);
  EXPECT_EQ(c.delivered, 1u);
  std::array<FaultEvent, 4> events{};
  ASSERT_EQ(sink.drain_fault_events(events), 1u);
  EXPECT_EQ(events[0].kind, FaultKind::kMissingOnset);
  EXPECT_EQ(events[0].trial, 1u);
  EXPECT_EQ(events[0].first_sample, 3000);
  EXPECT_EQ(events[0].end_sample, 3300);
}

TEST(NetworkStimulusSink, RefusalReasonArrives) {
  FakeStimulator fake([](std::uint64_t, std::uint64_t id, const StimulusCommand& c) {
    return Replies{reply_bytes(id, c, -1, "amplitude 9 exceeds the limit 5")};
  });
  NetworkStimulusSink sink(sink_config(fake.endpoint));
  ASSERT_TRUE(sink.start()) << sink.last_error();
  const StimulusOnset onset = sink.deliver(command_for(7, 3000));
  EXPECT_FALSE(onset.delivered);
  EXPECT_EQ(sink.last_result().outcome, DeliveryOutcome::kRefused);
  EXPECT_NE(sink.last_error().find("amplitude 9 exceeds the limit 5"), std::string::npos)
      << sink.last_error();
  EXPECT_EQ(sink.fault_counters().refused, 1u);
}

TEST(NetworkStimulusSink, MalformedRepliesAreIgnoredUntilTheRealOne) {
  FakeStimulator fake([](std::uint64_t, std::uint64_t id, const StimulusCommand& c) {
    auto corrupt = reply_bytes(id, c, 5);
    corrupt[20] ^= std::byte{1};
    return Replies{std::vector<std::byte>{std::byte{1}, std::byte{2}}, corrupt,
                   reply_bytes(id, c, c.earliest_onset_sample)};
  });
  NetworkStimulusSink sink(sink_config(fake.endpoint));
  ASSERT_TRUE(sink.start()) << sink.last_error();
  EXPECT_EQ(sink.deliver_with_result(command_for(1, 100)).outcome, DeliveryOutcome::kDelivered);
  const auto c = sink.fault_counters();
  EXPECT_EQ(c.malformed, 1u);
  EXPECT_EQ(c.checksum_failures, 1u);
}

TEST(NetworkStimulusSink, StartFailsWhenNothingListens) {
  std::string endpoint;
  { endpoint = FakeStream().endpoint(); }
  auto config = sink_config(endpoint);
  config.connect_timeout_ms = 100;
  NetworkStimulusSink sink(config);
  EXPECT_FALSE(sink.start());
  EXPECT_NE(sink.last_error().find("no connection"), std::string::npos) << sink.last_error();
  EXPECT_EQ(sink.deliver_with_result(command_for(1, 0)).outcome, DeliveryOutcome::kNotStarted);
}

}  // namespace
}  // namespace twinloop::drivers

// The bench as a networked rig: BenchServer serving a SimulatedRig over ZeroMQ, read back through
// drivers::NetworkProbeSource / NetworkStimulusSink (the daemon's path). The stream is exactly the
// simulated probe's; each injected fault (drop, duplicate, reorder, corrupt, disconnect, late,
// missing and refused onsets, malformed requests) is seen, counted and placed on the sample clock.
#include <gtest/gtest.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "hil_test_helpers.hpp"
#include "twinloop/drivers/network_probe_source.hpp"
#include "twinloop/drivers/network_stimulus_sink.hpp"
#include "twinloop/drivers/openephys_zmq_source.hpp"
#include "twinloop/drivers/wire_format.hpp"
#include "twinloop/hil/bench_server.hpp"

namespace twinloop::hil {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kPatience = std::chrono::seconds(10);  // bound of every wait; never reached when ok
constexpr std::size_t kBlock = 30;

// A small, fast rig: 8 channels (+ sync), 4 units, 1 ms blocks.
BenchServerConfig bench_config(double seconds, drivers::Pace pace = drivers::Pace::kMax) {
  BenchServerConfig c;
  c.simulation = testing::fast_config(seconds, 11);
  c.simulation.channels = 8;
  c.simulation.unit_count = 4;
  c.simulation.block_samples = kBlock;
  c.simulation.pace = pace;
  c.probe_endpoint = "tcp://127.0.0.1:*";
  c.stimulus_endpoint = "tcp://127.0.0.1:*";
  c.probe_id = 2;
  c.wait_for_subscriber = true;
  return c;
}

// What the same simulation yields read locally: the reference for every received sample.
std::vector<std::int16_t> reference_samples(const BenchServerConfig& config) {
  SimulationConfig local = config.simulation;
  local.pace = drivers::Pace::kMax;
  auto rig = make_simulated_rig(local);
  (void)rig.probe->start();
  return testing::read_all(*rig.probe, kBlock);
}

struct Received {
  std::vector<drivers::SampleBlock> blocks;
  std::vector<drivers::FaultEvent> events;
  drivers::NetworkFaultCounters counters;
  bool ended = false;
};

// Reads the bench's stream through a NetworkProbeSource until its end (bounded).
Received receive_all(BenchServer& bench) {
  drivers::NetworkProbeConfig config;
  config.endpoint = bench.probe_endpoint();
  config.connect_timeout_ms = 5000;
  config.data_timeout_ms = 100;
  drivers::NetworkProbeSource source(config);
  Received out;
  EXPECT_TRUE(source.start()) << source.last_error();
  if (out.blocks.empty() && source.info().stored_channels == 0) return out;
  drivers::SampleBlock block;
  block.allocate(kBlock, source.info().stored_channels);
  const auto deadline = Clock::now() + kPatience;
  std::array<drivers::FaultEvent, 64> events{};
  while (Clock::now() < deadline) {
    const drivers::ReadStatus s = source.read(block);
    out.events.insert(
        out.events.end(), events.begin(),
        events.begin() + static_cast<std::ptrdiff_t>(source.drain_fault_events(events)));
    if (s == drivers::ReadStatus::kEndOfStream) {
      out.ended = true;
      break;
    }
    if (s == drivers::ReadStatus::kOk) out.blocks.push_back(block);
    EXPECT_NE(s, drivers::ReadStatus::kError) << source.last_error();
  }
  out.counters = source.fault_counters();
  return out;
}

// Every received block equals the reference at its position, and blocks only move forward.
void expect_true_samples(const Received& r, const std::vector<std::int16_t>& reference,
                         std::size_t channels) {
  std::int64_t previous_end = -1;
  for (const drivers::SampleBlock& b : r.blocks) {
    ASSERT_GE(b.first_sample, previous_end);
    previous_end = b.first_sample + static_cast<std::int64_t>(b.sample_count);
    const auto offset = static_cast<std::size_t>(b.first_sample) * channels;
    ASSERT_LE(offset + b.sample_count * channels, reference.size());
    ASSERT_TRUE(
        std::equal(b.samples.begin(),
                   b.samples.begin() + static_cast<std::ptrdiff_t>(b.sample_count * channels),
                   reference.begin() + static_cast<std::ptrdiff_t>(offset)))
        << "block at " << b.first_sample;
  }
}

std::vector<drivers::FaultEvent> of_kind(const Received& r, drivers::FaultKind kind) {
  std::vector<drivers::FaultEvent> out;
  for (const auto& e : r.events) {
    if (e.kind == kind) out.push_back(e);
  }
  return out;
}

TEST(FaultSelection, ParsesRatesAndListsAndRefusesTheRest) {
  FaultSelection s;
  EXPECT_EQ(parse_fault_selection("0.25", s), "");
  EXPECT_EQ(s.rate, 0.25);
  EXPECT_EQ(parse_fault_selection("@3,17,4", s), "");
  EXPECT_EQ(s.indices, (std::vector<std::uint64_t>{3, 17, 4}));
  EXPECT_EQ(s.rate, 0.0);
  for (const char* bad : {"", "1.5", "-0.1", "abc", "@", "@1,,2", "@1,x", "0.5x"}) {
    EXPECT_NE(parse_fault_selection(bad, s), "") << bad;
  }
}

TEST(FaultSelection, RatesAreDeterministicFromTheSeedAndAboutRight) {
  FaultSelection s{0.1, {}};
  int hits = 0, same = 0, other_seed = 0;
  for (std::uint64_t i = 0; i < 20000; ++i) {
    const bool h = s.hits(i, 5, 1);
    hits += h ? 1 : 0;
    same += h == s.hits(i, 5, 1) ? 1 : 0;
    other_seed += h == s.hits(i, 6, 1) ? 1 : 0;
  }
  EXPECT_EQ(same, 20000);
  EXPECT_NEAR(hits, 2000, 200);
  EXPECT_LT(other_seed, 19500);  // another seed picks other blocks
}

TEST(BenchServer, RefusesBadFaultSettings) {
  auto c = bench_config(0.1);
  c.faults.drop.rate = 2.0;
  EXPECT_THROW(BenchServer{c}, std::invalid_argument);
}

// The bench as a lab's Open Ephys GUI: its stream read back through the Open Ephys source is the
// simulated probe's neural channels (no sync word, as the GUI streams them), on a clock shifted
// by the offset, with a dropped block seen as a gap; onsets are acknowledged on that clock.
TEST(BenchServer, OpenEphysStreamIsTheSimulatedProbeOnTheGuisClock) {
  // Real-time pace and a stream longer than the test reads, so a stimulus can still be delivered.
  auto config = bench_config(2.0, drivers::Pace::kRealtime);
  config.probe_format = ProbeFormat::kOpenEphys;
  config.heartbeat_endpoint = "tcp://127.0.0.1:*";
  config.sample_offset = 1000000;
  config.faults.drop.indices = {40};
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  ASSERT_FALSE(bench.heartbeat_endpoint().empty());
  drivers::OpenEphysZmqSourceConfig oe;
  oe.endpoint = bench.probe_endpoint();
  oe.heartbeat_endpoint = bench.heartbeat_endpoint();
  oe.channel_count = 8;
  drivers::OpenEphysZmqSource source(oe);
  ASSERT_TRUE(source.start()) << source.last_error();
  drivers::SampleBlock block;
  block.allocate(kBlock, 8);
  const auto reference = reference_samples(config);
  const std::size_t stored = config.simulation.stored_channels();
  std::size_t rows = 0;
  const auto deadline = Clock::now() + kPatience;
  while (rows < 199 * kBlock && Clock::now() < deadline) {
    if (source.read(block) != drivers::ReadStatus::kOk) continue;
    const std::int64_t sim_sample = block.first_sample - config.sample_offset;
    ASSERT_GE(sim_sample, 0);
    for (std::size_t r = 0; r < block.sample_count; ++r) {
      for (std::size_t c = 0; c < 8; ++c) {
        ASSERT_EQ(block.samples[r * 8 + c],
                  reference[(static_cast<std::size_t>(sim_sample) + r) * stored + c])
            << "sample " << block.first_sample + static_cast<std::int64_t>(r) << " channel " << c;
      }
    }
    rows += block.sample_count;
  }
  EXPECT_EQ(rows, 199 * kBlock);
  EXPECT_EQ(source.counters().gaps, 1u);
  EXPECT_EQ(source.counters().missing_samples, kBlock);

  drivers::NetworkStimulusSink sink({.endpoint = bench.stimulus_endpoint()});
  ASSERT_TRUE(sink.start()) << sink.last_error();
  drivers::StimulusCommand command;
  command.trial = 0;
  command.stimulus.dimension_count = 2;
  command.stimulus.values = {90.0, 0.5};
  command.earliest_onset_sample = config.sample_offset + 3000;
  command.duration_samples = 300;
  const drivers::StimulusOnset onset = sink.deliver(command);
  ASSERT_TRUE(onset.delivered) << sink.last_error();
  EXPECT_GE(onset.onset_sample, config.sample_offset + 3000);
}

TEST(BenchServer, OpenEphysStreamRefusesFaultsOfTheOtherFormat) {
  auto config = bench_config(0.1);
  config.probe_format = ProbeFormat::kOpenEphys;
  config.heartbeat_endpoint = "tcp://127.0.0.1:*";
  config.faults.reorder.indices = {3};
  EXPECT_THROW(BenchServer{config}, std::invalid_argument);
  config.faults.reorder.indices.clear();
  config.heartbeat_endpoint.clear();  // a wildcard data port leaves nothing to derive it from
  EXPECT_THROW(BenchServer{config}, std::invalid_argument);
}

TEST(BenchServer, StreamIsExactlyTheSimulatedProbe) {
  const auto config = bench_config(0.1);
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  EXPECT_TRUE(r.ended);
  const auto reference = reference_samples(config);
  const std::size_t channels = config.simulation.stored_channels();
  ASSERT_EQ(r.blocks.size(), 100u);
  expect_true_samples(r, reference, channels);
  EXPECT_EQ(r.blocks.back().first_sample, 2970);
  EXPECT_EQ(r.counters.gaps + r.counters.malformed + r.counters.checksum_failures, 0u);
  EXPECT_EQ(bench.counters().blocks_generated, 100u);
}

TEST(BenchServer, StreamInfoDescribesTheSimulatedProbe) {
  auto config = bench_config(0.05);
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  drivers::NetworkProbeSource source({.endpoint = bench.probe_endpoint()});
  ASSERT_TRUE(source.start()) << source.last_error();
  const drivers::ProbeInfo& expected = bench.rig().probe->info();
  EXPECT_EQ(source.probe_id(), 2u);
  EXPECT_EQ(source.info().name, expected.name);
  EXPECT_EQ(source.info().stored_channels, 9u);
  EXPECT_EQ(source.info().neural_channels, 8u);
  EXPECT_TRUE(source.info().has_sync_word);
  EXPECT_EQ(source.info().sample_rate_hz, expected.sample_rate_hz);
  EXPECT_EQ(source.info().microvolts_per_bit, expected.microvolts_per_bit);
  ASSERT_EQ(source.info().geometry.sites.size(), 8u);
  EXPECT_EQ(source.info().geometry.sites[7].z_um, expected.geometry.sites[7].z_um);
}

TEST(BenchServer, DroppedBlocksArriveAsGapsAtTheRightSamples) {
  auto config = bench_config(0.1);
  config.faults.drop.indices = {5, 6, 20};
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(r.blocks.size(), 97u);
  EXPECT_EQ(r.counters.gaps, 2u);
  EXPECT_EQ(r.counters.missing_samples, 90);
  const auto gaps = of_kind(r, drivers::FaultKind::kGap);
  ASSERT_EQ(gaps.size(), 2u);
  EXPECT_EQ(gaps[0].first_sample, 150);
  EXPECT_EQ(gaps[0].end_sample, 210);
  EXPECT_EQ(gaps[1].first_sample, 600);
  EXPECT_EQ(gaps[1].end_sample, 630);
  EXPECT_EQ(bench.counters().dropped, 3u);
}

TEST(BenchServer, DuplicatedBlocksAreDroppedAndCounted) {
  auto config = bench_config(0.1);
  config.faults.duplicate.indices = {3, 40};
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(r.blocks.size(), 100u);
  EXPECT_EQ(r.counters.duplicates, 2u);
  EXPECT_EQ(r.counters.gaps, 0u);
  const auto dups = of_kind(r, drivers::FaultKind::kDuplicate);
  ASSERT_EQ(dups.size(), 2u);
  EXPECT_EQ(dups[0].first_sample, 90);
  EXPECT_EQ(dups[1].first_sample, 1200);
}

TEST(BenchServer, ReorderedBlocksAreNeverDeliveredBackwards) {
  auto config = bench_config(0.1);
  config.faults.reorder.indices = {4};
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(r.blocks.size(), 99u);  // block 4 came after block 5: too late to use
  EXPECT_EQ(r.counters.out_of_order, 1u);
  EXPECT_EQ(r.counters.gaps, 1u);
  const auto late = of_kind(r, drivers::FaultKind::kOutOfOrder);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].first_sample, 120);
  EXPECT_EQ(late[0].end_sample, 150);
  const auto gaps = of_kind(r, drivers::FaultKind::kGap);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_sample, 120);
  EXPECT_EQ(gaps[0].end_sample, 150);
}

TEST(BenchServer, CorruptedBlocksFailTheChecksumAndLaterDataArrives) {
  auto config = bench_config(0.1);
  config.faults.corrupt.indices = {7, 50};
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(r.blocks.size(), 98u);
  EXPECT_EQ(r.counters.checksum_failures, 2u);
  EXPECT_EQ(r.counters.gaps, 2u);
  EXPECT_EQ(r.blocks.back().first_sample, 2970);  // data after the corruption still arrives
  const auto gaps = of_kind(r, drivers::FaultKind::kGap);
  ASSERT_EQ(gaps.size(), 2u);
  EXPECT_EQ(gaps[0].first_sample, 210);
  EXPECT_EQ(gaps[1].first_sample, 1500);
  EXPECT_EQ(bench.counters().corrupted, 2u);
}

TEST(BenchServer, RandomFaultsAreDeterministicAndAllAccountedFor) {
  auto config = bench_config(0.3);
  config.faults.drop.rate = 0.05;
  config.faults.duplicate.rate = 0.05;
  config.faults.corrupt.rate = 0.05;
  // What the seed says must happen to each of the 300 blocks (a corrupted duplicate fails its
  // checksum twice, and is not a duplicate to the receiver).
  std::uint64_t dropped = 0, corrupted = 0, checksum_failures = 0, duplicates = 0;
  std::uint64_t lost_at_end = 0;  // lost blocks after the last good one: no gap can show them
  const std::uint64_t seed = config.simulation.seed;
  for (std::uint64_t b = 0; b < 300; ++b) {
    ++lost_at_end;
    if (config.faults.drop.hits(b, seed, fault_salt::kDrop)) {
      ++dropped;
      continue;
    }
    const bool dup = config.faults.duplicate.hits(b, seed, fault_salt::kDuplicate);
    if (config.faults.corrupt.hits(b, seed, fault_salt::kCorrupt)) {
      ++corrupted;
      checksum_failures += dup ? 2 : 1;
    } else {
      duplicates += dup ? 1 : 0;
      lost_at_end = 0;
    }
  }
  ASSERT_GT(dropped * corrupted * duplicates, 0u);
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(bench.counters().dropped, dropped);
  EXPECT_EQ(bench.counters().corrupted, corrupted);
  EXPECT_EQ(r.counters.duplicates, duplicates);
  EXPECT_EQ(r.counters.checksum_failures, checksum_failures);
  EXPECT_EQ(r.blocks.size(), 300u - dropped - corrupted);
  EXPECT_EQ(r.counters.missing_samples,
            static_cast<std::int64_t>(30 * (dropped + corrupted - lost_at_end)));
}

TEST(BenchServer, DisconnectIsCountedAndDataResumesWithAGap) {
  auto config = bench_config(0.5, drivers::Pace::kRealtime);
  config.faults.disconnect_at_s = 0.1;
  config.faults.disconnect_for_s = 0.15;
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  const Received r = receive_all(bench);
  EXPECT_TRUE(r.ended);
  expect_true_samples(r, reference_samples(config), config.simulation.stored_channels());
  EXPECT_EQ(bench.counters().disconnects, 1u);
  EXPECT_EQ(r.counters.disconnects, 1u);
  EXPECT_EQ(r.counters.reconnects, 1u);
  EXPECT_EQ(r.counters.gaps, 1u);
  // About 0.15 s at 30 kHz lost, plus the time the subscriber took to come back.
  EXPECT_GE(r.counters.missing_samples, 4000);
  const auto gaps = of_kind(r, drivers::FaultKind::kGap);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].first_sample, 3000);  // the disconnect hit the block that crosses 0.1 s
  const auto down = of_kind(r, drivers::FaultKind::kDisconnect);
  ASSERT_EQ(down.size(), 1u);
  EXPECT_EQ(down[0].first_sample, 3000);
  EXPECT_EQ(of_kind(r, drivers::FaultKind::kReconnect).size(), 1u);
  EXPECT_EQ(r.blocks.back().first_sample + 30, 15000);
}

// ---- Stimulus endpoint ------------------------------------------------------------------------

class BenchStimulus : public ::testing::Test {
 protected:
  void start(BenchServerConfig config) {
    config.simulation.seconds = 0.0;  // endless: the stream outlives the test
    config.simulation.pace = drivers::Pace::kRealtime;
    config.wait_for_subscriber = false;
    config.simulation.max_recorded_spikes = 100000;  // endless streams would reserve millions
    bench = std::make_unique<BenchServer>(config);
    ASSERT_TRUE(bench->start()) << bench->error();
    drivers::NetworkStimulusConfig c;
    c.endpoint = bench->stimulus_endpoint();
    c.reply_timeout_ms = 300;
    c.late_tolerance_samples = 30;
    sink = std::make_unique<drivers::NetworkStimulusSink>(c);
    ASSERT_TRUE(sink->start()) << sink->last_error();
  }
  drivers::StimulusCommand command(std::uint64_t trial, std::int64_t duration = 3000) {
    drivers::StimulusCommand c;
    c.trial = trial;
    c.stimulus = testing::grating(90.0, 1.0);
    // 20 ms ahead of the stream: comfortably meetable by the stimulator.
    c.earliest_onset_sample = bench->rig().subject->generated_until() + 600;
    c.duration_samples = duration;
    return c;
  }
  std::unique_ptr<BenchServer> bench;
  std::unique_ptr<drivers::NetworkStimulusSink> sink;
};

TEST_F(BenchStimulus, OnTimeOnsetIsTheRequestedSample) {
  start(bench_config(0));
  const auto cmd = command(1);
  const drivers::DeliveryResult r = sink->deliver_with_result(cmd);
  EXPECT_EQ(r.outcome, drivers::DeliveryOutcome::kDelivered) << sink->last_error();
  EXPECT_EQ(r.onset_sample, cmd.earliest_onset_sample);
  std::printf("stimulus command round trip over loopback: %.3f ms\n",
              static_cast<double>(r.round_trip_ns) * 1e-6);
}

TEST_F(BenchStimulus, LateOnsetIsFlaggedWithTheRealOnset) {
  auto config = bench_config(0);
  config.faults.late_onset_ms = 5.0;
  config.faults.late_onsets = FaultSelection{0.0, {0}};
  start(config);
  const auto first = command(1);
  const drivers::DeliveryResult late = sink->deliver_with_result(first);
  EXPECT_EQ(late.outcome, drivers::DeliveryOutcome::kLate) << sink->last_error();
  EXPECT_GE(late.onset_sample, first.earliest_onset_sample + 150);
  const auto second = command(2);
  const drivers::DeliveryResult on_time = sink->deliver_with_result(second);
  EXPECT_EQ(on_time.outcome, drivers::DeliveryOutcome::kDelivered) << sink->last_error();
  EXPECT_EQ(sink->fault_counters().late_onsets, 1u);
  std::array<drivers::FaultEvent, 4> events{};
  ASSERT_EQ(sink->drain_fault_events(events), 1u);
  EXPECT_EQ(events[0].kind, drivers::FaultKind::kLateOnset);
  EXPECT_EQ(events[0].trial, 1u);
  EXPECT_EQ(events[0].end_sample, late.onset_sample);
  // The subject really was stimulated at the reported (late) onset.
  const auto deadline = Clock::now() + kPatience;
  while (bench->rig().subject->generated_until() < late.onset_sample + 30 &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const GroundTruth truth = bench->rig().subject->ground_truth();
  ASSERT_GE(truth.trials.size(), 1u);
  EXPECT_EQ(truth.trials[0].onset_sample, late.onset_sample);
}

TEST_F(BenchStimulus, MissingOnsetTimesOutAndTheNextCommandWorks) {
  auto config = bench_config(0);
  config.faults.missing_onsets.indices = {0};
  start(config);
  const drivers::DeliveryResult missing = sink->deliver_with_result(command(1));
  EXPECT_EQ(missing.outcome, drivers::DeliveryOutcome::kMissing);
  EXPECT_NE(sink->last_error().find("no onset acknowledgement"), std::string::npos);
  const drivers::DeliveryResult next = sink->deliver_with_result(command(2));
  EXPECT_EQ(next.outcome, drivers::DeliveryOutcome::kDelivered) << sink->last_error();
  EXPECT_EQ(sink->fault_counters().missing_onsets, 1u);
  EXPECT_EQ(bench->counters().missing, 1u);
  EXPECT_EQ(bench->counters().delivered, 1u);
}

TEST_F(BenchStimulus, RefusedStimulusCarriesItsReason) {
  start(bench_config(0));
  const drivers::DeliveryResult r = sink->deliver_with_result(command(3, -5));
  EXPECT_EQ(r.outcome, drivers::DeliveryOutcome::kRefused);
  EXPECT_NE(sink->last_error().find("negative duration"), std::string::npos) << sink->last_error();
  EXPECT_EQ(sink->fault_counters().refused, 1u);
  EXPECT_EQ(sink->deliver_with_result(command(4)).outcome, drivers::DeliveryOutcome::kDelivered);
}

TEST_F(BenchStimulus, MalformedRequestsNeverStopTheEndpoint) {
  start(bench_config(0));
  void* context = zmq_ctx_new();
  void* dealer = zmq_socket(context, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
  ASSERT_EQ(zmq_connect(dealer, bench->stimulus_endpoint().c_str()), 0);
  std::vector<std::vector<std::byte>> junk = {
      {}, {std::byte{1}}, std::vector<std::byte>(2000, std::byte{0x54})};
  std::array<std::byte, drivers::wire::kStimulusCommandMaxBytes> buffer{};
  const std::size_t n = drivers::wire::encode_stimulus_command(9, command(9), buffer);
  std::vector<std::byte> corrupt(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
  corrupt[20] ^= std::byte{4};
  junk.push_back(corrupt);
  for (const auto& m : junk) ASSERT_GE(zmq_send(dealer, m.data(), m.size(), 0), 0);
  // A two-frame request is not a twinloop request either.
  ASSERT_GE(zmq_send(dealer, buffer.data(), n, ZMQ_SNDMORE), 0);
  ASSERT_GE(zmq_send(dealer, buffer.data(), n, 0), 0);
  const auto deadline = Clock::now() + kPatience;
  while (bench->counters().malformed_requests < junk.size() + 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(bench->counters().malformed_requests, junk.size() + 1);
  // A stream-info request is answered on the stimulus endpoint too.
  std::array<std::byte, drivers::wire::kStreamInfoRequestBytes> request{};
  ASSERT_EQ(drivers::wire::encode_stream_info_request(5, request), request.size());
  ASSERT_GE(zmq_send(dealer, request.data(), request.size(), 0), 0);
  std::vector<std::byte> info(1 << 16);
  zmq_pollitem_t item{dealer, 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq_poll(&item, 1, 5000), 1);
  const int got = zmq_recv(dealer, info.data(), info.size(), 0);
  ASSERT_GT(got, 0);
  drivers::wire::StreamInfo decoded;
  EXPECT_EQ(drivers::wire::decode_stream_info(
                std::span<const std::byte>(info.data(), static_cast<std::size_t>(got)), decoded),
            drivers::wire::DecodeError::kNone);
  EXPECT_EQ(decoded.probe.stored_channels, 9u);
  zmq_close(dealer);
  zmq_ctx_term(context);
  EXPECT_EQ(sink->deliver_with_result(command(10)).outcome, drivers::DeliveryOutcome::kDelivered);
}

// Block transit over loopback (bench send -> NetworkProbeSource read) with 1 ms blocks of a full
// Neuropixels probe (385 words): reported for the latency budget, loosely bounded here.
TEST(BenchServer, BlockTransitOverLoopbackIsSmall) {
  auto config = bench_config(1.0, drivers::Pace::kRealtime);
  config.simulation.channels = 384;
  config.simulation.unit_count = 16;
  BenchServer bench(config);
  ASSERT_TRUE(bench.start()) << bench.error();
  drivers::NetworkProbeSource source({.endpoint = bench.probe_endpoint()});
  ASSERT_TRUE(source.start()) << source.last_error();
  drivers::SampleBlock block;
  block.allocate(kBlock, source.info().stored_channels);
  std::vector<double> transit_us;
  const auto deadline = Clock::now() + kPatience;
  while (Clock::now() < deadline) {
    const drivers::ReadStatus s = source.read(block);
    if (s == drivers::ReadStatus::kEndOfStream) break;
    if (s != drivers::ReadStatus::kOk) continue;
    const drivers::BlockTiming& t = source.last_block_timing();
    // The first 100 ms are left out: blocks queue while start() allocates (a one-off cost).
    if (t.first_sample >= 3000) {
      transit_us.push_back(static_cast<double>(t.receive_time_ns - t.send_time_ns) * 1e-3);
    }
  }
  ASSERT_GE(transit_us.size(), 800u);
  std::sort(transit_us.begin(), transit_us.end());
  const double median = transit_us[transit_us.size() / 2];
  const double p99 = transit_us[transit_us.size() * 99 / 100];
  std::printf("block transit (385 x 30 int16, tcp loopback): median %.1f us, p99 %.1f us, n=%zu\n",
              median, p99, transit_us.size());
  RecordProperty("transit_median_us", std::to_string(median));
  RecordProperty("transit_p99_us", std::to_string(p99));
  EXPECT_LT(median, 5000.0);  // loose: a shared CI machine; the figure above is the result
  EXPECT_EQ(source.fault_counters().gaps, 0u);
}

}  // namespace
}  // namespace twinloop::hil

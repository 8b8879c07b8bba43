// Live acquisition latency: the simulated probe delivers 1 ms blocks at real time; the acquisition
// thread filters, references, detects and publishes each block's spike events into the lock-free
// queue. Reports, per block, the time from the block's arrival (the source's read() returned) to
// its events being published: p50 / p99 / max over the whole run (default 60 s), plus the
// processing cost alone measured on the same data at maximum pace as a baseline in the same run.
//
//   bench_live_latency [--seconds S (60)]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "twinloop/acquisition/acquisition_loop.hpp"
#include "twinloop/hil/simulated_rig.hpp"

namespace {

using namespace twinloop;

struct Figures {
  double p50_us = 0, p99_us = 0, max_us = 0;
  std::size_t blocks = 0;
  std::uint64_t events = 0, dropped = 0, gaps = 0;
};

Figures run(double seconds, drivers::Pace pace) {
  hil::SimulationConfig sim;
  sim.seed = 7;
  sim.seconds = seconds;
  sim.pace = pace;
  sim.block_samples = 30;
  hil::SimulatedRig rig = hil::make_simulated_rig(sim);
  acquisition::AcquisitionConfig config;
  config.block_samples = 30;
  config.latency_capacity = static_cast<std::size_t>(seconds * 1000) + 100;
  acquisition::AcquisitionLoop loop(*rig.probe, config);
  if (!loop.start()) {
    std::fprintf(stderr, "bench_live_latency: %s\n", loop.error().c_str());
    std::exit(1);
  }
  std::vector<acquisition::SpikeEvent> batch(1 << 14);
  Figures f;
  while (!loop.counters().finished) {
    f.events += loop.drain_events(batch);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  loop.join();
  while (std::size_t n = loop.drain_events(batch)) f.events += n;
  std::vector<std::uint32_t> ns(loop.block_latencies_ns().begin(), loop.block_latencies_ns().end());
  // The first blocks run before the noise estimate arms detection; keep only armed blocks.
  const std::size_t skip = std::min(ns.size(), static_cast<std::size_t>(1000));
  ns.erase(ns.begin(), ns.begin() + static_cast<std::ptrdiff_t>(skip));
  std::sort(ns.begin(), ns.end());
  if (!ns.empty()) {
    f.p50_us = ns[ns.size() / 2] / 1e3;
    f.p99_us = ns[std::min(ns.size() - 1, ns.size() * 99 / 100)] / 1e3;
    f.max_us = ns.back() / 1e3;
  }
  f.blocks = ns.size();
  f.dropped = loop.counters().events_dropped;
  f.gaps = loop.counters().gaps;
  return f;
}

void print(const char* label, const Figures& f) {
  std::printf(
      "  %-34s p50 %6.1f us  p99 %6.1f us  max %7.1f us  (%zu blocks, %llu events, "
      "%llu dropped, %llu gaps)\n",
      label, f.p50_us, f.p99_us, f.max_us, f.blocks, static_cast<unsigned long long>(f.events),
      static_cast<unsigned long long>(f.dropped), static_cast<unsigned long long>(f.gaps));
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 60.0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else {
      std::printf("usage: bench_live_latency [--seconds S (60)]\n");
      return arg == "--help" ? 0 : 2;
    }
  }
  if (seconds < 2) {
    std::fprintf(stderr, "bench_live_latency: --seconds must be at least 2\n");
    return 2;
  }
  std::printf("block arrival -> spike events published, 384 channels, 1 ms blocks (%s SIMD):\n",
              acquisition::active_simd_target());
  print("baseline: max pace (compute only)", run(std::min(seconds, 10.0), drivers::Pace::kMax));
  print("live: real-time pace", run(seconds, drivers::Pace::kRealtime));
  return 0;
}

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "src/progress.hpp"
#include "twinloop/daemon/commands.hpp"
#include "twinloop/drivers/spikeglx.hpp"
#include "twinloop/hil/simulated_rig.hpp"

namespace twinloop::daemon {

int simulate(const SimulateOptions& options) {
  hil::SimulationConfig config;
  config.seed = options.seed;
  config.unit_count = options.units;
  config.seconds = options.seconds;
  config.pace = options.pace;
  config.block_samples = 3000;  // 0.1 s: large writes; pacing still follows the sample clock
  try {
    hil::SimulatedRig rig = hil::make_simulated_rig(config);
    std::filesystem::create_directories(options.out);
    drivers::SpikeGlxWriter writer(options.out / "sim_g0_t0.imec0");
    if (!rig.probe->start()) {
      std::fprintf(stderr, "twinloop simulate: %s\n", rig.probe->last_error().c_str());
      return kExitRefused;
    }
    const drivers::ProbeInfo& info = rig.probe->info();
    drivers::SampleBlock block;
    block.allocate(config.block_samples, info.stored_channels);
    internal::Progress progress(!options.quiet);
    const auto started = std::chrono::steady_clock::now();
    const double total = options.seconds * info.sample_rate_hz;
    std::uint64_t rows = 0;
    for (;;) {
      const drivers::ReadStatus status = rig.probe->read(block);
      if (status == drivers::ReadStatus::kEndOfStream) break;
      if (status != drivers::ReadStatus::kOk) {
        std::fprintf(stderr, "twinloop simulate: probe read failed: %s\n",
                     rig.probe->last_error().c_str());
        return kExitRefused;
      }
      if (!writer.append(block)) {
        std::fprintf(stderr, "twinloop simulate: %s\n", writer.last_error().c_str());
        return kExitRefused;
      }
      rows += block.sample_count;
      progress.update(static_cast<double>(rows) / total,
                      std::to_string(static_cast<double>(rows) / info.sample_rate_hz).substr(0, 5) +
                          " s simulated");
    }
    writer.close();
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    progress.finish("done");
    rig.subject->write_ground_truth(options.out);
    const hil::GroundTruth truth = rig.subject->ground_truth();
    std::size_t detectable = 0;
    for (const hil::UnitTruth& u : truth.units) detectable += u.snr >= 5.0 ? 1 : 0;
    const double seconds = static_cast<double>(rows) / info.sample_rate_hz;
    std::printf(
        "simulated %.1f s, %zu channels + sync, %zu units (%zu with peak SNR >= 5), %zu "
        "spikes, seed %llu\n",
        seconds, info.neural_channels, truth.units.size(), detectable, truth.spikes.size(),
        static_cast<unsigned long long>(options.seed));
    std::printf("generator: %.1fx real time (%.2f s wall)\n", seconds / elapsed, elapsed);
    std::printf("wrote %s and %s\n", writer.bin_path().string().c_str(),
                writer.meta_path().string().c_str());
    std::printf("ground truth: %s/{spike_times.npy,spike_clusters.npy,cluster_info.tsv}\n",
                options.out.string().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "twinloop simulate: %s\n", e.what());
    return kExitRefused;
  }
  return kExitOk;
}

}  // namespace twinloop::daemon

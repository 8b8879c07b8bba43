// What the daemon tests that run `twinloop` as a user would have in common: a shell runner, a
// private temporary folder, and a protocol with short trials on a small simulated probe.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace twinloop::test_support {

struct ShellResult {
  int status = -1;     ///< exit status; the shell reports a child killed by signal N as 128 + N
  std::string output;  ///< stdout and stderr
  [[nodiscard]] int signal() const noexcept { return status > 128 ? status - 128 : 0; }
};

inline ShellResult shell(const std::string& command) {
  ShellResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe) != nullptr) result.output += buffer.data();
  const int raw = pclose(pipe);
  result.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return result;
}

/// An empty folder of this process's own, so parallel test runs never share files or sockets.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("twinloop_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Trials 0.25 s apart on a 64-channel simulated probe, so a dozen trials take a few seconds at
/// real-time pace (at maximum pace the simulated probe would outrun the trials). The posterior
/// threshold is out of reach: sessions run to `max_trials` unless stopped.
inline std::string short_trials_protocol(const std::string& name, int max_trials,
                                         bool with_lnp = true) {
  return "twinloop_protocol: 1\nname: " + name + R"(
subject: {id: SIM-T, species: Mus musculus}
probes:
  - {name: imec0, type: sim, channels: 64, sample_rate_hz: 30000, source: sim}
stimulus:
  kind: grating
  space:
    direction: {unit: deg, grid: {start: 0, stop: 315, step: 45}}
    contrast: {unit: fraction, values: [0.5, 1.0]}
timing: {baseline_ms: 50, stimulus_ms: 100, response_start_ms: 20, response_end_ms: 170,
         inter_trial_ms: 100}
safety: {amplitude_dimension: contrast, max_amplitude: 1.0, max_duty_cycle: 0.6,
         min_interval_ms: 200}
designer: {strategy: discriminate, validation_fraction: 0.1, decision_deadline_ms: 1000, seed: 7}
stop: {posterior_threshold: 0.999999, max_trials: )" +
         std::to_string(max_trials) + R"(}
hypotheses:
  - {name: tuned, family: direction_tuning}
)" + (with_lnp ? "  - {name: lnp, family: lnp}\n" : "") +
         R"(  - {name: flat, family: "null"}
)";
}

}  // namespace twinloop::test_support

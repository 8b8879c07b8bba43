// Internal: a one-line progress display on stderr for long work. Redraws in place on a terminal;
// elsewhere (logs, CI) prints a plain line at most every `plain_interval` seconds.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace twinloop::daemon::internal {

class Progress {
 public:
  explicit Progress(bool enabled, double plain_interval_s = 5.0)
      : enabled_(enabled), tty_(isatty(fileno(stderr)) != 0), plain_interval_s_(plain_interval_s) {}

  /// \param fraction  0..1, or negative when the total is unknown
  void update(double fraction, const std::string& detail) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (since < (tty_ ? 0.2 : plain_interval_s_)) return;
    last_ = now;
    draw(fraction, detail);
  }
  void finish(const std::string& detail) {
    if (!enabled_) return;
    draw(1.0, detail);
    if (tty_) std::fputc('\n', stderr);
  }

 private:
  void draw(double fraction, const std::string& detail) {
    std::string bar;
    if (fraction >= 0) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(fraction * kWidth + 0.5);
      bar = "[" + std::string(static_cast<std::size_t>(filled), '#') +
            std::string(static_cast<std::size_t>(kWidth - filled), '.') + "] " +
            std::to_string(static_cast<int>(fraction * 100 + 0.5)) + "% ";
    }
    std::fprintf(stderr, tty_ ? "\r\033[K%s%s" : "%s%s\n", bar.c_str(), detail.c_str());
    std::fflush(stderr);
  }

  bool enabled_;
  bool tty_;
  double plain_interval_s_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace twinloop::daemon::internal

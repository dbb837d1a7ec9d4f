#include "userspace/agent/host_cpu.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace vigil {

std::optional<double> HostCpu::sample() {
  std::ifstream in(path_);
  std::string line;
  if (!std::getline(in, line) || line.rfind("cpu ", 0) != 0) {
    return std::nullopt;
  }
  // cpu user nice system idle iowait irq softirq steal [guest guest_nice] (guest is in user).
  std::istringstream fields(line.substr(4));
  uint64_t v[8] = {};
  for (int i = 0; i < 8; ++i) {
    if (!(fields >> v[i])) {
      if (i < 4) {
        return std::nullopt;
      }
      break;
    }
  }
  uint64_t total = 0;
  for (uint64_t x : v) {
    total += x;
  }
  uint64_t idle = v[3] + v[4];
  uint64_t busy = total - idle;
  if (have_last_ && total <= last_total_) {
    // /proc/stat counts in USER_HZ ticks: two reads within one tick see the same total. Keep the
    // older reading so the next call measures over the longer window instead of returning nothing
    // again.
    return std::nullopt;
  }
  std::optional<double> out;
  if (have_last_) {
    // iowait is known to go backwards on some kernels, which can make busy shrink; clamp rather
    // than let an unsigned difference wrap into a huge percentage.
    uint64_t d_busy = busy > last_busy_ ? busy - last_busy_ : 0;
    double pct = 100.0 * static_cast<double>(d_busy) / static_cast<double>(total - last_total_);
    out = std::min(100.0, pct);
  }
  last_busy_ = busy;
  last_total_ = total;
  have_last_ = true;
  return out;
}

}  // namespace vigil

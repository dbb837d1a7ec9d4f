#include "userspace/agent/host_cpu.h"

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
  std::optional<double> out;
  if (have_last_ && total > last_total_) {
    out = 100.0 * static_cast<double>(busy - last_busy_) / static_cast<double>(total - last_total_);
  }
  last_busy_ = busy;
  last_total_ = total;
  have_last_ = true;
  return out;
}

}  // namespace vigil

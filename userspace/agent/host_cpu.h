// A minimal host CPU utilisation reader for dynamic sampling: the busy share of all CPUs between
// two reads of /proc/stat's first line. Private to the agent (full host metrics live elsewhere).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace vigil {

class HostCpu {
 public:
  explicit HostCpu(std::string path = "/proc/stat") : path_(std::move(path)) {}
  // Busy percent since the previous call; nullopt on the first call or if unreadable.
  std::optional<double> sample();

 private:
  std::string path_;
  uint64_t last_busy_ = 0;
  uint64_t last_total_ = 0;
  bool have_last_ = false;
};

}  // namespace vigil

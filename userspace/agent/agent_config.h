// The agent's run-time settings: what an operator sets in `--config FILE` (YAML) and what the
// aggregator pushes over AgentControl.applyConfig. Both paths produce an AgentSettings, which is
// validated as a whole before the agent applies it, so a bad config never half-applies.
// The keys are documented in docs/configuration.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil {

// Collect every low_interval while host CPU is under the threshold, every high_interval at or
// above it (a busy host gets finer resolution while it is interesting).
struct SamplingPolicy {
  bool enabled = false;
  double cpu_threshold_percent = 50;
  uint32_t low_interval_ms = 30000;
  uint32_t high_interval_ms = 5000;
};

struct AgentSettings {
  uint64_t version = 0;  // 0: built-in defaults and the local file
  uint32_t interval_ms = 10000;
  absl::flat_hash_set<std::string> disabled_collectors;
  std::string syscall_mode = "sampled";  // sampled | continuous | off
  double syscall_duty_cycle = 0.02;  // docs/syscall-sampling.md: about 0.3 % of redis throughput
  // Net collector's per-message hooks (UDP bytes): off | sampled | continuous. YAML only for
  // now (AgentConfig on the wire has no field for it).
  std::string net_message_mode = "off";
  std::vector<std::string> mask_patterns;  // regexes masked in cmdline
  std::vector<std::string> comm_filter;    // only these comms are reported when non-empty
  SamplingPolicy sampling;
  // Capacity of the per-process BPF maps that honour it (0: the collectors' defaults). Changing
  // it reloads those collectors; their maps are preallocated kernel memory.
  uint32_t max_processes = 0;
  // Ring buffer sizes of the process and net collectors (0: their defaults, 512 KiB and 1 MiB).
  // Local config only; changing them reloads that collector.
  uint32_t process_ring_bytes = 0;
  uint32_t net_ring_bytes = 0;
};

// Bounds of the ring sizes: a page up to 256 MiB (the kernel accepts up to ~2 GiB; an agent that
// needs more is losing events for another reason).
inline constexpr uint32_t kMinRingBytes = 4096;
inline constexpr uint32_t kMaxRingBytes = 256u << 20;

// Bounds of max_processes: a few processes (what `vigil hist` asks for) up to PID_MAX_LIMIT on
// 64-bit kernels (4194304, include/linux/threads.h), the most thread groups that can exist.
inline constexpr uint32_t kMinMaxProcesses = 64;
inline constexpr uint32_t kMaxMaxProcesses = 4194304;

// Checks every field; the error names the field and the bad value.
absl::Status validateSettings(const AgentSettings& s, const std::vector<std::string>& collectors);

// `current` with the pushed config applied (zero/empty wire fields keep the current value).
absl::StatusOr<AgentSettings> mergePushedConfig(const AgentSettings& current,
                                                wire::AgentConfig::Reader config);

// Reads a YAML config file over `defaults`. Unknown keys are errors (a typo must not be ignored).
absl::StatusOr<AgentSettings> loadSettingsFile(const std::string& path, AgentSettings defaults);
absl::StatusOr<AgentSettings> parseSettingsYaml(const std::string& text, AgentSettings defaults);

}  // namespace vigil

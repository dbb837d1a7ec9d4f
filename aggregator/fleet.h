// The aggregator's side of config push: the C++ form of a config to push to an agent
// (AgentConfigSpec), its JSON form for the HTTP API, and the result the agent reported.
// Ingest::pushConfig sends a spec over the AgentControl capability the agent handed over at
// registration; the fleet API (roles, audit, push to labels) builds on that call.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/vigil.capnp.h"

namespace vigil::aggregator {

struct DynamicSamplingSpec {
  bool enabled = false;
  double cpu_threshold_percent = 0;  // 0: agent's current value
  uint32_t low_interval_ms = 0;
  uint32_t high_interval_ms = 0;
};

// Zero/empty fields keep the agent's current value (wire semantics of AgentConfig).
struct AgentConfigSpec {
  uint64_t version = 0;  // 0: the aggregator assigns current version + 1
  uint32_t interval_ms = 0;
  std::vector<std::string> disabled_collectors;
  std::vector<std::string> enabled_collectors;
  std::string syscall_mode;
  double syscall_duty_cycle = 0;
  std::vector<std::string> mask_patterns;
  std::vector<std::string> comm_filter;
  std::optional<DynamicSamplingSpec> dynamic_sampling;
  uint32_t max_processes = 0;
  std::string net_message_mode;  // "": keep

  void toWire(wire::AgentConfig::Builder out) const;
};

struct ConfigPushResult {
  uint64_t version = 0;
  bool applied = false;
  bool delivered = false;  // false: the agent was not connected or did not answer
  std::string error;
};

// Parses the JSON body of POST /api/v1/agents/<id>/config. Keys: version, interval_ms,
// disabled_collectors, enabled_collectors, syscall_mode, syscall_duty_cycle, mask_patterns,
// comm_filter, dynamic_sampling {enabled, cpu_threshold_percent, low_interval_ms,
// high_interval_ms}, max_processes, net_message_mode. Unknown keys and wrong types are errors
// naming the key. Value ranges are the agent's to check (it answers FAILED with the reason); a
// batch push checks them first with checkConfigRanges so one typo does not fail a whole fleet.
absl::StatusOr<AgentConfigSpec> agentConfigFromJson(const std::string& body);

// The ranges every agent enforces, checked before a batch push: interval_ms 100..3600000,
// syscall_mode and net_message_mode names, syscall_duty_cycle in (0, 1].
absl::Status checkConfigRanges(const AgentConfigSpec& spec);

std::string configResultJson(const std::string& agent_id, const ConfigPushResult& r);

}  // namespace vigil::aggregator

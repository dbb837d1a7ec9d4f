#include "aggregator/fleet.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace vigil::aggregator {
namespace {

using nlohmann::json;

template <typename List>
void setStrings(List list, const std::vector<std::string>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    list.set(static_cast<unsigned>(i), values[i]);
  }
}

absl::Status typeError(const std::string& key, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("config key '", key, "' must be ", want));
}

absl::Status readStrings(const json& v, const std::string& key, std::vector<std::string>& out) {
  if (!v.is_array()) {
    return typeError(key, "a list of strings");
  }
  for (const auto& item : v) {
    if (!item.is_string()) {
      return typeError(key, "a list of strings");
    }
    out.push_back(item.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status readUint32(const json& v, const std::string& key, uint32_t& out) {
  if (!v.is_number_unsigned() || v.get<uint64_t>() > 0xffffffffULL) {
    return typeError(key, "a non-negative integer");
  }
  out = static_cast<uint32_t>(v.get<uint64_t>());
  return absl::OkStatus();
}

absl::Status readDouble(const json& v, const std::string& key, double& out) {
  if (!v.is_number()) {
    return typeError(key, "a number");
  }
  out = v.get<double>();
  return absl::OkStatus();
}

}  // namespace

void AgentConfigSpec::toWire(wire::AgentConfig::Builder out) const {
  out.setVersion(version);
  out.setIntervalMs(interval_ms);
  setStrings(out.initDisabledCollectors(disabled_collectors.size()), disabled_collectors);
  setStrings(out.initEnabledCollectors(enabled_collectors.size()), enabled_collectors);
  out.setSyscallMode(syscall_mode);
  out.setSyscallDutyCycle(syscall_duty_cycle);
  setStrings(out.initMaskPatterns(mask_patterns.size()), mask_patterns);
  setStrings(out.initCommFilter(comm_filter.size()), comm_filter);
  if (dynamic_sampling) {
    auto d = out.initDynamicSampling();
    d.setEnabled(dynamic_sampling->enabled);
    d.setCpuThresholdPercent(dynamic_sampling->cpu_threshold_percent);
    d.setLowIntervalMs(dynamic_sampling->low_interval_ms);
    d.setHighIntervalMs(dynamic_sampling->high_interval_ms);
  }
  out.setMaxProcesses(max_processes);
  out.setNetMessageMode(net_message_mode);
}

absl::StatusOr<AgentConfigSpec> agentConfigFromJson(const std::string& body) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError("config body is not valid JSON");
  }
  if (!doc.is_object()) {
    return absl::InvalidArgumentError("config body must be a JSON object");
  }
  AgentConfigSpec spec;
  for (const auto& [key, v] : doc.items()) {
    absl::Status st;
    if (key == "version") {
      if (!v.is_number_unsigned()) {
        return typeError(key, "a non-negative integer");
      }
      spec.version = v.get<uint64_t>();
    } else if (key == "interval_ms") {
      st = readUint32(v, key, spec.interval_ms);
    } else if (key == "disabled_collectors") {
      st = readStrings(v, key, spec.disabled_collectors);
    } else if (key == "enabled_collectors") {
      st = readStrings(v, key, spec.enabled_collectors);
    } else if (key == "syscall_mode") {
      if (!v.is_string()) {
        return typeError(key, "a string");
      }
      spec.syscall_mode = v.get<std::string>();
    } else if (key == "syscall_duty_cycle") {
      st = readDouble(v, key, spec.syscall_duty_cycle);
    } else if (key == "mask_patterns") {
      st = readStrings(v, key, spec.mask_patterns);
    } else if (key == "comm_filter") {
      st = readStrings(v, key, spec.comm_filter);
    } else if (key == "max_processes") {
      st = readUint32(v, key, spec.max_processes);
    } else if (key == "net_message_mode") {
      if (!v.is_string()) {
        return typeError(key, "a string");
      }
      spec.net_message_mode = v.get<std::string>();
    } else if (key == "dynamic_sampling") {
      if (!v.is_object()) {
        return typeError(key, "an object");
      }
      DynamicSamplingSpec d;
      for (const auto& [dk, dv] : v.items()) {
        std::string full = "dynamic_sampling." + dk;
        if (dk == "enabled") {
          if (!dv.is_boolean()) {
            return typeError(full, "true or false");
          }
          d.enabled = dv.get<bool>();
        } else if (dk == "cpu_threshold_percent") {
          st = readDouble(dv, full, d.cpu_threshold_percent);
        } else if (dk == "low_interval_ms") {
          st = readUint32(dv, full, d.low_interval_ms);
        } else if (dk == "high_interval_ms") {
          st = readUint32(dv, full, d.high_interval_ms);
        } else {
          return absl::InvalidArgumentError(absl::StrCat("unknown config key '", full, "'"));
        }
        if (!st.ok()) {
          return st;
        }
      }
      spec.dynamic_sampling = d;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown config key '", key, "'"));
    }
    if (!st.ok()) {
      return st;
    }
  }
  return spec;
}

absl::Status checkConfigRanges(const AgentConfigSpec& spec) {
  if (spec.interval_ms != 0 && (spec.interval_ms < 100 || spec.interval_ms > 3600000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'interval_ms' must be an integer in 100..3600000, got ", spec.interval_ms));
  }
  if (!spec.syscall_mode.empty() && spec.syscall_mode != "sampled" &&
      spec.syscall_mode != "continuous" && spec.syscall_mode != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "'syscall_mode' must be sampled, continuous or off, got '", spec.syscall_mode, "'"));
  }
  if (!spec.net_message_mode.empty() && spec.net_message_mode != "sampled" &&
      spec.net_message_mode != "continuous" && spec.net_message_mode != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("'net_message_mode' must be off, sampled or continuous, got '",
                     spec.net_message_mode, "'"));
  }
  if (spec.syscall_duty_cycle < 0 || spec.syscall_duty_cycle > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'syscall_duty_cycle' must be a number in (0, 1], got ", spec.syscall_duty_cycle));
  }
  return absl::OkStatus();
}

std::string configResultJson(const std::string& agent_id, const ConfigPushResult& r) {
  json out = {{"agent_id", agent_id},
              {"version", r.version},
              {"applied", r.applied},
              {"delivered", r.delivered},
              {"error", r.error}};
  return out.dump() + "\n";
}

}  // namespace vigil::aggregator

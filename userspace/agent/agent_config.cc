#include "userspace/agent/agent_config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace vigil {
namespace {

constexpr uint32_t kMinIntervalMs = 1000;
constexpr uint32_t kMaxIntervalMs = 3600 * 1000;

absl::Status checkInterval(const char* field, uint32_t ms) {
  if (ms < kMinIntervalMs || ms > kMaxIntervalMs) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must be between 1s and 1h, got ", ms, "ms"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> yamlDurationMs(const YAML::Node& n, const std::string& key) {
  std::string text = n.as<std::string>();
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    // A bare number is seconds.
    double secs = 0;
    std::istringstream in(text);
    if (!(in >> secs) || !in.eof()) {
      return absl::InvalidArgumentError(absl::StrCat(key, " (line ", n.Mark().line + 1, "): '",
                                                     text, "' is not a duration like 10s"));
    }
    d = absl::Seconds(secs);
  }
  return static_cast<uint32_t>(absl::ToInt64Milliseconds(d));
}

std::vector<std::string> yamlStrings(const YAML::Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (!n.IsSequence()) {
    throw YAML::RepresentationException(n.Mark(), key + " must be a list of strings");
  }
  for (const auto& item : n) {
    out.push_back(item.as<std::string>());
  }
  return out;
}

}  // namespace

absl::Status validateSettings(const AgentSettings& s, const std::vector<std::string>& collectors) {
  if (auto st = checkInterval("interval", s.interval_ms); !st.ok()) {
    return st;
  }
  for (const std::string& name : s.disabled_collectors) {
    if (std::find(collectors.begin(), collectors.end(), name) == collectors.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown collector '", name, "'; known: ", absl::StrJoin(collectors, ", ")));
    }
  }
  if (s.syscall_mode != "sampled" && s.syscall_mode != "continuous" && s.syscall_mode != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "syscall_mode must be sampled, continuous or off, got '", s.syscall_mode, "'"));
  }
  if (!(s.syscall_duty_cycle > 0 && s.syscall_duty_cycle <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("syscall_duty_cycle must be in (0, 1], got ", s.syscall_duty_cycle));
  }
  if (s.net_message_mode != "off" && s.net_message_mode != "sampled" &&
      s.net_message_mode != "continuous") {
    return absl::InvalidArgumentError(absl::StrCat(
        "net_message_mode must be off, sampled or continuous, got '", s.net_message_mode, "'"));
  }
  for (const std::string& p : s.mask_patterns) {
    try {
      std::regex re(p, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("mask pattern '", p, "' is not a valid regular expression: ", e.what()));
    }
  }
  for (const std::string& c : s.comm_filter) {
    if (c.empty() || c.size() > 15) {
      return absl::InvalidArgumentError(
          absl::StrCat("comm_filter entry '", c, "' must be 1..15 bytes (a task comm)"));
    }
  }
  if (s.max_processes != 0 &&
      (s.max_processes < kMinMaxProcesses || s.max_processes > kMaxMaxProcesses)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_processes must be 0 (collector default) or ", kMinMaxProcesses, "..",
                     kMaxMaxProcesses, ", got ", s.max_processes));
  }
  for (const auto& [key, bytes] :
       {std::pair<const char*, uint32_t>{"process_ring_bytes", s.process_ring_bytes},
        {"net_ring_bytes", s.net_ring_bytes}}) {
    if (bytes != 0 && (bytes < kMinRingBytes || bytes > kMaxRingBytes || (bytes & (bytes - 1)))) {
      return absl::InvalidArgumentError(
          absl::StrCat(key, " must be 0 (collector default) or a power of two in ", kMinRingBytes,
                       "..", kMaxRingBytes, ", got ", bytes));
    }
  }
  if (s.sampling.enabled) {
    if (!(s.sampling.cpu_threshold_percent > 0 && s.sampling.cpu_threshold_percent < 100)) {
      return absl::InvalidArgumentError(
          absl::StrCat("dynamic_sampling.cpu_threshold_percent must be in (0, 100), got ",
                       s.sampling.cpu_threshold_percent));
    }
    if (auto st = checkInterval("dynamic_sampling.low_interval", s.sampling.low_interval_ms);
        !st.ok()) {
      return st;
    }
    if (auto st = checkInterval("dynamic_sampling.high_interval", s.sampling.high_interval_ms);
        !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentSettings> mergePushedConfig(const AgentSettings& current,
                                                wire::AgentConfig::Reader config) {
  AgentSettings s = current;
  s.version = config.getVersion();
  if (config.getIntervalMs() != 0) {
    s.interval_ms = config.getIntervalMs();
  }
  for (auto name : config.getDisabledCollectors()) {
    s.disabled_collectors.insert(name.cStr());
  }
  for (auto name : config.getEnabledCollectors()) {
    std::string n = name.cStr();
    bool also_disabled = false;
    for (auto d : config.getDisabledCollectors()) {
      also_disabled |= d == name;
    }
    if (also_disabled) {
      return absl::InvalidArgumentError(
          absl::StrCat("collector '", n, "' is both enabled and disabled"));
    }
    s.disabled_collectors.erase(n);
  }
  if (config.hasSyscallMode() && config.getSyscallMode().size() > 0) {
    s.syscall_mode = config.getSyscallMode().cStr();
  }
  if (config.getSyscallDutyCycle() != 0) {
    s.syscall_duty_cycle = config.getSyscallDutyCycle();
  }
  if (config.getMaskPatterns().size() > 0) {
    s.mask_patterns.clear();
    for (auto p : config.getMaskPatterns()) {
      s.mask_patterns.push_back(p.cStr());
    }
  }
  if (config.getCommFilter().size() > 0) {
    s.comm_filter.clear();
    for (auto c : config.getCommFilter()) {
      s.comm_filter.push_back(c.cStr());
    }
  }
  if (config.getMaxProcesses() != 0) {
    s.max_processes = config.getMaxProcesses();
  }
  if (config.hasNetMessageMode() && config.getNetMessageMode().size() > 0) {
    s.net_message_mode = config.getNetMessageMode().cStr();
  }
  if (config.hasDynamicSampling()) {
    auto d = config.getDynamicSampling();
    s.sampling.enabled = d.getEnabled();
    if (d.getCpuThresholdPercent() != 0) {
      s.sampling.cpu_threshold_percent = d.getCpuThresholdPercent();
    }
    if (d.getLowIntervalMs() != 0) {
      s.sampling.low_interval_ms = d.getLowIntervalMs();
    }
    if (d.getHighIntervalMs() != 0) {
      s.sampling.high_interval_ms = d.getHighIntervalMs();
    }
  }
  return s;
}

absl::StatusOr<AgentSettings> parseSettingsYaml(const std::string& text, AgentSettings s) {
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsNull()) {
      return s;
    }
    if (!root.IsMap()) {
      return absl::InvalidArgumentError("config must be a YAML mapping of keys");
    }
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      if (key == "version") {
        s.version = v.as<uint64_t>();
      } else if (key == "interval") {
        auto ms = yamlDurationMs(v, key);
        if (!ms.ok()) {
          return ms.status();
        }
        s.interval_ms = *ms;
      } else if (key == "disabled_collectors") {
        s.disabled_collectors.clear();
        for (auto& n : yamlStrings(v, key)) {
          s.disabled_collectors.insert(n);
        }
      } else if (key == "syscall_mode") {
        s.syscall_mode = v.as<std::string>();
      } else if (key == "syscall_duty_cycle") {
        s.syscall_duty_cycle = v.as<double>();
      } else if (key == "net_message_mode") {
        s.net_message_mode = v.as<std::string>();
      } else if (key == "mask_patterns") {
        s.mask_patterns = yamlStrings(v, key);
      } else if (key == "comm_filter") {
        s.comm_filter = yamlStrings(v, key);
      } else if (key == "max_processes") {
        s.max_processes = v.as<uint32_t>();
      } else if (key == "process_ring_bytes") {
        s.process_ring_bytes = v.as<uint32_t>();
      } else if (key == "net_ring_bytes") {
        s.net_ring_bytes = v.as<uint32_t>();
      } else if (key == "dynamic_sampling") {
        if (!v.IsMap()) {
          return absl::InvalidArgumentError(
              absl::StrCat("dynamic_sampling (line ", v.Mark().line + 1, ") must be a mapping"));
        }
        s.sampling.enabled = true;
        for (const auto& dkv : v) {
          std::string dk = dkv.first.as<std::string>();
          if (dk == "enabled") {
            s.sampling.enabled = dkv.second.as<bool>();
          } else if (dk == "cpu_threshold_percent") {
            s.sampling.cpu_threshold_percent = dkv.second.as<double>();
          } else if (dk == "low_interval" || dk == "high_interval") {
            auto ms = yamlDurationMs(dkv.second, "dynamic_sampling." + dk);
            if (!ms.ok()) {
              return ms.status();
            }
            (dk == "low_interval" ? s.sampling.low_interval_ms : s.sampling.high_interval_ms) = *ms;
          } else {
            return absl::InvalidArgumentError(absl::StrCat(
                "unknown key dynamic_sampling.", dk, " (line ", dkv.first.Mark().line + 1, ")"));
          }
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown key '", key, "' (line ",
                                                       kv.first.Mark().line + 1,
                                                       "); see docs/configuration.md"));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML error at line ", e.mark.line + 1, ": ", e.msg));
  }
  return s;
}

absl::StatusOr<AgentSettings> loadSettingsFile(const std::string& path, AgentSettings defaults) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  auto s = parseSettingsYaml(buf.str(), std::move(defaults));
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.status().message()));
  }
  return s;
}

}  // namespace vigil

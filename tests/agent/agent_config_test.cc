// Agent settings: the YAML file, pushed configs merged over the current settings, and validation
// that names the bad field.
#include "userspace/agent/agent_config.h"

#include <capnp/message.h>

#include <chrono>
#include <optional>

#include <catch2/catch.hpp>

#include "userspace/agent/host_cpu.h"
#include "userspace/agent/uplink.h"

namespace vigil {
namespace {

const std::vector<std::string> kCollectors = {"sched", "syscalls"};

TEST_CASE("a YAML config sets every key") {
  auto s = parseSettingsYaml(R"(
interval: 5s
disabled_collectors: [syscalls]
syscall_mode: continuous
syscall_duty_cycle: 0.5
mask_patterns: ["token=\\S+"]
comm_filter: [nginx, redis-server]
max_processes: 65536
process_ring_bytes: 262144
net_ring_bytes: 2097152
dynamic_sampling:
  cpu_threshold_percent: 70
  low_interval: 30s
  high_interval: 2s
)",
                             AgentSettings{});
  REQUIRE(s.ok());
  CHECK(s->interval_ms == 5000);
  CHECK(s->disabled_collectors.contains("syscalls"));
  CHECK(s->syscall_mode == "continuous");
  CHECK(s->syscall_duty_cycle == 0.5);
  CHECK(s->mask_patterns == std::vector<std::string>{"token=\\S+"});
  CHECK(s->comm_filter.size() == 2);
  CHECK(s->max_processes == 65536);
  CHECK(s->process_ring_bytes == 262144);
  CHECK(s->net_ring_bytes == 2097152);
  CHECK(s->sampling.enabled);
  CHECK(s->sampling.cpu_threshold_percent == 70);
  CHECK(s->sampling.low_interval_ms == 30000);
  CHECK(s->sampling.high_interval_ms == 2000);
  CHECK(validateSettings(*s, kCollectors).ok());
}

TEST_CASE("a YAML config with an unknown key or a bad value is refused with its line") {
  auto unknown = parseSettingsYaml("interval: 5s\nintervall: 3s\n", AgentSettings{});
  REQUIRE_FALSE(unknown.ok());
  CHECK(std::string(unknown.status().message()) ==
        "unknown key 'intervall' (line 2); see docs/configuration.md");
  auto bad = parseSettingsYaml("interval: soon\n", AgentSettings{});
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("'soon' is not a duration") != std::string::npos);
  auto broken = parseSettingsYaml("interval: [1\n", AgentSettings{});
  CHECK_FALSE(broken.ok());
}

TEST_CASE("validation names the bad field") {
  AgentSettings s;
  s.interval_ms = 500;
  CHECK(std::string(validateSettings(s, kCollectors).message()) ==
        "interval must be between 1s and 1h, got 500ms");
  s = AgentSettings{};
  s.disabled_collectors.insert("nope");
  CHECK(std::string(validateSettings(s, kCollectors).message()) ==
        "unknown collector 'nope'; known: sched, syscalls");
  s = AgentSettings{};
  s.mask_patterns = {"("};
  CHECK(std::string(validateSettings(s, kCollectors).message()).find("mask pattern '('") == 0);
  s = AgentSettings{};
  s.syscall_mode = "sometimes";
  CHECK_FALSE(validateSettings(s, kCollectors).ok());
  s = AgentSettings{};
  s.sampling.enabled = true;
  s.sampling.cpu_threshold_percent = 150;
  CHECK_FALSE(validateSettings(s, kCollectors).ok());
  s = AgentSettings{};
  s.max_processes = 10;
  CHECK(std::string(validateSettings(s, kCollectors).message()) ==
        "max_processes must be 0 (collector default) or 64..4194304, got 10");
  s.max_processes = 4194305;
  CHECK_FALSE(validateSettings(s, kCollectors).ok());
  s.max_processes = 4194304;
  CHECK(validateSettings(s, kCollectors).ok());
  s = AgentSettings{};
  s.net_ring_bytes = 3 << 20;
  CHECK(std::string(validateSettings(s, kCollectors).message()) ==
        "net_ring_bytes must be 0 (collector default) or a power of two in 4096..268435456, got "
        "3145728");
  s.net_ring_bytes = 0;
  s.process_ring_bytes = 2048;
  CHECK(std::string(validateSettings(s, kCollectors).message()).find("process_ring_bytes") == 0);
  s.process_ring_bytes = 1u << 28;
  CHECK(validateSettings(s, kCollectors).ok());
}

TEST_CASE("net_message_mode defaults to off, is set from YAML and validated") {
  CHECK(AgentSettings{}.net_message_mode == "off");
  auto s = parseSettingsYaml("net_message_mode: sampled\n", AgentSettings{});
  REQUIRE(s.ok());
  CHECK(s->net_message_mode == "sampled");
  CHECK(validateSettings(*s, kCollectors).ok());
  s->net_message_mode = "always";
  CHECK(std::string(validateSettings(*s, kCollectors).message()) ==
        "net_message_mode must be off, sampled or continuous, got 'always'");
}

TEST_CASE("a pushed config changes only the fields it sets") {
  AgentSettings current;
  current.comm_filter = {"nginx"};
  current.disabled_collectors = {"syscalls"};
  capnp::MallocMessageBuilder msg;
  auto c = msg.initRoot<wire::AgentConfig>();
  c.setVersion(3);
  c.setIntervalMs(1000);
  c.initEnabledCollectors(1).set(0, "syscalls");
  c.initDisabledCollectors(1).set(0, "sched");
  auto d = c.initDynamicSampling();
  d.setEnabled(true);
  d.setHighIntervalMs(2000);
  auto s = mergePushedConfig(current, c.asReader());
  REQUIRE(s.ok());
  CHECK(s->max_processes == 0);  // not set: kept
  c.setMaxProcesses(100000);
  CHECK(mergePushedConfig(current, c.asReader())->max_processes == 100000);
  CHECK(s->net_message_mode == "off");  // not set: kept
  c.setNetMessageMode("continuous");
  CHECK(mergePushedConfig(current, c.asReader())->net_message_mode == "continuous");
  CHECK(s->version == 3);
  CHECK(s->interval_ms == 1000);
  CHECK(s->disabled_collectors == absl::flat_hash_set<std::string>{"sched"});
  CHECK(s->comm_filter == std::vector<std::string>{"nginx"});
  CHECK(s->sampling.enabled);
  CHECK(s->sampling.high_interval_ms == 2000);
  CHECK(s->sampling.low_interval_ms == 30000);
}

TEST_CASE("rendezvous order is stable, spreads nodes, and moves only a removed shard's nodes") {
  std::vector<std::string> three = {"10.0.0.1:9470", "10.0.0.2:9470", "10.0.0.3:9470"};
  std::vector<std::string> two = {"10.0.0.1:9470", "10.0.0.2:9470"};
  std::map<std::string, int> load;
  int moved_unnecessarily = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string node = "node-" + std::to_string(i);
    auto order = rendezvousOrder(three, node);
    CHECK(order == rendezvousOrder(three, node));
    load[order[0]]++;
    auto without = rendezvousOrder(two, node);
    if (order[0] != "10.0.0.3:9470" && without[0] != order[0]) {
      moved_unnecessarily++;
    }
    if (order[0] == "10.0.0.3:9470") {
      CHECK(without[0] == order[1]);  // its fallback is the next in its own order
    }
  }
  CHECK(moved_unnecessarily == 0);
  for (auto& [addr, n] : load) {
    CHECK(n > 850);  // ~1000 each
    CHECK(n < 1150);
  }
}

TEST_CASE("host CPU percent comes from two reads of /proc/stat") {
  HostCpu cpu;
  CHECK_FALSE(cpu.sample());
  // /proc/stat advances in 10 ms ticks; burn CPU until a later read sees at least one tick (a fast
  // machine can finish a fixed loop inside one tick, which made this test flaky).
  std::optional<double> p;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!p && std::chrono::steady_clock::now() < deadline) {
    volatile uint64_t x = 0;
    for (int i = 0; i < 1000000; ++i) {
      x = x + i;
    }
    p = cpu.sample();
  }
  REQUIRE(p);
  CHECK(*p >= 0);
  CHECK(*p <= 100);
}

}  // namespace
}  // namespace vigil

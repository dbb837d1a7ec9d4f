// The aggregator's transport-side pieces: config JSON → AgentConfigSpec → wire, the tokens file,
// and the Store's liveness state that the alert engine reads.
#include "aggregator/fleet.h"

#include <capnp/message.h>

#include <catch2/catch.hpp>

#include "aggregator/auth.h"
#include "aggregator/store.h"

namespace vigil::aggregator {
namespace {

TEST_CASE("a JSON config becomes a wire AgentConfig") {
  auto spec = agentConfigFromJson(R"({"version": 4, "interval_ms": 1000,
      "disabled_collectors": ["syscalls"], "enabled_collectors": ["sched"],
      "mask_patterns": ["pw=\\S+"], "comm_filter": ["nginx"], "syscall_mode": "off",
      "dynamic_sampling": {"enabled": true, "cpu_threshold_percent": 60,
                           "low_interval_ms": 30000, "high_interval_ms": 5000},
      "max_processes": 65536, "net_message_mode": "sampled"})");
  REQUIRE(spec.ok());
  capnp::MallocMessageBuilder msg;
  auto c = msg.initRoot<wire::AgentConfig>();
  spec->toWire(c);
  CHECK(c.getVersion() == 4);
  CHECK(c.getIntervalMs() == 1000);
  REQUIRE(c.getDisabledCollectors().size() == 1);
  CHECK(c.getDisabledCollectors()[0] == "syscalls");
  CHECK(c.getEnabledCollectors()[0] == "sched");
  CHECK(c.getMaskPatterns()[0] == "pw=\\S+");
  CHECK(c.getCommFilter()[0] == "nginx");
  CHECK(c.getSyscallMode() == "off");
  CHECK(c.hasDynamicSampling());
  CHECK(c.getDynamicSampling().getCpuThresholdPercent() == 60);
  CHECK(c.getDynamicSampling().getHighIntervalMs() == 5000);
  CHECK(c.getMaxProcesses() == 65536);
  CHECK(c.getNetMessageMode() == "sampled");
}

TEST_CASE("a batch push checks the ranges every agent enforces before contacting any") {
  auto ok = agentConfigFromJson(R"({"interval_ms": 5000, "syscall_duty_cycle": 0.5,
      "syscall_mode": "continuous", "net_message_mode": "off"})");
  REQUIRE(ok.ok());
  CHECK(checkConfigRanges(*ok).ok());
  CHECK(checkConfigRanges(AgentConfigSpec{}).ok());  // nothing set: nothing to check
  auto check = [](const char* body) {
    auto spec = agentConfigFromJson(body);
    REQUIRE(spec.ok());
    return std::string(checkConfigRanges(*spec).message());
  };
  CHECK(check(R"({"interval_ms": 5})") ==
        "'interval_ms' must be an integer in 100..3600000, got 5");
  CHECK(check(R"({"syscall_mode": "sampeld"})") ==
        "'syscall_mode' must be sampled, continuous or off, got 'sampeld'");
  CHECK(check(R"({"net_message_mode": "all"})") ==
        "'net_message_mode' must be off, sampled or continuous, got 'all'");
  CHECK(check(R"({"syscall_duty_cycle": 1.5})") ==
        "'syscall_duty_cycle' must be a number in (0, 1], got 1.5");
}

TEST_CASE("bad config JSON is refused naming the key") {
  CHECK(std::string(agentConfigFromJson("{").status().message()) ==
        "config body is not valid JSON");
  CHECK(std::string(agentConfigFromJson("[]").status().message()) ==
        "config body must be a JSON object");
  CHECK(std::string(agentConfigFromJson(R"({"intervall": 1})").status().message()) ==
        "unknown config key 'intervall'");
  CHECK(std::string(agentConfigFromJson(R"({"interval_ms": -5})").status().message()) ==
        "config key 'interval_ms' must be a non-negative integer");
  CHECK(std::string(agentConfigFromJson(R"({"comm_filter": [1]})").status().message()) ==
        "config key 'comm_filter' must be a list of strings");
  CHECK(std::string(agentConfigFromJson(R"({"dynamic_sampling": {"x": 1}})").status().message()) ==
        "unknown config key 'dynamic_sampling.x'");
}

TEST_CASE("the tokens file maps agent ids to tokens and rejects mistakes with their line") {
  auto flat = parseTokensYaml("node-a: s3cret\nnode-b: other\n");
  REQUIRE(flat.ok());
  CHECK(flat->at("node-a") == "s3cret");
  auto nested = parseTokensYaml("agents:\n  node-a: s3cret\n");
  REQUIRE(nested.ok());
  CHECK(nested->size() == 1);
  auto dup = parseTokensYaml("node-a: x\nnode-a: y\n");
  REQUIRE_FALSE(dup.ok());
  CHECK(std::string(dup.status().message()) == "line 2: agent id 'node-a' is listed twice");
  auto empty = parseTokensYaml("node-a: \"\"\n");
  CHECK_FALSE(empty.ok());
  CHECK(tokenEquals("abc", "abc"));
  CHECK_FALSE(tokenEquals("abc", "abd"));
  CHECK_FALSE(tokenEquals("abc", "abcd"));
}

TEST_CASE("the store lists offline agents with the time and reason they went offline") {
  Store store;
  AgentInfo a;
  a.agent_id = "a";
  a.node_name = "node-a";
  AgentInfo b;
  b.agent_id = "b";
  store.agentConnected(a, 1, 1000);
  store.agentConnected(b, 1, 1000);
  CHECK(store.offlineAgents().empty());
  // b is silent for longer than two heartbeats; a keeps sending.
  store.heartbeat("a", 5000);
  auto gone = store.expireSilent(6000, 4000);
  REQUIRE(gone == std::vector<std::string>{"b"});
  auto offline = store.offlineAgents();
  REQUIRE(offline.size() == 1);
  CHECK(offline[0].agent_id == "b");
  CHECK(offline[0].since_ns == 6000);
  CHECK(offline[0].reason == "heartbeat_missed");
  // A reconnect of a while its old connection is still closing keeps it online.
  store.agentConnected(a, 1, 7000);
  store.agentDisconnected("a", 7100);
  CHECK(store.agents().at("a")->online);
  store.agentDisconnected("a", 8000);
  offline = store.offlineAgents();
  REQUIRE(offline.size() == 2);
  for (const auto& o : offline) {
    if (o.agent_id == "a") {
      CHECK(o.reason == "connection_lost");
      CHECK(o.since_ns == 8000);
      CHECK(o.node_name == "node-a");
    }
  }
  // Heartbeats resuming on a live connection bring b back.
  store.heartbeat("b", 9000);
  CHECK(store.agents().at("b")->online);
}

TEST_CASE("a late frame of an older boot epoch does not roll back the latest state") {
  Store store;
  Snapshot now;
  now.agent.agent_id = "a";
  now.boot_epoch = 20;
  now.seq = 3;
  now.interval_ms = 1000;
  store.apply(now, 100);
  Snapshot old;
  old.agent.agent_id = "a";
  old.boot_epoch = 10;
  old.seq = 9;
  old.interval_ms = 5000;
  store.apply(old, 200);
  const AgentRecord& r = *store.agents().at("a");
  CHECK(r.boot_epoch == 20);
  CHECK(r.last_seq == 3);
  CHECK(r.interval_ms == 1000);
  CHECK(r.frames == 2);
}

}  // namespace
}  // namespace vigil::aggregator

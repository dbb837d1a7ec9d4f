// The aggregator's view of the fleet: one entry per agent with its identity, liveness, delivery
// position (boot epoch, last accepted seq) and the latest state it reported. Frames are applied
// in sequence order; the store renders everything as Prometheus text for GET /metrics.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "capnp/snapshot.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator {

struct StoreOptions {
  // How long an exited or vanished process stays visible after its last report.
  int64_t process_ttl_ns = 5LL * 60 * 1000000000;
  // /metrics shows at most this many processes per agent: the busiest by CPU time over the last
  // interval (ties: by total CPU time). The rest are counted in
  // vigil_aggregator_processes_not_exposed. 0 means no limit.
  size_t max_processes_per_agent = 200;
};

struct AgentRecord {
  AgentInfo info;
  uint64_t boot_epoch = 0;
  uint64_t last_seq = 0;
  bool online = false;
  int64_t last_seen_ns = 0;
  int64_t connected_since_ns = 0;
  uint64_t config_version = 0;
  uint64_t frames = 0;
  // Liveness (transport): open connections, and when/why the agent went offline.
  int connections = 0;
  int64_t offline_since_ns = 0;  // 0 while online
  std::string offline_reason;    // connection_lost | heartbeat_missed | aggregator_restart

  struct Process {
    ProcessStats stats;
    int64_t last_seen_ns = 0;
    uint64_t cpu_delta_ns = 0;  // CPU time over the agent's last interval
  };
  absl::flat_hash_map<uint32_t, Process> processes;
  std::vector<MetricSample> host;
  std::vector<MetricSample> self;
  std::vector<HistogramSample> histograms;
  std::vector<ContainerStats> containers;
  std::vector<CollectorState> collectors;
  double syscall_duty_cycle = 0;
  uint32_t interval_ms = 0;
};

// An agent the aggregator considers offline, for the alert engine's agent-offline rules.
struct OfflineAgent {
  std::string agent_id;
  std::string node_name;
  int64_t since_ns = 0;
  int64_t last_seen_ns = 0;
  std::string reason;
};

class Store {
 public:
  explicit Store(StoreOptions options = {}) : options_(options) {}

  // Marks an agent connected; returns the last seq accepted for (agent, boot_epoch).
  uint64_t agentConnected(const AgentInfo& info, uint64_t boot_epoch, int64_t now_ns);
  void agentDisconnected(const std::string& agent_id, int64_t now_ns);
  void heartbeat(const std::string& agent_id, int64_t now_ns);

  // Marks online agents silent for longer than max_silence_ns offline (reason heartbeat_missed);
  // returns the ids that went offline in this call.
  std::vector<std::string> expireSilent(int64_t now_ns, int64_t max_silence_ns);
  // Agents currently offline, with the time and reason they went offline.
  std::vector<OfflineAgent> offlineAgents() const;
  void setConfigVersion(const std::string& agent_id, uint64_t version);

  // Applies a frame's content. The caller has checked it is not a duplicate (the ingest log
  // dedupes on (agent, epoch, seq) before anything reaches the store).
  // notify=false leaves out the frame listener (the caller feeds it itself, e.g. on the ingest
  // commit thread).
  void apply(const Snapshot& frame, int64_t now_ns, bool notify = true);

  // agent_level_only: just the per-agent families the aggregator itself produces (vigil_agent_up,
  // _last_seen_, _info, _frames_received_total); the alert engine records those every tick,
  // while everything agents report is already in the series store.
  void render(MetricSink& out, int64_t now_ns, bool agent_level_only = false);

  // Called with every applied frame (after the store took it): the series store listens here.
  void setFrameListener(std::function<void(const Snapshot&)> fn) { listener_ = std::move(fn); }
  const std::function<void(const Snapshot&)>& frameListener() const { return listener_; }

  const absl::flat_hash_map<std::string, std::unique_ptr<AgentRecord>>& agents() const {
    return agents_;
  }

 private:
  AgentRecord& record(const std::string& agent_id);

  StoreOptions options_;
  absl::flat_hash_map<std::string, std::unique_ptr<AgentRecord>> agents_;
  std::function<void(const Snapshot&)> listener_;
};

}  // namespace vigil::aggregator

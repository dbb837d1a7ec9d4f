// vigil-agent's core: owns the collectors, runs the collection loop on the event loop, encodes
// each Snapshot into a Frame, hands it to the Uplink, and serves the local HTTP endpoints
// (/metrics with the latest snapshot and the agent's own counters, /healthz).
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/snapshot.h"
#include "userspace/agent/uplink.h"
#include "userspace/attribution/attributor.h"
#include "userspace/collectors/collector.h"
#include "userspace/common/http_server.h"
#include "userspace/masking/masker.h"

namespace vigil {

struct AgentOptions {
  std::vector<std::string> aggregators = {"127.0.0.1:9470"};
  std::string http_addr = "127.0.0.1";
  uint16_t http_port = 9472;
  kj::Duration interval = 10 * kj::SECONDS;
  std::string node_name;  // default: host name
  std::string agent_id;   // default: node name
  Labels labels;
  std::string token;
  std::string ready_file;  // written once the HTTP port is bound: "http_port=N\n"
  size_t max_queue_bytes = 64 << 20;
  kj::Duration reconnect_max = 30 * kj::SECONDS;
  bool verbose = false;
};

class Agent {
 public:
  // Loads the collectors and binds the HTTP port. Fails with one actionable message.
  static absl::StatusOr<std::unique_ptr<Agent>> create(AgentOptions options,
                                                       kj::AsyncIoContext& io);
  ~Agent();

  // Runs until the returned promise is dropped.
  kj::Promise<void> run();

  uint16_t httpPort() const { return http_port_; }

 private:
  Agent(AgentOptions options, kj::AsyncIoContext& io, uint64_t boot_epoch);

  kj::Promise<void> collectLoop(kj::TimePoint next);
  void collectOnce();
  kj::Promise<HttpReply> handleHttp(const HttpRequest& request);
  std::string renderMetrics(bool open_metrics);
  void appendSelfMetrics(std::vector<MetricSample>& out);

  AgentOptions options_;
  kj::AsyncIoContext& io_;
  CollectorContext context_;
  CollectorConfig collector_config_;
  std::vector<std::unique_ptr<Collector>> collectors_;
  std::vector<CollectorState> disabled_collectors_;
  std::unique_ptr<Attributor> attributor_;  // null when no cgroup2 mount was found
  std::unique_ptr<Masker> masker_;
  uint64_t boot_epoch_;  // before uplink_, which is built from it
  Uplink uplink_;
  kj::Own<HttpServer> http_;
  kj::Own<kj::ConnectionReceiver> http_listener_;
  uint16_t http_port_ = 0;
  uint64_t seq_ = 0;
  int64_t last_collect_ns_ = 0;
  uint64_t collect_ns_total_ = 0;
  std::unique_ptr<Snapshot> latest_;
};

// Host name, kernel release and agent version for AgentInfo.
AgentInfo localAgentInfo(const std::string& node_name, const std::string& agent_id,
                         const Labels& labels);

}  // namespace vigil

// vigil-agent's core: owns the collectors, runs the collection loop on the event loop, encodes
// each Snapshot into a Frame, hands it to the Uplink, and serves the local HTTP endpoints
// (/metrics with the latest snapshot and the agent's own counters, /healthz).
#pragma once

#include <kj/async-io.h>

#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/snapshot.h"
#include "userspace/agent/agent_config.h"
#include "userspace/agent/host_cpu.h"
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
  kj::Duration reconnect_min = 500 * kj::MILLISECONDS;
  kj::Duration probe_interval = 30 * kj::SECONDS;
  bool verbose = false;
  // Durable spool of unacknowledged frames ("" keeps them in memory only).
  std::string spool_path;
  SpoolOptions spool;
  double replay_rate = 50;  // frames per second
  double replay_burst = 20;
  uint32_t max_in_flight = 8;
  uint32_t wire_keyframe_every = 30;  // delta frames between keyframes; 0: keyframes only
  // TLS: trust anchor for the aggregator's certificate; cert+key for mutual TLS.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  bool insecure_plaintext = false;  // required for plaintext to a non-loopback aggregator
  AgentSettings settings;           // from --interval and --config
};

class Agent final : public ConfigHandler {
 public:
  // Loads the collectors and binds the HTTP port. Fails with one actionable message.
  static absl::StatusOr<std::unique_ptr<Agent>> create(AgentOptions options,
                                                       kj::AsyncIoContext& io);
  ~Agent() noexcept(false);

  // Runs until the returned promise is dropped.
  kj::Promise<void> run();

  uint16_t httpPort() const { return http_port_; }

  // ConfigHandler: validate, apply without restart, roll back on failure.
  void applyConfig(wire::AgentConfig::Reader config, wire::ConfigResult::Builder result) override;
  uint64_t configVersion() const override { return settings_.version; }
  absl::Status applySettings(const AgentSettings& next);
  const AgentSettings& settings() const { return settings_; }

 private:
  struct Running {
    std::unique_ptr<Collector> collector;
    kj::Maybe<kj::Promise<void>> task;  // declared after collector: destroyed first
  };
  Agent(AgentOptions options, kj::AsyncIoContext& io, uint64_t boot_epoch);
  absl::Status setUpTls();
  void startCollector(Running& r);
  uint32_t intervalInUseMs() const;
  // Tells running collectors (and those created later) the interval in use, when it changed.
  void propagateInterval();
  void applyFilters(Snapshot& snap);

  kj::Promise<void> collectLoop();
  void collectOnce();
  kj::Promise<HttpReply> handleHttp(const HttpRequest& request);
  std::string renderMetrics(bool open_metrics);
  void appendSelfMetrics(std::vector<MetricSample>& out);

  AgentOptions options_;
  kj::AsyncIoContext& io_;
  CollectorContext context_;
  CollectorConfig collector_config_;
  std::vector<Running> collectors_;
  std::vector<CollectorState> disabled_collectors_;  // one entry per collector not running
  // Collectors that failed to load at start, with the kernel's reason: reported while they are not
  // disabled by config (a disabled one is reported once, as disabled).
  std::map<std::string, std::string> load_failures_;
  std::unique_ptr<Attributor> attributor_;  // null when no cgroup2 mount was found
  std::unique_ptr<Masker> masker_;
  uint64_t boot_epoch_;
  AgentSettings settings_;
  std::vector<std::regex> mask_res_;
  HostCpu host_cpu_;
  // Dynamic sampling's last verdict on host CPU (true: at or above the threshold); unset until
  // the first sample after sampling was enabled. The interval follows the current policy.
  std::optional<bool> host_busy_;
  uint64_t config_applied_ = 0;
  uint64_t config_failed_ = 0;
  bool running_ = false;
  kj::TimePoint last_tick_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> collect_wake_;
  kj::Maybe<kj::TlsKeypair> tls_keypair_;
  kj::Vector<kj::TlsCertificate> tls_trusted_;
  kj::Own<kj::TlsContext> tls_;
  std::unique_ptr<Uplink> uplink_;
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

// vigil-aggregator's core: binds the RPC and HTTP ports and wires ingest, the store and the HTTP
// API together on one event loop.
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "aggregator/alerting/engine.h"
#include "aggregator/alerting/recent_series.h"
#include "aggregator/audit_log.h"
#include "aggregator/fleet_api.h"
#include "aggregator/ingest.h"
#include "aggregator/notify/notifier.h"
#include "aggregator/query_api.h"
#include "aggregator/remote_write.h"
#include "aggregator/series_store.h"
#include "aggregator/store.h"
#include "userspace/common/http_server.h"

namespace vigil::aggregator {

struct ServerOptions {
  std::string rpc_addr = "127.0.0.1";
  uint16_t rpc_port = 9470;
  std::string http_addr = "127.0.0.1";
  uint16_t http_port = 9471;
  std::string ready_file;  // "rpc_port=N\nhttp_port=M\n" once both are bound
  std::string data_dir = "/var/lib/vigil-aggregator";
  IngestLogOptions log;
  IngestOptions ingest;
  StoreOptions store;

  // Alerting and the fleet API (docs/alerting.md, docs/fleet-api.md).
  std::string rules_file;        // "" = no rules
  int64_t rules_poll_ms = 2000;  // hot reload: mtime poll period
  int64_t alert_eval_interval_ms = 1000;
  NotifierOptions notifier;
  std::string api_tokens_file;  // "" = open API, loopback only
  int64_t agent_offline_after_ms = 30000;
  // TEST ONLY: POST /api/v1/test/inject adds synthetic samples the alert engine sees.
  bool enable_test_injection = false;
  SeriesStoreOptions series;
  // Remote-write receivers; the first URL's cursor is the log consumer "remote_write", further
  // URLs use "remote_write:<url>".
  std::vector<std::string> remote_write_urls;
  RemoteWriteOptions remote_write;
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> create(ServerOptions options,
                                                        kj::AsyncIoContext& io);
  ~Server();

  kj::Promise<void> run();
  // One log line with the ingest pipeline's totals (group commit, series store), for operators
  // and for the benchmark, which reads it at shutdown instead of scraping a huge /metrics.
  void logIngestSummary() const;
  uint16_t rpcPort() const { return rpc_port_; }
  uint16_t httpPort() const { return http_port_; }
  // The in-memory series store (the alert engine's SeriesSource).
  SeriesStore& series() { return series_; }

 private:
  Server(ServerOptions options, kj::AsyncIoContext& io);
  kj::Promise<HttpReply> handleHttp(const HttpRequest& request);

  // Replays the ingest log into the in-memory store after a restart.
  absl::Status replayLog();
  kj::Promise<void> retentionLoop();

  // Alerting: evaluates rules every alert_eval_interval_ms, reloads changed rule files and
  // hands alerts to the notifiers.
  absl::Status setupAlerting();
  absl::Status loadRules();
  kj::Promise<void> alertLoop();
  void alertTick(int64_t now_ms);
  kj::Maybe<kj::Promise<HttpReply>> handleInjection(const HttpRequest& request);
  const SeriesSource& alertSource();

  ServerOptions options_;
  kj::AsyncIoContext& io_;
  std::unique_ptr<IngestLog> log_;
  Store store_;
  SeriesStore series_;
  QueryApi query_api_;
  std::vector<std::unique_ptr<RemoteWriter>> remote_writers_;
  kj::Own<Ingest> ingest_;
  kj::Own<HttpServer> http_;
  kj::Own<kj::ConnectionReceiver> rpc_listener_;
  kj::Own<kj::ConnectionReceiver> http_listener_;
  uint16_t rpc_port_ = 0;
  uint16_t http_port_ = 0;

  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<alerting::AlertEngine> engine_;
  std::unique_ptr<Notifier> notifier_;
  std::unique_ptr<FleetApi> fleet_;
  // The engine reads the series store first; recent_ records, each evaluation tick, what
  // /metrics renders that the store lacks (aggregator-level series); injected_ holds test-only
  // synthetic samples.
  alerting::RecentSeries recent_{5 * 60 * 1000, 200000};  // retention follows the rules
  alerting::RecentSeries injected_{30 * 60 * 1000, 10000};
  std::unique_ptr<alerting::MergedSource> merged_;
  std::string rules_stamp_;
  uint64_t rule_reloads_ok_ = 0;
  uint64_t rule_reloads_failed_ = 0;
  bool last_reload_ok_ = true;
  bool rules_loaded_once_ = false;
  std::string last_reload_error_;
};

}  // namespace vigil::aggregator

// vigil-aggregator's core: binds the RPC and HTTP ports and wires ingest, the store and the HTTP
// API together on one event loop.
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "aggregator/ingest.h"
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
};

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> create(ServerOptions options,
                                                        kj::AsyncIoContext& io);
  ~Server();

  kj::Promise<void> run();
  uint16_t rpcPort() const { return rpc_port_; }
  uint16_t httpPort() const { return http_port_; }

 private:
  Server(ServerOptions options, kj::AsyncIoContext& io);
  kj::Promise<HttpReply> handleHttp(const HttpRequest& request);
  std::string agentsJson();

  // Replays the ingest log into the in-memory store after a restart.
  absl::Status replayLog();
  kj::Promise<void> retentionLoop();

  ServerOptions options_;
  kj::AsyncIoContext& io_;
  std::unique_ptr<IngestLog> log_;
  Store store_;
  kj::Own<Ingest> ingest_;
  kj::Own<HttpServer> http_;
  kj::Own<kj::ConnectionReceiver> rpc_listener_;
  kj::Own<kj::ConnectionReceiver> http_listener_;
  uint16_t rpc_port_ = 0;
  uint16_t http_port_ = 0;
};

}  // namespace vigil::aggregator

// The aggregator's RPC side: accepts agent connections, registers agents, validates and applies
// pushed frames, and acknowledges them. Every refusal (bad hello, malformed or mismatched frame)
// is counted by reason and logged, and never disturbs other connections.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "aggregator/ingest_log.h"
#include "aggregator/store.h"
#include "capnp/vigil.capnp.h"

namespace vigil::aggregator {

struct IngestOptions {
  uint32_t heartbeat_interval_ms = 10000;
  // Tokens accepted by agent id; empty map means no authentication (loopback default).
  absl::flat_hash_map<std::string, std::string> agent_tokens;
};

struct IngestStats {
  uint64_t connections = 0;
  uint64_t connections_open = 0;
  uint64_t frames_accepted = 0;
  uint64_t frames_duplicate = 0;
  uint64_t payload_bytes = 0;
  absl::flat_hash_map<std::string, uint64_t> rejected;  // by reason
};

class Ingest {
 public:
  // Frames are appended to `log` (durably) before they are applied to `store` and acknowledged.
  Ingest(kj::Timer& timer, IngestLog& log, Store& store, IngestOptions options);
  ~Ingest();

  // Accepts connections until the promise is dropped.
  kj::Promise<void> listen(kj::ConnectionReceiver& listener);

  const IngestStats& stats() const { return stats_; }
  void reject(const std::string& reason) { stats_.rejected[reason]++; }
  void writeMetrics(PromWriter& out) const;

 private:
  friend class AggregatorImpl;
  friend class SessionImpl;
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& listener);

  kj::Timer& timer_;
  IngestLog& log_;
  Store& store_;
  IngestOptions options_;
  IngestStats stats_;
  class ErrorHandler;
  kj::Own<ErrorHandler> error_handler_;  // before tasks_, which refers to it
  kj::TaskSet tasks_;
};

int64_t unixNanos();

}  // namespace vigil::aggregator

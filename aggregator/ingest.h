// The aggregator's RPC side: accepts agent connections, registers agents, validates and applies
// pushed frames, and acknowledges them. Every refusal (bad hello, malformed or mismatched frame)
// is counted by reason and logged, and never disturbs other connections.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "aggregator/auth.h"
#include "aggregator/fleet.h"
#include "aggregator/group_commit.h"
#include "aggregator/ingest_log.h"
#include "aggregator/store.h"
#include "capnp/vigil.capnp.h"

namespace vigil::aggregator {

struct IngestOptions {
  uint32_t heartbeat_interval_ms = 10000;
  // Tokens accepted by agent id; empty map means no authentication (loopback default).
  absl::flat_hash_map<std::string, std::string> agent_tokens;
  // TLS (null: plaintext). With require_client_cert, the certificate CN must be the agent id.
  ServerTls* tls = nullptr;
  kj::Duration handshake_timeout = 10 * kj::SECONDS;
  kj::Duration config_push_timeout = 30 * kj::SECONDS;
  // Accept delta frames (Encoding packedZstdDelta); told to agents in the register reply.
  bool accept_delta = true;
  // Group commit of the ingest log (aggregator/group_commit.h).
  GroupCommitOptions commit;
};

struct IngestStats {
  uint64_t connections = 0;
  uint64_t connections_open = 0;
  uint64_t frames_accepted = 0;
  uint64_t frames_duplicate = 0;
  uint64_t delta_frames = 0;     // accepted delta pushes (expanded before logging)
  int64_t delta_base_bytes = 0;  // held by all sessions' delta bases (aggregator/delta_base.h)
  uint64_t payload_bytes = 0;
  absl::flat_hash_map<std::string, uint64_t> rejected;            // by reason
  absl::flat_hash_map<std::string, uint64_t> connections_closed;  // by reason
  absl::flat_hash_map<std::string, uint64_t> config_pushes;       // by result
  uint64_t agents_went_offline = 0;
};

class Ingest {
 public:
  struct ConnState;  // per connection; defined in ingest.cc

  // Frames are appended to `log` (durably, in group commits) before they are applied to `store`
  // and acknowledged. The store's frame listener (the series store) is called on the commit
  // thread, so it must be thread-safe; the store itself is only touched on the event loop.
  Ingest(kj::Timer& timer, IngestLog& log, Store& store, IngestOptions options);
  ~Ingest();

  // Accepts connections until the promise is dropped; also runs the liveness timer that marks
  // agents offline after two missed heartbeat intervals.
  kj::Promise<void> listen(kj::ConnectionReceiver& listener);

  // Pushes a config to a connected agent over the AgentControl capability it registered with.
  // version 0 in the spec means "current version + 1". Never fails: an unreachable agent or a
  // refusal is reported in the result (delivered/applied/error). On APPLIED the agent's
  // config_version in the Store is updated.
  kj::Promise<ConfigPushResult> pushConfig(const std::string& agent_id, AgentConfigSpec config);
  bool agentConnected(const std::string& agent_id) const { return controls_.contains(agent_id); }

  const IngestStats& stats() const { return stats_; }
  const GroupCommitter& committer() const { return *committer_; }
  void reject(const std::string& reason) { stats_.rejected[reason]++; }
  void writeMetrics(PromWriter& out) const;

 private:
  friend class AggregatorImpl;
  friend class SessionImpl;
  struct Control {
    uint64_t conn_id;
    wire::AgentControl::Client client;
  };
  kj::Promise<void> acceptLoop(kj::ConnectionReceiver& listener);
  kj::Promise<void> serve(kj::AuthenticatedStream stream);
  kj::Promise<void> livenessLoop();
  void connectionClosed(const std::string& reason, const std::string& detail,
                        const std::string& peer);

  kj::Timer& timer_;
  IngestLog& log_;
  Store& store_;
  IngestOptions options_;
  IngestStats stats_;
  uint64_t next_conn_id_ = 1;
  absl::flat_hash_map<std::string, Control> controls_;
  std::unique_ptr<GroupCommitter> committer_;
  class ErrorHandler;
  kj::Own<ErrorHandler> error_handler_;  // before tasks_, which refers to it
  kj::TaskSet tasks_;
};

}  // namespace vigil::aggregator

// The agent's side of the transport. Every encoded frame goes to the durable Spool first (or to a
// bounded in-memory queue when the spool is unusable); the uplink sends spooled frames in order,
// removing each only once the aggregator has acknowledged it, so an outage or a crash of either
// side loses nothing that fits in the spool's bounds.
//
// Connection management: the aggregator list is ordered by rendezvous hashing of the node name;
// the uplink connects to the first reachable one (failing over down the list), probes the
// preferred ones while on a fallback and returns when they answer. Reconnects back off
// exponentially with jitter. Frames of older boot epochs (spooled before a restart) are sent on a
// session registered for that epoch, so every frame keeps its original (agent, epoch, seq).
// Sends are paced by a token bucket (replay after an outage cannot flood the aggregator) with a
// small window of pushes in flight; acks must come back in order.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/tls.h>
#include <kj/vector.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "capnp/snapshot.h"
#include "capnp/vigil.capnp.h"
#include "userspace/agent/spool.h"

namespace vigil {

// Applies configs pushed by the aggregator (implemented by Agent).
class ConfigHandler {
 public:
  virtual ~ConfigHandler() noexcept(false) = default;
  virtual void applyConfig(wire::AgentConfig::Reader config,
                           wire::ConfigResult::Builder result) = 0;
  virtual uint64_t configVersion() const = 0;
};

struct UplinkOptions {
  std::vector<std::string> aggregators;  // "host:port", ordered by rendezvous hash at start
  AgentInfo identity;
  uint64_t boot_epoch = 0;
  std::string token;
  size_t max_queue_bytes = 64 << 20;  // in-memory bound, used when the spool is unusable
  kj::Duration min_backoff = 500 * kj::MILLISECONDS;
  kj::Duration max_backoff = 30 * kj::SECONDS;
  kj::Duration connect_timeout = 5 * kj::SECONDS;
  kj::Duration probe_interval = 30 * kj::SECONDS;  // how often a fallback probes preferred ones
  double replay_rate = 50;                         // frames per second (token bucket)
  double replay_burst = 20;
  uint32_t max_in_flight = 8;
  kj::Maybe<kj::TlsContext&> tls;  // null: plaintext
  std::string tls_server_name;     // "" : the host part of the address
  kj::Maybe<ConfigHandler&> config_handler;
  // Delta frames: within a session, send frames as zstd deltas against the previous frame sent
  // (a keyframe first and then every keyframe_every frames). 0 sends keyframes only. Spooled
  // frames stay self-contained; deltas are made at send time.
  uint32_t keyframe_every = 0;
};

struct UplinkStats {
  uint64_t frames_enqueued = 0;
  uint64_t frames_acked = 0;
  uint64_t frames_duplicate = 0;
  uint64_t frames_dropped_queue_full = 0;
  uint64_t frames_refused = 0;
  uint64_t spool_errors = 0;
  uint64_t queue_frames = 0;
  uint64_t queue_bytes = 0;
  uint64_t connects = 0;
  uint64_t connect_failures = 0;
  uint64_t failovers = 0;
  uint64_t payload_bytes_sent = 0;
  uint64_t keyframes_sent = 0;
  uint64_t deltas_sent = 0;
  uint64_t pointer_deltas_sent = 0;     // of deltas_sent: Encoding.pointerZstdDelta
  uint64_t event_list_frames_sent = 0;  // rewritten with an events list for an older aggregator
  uint64_t delta_resyncs = 0;  // deltas refused for their base: registered again, keyframe sent
  uint64_t rate_limited_waits = 0;
  bool connected = false;
  bool spool_ok = false;
  uint32_t heartbeat_interval_ms = 0;
  std::string current_aggregator;
};

// Orders addresses by rendezvous (highest random weight) hashing of node_name: every agent
// computes the same order independently, and removing one aggregator moves only its agents.
std::vector<std::string> rendezvousOrder(const std::vector<std::string>& addresses,
                                         const std::string& node_name);

class Uplink {
 public:
  // `spool` may be null (memory only).
  Uplink(kj::AsyncIoProvider& io, UplinkOptions options, std::unique_ptr<Spool> spool);
  ~Uplink();

  // Queues one encoded frame of this process's boot epoch.
  void enqueue(uint64_t seq, kj::Array<kj::byte> payload);

  // The spool could not be opened: count it (the uplink runs from memory).
  void noteSpoolUnavailable() { stats_.spool_errors++; }

  // Runs the connect/push loop forever.
  kj::Promise<void> run();

  const UplinkStats& stats() const { return stats_; }
  void appendSelfMetrics(std::vector<MetricSample>& out) const;
  const std::vector<std::string>& order() const { return order_; }

 private:
  struct Pending {
    int64_t spool_id = 0;  // 0: memory only
    uint64_t epoch = 0;
    uint64_t seq = 0;
    kj::Array<kj::byte> payload;
  };
  struct Connection;

  kj::Promise<void> connectTo(size_t index);
  kj::Promise<void> registerEpoch(Connection& conn, uint64_t epoch);
  kj::Promise<void> pump(Connection& conn);
  kj::Promise<void> heartbeatLoop(Connection& conn);
  kj::Promise<void> probeLoop(Connection& conn);
  kj::Promise<void> waitForWake();
  void wake();
  void refill();
  void ackFront(bool refused, bool duplicate);
  // Chooses keyframe or delta for the next push on `conn` and updates the session's base.
  wire::Encoding encodeForSend(Connection& conn, const Pending& next, kj::Array<kj::byte>& out,
                               uint64_t& base_seq);
  kj::Promise<bool> probe(size_t index);
  kj::Promise<void> probeFrom(Connection& conn, size_t index);
  kj::Promise<kj::Own<kj::AsyncIoStream>> dial(size_t index);
  void updateQueueStats();
  void flushAcked();
  kj::Duration nextBackoff();
  double takeTokenDelaySeconds();

  kj::AsyncIoProvider& io_;
  UplinkOptions options_;
  std::vector<std::string> order_;
  std::unique_ptr<Spool> spool_;
  bool spool_warned_ = false;
  bool spool_has_more_ = true;
  int64_t loaded_id_ = 0;
  int64_t acked_spool_id_ = 0;  // newest acknowledged spool row not yet deleted
  uint32_t acks_since_delete_ = 0;
  std::deque<Pending> window_;       // oldest unacknowledged frames, in send order
  std::deque<Pending> memory_tail_;  // frames that could not be spooled
  size_t memory_bytes_ = 0;
  size_t in_flight_ = 0;          // the first in_flight_ entries of window_ have been sent
  uint64_t send_generation_ = 0;  // bumped to disown the replies of pushes sent before it
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> waiter_;
  kj::Maybe<kj::Own<Connection>> connection_;
  size_t index_ = 0;        // position in order_ being tried / used
  int64_t switch_to_ = -1;  // set when a preferred aggregator answered a probe
  uint32_t attempt_ = 0;
  double tokens_ = 0;
  kj::TimePoint tokens_at_;
  UplinkStats stats_;
};

}  // namespace vigil

// The agent's side of the transport: keeps frames queued until the aggregator acknowledges them,
// (re)connects with exponential backoff and jitter, registers, and pushes frames in sequence
// order. The queue is in memory and bounded by bytes; when full, the oldest frame is dropped and
// counted. (Durable spooling to disk is a later step; see docs/architecture.md.)
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "capnp/snapshot.h"
#include "capnp/vigil.capnp.h"

namespace vigil {

struct UplinkOptions {
  std::vector<std::string> aggregators;  // "host:port"; the first is used for now
  AgentInfo identity;
  uint64_t boot_epoch = 0;
  std::string token;
  size_t max_queue_bytes = 64 << 20;
  kj::Duration min_backoff = 500 * kj::MILLISECONDS;
  kj::Duration max_backoff = 30 * kj::SECONDS;
};

struct UplinkStats {
  uint64_t frames_enqueued = 0;
  uint64_t frames_acked = 0;
  uint64_t frames_duplicate = 0;
  uint64_t frames_dropped_queue_full = 0;
  uint64_t frames_refused = 0;
  uint64_t queue_frames = 0;
  uint64_t queue_bytes = 0;
  uint64_t connects = 0;
  uint64_t connect_failures = 0;
  uint64_t payload_bytes_sent = 0;
  bool connected = false;
  uint32_t heartbeat_interval_ms = 0;
};

class Uplink {
 public:
  Uplink(kj::AsyncIoProvider& io, UplinkOptions options);
  ~Uplink();

  // Queues one encoded frame (seq must increase by one per call).
  void enqueue(uint64_t seq, kj::Array<kj::byte> payload);

  // Runs the connect/push loop forever.
  kj::Promise<void> run();

  const UplinkStats& stats() const { return stats_; }
  void appendSelfMetrics(std::vector<MetricSample>& out) const;

 private:
  struct Pending {
    uint64_t seq;
    kj::Array<kj::byte> payload;
  };
  struct Connection;

  kj::Promise<void> connectAndPump();
  kj::Promise<void> pump();
  kj::Promise<void> heartbeatLoop();
  kj::Promise<void> waitForFrame();
  kj::Duration nextBackoff();
  void ackThrough(uint64_t seq);

  kj::AsyncIoProvider& io_;
  UplinkOptions options_;
  std::deque<Pending> queue_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> frame_waiter_;
  kj::Maybe<kj::Own<Connection>> connection_;
  uint32_t attempt_ = 0;
  UplinkStats stats_;
};

}  // namespace vigil

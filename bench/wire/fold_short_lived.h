// Folding short-lived processes, for vigil-bench-wire --experiments only: what the frames would
// weigh if processes that appeared and exited within one interval (new since the previous frame
// and already marked exited), beyond the K that used the most CPU, were sent as one aggregate
// ProcessSample per (comm, cgroupId) instead of one sample each. Not in the agent or the wire.
//
// An aggregate behaves like a process that never exits: its counters are cumulative over every
// process folded into it since the folder started (Prometheus counter semantics, like every other
// ProcessSample), it is carried in every later frame, and it keeps a stable pseudo-pid (counting
// down from 0xffffffff, so toWire's pid order puts the aggregates after the real processes in a
// stable order) for the frame's pid-keyed map. A shipped form would send pid 0 and a new
// ProcessSample field with the folded count.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "capnp/snapshot.h"

namespace vigil::bench {

class ShortLivedFolder {
 public:
  explicit ShortLivedFolder(size_t keep_busiest) : keep_busiest_(keep_busiest) {}

  // The processes of the next frame with the short-lived ones folded (plus every aggregate made
  // so far). `previous_pids` are the pids of the frame before it. Frames must come in order.
  absl::flat_hash_map<uint32_t, ProcessStats> fold(
      const absl::flat_hash_map<uint32_t, ProcessStats>& processes,
      const absl::flat_hash_set<uint32_t>& previous_pids);

  // Processes folded into the aggregate with this pseudo-pid so far; 0 for a real pid.
  uint64_t foldedCount(uint32_t pid) const;
  // Processes folded in the last call to fold().
  size_t lastFolded() const { return last_folded_; }
  size_t aggregates() const { return aggregates_.size(); }

 private:
  struct Aggregate {
    ProcessStats stats;
    uint64_t folded = 0;
  };
  size_t keep_busiest_;
  absl::flat_hash_map<std::pair<std::string, uint64_t>, uint32_t> pid_of_key_;
  absl::flat_hash_map<uint32_t, Aggregate> aggregates_;  // by pseudo-pid
  size_t last_folded_ = 0;
};

}  // namespace vigil::bench

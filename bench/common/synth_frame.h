// A synthetic but realistic steady-state frame for the load generator and the wire-size tool:
// a node with a few dozen processes, some containers, host metrics, log2 histograms and the
// agent's own counters, about 500 series in all. Counters advance with `seq` the way a real
// node's do, so compression sees realistic entropy rather than repeated identical frames: every
// process counter moves every interval (the worst case for deltas) by an amount that varies
// from interval to interval (+-50 %), on-CPU time has random ns digits, block I/O moves in 4 KiB
// pages, and host values are computed from the units their source counts in (/proc/stat ticks /
// 100, PSI us / 1e6, diskstats ms / 1000, bpf_stats ns / 1e9) as the host collector does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "capnp/snapshot.h"

namespace vigil::bench {

struct SynthOptions {
  std::string agent_id = "node-0";
  uint64_t boot_epoch = 1;
  uint32_t processes = 30;
  uint32_t containers = 5;
  uint32_t seed = 1;  // varies values between simulated agents
};

// Fills `out` (which must be fresh) with the frame of interval `seq` (1, 2, ...).
void buildSyntheticSnapshot(const SynthOptions& options, uint64_t seq, Snapshot& out);

// Number of Prometheus series the snapshot renders to (what the aggregator stores).
size_t countSeries(const Snapshot& snapshot);

}  // namespace vigil::bench

// Helpers shared by the BPF collectors: routing libbpf's log into ours, turning load errors into
// one actionable line, and reading per-CPU maps.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "capnp/snapshot.h"

#include "userspace/collectors/collector.h"

struct bpf_object;

namespace vigil {

class RingReader;

// Routes libbpf's messages to our log (debug level unless `verbose`). The most recent warning is
// kept so a load failure can say what the verifier or libbpf complained about.
void installLibbpfLogger(bool verbose);
std::string lastLibbpfWarning();

// Maps a negative errno from libbpf into a status with the cause and the fix.
absl::Status bpfError(absl::string_view what, int err);

// Number of possible CPUs (the length of a per-CPU map value array).
int possibleCpus();

// Iterates a hash map's keys and reads each per-CPU value (value_size bytes per CPU, rounded up
// to 8 as the kernel lays them out). `visit` gets the key and the raw values of all CPUs.
// Returns the number of keys visited.
template <typename Key, typename Value>
size_t forEachPerCpu(int map_fd,
                     const std::function<void(const Key&, const std::vector<Value>&)>& visit);

// Appends, for each loaded program of `obj`, its id and (when kernel.bpf_stats_enabled=1) its
// cumulative run time and run count: vigil_bpf_program_run_seconds_total and
// vigil_bpf_program_runs_total, labelled {program, id}.
void appendProgramStats(const bpf_object* obj, std::vector<MetricSample>& out);

// Waits up to timeout_ms (0: not at all) for a ring buffer, then always consumes it: the
// kernel side wakes readers only past its wakeup threshold, so records may be there without a
// wakeup. Returns the number of records handed to the buffer's callback.
int pollRingBuffer(RingReader* ring, int timeout_ms);

// Drains a ring buffer on the event loop for as long as the promise lives: whenever its map fd
// is readable, and every 100 ms as a safety net for a missed edge.
kj::Promise<void> drainRingBuffer(CollectorContext& context, RingReader* ring);

// Reads every entry of a (not per-CPU) hash map.
template <typename Key, typename Value>
std::vector<std::pair<Key, Value>> readHash(int map_fd);

// True when no process with this tgid exists any more (reaped; a zombie still exists).
bool processGone(uint32_t tgid);

// Sums slot `idx` of a per-CPU __u64 array across CPUs.
uint64_t sumPerCpuCounter(int map_fd, uint32_t idx);

// One of a BPF object's own counters (a slot of its per-CPU *_counters array), exported as a
// self-telemetry counter.
struct KernelCounter {
  const char* metric;
  Labels labels;
  uint32_t slot;
};
// Appends each counter's sum over CPUs to `out`.
void appendKernelCounters(int map_fd, const std::vector<KernelCounter>& counters,
                          std::vector<MetricSample>& out);

}  // namespace vigil

#include "userspace/collectors/bpf_util_inl.h"

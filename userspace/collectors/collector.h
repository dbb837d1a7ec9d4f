// The interface between data sources and the agent. A collector owns its BPF object or /proc
// reader. Once per interval the agent calls collect() on its own thread and the collector adds
// what it knows to the Snapshot being built. Collectors that need to act between intervals
// (duty-cycled attachment, draining a ring buffer) do so in run(), on the same event loop.
// Collectors never block for long and never throw.
#pragma once

#include <kj/async-unix.h>
#include <kj/time.h>

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "capnp/snapshot.h"

namespace vigil {

// What the agent's config says about collection. Pushed configs (see docs/architecture.md)
// change it at run time; the agent then recreates the collectors whose settings changed.
struct CollectorConfig {
  absl::flat_hash_set<std::string> disabled;  // collector names
  std::string syscall_mode = "sampled";       // sampled | continuous | off
  double syscall_duty_cycle = 0.02;           // fraction of each interval, in sampled mode
  // When the net collector's per-message hooks (UDP bytes) are attached: off | sampled (for
  // syscall_duty_cycle of each interval) | continuous. Off by default: they cost every
  // send/recv on the host (docs/performance.md); TCP bytes do not need them.
  std::string net_message_mode = "off";
  kj::Duration interval = 10 * kj::SECONDS;
  std::vector<std::string> mask_patterns;  // extra regexes masked in argv/cmdline
  std::vector<std::string> comm_filter;    // when non-empty, only these comms are reported
  uint32_t only_tgid = 0;                  // CLI --pid: account this process only
  // Time every syscall's latency instead of one in kDefaultLatencySampleEvery (full coverage,
  // at the per-syscall cost noted in registry.cc).
  bool syscall_latency = false;
  // Capacity of the per-process BPF maps that honour it (0: each collector's default). The
  // kernel preallocates them and charges the memory to the agent's memory cgroup, so a large
  // value can make the load fail (ENOMEM); new processes beyond it are counted, not stored.
  uint32_t max_processes = 0;
  // false (the CLI's top/snapshot): collectors that support it allocate hash map entries on
  // first use (BPF_F_NO_PREALLOC) instead of zeroing them all at load; a faster start for a
  // short-lived process, a kernel allocation per new entry afterwards. The agent preallocates.
  bool preallocate_maps = true;
  // true (the CLI's top/snapshot): the process, syscalls and block collectors load their raw_tp
  // programs even where tp_btf works (same data); with a cached CO-RE BTF (kernel-compat/
  // core_btf.h) libbpf then parses no vmlinux BTF for them. The agent keeps tp_btf.
  bool prefer_raw_tp = false;
  // Ring buffer sizes of the event collectors (0: each collector's default, ProcessOptions and
  // NetOptions). A power of two of at least a page; resident from load. Events the kernel
  // cannot reserve room for are counted (vigil_ringbuf_reserve_failures_total).
  uint32_t process_ring_bytes = 0;
  uint32_t net_ring_bytes = 0;
};

// Event-loop facilities a collector may use in run().
struct CollectorContext {
  kj::Timer& timer;
  kj::UnixEventPort& event_port;
};

class Collector {
 public:
  virtual ~Collector() = default;
  virtual absl::string_view name() const = 0;
  virtual void collect(Snapshot& out) = 0;
  // Background work between intervals; the promise is dropped when the collector is removed.
  virtual kj::Promise<void> run(CollectorContext& context) { return kj::NEVER_DONE; }
  // The agent's collection interval changed (a pushed config or dynamic sampling). A collector
  // whose background work follows the interval (the syscall duty cycle) adopts it without being
  // reloaded; the default ignores it. Called on the event loop, never fails.
  virtual void setInterval(kj::Duration interval) {}
  // The agent's extra masking patterns changed (a pushed config). A collector that masks what it
  // reads itself (exec argv) adopts them for everything it reads afterwards; the patterns were
  // validated by the agent. Called on the event loop, never fails.
  virtual void setMaskPatterns(const std::vector<std::string>& patterns) {}
};

}  // namespace vigil

// Runs the registered collectors inside the CLI process, the way the agent does, so `vigil
// snapshot` and `vigil top` need no running agent. Collectors' run() promises are driven on the
// caller's KJ event loop; collect() builds one Snapshot whenever asked.
#pragma once

#include <kj/async-io.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/snapshot.h"
#include "userspace/cli/trace_hist.h"
#include "userspace/collectors/collector.h"

namespace vigil::cli {

class LocalCollectors {
 public:
  // Builds every registered collector not in config.disabled. A collector the kernel cannot
  // run is recorded as down (its reason is in the snapshot and in warnings()); PermissionDenied
  // from any collector fails the whole call, since nothing BPF can then work. core_btf: the
  // cached CO-RE BTF to load against, with its fallback (trace_hist.h), or nullptr.
  static absl::StatusOr<std::unique_ptr<LocalCollectors>> create(const CollectorConfig& config,
                                                                 kj::AsyncIoContext& io,
                                                                 CoreBtfUse* core_btf = nullptr);

  // The collectors' background work; drop it to stop.
  kj::Promise<void> run();

  // When the window began: before the first collector loaded, so every count a collector
  // reports (each counts from its own load) accrued inside [start, collect()].
  int64_t startedUnixNs() const { return started_unix_ns_; }

  // One frame: agent info, collectors' data and state, and the CLI's own counters.
  std::unique_ptr<Snapshot> collect();

  // One line per collector that could not start.
  const std::vector<std::string>& warnings() const { return warnings_; }
  // True when a collector named `name` is running.
  bool up(const std::string& name) const;
  size_t running() const { return collectors_.size(); }

 private:
  LocalCollectors(const CollectorConfig& config, kj::AsyncIoContext& io);

  CollectorConfig config_;
  CollectorContext context_;
  std::vector<std::unique_ptr<Collector>> collectors_;
  std::vector<CollectorState> down_;
  std::vector<std::string> warnings_;
  int64_t started_unix_ns_;
  uint64_t seq_ = 0;
  uint64_t collect_ns_total_ = 0;
};

// Host name, kernel release and vigil version.
AgentInfo localInfo();

// A timer promise for `delay` from the real present. The event loop's notion of "now" is only
// refreshed when it polls, so after a slow synchronous step (loading BPF under load can take
// a second) timer.afterDelay() would fire early.
kj::Promise<void> sleepFromNow(kj::Timer& timer, kj::Duration delay);

}  // namespace vigil::cli

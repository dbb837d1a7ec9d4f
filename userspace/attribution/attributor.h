// Attribution: from the cgroup v2 id the kernel records for every process and event to the
// cgroup's path, and from the path to container, pod and systemd unit (cgroup_path.h).
//
// CgroupResolver finds the cgroup v2 mount (/proc/self/mountinfo), maps ids to paths with
// open_by_handle_at (a cgroup v2 id is its directory's kernfs id, which is also its file handle),
// falling back to a walk of the hierarchy, and caches results in a bounded LRU with counted
// hits, misses and evictions. Attributor applies it to a Snapshot after the collectors ran:
// ProcessStats.container_id, one ContainerStats per cgroup (sums of its processes' counters,
// kept cumulative across process exits) and Event.containerId/podUid.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "capnp/snapshot.h"
#include "userspace/attribution/cgroup_path.h"

namespace vigil {

// The mount point of the cgroup v2 hierarchy in /proc/self/mountinfo text, "" when none.
std::string findCgroup2Mount(absl::string_view mountinfo);

struct ResolvedCgroup {
  bool found = false;
  std::string path;  // relative to the v2 mount, "/" for the root
  CgroupIdentity identity;
};

class CgroupResolver {
 public:
  struct Stats {
    uint64_t hits = 0;
    uint64_t misses = 0;  // not cached: resolved from the kernel
    uint64_t evictions = 0;
    uint64_t not_found = 0;  // ids no lookup could resolve (cgroup gone, or not visible)
    uint64_t handle_lookups = 0;
    uint64_t walks = 0;
  };

  // `mount` "" discovers the v2 mount from /proc/self/mountinfo.
  static absl::StatusOr<std::unique_ptr<CgroupResolver>> create(std::string mount = "",
                                                                size_t max_entries = 4096);
  ~CgroupResolver();

  const ResolvedCgroup& resolve(uint64_t cgroup_id);
  const std::string& mount() const { return mount_; }
  const Stats& stats() const { return stats_; }
  size_t size() const { return entries_.size(); }

 private:
  CgroupResolver(std::string mount, int mount_fd, size_t max_entries)
      : mount_(std::move(mount)), mount_fd_(mount_fd), max_entries_(max_entries) {}
  bool pathByHandle(uint64_t id, std::string* path);
  bool pathByWalk(uint64_t id, std::string* path);

  std::string mount_;
  int mount_fd_;
  size_t max_entries_;
  bool handles_work_ = true;
  std::list<uint64_t> lru_;  // most recent first
  struct Entry {
    ResolvedCgroup value;
    std::list<uint64_t>::iterator lru;
  };
  absl::flat_hash_map<uint64_t, Entry> entries_;
  int64_t last_walk_ns_ = 0;
  absl::flat_hash_map<uint64_t, std::string> walk_index_;
  Stats stats_;
};

class Attributor {
 public:
  static absl::StatusOr<std::unique_ptr<Attributor>> create(std::string mount = "",
                                                            size_t max_entries = 4096);

  // Fills attribution into `snap` and appends the attribution self-metrics to snap.self.
  void annotate(Snapshot& snap);

  CgroupResolver& resolver() { return *resolver_; }
  // Processes whose counters are remembered for their cgroup's totals (the live ones reported in
  // the last frame); exported as vigil_attribution_tracked_processes.
  size_t trackedProcesses() const { return last_.size(); }

 private:
  explicit Attributor(std::unique_ptr<CgroupResolver> r) : resolver_(std::move(r)) {}

  struct Totals {
    uint64_t cpu_ns = 0, syscalls = 0, syscall_errors = 0, tcp_tx_bytes = 0, tcp_rx_bytes = 0,
             block_read_bytes = 0, block_write_bytes = 0;
    void max(const ProcessStats& p);
    void add(const Totals& t);
  };
  struct LastSeen {
    uint64_t cgroup_id = 0;
    Totals totals;
  };

  std::unique_ptr<CgroupResolver> resolver_;
  absl::flat_hash_map<uint32_t, LastSeen> last_;    // by pid, processes still reported
  absl::flat_hash_map<uint64_t, Totals> departed_;  // by cgroup, processes no longer reported
  uint64_t unattributed_processes_ = 0;
  uint64_t unattributed_events_ = 0;
};

}  // namespace vigil

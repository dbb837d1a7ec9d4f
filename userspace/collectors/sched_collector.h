// Scheduler collector: on-CPU time, context switches and run-queue latency, from the sched BPF
// object (bpf/sched). Counters and histograms accumulate in the kernel; collect() reads them and
// retires the entries of processes that have exited, after reporting their final values once.
//
// Run-queue latency is exported as three histogram families (see docs/metrics.md, "Kernel
// collectors"): host-wide, per cgroup (bounded by the kernel map, 1024 cgroups) and per process.
// Per-process histograms are capped at `max_process_histograms` series per frame, choosing the
// processes with the most cumulative waiting; the rest are counted, not silently dropped.
#pragma once

#include "absl/strings/string_view.h"
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "userspace/collectors/collector.h"

struct sched_bpf;
struct bpf_object;

namespace vigil {

struct SchedOptions {
  uint32_t only_tgid = 0;  // 0: every process
  size_t max_process_histograms = 32;
  // Capacity of the per-CPU per-process stats map (0: the BPF default, 16384). Preallocated per
  // CPU, so it dominates load time; `vigil hist runq` needs no per-process CPU stats and asks
  // for a few. New processes beyond it are counted (vigil_sched map-full counter), not stored.
  uint32_t max_processes = 0;
  bool force_raw_tp = false;  // tests: use the raw_tp fallback even where tp_btf works
};

class SchedCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<SchedCollector>> create(const SchedOptions& options);
  ~SchedCollector() override;

  absl::string_view name() const override { return "sched"; }
  void collect(Snapshot& out) override;

  // The loaded BPF object (for cost measurements).
  const bpf_object* object() const;

  // Which attach type was chosen ("tp_btf" or "raw_tp").
  absl::string_view attachMode() const { return attach_mode_; }

 private:
  SchedCollector(sched_bpf* skel, const char* mode, const SchedOptions& options)
      : skel_(skel), attach_mode_(mode), options_(options) {}

  void collectRunqueue(Snapshot& out, const std::vector<uint32_t>& gone);

  // Adds the on-CPU time of slices still running (sched_cpu_state) and keeps each process's
  // reported CPU time monotonic.
  void addRunningSlices(Snapshot& out);

  sched_bpf* skel_;
  const char* attach_mode_;
  absl::flat_hash_map<uint32_t, uint64_t> last_cpu_ns_;  // last reported cpu_ns per tgid
  SchedOptions options_;
  struct CgroupSeen {
    uint64_t count;
    uint32_t idle_collects;
  };
  absl::flat_hash_map<uint64_t, CgroupSeen> cgroups_seen_;  // bounded by the kernel map
  uint64_t cgroups_evicted_ = 0;
};

}  // namespace vigil

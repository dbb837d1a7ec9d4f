// Scheduler collector: on-CPU time, context switches and run-queue latency, from the sched BPF
// object (bpf/sched). Counters and histograms accumulate in the kernel; collect() reads them and
// retires the entries of processes that have exited, after reporting their final values once.
//
// Two designs (bpf/sched/sched.bpf.c explains both). With tp_btf (the default where the kernel
// has BTF, task storage, bpf_iter and schedstat), the kernel keeps per-task totals and
// run-queue histograms; collect() reads the thread groups whose threads exited from the
// `exited` map, then every live thread through the vigil_sched_iter task iterator, sums them per
// process and derives the per-cgroup and host histograms from the per-process growth, here in
// userspace. Every reported counter is monotonic. The raw_tp fallback keeps the per-tgid and
// per-cgroup hashes of the previous design.
//
// Run-queue latency is exported as three histogram families (see docs/metrics.md, "Kernel
// collectors"): host-wide, per cgroup (bounded by the kernel map, 1024 cgroups) and per process.
// Per-process histograms are capped at `max_process_histograms` series per frame, choosing the
// processes with the most cumulative waiting; the rest are counted, not silently dropped.
#pragma once

#include "absl/strings/string_view.h"
#include <memory>
#include <string>
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
  // Only the run-queue histograms (host, per cgroup, per process; the latter without comm
  // labels), skipping the per-process CPU stats and their /proc comm lookups: for `vigil hist
  // runq`, whose output waits on this read. raw_tp design only; tp_btf falls back to collect().
  void collectRunqueueHistograms(Snapshot& out);

  // The loaded BPF object (for cost measurements).
  const bpf_object* object() const;

  // Processes whose totals the tp_btf design keeps between collections (live ones, plus exited
  // ones until they have been reported once); exported as vigil_sched_tracked_processes.
  size_t trackedProcesses() const { return procs_.size(); }

  // Which attach type was chosen ("tp_btf" or "raw_tp").
  absl::string_view attachMode() const { return attach_mode_; }

 private:
  SchedCollector(sched_bpf* skel, const char* mode, const SchedOptions& options)
      : skel_(skel), attach_mode_(mode), options_(options) {}

  // tp_btf: one process's totals (exited threads plus live ones) and what was last reported.
  struct ProcKey {
    uint32_t tgid;
    uint64_t start_ns;
    bool operator==(const ProcKey& o) const { return tgid == o.tgid && start_ns == o.start_ns; }
    template <typename H>
    friend H AbslHashValue(H h, const ProcKey& k) {
      return H::combine(std::move(h), k.tgid, k.start_ns);
    }
  };
  struct Hist {
    uint64_t slots[27] = {};  // SCHED_HIST_SLOTS, checked in the .cc
    uint64_t sum_ns = 0;
    uint64_t count() const;
  };
  struct ProcState {
    uint32_t tgid = 0;
    uint64_t cpu_ns = 0;
    uint64_t voluntary = 0;
    uint64_t involuntary = 0;
    Hist runq;
    uint64_t cgroup_id = 0;
    std::string comm;
  };
  struct CgroupState {
    Hist runq;
    uint32_t idle_collects = 0;
  };

  // Runs the task iterator and returns its raw output (whole sched_totals records).
  absl::StatusOr<std::string> readTaskIterator();
  void collectTasks(Snapshot& out);
  void collectHashes(Snapshot& out);
  void emitTaskHistograms(Snapshot& out, const std::vector<const ProcState*>& reported);
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

  // tp_btf state.
  absl::flat_hash_map<ProcKey, ProcState> procs_;
  Hist host_runq_;
  absl::flat_hash_map<uint64_t, CgroupState> cgroups_;  // at most kMaxCgroups
  uint64_t cgroup_samples_dropped_ = 0;                 // waits of cgroups beyond the cap
  uint64_t pid_reuse_ = 0;  // an exited process whose pid a live one already reports
  uint64_t iterator_errors_ = 0;
};

}  // namespace vigil

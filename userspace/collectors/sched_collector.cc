#include "userspace/collectors/sched_collector.h"

#include <bpf/bpf.h>
#include <time.h>
#include <bpf/libbpf.h>
#include <signal.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

#include "kernel-compat/features.h"
#include "sched.skel.h"
#include "sched/sched.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/collectors/task_comm.h"

namespace vigil {
namespace {

constexpr uint64_t kMicrosecond = 1000;
constexpr uint32_t kCgroupIdleCollects = 30;  // 5 minutes at the default 10 s interval

HistogramSample toSample(const char* name, Labels labels, const sched_hist& h) {
  HistogramSample s;
  s.name = name;
  s.labels = std::move(labels);
  s.unit_ns = kMicrosecond;
  s.buckets.assign(std::begin(h.slots), std::end(h.slots));
  for (uint64_t b : s.buckets) {
    s.count += b;
  }
  s.sum_units = h.sum_us;
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SchedCollector>> SchedCollector::create(
    const SchedOptions& options) {
  // The tp_btf programs keep enqueue times in task storage (5.11+ for tracing programs); a
  // kernel with BTF tracepoints but without it takes the raw_tp path. Whether the three
  // btf_trace_* types exist is not probed (that needs a ~10 ms parse of vmlinux BTF next to
  // libbpf's own): the tp_btf load is tried, and raw_tp is loaded if it fails.
  bool btf = !options.force_raw_tp && compat::haveKernelBtf() &&
             libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, nullptr) == 1;
  sched_bpf* skel = nullptr;
  while (true) {
    skel = sched_bpf::open();
    if (skel == nullptr) {
      return bpfError("sched: open", -errno);
    }
    skel->rodata->targ_tgid = options.only_tgid;
    if (options.max_processes != 0) {
      bpf_map__set_max_entries(skel->maps.proc_stats, options.max_processes);
    }
    bpf_program__set_autoload(btf ? skel->progs.vigil_sched_raw : skel->progs.vigil_sched_btf,
                              false);
    bpf_program__set_autoload(btf ? skel->progs.vigil_wake_raw : skel->progs.vigil_wake_btf, false);
    bpf_program__set_autoload(btf ? skel->progs.vigil_wnew_raw : skel->progs.vigil_wnew_btf, false);
    // Enqueue times: task storage for tp_btf, an LRU hash for raw_tp; only one is created.
    bpf_map__set_autocreate(btf ? skel->maps.runq_start : skel->maps.runq_ts, false);
    int err = sched_bpf::load(skel);
    if (err == 0) {
      err = sched_bpf::attach(skel);
    }
    if (err == 0) {
      break;
    }
    sched_bpf::destroy(skel);
    if (!btf || err == -EPERM) {
      return bpfError("sched", err);
    }
    btf = false;  // a hook without BTF: retry with raw_tp
  }
  return std::unique_ptr<SchedCollector>(
      new SchedCollector(skel, btf ? "tp_btf" : "raw_tp", options));
}

SchedCollector::~SchedCollector() { sched_bpf::destroy(skel_); }

const bpf_object* SchedCollector::object() const { return skel_->obj; }

void SchedCollector::collect(Snapshot& out) {
  int fd = bpf_map__fd(skel_->maps.proc_stats);
  std::vector<uint32_t> gone;
  forEachPerCpu<uint32_t, sched_proc_stats>(
      fd, [&](const uint32_t& tgid, const std::vector<sched_proc_stats>& cpus) {
        ProcessStats& p = out.process(tgid);
        p.cpu_ns = 0;
        p.voluntary_switches = 0;
        p.involuntary_switches = 0;
        const char* kernel_comm = nullptr;
        for (const sched_proc_stats& v : cpus) {
          p.cpu_ns += v.oncpu_ns;
          p.voluntary_switches += v.voluntary_switches;
          p.involuntary_switches += v.involuntary_switches;
          if (kernel_comm == nullptr && v.comm[0] != '\0') {
            kernel_comm = v.comm;
          }
          if (v.cgroup_id != 0) {
            p.cgroup_id = v.cgroup_id;
          }
        }
        if (p.comm.empty()) {
          p.comm = reportedComm(tgid, kernel_comm ? kernel_comm : "", VIGIL_COMM_LEN);
        }
        // A reaped process can accrue no more time: report it this once, then retire it. A
        // zombie still answers kill(0), so its final switch has been counted by then.
        if (processGone(tgid)) {
          p.exited = true;
          gone.push_back(tgid);
        }
      });
  addRunningSlices(out);
  for (uint32_t tgid : gone) {
    bpf_map_delete_elem(fd, &tgid);
    last_cpu_ns_.erase(tgid);
  }
  collectRunqueue(out, gone);
  int counters = bpf_map__fd(skel_->maps.sched_counters);
  const std::pair<const char*, sched_counter> full[] = {
      {"sched_proc_stats", SCHED_COUNTER_PROC_MAP_FULL},
      {"sched_runq_start", SCHED_COUNTER_RUNQ_START_FULL},
      {"sched_runq_proc", SCHED_COUNTER_RUNQ_PROC_FULL},
      {"sched_runq_cgroup", SCHED_COUNTER_RUNQ_CGROUP_FULL},
  };
  for (const auto& [map, idx] : full) {
    out.self.push_back(MetricSample{"vigil_bpf_map_full_total",
                                    {{"map", map}},
                                    static_cast<double>(sumPerCpuCounter(counters, idx)),
                                    true});
  }
  appendProgramStats(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"sched", true, ""});
}

}  // namespace vigil

namespace vigil {

void SchedCollector::addRunningSlices(Snapshot& out) {
  // The kernel accounts a slice when the task leaves the CPU; add the slices still running so a
  // task that is never switched out is not invisible. Read after proc_stats: if a switch lands
  // in between, that slice is missing this once, and the clamp below keeps the counter from
  // going backwards until the kernel's total catches up.
  std::vector<sched_cpu_state> cpus(possibleCpus());
  uint32_t zero = 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + ts.tv_nsec;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.cpu_state), &zero, cpus.data()) == 0) {
    for (const sched_cpu_state& c : cpus) {
      if (c.tgid == 0 || c.switched_in_ns == 0 || now <= c.switched_in_ns) {
        continue;
      }
      if (options_.only_tgid != 0 && c.tgid != options_.only_tgid) {
        continue;
      }
      ProcessStats& p = out.process(c.tgid);
      if (p.comm.empty()) {
        p.comm = reportedComm(c.tgid, "", VIGIL_COMM_LEN);
      }
      p.cpu_ns += now - c.switched_in_ns;
    }
  }
  for (auto& [tgid, p] : out.processes) {
    uint64_t& last = last_cpu_ns_[tgid];
    if (p.cpu_ns < last) {
      p.cpu_ns = last;
    }
    last = p.cpu_ns;
  }
}

void SchedCollector::collectRunqueue(Snapshot& out, const std::vector<uint32_t>& gone) {
  // Host: a per-CPU array of one histogram.
  std::vector<sched_hist> cpus(possibleCpus());
  uint32_t zero = 0;
  sched_hist host{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.runq_host), &zero, cpus.data()) == 0) {
    for (const sched_hist& c : cpus) {
      for (int i = 0; i < SCHED_HIST_SLOTS; ++i) {
        host.slots[i] += c.slots[i];
      }
      host.sum_us += c.sum_us;
    }
  }
  out.histograms.push_back(toSample("vigil_runqueue_latency_seconds", {}, host));

  // Per cgroup. Removed cgroups would keep their entries forever, so an entry that has not
  // changed for kCgroupIdleCollects collections is deleted; if the cgroup wakes up again it
  // starts from zero (a counter reset to Prometheus).
  int cg_fd = bpf_map__fd(skel_->maps.runq_cgroup);
  absl::flat_hash_map<uint64_t, CgroupSeen> seen;
  for (const auto& [cgid, h] : readHash<uint64_t, sched_hist>(cg_fd)) {
    HistogramSample sample =
        toSample("vigil_cgroup_runqueue_latency_seconds", {{"cgroup_id", absl::StrCat(cgid)}}, h);
    CgroupSeen now{sample.count, 0};
    auto it = cgroups_seen_.find(cgid);
    if (it != cgroups_seen_.end() && it->second.count == sample.count) {
      now.idle_collects = it->second.idle_collects + 1;
    }
    if (now.idle_collects >= kCgroupIdleCollects) {
      bpf_map_delete_elem(cg_fd, &cgid);
      ++cgroups_evicted_;
      continue;
    }
    seen.emplace(cgid, now);
    out.histograms.push_back(std::move(sample));
  }
  cgroups_seen_ = std::move(seen);
  out.self.push_back(MetricSample{
      "vigil_runqueue_cgroups_evicted_total", {}, static_cast<double>(cgroups_evicted_), true});

  // Per process: the processes that waited longest, up to the cap.
  int proc_fd = bpf_map__fd(skel_->maps.runq_proc);
  auto procs = readHash<uint32_t, sched_hist>(proc_fd);
  std::sort(procs.begin(), procs.end(),
            [](const auto& a, const auto& b) { return a.second.sum_us > b.second.sum_us; });
  size_t dropped = 0;
  for (size_t i = 0; i < procs.size(); ++i) {
    uint32_t tgid = procs[i].first;
    if (i < options_.max_process_histograms) {
      auto it = out.processes.find(tgid);
      std::string comm = it != out.processes.end() ? it->second.comm : "";
      out.histograms.push_back(toSample("vigil_process_runqueue_latency_seconds",
                                        {{"pid", absl::StrCat(tgid)}, {"comm", comm}},
                                        procs[i].second));
    } else {
      ++dropped;
    }
    if (std::find(gone.begin(), gone.end(), tgid) != gone.end() || processGone(tgid)) {
      bpf_map_delete_elem(proc_fd, &tgid);
    }
  }
  out.self.push_back(MetricSample{
      "vigil_runqueue_process_histograms_dropped", {}, static_cast<double>(dropped), false});
}

}  // namespace vigil

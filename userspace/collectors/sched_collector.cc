#include "userspace/collectors/sched_collector.h"

#include <bpf/bpf.h>
#include <signal.h>

#include <cerrno>
#include <vector>

#include "kernel-compat/features.h"
#include "sched.skel.h"
#include "sched/sched.h"
#include "userspace/collectors/bpf_util.h"

namespace vigil {

absl::StatusOr<std::unique_ptr<SchedCollector>> SchedCollector::create(
    const SchedOptions& options) {
  sched_bpf* skel = sched_bpf::open();
  if (skel == nullptr) {
    return bpfError("sched: open", -errno);
  }
  skel->rodata->targ_tgid = options.only_tgid;
  bool btf = compat::haveBtfTracepoint("sched_switch");
  bpf_program__set_autoload(btf ? skel->progs.vigil_sched_raw : skel->progs.vigil_sched_btf, false);
  int err = sched_bpf::load(skel);
  if (err == 0) {
    err = sched_bpf::attach(skel);
  }
  if (err != 0) {
    sched_bpf::destroy(skel);
    return bpfError("sched", err);
  }
  return std::unique_ptr<SchedCollector>(new SchedCollector(skel, btf ? "tp_btf" : "raw_tp"));
}

SchedCollector::~SchedCollector() { sched_bpf::destroy(skel_); }

void SchedCollector::collect(Snapshot& out) {
  int fd = bpf_map__fd(skel_->maps.proc_stats);
  std::vector<uint32_t> gone;
  forEachPerCpu<uint32_t, sched_proc_stats>(
      fd, [&](const uint32_t& tgid, const std::vector<sched_proc_stats>& cpus) {
        ProcessStats& p = out.process(tgid);
        p.cpu_ns = 0;
        p.voluntary_switches = 0;
        p.involuntary_switches = 0;
        for (const sched_proc_stats& v : cpus) {
          p.cpu_ns += v.oncpu_ns;
          p.voluntary_switches += v.voluntary_switches;
          p.involuntary_switches += v.involuntary_switches;
          if (p.comm.empty() && v.comm[0] != '\0') {
            p.comm.assign(v.comm, strnlen(v.comm, sizeof(v.comm)));
          }
          if (v.cgroup_id != 0) {
            p.cgroup_id = v.cgroup_id;
          }
        }
        // A reaped process can accrue no more time: report it this once, then retire it. A
        // zombie still answers kill(0), so its final switch has been counted by then.
        if (kill(static_cast<pid_t>(tgid), 0) != 0 && errno == ESRCH) {
          p.exited = true;
          gone.push_back(tgid);
        }
      });
  for (uint32_t tgid : gone) {
    bpf_map_delete_elem(fd, &tgid);
  }
  out.self.push_back(
      MetricSample{"vigil_bpf_map_full_total",
                   {{"map", "sched_proc_stats"}},
                   static_cast<double>(sumPerCpuCounter(bpf_map__fd(skel_->maps.sched_counters),
                                                        SCHED_COUNTER_PROC_MAP_FULL)),
                   true});
  appendProgramStats(skel_->obj, out.self);
  out.collectors.push_back(CollectorState{"sched", true, ""});
}

}  // namespace vigil

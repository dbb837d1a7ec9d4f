// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Scheduler domain: on-CPU time and context switches per thread group, from sched_switch.
 *
 * Attached as tp_btf when the kernel has BTF for the tracepoint, raw_tp otherwise; both are
 * thin wrappers around on_switch(). Neither needs tracefs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "core_shims.bpf.h"
#include "common/maps.bpf.h"
#include "sched/sched.h"

#define MAX_PROCS 16384
#define TASK_RUNNING 0

/* Only account this tgid when non-zero (set by the CLI's --pid). */
const volatile __u32 targ_tgid = 0;

/* When the current task of each CPU was switched in. */
struct cpu_state {
  __u64 switched_in_ns;
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct cpu_state);
} cpu_state SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, MAX_PROCS);
  __type(key, __u32);
  __type(value, struct sched_proc_stats);
} proc_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SCHED_COUNTER_MAX);
  __type(key, __u32);
  __type(value, __u64);
} sched_counters SEC(".maps");

static __always_inline void account_prev(struct task_struct* prev, __u64 ran_ns) {
  struct sched_proc_stats *st, init = {};
  __u32 tgid = BPF_CORE_READ(prev, tgid);

  if (targ_tgid && tgid != targ_tgid) return;
  st = bpf_map_lookup_elem(&proc_stats, &tgid);
  if (!st) {
    struct task_struct* leader = BPF_CORE_READ(prev, group_leader);

    bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), &leader->comm);
    st = vigil_lookup_or_init(&proc_stats, &tgid, &init);
    if (!st) {
      vigil_count(&sched_counters, SCHED_COUNTER_PROC_MAP_FULL);
      return;
    }
  }
  /* Per-CPU value and the scheduler runs with preemption off: plain adds are safe. */
  st->oncpu_ns += ran_ns;
  if (vigil_task_state(prev) == TASK_RUNNING)
    st->involuntary_switches += 1;
  else
    st->voluntary_switches += 1;
  /* sched_switch fires before the context switch, so current is still prev. */
  st->cgroup_id = bpf_get_current_cgroup_id();
}

static __always_inline int on_switch(struct task_struct* prev, struct task_struct* next) {
  __u32 zero = 0;
  struct cpu_state* cs = bpf_map_lookup_elem(&cpu_state, &zero);
  __u64 now = bpf_ktime_get_ns();

  if (!cs) return 0;
  /* pid 0 is the idle task; the first switch after load has no start time. */
  if (BPF_CORE_READ(prev, pid) != 0 && cs->switched_in_ns != 0)
    account_prev(prev, now - cs->switched_in_ns);
  cs->switched_in_ns = now;
  return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(vigil_sched_btf, bool preempt, struct task_struct* prev, struct task_struct* next) {
  return on_switch(prev, next);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(vigil_sched_raw, bool preempt, struct task_struct* prev, struct task_struct* next) {
  return on_switch(prev, next);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Scheduler domain: on-CPU time and context switches per thread group, from sched_switch, and
 * run-queue latency (how long a runnable task waited for a CPU) as log2 histograms per thread
 * group, per cgroup and for the host.
 *
 * A task becomes runnable at sched_wakeup / sched_wakeup_new, or at sched_switch when it is
 * preempted and stays runnable; it stops waiting when sched_switch picks it as `next`.
 *
 * Attached as tp_btf when the kernel has BTF for the tracepoint, raw_tp otherwise; both are
 * thin wrappers around the same workers. Neither needs tracefs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "core_shims.bpf.h"
#include "common/bits.bpf.h"
#include "common/maps.bpf.h"
#include "sched/sched.h"

#define MAX_PROCS 16384
#define MAX_RUNQ_TASKS 16384
#define MAX_RUNQ_PROCS 8192
#define MAX_RUNQ_CGROUPS 1024
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

/*
 * Enqueue time per task (tid). LRU: an entry left behind (a task woken while still running
 * that then exits) ages out instead of filling the map; live entries live for one wait only.
 */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, MAX_RUNQ_TASKS);
  __type(key, __u32);
  __type(value, __u64);
} runq_start SEC(".maps");

/* Shared across CPUs (a per-CPU copy of 27 slots per process would not scale): atomic adds. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, MAX_RUNQ_PROCS);
  __type(key, __u32);
  __type(value, struct sched_hist);
} runq_proc SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, MAX_RUNQ_CGROUPS);
  __type(key, __u64);
  __type(value, struct sched_hist);
} runq_cgroup SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct sched_hist);
} runq_host SEC(".maps");

static __always_inline void runq_enqueued(struct task_struct* p, __u64 now) {
  __u32 tid = BPF_CORE_READ(p, pid);

  if (tid == 0) return;
  if (targ_tgid && BPF_CORE_READ(p, tgid) != targ_tgid) return;
  if (bpf_map_update_elem(&runq_start, &tid, &now, BPF_ANY))
    vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_START_FULL);
}

static __always_inline void hist_add_atomic(struct sched_hist* h, __u32 slot, __u64 us) {
  __sync_fetch_and_add(&h->slots[slot], 1);
  __sync_fetch_and_add(&h->sum_us, us);
}

static __always_inline void runq_dequeued(struct task_struct* next, __u64 now) {
  static const struct sched_hist zero_hist = {};
  struct sched_hist* h;
  __u32 tid = BPF_CORE_READ(next, pid), tgid, slot, zero = 0;
  __u64 *tsp, us, cgid;

  if (tid == 0) return;
  tsp = bpf_map_lookup_elem(&runq_start, &tid);
  if (!tsp) return;
  us = (now - *tsp) / 1000;
  bpf_map_delete_elem(&runq_start, &tid);
  slot = vigil_hist_slot(us, SCHED_HIST_SLOTS);

  h = bpf_map_lookup_elem(&runq_host, &zero);
  if (h) {
    /* Per-CPU copy, and sched_switch runs with interrupts off: plain adds are safe. */
    if (slot < SCHED_HIST_SLOTS) h->slots[slot] += 1;
    h->sum_us += us;
  }

  tgid = BPF_CORE_READ(next, tgid);
  h = vigil_lookup_or_init(&runq_proc, &tgid, &zero_hist);
  if (h) {
    if (slot < SCHED_HIST_SLOTS) hist_add_atomic(h, slot, us);
  } else {
    vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_PROC_FULL);
  }

  cgid = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
  h = vigil_lookup_or_init(&runq_cgroup, &cgid, &zero_hist);
  if (h) {
    if (slot < SCHED_HIST_SLOTS) hist_add_atomic(h, slot, us);
  } else {
    vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_CGROUP_FULL);
  }
}

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
  if (BPF_CORE_READ(prev, pid) != 0) {
    if (cs->switched_in_ns != 0) account_prev(prev, now - cs->switched_in_ns);
    /* Preempted but still runnable: it starts waiting for a CPU now. */
    if (vigil_task_state(prev) == TASK_RUNNING) runq_enqueued(prev, now);
  }
  runq_dequeued(next, now);
  cs->switched_in_ns = now;
  return 0;
}

static __always_inline int on_wakeup(struct task_struct* p) {
  runq_enqueued(p, bpf_ktime_get_ns());
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

SEC("tp_btf/sched_wakeup")
int BPF_PROG(vigil_wake_btf, struct task_struct* p) { return on_wakeup(p); }

SEC("raw_tp/sched_wakeup")
int BPF_PROG(vigil_wake_raw, struct task_struct* p) { return on_wakeup(p); }

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(vigil_wnew_btf, struct task_struct* p) { return on_wakeup(p); }

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(vigil_wnew_raw, struct task_struct* p) { return on_wakeup(p); }

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Scheduler domain: on-CPU time and context switches per thread group, from sched_switch, and
 * run-queue latency (how long a runnable task waited for a CPU) as log2 histograms per thread
 * group, per cgroup and for the host.
 *
 * A task becomes runnable at sched_wakeup / sched_wakeup_new, or at sched_switch when it is
 * preempted and stays runnable; it stops waiting when sched_switch picks it as `next`.
 *
 * Attached as tp_btf when the kernel has BTF for the tracepoints, raw_tp otherwise; both are
 * thin wrappers around the same workers, which take a constant `btf` flag. With it, task fields
 * are read by direct (BTF-checked) loads and enqueue times live in task storage; without it,
 * fields are read with bpf_probe_read and enqueue times go to an LRU hash keyed by tid. The
 * compiler drops the other branch from each program. Neither needs tracefs.
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

/* A task field: a direct load in tp_btf programs, a probe read in raw_tp ones. */
#define TASK_READ(btf, t, ...)                                                                     \
	((btf) ? BPF_CORE_READ_BTF(t, __VA_ARGS__) : BPF_CORE_READ(t, __VA_ARGS__))
#define BPF_CORE_READ_BTF(t, ...) ___direct(t, __VA_ARGS__)
#define ___direct1(t, a) (t)->a
#define ___direct2(t, a, b) (t)->a->b
#define ___direct3(t, a, b, c) (t)->a->b->c
#define ___direct4(t, a, b, c, d) (t)->a->b->c->d
#define ___direct_pick(_1, _2, _3, _4, N, ...) N
#define ___direct(t, ...)                                                                          \
	___direct_pick(__VA_ARGS__, ___direct4, ___direct3, ___direct2, ___direct1,                \
		       _)(t, __VA_ARGS__)

/* Only account this tgid when non-zero (set by the CLI's --pid). */
const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sched_cpu_state);
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

/* Enqueue time per task, tp_btf programs: lives and dies with the task. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} runq_ts SEC(".maps");

/*
 * Enqueue time per tid, raw_tp programs. LRU: an entry left behind (a task woken while still
 * running that then exits) ages out instead of filling the map; live entries last one wait.
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

static __always_inline __u32 task_state(struct task_struct *t, const bool btf)
{
	if (!btf)
		return vigil_task_state(t);
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return (__u32)((struct task_struct___pre_5_14 *)t)->state;
}

static __always_inline void runq_enqueued(struct task_struct *p, __u64 now, const bool btf)
{
	__u32 tid = TASK_READ(btf, p, pid);
	__u64 *ts;

	if (tid == 0)
		return;
	if (targ_tgid && TASK_READ(btf, p, tgid) != targ_tgid)
		return;
	if (btf) {
		ts = bpf_task_storage_get(&runq_ts, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (ts)
			*ts = now;
		else
			vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_START_FULL);
	} else if (bpf_map_update_elem(&runq_start, &tid, &now, BPF_ANY)) {
		vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_START_FULL);
	}
}

static __always_inline void hist_add_atomic(struct sched_hist *h, __u32 slot, __u64 us)
{
	if (slot >= SCHED_HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum_us, us);
}

static __noinline void runq_account(__u32 tgid, __u64 cgid, __u64 us)
{
	static const struct sched_hist zero_hist = {};
	struct sched_hist *h;
	__u32 slot = vigil_hist_slot(us, SCHED_HIST_SLOTS), zero = 0;

	h = bpf_map_lookup_elem(&runq_host, &zero);
	if (h && slot < SCHED_HIST_SLOTS) {
		/* Per-CPU copy, and sched_switch runs with interrupts off: plain adds are safe. */
		h->slots[slot] += 1;
		h->sum_us += us;
	}
	h = vigil_lookup_or_init(&runq_proc, &tgid, &zero_hist);
	if (h)
		hist_add_atomic(h, slot, us);
	else
		vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_PROC_FULL);
	h = vigil_lookup_or_init(&runq_cgroup, &cgid, &zero_hist);
	if (h)
		hist_add_atomic(h, slot, us);
	else
		vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_CGROUP_FULL);
}

static __always_inline void runq_dequeued(struct task_struct *next, __u64 now, const bool btf)
{
	__u32 tid = TASK_READ(btf, next, pid);
	__u64 *tsp, start;

	if (tid == 0)
		return;
	if (btf) {
		tsp = bpf_task_storage_get(&runq_ts, next, 0, 0);
		if (!tsp || !*tsp)
			return;
		start = *tsp;
		*tsp = 0;
	} else {
		tsp = bpf_map_lookup_elem(&runq_start, &tid);
		if (!tsp)
			return;
		start = *tsp;
		bpf_map_delete_elem(&runq_start, &tid);
	}
	runq_account(TASK_READ(btf, next, tgid), TASK_READ(btf, next, cgroups, dfl_cgrp, kn, id),
		     (now - start) / 1000);
}

static __always_inline void account_prev(struct task_struct *prev, __u64 ran_ns, const bool btf)
{
	struct sched_proc_stats *st, init = {};
	__u32 tgid = TASK_READ(btf, prev, tgid);

	if (targ_tgid && tgid != targ_tgid)
		return;
	st = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!st) {
		struct task_struct *leader = BPF_CORE_READ(prev, group_leader);

		bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), &leader->comm);
		st = vigil_lookup_or_init(&proc_stats, &tgid, &init);
		if (!st) {
			vigil_count(&sched_counters, SCHED_COUNTER_PROC_MAP_FULL);
			return;
		}
	}
	/* Per-CPU value and the scheduler runs with preemption off: plain adds are safe. */
	st->oncpu_ns += ran_ns;
	if (task_state(prev, btf) == TASK_RUNNING)
		st->involuntary_switches += 1;
	else
		st->voluntary_switches += 1;
	/* The process may have moved: refresh. (A direct load under tp_btf; the helper otherwise,
	 * as sched_switch fires before the context switch and current is still prev.) */
	st->cgroup_id = btf ? prev->cgroups->dfl_cgrp->kn->id : bpf_get_current_cgroup_id();
}

static __always_inline int on_switch(struct task_struct *prev, struct task_struct *next,
				     const bool btf)
{
	__u32 zero = 0;
	struct sched_cpu_state *cs = bpf_map_lookup_elem(&cpu_state, &zero);
	__u64 now = bpf_ktime_get_ns();

	if (!cs)
		return 0;
	/* pid 0 is the idle task; the first switch after load has no start time. */
	if (TASK_READ(btf, prev, pid) != 0) {
		if (cs->switched_in_ns != 0)
			account_prev(prev, now - cs->switched_in_ns, btf);
		/* Preempted but still runnable: it starts waiting for a CPU now. */
		if (task_state(prev, btf) == TASK_RUNNING)
			runq_enqueued(prev, now, btf);
	}
	runq_dequeued(next, now, btf);
	cs->switched_in_ns = now;
	cs->tgid = TASK_READ(btf, next, pid) != 0 ? TASK_READ(btf, next, tgid) : 0;
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(vigil_sched_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, true);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(vigil_sched_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return on_switch(prev, next, false);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(vigil_wake_btf, struct task_struct *p)
{
	runq_enqueued(p, bpf_ktime_get_ns(), true);
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(vigil_wake_raw, struct task_struct *p)
{
	runq_enqueued(p, bpf_ktime_get_ns(), false);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(vigil_wnew_btf, struct task_struct *p)
{
	runq_enqueued(p, bpf_ktime_get_ns(), true);
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(vigil_wnew_raw, struct task_struct *p)
{
	runq_enqueued(p, bpf_ktime_get_ns(), false);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

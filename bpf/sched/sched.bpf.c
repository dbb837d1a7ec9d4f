// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Scheduler domain: on-CPU time, voluntary and involuntary context switches and run-queue
 * latency (how long a runnable task waited for a CPU, log2 histograms) per thread group, per
 * cgroup and for the host.
 *
 * Two designs, picked at load time (docs/metrics.md, "Scheduler"):
 *
 * tp_btf (kernels with BTF, task storage, bpf_iter and schedstat's sched_info): the kernel
 * already keeps per task what the hot path used to compute. se.sum_exec_runtime is the task's
 * on-CPU time, nvcsw/nivcsw its switches, and sched_info.run_delay the sum of its run-queue
 * waits (updated when it is switched in, and when a waiting task migrates). So sched_switch
 * only turns run_delay's growth since the task's last switch-out into one histogram sample, in
 * the task's own task-storage value: no clock read, no shared map, no atomics, one
 * task-storage lookup. No program runs on sched_wakeup/sched_wakeup_new. Task storage is
 * created at fork (sched_process_fork), for tasks that existed before load by the task
 * iterator, and on a miss in sched_switch (tasks created without the fork tracepoint, e.g.
 * io_uring and vhost workers). Userspace reads every task's totals with the iter/task program
 * each collection; a thread that exits first folds its totals into `exited` (keyed by thread
 * group) at sched_process_exit.
 *
 * raw_tp (no BTF): the previous design, kept as the fallback. Fields are read with
 * bpf_probe_read; on-CPU time and switches accumulate per tgid in a per-CPU hash, enqueue times
 * (sched_wakeup, sched_wakeup_new, preemption) in an LRU hash keyed by tid, and run-queue
 * histograms in hashes per tgid and per cgroup. Neither design needs tracefs.
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCHED_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sched_counters SEC(".maps");

/* Maps of the raw_tp path; the tp_btf path does not create them. */
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

/* ---- raw_tp path ---------------------------------------------------------------------- */

static __always_inline void raw_enqueued(struct task_struct *p, __u64 now)
{
	__u32 tid = BPF_CORE_READ(p, pid);

	if (tid == 0)
		return;
	if (targ_tgid && BPF_CORE_READ(p, tgid) != targ_tgid)
		return;
	if (bpf_map_update_elem(&runq_start, &tid, &now, BPF_ANY))
		vigil_count(&sched_counters, SCHED_COUNTER_RUNQ_START_FULL);
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

static __always_inline void raw_dequeued(struct task_struct *next, __u64 now)
{
	__u32 tid = BPF_CORE_READ(next, pid);
	__u64 *tsp, start;

	if (tid == 0)
		return;
	tsp = bpf_map_lookup_elem(&runq_start, &tid);
	if (!tsp)
		return;
	start = *tsp;
	bpf_map_delete_elem(&runq_start, &tid);
	runq_account(BPF_CORE_READ(next, tgid), BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id),
		     (now - start) / 1000);
}

static __always_inline void raw_account_prev(struct task_struct *prev, __u64 ran_ns)
{
	struct sched_proc_stats *st, init = {};
	__u32 tgid = BPF_CORE_READ(prev, tgid);

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
	if (vigil_task_state(prev) == TASK_RUNNING)
		st->involuntary_switches += 1;
	else
		st->voluntary_switches += 1;
	/* The process may have moved: refresh. sched_switch fires before the context switch, so
	 * current is still prev. */
	st->cgroup_id = bpf_get_current_cgroup_id();
}

SEC("raw_tp/sched_switch")
int BPF_PROG(vigil_sched_raw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	struct sched_cpu_state *cs = bpf_map_lookup_elem(&cpu_state, &zero);
	__u64 now = bpf_ktime_get_ns();

	if (!cs)
		return 0;
	/* pid 0 is the idle task; the first switch after load has no start time. */
	if (BPF_CORE_READ(prev, pid) != 0) {
		if (cs->switched_in_ns != 0)
			raw_account_prev(prev, now - cs->switched_in_ns);
		/* Preempted but still runnable: it starts waiting for a CPU now. */
		if (vigil_task_state(prev) == TASK_RUNNING)
			raw_enqueued(prev, now);
	}
	raw_dequeued(next, now);
	cs->switched_in_ns = now;
	cs->tgid = BPF_CORE_READ(next, pid) != 0 ? BPF_CORE_READ(next, tgid) : 0;
	return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(vigil_wake_raw, struct task_struct *p)
{
	raw_enqueued(p, bpf_ktime_get_ns());
	return 0;
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(vigil_wnew_raw, struct task_struct *p)
{
	raw_enqueued(p, bpf_ktime_get_ns());
	return 0;
}

/* ---- tp_btf path ----------------------------------------------------------------------- */

/* Tasks started at or after this CLOCK_MONOTONIC time count from birth; older ones from the
 * moment their task storage is created (at load, by the iterator). Set before load. */
const volatile __u64 load_ns = 0;

/*
 * Per-task state (tp_btf). Kernel only: userspace reads it through vigil_sched_iter. The kernel
 * puts a task-storage value right after an 8-byte header at the start of a cache line
 * (bpf_local_storage_elem::sdata is ____cacheline_aligned), so everything sched_switch reads or
 * writes comes first: seen_delay, wait_sum_ns, ready and the four smallest slots (waits under
 * 16 us, the common case) share that one line.
 */
#define SCHED_HOT_SLOTS 4
struct sched_task {
	__u64 seen_delay; /* sched_info.run_delay already turned into histogram samples */
	__u64 wait_sum_ns;
	__u32 ready; /* bases below are set */
	__u32 folded; /* the task exited and its totals went into `exited` */
	__u64 slots[SCHED_HIST_SLOTS];
	__u64 base_cpu_ns; /* se.sum_exec_runtime, nvcsw, nivcsw when accounting started */
	__u64 base_nvcsw;
	__u64 base_nivcsw;
};
_Static_assert(__builtin_offsetof(struct sched_task, slots[SCHED_HOT_SLOTS]) <= 56,
	       "the hot fields of sched_task no longer share the header's cache line");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sched_task);
} task_sched SEC(".maps");

/* Totals of threads that have exited, per thread group (and leader start time, so a reused pid
 * is a different key). Written on the rare exit path; userspace deletes an entry once it has
 * reported the process gone. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_PROCS);
	__type(key, struct sched_exited_key);
	__type(value, struct sched_totals);
} exited SEC(".maps");

static __always_inline void task_init(struct sched_task *st, struct task_struct *t)
{
	if (t->start_time >= load_ns) {
		/* Born since load (zeroed storage): everything it did counts. */
		st->ready = 1;
		return;
	}
	st->seen_delay = t->sched_info.run_delay;
	st->base_cpu_ns = t->se.sum_exec_runtime;
	st->base_nvcsw = t->nvcsw;
	st->base_nivcsw = t->nivcsw;
	st->ready = 1;
}

/* The task's state, created (zeroed) when missing. NULL only when the kernel could not
 * allocate it, which is counted. */
static __always_inline struct sched_task *task_get(struct task_struct *t)
{
	struct sched_task *st =
		bpf_task_storage_get(&task_sched, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!st) {
		vigil_count(&sched_counters, SCHED_COUNTER_TASK_STORAGE_FULL);
		return NULL;
	}
	if (!st->ready)
		task_init(st, t);
	return st;
}

/* One run-queue wait: the growth of run_delay since the last sample. */
static __always_inline void record_wait(struct sched_task *st, __u64 delay)
{
	__u64 w = delay - st->seen_delay;
	__u32 slot = vigil_hist_slot(w / 1000, SCHED_HIST_SLOTS);

	st->seen_delay = delay;
	st->wait_sum_ns += w;
	if (slot < SCHED_HIST_SLOTS)
		st->slots[slot] += 1;
}

/*
 * The hot path. A task's waits end when it is switched in (sched_info_arrive adds the wait to
 * run_delay right after this tracepoint), so the wait before its current run is complete when
 * it is switched out: that is when it becomes a sample. The idle task never waits
 * (run_delay 0). On-CPU time and switch counts need nothing here: the kernel keeps them.
 */
SEC("tp_btf/sched_switch")
int BPF_PROG(vigil_sched_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 delay = prev->sched_info.run_delay;
	struct sched_task *st;

	if (!delay)
		return 0;
	if (targ_tgid && prev->tgid != targ_tgid)
		return 0;
	st = task_get(prev);
	if (st && st->seen_delay != delay)
		record_wait(st, delay);
	return 0;
}

/* Creates the child's state at fork, so the ~1 us allocation is not on sched_switch. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(vigil_sfork_btf, struct task_struct *parent, struct task_struct *child)
{
	if (targ_tgid && child->tgid != targ_tgid)
		return 0;
	task_get(child);
	return 0;
}

static __always_inline void fill_totals(struct sched_totals *out, struct task_struct *t,
					struct sched_task *st)
{
	struct task_struct *leader = t->group_leader;

	out->tgid = t->tgid;
	out->start_ns = leader->start_time;
	out->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	out->cpu_ns = t->se.sum_exec_runtime - st->base_cpu_ns;
	out->voluntary_switches = t->nvcsw - st->base_nvcsw;
	out->involuntary_switches = t->nivcsw - st->base_nivcsw;
	out->wait_sum_ns = st->wait_sum_ns;
	bpf_probe_read_kernel(out->comm, sizeof(out->comm), leader->comm);
}

/* A thread exits: fold its totals into its thread group's `exited` entry (a rare path). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(vigil_sexit_btf, struct task_struct *p)
{
	struct sched_exited_key key = {};
	struct sched_totals init = {}, *e;
	struct sched_task *st;
	__u64 delay;
	int i;

	if (targ_tgid && p->tgid != targ_tgid)
		return 0;
	st = task_get(p);
	if (!st || st->folded)
		return 0;
	delay = p->sched_info.run_delay;
	if (delay != st->seen_delay)
		record_wait(st, delay);
	fill_totals(&init, p, st);
	key.tgid = init.tgid;
	key.start_ns = init.start_ns;
	e = bpf_map_lookup_elem(&exited, &key);
	if (!e) {
		__builtin_memcpy(init.slots, st->slots, sizeof(init.slots));
		if (bpf_map_update_elem(&exited, &key, &init, BPF_NOEXIST) == 0) {
			st->folded = 1;
			return 0;
		}
		/* Another thread of the group inserted it first, or the map is full. */
		e = bpf_map_lookup_elem(&exited, &key);
		if (!e) {
			vigil_count(&sched_counters, SCHED_COUNTER_EXITED_FULL);
			return 0;
		}
	}
	/* Threads of one group can exit on several CPUs at once. */
	__sync_fetch_and_add(&e->cpu_ns, init.cpu_ns);
	__sync_fetch_and_add(&e->voluntary_switches, init.voluntary_switches);
	__sync_fetch_and_add(&e->involuntary_switches, init.involuntary_switches);
	__sync_fetch_and_add(&e->wait_sum_ns, init.wait_sum_ns);
	for (i = 0; i < SCHED_HIST_SLOTS; i++) {
		if (st->slots[i])
			__sync_fetch_and_add(&e->slots[i], st->slots[i]);
	}
	st->folded = 1;
	return 0;
}

/*
 * One record per live thread (a thread already folded into `exited` is skipped). Also creates
 * the state of tasks that have none: every task at the first run after load, and any task a
 * failed allocation left without.
 */
SEC("iter/task")
int vigil_sched_iter(struct bpf_iter__task *ctx)
{
	struct task_struct *t = ctx->task;
	struct sched_totals rec = {};
	struct sched_task *st;

	if (!t)
		return 0;
	if (targ_tgid && t->tgid != targ_tgid)
		return 0;
	st = task_get(t);
	if (!st || st->folded)
		return 0;
	fill_totals(&rec, t, st);
	rec.tid = t->pid;
	__builtin_memcpy(rec.slots, st->slots, sizeof(rec.slots));
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

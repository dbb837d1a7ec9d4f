// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Cost probes for tp_btf/sched_switch: each program does one piece of what a run-queue design
 * could do (load a field, look up task storage, update a per-CPU entry), so that bpf_stats
 * shows what each piece costs against an empty program on the same events. Not used by the
 * agent: run by `sched_collector_test "[cost-probes]"`, and the figures are in
 * docs/metrics.md ("Scheduler", cost). The per-CPU programs are cost models only: they do not
 * keep exact histograms (no migration hand-off, no reader).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "common/bits.bpf.h"
#include "sched/sched.h"

/* Shaped like sched.bpf.c's struct sched_task, so the lookups walk the same kind of value. */
struct probe_task {
	__u64 seen_delay;
	__u64 wait_sum_ns;
	__u32 ready;
	__u32 folded;
	__u64 slots[SCHED_HIST_SLOTS];
	__u64 base[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct probe_task);
} probe_ts SEC(".maps");

/* One 64-byte entry per (CPU, tid modulo 64); the loader sets max_entries to 64 x CPUs. */
#define PROBE_TAB_BITS 6
struct probe_entry {
	__u32 tid;
	__u32 pad;
	__u64 pcount; /* sched_info.pcount at the last sample */
	__u64 seen_delay;
	__u64 wait_sum_ns;
	__u64 slots[4];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 << PROBE_TAB_BITS);
	__type(key, __u32);
	__type(value, struct probe_entry);
} probe_tab SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 << PROBE_TAB_BITS);
	__type(key, __u32);
	__type(value, __u64[SCHED_HIST_SLOTS]);
} probe_tab_hi SEC(".maps");

/* Per CPU (the first two): [0] fast-path hits, [1] entry of another task or stale (task
 * storage read), [2] the same without task storage. */
__u64 probe_hits[2][8] SEC(".data.hits") = {};

volatile __u64 probe_sink;

#define PROBE(name)                                                                                \
	SEC("tp_btf/sched_switch")                                                                 \
	int BPF_PROG(name, bool preempt, struct task_struct *prev, struct task_struct *next)

PROBE(probe_empty)
{
	return 0;
}

/* The field the current design reads first. */
PROBE(probe_prev_delay)
{
	probe_sink = prev->sched_info.run_delay;
	return 0;
}

/* What a switch-in design reads: the incoming task's enqueue time ... */
PROBE(probe_next_queued)
{
	probe_sink = next->sched_info.last_queued;
	return 0;
}

/* ... and the wait itself, rq->clock - last_queued (rq through se.cfs_rq). */
PROBE(probe_next_wait)
{
	probe_sink = next->se.cfs_rq->rq->clock - next->sched_info.last_queued;
	return 0;
}

/* The least any per-task design does: prev's fields and one read-modify-write of one entry. */
PROBE(probe_entry_rmw)
{
	__u32 idx = (bpf_get_smp_processor_id() << PROBE_TAB_BITS) |
		    (prev->pid & ((1 << PROBE_TAB_BITS) - 1));
	struct probe_entry *e = bpf_map_lookup_elem(&probe_tab, &idx);

	if (e)
		e->wait_sum_ns += prev->sched_info.run_delay + prev->sched_info.pcount;
	return 0;
}

/* bpf_task_storage_get alone (F_CREATE, as sched.bpf.c), reading one field. */
PROBE(probe_ts_lookup)
{
	struct probe_task *st;

	if (!prev->sched_info.run_delay)
		return 0;
	st = bpf_task_storage_get(&probe_ts, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (st)
		probe_sink = st->seen_delay;
	return 0;
}

static __always_inline __u32 probe_slot(__u64 w)
{
	return vigil_hist_slot(w / 1000, SCHED_HIST_SLOTS);
}

/* sched.bpf.c's hot path (vigil_sched_btf) on its own map. */
PROBE(probe_ts_design)
{
	__u64 delay = prev->sched_info.run_delay, w;
	struct probe_task *st;
	__u32 slot;

	if (!delay)
		return 0;
	st = bpf_task_storage_get(&probe_ts, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st || st->seen_delay == delay)
		return 0;
	w = delay - st->seen_delay;
	slot = probe_slot(w);
	st->seen_delay = delay;
	st->wait_sum_ns += w;
	if (slot < SCHED_HIST_SLOTS)
		st->slots[slot] += 1;
	return 0;
}

static __noinline int probe_entry_miss(struct task_struct *t, struct probe_entry *e, __u32 tid,
				       __u32 cpu, __u64 delay)
{
	struct probe_task *st = bpf_task_storage_get(&probe_ts, t, 0, 0);

	probe_hits[cpu & 1][st ? 1 : 2] += 1;
	e->tid = tid;
	/* Without storage (a task older than the probes): start from now, as the iterator would. */
	e->seen_delay = st ? st->seen_delay : delay;
	return 0;
}

/*
 * A per-CPU design's hot path: the entry of (this CPU, tid) holds the task's last sample when
 * its pcount says the task has not run elsewhere since; otherwise task storage is read.
 */
PROBE(probe_pcpu_design)
{
	__u64 delay = prev->sched_info.run_delay, pc = prev->sched_info.pcount, w;
	__u32 tid = prev->pid, cpu = bpf_get_smp_processor_id(), idx, slot;
	struct probe_entry *e;
	__u64 *hi;

	if (!delay)
		return 0;
	idx = (cpu << PROBE_TAB_BITS) | (tid & ((1 << PROBE_TAB_BITS) - 1));
	e = bpf_map_lookup_elem(&probe_tab, &idx);
	if (!e)
		return 0;
	if (e->tid == tid && e->pcount + 1 == pc)
		probe_hits[cpu & 1][0] += 1;
	else
		probe_entry_miss(prev, e, tid, cpu, delay);
	w = delay - e->seen_delay;
	slot = probe_slot(w);
	e->seen_delay = delay;
	e->pcount = pc;
	e->wait_sum_ns += w;
	if (slot < 4) {
		e->slots[slot] += 1;
	} else if (slot < SCHED_HIST_SLOTS) {
		hi = bpf_map_lookup_elem(&probe_tab_hi, &idx);
		if (hi)
			hi[slot] += 1;
	}
	return 0;
}

/* The same with the whole histogram in a 256-byte entry (four lines of one page). */
struct probe_wide {
	__u32 tid;
	__u32 pad;
	__u64 pcount;
	__u64 seen_delay;
	__u64 wait_sum_ns;
	__u64 slots[SCHED_HIST_SLOTS];
	__u64 pad2;
};
_Static_assert(sizeof(struct probe_wide) == 256, "probe_wide is four cache lines");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 << PROBE_TAB_BITS);
	__type(key, __u32);
	__type(value, struct probe_wide);
} probe_wide_tab SEC(".maps");

/* floor(log2(floor(w / 1000))) clamped, without the division (see sched.bpf.c's history). */
static __always_inline __u32 probe_slot_nodiv(__u64 w)
{
	__u32 k = vigil_log2l(w), i;

	if (k < 10)
		return 0;
	if (k >= SCHED_HIST_SLOTS + 9)
		return SCHED_HIST_SLOTS - 1;
	i = k - 9;
	if (w < (1000ULL << i))
		i -= 1;
	return i;
}

static __noinline int probe_wide_miss(struct task_struct *t, struct probe_wide *e, __u32 tid,
				      __u64 delay)
{
	struct probe_task *st = bpf_task_storage_get(&probe_ts, t, 0, 0);

	e->tid = tid;
	e->seen_delay = st ? st->seen_delay : delay;
	return 0;
}

static __always_inline void probe_wide_run(struct task_struct *prev, bool nodiv)
{
	__u64 delay = prev->sched_info.run_delay, pc = prev->sched_info.pcount, w;
	__u32 tid = prev->pid, idx, slot;
	struct probe_wide *e;

	if (!delay)
		return;
	idx = (bpf_get_smp_processor_id() << PROBE_TAB_BITS) | (tid & ((1 << PROBE_TAB_BITS) - 1));
	e = bpf_map_lookup_elem(&probe_wide_tab, &idx);
	if (!e)
		return;
	if (e->tid != tid || e->pcount + 1 != pc)
		probe_wide_miss(prev, e, tid, delay);
	w = delay - e->seen_delay;
	slot = nodiv ? probe_slot_nodiv(w) : probe_slot(w);
	e->seen_delay = delay;
	e->pcount = pc;
	e->wait_sum_ns += w;
	if (slot < SCHED_HIST_SLOTS)
		e->slots[slot] += 1;
}

PROBE(probe_pcpu_wide)
{
	probe_wide_run(prev, false);
	return 0;
}

PROBE(probe_pcpu_nodiv)
{
	probe_wide_run(prev, true);
	return 0;
}

/*
 * One line per task, shared by all CPUs: a table indexed by tid (direct-mapped, tagged), with
 * the histogram packed as 12-bit counters (five per word) and a 32-bit wait sum, spilled to
 * task storage when one would overflow (a rare path, with prev's pointer at hand).
 */
#define PROBE_PACKED_BITS 16
struct probe_packed {
	__u32 tid;
	__u32 sum_ns; /* low part of the wait sum since the last spill */
	__u64 seen_delay;
	__u64 w[6]; /* slot s: bits 12 * (s % 5) of w[s / 5] */
};
_Static_assert(sizeof(struct probe_packed) == 64, "probe_packed is one cache line");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << PROBE_PACKED_BITS);
	__type(key, __u32);
	__type(value, struct probe_packed);
} probe_packed_tab SEC(".maps");

static __noinline int probe_packed_miss(struct task_struct *t, struct probe_packed *e, __u32 tid,
					__u64 delay)
{
	struct probe_task *st = bpf_task_storage_get(&probe_ts, t, 0, 0);

	e->tid = tid;
	e->seen_delay = st ? st->seen_delay : delay;
	return 0;
}

static __noinline int probe_packed_spill(struct task_struct *t, struct probe_packed *e)
{
	struct probe_task *st = bpf_task_storage_get(&probe_ts, t, 0, 0);

	if (st)
		st->wait_sum_ns += e->sum_ns;
	e->sum_ns = 0;
	e->w[0] = e->w[1] = e->w[2] = e->w[3] = e->w[4] = e->w[5] = 0;
	return 0;
}

PROBE(probe_packed)
{
	__u64 delay = prev->sched_info.run_delay, w, word;
	__u32 tid = prev->pid, idx = tid & ((1 << PROBE_PACKED_BITS) - 1), slot, sh, k;
	struct probe_packed *e;

	if (!delay)
		return 0;
	e = bpf_map_lookup_elem(&probe_packed_tab, &idx);
	if (!e)
		return 0;
	if (e->tid != tid)
		probe_packed_miss(prev, e, tid, delay);
	w = delay - e->seen_delay;
	slot = probe_slot_nodiv(w);
	k = ((slot * 205) >> 10) & 7; /* slot / 5 for slot < 27, without a division */
	sh = ((slot - k * 5) * 12) & 63;
	if (k >= 6)
		return 0;
	word = e->w[k];
	if (((word >> sh) & 0xfff) == 0xfff || w >= 0xffffffffULL - e->sum_ns) {
		probe_packed_spill(prev, e);
		word = 0;
	}
	e->seen_delay = delay;
	e->sum_ns += w;
	e->w[k] = word + (1ULL << sh);
	return 0;
}

/* Code size alone: ~500 bytes of straight-line ALU work on a field already loaded, no memory. */
PROBE(probe_alu)
{
	__u64 v = prev->sched_info.run_delay, acc = 0;

#pragma unroll
	for (int i = 0; i < 6; i++)
		acc += probe_slot_nodiv(v + i * 977) ^ (v >> (i + 3));
	probe_sink = acc;
	return 0;
}

/* Storage for new tasks at fork, as the collector does. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_fork, struct task_struct *parent, struct task_struct *child)
{
	bpf_task_storage_get(&probe_ts, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

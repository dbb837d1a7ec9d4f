// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Syscalls domain: per-process syscall and failure counts, failures per errno, and a host-wide
 * syscall latency histogram, from raw_syscalls sys_enter / sys_exit.
 *
 * Cost is the point of this file. Any program on raw_syscalls puts every syscall of every task
 * on the tracepoint slow path, so the agent attaches these programs only part of the time by
 * default (duty cycle, see docs/syscall-sampling.md), and what runs per event is kept to what
 * an empty program costs plus about half of it (measured with bpf_stats, numbers in
 * docs/syscall-sampling.md). On this hardware a helper call that touches the task, the clock
 * or task storage costs 20-60 ns, as much as the empty program itself, so the hot paths make
 * at most one helper call:
 *
 * - sys_exit counts every syscall exactly, into per-CPU direct-mapped slots for the last thread
 *   groups seen on the CPU (an array lookup the verifier inlines); the per-process hash is
 *   touched only when a slot changes hands; the errno map on failures only.
 * - Latency is sampled: sys_enter only decrements a per-CPU countdown and, one syscall in
 *   `latency_every` (random gaps averaging that), stamps thread id and time into the global
 *   `pending` table; sys_exit compares its thread id with one slot of it (a plain load) and
 *   reads the clock only on a match. With latency_every == 1 (`vigil hist syscall`), every
 *   syscall is timed through task storage instead (exact, 2-3x an empty program).
 *
 * No ring buffer, no locks. tp_btf when the kernel has BTF for the tracepoints, raw_tp
 * otherwise; thin wrappers around on_enter_*() / on_exit().
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "common/bits.bpf.h"
#include "common/maps.bpf.h"
#include "syscalls/syscalls.h"

#define MAX_PROCS 16384
#define MAX_ERRNO_KEYS 16384
#define MAX_ERRNO 4095
/* A pending latency sample older than this is taken as lost (its thread died in the syscall). */
#define PENDING_EXPIRE_NS (64ULL * 1000000000ULL)

/* Only account this tgid when non-zero (the CLI's --pid). */
const volatile __u32 targ_tgid = 0;
/* Sample the latency of one syscall in this many on average (sampled-latency programs). */
const volatile __u32 latency_every = 64;
/* exit and exit_group never return: never sampled (set by userspace for the native ABI). */
const volatile __s64 nr_exit = -1;
const volatile __s64 nr_exit_group = -1;

/* Set by userspace when vigil_syscur_btf is loaded (tp_btf): sys_cache's cur_* can be used. */
const volatile bool have_cur = false;

/*
 * Offset of a task's user pt_regs (task_pt_regs(), the `regs` argument of the syscall
 * tracepoints) from its kernel stack base: THREAD_SIZE minus the pt_regs, a build constant of
 * the kernel, learnt at the first sys_exit rather than assumed. 0 until then.
 */
__u64 regs_off = 0;

/*
 * Bumped by userspace (through the mmap'ed .bss) each time it attaches the programs. A start
 * time from an earlier window belongs to a syscall whose exit we did not see; it is ignored.
 */
__u64 window = 0;

/* Latency samples in flight, see struct syscall_pending. */
struct syscall_pending pending[SYSCALL_PENDING_SLOTS];

/*
 * Plain preallocated hashes updated with atomic adds: they are written only when a sys_cache slot
 * changes hands or an errno run ends (well under 1 % of syscalls), so the atomics cost nothing
 * measurable, while an insert takes a preallocated element instead of allocating per-CPU
 * memory. Per-CPU hashes with BPF_F_NO_PREALLOC made every new process's first syscall exit cost
 * microseconds, which an exec storm turned into +25 ns per event on average. Preallocation
 * costs ~1.6 MB (sys_proc) and ~1 MB (sys_errno) of kernel memory, whatever the CPU count.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, struct syscall_proc_stats);
} sys_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_cache);
} sys_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ERRNO_KEYS);
	__type(key, struct syscall_errno_key);
	__type(value, __u64);
} sys_errno SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscall_hist);
} sys_latency SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct syscall_start);
} sys_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SYSCALL_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sys_counters SEC(".maps");

/*
 * The current task's pid_tgid, the slow way: the helper call (~19 ns here, as much as a third of
 * what the whole exit program may cost). With vigil_syscur_btf loaded it also records the
 * current task in the CPU's cur_* fields, so the following syscalls of this task skip it even
 * before the next context switch refreshes them.
 */
static __noinline __u64 ids_slow(struct syscall_cache *c, __u64 regs)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct task_struct *task;

	if (!have_cur)
		return pid_tgid;
	vigil_count(&sys_counters, SYSCALL_COUNTER_IDS_MISS);
	task = bpf_get_current_task_btf();
	regs_off = regs - (__u64)task->stack;
	c->cur_regs = regs;
	c->cur_tid = (__u32)pid_tgid;
	c->cur_tgid = pid_tgid >> 32;
	c->cur_window = window;
	return pid_tgid;
}

/*
 * The current task's pid_tgid without a helper call: vigil_syscur_btf wrote the ids of the task
 * it switched to, with the address of that task's user pt_regs. The syscall tracepoints pass
 * the current task's pt_regs, which no other live task shares, so a match of both that address
 * and the attach window means the ids are the current task's. (A stale entry could only match
 * a new task that reuses a dead task's kernel stack, and that task starts running through a
 * context switch, which rewrites the entry.)
 */
static __always_inline __u64 current_ids(struct syscall_cache *c, __u64 regs)
{
	if (have_cur && c->cur_regs == regs && c->cur_window == window)
		return (__u64)c->cur_tgid << 32 | c->cur_tid;
	return ids_slow(c, regs);
}

/* Exact latency: every syscall's start time, in task storage. */
static __always_inline int on_enter_exact(void)
{
	struct syscall_start *s;

	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;
	s = bpf_task_storage_get(&sys_start, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		vigil_count(&sys_counters, SYSCALL_COUNTER_START_FAILED);
		return 0;
	}
	s->ts = bpf_ktime_get_ns();
	s->window = window;
	return 0;
}

/* Stamps one syscall in latency_every (on average) into `pending`. */
static __noinline void stamp_sample(struct syscall_cache *c, long id, __u64 regs)
{
	struct syscall_pending *p;
	__u64 pid_tgid, now;
	__u32 tid;

	/* Uniform gaps in [1, 2 * latency_every - 1]: mean latency_every, no aliasing with loops.
	 */
	c->sample_left = 1 + bpf_get_prandom_u32() % (2 * latency_every - 1);
	if (id == nr_exit || id == nr_exit_group)
		return;
	/* The same source of ids as sys_exit, so the two ends of a sample agree. */
	pid_tgid = current_ids(c, regs);
	if (targ_tgid && (pid_tgid >> 32) != targ_tgid)
		return;
	tid = (__u32)pid_tgid;
	if (!tid)
		return; /* the idle task does not make syscalls; 0 marks a free slot */
	p = &pending[tid & (SYSCALL_PENDING_SLOTS - 1)];
	now = bpf_ktime_get_ns();
	if (p->tid && p->window == (__u32)window && now - p->ts < PENDING_EXPIRE_NS) {
		/* Another thread's sample is in flight in this slot. Skipping depends on that
		 * thread, not on this syscall, so the samples taken stay unbiased. */
		vigil_count(&sys_counters, SYSCALL_COUNTER_SAMPLE_BUSY);
		return;
	}
	p->ts = now;
	p->window = (__u32)window;
	/* The thread id last: an exit on another CPU matches only a complete stamp. */
	asm volatile("" ::: "memory");
	p->tid = tid;
}

static __always_inline int on_enter_sampled(struct pt_regs *regs, long id)
{
	struct syscall_cache *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&sys_cache, &zero);
	if (!c)
		return 0;
	if (c->sample_left > 1) {
		c->sample_left -= 1;
		return 0;
	}
	stamp_sample(c, id, (__u64)regs);
	return 0;
}

/* Adds n failures with errno err of tgid to sys_errno. */
static __noinline void add_errno(__u32 tgid, __u32 err, __u64 n)
{
	struct syscall_errno_key key = {.tgid = tgid, .err = err};
	__u64 *c;

	c = bpf_map_lookup_elem(&sys_errno, &key);
	if (c) {
		__sync_fetch_and_add(c, n);
		return;
	}
	if (bpf_map_update_elem(&sys_errno, &key, &n, BPF_NOEXIST))
		vigil_count(&sys_counters, SYSCALL_COUNTER_ERRNO_MAP_FULL);
}

/* A failure with another errno than the slot's cached one: flush the cached run, start anew. */
static __noinline void switch_errno(struct syscall_cache_slot *c, long ret)
{
	if (ret < -MAX_ERRNO)
		return; /* a negative value that is not an errno */
	if (c->err_count)
		add_errno(c->tgid, c->err, c->err_count);
	c->err = (__u32)-ret;
	c->err_count = 0;
}

/*
 * Another thread group's syscall exits on this CPU: add the cached counts of the previous one to
 * its sys_proc entry and make sure the new one has an entry (with its comm, readable only now,
 * while it is current). Entries userspace retired (exited processes) are not recreated.
 */
static __noinline void switch_cache(struct syscall_cache_slot *c, __u32 tgid)
{
	struct syscall_proc_stats *st, init = {};
	struct task_struct *task, *leader;

	vigil_count(&sys_counters, SYSCALL_COUNTER_CACHE_FLUSH);
	if (c->count) {
		st = bpf_map_lookup_elem(&sys_proc, &c->tgid);
		if (st) {
			__sync_fetch_and_add(&st->count, c->count);
			__sync_fetch_and_add(&st->errors, c->errors);
			if (c->err_count)
				add_errno(c->tgid, c->err, c->err_count);
		}
	}
	c->tgid = tgid;
	c->count = 0;
	c->errors = 0;
	c->err = 0;
	c->err_count = 0;
	if (bpf_map_lookup_elem(&sys_proc, &tgid))
		return;
	task = (struct task_struct *)bpf_get_current_task();
	leader = BPF_CORE_READ(task, group_leader);
	bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), &leader->comm);
	init.cgroup_id = bpf_get_current_cgroup_id();
	if (bpf_map_update_elem(&sys_proc, &tgid, &init, BPF_NOEXIST))
		vigil_count(&sys_counters, SYSCALL_COUNTER_PROC_MAP_FULL);
}

static __always_inline void add_latency(__u64 ns)
{
	struct syscall_hist *h;
	__u32 slot, zero = 0;

	h = bpf_map_lookup_elem(&sys_latency, &zero);
	if (!h)
		return;
	slot = vigil_hist_slot(ns, SYSCALL_HIST_SLOTS);
	if (slot < SYSCALL_HIST_SLOTS)
		h->slots[slot] += 1;
	h->sum_ns += ns;
}

static __always_inline void observe_exact(void)
{
	struct syscall_start *s;
	__u64 ns;

	s = bpf_task_storage_get(&sys_start, bpf_get_current_task_btf(), 0, 0);
	if (!s || !s->ts || s->window != window)
		return;
	ns = bpf_ktime_get_ns() - s->ts;
	s->ts = 0;
	add_latency(ns);
}

static __noinline void complete_sample(struct syscall_pending *p)
{
	__u64 ts = p->ts;
	__u32 w = p->window;

	p->tid = 0;
	if (w == (__u32)window)
		add_latency(bpf_ktime_get_ns() - ts);
}

enum latency_kind { LATENCY_NONE, LATENCY_EXACT, LATENCY_SAMPLED };

static __always_inline int on_exit(struct pt_regs *regs, long ret, enum latency_kind latency)
{
	struct syscall_cache_slot *slot;
	struct syscall_pending *p;
	struct syscall_cache *c;
	__u32 tgid, tid, zero = 0;
	__u64 pid_tgid;

	/* Per-CPU value, and a program does not re-enter itself on one CPU: plain adds are safe. */
	c = bpf_map_lookup_elem(&sys_cache, &zero);
	if (!c)
		return 0;
	pid_tgid = current_ids(c, (__u64)regs);
	tgid = pid_tgid >> 32;
	tid = (__u32)pid_tgid;
	if (targ_tgid && tgid != targ_tgid)
		return 0;
	if (latency == LATENCY_EXACT)
		observe_exact();
	slot = &c->slots[(tgid * 2654435761U) >> 26 & (SYSCALL_CACHE_SLOTS - 1)];
	if (slot->tgid != tgid)
		switch_cache(slot, tgid);
	slot->count += 1;
	if (ret < 0) {
		slot->errors += 1;
		if (slot->err != (__u32)-ret)
			switch_errno(slot, ret);
		if (slot->err == (__u32)-ret)
			slot->err_count += 1;
	}
	if (latency == LATENCY_SAMPLED) {
		p = &pending[tid & (SYSCALL_PENDING_SLOTS - 1)];
		if (p->tid == tid)
			complete_sample(p);
	}
	return 0;
}

/* Sampled latency (the agent, snapshot, top): one syscall in latency_every. */
SEC("tp_btf/sys_enter")
int BPF_PROG(vigil_sysen_btf, struct pt_regs *regs, long id)
{
	return on_enter_sampled(regs, id);
}

SEC("raw_tp/sys_enter")
int BPF_PROG(vigil_sysen_raw, struct pt_regs *regs, long id)
{
	return on_enter_sampled(regs, id);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_sysex_btf, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_SAMPLED);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(vigil_sysex_raw, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_SAMPLED);
}

/* Exact latency of every syscall (`vigil hist syscall`): loaded instead of the four above. */
SEC("tp_btf/sys_enter")
int BPF_PROG(vigil_sysel_btf, struct pt_regs *regs, long id)
{
	return on_enter_exact();
}

SEC("raw_tp/sys_enter")
int BPF_PROG(vigil_sysel_raw, struct pt_regs *regs, long id)
{
	return on_enter_exact();
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_sysxl_btf, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_EXACT);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(vigil_sysxl_raw, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_EXACT);
}

/* Counting only, no latency: sys_exit alone. */
SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_sysxc_btf, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_NONE);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(vigil_sysxc_raw, struct pt_regs *regs, long ret)
{
	return on_exit(regs, ret, LATENCY_NONE);
}

/*
 * Records which task runs on this CPU (see current_ids()), for the syscall programs: attached
 * before them and detached after them, tp_btf only. A few plain stores per context switch
 * instead of a helper call per syscall.
 */
SEC("tp_btf/sched_switch")
int BPF_PROG(vigil_syscur_btf, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct syscall_cache *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&sys_cache, &zero);
	if (!c)
		return 0;
	c->cur_regs = (__u64)next->stack + regs_off;
	c->cur_tid = next->pid;
	c->cur_tgid = next->tgid;
	c->cur_window = window;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

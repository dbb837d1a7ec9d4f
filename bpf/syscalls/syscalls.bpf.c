// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Syscalls domain: per-process syscall and failure counts, failures per errno, and a host-wide
 * syscall latency histogram, from raw_syscalls sys_enter / sys_exit.
 *
 * Cost is the point of this file. Any program on raw_syscalls puts every syscall of every task
 * on the tracepoint slow path, so the agent attaches these programs only part of the time by
 * default (duty cycle, see docs/syscall-sampling.md), and what runs per event is kept minimal:
 * counting happens at sys_exit only, into a per-CPU one-slot cache for the thread group that ran
 * last on the CPU (an array lookup the verifier inlines; the per-process hash is touched only
 * when another process's syscall exits on that CPU); sys_enter exists only for latency and just
 * stamps the time into task storage; the errno map is touched on failures only. No ring buffer,
 * no locks.
 *
 * tp_btf when the kernel has BTF for the tracepoints, raw_tp otherwise; thin wrappers around
 * on_enter() / on_exit().
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

/* Only account this tgid when non-zero (the CLI's --pid). */
const volatile __u32 targ_tgid = 0;

/*
 * Bumped by userspace (through the mmap'ed .bss) each time it attaches the programs. A start
 * time from an earlier window belongs to a syscall whose exit we did not see; it is ignored.
 */
__u64 window = 0;

/*
 * Per-CPU hashes are allocated on insert (BPF_F_NO_PREALLOC): preallocated, 16384 entries would
 * cost entries x value size x CPUs up front (40 MB on 64 CPUs). Inserts happen once per process
 * (errno: once per process and errno), from syscall exit, a context where allocating is safe.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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

static __always_inline int on_enter(void)
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

/*
 * Another thread group's syscall exits on this CPU: add the cached counts of the previous one to
 * its sys_proc entry and make sure the new one has an entry (with its comm, readable only now,
 * while it is current). Entries userspace retired (exited processes) are not recreated.
 */
static __noinline void switch_cache(struct syscall_cache *c, __u32 tgid)
{
	struct syscall_proc_stats *st, init = {};
	struct task_struct *task, *leader;

	if (c->count) {
		st = bpf_map_lookup_elem(&sys_proc, &c->tgid);
		if (st) {
			st->count += c->count;
			st->errors += c->errors;
		}
	}
	c->tgid = tgid;
	c->count = 0;
	c->errors = 0;
	if (bpf_map_lookup_elem(&sys_proc, &tgid))
		return;
	task = (struct task_struct *)bpf_get_current_task();
	leader = BPF_CORE_READ(task, group_leader);
	bpf_probe_read_kernel_str(init.comm, sizeof(init.comm), &leader->comm);
	init.cgroup_id = bpf_get_current_cgroup_id();
	if (bpf_map_update_elem(&sys_proc, &tgid, &init, BPF_NOEXIST))
		vigil_count(&sys_counters, SYSCALL_COUNTER_PROC_MAP_FULL);
}

static __noinline void count_errno(__u32 tgid, long ret)
{
	struct syscall_errno_key key = {.tgid = tgid, .err = (__u32)-ret};
	__u64 *c, one = 1;

	if (ret < -MAX_ERRNO)
		return; /* a negative value that is not an errno */
	c = bpf_map_lookup_elem(&sys_errno, &key);
	if (c) {
		*c += 1;
		return;
	}
	if (bpf_map_update_elem(&sys_errno, &key, &one, BPF_NOEXIST))
		vigil_count(&sys_counters, SYSCALL_COUNTER_ERRNO_MAP_FULL);
}

static __always_inline void observe_latency(void)
{
	struct syscall_start *s;
	struct syscall_hist *h;
	__u64 ns;
	__u32 slot, zero = 0;

	s = bpf_task_storage_get(&sys_start, bpf_get_current_task_btf(), 0, 0);
	if (!s || !s->ts || s->window != window)
		return;
	ns = bpf_ktime_get_ns() - s->ts;
	s->ts = 0;
	h = bpf_map_lookup_elem(&sys_latency, &zero);
	if (!h)
		return;
	slot = vigil_hist_slot(ns, SYSCALL_HIST_SLOTS);
	if (slot < SYSCALL_HIST_SLOTS)
		h->slots[slot] += 1;
	h->sum_ns += ns;
}

static __always_inline int on_exit(long ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, zero = 0;
	struct syscall_cache *c;

	if (targ_tgid && tgid != targ_tgid)
		return 0;
	/* Per-CPU slot, and a program does not re-enter itself on one CPU: plain adds are safe. */
	c = bpf_map_lookup_elem(&sys_cache, &zero);
	if (!c)
		return 0;
	if (c->tgid != tgid)
		switch_cache(c, tgid);
	c->count += 1;
	if (ret < 0) {
		c->errors += 1;
		count_errno(tgid, ret);
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(vigil_sysen_btf, struct pt_regs *regs, long id)
{
	return on_enter();
}

SEC("raw_tp/sys_enter")
int BPF_PROG(vigil_sysen_raw, struct pt_regs *regs, long id)
{
	return on_enter();
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_sysex_btf, struct pt_regs *regs, long ret)
{
	observe_latency();
	return on_exit(ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(vigil_sysex_raw, struct pt_regs *regs, long ret)
{
	observe_latency();
	return on_exit(ret);
}

/* The same exits without latency: loaded instead of the two above when latency is off. */
SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_sysxc_btf, struct pt_regs *regs, long ret)
{
	return on_exit(ret);
}

SEC("raw_tp/sys_exit")
int BPF_PROG(vigil_sysxc_raw, struct pt_regs *regs, long ret)
{
	return on_exit(ret);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Wire structs of the syscalls domain, shared by syscalls.bpf.c and the agent's syscall
 * collector. Fixed-width fields and explicit padding: the layout is the contract.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define SYSCALL_COMM_LEN 16

/*
 * Latency histogram (sys_enter -> sys_exit of the same thread), host-wide: slot i counts
 * latencies l (nanoseconds) with 2^i <= l < 2^(i+1); the last slot is open-ended (>= 2^35 ns).
 */
#define SYSCALL_HIST_SLOTS 36

/* Value of sys_proc (a hash keyed by tgid, updated with atomic adds). */
struct syscall_proc_stats {
	__u64 count; /* syscalls that returned (sys_exit) */
	__u64 errors; /* of which returned a negative value */
	__u64 cgroup_id;
	char comm[SYSCALL_COMM_LEN];
};

/*
 * Value of sys_cache (a per-CPU array of one): the counts of the last thread groups that made
 * syscalls on this CPU, not yet added to sys_proc, in SYSCALL_CACHE_SLOTS direct-mapped slots
 * (slot = a multiplicative hash of the tgid). Consecutive syscalls on a CPU come from a handful of
 * processes (a server and its clients), so the hot path touches only this inlined array value;
 * sys_proc is updated when another process's syscall lands in an occupied slot. Userspace adds
 * the slots when reading. Repeats of one errno (EAGAIN from a non-blocking server) are cached
 * too, so the sys_errno hash is touched only when the errno changes. sample_left counts down to
 * the next syscall whose latency is sampled.
 */
#define SYSCALL_CACHE_SLOTS 64

struct syscall_cache_slot {
	__u32 tgid;
	__u32 err; /* errno of the last failure, whose repeats err_count holds (not in sys_errno) */
	__u64 count;
	__u64 errors;
	__u64 err_count;
};

struct syscall_cache {
	struct syscall_cache_slot slots[SYSCALL_CACHE_SLOTS];
	__u64 sample_left; /* syscalls on this CPU until the next latency sample */
	/*
	 * The task running on this CPU, written by vigil_syscur_btf at every sched_switch (tp_btf
	 * only): its user pt_regs address (what sys_enter/sys_exit receive), ids and the attach
	 * window. sys_exit trusts them only when both the regs address and the window match, and
	 * calls bpf_get_current_pid_tgid() otherwise.
	 */
	__u64 cur_regs;
	__u32 cur_tid;
	__u32 cur_tgid;
	__u64 cur_window;
};

/*
 * Latency samples in flight (the .bss array `pending`, indexed by thread id modulo
 * SYSCALL_PENDING_SLOTS): sys_enter of a sampled syscall stamps its thread id and start time,
 * sys_exit of a thread whose id is in its slot completes the sample. A thread may exit its
 * syscall on another CPU, so the table is global, not per CPU.
 */
#define SYSCALL_PENDING_SLOTS 256

struct syscall_pending {
	__u32 tid; /* 0: free */
	__u32 window; /* low 32 bits of the attach window of the stamp */
	__u64 ts;
};

/* Key of sys_errno (a hash of failure counts per process and errno, atomic adds). */
struct syscall_errno_key {
	__u32 tgid;
	__u32 err; /* positive errno */
};

struct syscall_hist {
	__u64 slots[SYSCALL_HIST_SLOTS];
	__u64 sum_ns;
};

/* Start of the syscall a thread is in, kept in task storage. */
struct syscall_start {
	__u64 ts;
	__u64 window; /* attach window the timestamp was taken in (see syscalls.bpf.c) */
};

enum syscall_counter {
	SYSCALL_COUNTER_PROC_MAP_FULL = 0, /* sys_proc had no room for a new tgid */
	SYSCALL_COUNTER_ERRNO_MAP_FULL, /* sys_errno had no room for a new (tgid, errno) */
	SYSCALL_COUNTER_START_FAILED, /* no task storage for a start time (out of memory) */
	SYSCALL_COUNTER_SAMPLE_BUSY, /* latency sample skipped: its pending slot was in use */
	SYSCALL_COUNTER_CACHE_FLUSH, /* a sys_cache slot changed hands (the slow counting path) */
	SYSCALL_COUNTER_IDS_MISS, /* sys_exit asked bpf_get_current_pid_tgid() (cur_* not valid) */
	SYSCALL_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(syscall_proc_stats) == 40, "syscall_proc_stats layout changed");
static_assert(sizeof(syscall_errno_key) == 8, "syscall_errno_key layout changed");
static_assert(sizeof(syscall_cache) == 32 * SYSCALL_CACHE_SLOTS + 32, "syscall_cache layout");
static_assert(sizeof(syscall_pending) == 16, "syscall_pending layout changed");
static_assert(sizeof(syscall_hist) == 8 * (SYSCALL_HIST_SLOTS + 1), "syscall_hist layout");
#else
_Static_assert(sizeof(struct syscall_proc_stats) == 40, "syscall_proc_stats layout changed");
_Static_assert(sizeof(struct syscall_errno_key) == 8, "syscall_errno_key layout changed");
_Static_assert(sizeof(struct syscall_cache) == 32 * SYSCALL_CACHE_SLOTS + 32,
	       "syscall_cache layout");
_Static_assert(sizeof(struct syscall_pending) == 16, "syscall_pending layout changed");
_Static_assert(sizeof(struct syscall_hist) == 8 * (SYSCALL_HIST_SLOTS + 1), "syscall_hist layout");
#endif

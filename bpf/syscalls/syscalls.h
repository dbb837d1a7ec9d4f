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

/* Value of sys_proc (a per-CPU hash keyed by tgid); userspace sums the CPUs. */
struct syscall_proc_stats {
	__u64 count; /* syscalls that returned (sys_exit) */
	__u64 errors; /* of which returned a negative value */
	__u64 cgroup_id;
	char comm[SYSCALL_COMM_LEN];
};

/*
 * Value of sys_cache (a per-CPU array of one): the counts of the thread group that made the last
 * syscalls on this CPU, not yet added to sys_proc. Most consecutive syscalls on a CPU come from
 * the same process, so the hot path touches only this inlined array slot; sys_proc is updated
 * when another process's syscall exits on the CPU. Userspace adds it when reading.
 */
struct syscall_cache {
	__u32 tgid;
	__u32 pad;
	__u64 count;
	__u64 errors;
};

/* Key of sys_errno (a per-CPU hash of failure counts per process and errno). */
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
	SYSCALL_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(syscall_proc_stats) == 40, "syscall_proc_stats layout changed");
static_assert(sizeof(syscall_errno_key) == 8, "syscall_errno_key layout changed");
static_assert(sizeof(syscall_cache) == 24, "syscall_cache layout changed");
static_assert(sizeof(syscall_hist) == 8 * (SYSCALL_HIST_SLOTS + 1), "syscall_hist layout");
#else
_Static_assert(sizeof(struct syscall_proc_stats) == 40, "syscall_proc_stats layout changed");
_Static_assert(sizeof(struct syscall_errno_key) == 8, "syscall_errno_key layout changed");
_Static_assert(sizeof(struct syscall_cache) == 24, "syscall_cache layout changed");
_Static_assert(sizeof(struct syscall_hist) == 8 * (SYSCALL_HIST_SLOTS + 1), "syscall_hist layout");
#endif

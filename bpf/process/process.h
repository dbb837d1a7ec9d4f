/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Wire structs of the process-lifecycle domain, shared by process.bpf.c and the agent's process
 * collector. Every record in the ring buffer starts with struct proc_event_header; `type` says
 * which struct follows. Fixed-width fields and explicit padding: the layout is the contract.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define VIGIL_PROC_COMM_LEN 16
#define VIGIL_EXEC_FILENAME_LEN 256
#define VIGIL_EXEC_ARGV_LEN 1024 /* bytes of NUL-separated argv kept per exec */

enum vigil_proc_event_type {
	VIGIL_PEV_EXEC = 1,
	VIGIL_PEV_EXIT = 2,
	VIGIL_PEV_FORK = 3,
	VIGIL_PEV_OOM_KILL = 4,
	VIGIL_PEV_SIGNAL = 5,
	VIGIL_PEV_TYPE_MAX = 6,
};

struct proc_event_header {
	__u32 type; /* enum vigil_proc_event_type */
	__u32 pid; /* thread-group id of the process the event is about */
	__u32 tid;
	__u32 ppid;
	__u64 ktime_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cgroup_id;
	char comm[VIGIL_PROC_COMM_LEN];
};

struct proc_exec_event {
	struct proc_event_header hdr;
	__u32 filename_len; /* bytes in filename, without the NUL */
	__u32 argv_len; /* bytes in argv (NUL-separated args) */
	__u32 argv_truncated;
	__u32 pad;
	char filename[VIGIL_EXEC_FILENAME_LEN];
	char argv[VIGIL_EXEC_ARGV_LEN];
};

struct proc_exit_event {
	struct proc_event_header hdr;
	__u32 exit_code; /* task->exit_code: (status << 8) | signal | 0x80 if core dumped */
	__u32 pad;
	__u64 lifetime_ns;
};

struct proc_fork_event {
	struct proc_event_header hdr; /* the parent */
	__u32 child_pid;
	__u32 pad;
};

struct proc_oom_event {
	struct proc_event_header hdr; /* the victim */
	__u64 total_vm_kb;
	__u64 anon_rss_kb;
};

struct proc_signal_event {
	struct proc_event_header hdr; /* the target */
	__s32 signal;
	__u32 sender_pid;
	__s32 result; /* TRACE_SIGNAL_* of include/trace/events/signal.h */
	__u32 pad;
};

/* Slots of the proc_counters per-CPU array. */
enum proc_counter {
	/* Ring-buffer reserve failures, one slot per enum vigil_proc_event_type (slot 0 unused). */
	PROC_COUNTER_LOST_BASE = 0,
	/* Events generated (passed the filters), per type: generated == submitted + lost. */
	PROC_COUNTER_GENERATED_BASE = VIGIL_PEV_TYPE_MAX,
	PROC_COUNTER_ARGV_READ_FAIL = 2 * VIGIL_PEV_TYPE_MAX, /* argv unreadable at exec */
	PROC_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(proc_event_header) == 48, "proc_event_header layout changed");
static_assert(sizeof(proc_exec_event) == 48 + 16 + 256 + 1024, "proc_exec_event layout changed");
static_assert(sizeof(proc_exit_event) == 64, "proc_exit_event layout changed");
static_assert(sizeof(proc_fork_event) == 56, "proc_fork_event layout changed");
static_assert(sizeof(proc_oom_event) == 64, "proc_oom_event layout changed");
static_assert(sizeof(proc_signal_event) == 64, "proc_signal_event layout changed");
#else
_Static_assert(sizeof(struct proc_event_header) == 48, "proc_event_header layout changed");
_Static_assert(sizeof(struct proc_exec_event) == 48 + 16 + 256 + 1024, "exec layout changed");
_Static_assert(sizeof(struct proc_exit_event) == 64, "proc_exit_event layout changed");
_Static_assert(sizeof(struct proc_fork_event) == 56, "proc_fork_event layout changed");
_Static_assert(sizeof(struct proc_oom_event) == 64, "proc_oom_event layout changed");
_Static_assert(sizeof(struct proc_signal_event) == 64, "proc_signal_event layout changed");
#endif

/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Wire structs of the sched domain, shared by sched.bpf.c and the agent's sched collector.
 * Fixed-width fields and explicit padding: the layout is the contract.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define VIGIL_COMM_LEN 16

/* Value of proc_stats (raw_tp path: a per-CPU hash keyed by tgid); userspace sums the CPUs. */
struct sched_proc_stats {
	__u64 oncpu_ns;
	__u64 voluntary_switches;
	__u64 involuntary_switches;
	__u64 cgroup_id;
	char comm[VIGIL_COMM_LEN];
};

/*
 * Value of cpu_state (raw_tp path: a per-CPU array of one): which thread group runs on the CPU and
 * since when. Userspace adds the running slice to that process's on-CPU time, so a task that is
 * never switched out (a lone CPU burner on a tickless CPU) still shows its time.
 */
struct sched_cpu_state {
	__u64 switched_in_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 tgid; /* 0 while the CPU is idle */
	__u32 pad;
};

/*
 * Run-queue latency histograms (raw_tp path: runq_proc keyed by tgid, runq_cgroup keyed by
 * cgroup v2 id, runq_host; tp_btf path: the slots of sched_totals): slot i counts waits w
 * (microseconds) with 2^i <= w < 2^(i+1); slot 0 also holds w < 1; the last slot is open-ended (>=
 * 2^(SCHED_HIST_SLOTS-1) us, about 67 s).
 */
#define SCHED_HIST_SLOTS 27

struct sched_hist {
	__u64 slots[SCHED_HIST_SLOTS];
	__u64 sum_us;
};

/*
 * tp_btf path: one thread's totals since accounting started (a record of the vigil_sched_iter
 * task iterator, tid set), or the sum over a thread group's exited threads (value of the
 * `exited` hash, tid 0). Counters only grow while the thread lives.
 */
struct sched_totals {
	__u32 tid;
	__u32 tgid;
	__u64 start_ns; /* the group leader's start time, CLOCK_MONOTONIC ns: tells reused pids
			   apart */
	__u64 cgroup_id; /* cgroup v2 id of the thread (at exit, for `exited`) */
	__u64 cpu_ns; /* se.sum_exec_runtime */
	__u64 voluntary_switches; /* nvcsw */
	__u64 involuntary_switches; /* nivcsw */
	__u64 wait_sum_ns; /* sum of the run-queue waits counted in slots */
	__u64 slots[SCHED_HIST_SLOTS]; /* run-queue waits, log2 microseconds as sched_hist */
	char comm[VIGIL_COMM_LEN]; /* the group leader's */
};

/* Key of `exited`. */
struct sched_exited_key {
	__u32 tgid;
	__u32 pad;
	__u64 start_ns;
};

/* Slots of the sched_counters per-CPU array. */
enum sched_counter {
	SCHED_COUNTER_PROC_MAP_FULL = 0, /* proc_stats had no room for a new tgid */
	SCHED_COUNTER_RUNQ_START_FULL, /* runq_start could not record an enqueue time */
	SCHED_COUNTER_RUNQ_PROC_FULL, /* runq_proc had no room for a new tgid */
	SCHED_COUNTER_RUNQ_CGROUP_FULL, /* runq_cgroup had no room for a new cgroup */
	SCHED_COUNTER_TASK_STORAGE_FULL, /* tp_btf: a task's state could not be allocated */
	SCHED_COUNTER_EXITED_FULL, /* tp_btf: `exited` had no room for a thread group */
	SCHED_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(sched_cpu_state) == 16, "sched_cpu_state layout changed");
static_assert(sizeof(sched_proc_stats) == 48, "sched_proc_stats layout changed");
static_assert(sizeof(sched_hist) == 8 * (SCHED_HIST_SLOTS + 1), "sched_hist layout changed");
static_assert(sizeof(sched_totals) == 8 * (7 + SCHED_HIST_SLOTS) + VIGIL_COMM_LEN,
	      "sched_totals layout changed");
static_assert(sizeof(sched_exited_key) == 16, "sched_exited_key layout changed");
#else
_Static_assert(sizeof(struct sched_cpu_state) == 16, "sched_cpu_state layout changed");
_Static_assert(sizeof(struct sched_proc_stats) == 48, "sched_proc_stats layout changed");
_Static_assert(sizeof(struct sched_hist) == 8 * (SCHED_HIST_SLOTS + 1),
	       "sched_hist layout changed");
_Static_assert(sizeof(struct sched_totals) == 8 * (7 + SCHED_HIST_SLOTS) + VIGIL_COMM_LEN,
	       "sched_totals layout changed");
_Static_assert(sizeof(struct sched_exited_key) == 16, "sched_exited_key layout changed");
#endif

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

/* Value of proc_stats (a per-CPU hash keyed by tgid); userspace sums the CPUs. */
struct sched_proc_stats {
	__u64 oncpu_ns;
	__u64 voluntary_switches;
	__u64 involuntary_switches;
	__u64 cgroup_id;
	char comm[VIGIL_COMM_LEN];
};

/*
 * Value of cpu_state (a per-CPU array of one): which thread group runs on the CPU and since
 * when. Userspace adds the running slice to that process's on-CPU time, so a task that is never
 * switched out (a lone CPU burner on a tickless CPU) still shows its time.
 */
struct sched_cpu_state {
	__u64 switched_in_ns; /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 tgid; /* 0 while the CPU is idle */
	__u32 pad;
};

/*
 * Run-queue latency histograms (runq_proc keyed by tgid, runq_cgroup keyed by cgroup v2 id,
 * runq_host): slot i counts waits w (microseconds) with 2^i <= w < 2^(i+1); slot 0 also holds
 * w < 1; the last slot is open-ended (>= 2^(SCHED_HIST_SLOTS-1) us, about 67 s).
 */
#define SCHED_HIST_SLOTS 27

struct sched_hist {
	__u64 slots[SCHED_HIST_SLOTS];
	__u64 sum_us;
};

/* Slots of the sched_counters per-CPU array. */
enum sched_counter {
	SCHED_COUNTER_PROC_MAP_FULL = 0, /* proc_stats had no room for a new tgid */
	SCHED_COUNTER_RUNQ_START_FULL, /* runq_start could not record an enqueue time */
	SCHED_COUNTER_RUNQ_PROC_FULL, /* runq_proc had no room for a new tgid */
	SCHED_COUNTER_RUNQ_CGROUP_FULL, /* runq_cgroup had no room for a new cgroup */
	SCHED_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(sched_cpu_state) == 16, "sched_cpu_state layout changed");
static_assert(sizeof(sched_proc_stats) == 48, "sched_proc_stats layout changed");
static_assert(sizeof(sched_hist) == 8 * (SCHED_HIST_SLOTS + 1), "sched_hist layout changed");
#else
_Static_assert(sizeof(struct sched_cpu_state) == 16, "sched_cpu_state layout changed");
_Static_assert(sizeof(struct sched_proc_stats) == 48, "sched_proc_stats layout changed");
_Static_assert(sizeof(struct sched_hist) == 8 * (SCHED_HIST_SLOTS + 1),
	       "sched_hist layout changed");
#endif

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

/* Slots of the sched_counters per-CPU array. */
enum sched_counter {
  SCHED_COUNTER_PROC_MAP_FULL = 0, /* proc_stats had no room for a new tgid */
  SCHED_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(sched_proc_stats) == 48, "sched_proc_stats layout changed");
#else
_Static_assert(sizeof(struct sched_proc_stats) == 48, "sched_proc_stats layout changed");
#endif

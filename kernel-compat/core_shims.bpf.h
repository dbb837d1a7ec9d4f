/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * CO-RE shims: one per upstream kernel change that renamed or moved a field vigil reads.
 * Each probes for the field with bpf_core_field_exists() and never tests a kernel version.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * task_struct::state became task_struct::__state (an unsigned int) in v5.14, commit
 * 2f064a59a11f ("sched: Change task_struct::state").
 */
struct task_struct___pre_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline __u32 vigil_task_state(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return BPF_CORE_READ(task, __state);
	return (__u32)BPF_CORE_READ((struct task_struct___pre_5_14 *)task, state);
}

/*
 * struct request::rq_disk was removed in v5.17, commit f3fa33acca9f ("block: remove the
 * ->rq_disk field in struct request"); the disk is reached through the queue since.
 */
struct request___pre_5_17 {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *vigil_rq_disk(struct request *rq)
{
	struct request___pre_5_17 *old = (void *)rq;

	if (bpf_core_field_exists(old->rq_disk))
		return BPF_CORE_READ(old, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

/*
 * kernfs_node::id was a union kernfs_node_id { struct { u32 ino; u32 generation; }; u64 id; }
 * before v5.5 and a plain u64 since, commit 67c0496e87d1 ("kernfs: convert kernfs_node->id from
 * union kernfs_node_id to u64"). Either way the low 64 bits are what bpf_get_current_cgroup_id()
 * returns for that cgroup.
 */
union kernfs_node_id___pre_5_5 {
	__u64 id;
} __attribute__((preserve_access_index));

struct kernfs_node___pre_5_5 {
	union kernfs_node_id___pre_5_5 id;
} __attribute__((preserve_access_index));

static __always_inline __u64 vigil_kernfs_id(struct kernfs_node *kn)
{
	if (bpf_core_type_exists(union kernfs_node_id___pre_5_5))
		return BPF_CORE_READ((struct kernfs_node___pre_5_5 *)kn, id.id);
	return BPF_CORE_READ(kn, id);
}

/* cgroup v2 id of any task (bpf_get_current_cgroup_id() only covers current). */
static __always_inline __u64 vigil_task_cgroup_id(struct task_struct *task)
{
	struct kernfs_node *kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);

	return kn ? vigil_kernfs_id(kn) : 0;
}

/*
 * mm_struct::rss_stat became an array of percpu_counter in v6.2, commit f1a7941243c1 ("mm:
 * convert mm's rss stats into percpu_counter"); before it was struct mm_rss_stat { atomic_long_t
 * count[NR_MM_COUNTERS]; }. Returns the counter in pages (the percpu_counter's shared part only:
 * per-CPU deltas are not summed, so it may lag by a few pages per CPU).
 */
struct mm_rss_stat___pre_6_2 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___pre_6_2 {
	struct mm_rss_stat___pre_6_2 rss_stat;
} __attribute__((preserve_access_index));

static __always_inline long vigil_mm_rss_pages(struct mm_struct *mm, int member)
{
	if (member < 0 || member >= 4)
		return 0;
	if (bpf_core_type_exists(struct mm_rss_stat___pre_6_2)) {
		return BPF_CORE_READ((struct mm_struct___pre_6_2 *)mm,
				     rss_stat.count[member].counter);
	}
	return BPF_CORE_READ(mm, rss_stat[member].count);
}

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

static __always_inline __u32 vigil_task_state(struct task_struct* task) {
  if (bpf_core_field_exists(task->__state)) return BPF_CORE_READ(task, __state);
  return (__u32)BPF_CORE_READ((struct task_struct___pre_5_14*)task, state);
}

/*
 * struct request::rq_disk was removed in v5.17, commit f3fa33acca9f ("block: remove the
 * ->rq_disk field in struct request"); the disk is reached through the queue since.
 */
struct request___pre_5_17 {
  struct gendisk* rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk* vigil_rq_disk(struct request* rq) {
  struct request___pre_5_17* old = (void*)rq;

  if (bpf_core_field_exists(old->rq_disk)) return BPF_CORE_READ(old, rq_disk);
  return BPF_CORE_READ(rq, q, disk);
}

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

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs on the sched hooks: the cost baseline sched.bpf.c is measured against
 * (docs/syscall-sampling.md, "Measured cost"). Not used by the agent.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sched_switch")
int BPF_PROG(vigil_empty_sw, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(vigil_empty_wk, struct task_struct *p)
{
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(vigil_empty_wn, struct task_struct *p)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

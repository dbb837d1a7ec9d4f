// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs on the syscall hooks: the cost baseline that syscalls.bpf.c is measured
 * against (docs/syscall-sampling.md). Not used by the agent.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sys_enter")
int BPF_PROG(vigil_empty_en, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vigil_empty_ex, struct pt_regs *regs, long ret)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

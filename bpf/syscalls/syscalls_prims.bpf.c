// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * One primitive per program on tp_btf/sys_enter, to price the building blocks of syscalls.bpf.c
 * with bpf_stats (run_time_ns / run_cnt against vigil_empty_en): syscall_collector_test
 * "[cost]" attaches them one at a time next to the empty program. Not used by the agent.
 * Results are written to .bss so that nothing is optimised away.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct prim_val {
	__u64 ts;
	__u64 n;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct prim_val);
} prim_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct prim_val);
} prim_task_miss SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct prim_val);
} prim_pcpu SEC(".maps");

__u64 prim_sink[8];
__u64 prim_global = 1;

#define PRIM(name) SEC("tp_btf/sys_enter") int BPF_PROG(name, struct pt_regs *regs, long id)

PRIM(prim_ktime)
{
	prim_sink[0] = bpf_ktime_get_ns();
	return 0;
}

PRIM(prim_ktime_twice)
{
	__u64 t = bpf_ktime_get_ns();

	prim_sink[1] = bpf_ktime_get_ns() - t;
	return 0;
}

PRIM(prim_task_btf)
{
	prim_sink[2] = bpf_get_current_task_btf()->tgid;
	return 0;
}

PRIM(prim_pid_tgid)
{
	prim_sink[3] = bpf_get_current_pid_tgid();
	return 0;
}

/* Task storage hit without F_CREATE (the value is created once, on the first miss). */
PRIM(prim_storage_hit)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct prim_val *v = bpf_task_storage_get(&prim_task, t, 0, 0);

	if (!v)
		v = bpf_task_storage_get(&prim_task, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (v)
		v->n += 1;
	return 0;
}

/* Task storage with F_CREATE on every call, hitting (what vigil's exact sys_enter does). */
PRIM(prim_storage_create_hit)
{
	struct prim_val *v = bpf_task_storage_get(&prim_task, bpf_get_current_task_btf(), 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v)
		v->n += 1;
	return 0;
}

/* Task storage F_CREATE missing every time: created, then deleted again. */
PRIM(prim_storage_miss)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct prim_val *v =
		bpf_task_storage_get(&prim_task_miss, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (v) {
		v->n += 1;
		bpf_task_storage_delete(&prim_task_miss, t);
	}
	return 0;
}

PRIM(prim_pcpu_array)
{
	__u32 zero = 0;
	struct prim_val *v = bpf_map_lookup_elem(&prim_pcpu, &zero);

	if (v)
		v->n += 1;
	return 0;
}

PRIM(prim_bss_read)
{
	prim_sink[4] = prim_global;
	return 0;
}

PRIM(prim_prandom)
{
	prim_sink[5] = bpf_get_prandom_u32();
	return 0;
}

PRIM(prim_cgroup_id)
{
	prim_sink[6] = bpf_get_current_cgroup_id();
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

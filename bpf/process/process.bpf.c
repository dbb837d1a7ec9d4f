// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Process-lifecycle domain: exec (filename + bounded argv), fork, exit (code, signal, lifetime),
 * OOM kills and fatal signals, each a discrete event in the `events` ring buffer.
 *
 * Every event that passes the filters is counted as generated before it is reserved, and every
 * reserve failure is counted as lost, per event type, so userspace can prove
 * generated == seen + lost. sched_process_{exec,exit,fork} and signal_generate attach as tp_btf
 * when the kernel has BTF for them, raw_tp otherwise; both are thin wrappers. mark_victim is
 * always raw_tp because its first argument changed type (pid_t before, task_struct * since
 * v6.8, commit 72ba14deb40a "mm: oom: add uid to mark_victim"): userspace probes BTF and sets
 * oom_arg_is_pid before load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "core_shims.bpf.h"
#include "common/maps.bpf.h"
#include "process/process.h"

#define PAGE_KB 4 /* x86_64 PAGE_SIZE / 1024 */

/* Only report events about this tgid / cgroup v2 id when non-zero (CLI --pid, tests). */
const volatile __u32 targ_tgid = 0;
const volatile __u64 targ_cgroup_id = 0;
/* Bit n set: events of type n (enum vigil_proc_event_type) are written (CLI `vigil trace`). */
const volatile __u32 targ_types = 0xffffffff;
/* When non-empty, only events whose process (thread-group leader) comm equals it (CLI --comm). */
const volatile char targ_comm[VIGIL_PROC_COMM_LEN] = {};
/* Bit n set: signal n is reported by signal_generate. */
const volatile __u64 fatal_signal_mask = 0;
/* mark_victim's first argument is a pid (old kernels) rather than a task_struct *. */
const volatile bool oom_arg_is_pid = false;
/*
 * Wake the reader only once this many bytes wait in the ring; the agent also drains on a short
 * timer. A wakeup per event costs an irq_work (a self-IPI, several microseconds in a VM).
 */
const volatile __u64 wakeup_bytes = 1 << 20;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROC_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} proc_counters SEC(".maps");

/* Exec records are built here, then copied out with only the used part of argv. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proc_exec_event);
} exec_scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&proc_counters, &idx);

	if (c)
		__sync_fetch_and_add(c, 1);
}

/*
 * Wake the reader once wakeup_bytes wait in the ring, counting `pending` bytes not yet in it:
 * a reserved record is already counted in AVAIL_DATA, the record bpf_ringbuf_output is about to
 * copy is not (without it, an exec into an empty ring woke nobody and waited for the next event
 * or the reader's 100 ms poll).
 */
static __always_inline __u64 wakeup_flag_pending(__u64 pending)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + pending >= wakeup_bytes
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

static __always_inline __u64 wakeup_flag(void)
{
	return wakeup_flag_pending(0);
}

static __always_inline bool wanted(__u32 tgid, __u64 cgroup_id)
{
	if (targ_tgid && tgid != targ_tgid)
		return false;
	if (targ_cgroup_id && cgroup_id != targ_cgroup_id)
		return false;
	return true;
}

static __always_inline bool type_wanted(__u32 type)
{
	return targ_types & (1u << type);
}

static __always_inline bool comm_wanted(struct task_struct *task)
{
	char comm[VIGIL_PROC_COMM_LEN] = {};
	struct task_struct *leader;

	if (!targ_comm[0])
		return true;
	leader = BPF_CORE_READ(task, group_leader);
	bpf_probe_read_kernel_str(comm, sizeof(comm), &leader->comm);
	for (int i = 0; i < VIGIL_PROC_COMM_LEN; i++) {
		if (comm[i] != targ_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline void fill_header(struct proc_event_header *h, __u32 type,
					struct task_struct *task, __u64 cgroup_id)
{
	h->type = type;
	h->pid = BPF_CORE_READ(task, tgid);
	h->tid = BPF_CORE_READ(task, pid);
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->ktime_ns = bpf_ktime_get_ns();
	h->cgroup_id = cgroup_id;
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	bpf_probe_read_kernel_str(h->comm, sizeof(h->comm), &leader->comm);
}

/* Reserves a fixed-size record, counting the attempt and any failure. */
static __always_inline void *reserve(__u32 type, __u64 size)
{
	void *e;

	count(PROC_COUNTER_GENERATED_BASE + type);
	e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		count(PROC_COUNTER_LOST_BASE + type);
	return e;
}

static __always_inline int on_exec(struct linux_binprm *bprm)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	struct proc_exec_event *e;
	unsigned long arg_start, arg_end;
	__u64 len, size;
	__u32 zero = 0;
	long n;

	if (!type_wanted(VIGIL_PEV_EXEC))
		return 0;
	if (!wanted(BPF_CORE_READ(task, tgid), cgroup_id) || !comm_wanted(task))
		return 0;
	e = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!e)
		return 0;
	fill_header(&e->hdr, VIGIL_PEV_EXEC, task, cgroup_id);

	n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				      BPF_CORE_READ(bprm, filename));
	e->filename_len = n > 0 ? n - 1 : 0;

	/* The new image's argv, as the kernel just copied it to the top of the new stack. */
	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	e->argv_truncated = 0;
	if (len > VIGIL_EXEC_ARGV_LEN) {
		len = VIGIL_EXEC_ARGV_LEN;
		e->argv_truncated = 1;
	}
	barrier_var(len);
	if (len > VIGIL_EXEC_ARGV_LEN)
		return 0; /* unreachable; bounds len for the verifier */
	if (len > 0 && bpf_probe_read_user(e->argv, len, (void *)arg_start) != 0) {
		count(PROC_COUNTER_ARGV_READ_FAIL);
		len = 0;
	}
	e->argv_len = len;
	e->pad = 0;

	size = sizeof(*e) - VIGIL_EXEC_ARGV_LEN + len;
	barrier_var(size);
	if (size > sizeof(*e))
		return 0;
	count(PROC_COUNTER_GENERATED_BASE + VIGIL_PEV_EXEC);
	if (bpf_ringbuf_output(&events, e, size, wakeup_flag_pending(size)) != 0)
		count(PROC_COUNTER_LOST_BASE + VIGIL_PEV_EXEC);
	return 0;
}

static __always_inline int on_exit(struct task_struct *task)
{
	struct proc_exit_event *e;
	__u64 cgroup_id;

	/* Report the process once, when its last thread exits (signal->live reached zero). */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	cgroup_id = bpf_get_current_cgroup_id();
	if (!type_wanted(VIGIL_PEV_EXIT))
		return 0;
	if (!wanted(BPF_CORE_READ(task, tgid), cgroup_id) || !comm_wanted(task))
		return 0;
	e = reserve(VIGIL_PEV_EXIT, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, VIGIL_PEV_EXIT, task, cgroup_id);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->pad = 0;
	e->lifetime_ns = e->hdr.ktime_ns - BPF_CORE_READ(task, group_leader, start_time);
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	struct proc_fork_event *e;
	__u64 cgroup_id;
	__u32 child_tgid = BPF_CORE_READ(child, tgid);

	/* New threads share the parent's tgid: only new processes are events. */
	if (child_tgid == BPF_CORE_READ(parent, tgid))
		return 0;
	cgroup_id = bpf_get_current_cgroup_id();
	if (!type_wanted(VIGIL_PEV_FORK))
		return 0;
	if (!wanted(BPF_CORE_READ(parent, tgid), cgroup_id) || !comm_wanted(parent))
		return 0;
	e = reserve(VIGIL_PEV_FORK, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, VIGIL_PEV_FORK, parent, cgroup_id);
	e->child_pid = child_tgid;
	e->pad = 0;
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

static __always_inline int on_signal(int sig, struct task_struct *task, int result)
{
	struct proc_signal_event *e;
	__u64 cgroup_id;

	if (sig <= 0 || sig >= 64 || !(fatal_signal_mask & (1ULL << sig)))
		return 0;
	cgroup_id = vigil_task_cgroup_id(task);
	if (!type_wanted(VIGIL_PEV_SIGNAL))
		return 0;
	if (!wanted(BPF_CORE_READ(task, tgid), cgroup_id) || !comm_wanted(task))
		return 0;
	e = reserve(VIGIL_PEV_SIGNAL, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, VIGIL_PEV_SIGNAL, task, cgroup_id);
	e->signal = sig;
	e->sender_pid = bpf_get_current_pid_tgid() >> 32;
	e->result = result;
	e->pad = 0;
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

static __always_inline int on_oom_victim(__u64 arg0)
{
	struct proc_oom_event *e;
	struct task_struct *task;
	struct mm_struct *mm;
	__u64 cgroup_id;

	if (oom_arg_is_pid) {
		/* Old kernels give only the pid; the rest of the record stays zero. */
		if (!type_wanted(VIGIL_PEV_OOM_KILL) || !wanted((__u32)arg0, 0))
			return 0;
		e = reserve(VIGIL_PEV_OOM_KILL, sizeof(*e));
		if (!e)
			return 0;
		__builtin_memset(e, 0, sizeof(*e));
		e->hdr.type = VIGIL_PEV_OOM_KILL;
		e->hdr.pid = (__u32)arg0;
		e->hdr.ktime_ns = bpf_ktime_get_ns();
		bpf_ringbuf_submit(e, wakeup_flag());
		return 0;
	}
	task = (struct task_struct *)arg0;
	cgroup_id = vigil_task_cgroup_id(task);
	if (!type_wanted(VIGIL_PEV_OOM_KILL))
		return 0;
	if (!wanted(BPF_CORE_READ(task, tgid), cgroup_id) || !comm_wanted(task))
		return 0;
	e = reserve(VIGIL_PEV_OOM_KILL, sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->hdr, VIGIL_PEV_OOM_KILL, task, cgroup_id);
	mm = BPF_CORE_READ(task, mm);
	e->total_vm_kb = mm ? BPF_CORE_READ(mm, total_vm) * PAGE_KB : 0;
	e->anon_rss_kb = mm ? vigil_mm_rss_pages(mm, MM_ANONPAGES) * PAGE_KB : 0;
	bpf_ringbuf_submit(e, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(vigil_exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(vigil_exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(bprm);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(vigil_exit_btf, struct task_struct *p)
{
	return on_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(vigil_exit_raw, struct task_struct *p)
{
	return on_exit(p);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(vigil_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(vigil_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("tp_btf/signal_generate")
int BPF_PROG(vigil_sig_btf, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	return on_signal(sig, task, result);
}

SEC("raw_tp/signal_generate")
int BPF_PROG(vigil_sig_raw, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	return on_signal(sig, task, result);
}

SEC("raw_tp/mark_victim")
int BPF_PROG(vigil_oom_raw, __u64 arg0)
{
	return on_oom_victim(arg0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Block I/O domain: issue -> complete latency per device and op, bytes and ops per device and
 * per process.
 *
 * A request is attributed to the task that inserted it into the scheduler queue
 * (block_rq_insert) or, for requests issued directly without insertion, to the task current at
 * block_rq_issue. Bytes and ops are accounted at issue (the request's full size); latency at
 * the first block_rq_complete. Where attribution is wrong: writeback of dirty pages runs in
 * kworker threads, so buffered writes show up under the kworker (cgroup writeback is not
 * followed), as do requests a scheduler dispatches from kblockd without an insert seen.
 *
 * tp_btf when the kernel has BTF for the tracepoints, raw_tp otherwise (both need the v5.11+
 * argument lists: block_rq_issue(rq), block_rq_complete(rq, error, nr_bytes)).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "core_shims.bpf.h"
#include "common/bits.bpf.h"
#include "common/maps.bpf.h"
#include "block/block.h"

#define MAX_INFLIGHT 16384
#define MAX_DEVS 256
#define MAX_PROCS 8192
#define REQ_OP_MASK 0xff

const volatile __u32 targ_tgid = 0;

/*
 * In-flight requests. LRU: a request merged into another or freed without completion leaves its
 * entry behind; LRU ages such entries out instead of filling the map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_INFLIGHT);
	__type(key, __u64);
	__type(value, struct block_rq_info);
} blk_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DEVS);
	__type(key, __u32);
	__type(value, struct block_dev_stats);
} blk_dev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, struct block_proc_stats);
} blk_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BLOCK_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} blk_counters SEC(".maps");

/* Scratch for zero-initialised map values too large for the BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct block_dev_stats);
} blk_zero SEC(".maps");

static __always_inline void current_info(struct block_rq_info *info)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	info->tgid = bpf_get_current_pid_tgid() >> 32;
	info->cgroup_id = bpf_get_current_cgroup_id();
	bpf_probe_read_kernel_str(info->comm, sizeof(info->comm), &leader->comm);
}

static __always_inline __u32 rq_dev(struct request *rq)
{
	struct gendisk *disk = vigil_rq_disk(rq);
	__u32 major, minor;

	if (!disk)
		return 0;
	major = BPF_CORE_READ(disk, major);
	minor = BPF_CORE_READ(disk, first_minor);
	return (major << BLOCK_MINORBITS) | minor;
}

static __always_inline __u32 rq_op(struct request *rq)
{
	__u32 op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;

	return op == 0 ? BLOCK_OP_READ : op == 1 ? BLOCK_OP_WRITE : BLOCK_OP_OTHER;
}

static __always_inline struct block_dev_stats *dev_stats(__u32 dev)
{
	__u32 zero = 0;
	struct block_dev_stats *st, *init;

	st = bpf_map_lookup_elem(&blk_dev, &dev);
	if (st)
		return st;
	init = bpf_map_lookup_elem(&blk_zero, &zero);
	if (!init)
		return NULL;
	st = vigil_lookup_or_init(&blk_dev, &dev, init);
	if (!st)
		vigil_count(&blk_counters, BLOCK_COUNTER_DEV_MAP_FULL);
	return st;
}

static __always_inline int on_insert(struct request *rq)
{
	struct block_rq_info info = {};
	__u64 key = (__u64)rq;

	current_info(&info);
	if (targ_tgid && info.tgid != targ_tgid)
		return 0;
	bpf_map_update_elem(&blk_inflight, &key, &info, BPF_ANY);
	return 0;
}

static __always_inline int on_issue(struct request *rq)
{
	struct block_rq_info *info, fresh = {};
	struct block_proc_stats *ps, pinit = {};
	struct block_dev_stats *ds;
	__u64 key = (__u64)rq, bytes;
	__u32 op;

	info = bpf_map_lookup_elem(&blk_inflight, &key);
	if (!info) {
		current_info(&fresh);
		if (targ_tgid && fresh.tgid != targ_tgid)
			return 0;
		bpf_map_update_elem(&blk_inflight, &key, &fresh, BPF_ANY);
		info = bpf_map_lookup_elem(&blk_inflight, &key);
		if (!info)
			return 0;
	}
	if (info->issue_ns) {
		/* Requeued by the driver and issued again: one request, counted once. */
		vigil_count(&blk_counters, BLOCK_COUNTER_REISSUE);
		info->issue_ns = bpf_ktime_get_ns();
		return 0;
	}
	info->issue_ns = bpf_ktime_get_ns();

	op = rq_op(rq);
	bytes = BPF_CORE_READ(rq, __data_len);
	ds = dev_stats(rq_dev(rq));
	if (ds && op < BLOCK_OP_MAX) {
		__sync_fetch_and_add(&ds->ops[op], 1);
		__sync_fetch_and_add(&ds->bytes[op], bytes);
	}
	if (op == BLOCK_OP_OTHER)
		return 0;

	__builtin_memcpy(pinit.comm, info->comm, sizeof(pinit.comm));
	pinit.cgroup_id = info->cgroup_id;
	ps = vigil_lookup_or_init(&blk_proc, &info->tgid, &pinit);
	if (!ps) {
		vigil_count(&blk_counters, BLOCK_COUNTER_PROC_MAP_FULL);
		return 0;
	}
	if (op == BLOCK_OP_READ) {
		__sync_fetch_and_add(&ps->read_ops, 1);
		__sync_fetch_and_add(&ps->read_bytes, bytes);
	} else {
		__sync_fetch_and_add(&ps->write_ops, 1);
		__sync_fetch_and_add(&ps->write_bytes, bytes);
	}
	return 0;
}

static __always_inline int on_complete(struct request *rq)
{
	struct block_rq_info *info;
	struct block_dev_stats *ds;
	__u64 key = (__u64)rq, us;
	__u32 op, slot;

	info = bpf_map_lookup_elem(&blk_inflight, &key);
	if (!info) {
		/* Filtered out, issued before load, or a second partial completion. */
		vigil_count(&blk_counters, BLOCK_COUNTER_UNKNOWN_RQ);
		return 0;
	}
	if (!info->issue_ns) {
		vigil_count(&blk_counters, BLOCK_COUNTER_NO_ISSUE);
		bpf_map_delete_elem(&blk_inflight, &key);
		return 0;
	}
	us = (bpf_ktime_get_ns() - info->issue_ns) / 1000;
	bpf_map_delete_elem(&blk_inflight, &key);
	op = rq_op(rq);
	ds = dev_stats(rq_dev(rq));
	if (!ds || op >= BLOCK_OP_MAX)
		return 0;
	slot = vigil_hist_slot(us, BLOCK_HIST_SLOTS);
	if (slot < BLOCK_HIST_SLOTS)
		__sync_fetch_and_add(&ds->slots[op][slot], 1);
	__sync_fetch_and_add(&ds->sum_us[op], us);
	return 0;
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(vigil_bins_btf, struct request *rq)
{
	return on_insert(rq);
}

SEC("raw_tp/block_rq_insert")
int BPF_PROG(vigil_bins_raw, struct request *rq)
{
	return on_insert(rq);
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(vigil_biss_btf, struct request *rq)
{
	return on_issue(rq);
}

SEC("raw_tp/block_rq_issue")
int BPF_PROG(vigil_biss_raw, struct request *rq)
{
	return on_issue(rq);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(vigil_bcmp_btf, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq);
}

SEC("raw_tp/block_rq_complete")
int BPF_PROG(vigil_bcmp_raw, struct request *rq, int error, unsigned int nr_bytes)
{
	return on_complete(rq);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

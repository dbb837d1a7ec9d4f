/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Wire structs of the block domain, shared by block.bpf.c and the agent's block collector.
 * Fixed-width fields and explicit padding: the layout is the contract.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define BLOCK_COMM_LEN 16

/*
 * Issue -> complete latency, per device and op: slot i counts latencies l (microseconds) with
 * 2^i <= l < 2^(i+1); slot 0 also holds l < 1; the last slot is open-ended.
 */
#define BLOCK_HIST_SLOTS 27

enum block_op {
	BLOCK_OP_READ = 0,
	BLOCK_OP_WRITE,
	BLOCK_OP_OTHER, /* flush, discard, write-zeroes, ... */
	BLOCK_OP_MAX,
};

/* Value of blk_dev (keyed by the disk's dev_t, the kernel's MKDEV: major << 20 | minor). */
struct block_dev_stats {
	__u64 ops[BLOCK_OP_MAX];
	__u64 bytes[BLOCK_OP_MAX];
	__u64 slots[BLOCK_OP_MAX][BLOCK_HIST_SLOTS];
	__u64 sum_us[BLOCK_OP_MAX];
};

/* Value of blk_proc (keyed by the tgid the I/O is attributed to). */
struct block_proc_stats {
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 read_ops;
	__u64 write_ops;
	__u64 cgroup_id;
	char comm[BLOCK_COMM_LEN];
};

/* Value of blk_inflight (keyed by the request's address). */
struct block_rq_info {
	__u64 issue_ns; /* 0 until block_rq_issue */
	__u64 cgroup_id;
	__u32 tgid;
	__u32 pad;
	char comm[BLOCK_COMM_LEN];
};

enum block_counter {
	BLOCK_COUNTER_DEV_MAP_FULL = 0, /* blk_dev had no room for a new device */
	BLOCK_COUNTER_PROC_MAP_FULL, /* blk_proc had no room for a new tgid */
	BLOCK_COUNTER_NO_ISSUE, /* completions whose issue was not seen */
	BLOCK_COUNTER_UNKNOWN_RQ, /* completions of requests not in blk_inflight */
	BLOCK_COUNTER_REISSUE, /* issues of a request already issued (requeued) */
	BLOCK_COUNTER_MAX,
};

#define BLOCK_MINORBITS 20

#ifdef __cplusplus
static_assert(sizeof(block_dev_stats) == 8 * BLOCK_OP_MAX * (BLOCK_HIST_SLOTS + 3),
	      "block_dev_stats layout changed");
static_assert(sizeof(block_proc_stats) == 56, "block_proc_stats layout changed");
static_assert(sizeof(block_rq_info) == 40, "block_rq_info layout changed");
#else
_Static_assert(sizeof(struct block_dev_stats) == 8 * BLOCK_OP_MAX * (BLOCK_HIST_SLOTS + 3),
	       "block_dev_stats layout changed");
_Static_assert(sizeof(struct block_proc_stats) == 56, "block_proc_stats layout changed");
_Static_assert(sizeof(struct block_rq_info) == 40, "block_rq_info layout changed");
#endif

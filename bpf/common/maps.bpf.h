/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Map helpers shared by vigil's BPF programs. Kernel side only. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#ifndef EEXIST
#define EEXIST 17
#endif

/*
 * Looks up key in map, inserting init first when absent. Returns NULL only when the map is
 * full (or the insert failed for another reason); callers count that.
 */
static __always_inline void *vigil_lookup_or_init(void *map, const void *key, const void *init)
{
	void *val = bpf_map_lookup_elem(map, key);
	long err;

	if (val)
		return val;
	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	return bpf_map_lookup_elem(map, key);
}

/* Adds one to slot idx of a per-CPU __u64 array used as a set of counters. */
static __always_inline void vigil_count(void *counters, __u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(counters, &idx);

	if (c)
		*c += 1;
}

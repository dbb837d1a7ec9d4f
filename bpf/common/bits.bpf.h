/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Log2 bucketing for in-kernel histograms. Kernel side only. */
#pragma once

#include "vmlinux.h"

/* floor(log2(v)) for v > 0, 0 for v == 0; branch-light so the verifier sees a bounded result. */
static __always_inline __u32 vigil_log2(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 vigil_log2l(__u64 v)
{
	__u32 hi = v >> 32;

	if (hi)
		return vigil_log2(hi) + 32;
	return vigil_log2(v);
}

/* Bucket index of v in a histogram of `slots` log2 buckets (the last one is open-ended). */
static __always_inline __u32 vigil_hist_slot(__u64 v, __u32 slots)
{
	__u32 s = vigil_log2l(v);

	return s < slots ? s : slots - 1;
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The floor: programs that do nothing, attached by vigil-bench-floor to exactly the hooks the
 * agent uses. Whatever they cost is the price of the hook itself (the tracepoint slow path, the
 * BPF dispatch), which no agent on that hook can avoid; vigil's cost is judged against it.
 *
 * The programs carry no target in their section name: the loader gives each used slot its hook
 * before load (bpf_program__set_attach_target for tp_btf, the attach call for raw_tp and
 * tracepoint) and disables the autoload of the rest.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define FLOOR_BTF(n)                                                                               \
	SEC("tp_btf")                                                                              \
	int floor_btf_##n(void *ctx)                                                               \
	{                                                                                          \
		return 0;                                                                          \
	}
#define FLOOR_RAW(n)                                                                               \
	SEC("raw_tp")                                                                              \
	int floor_raw_##n(void *ctx)                                                               \
	{                                                                                          \
		return 0;                                                                          \
	}
#define FLOOR_TP(n)                                                                                \
	SEC("tracepoint")                                                                          \
	int floor_tp_##n(void *ctx)                                                                \
	{                                                                                          \
		return 0;                                                                          \
	}
/* clang-format does not settle on one layout for this list. */
// clang-format off
#define FLOOR_SLOTS(M) \
  M(00) M(01) M(02) M(03) M(04) M(05) M(06) M(07) M(08) M(09) M(10) M(11) \
  M(12) M(13) M(14) M(15) M(16) M(17) M(18) M(19) M(20) M(21) M(22) M(23)
// clang-format on

/* 24 slots per attach type: more than the hooks vigil uses (see bench/floor/floor.cc). */
FLOOR_SLOTS(FLOOR_BTF)
FLOOR_SLOTS(FLOOR_RAW)
FLOOR_SLOTS(FLOOR_TP)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

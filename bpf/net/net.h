/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Wire structs of the network domain, shared by net.bpf.c and the agent's net collector.
 * Fixed-width fields and explicit padding: the layout is the contract.
 */
#pragma once

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define VIGIL_NET_COMM_LEN 16
#define VIGIL_NET_HIST_SLOTS 32

/* Value of proc_stats (a per-CPU hash keyed by tgid); userspace sums the CPUs. */
struct net_proc_stats {
	__u64 tcp_tx_bytes; /* tcp_sock::bytes_acked deltas of the sockets it owns */
	__u64 tcp_rx_bytes; /* tcp_sock::bytes_received deltas */
	__u64 udp_tx_bytes; /* sock_send_length, only while the message hooks are attached */
	__u64 udp_rx_bytes; /* sock_recv_length, likewise */
	__u64 retransmits;
	__u64 active_opens;
	__u64 passive_opens;
	__u64 connect_failures; /* SYN_SENT -> CLOSE, whatever the reason */
	__u64 connect_refused; /* ... with sk_err ECONNREFUSED */
	__u64 connect_timeouts; /* ... with sk_err ETIMEDOUT */
	__u64 closes; /* connections that reached CLOSE after being established */
	__u64 resets_sent;
	__u64 resets_received;
	__u64 cgroup_id;
	char comm[VIGIL_NET_COMM_LEN];
};

/* Key of hists: one log2 histogram per (tgid, kind); tgid 0 holds unattributed samples. */
enum net_hist_kind {
	NET_HIST_CONNECT_US = 0, /* SYN_SENT -> ESTABLISHED, microseconds */
	NET_HIST_SRTT_US = 1, /* tcp_sock::srtt_us / 8 when a connection leaves ESTABLISHED */
	NET_HIST_KINDS,
};

struct net_hist_key {
	__u32 tgid;
	__u32 kind;
};

struct net_hist {
	__u64 slots[VIGIL_NET_HIST_SLOTS]; /* slot i: 2^i <= v < 2^(i+1); slot 0 also v < 1 */
	__u64 count;
	__u64 sum;
};

/* A TCP connection lifecycle event (into ESTABLISHED, or into CLOSE), from the ring buffer. */
struct net_tcp_event {
	__u32 pid; /* owner tgid: the connecting process, or the one that used an accepted socket */
	__u32 pad0;
	__u64 ktime_ns;
	__u64 cgroup_id;
	char comm[VIGIL_NET_COMM_LEN];
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 sport; /* host byte order */
	__u16 dport; /* host byte order */
	__u8 old_state;
	__u8 new_state;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u64 duration_ns; /* time spent in old_state */
	__u64 lifetime_ns; /* since the connect() or the accept-side SYN_RECV -> ESTABLISHED */
	__u64 tx_bytes; /* tcp_sock::bytes_acked */
	__u64 rx_bytes; /* tcp_sock::bytes_received */
	__s32 sk_err; /* sk->sk_err at the transition (ECONNREFUSED, ETIMEDOUT, ...) */
	__u32 srtt_us; /* smoothed RTT, microseconds */
};

/* Slots of the net_counters per-CPU array. */
enum net_counter {
	NET_COUNTER_PROC_MAP_FULL = 0,
	NET_COUNTER_SOCK_MAP_FULL,
	NET_COUNTER_HIST_MAP_FULL,
	NET_COUNTER_EVENTS_GENERATED,
	NET_COUNTER_EVENTS_LOST, /* ring buffer reserve failures */
	NET_COUNTER_RETRANSMITS,
	NET_COUNTER_RETRANSMITS_UNATTRIBUTED,
	NET_COUNTER_RESETS_SENT,
	NET_COUNTER_RESETS_SENT_UNATTRIBUTED, /* includes RSTs for no socket (closed ports) */
	NET_COUNTER_RESETS_RECEIVED,
	NET_COUNTER_RESETS_RECEIVED_UNATTRIBUTED,
	NET_COUNTER_PASSIVE_UNATTRIBUTED, /* accepted sockets closed before any send/recv */
	NET_COUNTER_STATE_UNATTRIBUTED, /* state changes of sockets opened before load */
	/* TCP bytes of sockets closed before any owner was known (bytes, not events) */
	NET_COUNTER_TCP_TX_BYTES_UNATTRIBUTED,
	NET_COUNTER_TCP_RX_BYTES_UNATTRIBUTED,
	NET_COUNTER_ITER_SOCKETS, /* TCP sockets visited by the byte iterator */
	NET_COUNTER_ITER_ADOPTED, /* ... of which first seen then (opened before load) */
	NET_COUNTER_BYTES_RACE_LOST, /* byte claims abandoned after retries (caught up later) */
	NET_COUNTER_MAX,
};

#ifdef __cplusplus
static_assert(sizeof(net_proc_stats) == 128, "net_proc_stats layout changed");
static_assert(sizeof(net_hist) == 272, "net_hist layout changed");
static_assert(sizeof(net_tcp_event) == 120, "net_tcp_event layout changed");
#else
_Static_assert(sizeof(struct net_proc_stats) == 128, "net_proc_stats layout changed");
_Static_assert(sizeof(struct net_hist) == 272, "net_hist layout changed");
_Static_assert(sizeof(struct net_tcp_event) == 120, "net_tcp_event layout changed");
#endif

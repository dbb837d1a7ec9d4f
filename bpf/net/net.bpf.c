// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Network domain: TCP lifecycle (opens, connect latency, failed connects, closes), resets,
 * retransmits, smoothed RTT, and TCP/UDP bytes per process. No kprobes: everything hangs off
 * tracepoints (sock/inet_sock_set_state, tcp/tcp_{retransmit_skb,send_reset,receive_reset,
 * destroy_sock}, optionally sock/sock_{send,recv}_length), attached as tp_btf or raw_tp, chosen
 * by userspace before load, plus one bpf_iter program (iter/task_file) that userspace runs once
 * per collection.
 *
 * Cost: the lifecycle hooks fire per connection state change, per retransmit or reset, which is
 * cheap. The per-message tracepoints sock_{send,recv}_length fire on every sendmsg/recvmsg and
 * cost a loopback request/response workload measurably even with empty programs, so they are
 * attached only when the message mode asks for them (userspace: off by default, sampled or
 * continuous); they are the only source of UDP bytes.
 *
 * TCP bytes never need them: the kernel keeps per-socket totals, tcp_sock::bytes_acked (RFC 4898
 * tcpEStatsAppHCThruOctetsAcked, sum of snd_una advances) and tcp_sock::bytes_received
 * (tcpEStatsAppHCThruOctetsReceived, sum of rcv_nxt advances), see include/linux/tcp.h. Each
 * tracked socket remembers how much of them was already reported (sock_info::{tx,rx}_reported);
 * the difference is added to the owner by the iterator at each collection and, finally, when
 * the socket reaches CLOSE, so a connection that lives less than one interval is still counted.
 * Bytes of a socket that closes with no known owner go to the unattributed byte counters.
 *
 * Attribution: most TCP events fire in softirq context, where "current" is whatever task was
 * interrupted. So each tracked socket remembers its owner in `socks`: the task that called
 * connect() (CLOSE -> SYN_SENT runs in its context); for an accepted socket, the first of:
 * the process holding its fd at an iterator pass, the process that close()s or shutdown()s it
 * (ESTABLISHED -> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK and an abortive close run in the caller's
 * context), or, when the message hooks are attached, the first task to send or receive on it.
 * That is the accepting process, and its passive open is counted then. At each iterator pass
 * the first process (lowest pid) found holding a socket's fd becomes its owner, so a socket
 * handed to another process follows it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "core_shims.bpf.h"
#include "common/maps.bpf.h"
#include "net/net.h"

#define MAX_PROCS 16384
#define MAX_SOCKS 65536
#define MAX_HISTS 8192

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define MSG_PEEK 2
#define ECONNREFUSED 111
#define ETIMEDOUT 110

/* TCP states, include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10

/*
 * Counters in per-CPU values are still bumped atomically: a softirq program can interrupt a
 * process-context one on the same CPU and update the same tgid's value.
 */
const volatile __u32 targ_tgid = 0;
/*
 * tcp/tcp_destroy_sock exists (v5.16+), so a socket's entry is removed when the socket is
 * destroyed rather than when it reaches CLOSE: an abortive close (SO_LINGER 0) sends its RST
 * after the move to CLOSE, and the RST should still find its owner.
 */
const volatile bool delete_on_destroy = false;
/* Wake the reader only once this many bytes wait (see process.bpf.c); drained on a timer too. */
const volatile __u64 wakeup_bytes = 256 << 10;
/* Bumped by userspace before each iterator pass: a socket is accounted once per pass. */
volatile __u64 iter_pass = 0;

/* What we know about a tracked TCP socket, keyed by its struct sock address. */
struct sock_info {
	__u64 state_ts_ns; /* when it entered its current state */
	__u64 open_ts_ns;
	__u64 cgroup_id;
	__u64 tgid; /* owner; 0 until an accepted socket is first used (64-bit for cmpxchg) */
	__u64 tx_reported; /* bytes_acked already added to an owner or the unattributed counter */
	__u64 rx_reported; /* bytes_received likewise */
	__u64 seen_pass; /* last iterator pass that accounted this socket */
	__u8 passive;
	__u8 pad;
	__u16 sport; /* local port, remembered: at CLOSE the socket is unhashed and reads 0 */
	__u8 pad2[4];
	char comm[VIGIL_NET_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32);
	__type(value, struct net_proc_stats);
} proc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_HISTS);
	__type(key, struct net_hist_key);
	__type(value, struct net_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} net_counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&net_counters, &idx);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&net_counters, &idx);

	if (c && n)
		__sync_fetch_and_add(c, n);
}

/*
 * Histogram slot of v: floor(log2(v)), 0 for v == 0, at most VIGIL_NET_HIST_SLOTS - 1 (the last
 * slot is open-ended). Branch-free after the clamp: (C - v) >> 63 is 1 exactly when v > C (here
 * v <= 2^31), so the verifier walks one path with a bounded result. A loop of compare-and-shift
 * steps gave one path per slot value, and since the slot indexes the histogram each was a
 * distinct state that could not be pruned: that halved the state program's verified
 * instructions (13.5k -> 6.4k) and its load time (~12.7 -> ~6.6 ms), for the agent and
 * `vigil trace tcp` alike.
 */
static __always_inline __u32 hist_slot(__u64 v)
{
	__u64 r, shift;

	_Static_assert(VIGIL_NET_HIST_SLOTS == 32, "the clamp below assumes 32 slots");
	if (v > (1ULL << 31))
		v = 1ULL << 31;
	r = ((0xFFFFULL - v) >> 63) << 4;
	v >>= r;
	shift = ((0xFFULL - v) >> 63) << 3;
	v >>= shift;
	r |= shift;
	shift = ((0xFULL - v) >> 63) << 2;
	v >>= shift;
	r |= shift;
	shift = ((0x3ULL - v) >> 63) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1) & 1;
	return r;
}

static __always_inline void hist_add(__u32 tgid, __u32 kind, __u64 value)
{
	struct net_hist_key key = {.tgid = tgid, .kind = kind};
	static const struct net_hist zero;
	struct net_hist *h;
	__u32 slot;

	if (targ_tgid && tgid != targ_tgid)
		return; /* --pid: only that process's samples, like every other per-process figure
			 */
	h = vigil_lookup_or_init(&hists, &key, &zero);
	if (!h) {
		count(NET_COUNTER_HIST_MAP_FULL);
		return;
	}
	slot = hist_slot(value);
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, value);
}

/* Per-process stats of tgid, created with the given identity when new. */
static __always_inline struct net_proc_stats *proc_for(__u32 tgid, const char *comm,
						       __u64 cgroup_id)
{
	struct net_proc_stats *st = bpf_map_lookup_elem(&proc_stats, &tgid);
	struct net_proc_stats init = {};

	if (st)
		return st;
	init.cgroup_id = cgroup_id;
	if (comm)
		__builtin_memcpy(init.comm, comm, VIGIL_NET_COMM_LEN);
	st = vigil_lookup_or_init(&proc_stats, &tgid, &init);
	if (!st)
		count(NET_COUNTER_PROC_MAP_FULL);
	return st;
}

static __always_inline struct net_proc_stats *proc_of_sock(struct sock_info *info)
{
	if (!info || !info->tgid)
		return NULL;
	if (targ_tgid && info->tgid != targ_tgid)
		return NULL;
	return proc_for(info->tgid, info->comm, info->cgroup_id);
}

static __always_inline __u16 sk_protocol(const struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
}

/*
 * Moves *reported up to now and returns the part this caller claimed. The iterator (process
 * context) and the CLOSE transition (often softirq, another CPU) may race on one socket; the
 * compare-and-swap makes each byte claimed once.
 */
static __always_inline __u64 claim(__u64 *reported, __u64 now)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u64 old = *(volatile __u64 *)reported;

		if (now <= old)
			return 0;
		if (__sync_val_compare_and_swap(reported, old, now) == old)
			return now - old;
	}
	/* Still unclaimed bytes stay below the kernel's counter: the next pass picks them up. */
	count(NET_COUNTER_BYTES_RACE_LOST);
	return 0;
}

/*
 * Adds the socket's not yet reported TCP bytes to its owner. Without an owner they wait, unless
 * this is the last look (CLOSE): then they go to the unattributed counters.
 */
static __always_inline void account_bytes(const struct sock *sk, struct sock_info *info, bool final)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct net_proc_stats *st;
	__u64 tx, rx;

	if (!info->tgid && !final)
		return;
	tx = claim(&info->tx_reported, BPF_CORE_READ(tp, bytes_acked));
	rx = claim(&info->rx_reported, BPF_CORE_READ(tp, bytes_received));
	if (!tx && !rx)
		return;
	if (!info->tgid) {
		count_n(NET_COUNTER_TCP_TX_BYTES_UNATTRIBUTED, tx);
		count_n(NET_COUNTER_TCP_RX_BYTES_UNATTRIBUTED, rx);
		return;
	}
	st = proc_of_sock(info); /* NULL: filtered out by targ_tgid, or map full (counted) */
	if (!st)
		return;
	__sync_fetch_and_add(&st->tcp_tx_bytes, tx);
	__sync_fetch_and_add(&st->tcp_rx_bytes, rx);
}

/*
 * Makes tgid the owner of a socket nobody owned yet (an accepted one) and counts its passive
 * open; a no-op when another task got there first.
 */
static __always_inline void adopt(struct sock_info *info, __u32 tgid, const char *comm,
				  __u64 cgroup_id)
{
	struct net_proc_stats *st;

	if (__sync_val_compare_and_swap(&info->tgid, 0, (__u64)tgid) != 0)
		return;
	info->cgroup_id = cgroup_id;
	__builtin_memcpy(info->comm, comm, VIGIL_NET_COMM_LEN);
	if (!info->passive || (targ_tgid && tgid != targ_tgid))
		return;
	st = proc_for(tgid, comm, cgroup_id);
	if (st)
		__sync_fetch_and_add(&st->passive_opens, 1);
}

/*
 * Whether this state change runs in the context of a process acting on the socket through its
 * fd: tcp_close()/shutdown() move ESTABLISHED -> FIN_WAIT1 and CLOSE_WAIT -> LAST_ACK
 * (tcp_close_state), and an abortive close or disconnect (tcp_disconnect) moves ESTABLISHED or
 * CLOSE_WAIT -> CLOSE before it sets sk_err. The same -> CLOSE moves from softirq (a reset
 * received, a timeout, a sock_diag abort) set sk_err first, so sk_err == 0 tells them apart.
 */
static __always_inline bool owner_context(const struct sock *sk, int oldstate, int newstate)
{
	if (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1)
		return true;
	if (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)
		return true;
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) && newstate == TCP_CLOSE)
		return BPF_CORE_READ(sk, sk_err) == 0;
	return false;
}

static __always_inline void adopt_current(struct sock_info *info)
{
	char comm[VIGIL_NET_COMM_LEN];

	bpf_get_current_comm(comm, sizeof(comm));
	adopt(info, bpf_get_current_pid_tgid() >> 32, comm, bpf_get_current_cgroup_id());
}

static __always_inline void emit(const struct sock *sk, struct sock_info *info, int oldstate,
				 int newstate, __u64 now)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct net_tcp_event *e;

	if (targ_tgid && info->tgid != targ_tgid)
		return;
	count(NET_COUNTER_EVENTS_GENERATED);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(NET_COUNTER_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = info->tgid;
	e->ktime_ns = now;
	e->cgroup_id = info->cgroup_id;
	__builtin_memcpy(e->comm, info->comm, VIGIL_NET_COMM_LEN);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->sport)
		info->sport = e->sport;
	else
		e->sport = info->sport;
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->old_state = oldstate;
	e->new_state = newstate;
	if (e->family == AF_INET) {
		/* BPF_CORE_READ_INTO copies sizeof(*dst): a 4- or 16-byte dst. */
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
	}
	e->duration_ns = now - info->state_ts_ns;
	e->lifetime_ns = now - info->open_ts_ns;
	e->tx_bytes = BPF_CORE_READ(tp, bytes_acked);
	e->rx_bytes = BPF_CORE_READ(tp, bytes_received);
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

static __always_inline int on_state(const struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns();
	struct net_proc_stats *st;
	struct sock_info *info;

	if (sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_LISTEN || newstate == TCP_LISTEN)
		return 0; /* listeners and their clones */

	if (newstate == TCP_SYN_SENT) {
		/* connect(): we are in the caller's context. */
		struct sock_info init = {.state_ts_ns = now, .open_ts_ns = now};
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;

		init.tgid = tgid;
		init.cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(init.comm, sizeof(init.comm));
		if (bpf_map_update_elem(&socks, &key, &init, BPF_ANY) != 0)
			count(NET_COUNTER_SOCK_MAP_FULL);
		if (targ_tgid && tgid != targ_tgid)
			return 0;
		st = proc_for(tgid, init.comm, init.cgroup_id);
		if (st)
			__sync_fetch_and_add(&st->active_opens, 1);
		return 0;
	}

	info = bpf_map_lookup_elem(&socks, &key);
	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED && !info) {
		/* An accepted connection; its owner is set by the first send/recv on it. */
		struct sock_info init = {.state_ts_ns = now, .open_ts_ns = now, .passive = 1};

		if (bpf_map_update_elem(&socks, &key, &init, BPF_ANY) != 0)
			count(NET_COUNTER_SOCK_MAP_FULL);
		info = bpf_map_lookup_elem(&socks, &key);
		if (info)
			emit(sk, info, oldstate, newstate, now);
		return 0;
	}
	if (!info) {
		count(NET_COUNTER_STATE_UNATTRIBUTED);
		return 0;
	}

	if (!info->tgid && owner_context(sk, oldstate, newstate))
		adopt_current(info);
	st = proc_of_sock(info);
	if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		hist_add(info->tgid, NET_HIST_CONNECT_US, (now - info->state_ts_ns) / 1000);
	} else if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE) {
		int err = BPF_CORE_READ(sk, sk_err);

		if (st) {
			__sync_fetch_and_add(&st->connect_failures, 1);
			if (err == ECONNREFUSED)
				__sync_fetch_and_add(&st->connect_refused, 1);
			if (err == ETIMEDOUT)
				__sync_fetch_and_add(&st->connect_timeouts, 1);
		}
	}
	if (oldstate == TCP_ESTABLISHED) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;

		hist_add(info->tgid, NET_HIST_SRTT_US, BPF_CORE_READ(tp, srtt_us) >> 3);
	}

	/*
	 * Bytes are final at CLOSE: whatever no iterator pass reported yet is added now. Earlier
	 * steps of the close (FIN sent, FIN acked, ...) report what is there too, since an orphaned
	 * socket (its last fd closed, so no iterator sees it) can sit in FIN_WAIT2 for up to
	 * tcp_fin_timeout before it reaches CLOSE.
	 */
	if (oldstate != TCP_SYN_SENT && oldstate != TCP_SYN_RECV)
		account_bytes(sk, info, newstate == TCP_CLOSE);
	if (newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE)
		emit(sk, info, oldstate, newstate, now);

	if (newstate == TCP_CLOSE) {
		if (oldstate != TCP_SYN_SENT) {
			if (st)
				__sync_fetch_and_add(&st->closes, 1);
			if (info->passive && !info->tgid)
				count(NET_COUNTER_PASSIVE_UNATTRIBUTED);
		}
		if (!delete_on_destroy) {
			bpf_map_delete_elem(&socks, &key);
			return 0;
		}
	}
	info->state_ts_ns = now;
	return 0;
}

/*
 * sendmsg/recvmsg returned `ret` bytes on sk, in the caller's context (message mode only): UDP
 * bytes, and the owner of an accepted TCP socket at its first use. TCP bytes are not counted
 * here: they come from tcp_sock in every mode (account_bytes).
 */
static __always_inline int on_length(struct sock *sk, int ret, int flags, bool send)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct net_proc_stats *st;
	struct sock_info *info;
	__u16 family, proto;
	char comm[VIGIL_NET_COMM_LEN];
	__u64 key = (__u64)sk;

	if (ret <= 0 || !sk)
		return 0;
	if (!send && (flags & MSG_PEEK))
		return 0;
	if (targ_tgid && tgid != targ_tgid)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	proto = sk_protocol(sk);
	if (proto == IPPROTO_TCP) {
		info = bpf_map_lookup_elem(&socks, &key);
		if (info && !info->tgid)
			adopt_current(info);
		return 0;
	}
	if (proto != IPPROTO_UDP)
		return 0;
	st = bpf_map_lookup_elem(&proc_stats, &tgid);
	if (!st) {
		bpf_get_current_comm(comm, sizeof(comm));
		st = proc_for(tgid, comm, bpf_get_current_cgroup_id());
		if (!st)
			return 0;
	}
	if (send)
		__sync_fetch_and_add(&st->udp_tx_bytes, ret);
	else
		__sync_fetch_and_add(&st->udp_rx_bytes, ret);
	return 0;
}

/*
 * One open file of one process, from the iterator: if it is a TCP socket, the process is (or
 * becomes) its owner and gets the bytes since the last report. A socket first seen here was
 * opened before the collector loaded; its counters so far are the baseline, not reported.
 */
static __always_inline int on_iter_sock(struct task_struct *task, struct sock *sk)
{
	struct sock_info *info;
	__u64 key = (__u64)sk, pass = iter_pass;
	__u32 tgid;
	__u16 family;
	int state;

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_LISTEN || state == TCP_CLOSE)
		return 0; /* no bytes; a closed socket was accounted at its CLOSE */
	tgid = BPF_CORE_READ(task, tgid);
	if (targ_tgid && tgid != targ_tgid)
		return 0;
	count(NET_COUNTER_ITER_SOCKETS);

	info = bpf_map_lookup_elem(&socks, &key);
	if (!info) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		__u64 now = bpf_ktime_get_ns();
		struct sock_info init = {
			.state_ts_ns = now, .open_ts_ns = now, .tgid = tgid, .seen_pass = pass};
		long err;

		init.cgroup_id = vigil_task_cgroup_id(task);
		bpf_core_read(init.comm, sizeof(init.comm), &task->comm);
		init.tx_reported = BPF_CORE_READ(tp, bytes_acked);
		init.rx_reported = BPF_CORE_READ(tp, bytes_received);
		err = bpf_map_update_elem(&socks, &key, &init, BPF_NOEXIST);
		if (err == 0)
			count(NET_COUNTER_ITER_ADOPTED);
		else if (err != -EEXIST)
			count(NET_COUNTER_SOCK_MAP_FULL);
		return 0;
	}
	if (info->seen_pass == pass)
		return 0; /* another holder of the same socket (a shared fd) came first */
	info->seen_pass = pass;
	if (info->tgid != tgid) {
		char comm[VIGIL_NET_COMM_LEN];
		__u64 cgroup_id = vigil_task_cgroup_id(task);

		bpf_core_read(comm, sizeof(comm), &task->comm);
		if (!info->tgid) {
			adopt(info, tgid, comm, cgroup_id);
		} else {
			/* Handed over (fd passing, or the first holder exited): follow it. */
			info->tgid = tgid;
			info->cgroup_id = cgroup_id;
			__builtin_memcpy(info->comm, comm, VIGIL_NET_COMM_LEN);
		}
	}
	account_bytes(sk, info, false);
	return 0;
}

static __always_inline int on_retransmit(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct net_proc_stats *st = proc_of_sock(bpf_map_lookup_elem(&socks, &key));

	count(NET_COUNTER_RETRANSMITS);
	if (st)
		__sync_fetch_and_add(&st->retransmits, 1);
	else
		count(NET_COUNTER_RETRANSMITS_UNATTRIBUTED);
	return 0;
}

static __always_inline int on_reset(const struct sock *sk, bool sent)
{
	__u64 key = (__u64)sk;
	struct net_proc_stats *st = sk ? proc_of_sock(bpf_map_lookup_elem(&socks, &key)) : NULL;

	count(sent ? NET_COUNTER_RESETS_SENT : NET_COUNTER_RESETS_RECEIVED);
	if (!st) {
		count(sent ? NET_COUNTER_RESETS_SENT_UNATTRIBUTED
			   : NET_COUNTER_RESETS_RECEIVED_UNATTRIBUTED);
		return 0;
	}
	if (sent)
		__sync_fetch_and_add(&st->resets_sent, 1);
	else
		__sync_fetch_and_add(&st->resets_received, 1);
	return 0;
}

static __always_inline int on_destroy(const struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&socks, &key);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(vigil_state_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(vigil_state_raw, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(vigil_rtx_btf, const struct sock *sk)
{
	return on_retransmit(sk);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(vigil_rtx_raw, const struct sock *sk)
{
	return on_retransmit(sk);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(vigil_rsts_btf, const struct sock *sk)
{
	return on_reset(sk, true);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(vigil_rsts_raw, const struct sock *sk)
{
	return on_reset(sk, true);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(vigil_rstr_btf, struct sock *sk)
{
	return on_reset(sk, false);
}

SEC("raw_tp/tcp_receive_reset")
int BPF_PROG(vigil_rstr_raw, struct sock *sk)
{
	return on_reset(sk, false);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(vigil_send_btf, struct sock *sk, int ret, int flags)
{
	return on_length(sk, ret, flags, true);
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(vigil_send_raw, struct sock *sk, int ret, int flags)
{
	return on_length(sk, ret, flags, true);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(vigil_recv_btf, struct sock *sk, int ret, int flags)
{
	return on_length(sk, ret, flags, false);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(vigil_recv_raw, struct sock *sk, int ret, int flags)
{
	return on_length(sk, ret, flags, false);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(vigil_dstr_btf, struct sock *sk)
{
	return on_destroy(sk);
}

SEC("raw_tp/tcp_destroy_sock")
int BPF_PROG(vigil_dstr_raw, struct sock *sk)
{
	return on_destroy(sk);
}

SEC("iter/task_file")
int vigil_sock_iter(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct socket *sock;
	struct sock *sk;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	return on_iter_sock(task, sk);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "userspace/collectors/net_collector.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "net.skel.h"
#include "net/net.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/collectors/process_collector.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

// Whether a tracepoint can be attached: through its BTF type when the kernel has BTF (tp_btf),
// else through tracefs (the raw_tp target must exist as a classic tracepoint).
bool haveHook(bool btf, const char* category, const char* name) {
  if (btf) {
    return compat::haveBtfTracepoint(name);
  }
  compat::ensureTracefs();
  return compat::haveTracepoint(category, name);
}

bool isMessageHook(absl::string_view name) { return name.find("_length") != name.npos; }

// Retransmit and reset hooks: they only bump per-process and host counters.
bool isCounterHook(absl::string_view name) {
  return name == "tcp_retransmit_skb" || name == "tcp_send_reset" || name == "tcp_receive_reset";
}

// The byte iterator needs the task_file bpf_iter target (v5.8+; libbpf resolves
// SEC("iter/task_file") through the bpf_iter_task_file function in vmlinux BTF) and the
// bpf_sock_from_file helper (v5.11+; probed as its BPF_FUNC_* value in vmlinux BTF).
bool haveSocketIterator(const compat::VmlinuxBtfScope& scope) {
  // From the mapped file where the kernel allows it (no libbpf parse, ~5 ms less).
  std::optional<bool> func = compat::btfHasType("bpf_iter_task_file", BTF_KIND_FUNC);
  if (func.has_value()) {
    return *func &&
           compat::btfEnumHasValue("bpf_func_id", "BPF_FUNC_sock_from_file").value_or(false);
  }
  const btf* b = scope.btf();
  if (b == nullptr || btf__find_by_name_kind(b, "bpf_iter_task_file", BTF_KIND_FUNC) <= 0) {
    return false;
  }
  int id = btf__find_by_name_kind(b, "bpf_func_id", BTF_KIND_ENUM);
  if (id <= 0) {
    return false;
  }
  const btf_type* t = btf__type_by_id(b, id);
  const struct btf_enum* e = btf_enum(t);  // "struct": btf_enum() hides the type name
  for (int i = 0; i < btf_vlen(t); ++i) {
    if (absl::string_view(btf__name_by_offset(b, e[i].name_off)) == "BPF_FUNC_sock_from_file") {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<NetMessageMode> parseNetMessageMode(absl::string_view text) {
  if (text == "off") {
    return NetMessageMode::kOff;
  }
  if (text == "sampled") {
    return NetMessageMode::kSampled;
  }
  if (text == "continuous") {
    return NetMessageMode::kContinuous;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "net_message_mode '", text, "' is not one of: off (default), sampled, continuous"));
}

NetCollector::NetCollector(net_bpf* skel, const char* mode, const NetOptions& options)
    : skel_(skel),
      attach_mode_(mode),
      options_(options),
      max_buffered_(options.max_buffered_events),
      created_ns_(clockNs(CLOCK_MONOTONIC)),
      duty_(options.duty_cycle, options.interval, options.randomize_window),
      open_window_([this]() {
        if (absl::Status st = attachMessageHooks(); !st.ok()) {
          VIGIL_LOG_WARN("%s", st.message());  // counted; the next window tries again
        }
      }),
      close_window_([this]() { detachMessageHooks(); }) {
  for (Hist& h : retired_) {
    h.buckets.assign(VIGIL_NET_HIST_SLOTS, 0);
  }
  last_collect_ns_ = created_ns_;
}

absl::StatusOr<std::unique_ptr<NetCollector>> NetCollector::create(const NetOptions& options) {
  if (options.message_mode == NetMessageMode::kSampled &&
      !(options.duty_cycle > 0 && options.duty_cycle <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("net: duty cycle must be in (0, 1], got ", options.duty_cycle));
  }
  if (options.message_mode == NetMessageMode::kSampled &&
      options.interval < 100 * kj::MILLISECONDS) {
    return absl::InvalidArgumentError(
        "net: sampled message mode needs an interval of at least 100ms to cycle attachment");
  }
  // One vmlinux BTF parse for all feature probes, freed before libbpf parses its own at load.
  std::optional<compat::VmlinuxBtfScope> btf_scope(std::in_place);
  if (!compat::haveRingBuffer()) {
    return absl::FailedPreconditionError(
        "net: this kernel has no BPF ring buffer (needs 5.8+); the net collector is off");
  }
  bool btf = !options.force_raw_tp && compat::haveBtfTracepoint("inet_sock_set_state");
  if (!btf && !haveHook(false, "sock", "inet_sock_set_state")) {
    return absl::FailedPreconditionError(
        "net: tracepoint sock/inet_sock_set_state is missing (kernel older than 4.16?); the net "
        "collector is off");
  }
  net_bpf* skel = net_bpf::open(compat::coreBtfOpenOpts());
  if (skel == nullptr) {
    return bpfError("net: open", -errno);
  }
  struct Hook {
    const char* category;
    const char* name;
    bpf_program* btf_prog;
    bpf_program* raw_prog;
  };
  Hook hooks[] = {
      {"sock", "inet_sock_set_state", skel->progs.vigil_state_btf, skel->progs.vigil_state_raw},
      {"tcp", "tcp_retransmit_skb", skel->progs.vigil_rtx_btf, skel->progs.vigil_rtx_raw},
      {"tcp", "tcp_send_reset", skel->progs.vigil_rsts_btf, skel->progs.vigil_rsts_raw},
      {"tcp", "tcp_receive_reset", skel->progs.vigil_rstr_btf, skel->progs.vigil_rstr_raw},
      {"sock", "sock_send_length", skel->progs.vigil_send_btf, skel->progs.vigil_send_raw},
      {"sock", "sock_recv_length", skel->progs.vigil_recv_btf, skel->progs.vigil_recv_raw},
      {"tcp", "tcp_destroy_sock", skel->progs.vigil_dstr_btf, skel->progs.vigil_dstr_raw},
  };
  NetOptions effective = options;
  bool want_messages = options.message_mode != NetMessageMode::kOff;
  bool have_destroy = false;
  bool have_lengths = true;
  for (const Hook& h : hooks) {
    bpf_program__set_autoload(btf ? h.raw_prog : h.btf_prog, false);
    if (isMessageHook(h.name)) {
      // Attached and detached by this class (message mode), never by the skeleton.
      bpf_program__set_autoattach(h.btf_prog, false);
      bpf_program__set_autoattach(h.raw_prog, false);
      if (!want_messages) {
        bpf_program__set_autoload(btf ? h.btf_prog : h.raw_prog, false);
        continue;
      }
    }
    if (!options.counter_hooks && isCounterHook(h.name)) {
      bpf_program__set_autoload(btf ? h.btf_prog : h.raw_prog, false);
      continue;
    }
    bool present = haveHook(btf, h.category, h.name);
    if (absl::string_view(h.name) == "tcp_destroy_sock") {
      have_destroy = present;
    }
    if (!present) {
      bpf_program__set_autoload(btf ? h.btf_prog : h.raw_prog, false);
      VIGIL_LOG_WARN("net: tracepoint %s/%s is missing on this kernel; its counters stay 0",
                     h.category, h.name);
      if (isMessageHook(h.name)) {
        have_lengths = false;
      }
    }
  }
  if (want_messages && !have_lengths) {
    bpf_program__set_autoload(skel->progs.vigil_send_btf, false);
    bpf_program__set_autoload(skel->progs.vigil_send_raw, false);
    bpf_program__set_autoload(skel->progs.vigil_recv_btf, false);
    bpf_program__set_autoload(skel->progs.vigil_recv_raw, false);
    VIGIL_LOG_WARN(
        "net: no sock_send_length/sock_recv_length tracepoints (v6.3+); UDP bytes are not "
        "available, net message mode is off");
    effective.message_mode = NetMessageMode::kOff;
  }
  // The byte iterator is run by iterate(), attached below.
  bpf_program__set_autoattach(skel->progs.vigil_sock_iter, false);
  bool have_iter = options.socket_iterator && haveSocketIterator(*btf_scope);
  bool lazy_iter = have_iter && options.lazy_iterator && options.defer_baseline;
  if (!options.socket_iterator || lazy_iter) {
    bpf_program__set_autoload(skel->progs.vigil_sock_iter, false);
  } else if (!have_iter) {
    bpf_program__set_autoload(skel->progs.vigil_sock_iter, false);
    VIGIL_LOG_WARN(
        "net: no task_file bpf_iter or bpf_sock_from_file (v5.11+); TCP bytes are reported only "
        "as connections close, and accepted sockets get owners only when closed");
  }
  skel->rodata->targ_tgid = options.only_tgid;
  skel->rodata->delete_on_destroy = have_destroy;
  bpf_map__set_max_entries(skel->maps.events, options.ring_bytes);
  if (!options.preallocate) {
    for (bpf_map* m : {skel->maps.socks, skel->maps.proc_stats, skel->maps.hists}) {
      bpf_map__set_map_flags(m, bpf_map__map_flags(m) | BPF_F_NO_PREALLOC);
    }
  }
  skel->rodata->wakeup_bytes =
      options.wakeup_bytes != 0 ? options.wakeup_bytes : options.ring_bytes / 4;
  btf_scope.reset();
  int err = net_bpf::load(skel);
  if (err == 0) {
    err = net_bpf::attach(skel);
  }
  if (err != 0) {
    net_bpf::destroy(skel);
    return bpfError("net", err);
  }
  std::unique_ptr<NetCollector> c(new NetCollector(skel, btf ? "tp_btf" : "raw_tp", effective));
  auto ring = RingReader::open(bpf_map__fd(skel->maps.events), &NetCollector::onRecord, c.get());
  if (!ring.ok()) {
    return ring.status();
  }
  c->ring_ = std::move(*ring);
  if (lazy_iter) {
    c->iter_pending_ = true;  // loaded by the first iterate()
  } else if (have_iter) {
    c->iter_link_ = bpf_program__attach_iter(skel->progs.vigil_sock_iter, nullptr);
    if (c->iter_link_ == nullptr) {
      return bpfError("net: attach iter/task_file", -errno);
    }
    // The baseline pass: sockets opened before now count from now on, not from their start.
    if (!options.defer_baseline) {
      if (absl::Status st = c->iterate(); !st.ok()) {
        return st;
      }
    }
  }
  if (effective.message_mode != NetMessageMode::kOff) {
    // Sampled mode's first window opens now; run() keeps the cadence.
    if (absl::Status st = c->attachMessageHooks(); !st.ok()) {
      return st;
    }
  }
  return c;
}

NetCollector::~NetCollector() {
  detachMessageHooks();
  bpf_link__destroy(iter_link_);
  ring_.reset();  // before the skeleton closes the map it reads
  if (iter_skel_ != nullptr) {
    net_bpf::destroy(iter_skel_);
  }
  net_bpf::destroy(skel_);
}

absl::Status NetCollector::loadIterator() {
  iter_pending_ = false;
  net_bpf* skel = net_bpf::open(compat::coreBtfOpenOpts());
  if (skel == nullptr) {
    ++iter_failures_;
    return bpfError("net: open (iterator)", -errno);
  }
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel->obj) {
    bpf_program__set_autoload(prog, prog == skel->progs.vigil_sock_iter);
  }
  bpf_program__set_autoattach(skel->progs.vigil_sock_iter, false);
  // Every map, .rodata and .bss included, is the first instance's: the same sockets, counters
  // and settings, and iterate()'s write to skel_->bss is what the iterator reads.
  bpf_map* mine = nullptr;
  bpf_map* theirs = nullptr;
  int err = 0;
  while (err == 0 && (mine = bpf_object__next_map(skel->obj, mine)) != nullptr) {
    theirs = bpf_object__next_map(skel_->obj, theirs);
    if (theirs == nullptr || strcmp(bpf_map__name(mine), bpf_map__name(theirs)) != 0) {
      err = -EINVAL;
      break;
    }
    err = bpf_map__reuse_fd(mine, bpf_map__fd(theirs));
  }
  if (err == 0) {
    err = net_bpf::load(skel);
  }
  if (err != 0) {
    net_bpf::destroy(skel);
    ++iter_failures_;
    return bpfError("net: iterator", err);
  }
  iter_skel_ = skel;
  iter_link_ = bpf_program__attach_iter(skel->progs.vigil_sock_iter, nullptr);
  if (iter_link_ == nullptr) {
    ++iter_failures_;
    return bpfError("net: attach iter/task_file", -errno);
  }
  return absl::OkStatus();
}

absl::string_view NetCollector::messageMode() const {
  switch (options_.message_mode) {
    case NetMessageMode::kOff:
      return "off";
    case NetMessageMode::kSampled:
      return "sampled";
    case NetMessageMode::kContinuous:
      return "continuous";
  }
  return "off";
}

absl::Status NetCollector::attachMessageHooks() {
  if (messageHooksAttached() || options_.message_mode == NetMessageMode::kOff) {
    return absl::OkStatus();
  }
  bool btf = absl::string_view(attach_mode_) == "tp_btf";
  send_link_ = bpf_program__attach(btf ? skel_->progs.vigil_send_btf : skel_->progs.vigil_send_raw);
  if (send_link_ == nullptr) {
    int err = -errno;
    ++attach_failures_;
    return bpfError("net: attach sock_send_length", err);
  }
  recv_link_ = bpf_program__attach(btf ? skel_->progs.vigil_recv_btf : skel_->progs.vigil_recv_raw);
  if (recv_link_ == nullptr) {
    int err = -errno;
    ++attach_failures_;
    bpf_link__destroy(send_link_);
    send_link_ = nullptr;
    return bpfError("net: attach sock_recv_length", err);
  }
  attached_since_ns_ = clockNs(CLOCK_MONOTONIC);
  ++windows_;
  return absl::OkStatus();
}

void NetCollector::detachMessageHooks() {
  if (!messageHooksAttached()) {
    return;
  }
  bpf_link__destroy(send_link_);
  send_link_ = nullptr;
  bpf_link__destroy(recv_link_);
  recv_link_ = nullptr;
  attached_ns_total_ += clockNs(CLOCK_MONOTONIC) - attached_since_ns_;
}

double NetCollector::messageAttachedFraction() const {
  if (options_.message_mode == NetMessageMode::kOff) {
    return 0;
  }
  if (options_.message_mode == NetMessageMode::kContinuous) {
    return 1;
  }
  int64_t now = clockNs(CLOCK_MONOTONIC);
  int64_t on = attached_ns_total_ + (messageHooksAttached() ? now - attached_since_ns_ : 0);
  int64_t all = now - created_ns_;
  return all <= 0 ? 1 : std::min(1.0, static_cast<double>(on) / static_cast<double>(all));
}

absl::Status NetCollector::iterate() {
  if (iter_pending_) {
    if (absl::Status st = loadIterator(); !st.ok()) {
      return st;
    }
  }
  if (iter_link_ == nullptr) {
    return absl::OkStatus();  // no iterator on this kernel (logged at create)
  }
  skel_->bss->iter_pass += 1;
  int64_t t0 = clockNs(CLOCK_MONOTONIC);
  int fd = bpf_iter_create(bpf_link__fd(iter_link_));
  if (fd < 0) {
    int err = -errno;
    ++iter_failures_;
    return bpfError("net: bpf_iter_create", err);
  }
  // The program writes nothing; reading drives the walk over every task's files to its end.
  char buf[64];
  ssize_t n;
  do {
    n = read(fd, buf, sizeof(buf));
  } while (n > 0 || (n < 0 && errno == EINTR));
  int err = n < 0 ? -errno : 0;
  close(fd);
  iter_ns_total_ += clockNs(CLOCK_MONOTONIC) - t0;
  ++iter_passes_;
  if (err != 0) {
    ++iter_failures_;
    return bpfError("net: reading the socket iterator", err);
  }
  return absl::OkStatus();
}

int NetCollector::onRecord(void* ctx, void* data, size_t size) {
  auto* self = static_cast<NetCollector*>(ctx);
  net_tcp_event e;
  if (size < sizeof(e)) {
    ++self->malformed_;
    return 0;
  }
  memcpy(&e, data, sizeof(e));
  ++self->seen_;
  if (self->buffered_.size() >= self->max_buffered_) {
    ++self->dropped_;
    return 0;
  }
  Buffered b;
  b.pid = e.pid;
  b.ktime_ns = e.ktime_ns;
  b.cgroup_id = e.cgroup_id;
  b.comm.assign(e.comm, strnlen(e.comm, sizeof(e.comm)));
  b.family = e.family;
  b.sport = e.sport;
  b.dport = e.dport;
  b.old_state = e.old_state;
  b.new_state = e.new_state;
  memcpy(b.saddr.data(), e.saddr, 16);
  memcpy(b.daddr.data(), e.daddr, 16);
  b.duration_ns = e.duration_ns;
  b.lifetime_ns = e.lifetime_ns;
  b.tx_bytes = e.tx_bytes;
  b.rx_bytes = e.rx_bytes;
  b.sk_err = e.sk_err;
  b.srtt_us = e.srtt_us;
  self->buffered_.push_back(std::move(b));
  return 0;
}

int NetCollector::poll(int timeout_ms) { return pollRingBuffer(ring_.get(), timeout_ms); }

kj::Promise<void> NetCollector::run(CollectorContext& context) {
  kj::Promise<void> drain = drainRingBuffer(context, ring_.get());
  if (options_.message_mode != NetMessageMode::kSampled || options_.duty_cycle >= 1) {
    return drain;
  }
  // Sampled message mode: windows of duty_cycle * interval placed like the syscall collector's.
  return drain.exclusiveJoin(duty_.run(context.timer, open_window_, close_window_));
}

void NetCollector::collect(Snapshot& out) {
  poll(0);
  if (absl::Status st = iterate(); !st.ok() && iter_failures_ == 1) {
    VIGIL_LOG_WARN("%s (counted in vigil_net_iter_failures_total)", st.message());
  }
  // UDP bytes are seen only while the message hooks are attached: in sampled mode each
  // interval's raw increase is divided by the fraction of that interval they were attached.
  int64_t now_ns = clockNs(CLOCK_MONOTONIC);
  int64_t attached_now =
      attached_ns_total_ + (messageHooksAttached() ? now_ns - attached_since_ns_ : 0);
  double interval_fraction = 1;
  if (options_.message_mode == NetMessageMode::kSampled && now_ns > last_collect_ns_) {
    interval_fraction = static_cast<double>(attached_now - attached_ns_at_last_collect_) /
                        static_cast<double>(now_ns - last_collect_ns_);
  }
  last_collect_ns_ = now_ns;
  attached_ns_at_last_collect_ = attached_now;
  auto scaleUdp = [interval_fraction](uint64_t raw_now, uint64_t& raw_last, double& est) {
    uint64_t delta = raw_now >= raw_last ? raw_now - raw_last : 0;
    raw_last = raw_now;
    // No attached time but a raw increase: bytes of a window that closed right at the last
    // collect; added unscaled rather than dropped.
    est += interval_fraction > 0 ? static_cast<double>(delta) / std::min(1.0, interval_fraction)
                                 : static_cast<double>(delta);
    return static_cast<uint64_t>(std::llround(est));
  };
  absl::flat_hash_set<uint32_t> live_udp;
  int64_t wall_minus_mono = clockNs(CLOCK_REALTIME) - clockNs(CLOCK_MONOTONIC);
  for (const Buffered& b : buffered_) {
    wire::Event::Builder ev = out.newEvent();
    ev.setTimestampNs(static_cast<int64_t>(b.ktime_ns) + wall_minus_mono);
    ev.setPid(b.pid);
    ev.setComm(b.comm);
    ev.setCgroupId(b.cgroup_id);
    auto t = ev.initTcpState();
    t.setFamily(b.family);
    size_t alen = b.family == AF_INET ? 4 : 16;
    t.setSaddr(kj::arrayPtr(b.saddr.data(), alen));
    t.setDaddr(kj::arrayPtr(b.daddr.data(), alen));
    t.setSport(b.sport);
    t.setDport(b.dport);
    t.setOldState(b.old_state);
    t.setNewState(b.new_state);
    t.setDurationNs(b.duration_ns);
    t.setTxBytes(b.tx_bytes);
    t.setRxBytes(b.rx_bytes);
    t.setLifetimeNs(b.lifetime_ns);
    t.setSocketError(b.sk_err);
    t.setSrttUs(b.srtt_us);
  }
  // A burst leaves the buffer at its peak capacity: release it when this interval used less than
  // a quarter of it (userspace/common/shrink.h).
  size_t held = buffered_.size();
  buffered_.clear();
  if (buffered_.capacity() > kShrinkMinCapacity && buffered_.capacity() > 4 * held) {
    std::vector<Buffered>().swap(buffered_);
  }

  // Per-process counters; processes that are gone are reported once more, then retired.
  int stats_fd = bpf_map__fd(skel_->maps.proc_stats);
  std::vector<uint32_t> gone;
  forEachPerCpu<uint32_t, net_proc_stats>(
      stats_fd, [&](const uint32_t& tgid, const std::vector<net_proc_stats>& cpus) {
        ProcessStats& p = out.process(tgid);
        net_proc_stats sum{};
        for (const net_proc_stats& v : cpus) {
          sum.tcp_tx_bytes += v.tcp_tx_bytes;
          sum.tcp_rx_bytes += v.tcp_rx_bytes;
          sum.udp_tx_bytes += v.udp_tx_bytes;
          sum.udp_rx_bytes += v.udp_rx_bytes;
          sum.retransmits += v.retransmits;
          sum.active_opens += v.active_opens;
          sum.passive_opens += v.passive_opens;
          sum.connect_failures += v.connect_failures;
          sum.connect_refused += v.connect_refused;
          sum.connect_timeouts += v.connect_timeouts;
          sum.closes += v.closes;
          sum.resets_sent += v.resets_sent;
          sum.resets_received += v.resets_received;
          if (p.comm.empty() && v.comm[0] != '\0') {
            p.comm.assign(v.comm, strnlen(v.comm, sizeof(v.comm)));
          }
          if (p.cgroup_id == 0 && v.cgroup_id != 0) {
            p.cgroup_id = v.cgroup_id;
          }
        }
        p.tcp_tx_bytes = sum.tcp_tx_bytes;
        p.tcp_rx_bytes = sum.tcp_rx_bytes;
        if (sum.udp_tx_bytes != 0 || sum.udp_rx_bytes != 0 || udp_.contains(tgid)) {
          UdpEstimate& u = udp_[tgid];
          p.udp_tx_bytes = scaleUdp(sum.udp_tx_bytes, u.raw_tx, u.tx);
          p.udp_rx_bytes = scaleUdp(sum.udp_rx_bytes, u.raw_rx, u.rx);
          live_udp.insert(tgid);
        }
        p.tcp_retransmits = sum.retransmits;
        p.tcp_active_opens = sum.active_opens;
        p.tcp_passive_opens = sum.passive_opens;
        p.tcp_connect_failures = sum.connect_failures;
        p.tcp_connect_refused = sum.connect_refused;
        p.tcp_connect_timeouts = sum.connect_timeouts;
        p.tcp_closes = sum.closes;
        p.tcp_resets_sent = sum.resets_sent;
        p.tcp_resets_received = sum.resets_received;
        if (kill(static_cast<pid_t>(tgid), 0) != 0 && errno == ESRCH) {
          p.exited = true;
          gone.push_back(tgid);
        }
      });

  // Histograms: per-process connect counts go to ProcessStats; all are summed host-wide.
  absl::flat_hash_set<uint32_t> gone_set(gone.begin(), gone.end());
  for (auto it = udp_.begin(); it != udp_.end();) {
    if (!live_udp.contains(it->first) || gone_set.contains(it->first)) {
      udp_.erase(it++);
    } else {
      ++it;
    }
  }
  shrinkTableIfSparse(udp_);
  int hist_fd = bpf_map__fd(skel_->maps.hists);
  std::array<Hist, 2> host = retired_;
  std::vector<net_hist_key> retire;
  net_hist_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(hist_fd, prev, &next) == 0) {
    key = next;
    prev = &key;
    net_hist h;
    if (bpf_map_lookup_elem(hist_fd, &key, &h) != 0 || key.kind >= NET_HIST_KINDS) {
      continue;
    }
    Hist& dst = host[key.kind];
    for (int i = 0; i < VIGIL_NET_HIST_SLOTS; ++i) {
      dst.buckets[i] += h.slots[i];
    }
    dst.count += h.count;
    dst.sum += h.sum;
    if (key.kind == NET_HIST_CONNECT_US && key.tgid != 0) {
      auto it = out.processes.find(key.tgid);
      ProcessStats& p = it != out.processes.end() ? it->second : out.process(key.tgid);
      p.tcp_connects = h.count;
      p.tcp_connect_latency_sum_ns = h.sum * 1000;
    }
    if (key.tgid != 0 && (gone_set.contains(key.tgid) ||
                          (kill(static_cast<pid_t>(key.tgid), 0) != 0 && errno == ESRCH))) {
      retire.push_back(key);
      Hist& r = retired_[key.kind];
      for (int i = 0; i < VIGIL_NET_HIST_SLOTS; ++i) {
        r.buckets[i] += h.slots[i];
      }
      r.count += h.count;
      r.sum += h.sum;
    }
  }
  for (const net_hist_key& k : retire) {
    bpf_map_delete_elem(hist_fd, &k);
  }
  for (uint32_t tgid : gone) {
    bpf_map_delete_elem(stats_fd, &tgid);
  }
  const char* hist_names[] = {"vigil_tcp_connect_latency_seconds", "vigil_tcp_srtt_seconds"};
  for (int k = 0; k < NET_HIST_KINDS; ++k) {
    out.histograms.push_back(
        HistogramSample{hist_names[k], {}, 1000, host[k].buckets, host[k].count, host[k].sum});
  }

  int counters = bpf_map__fd(skel_->maps.net_counters);
  auto counter = [&](uint32_t idx) { return static_cast<double>(sumPerCpuCounter(counters, idx)); };
  out.host.push_back(
      MetricSample{"vigil_tcp_retransmits_total", {}, counter(NET_COUNTER_RETRANSMITS), true});
  out.host.push_back(MetricSample{
      "vigil_tcp_resets_total", {{"direction", "sent"}}, counter(NET_COUNTER_RESETS_SENT), true});
  out.host.push_back(MetricSample{"vigil_tcp_resets_total",
                                  {{"direction", "received"}},
                                  counter(NET_COUNTER_RESETS_RECEIVED),
                                  true});
  appendKernelCounters(
      counters,
      {{"vigil_net_unattributed_total",
        {{"what", "retransmit"}},
        NET_COUNTER_RETRANSMITS_UNATTRIBUTED},
       {"vigil_net_unattributed_total",
        {{"what", "reset_sent"}},
        NET_COUNTER_RESETS_SENT_UNATTRIBUTED},
       {"vigil_net_unattributed_total",
        {{"what", "reset_received"}},
        NET_COUNTER_RESETS_RECEIVED_UNATTRIBUTED},
       {"vigil_net_unattributed_total",
        {{"what", "passive_open"}},
        NET_COUNTER_PASSIVE_UNATTRIBUTED},
       {"vigil_net_unattributed_total", {{"what", "state_change"}}, NET_COUNTER_STATE_UNATTRIBUTED},
       {"vigil_bpf_map_full_total", {{"map", "net_proc_stats"}}, NET_COUNTER_PROC_MAP_FULL},
       {"vigil_bpf_map_full_total", {{"map", "net_socks"}}, NET_COUNTER_SOCK_MAP_FULL},
       {"vigil_bpf_map_full_total", {{"map", "net_hists"}}, NET_COUNTER_HIST_MAP_FULL},
       {"vigil_net_unattributed_bytes_total",
        {{"protocol", "tcp"}, {"direction", "sent"}},
        NET_COUNTER_TCP_TX_BYTES_UNATTRIBUTED},
       {"vigil_net_unattributed_bytes_total",
        {{"protocol", "tcp"}, {"direction", "received"}},
        NET_COUNTER_TCP_RX_BYTES_UNATTRIBUTED},
       {"vigil_net_byte_claims_abandoned_total", {}, NET_COUNTER_BYTES_RACE_LOST}},
      out.self);
  out.self.push_back(
      MetricSample{"vigil_net_iter_runs_total", {}, static_cast<double>(iter_passes_), true});
  out.self.push_back(
      MetricSample{"vigil_net_iter_failures_total", {}, static_cast<double>(iter_failures_), true});
  out.self.push_back(MetricSample{
      "vigil_net_iter_seconds_total", {}, static_cast<double>(iter_ns_total_) / 1e9, true});
  out.self.push_back(
      MetricSample{"vigil_net_iter_sockets_total", {}, counter(NET_COUNTER_ITER_SOCKETS), true});
  out.self.push_back(MetricSample{
      "vigil_net_iter_adopted_sockets_total", {}, counter(NET_COUNTER_ITER_ADOPTED), true});
  // 0: no UDP bytes (off); below 1: UDP bytes are estimates (sampled); 1: exact (continuous).
  out.self.push_back(
      MetricSample{"vigil_net_message_duty_cycle_ratio", {}, messageAttachedFraction(), false});
  out.self.push_back(MetricSample{
      "vigil_net_message_attach_windows_total", {}, static_cast<double>(windows_), true});
  out.self.push_back(MetricSample{
      "vigil_net_message_attach_failures_total", {}, static_cast<double>(attach_failures_), true});
  Labels l = {{"collector", "net"}, {"type", "tcp_state"}};
  out.self.push_back(MetricSample{"vigil_events_total", l, static_cast<double>(seen_), true});
  out.self.push_back(MetricSample{"vigil_ringbuf_reserve_failures_total", l,
                                  counter(NET_COUNTER_EVENTS_LOST), true});
  out.self.push_back(
      MetricSample{"vigil_events_generated_total", l, counter(NET_COUNTER_EVENTS_GENERATED), true});
  out.self.push_back(
      MetricSample{"vigil_events_dropped_total",
                   {{"collector", "net"}, {"type", "tcp_state"}, {"reason", "buffer_full"}},
                   static_cast<double>(dropped_),
                   true});
  out.self.push_back(MetricSample{"vigil_events_malformed_total",
                                  {{"collector", "net"}},
                                  static_cast<double>(malformed_),
                                  true});
  appendProgramStats(skel_->obj, out.self);
  appendRecursionMisses(skel_->obj, out.self);
  if (iter_skel_ != nullptr) {
    appendProgramStats(iter_skel_->obj, out.self);  // lazy_iterator: the iterator's instance
  }
  out.collectors.push_back(CollectorState{"net", true, ""});
}

}  // namespace vigil

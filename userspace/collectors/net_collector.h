// Network collector: TCP lifecycle (active/passive opens, connect latency, failed connects,
// closes), resets, retransmits, smoothed RTT and TCP/UDP bytes per process, from the net BPF
// object (bpf/net). Counters accumulate in kernel maps and are read by collect(); connection
// lifecycle events (into ESTABLISHED and into CLOSE) come through a ring buffer, drained in
// run() and buffered (bounded) until collect(). See bpf/net/net.bpf.c for how sockets are
// attributed to processes and which tracepoints are probed.
//
// TCP bytes come from the kernel's per-socket counters, read by a bpf_iter pass over every
// process's open files at each collect() (and once at creation, as the baseline) and at each
// connection's close: no per-message hook is needed. The per-message tracepoints
// (sock_send_length/sock_recv_length), the only source of UDP bytes, cost every send and recv on
// the host, so they are attached according to the message mode: off (the default), sampled
// (attached for duty_cycle of each interval, UDP bytes scaled and marked as estimates) or
// continuous. docs/metrics.md ("Network") and docs/performance.md give the figures.
#pragma once

#include <kj/time.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "userspace/collectors/collector.h"
#include "userspace/collectors/ring_reader.h"
#include "userspace/collectors/duty_cycle.h"

struct net_bpf;
struct bpf_link;

namespace vigil {

// When the per-message tracepoints are attached: never (no UDP bytes), for a duty cycle of each
// interval (UDP bytes estimated), or always (exact UDP bytes).
enum class NetMessageMode { kOff, kSampled, kContinuous };

// Parses "off", "sampled" or "continuous".
absl::StatusOr<NetMessageMode> parseNetMessageMode(absl::string_view text);

struct NetOptions {
  uint32_t only_tgid = 0;  // 0: every process
  // Ring buffer size (power of two, >= page size); resident in the agent's RSS (see
  // ProcessOptions::ring_bytes). 1 MiB holds ~10,000 connection-state events (~100 B each).
  // 512 KiB lost 667 of 40,008 events (counted) in the bench's 10,000-connect
  // storm on a quiet machine, where the storm runs fastest; 1 MiB lost none there: no loss
  // is worth more than half a MiB.
  uint32_t ring_bytes = 1u << 20;
  size_t max_buffered_events = 50000;  // events held between collect() calls
  // Wake the reader once this many bytes wait in the ring (0: a quarter of ring_bytes, the
  // agent's choice; the reader also drains every 100 ms). `vigil trace` uses 1: a wakeup per
  // event, so each event is printed as it happens.
  uint32_t wakeup_bytes = 0;
  NetMessageMode message_mode = NetMessageMode::kOff;
  double duty_cycle = 0.1;  // sampled mode: attached fraction of each interval, in (0, 1]
  // Sampled mode: open each window after the first at a random point of its interval.
  bool randomize_window = true;
  kj::Duration interval = 10 * kj::SECONDS;  // sampled mode's cycle
  // For short-lived tools (`vigil trace tcp`, `vigil hist tcp-*`), where start-up time is what
  // the user waits for. preallocate = false: the hash maps (socks, proc_stats, hists) get
  // BPF_F_NO_PREALLOC, so entries are allocated on first use instead of all being zeroed at
  // load (the per-CPU proc_stats alone took ~13 ms); the agent keeps preallocation (no
  // allocation on the event path). counter_hooks = false: the retransmit and reset programs,
  // which feed only the per-process and host counters, are not loaded.
  bool preallocate = true;
  bool counter_hooks = true;
  // The baseline iterator pass (adopting the sockets already open, counting their bytes from
  // now) is left to the caller, who runs iterate() once the probes are attached and its first
  // output is out: `vigil trace tcp` prints its header a pass sooner.
  bool defer_baseline = false;
  // false: the socket iterator is not loaded (as on kernels without it: TCP bytes only at
  // close, sockets opened before the collector are never adopted). `vigil hist tcp-connect`
  // needs none of that, and saves the program's verification and the CO-RE relocation of the
  // task/cgroup types only it reads (~3 ms).
  bool socket_iterator = true;
  // raw_tp programs even where tp_btf works (the same code, reading through BPF_CORE_READ):
  // they verify faster, and with a cached CO-RE BTF (kernel-compat/core_btf.h) and no socket
  // iterator libbpf then never parses vmlinux BTF. For the CLI; the agent keeps tp_btf.
  bool force_raw_tp = false;
  // With defer_baseline: the socket iterator is loaded by the first iterate() call, as a second
  // instance of the object holding only the iterator and sharing every map with the first,
  // instead of at create(). The iterator is a tracing program, for which libbpf parses all of
  // vmlinux BTF to find its attach target; deferred, that parse and its verification come after
  // the caller's first output (`vigil trace tcp`: ~8 ms sooner, ~10 MiB less peak RSS).
  bool lazy_iterator = false;
};

class NetCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<NetCollector>> create(const NetOptions& options);
  ~NetCollector() override;

  absl::string_view name() const override { return "net"; }
  void collect(Snapshot& out) override;
  kj::Promise<void> run(CollectorContext& context) override;
  // Sampled message mode: the window open now keeps its length; the next follows the interval.
  void setInterval(kj::Duration interval) override {
    options_.interval = interval;
    duty_.setInterval(interval);
  }

  // Reads what the ring buffer holds, waiting up to timeout_ms for the first record.
  int poll(int timeout_ms);

  // One iterator pass: adds every open TCP socket's bytes since the last report to the process
  // holding it. collect() runs one first; public so tests and benchmarks can time it.
  absl::Status iterate();

  size_t ringBytes() const { return ring_ ? ring_->dataBytes() : 0; }
  absl::string_view attachMode() const { return attach_mode_; }
  // The message mode in effect: "off", "sampled" or "continuous" ("off" also when the kernel
  // lacks the per-message tracepoints).
  absl::string_view messageMode() const;
  // Whether the per-message programs are attached right now.
  bool messageHooksAttached() const { return send_link_ != nullptr; }
  // Fraction of the collector's lifetime the per-message programs were attached.
  double messageAttachedFraction() const;
  uint64_t eventsSeen() const { return seen_; }
  uint64_t eventsDropped() const { return dropped_; }
  uint64_t iterPasses() const { return iter_passes_; }
  int64_t iterNanos() const { return iter_ns_total_; }

 private:
  struct Buffered {
    uint32_t pid = 0;
    uint64_t ktime_ns = 0, cgroup_id = 0;
    std::string comm;
    uint16_t family = 0, sport = 0, dport = 0;
    uint8_t old_state = 0, new_state = 0;
    std::array<uint8_t, 16> saddr{}, daddr{};
    uint64_t duration_ns = 0, lifetime_ns = 0, tx_bytes = 0, rx_bytes = 0;
    int32_t sk_err = 0;
    uint32_t srtt_us = 0;
  };
  struct Hist {
    std::vector<uint64_t> buckets;
    uint64_t count = 0, sum = 0;
  };

  struct UdpEstimate {
    uint64_t raw_tx = 0, raw_rx = 0;  // kernel counts at the last collect()
    double tx = 0, rx = 0;            // scaled sums
  };

  NetCollector(net_bpf* skel, const char* mode, const NetOptions& options);
  static int onRecord(void* ctx, void* data, size_t size);
  absl::Status attachMessageHooks();
  void detachMessageHooks();

  net_bpf* skel_;
  std::unique_ptr<RingReader> ring_;
  const char* attach_mode_;
  NetOptions options_;
  size_t max_buffered_;
  bpf_link* iter_link_ = nullptr;
  net_bpf* iter_skel_ = nullptr;  // lazy_iterator: the second instance, iterator only
  bool iter_pending_ = false;     // lazy_iterator: to load at the first iterate()
  absl::Status loadIterator();
  bpf_link* send_link_ = nullptr;
  bpf_link* recv_link_ = nullptr;
  uint64_t iter_passes_ = 0, iter_failures_ = 0;
  int64_t iter_ns_total_ = 0;
  // Message-hook attachment bookkeeping (sampled mode scales UDP bytes by it).
  int64_t created_ns_ = 0, attached_since_ns_ = 0, attached_ns_total_ = 0;
  int64_t last_collect_ns_ = 0, attached_ns_at_last_collect_ = 0;
  uint64_t windows_ = 0, attach_failures_ = 0;
  DutyCycle duty_;  // sampled message mode's windows, placed like the syscall collector's
  std::function<void()> open_window_, close_window_;
  absl::flat_hash_map<uint32_t, UdpEstimate> udp_;
  std::vector<Buffered> buffered_;
  uint64_t seen_ = 0, dropped_ = 0, malformed_ = 0;
  std::array<Hist, 2> retired_;  // histogram counts of exited processes, kept cumulative
};

}  // namespace vigil

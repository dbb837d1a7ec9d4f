// Network collector: TCP lifecycle (active/passive opens, connect latency, failed connects,
// closes), resets, retransmits, smoothed RTT and TCP/UDP bytes per process, from the net BPF
// object (bpf/net). Counters accumulate in kernel maps and are read by collect(); connection
// lifecycle events (into ESTABLISHED and into CLOSE) come through a ring buffer, drained in
// run() and buffered (bounded) until collect(). See bpf/net/net.bpf.c for how sockets are
// attributed to processes and which tracepoints are probed.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "userspace/collectors/collector.h"

struct net_bpf;
struct ring_buffer;

namespace vigil {

struct NetOptions {
  uint32_t only_tgid = 0;              // 0: every process
  uint32_t ring_bytes = 1u << 20;      // ring buffer size (power of two, >= page size)
  size_t max_buffered_events = 50000;  // events held between collect() calls
  // Wake the reader once this many bytes wait in the ring (0: a quarter of ring_bytes, the
  // agent's choice; the reader also drains every 100 ms). `vigil trace` uses 1: a wakeup per
  // event, so each event is printed as it happens.
  uint32_t wakeup_bytes = 0;
};

class NetCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<NetCollector>> create(const NetOptions& options);
  ~NetCollector() override;

  absl::string_view name() const override { return "net"; }
  void collect(Snapshot& out) override;
  kj::Promise<void> run(CollectorContext& context) override;

  // Reads what the ring buffer holds, waiting up to timeout_ms for the first record.
  int poll(int timeout_ms);

  absl::string_view attachMode() const { return attach_mode_; }
  // Where TCP/UDP byte counts come from: "sock_length" (exact, per call) or "tcp_sock" (TCP
  // only, added when a connection closes).
  absl::string_view bytesSource() const { return bytes_source_; }
  uint64_t eventsSeen() const { return seen_; }
  uint64_t eventsDropped() const { return dropped_; }

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

  NetCollector(net_bpf* skel, const char* mode, const char* bytes_source, size_t max_buffered);
  static int onRecord(void* ctx, void* data, size_t size);

  net_bpf* skel_;
  ring_buffer* ring_ = nullptr;
  const char* attach_mode_;
  const char* bytes_source_;
  size_t max_buffered_;
  std::vector<Buffered> buffered_;
  uint64_t seen_ = 0, dropped_ = 0, malformed_ = 0;
  std::array<Hist, 2> retired_;  // histogram counts of exited processes, kept cumulative
};

}  // namespace vigil

// Process-lifecycle collector: exec (filename + masked argv), fork, exit, OOM kills and fatal
// signals from the process BPF object (bpf/process). The kernel writes one ring-buffer record per
// event; run() drains the ring buffer on the event loop and buffers the events (bounded) until
// collect() moves them into the Snapshot. Loss accounting is exact: per event type the kernel
// counts generated events and reserve failures, userspace counts what it read and what its own
// buffer had to drop, and generated == seen + lost always holds once the ring is drained.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "userspace/collectors/collector.h"
#include "userspace/collectors/ring_reader.h"
#include "userspace/masking/masker.h"

struct bpf_object;
struct process_bpf;

namespace vigil {

struct ProcessOptions {
  uint32_t only_tgid = 0;       // 0: every process
  uint64_t only_cgroup_id = 0;  // 0: every cgroup
  // Ring buffer size (power of two, >= page size). The kernel maps every page of a ring mapping
  // when it is made, so the ring is resident in the agent's RSS from the start, once
  // (RingReader maps the data pages once, not twice as libbpf does). 512 KiB holds ~350 execs with
  // a full 1 KiB argv and their fork/exit records (~1,000 typical, ~500 B each), ~130 ms of the
  // bench's exec storm (~3.8 MB/s of records), the same headroom the net collector's 1 MiB ring
  // gives its faster connect storm; the reader wakes at a quarter and drains every 100 ms. Reserve
  // failures are counted (vigil_ringbuf_reserve_failures_total); docs/performance.md, "Footprint".
  uint32_t ring_bytes = 512u << 10;
  size_t max_buffered_events = 100000;     // events held between collect() calls
  std::vector<std::string> mask_patterns;  // extra masking regexes (docs/masking.md)
  // In-kernel filters for `vigil trace`: bit n of event_types enables ProcEventType n (other
  // types are never written to the ring); only_comm (at most 15 bytes) keeps only processes
  // whose comm equals it exactly ("": all).
  uint32_t event_types = ~0u;
  std::string only_comm;
  // Wake the reader once this many bytes wait in the ring (0: a quarter of ring_bytes, the
  // agent's choice; the reader also drains every 100 ms). `vigil trace` uses 1: a wakeup per
  // event, so each event is printed as it happens.
  uint32_t wakeup_bytes = 0;
  // raw_tp programs even where tp_btf works (the same workers): with a cached CO-RE BTF
  // (kernel-compat/core_btf.h) libbpf then parses no vmlinux BTF at all, ~5 ms of `vigil
  // trace`'s start-up. The agent keeps tp_btf.
  bool force_raw_tp = false;
};

// Event types as in bpf/process/process.h, for the counters below.
enum class ProcEventType : int { kExec = 1, kExit = 2, kFork = 3, kOomKill = 4, kSignal = 5 };
const char* procEventTypeName(int type);

// Appends vigil_bpf_program_recursion_misses_total{program} for each loaded program of `obj`:
// invocations the kernel skipped because the same program was already running on that CPU
// (e.g. a softirq interrupting it). Such skips are lost events, so they are exported.
void appendRecursionMisses(const bpf_object* obj, std::vector<MetricSample>& out);

class ProcessCollector final : public Collector {
 public:
  static constexpr int kTypes = 6;  // VIGIL_PEV_TYPE_MAX

  static absl::StatusOr<std::unique_ptr<ProcessCollector>> create(const ProcessOptions& options);
  ~ProcessCollector() override;

  absl::string_view name() const override { return "process"; }
  void collect(Snapshot& out) override;
  kj::Promise<void> run(CollectorContext& context) override;
  void setMaskPatterns(const std::vector<std::string>& patterns) override;

  // Reads what the ring buffer holds, waiting up to timeout_ms for the first record (0: do not
  // wait). Returns the number of records read.
  int poll(int timeout_ms);

  // Cumulative per-type counts (index: ProcEventType).
  uint64_t seen(ProcEventType t) const { return seen_[static_cast<int>(t)]; }
  uint64_t dropped(ProcEventType t) const { return dropped_[static_cast<int>(t)]; }
  uint64_t lostInKernel(ProcEventType t) const;
  uint64_t generatedInKernel(ProcEventType t) const;
  uint64_t malformed() const { return malformed_; }
  // Records that wrapped past the end of the ring and were joined (RingReader).
  uint64_t ringWrappedRecords() const { return ring_ ? ring_->wrappedRecords() : 0; }
  size_t ringBytes() const { return ring_ ? ring_->dataBytes() : 0; }

  absl::string_view attachMode() const { return attach_mode_; }

 private:
  struct Buffered {
    int type = 0;
    uint32_t pid = 0, tid = 0, ppid = 0;
    uint64_t ktime_ns = 0;
    uint64_t cgroup_id = 0;
    std::string comm;
    std::string filename;
    std::string argv;
    bool argv_truncated = false;
    uint32_t exit_code = 0;
    uint64_t lifetime_ns = 0;
    uint32_t child_pid = 0;
    uint64_t total_vm_kb = 0, anon_rss_kb = 0;
    int32_t signal = 0, result = 0;
    uint32_t sender_pid = 0;
  };

  ProcessCollector(process_bpf* skel, const char* mode, size_t max_buffered,
                   std::unique_ptr<Masker> masker, std::vector<std::string> mask_errors);
  static int onRecord(void* ctx, void* data, size_t size);
  void handle(const uint8_t* data, size_t size);

  process_bpf* skel_;
  std::unique_ptr<RingReader> ring_;
  const char* attach_mode_;
  size_t max_buffered_;
  std::unique_ptr<Masker> masker_;
  uint64_t masked_by_earlier_maskers_ = 0;  // keeps vigil_masked_values_total monotonic
  std::vector<std::string> mask_errors_;
  std::vector<Buffered> buffered_;
  std::array<uint64_t, kTypes> seen_{};
  std::array<uint64_t, kTypes> dropped_{};
  uint64_t malformed_ = 0;
};

}  // namespace vigil

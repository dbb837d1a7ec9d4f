// Syscall collector: per-process syscall and failure counts, the most frequent errnos, and a
// host-wide syscall latency histogram, from the syscalls BPF object (bpf/syscalls).
//
// Any program on raw_syscalls slows every syscall on the host, so by default the programs are
// attached for only a slice of each interval (sampled mode, docs/syscall-sampling.md): run()
// attaches them once per interval, at a random point, and detaches them after
// duty_cycle * interval.
// Counts are then scaled by the inverse of the measured attached fraction and are estimates;
// Snapshot.syscall_duty_cycle says by how much. Continuous mode keeps them attached; off mode
// loads nothing and reports the collector down.
#pragma once

#include <kj/time.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "userspace/collectors/collector.h"
#include "userspace/collectors/duty_cycle.h"

struct syscalls_bpf;
struct bpf_link;

namespace vigil {

enum class SyscallMode { kOff, kSampled, kContinuous };

// Parses "off", "sampled" or "continuous".
absl::StatusOr<SyscallMode> parseSyscallMode(absl::string_view text);

// Latency sampling rate the agent, `vigil snapshot` and `vigil top` use (registry.cc); chosen
// from bpf_stats measurements, see docs/syscall-sampling.md.
inline constexpr uint32_t kDefaultLatencySampleEvery = 64;

struct SyscallOptions {
  SyscallMode mode = SyscallMode::kSampled;
  double duty_cycle = 0.02;  // sampled mode: attached fraction of each interval, in (0, 1]
  // Sampled mode: open each window (after the first) at a random point of its interval where it
  // fits, instead of at the interval's start.
  bool randomize_window = true;
  kj::Duration interval = 10 * kj::SECONDS;
  uint32_t only_tgid = 0;  // 0: every process
  bool latency = true;     // also attach sys_enter for the latency histogram
  // Time one syscall in this many (random gaps averaging it) and scale the histogram by it;
  // 1 times every syscall exactly, through task storage, at 2-3x the per-event cost.
  uint32_t latency_sample_every = 1;
  bool force_raw_tp = false;  // tests: use the raw_tp fallback even where tp_btf works
  size_t top_errnos = 5;      // errnos reported per process
  // Capacity of sys_proc and sys_errno (0: 16384 each). Both are preallocated, about 100 and
  // 64 bytes per entry, charged to the agent's memory cgroup.
  uint32_t max_processes = 0;
};

class SyscallCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<SyscallCollector>> create(const SyscallOptions& options);
  ~SyscallCollector() override;

  absl::string_view name() const override { return "syscalls"; }
  void collect(Snapshot& out) override;
  kj::Promise<void> run(CollectorContext& context) override;
  // The window open now keeps its length; the next one follows the new interval.
  void setInterval(kj::Duration interval) override {
    options_.interval = interval;
    duty_.setInterval(interval);
  }

  // Whether the programs are attached right now.
  bool attached() const { return exit_link_ != nullptr; }
  // Kernel ids of the loaded programs (to check their links from outside).
  std::vector<uint32_t> programIds() const;
  // Fraction of the collector's lifetime the programs were attached (1 in continuous mode).
  double attachedFraction() const;
  absl::string_view attachMode() const { return attach_mode_; }

 private:
  SyscallCollector(syscalls_bpf* skel, const char* mode, const SyscallOptions& options);

  absl::Status attach();
  void detach();

  syscalls_bpf* skel_;  // null in off mode
  const char* attach_mode_;
  SyscallOptions options_;
  bpf_link* enter_link_ = nullptr;
  bpf_link* exit_link_ = nullptr;
  bpf_link* cur_link_ = nullptr;  // vigil_syscur_btf (tp_btf only)
  int64_t created_ns_ = 0;
  int64_t attached_since_ns_ = 0;  // when the current window began, if attached
  int64_t attached_ns_total_ = 0;  // completed windows
  uint64_t windows_ = 0;
  uint64_t attach_failures_ = 0;
  DutyCycle duty_;  // window placement in sampled mode
  std::function<void()> open_window_, close_window_;
  std::string last_error_;
  // Raw (unscaled) totals of processes that exited and were retired from the maps.
  uint64_t retired_syscalls_ = 0;
  uint64_t retired_errors_ = 0;
  // Last raw (count, errors) reported per live tgid, to keep counters monotonic.
  absl::flat_hash_map<uint32_t, std::pair<uint64_t, uint64_t>> last_raw_;
};

}  // namespace vigil

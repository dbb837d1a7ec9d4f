// Scheduler collector: on-CPU time and context switches per process, from the sched BPF object
// (bpf/sched). Counters accumulate in the kernel; collect() reads them and retires the entries
// of processes that have exited, after reporting their final values once.
#pragma once

#include "absl/strings/string_view.h"
#include <memory>

#include "absl/status/statusor.h"
#include "userspace/collectors/collector.h"

struct sched_bpf;

namespace vigil {

struct SchedOptions {
  uint32_t only_tgid = 0;  // 0: every process
};

class SchedCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<SchedCollector>> create(const SchedOptions& options);
  ~SchedCollector() override;

  absl::string_view name() const override { return "sched"; }
  void collect(Snapshot& out) override;

  // Which attach type was chosen ("tp_btf" or "raw_tp").
  absl::string_view attachMode() const { return attach_mode_; }

 private:
  explicit SchedCollector(sched_bpf* skel, const char* mode) : skel_(skel), attach_mode_(mode) {}

  sched_bpf* skel_;
  const char* attach_mode_;
};

}  // namespace vigil

#include "userspace/collectors/registry.h"

#include "absl/strings/str_cat.h"
#include "userspace/collectors/block_collector.h"
#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/process_collector.h"
#include "userspace/collectors/host_collector.h"
#include "userspace/collectors/sched_collector.h"
#include "userspace/collectors/syscall_collector.h"

namespace vigil {

const std::vector<std::string>& collectorNames() {
  static const std::vector<std::string> names = {"sched",   "syscalls", "block",
                                                 "process", "net",      "host"};
  return names;
}

absl::StatusOr<std::unique_ptr<Collector>> createCollector(const std::string& name,
                                                           const CollectorConfig& config) {
  if (name == "sched") {
    SchedOptions options;
    options.only_tgid = config.only_tgid;
    options.max_processes = config.max_processes;
    auto c = SchedCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "syscalls") {
    auto mode = parseSyscallMode(config.syscall_mode);
    if (!mode.ok()) {
      return mode.status();
    }
    SyscallOptions options;
    options.mode = *mode;
    options.duty_cycle = config.syscall_duty_cycle;
    options.interval = config.interval;
    options.only_tgid = config.only_tgid;
    options.max_processes = config.max_processes;
    options.force_raw_tp = config.prefer_raw_tp;
    // Timing every syscall costs two clock reads and a task-storage lookup per syscall, 2-3x an
    // empty program; one in kDefaultLatencySampleEvery stays within the per-event budget
    // (docs/syscall-sampling.md). syscall_latency asks for every syscall.
    options.latency = true;
    options.latency_sample_every = config.syscall_latency ? 1 : kDefaultLatencySampleEvery;
    auto c = SyscallCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "block") {
    BlockOptions options{config.only_tgid};
    options.force_raw_tp = config.prefer_raw_tp;
    auto c = BlockCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "process") {
    ProcessOptions options;
    options.only_tgid = config.only_tgid;
    options.mask_patterns = config.mask_patterns;
    options.force_raw_tp = config.prefer_raw_tp;
    if (config.process_ring_bytes != 0) {
      options.ring_bytes = config.process_ring_bytes;
    }
    auto c = ProcessCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "net") {
    auto mode = parseNetMessageMode(config.net_message_mode);
    if (!mode.ok()) {
      return mode.status();
    }
    NetOptions options;
    options.only_tgid = config.only_tgid;
    options.message_mode = *mode;
    options.duty_cycle = config.syscall_duty_cycle;  // one duty cycle for all sampled hooks
    options.interval = config.interval;
    options.preallocate = config.preallocate_maps;
    if (config.net_ring_bytes != 0) {
      options.ring_bytes = config.net_ring_bytes;
    }
    auto c = NetCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "host") {
    auto c = HostCollector::create();
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  return absl::NotFoundError(absl::StrCat("unknown collector '", name, "'"));
}

}  // namespace vigil

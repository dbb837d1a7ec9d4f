// Block I/O collector: issue -> complete latency per device and op, bytes and ops per device and
// per process, from the block BPF object (bpf/block). Devices are whole disks (requests exist
// only below partitions and device-mapper), named by major:minor and the kernel's device name
// (DEVNAME in /sys/dev/block/M:m/uevent). See bpf/block/block.bpf.c for where per-process
// attribution is wrong (writeback from kworkers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "userspace/collectors/collector.h"

struct block_bpf;

namespace vigil {

struct BlockOptions {
  uint32_t only_tgid = 0;     // 0: every process
  bool force_raw_tp = false;  // tests: use the raw_tp fallback even where tp_btf works
};

// The kernel name of a block device ("vda", "nvme0n1") from /sys/dev/block/M:m/uevent, or
// "M:m" when sysfs does not say.
std::string blockDeviceName(uint32_t major, uint32_t minor);

class BlockCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<BlockCollector>> create(const BlockOptions& options);
  ~BlockCollector() override;

  absl::string_view name() const override { return "block"; }
  void collect(Snapshot& out) override;

  absl::string_view attachMode() const { return attach_mode_; }

 private:
  BlockCollector(block_bpf* skel, const char* mode) : skel_(skel), attach_mode_(mode) {}

  const std::string& deviceName(uint32_t dev);

  block_bpf* skel_;
  const char* attach_mode_;
  absl::flat_hash_map<uint32_t, std::string> names_;  // dev_t -> name, bounded by blk_dev
};

}  // namespace vigil

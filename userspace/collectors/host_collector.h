// Host collector: node_exporter-style host metrics from /proc, sysfs and statfs (see
// userspace/host/host_metrics.h). Needs no BPF and no privileges, so it is up on any kernel.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "userspace/collectors/collector.h"
#include "userspace/host/host_metrics.h"

namespace vigil {

class HostCollector final : public Collector {
 public:
  static absl::StatusOr<std::unique_ptr<HostCollector>> create(host::HostPaths paths = {});

  absl::string_view name() const override { return "host"; }
  void collect(Snapshot& out) override;

 private:
  explicit HostCollector(host::HostPaths paths) : reader_(std::move(paths)) {}
  host::HostReader reader_;
};

}  // namespace vigil

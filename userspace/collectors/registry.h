// The list of collectors the agent and the CLI know, and how to build each from a config.
// Adding a collector means one entry in registry.cc.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "userspace/collectors/collector.h"

namespace vigil {

// Names of all collectors, in the order they run each interval.
const std::vector<std::string>& collectorNames();

// Builds one collector. A NotFound/FailedPrecondition/Unimplemented status means the kernel
// lacks something (the collector is reported down, the rest run); PermissionDenied means the
// process cannot use BPF at all.
absl::StatusOr<std::unique_ptr<Collector>> createCollector(const std::string& name,
                                                           const CollectorConfig& config);

}  // namespace vigil

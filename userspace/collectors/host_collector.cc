#include "userspace/collectors/host_collector.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace vigil {

absl::StatusOr<std::unique_ptr<HostCollector>> HostCollector::create(host::HostPaths paths) {
  if (access((paths.proc + "/stat").c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("host: ", paths.proc, "/stat is not readable; is procfs mounted?"));
  }
  return std::unique_ptr<HostCollector>(new HostCollector(std::move(paths)));
}

void HostCollector::collect(Snapshot& out) {
  reader_.collect(out.host, out.self);
  out.collectors.push_back(CollectorState{"host", true, ""});
}

}  // namespace vigil

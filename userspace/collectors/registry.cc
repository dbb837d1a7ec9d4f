#include "userspace/collectors/registry.h"

#include "absl/strings/str_cat.h"
#include "userspace/collectors/host_collector.h"
#include "userspace/collectors/sched_collector.h"

namespace vigil {

const std::vector<std::string>& collectorNames() {
  static const std::vector<std::string> names = {"sched", "host"};
  return names;
}

absl::StatusOr<std::unique_ptr<Collector>> createCollector(const std::string& name,
                                                           const CollectorConfig& config) {
  if (name == "sched") {
    auto c = SchedCollector::create(SchedOptions{config.only_tgid});
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

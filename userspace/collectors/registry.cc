#include "userspace/collectors/registry.h"

#include "absl/strings/str_cat.h"
#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/process_collector.h"
#include "userspace/collectors/sched_collector.h"

namespace vigil {

const std::vector<std::string>& collectorNames() {
  static const std::vector<std::string> names = {"sched", "process", "net"};
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
  if (name == "process") {
    ProcessOptions options;
    options.only_tgid = config.only_tgid;
    options.mask_patterns = config.mask_patterns;
    auto c = ProcessCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  if (name == "net") {
    NetOptions options;
    options.only_tgid = config.only_tgid;
    auto c = NetCollector::create(options);
    if (!c.ok()) {
      return c.status();
    }
    return std::unique_ptr<Collector>(std::move(*c));
  }
  return absl::NotFoundError(absl::StrCat("unknown collector '", name, "'"));
}

}  // namespace vigil

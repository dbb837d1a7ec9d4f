// The interface between data sources and the agent. A collector owns its BPF object or /proc
// reader; once per interval the agent calls collect() on its own thread and the collector adds
// what it knows to the Snapshot being built. Collectors never block for long and never throw.
#pragma once

#include "absl/strings/string_view.h"

#include "capnp/snapshot.h"

namespace vigil {

class Collector {
 public:
  virtual ~Collector() = default;
  virtual absl::string_view name() const = 0;
  virtual void collect(Snapshot& out) = 0;
};

}  // namespace vigil

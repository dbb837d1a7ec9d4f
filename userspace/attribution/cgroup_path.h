// Turns a cgroup v2 path into what it says about its processes: the container (id and
// runtime), the Kubernetes pod (UID and QoS class) and the systemd unit. Pure string parsing of
// the path shapes container runtimes, kubelet and systemd create; see docs/attribution.md for
// the shapes recognised. Any input is accepted: what is not recognised stays empty.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace vigil {

struct CgroupIdentity {
  std::string container_id;  // full 64-hex id, or a runtime's own name (lxc)
  std::string runtime;       // docker, containerd, cri-o, podman, lxc, cri (see docs)
  std::string pod_uid;       // Kubernetes pod UID, dashes restored
  std::string qos_class;     // guaranteed, burstable, besteffort
  std::string systemd_unit;  // deepest .service/.scope/... component, e.g. foo.service
};

// `path` is relative to the cgroup v2 mount ("/system.slice/foo.service"); a leading slash is
// optional.
CgroupIdentity parseCgroupPath(absl::string_view path);

// True for a 64-character lowercase hex string (docker/containerd/cri-o/podman container ids).
bool isContainerId(absl::string_view s);

}  // namespace vigil

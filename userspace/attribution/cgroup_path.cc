#include "userspace/attribution/cgroup_path.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace vigil {
namespace {

bool isHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

// A pod UID as kubelet writes it: a UUID (dashes, or underscores under the systemd driver) or,
// for static pods, a 32-hex config hash.
bool isPodUid(absl::string_view s) {
  if (s.size() != 32 && s.size() != 36) {
    return false;
  }
  for (char c : s) {
    if (!(isHex(absl::string_view(&c, 1)) || c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

std::string podUid(absl::string_view raw) { return absl::StrReplaceAll(raw, {{"_", "-"}}); }

bool stripAffixes(absl::string_view c, absl::string_view prefix, absl::string_view suffix,
                  absl::string_view* out) {
  if (!absl::StartsWith(c, prefix) || !absl::EndsWith(c, suffix) ||
      c.size() < prefix.size() + suffix.size()) {
    return false;
  }
  *out = c.substr(prefix.size(), c.size() - prefix.size() - suffix.size());
  return true;
}

constexpr absl::string_view kUnitSuffixes[] = {".service", ".scope", ".socket",
                                               ".mount",   ".swap",  ".timer"};

// Runtime scopes and cgroupfs names carrying a 64-hex container id: prefix, suffix, runtime.
struct IdShape {
  absl::string_view prefix;
  absl::string_view suffix;
  absl::string_view runtime;
};
constexpr IdShape kIdShapes[] = {
    {"docker-", ".scope", "docker"},      {"cri-containerd-", ".scope", "containerd"},
    {"crio-", ".scope", "cri-o"},         {"crio-", "", "cri-o"},
    {"libpod-", ".scope", "podman"},      {"libpod-", "", "podman"},
    {"nerdctl-", ".scope", "containerd"},
};

}  // namespace

bool isContainerId(absl::string_view s) { return s.size() == 64 && isHex(s); }

CgroupIdentity parseCgroupPath(absl::string_view path) {
  CgroupIdentity id;
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  bool in_kube = false;
  absl::string_view parent;
  for (absl::string_view c : parts) {
    for (absl::string_view suffix : kUnitSuffixes) {
      if (c.size() > suffix.size() && absl::EndsWith(c, suffix)) {
        id.systemd_unit = std::string(c);
      }
    }

    // Kubernetes: kubepods / kubepods.slice and below.
    if (c == "kubepods" || c == "kubepods.slice" ||
        (absl::StartsWith(c, "kubepods-") && absl::EndsWith(c, ".slice")) ||
        absl::EndsWith(c, "-kubepods.slice")) {
      in_kube = true;
    }
    if (in_kube) {
      absl::string_view rest;
      if (c == "burstable" || c == "kubepods-burstable.slice") {
        id.qos_class = "burstable";
      } else if (c == "besteffort" || c == "kubepods-besteffort.slice") {
        id.qos_class = "besteffort";
      } else if (absl::StartsWith(c, "pod") && isPodUid(c.substr(3))) {
        id.pod_uid = podUid(c.substr(3));  // cgroupfs driver: pod<uid>
      } else if (absl::StartsWith(c, "kubepods-") && absl::EndsWith(c, ".slice")) {
        // systemd driver: kubepods-[<qos>-]pod<uid_with_underscores>.slice
        size_t pos = c.rfind("pod");
        if (pos != absl::string_view::npos && stripAffixes(c.substr(pos), "pod", ".slice", &rest) &&
            isPodUid(rest)) {
          id.pod_uid = podUid(rest);
        }
      }
    }

    // Containers: the deepest component that names one wins.
    bool matched = false;
    for (const IdShape& shape : kIdShapes) {
      absl::string_view rest;
      if (stripAffixes(c, shape.prefix, shape.suffix, &rest) && isContainerId(rest)) {
        id.container_id = std::string(rest);
        id.runtime = std::string(shape.runtime);
        matched = true;
        break;
      }
    }
    if (!matched && isContainerId(c)) {
      id.container_id = std::string(c);
      // cgroupfs layouts name only the id: /docker/<id>, or kubepods/.../pod<uid>/<id> where
      // any CRI runtime may have made it.
      id.runtime = parent == "docker" ? "docker" : (in_kube ? "cri" : "unknown");
      matched = true;
    }
    absl::string_view lxc;
    if (!matched && stripAffixes(c, "lxc.payload.", "", &lxc) && !lxc.empty()) {
      id.container_id = std::string(lxc);
      id.runtime = "lxc";
    }
    parent = c;
  }
  if (!id.pod_uid.empty() && id.qos_class.empty()) {
    id.qos_class = "guaranteed";  // guaranteed pods sit directly under kubepods
  }
  return id;
}

}  // namespace vigil

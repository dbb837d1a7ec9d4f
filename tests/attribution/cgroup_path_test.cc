#include "userspace/attribution/cgroup_path.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "userspace/attribution/attributor.h"

namespace vigil {
namespace {

const std::string kId = "3f2a9c0d1b4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const std::string kUid = "0b6c7d2e-1f3a-4b5c-8d9e-0f1a2b3c4d5e";
const std::string kUidUnderscores = "0b6c7d2e_1f3a_4b5c_8d9e_0f1a2b3c4d5e";

TEST_CASE("kubelet systemd-driver paths give pod UID, QoS class and container id") {
  auto id = parseCgroupPath("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
                            kUidUnderscores + ".slice/cri-containerd-" + kId + ".scope");
  CHECK(id.pod_uid == kUid);
  CHECK(id.qos_class == "burstable");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "containerd");
  CHECK(id.systemd_unit == "cri-containerd-" + kId + ".scope");

  id = parseCgroupPath("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" +
                       kUidUnderscores + ".slice/crio-" + kId + ".scope");
  CHECK(id.pod_uid == kUid);
  CHECK(id.qos_class == "besteffort");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "cri-o");

  id = parseCgroupPath("/kubepods.slice/kubepods-pod" + kUidUnderscores + ".slice/docker-" + kId +
                       ".scope");
  CHECK(id.pod_uid == kUid);
  CHECK(id.qos_class == "guaranteed");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "docker");
}

TEST_CASE("kubelet cgroupfs-driver paths give pod UID, QoS class and container id") {
  auto id = parseCgroupPath("/kubepods/burstable/pod" + kUid + "/" + kId);
  CHECK(id.pod_uid == kUid);
  CHECK(id.qos_class == "burstable");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "cri");
  CHECK(id.systemd_unit.empty());

  id = parseCgroupPath("/kubepods/pod" + kUid + "/crio-" + kId);
  CHECK(id.qos_class == "guaranteed");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "cri-o");

  id = parseCgroupPath("kubepods/besteffort/pod" + kUid);  // the pod itself, no container
  CHECK(id.pod_uid == kUid);
  CHECK(id.qos_class == "besteffort");
  CHECK(id.container_id.empty());
}

TEST_CASE("container runtimes outside Kubernetes are recognised") {
  auto id = parseCgroupPath("/system.slice/docker-" + kId + ".scope");
  CHECK(id.container_id == kId);
  CHECK(id.runtime == "docker");
  CHECK(id.pod_uid.empty());
  CHECK(id.qos_class.empty());

  id = parseCgroupPath("/docker/" + kId);
  CHECK(id.runtime == "docker");
  CHECK(id.container_id == kId);

  id = parseCgroupPath("/libpod_parent/libpod-" + kId);
  CHECK(id.runtime == "podman");
  CHECK(id.container_id == kId);

  id = parseCgroupPath("/machine.slice/libpod-" + kId + ".scope/container");
  CHECK(id.runtime == "podman");
  CHECK(id.container_id == kId);

  // podman's monitor is not the container
  id = parseCgroupPath("/libpod_parent/libpod-conmon-" + kId);
  CHECK(id.container_id.empty());

  id = parseCgroupPath("/lxc.payload.web1");
  CHECK(id.runtime == "lxc");
  CHECK(id.container_id == "web1");
}

TEST_CASE("systemd units are the deepest unit component") {
  CHECK(parseCgroupPath("/system.slice/foo.service").systemd_unit == "foo.service");
  CHECK(parseCgroupPath("/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope")
            .systemd_unit == "x.scope");
  CHECK(parseCgroupPath("/system.slice").systemd_unit.empty());
  CHECK(parseCgroupPath("/").systemd_unit.empty());
  CHECK(parseCgroupPath("/system.slice/foo.service").container_id.empty());
}

TEST_CASE("odd cgroup paths never crash and yield nothing wrong") {
  for (const std::string& p : std::vector<std::string>{
           "", "/", "////", "pod", "kubepods/pod", "kubepods/podxyz",
           "kubepods.slice/kubepods-pod.slice", "docker-.scope", "/docker/abc",
           "/kubepods/burstable/pod" + kUid + "/" + kId.substr(1), std::string(5000, '/'),
           std::string(100000, 'a'), "lxc.payload.", ".service", std::string("a\0b", 3),
           "kubepods-burstable-pod.slice"}) {
    auto id = parseCgroupPath(p);
    CHECK(id.container_id.size() <= p.size());
    CHECK((id.container_id.empty() || id.container_id.size() == 64 || id.runtime == "lxc"));
  }
  std::mt19937 rng(42);
  const std::string alphabet = "/-_.abcdefkubepodslicescope0123456789";
  for (int i = 0; i < 2000; ++i) {
    std::string p;
    int len = static_cast<int>(rng() % 200);
    for (int j = 0; j < len; ++j) {
      p.push_back(i % 2 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()]);
    }
    parseCgroupPath(p);  // must not crash
  }
  CHECK(parseCgroupPath("/kubepods/burstable/pod" + kUid + "/" + kId.substr(1)).container_id == "");
}

TEST_CASE("the cgroup2 mount is found in mountinfo text, hybrid or pure v2") {
  std::string hybrid =
      "30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
      "31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
      "32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
  CHECK(findCgroup2Mount(hybrid) == "/sys/fs/cgroup/unified");
  CHECK(findCgroup2Mount("29 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw\n") ==
        "/sys/fs/cgroup");
  CHECK(findCgroup2Mount("40 1 0:50 / /mnt/my\\040cg rw - cgroup2 none rw\n") == "/mnt/my cg");
  CHECK(findCgroup2Mount("") == "");
  CHECK(findCgroup2Mount("garbage\n - \n-\n1 2 3\n") == "");
}

}  // namespace
}  // namespace vigil

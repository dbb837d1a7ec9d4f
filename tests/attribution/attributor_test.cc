#include "userspace/attribution/attributor.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/test_support.h"
#include "userspace/collectors/process_collector.h"
#include "userspace/collectors/sched_collector.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

const std::string kId = "3f2a9c0d1b4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
const std::string kUid = "0b6c7d2e-1f3a-4b5c-8d9e-0f1a2b3c4d5e";
const std::string kUidUnderscores = "0b6c7d2e_1f3a_4b5c_8d9e_0f1a2b3c4d5e";

std::string v2Mount() {
  auto r = CgroupResolver::create();
  REQUIRE(r.ok());
  return (*r)->mount();
}

// A tree of cgroup v2 directories under <v2 mount>/vigil-test-attr-<pid>, removed leaf first.
class CgroupTree {
 public:
  CgroupTree() : root_(v2Mount() + "/vigil-test-attr-" + std::to_string(getpid())) {
    mkdir(root_.c_str(), 0755);
  }
  ~CgroupTree() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
      rmdir(it->c_str());
    }
    rmdir(root_.c_str());
  }
  // Creates root/<rel> (with parents); returns its absolute path.
  std::string make(const std::string& rel) {
    std::string path = root_;
    for (absl::string_view part : absl::StrSplit(rel, '/', absl::SkipEmpty())) {
      path += "/" + std::string(part);
      if (mkdir(path.c_str(), 0755) == 0) {
        made_.push_back(path);
      }
    }
    return path;
  }

 private:
  std::string root_;
  std::vector<std::string> made_;
};

uint64_t inodeOf(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

// A child that moves itself into `cgroup`, then execs sleep so the kernel records an exec event
// (with the cgroup id) from inside it.
Child sleeperIn(const std::string& cgroup) {
  return Child::fork([cgroup]() {
    {
      std::ofstream procs(cgroup + "/cgroup.procs");
      procs << getpid() << std::flush;
      if (!procs) {
        return 100;
      }
    }
    execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    return 127;
  });
}

struct Seen {
  bool exec_seen = false;
  std::string container_id, pod_uid;
  uint64_t cgroup_id = 0;
  const ContainerStats* container = nullptr;
};

// Collects with the real process and sched collectors until the child's exec event shows up,
// then annotates; returns what attribution said about the child.
Seen observe(ProcessCollector& pc, SchedCollector& sc, Attributor& attr, pid_t pid,
             Snapshot& snap) {
  Seen seen;
  testing::waitFor(
      [&]() {
        pc.poll(50);
        pc.collect(snap);
        for (const auto& o : snap.events) {
          auto e = o.getReader();
          if (e.getPid() == static_cast<uint32_t>(pid) && e.which() == wire::Event::EXEC) {
            seen.exec_seen = true;
          }
        }
        return seen.exec_seen;
      },
      10s, 10ms);
  sc.collect(snap);
  attr.annotate(snap);
  for (const auto& o : snap.events) {
    auto e = o.getReader();
    if (e.getPid() == static_cast<uint32_t>(pid) && e.which() == wire::Event::EXEC) {
      seen.container_id = e.getContainerId();
      seen.pod_uid = e.getPodUid();
      seen.cgroup_id = e.getCgroupId();
    }
  }
  for (const ContainerStats& c : snap.containers) {
    if (c.cgroup_id == seen.cgroup_id) {
      seen.container = &c;
    }
  }
  return seen;
}

struct Shape {
  const char* name;
  std::string rel;
  std::string container_id, runtime, pod_uid, qos, unit;
};

TEST_CASE("processes in hand-made kubelet, runtime and systemd cgroups are attributed") {
  if (!testing::bpfAllowed("attributor_test")) {
    return;
  }
  std::vector<Shape> shapes = {
      {"systemd driver, cri-containerd",
       "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidUnderscores +
           ".slice/cri-containerd-" + kId + ".scope",
       kId, "containerd", kUid, "burstable", "cri-containerd-" + kId + ".scope"},
      {"systemd driver, cri-o, guaranteed",
       "kubepods.slice/kubepods-pod" + kUidUnderscores + ".slice/crio-" + kId + ".scope", kId,
       "cri-o", kUid, "guaranteed", "crio-" + kId + ".scope"},
      {"systemd driver, docker, besteffort",
       "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + kUidUnderscores +
           ".slice/docker-" + kId + ".scope",
       kId, "docker", kUid, "besteffort", "docker-" + kId + ".scope"},
      {"cgroupfs driver, containerd", "kubepods/burstable/pod" + kUid + "/" + kId, kId, "cri", kUid,
       "burstable", ""},
      {"cgroupfs driver, cri-o", "kubepods/besteffort/pod" + kUid + "/crio-" + kId, kId, "cri-o",
       kUid, "besteffort", ""},
      {"plain docker, cgroupfs", "docker/" + kId, kId, "docker", "", "", ""},
      {"a systemd service", "system.slice/foo.service", "", "", "", "", "foo.service"},
  };
  auto pc = ProcessCollector::create(ProcessOptions{});
  REQUIRE(pc.ok());
  auto sc = SchedCollector::create(SchedOptions{});
  REQUIRE(sc.ok());
  auto attr = Attributor::create();
  REQUIRE(attr.ok());
  CgroupTree tree;
  for (const Shape& s : shapes) {
    SECTION(s.name) {
      std::string dir = tree.make(s.rel);
      Child child = sleeperIn(dir);
      Snapshot snap;
      Seen seen = observe(**pc, **sc, **attr, child.pid(), snap);
      REQUIRE(seen.exec_seen);
      CHECK(seen.cgroup_id == inodeOf(dir));
      CHECK(seen.container_id == s.container_id);
      CHECK(seen.pod_uid == s.pod_uid);
      REQUIRE(seen.container != nullptr);
      CHECK(seen.container->cgroup_path.find(s.rel) != std::string::npos);
      CHECK(seen.container->container_id == s.container_id);
      CHECK(seen.container->runtime == s.runtime);
      CHECK(seen.container->pod_uid == s.pod_uid);
      CHECK(seen.container->qos_class == s.qos);
      CHECK(seen.container->systemd_unit == s.unit);
      CHECK(seen.container->processes == 1);
      auto p = snap.processes.find(static_cast<uint32_t>(child.pid()));
      REQUIRE(p != snap.processes.end());
      CHECK(p->second.container_id == s.container_id);
      child.signal(SIGKILL);
      child.wait(5s);
    }
  }
}

TEST_CASE("the resolver's cache is bounded and counts hits, misses and evictions") {
  if (!testing::bpfAllowed("attributor_test")) {
    return;
  }
  auto r = CgroupResolver::create("", 2);
  REQUIRE(r.ok());
  CgroupTree tree;
  uint64_t a = inodeOf(tree.make("a")), b = inodeOf(tree.make("b")), c = inodeOf(tree.make("c"));
  CHECK((*r)->resolve(a).path.find("/vigil-test-attr-") == 0);
  CHECK((*r)->resolve(a).found);
  CHECK((*r)->resolve(b).found);
  CHECK((*r)->resolve(c).found);  // evicts a
  CHECK((*r)->size() == 2);
  CHECK((*r)->stats().hits == 1);
  CHECK((*r)->stats().misses == 3);
  CHECK((*r)->stats().evictions == 1);
  CHECK_FALSE((*r)->resolve(0xFFFFFFFFFFull).found);
  CHECK((*r)->stats().not_found == 1);
  CHECK((*r)->resolve(1).path == "/");  // the root cgroup
}

TEST_CASE("container sums stay cumulative when processes exit and are retired") {
  if (!testing::bpfAllowed("attributor_test")) {
    return;  // resolving ids needs root (open_by_handle_at)
  }
  auto attr = Attributor::create();
  REQUIRE(attr.ok());
  auto rootSample = [](Snapshot& s) -> const ContainerStats& {
    for (const ContainerStats& c : s.containers) {
      if (c.cgroup_id == 1) {
        return c;
      }
    }
    FAIL("no ContainerSample for the root cgroup");
    return s.containers.front();
  };
  auto add = [](Snapshot& s, uint32_t pid, uint64_t cpu, bool exited) {
    ProcessStats& p = s.process(pid);
    p.cgroup_id = 1;  // the root cgroup: always resolvable, path "/"
    p.cpu_ns = cpu;
    p.tcp_tx_bytes = cpu * 2;
    p.exited = exited;
  };
  {
    Snapshot s;
    add(s, 4000001, 10, false);
    add(s, 4000002, 5, false);
    (*attr)->annotate(s);
    const ContainerStats& c = rootSample(s);
    CHECK(c.cgroup_path == "/");
    CHECK(c.cpu_ns == 15);
    CHECK(c.tcp_tx_bytes == 30);
    CHECK(c.processes == 2);
  }
  {
    Snapshot s;  // 4000001 exited (reported a last time); 4000002 was retired earlier
    add(s, 4000001, 20, true);
    (*attr)->annotate(s);
    const ContainerStats& c = rootSample(s);
    CHECK(c.cpu_ns == 25);
    CHECK(c.processes == 0);
  }
  {
    Snapshot s;  // both gone: the cgroup keeps their totals
    (*attr)->annotate(s);
    const ContainerStats& c = rootSample(s);
    CHECK(c.cpu_ns == 25);
    CHECK(c.tcp_tx_bytes == 50);
  }
}

// Builds localhost/vigil-test-busybox from busybox-static once (podman import of a tarball).
bool ensureBusyboxImage() {
  if (testing::shell("podman image exists localhost/vigil-test-busybox && echo yes") == "yes\n") {
    return true;
  }
  testing::TempDir dir;
  std::string root = dir.file("rootfs");
  std::string cmd = "set -e; mkdir -p " + root + "/bin; cp /bin/busybox " + root +
                    "/bin/busybox; for a in sh sleep cat true; do ln -s busybox " + root +
                    "/bin/$a; done; tar -C " + root + " -cf " + dir.file("rootfs.tar") +
                    " .; podman import -q " + dir.file("rootfs.tar") +
                    " localhost/vigil-test-busybox >/dev/null && echo ok";
  return testing::shell(cmd) == "ok\n";
}

TEST_CASE("a process in a real podman container gets podman's full container id") {
  if (!testing::bpfAllowed("attributor_test")) {
    return;
  }
  if (testing::shell("command -v podman runc >/dev/null && echo yes") != "yes\n") {
    FAIL("podman and runc are needed (ci/install-deps.sh installs them)");
  }
  REQUIRE(ensureBusyboxImage());
  auto pc = ProcessCollector::create(ProcessOptions{});
  REQUIRE(pc.ok());
  auto sc = SchedCollector::create(SchedOptions{});
  REQUIRE(sc.ok());
  auto attr = Attributor::create();
  REQUIRE(attr.ok());
  std::string name = "vigil-test-attr-" + std::to_string(getpid());
  struct Cleanup {
    std::string name;
    ~Cleanup() { testing::shell("podman rm -f " + name + " >/dev/null 2>&1"); }
  } cleanup{name};
  std::string out = testing::shell(
      "podman --runtime runc --cgroup-manager cgroupfs run -d --rm --name " + name +
      " --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/vigil-test-busybox "
      "sleep 1234 2>/dev/null");
  std::string id(absl::StripAsciiWhitespace(out));
  REQUIRE(isContainerId(id));

  // The container's `sleep 1234` exec, seen by the kernel, attributed through its cgroup.
  Snapshot snap;
  bool found = false;
  std::string event_container, event_comm;
  testing::waitFor(
      [&]() {
        (*pc)->poll(50);
        (*pc)->collect(snap);
        (*sc)->collect(snap);
        snap.containers.clear();
        (*attr)->annotate(snap);
        for (const auto& o : snap.events) {
          auto e = o.getReader();
          if (e.which() == wire::Event::EXEC &&
              std::string(e.getExec().getArgv()) == "sleep 1234") {
            found = true;
            event_container = e.getContainerId();
          }
        }
        return found;
      },
      30s, 50ms);
  REQUIRE(found);
  CHECK(event_container == id);
  bool container_seen = false;
  for (const ContainerStats& c : snap.containers) {
    if (c.container_id == id) {
      container_seen = true;
      CHECK(c.runtime == "podman");
      CHECK(c.cgroup_path.find("libpod-" + id) != std::string::npos);
    }
  }
  CHECK(container_seen);
}

}  // namespace
}  // namespace vigil

#include "userspace/collectors/process_collector.h"

#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/registry.h"

#include <capnp/serialize.h>
#include <kj/async-io.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/prom_text.h"

extern char** environ;

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

std::vector<wire::Event::Reader> eventsFor(const Snapshot& snap, uint32_t pid,
                                           wire::Event::Which which) {
  std::vector<wire::Event::Reader> out;
  for (const auto& o : snap.events) {
    wire::Event::Reader e = o.getReader();
    if (e.getPid() == pid && e.which() == which) {
      out.push_back(e);
    }
  }
  return out;
}

// Everything the agent would send or serve for this snapshot: the frame bytes and /metrics.
std::string allOutput(const Snapshot& snap) {
  capnp::MallocMessageBuilder message;
  toWire(snap, message);
  auto words = capnp::messageToFlatArray(message);
  std::string out(reinterpret_cast<const char*>(words.asBytes().begin()), words.asBytes().size());
  PromWriter prom(false);
  writeSnapshotMetrics(snap, ExpositionOptions{}, prom);
  return out + prom.finish();
}

// Collects until `done` says the snapshot has what the test waits for (or 10 s pass).
void collectUntil(ProcessCollector& c, Snapshot& snap, const std::function<bool()>& done) {
  testing::waitFor(
      [&]() {
        c.poll(50);
        c.collect(snap);
        return done();
      },
      10s, 10ms);
}

// A cgroup v2 directory for one test, removed (after its processes are gone) by the destructor.
class TestCgroup {
 public:
  explicit TestCgroup(const std::string& name) {
    std::string root = "/sys/fs/cgroup/unified";
    struct stat st;
    if (stat((root + "/cgroup.procs").c_str(), &st) != 0) {
      root = "/sys/fs/cgroup";
    }
    path_ = root + "/" + name + "-" + std::to_string(getpid());
    mkdir(path_.c_str(), 0755);
    REQUIRE(stat(path_.c_str(), &st) == 0);
    id_ = st.st_ino;
  }
  ~TestCgroup() { rmdir(path_.c_str()); }
  uint64_t id() const { return id_; }
  // Moves the calling process into the cgroup.
  bool enter() const {
    std::ofstream procs(path_ + "/cgroup.procs");
    procs << getpid() << std::flush;
    return static_cast<bool>(procs);
  }

 private:
  std::string path_;
  uint64_t id_ = 0;
};

TEST_CASE("exec of a helper is one event with its password masked, and its exit code is 3") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  auto collector = ProcessCollector::create(ProcessOptions{});
  REQUIRE(collector.ok());
  ProcessCollector& c = **collector;
  Child child = Child::fork([]() {
    execl("/bin/sh", "sh", "-c", "exit 3", "helper", "--user=bob", "--password=hunter2",
          static_cast<char*>(nullptr));
    return 127;
  });
  auto status = child.wait(10s);
  REQUIRE(status.has_value());
  REQUIRE(WEXITSTATUS(*status) == 3);
  uint32_t pid = static_cast<uint32_t>(child.pid());

  Snapshot snap;
  collectUntil(c, snap, [&]() { return !eventsFor(snap, pid, wire::Event::EXIT).empty(); });
  auto execs = eventsFor(snap, pid, wire::Event::EXEC);
  REQUIRE(execs.size() == 1);
  auto exec = execs[0].getExec();
  CHECK(std::string(exec.getFilename()) == "/bin/sh");
  CHECK(std::string(exec.getArgv()) == "sh -c exit 3 helper --user=bob --password=***");
  CHECK_FALSE(exec.getArgvTruncated());
  CHECK(std::string(execs[0].getComm()) == "sh");
  CHECK(execs[0].getCgroupId() != 0);
  CHECK(execs[0].getPpid() == static_cast<uint32_t>(getpid()));

  auto exits = eventsFor(snap, pid, wire::Event::EXIT);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].getExit().getExitCode() == 3);
  CHECK(exits[0].getExit().getSignal() == 0);
  CHECK(exits[0].getExit().getLifetimeNs() > 0);
  CHECK(exits[0].getExit().getLifetimeNs() < 10'000'000'000ull);

  // The test process forked the child: one fork event names it.
  size_t forks = 0;
  for (auto e : eventsFor(snap, static_cast<uint32_t>(getpid()), wire::Event::FORK)) {
    forks += e.getFork().getChildPid() == pid;
  }
  CHECK(forks == 1);

  std::string out = allOutput(snap);
  CHECK(out.find("hunter2") == std::string::npos);
  CHECK(out.find("--password=***") != std::string::npos);
}

TEST_CASE("a process killed by SIGSEGV yields a fatal-signal event and its exit signal") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  auto collector = ProcessCollector::create(ProcessOptions{});
  REQUIRE(collector.ok());
  Child child = Child::fork([]() {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return 0;
  });
  REQUIRE(child.wait(10s).has_value());
  uint32_t pid = static_cast<uint32_t>(child.pid());
  Snapshot snap;
  collectUntil(**collector, snap,
               [&]() { return !eventsFor(snap, pid, wire::Event::EXIT).empty(); });
  auto sigs = eventsFor(snap, pid, wire::Event::SIGNAL);
  REQUIRE(sigs.size() >= 1);
  CHECK(sigs[0].getSignal().getSignal() == SIGSEGV);
  CHECK(sigs[0].getSignal().getSenderPid() == pid);
  auto exits = eventsFor(snap, pid, wire::Event::EXIT);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].getExit().getSignal() == SIGSEGV);
}

TEST_CASE("a process OOM-killed in a memory-limited cgroup yields one OOM event with its pid") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  // The memory controller is cgroup v1 on the test machines; on a pure v2 host use memory.max.
  std::string v1 = "/sys/fs/cgroup/memory";
  struct stat st;
  bool have_v1 = stat((v1 + "/memory.limit_in_bytes").c_str(), &st) == 0;
  std::string dir = (have_v1 ? v1 : std::string("/sys/fs/cgroup")) + "/vigil-test-oom-" +
                    std::to_string(getpid());
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  struct RemoveDir {
    std::string dir;
    ~RemoveDir() { rmdir(dir.c_str()); }
  } remove_dir{dir};
  {
    std::ofstream limit(dir + (have_v1 ? "/memory.limit_in_bytes" : "/memory.max"));
    limit << (32 << 20) << std::flush;
    REQUIRE(limit);
  }
  auto collector = ProcessCollector::create(ProcessOptions{});
  REQUIRE(collector.ok());
  Child child = Child::fork([dir, have_v1]() {
    {
      std::ofstream procs(dir + (have_v1 ? "/tasks" : "/cgroup.procs"));
      procs << getpid() << std::flush;
      if (!procs) {
        return 100;
      }
    }
    // Touch 256 MiB: well past the 32 MiB limit, with no swap to escape to.
    std::vector<char*> blocks;
    for (int i = 0; i < 256; ++i) {
      char* b = static_cast<char*>(malloc(1 << 20));
      memset(b, i, 1 << 20);
      blocks.push_back(b);
    }
    return 0;
  });
  auto status = child.wait(30s);
  REQUIRE(status.has_value());
  CHECK(WIFSIGNALED(*status));
  CHECK(WTERMSIG(*status) == SIGKILL);
  uint32_t pid = static_cast<uint32_t>(child.pid());
  Snapshot snap;
  collectUntil(**collector, snap,
               [&]() { return !eventsFor(snap, pid, wire::Event::EXIT).empty(); });
  auto ooms = eventsFor(snap, pid, wire::Event::OOM_KILL);
  REQUIRE(ooms.size() == 1);
  CHECK(ooms[0].getOomKill().getVictimPid() == pid);
  CHECK(ooms[0].getOomKill().getVictimCgroupId() != 0);
  CHECK(ooms[0].getOomKill().getTotalVmKb() > 0);
  auto exits = eventsFor(snap, pid, wire::Event::EXIT);
  REQUIRE(exits.size() == 1);
  CHECK(exits[0].getExit().getSignal() == SIGKILL);
}

TEST_CASE("run() drains the ring buffer on the event loop, without collect()") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  auto io = kj::setupAsyncIo();  // outlives the collector, whose fd observer uses it
  auto collector = ProcessCollector::create(ProcessOptions{});
  REQUIRE(collector.ok());
  ProcessCollector& c = **collector;
  CollectorContext context{io.provider->getTimer(), io.unixEventPort};
  kj::Promise<void> running = c.run(context);
  uint64_t before = c.seen(ProcEventType::kExec);
  Child child = Child::fork([]() {
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    return 127;
  });
  REQUIRE(child.wait(10s).has_value());
  for (int i = 0; i < 50 && c.seen(ProcEventType::kExec) == before; ++i) {
    io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
  }
  CHECK(c.seen(ProcEventType::kExec) > before);
}

TEST_CASE("records that wrap past the end of a one-page ring arrive whole and in order") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  TestCgroup cgroup("vigil-test-wrap");
  ProcessOptions options;
  options.only_cgroup_id = cgroup.id();
  options.ring_bytes = 4096;  // records of 100-1,100 bytes wrap every few execs
  auto collector = ProcessCollector::create(options);
  REQUIRE(collector.ok());
  ProcessCollector& c = **collector;
  constexpr int kExecs = 200;
  std::vector<std::pair<uint32_t, std::string>> expected;
  Snapshot snap;
  for (int i = 0; i < kExecs; ++i) {
    std::string arg = "wrap-" + std::to_string(i) + "-" + std::string((i * 53) % 900, 'x');
    Child child = Child::fork([&cgroup, &arg]() {
      if (!cgroup.enter()) {
        return 100;
      }
      execl("/bin/true", "true", arg.c_str(), static_cast<char*>(nullptr));
      return 127;
    });
    auto status = child.wait(10s);
    REQUIRE(status.has_value());
    REQUIRE(WEXITSTATUS(*status) == 0);
    expected.emplace_back(static_cast<uint32_t>(child.pid()), "true " + arg);
    c.poll(0);  // one child's records at a time: a 4 KiB ring holds them
  }
  collectUntil(c, snap, [&]() { return c.seen(ProcEventType::kExec) >= kExecs; });
  for (const auto& [pid, argv] : expected) {
    auto execs = eventsFor(snap, pid, wire::Event::EXEC);
    REQUIRE(execs.size() == 1);
    CHECK(std::string(execs[0].getExec().getArgv()) == argv);
  }
  CHECK(c.lostInKernel(ProcEventType::kExec) == 0);
  CHECK(c.malformed() == 0);
  CHECK(c.ringWrappedRecords() > 0);
}

TEST_CASE("the collector registry sizes the process and net rings from the config") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  CollectorConfig config;
  auto process = createCollector("process", config);
  auto net = createCollector("net", config);
  REQUIRE(process.ok());
  REQUIRE(net.ok());
  CHECK(dynamic_cast<ProcessCollector&>(**process).ringBytes() == ProcessOptions{}.ring_bytes);
  CHECK(dynamic_cast<NetCollector&>(**net).ringBytes() == NetOptions{}.ring_bytes);
  config.process_ring_bytes = 64u << 10;
  config.net_ring_bytes = 4u << 20;
  process = createCollector("process", config);
  net = createCollector("net", config);
  REQUIRE(process.ok());
  REQUIRE(net.ok());
  CHECK(dynamic_cast<ProcessCollector&>(**process).ringBytes() == (64u << 10));
  CHECK(dynamic_cast<NetCollector&>(**net).ringBytes() == (4u << 20));
}

// Runs `execs` execs of /bin/true from a child placed in `cgroup`, up to 8 in flight.
Child execStorm(const TestCgroup& cgroup, int execs) {
  return Child::fork([&cgroup, execs]() {
    if (!cgroup.enter()) {
      return 100;
    }
    char* const argv[] = {const_cast<char*>("true"), nullptr};
    int started = 0, running = 0;
    while (started < execs || running > 0) {
      while (started < execs && running < 8) {
        pid_t pid;
        if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) {
          return 101;
        }
        ++started;
        ++running;
      }
      int status;
      if (wait(&status) > 0) {
        --running;
      }
    }
    return 0;
  });
}

void runStorm(uint32_t ring_bytes, bool read_during_storm) {
  constexpr int kExecs = 20000;
  TestCgroup cgroup("vigil-test-storm");
  ProcessOptions options;
  options.only_cgroup_id = cgroup.id();
  options.ring_bytes = ring_bytes;
  auto collector = ProcessCollector::create(options);
  REQUIRE(collector.ok());
  ProcessCollector& c = **collector;
  auto start = std::chrono::steady_clock::now();
  Child storm = execStorm(cgroup, kExecs);
  uint64_t execs_in_snapshots = 0;
  std::optional<int> status;
  while (!(status = storm.wait(0ms)).has_value()) {
    if (read_during_storm) {
      c.poll(20);
    } else {
      std::this_thread::sleep_for(20ms);
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(WEXITSTATUS(*status) == 0);
  c.poll(0);
  Snapshot snap;
  c.collect(snap);
  for (const auto& o : snap.events) {
    execs_in_snapshots += o.getReader().which() == wire::Event::EXEC;
  }
  uint64_t seen = c.seen(ProcEventType::kExec);
  uint64_t lost = c.lostInKernel(ProcEventType::kExec);
  uint64_t dropped = c.dropped(ProcEventType::kExec);
  INFO("ring " << ring_bytes << " B: " << kExecs / seconds << " execs/s, seen " << seen
               << ", lost in kernel " << lost << ", dropped in userspace " << dropped);
  WARN("storm, ring " << ring_bytes << " B: " << static_cast<int>(kExecs / seconds)
                      << " execs/s, seen " << seen << ", lost " << lost << ", dropped " << dropped);
  CHECK(c.generatedInKernel(ProcEventType::kExec) == kExecs);
  CHECK(seen + lost == kExecs);
  CHECK(execs_in_snapshots + dropped == seen);
  CHECK(c.malformed() == 0);
}

TEST_CASE("an exec storm of 20,000 execs is fully accounted: seen + lost == 20,000") {
  if (!testing::bpfAllowed("process_collector_test")) {
    return;
  }
  SECTION("default ring buffer, read while the storm runs") { runStorm(8u << 20, true); }
  SECTION("a 64 KiB ring buffer read only afterwards, so it overflows") {
    runStorm(64u << 10, false);
  }
}

}  // namespace
}  // namespace vigil

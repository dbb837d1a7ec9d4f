#include "userspace/collectors/syscall_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <catch2/catch.hpp>
#include <cstdio>
#include <kj/async-io.h>
#include <thread>

#include "syscalls_empty.skel.h"
#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

// A pipe the child writes one byte to when its workload is done.
struct DonePipe {
  int fds[2] = {-1, -1};
  DonePipe() { REQUIRE(pipe(fds) == 0); }
  ~DonePipe() {
    close(fds[0]);
    close(fds[1]);
  }
  void signal() {
    char c = 1;
    (void)!write(fds[1], &c, 1);
  }
  bool wait() {
    char c;
    return read(fds[0], &c, 1) == 1;
  }
};

// Runs `work` in a child, waits until it is done, and returns the child (sleeping, alive).
Child runChild(DonePipe& done, const std::function<void()>& work) {
  Child child = Child::fork([&done, work]() {
    work();
    done.signal();
    pause();
    return 0;
  });
  REQUIRE(done.wait());
  return child;
}

SyscallOptions continuous() {
  SyscallOptions o;
  o.mode = SyscallMode::kContinuous;
  return o;
}

TEST_CASE("a child making exactly 200,000 getppid() calls is counted in [200000, 201000]") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  SyscallOptions options = continuous();
  bool raw = GENERATE(false, true);
  bool latency = GENERATE(false, true);  // false is what the agent runs in continuous mode
  options.force_raw_tp = raw;
  options.latency = latency;
  auto collector = SyscallCollector::create(options);
  REQUIRE(collector.ok());
  CHECK((*collector)->attachMode() == (raw ? "raw_tp" : "tp_btf"));
  DonePipe done;
  Child child = runChild(done, []() {
    for (int i = 0; i < 200000; ++i) {
      syscall(SYS_getppid);
    }
  });
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  const ProcessStats& p = snap.processes[child.pid()];
  INFO("mode " << (raw ? "raw_tp" : "tp_btf") << ", latency " << latency << ", syscalls "
               << p.syscalls);
  CHECK(p.syscalls >= 200000);
  CHECK(p.syscalls <= 201000);
  CHECK(p.comm == "syscall_collect");
  CHECK(p.cgroup_id != 0);
  CHECK(snap.syscall_duty_cycle == 1.0);
  // The latency histogram saw at least the child's calls.
  bool hist = false;
  for (const HistogramSample& h : snap.histograms) {
    if (h.name == "vigil_syscall_latency_seconds") {
      hist = true;
      CHECK(h.count >= 200000);
      CHECK(h.unit_ns == 1);
    }
  }
  CHECK(hist == latency);
}

TEST_CASE("1000 opens of a missing path count 1000 failures with ENOENT on top") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  auto collector = SyscallCollector::create(continuous());
  REQUIRE(collector.ok());
  DonePipe done;
  Child child = runChild(done, []() {
    for (int i = 0; i < 1000; ++i) {
      int fd = open("/nonexistent-vigil-test/file", O_RDONLY);
      if (fd >= 0) {
        close(fd);
      }
    }
  });
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  const ProcessStats& p = snap.processes[child.pid()];
  CHECK(p.syscall_errors >= 1000);
  CHECK(p.syscall_errors <= 1010);
  REQUIRE_FALSE(p.top_errnos.empty());
  CHECK(p.top_errnos[0].first == ENOENT);
  CHECK(p.top_errnos[0].second >= 1000);
  CHECK(p.syscalls >= 1000);
}

TEST_CASE("only_tgid (the CLI's --pid) accounts that process only") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  int go[2];
  REQUIRE(pipe(go) == 0);
  DonePipe done;
  Child child = Child::fork([&]() {
    char c;
    if (read(go[0], &c, 1) != 1) {
      return 1;
    }
    for (int i = 0; i < 5000; ++i) {
      syscall(SYS_getppid);
    }
    done.signal();
    pause();
    return 0;
  });
  SyscallOptions options = continuous();
  options.only_tgid = static_cast<uint32_t>(child.pid());
  auto collector = SyscallCollector::create(options);
  REQUIRE(collector.ok());
  char c = 1;
  REQUIRE(write(go[1], &c, 1) == 1);
  REQUIRE(done.wait());
  for (int i = 0; i < 100; ++i) {
    syscall(SYS_getppid);  // ours: must not show up
  }
  Snapshot snap;
  (*collector)->collect(snap);
  close(go[0]);
  close(go[1]);
  REQUIRE(snap.processes.size() == 1);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  CHECK(snap.processes[child.pid()].syscalls >= 5000);
  CHECK(snap.processes[child.pid()].syscalls <= 5100);
}

TEST_CASE("a process first seen before its exec is reported under its new name") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  auto collector = SyscallCollector::create(continuous());
  REQUIRE(collector.ok());
  Child child = Child::fork([]() {
    for (int i = 0; i < 100; ++i) {
      syscall(SYS_getppid);  // seen by the kernel side under the test binary's name
    }
    execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
    return 127;
  });
  std::string comm_path = "/proc/" + std::to_string(child.pid()) + "/comm";
  REQUIRE(testing::waitFor([&]() { return testing::readFile(comm_path) == "sleep\n"; }, 10s, 10ms));
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  CHECK(snap.processes[child.pid()].comm == "sleep");
  CHECK(snap.processes[child.pid()].syscalls >= 100);
}

TEST_CASE("off mode attaches nothing and reports the collector down") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  SyscallOptions options;
  options.mode = SyscallMode::kOff;
  auto collector = SyscallCollector::create(options);
  REQUIRE(collector.ok());
  CHECK_FALSE((*collector)->attached());
  CHECK((*collector)->programIds().empty());
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.collectors.size() == 1);
  CHECK(snap.collectors[0].name == "syscalls");
  CHECK_FALSE(snap.collectors[0].up);
  CHECK(snap.syscall_duty_cycle == 0);
  CHECK(snap.processes.empty());
}

TEST_CASE("bad syscall settings are refused with a clear error") {
  CHECK(parseSyscallMode("sampled").ok());
  auto bad = parseSyscallMode("always");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("always") != absl::string_view::npos);
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  SyscallOptions options;
  options.duty_cycle = 0;
  auto c = SyscallCollector::create(options);
  REQUIRE_FALSE(c.ok());
  CHECK(absl::IsInvalidArgument(c.status()));
  options.duty_cycle = std::nan("");
  CHECK(absl::IsInvalidArgument(SyscallCollector::create(options).status()));
  options.duty_cycle = 0.1;
  options.interval = 10 * kj::MILLISECONDS;
  CHECK(absl::IsInvalidArgument(SyscallCollector::create(options).status()));
}

// Whether the kernel has a BPF link for any of these program ids.
bool kernelHasLinkFor(const std::vector<uint32_t>& prog_ids) {
  uint32_t id = 0;
  while (bpf_link_get_next_id(id, &id) == 0) {
    int fd = bpf_link_get_fd_by_id(id);
    if (fd < 0) {
      continue;
    }
    bpf_link_info info = {};
    uint32_t len = sizeof(info);
    bool ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
                std::find(prog_ids.begin(), prog_ids.end(), info.prog_id) != prog_ids.end();
    close(fd);
    if (ours) {
      return true;
    }
  }
  return false;
}

TEST_CASE("sampled mode attaches the programs for the duty cycle of each interval only") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  auto io = kj::setupAsyncIo();
  kj::Timer& timer = io.provider->getTimer();
  CollectorContext context{timer, io.unixEventPort};
  SyscallOptions options;
  options.mode = SyscallMode::kSampled;
  options.duty_cycle = 0.3;
  options.interval = 1 * kj::SECONDS;
  auto collector = SyscallCollector::create(options);
  REQUIRE(collector.ok());
  SyscallCollector& c = **collector;
  std::vector<uint32_t> ids = c.programIds();
  REQUIRE(ids.size() == 2);  // sys_enter (latency) and sys_exit
  auto start = timer.now();
  kj::Promise<void> running = c.run(context).eagerlyEvaluate(nullptr);
  // The kj timer fires in time order, so these checks land inside the intended phase even when
  // the machine is slow: window [0, 0.3 s) attached, [0.3 s, 1 s) detached, then again.
  auto at = [&](int ms) { timer.atTime(start + ms * kj::MILLISECONDS).wait(io.waitScope); };
  at(100);
  CHECK(c.attached());
  CHECK(kernelHasLinkFor(ids));
  at(600);
  CHECK_FALSE(c.attached());
  CHECK_FALSE(kernelHasLinkFor(ids));
  at(1100);
  CHECK(c.attached());
  CHECK(kernelHasLinkFor(ids));
  at(1600);
  CHECK_FALSE(c.attached());
  Snapshot snap;
  c.collect(snap);
  INFO("attached fraction " << snap.syscall_duty_cycle);
  // A sanity bound, not a timing assertion: 0.6 s of 1.6 s configured, plus however long the
  // kernel took to tear the links down (counted as attached) on a loaded machine.
  CHECK(snap.syscall_duty_cycle > 0.15);
  CHECK(snap.syscall_duty_cycle < 0.8);
  bool windows = false;
  for (const MetricSample& m : snap.self) {
    if (m.name == "vigil_syscall_attach_windows_total") {
      windows = true;
      CHECK(m.value == 2);
    }
  }
  CHECK(windows);
}

TEST_CASE("sampled mode scales a steady getppid loop's count to about its true total") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  // The child counts its own calls in shared memory. Each iteration also spins ~2 us, so the
  // slowdown the attached programs cause (a few hundred ns per call) barely changes its rate.
  auto* calls = static_cast<std::atomic<uint64_t>*>(mmap(nullptr, sizeof(std::atomic<uint64_t>),
                                                         PROT_READ | PROT_WRITE,
                                                         MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  REQUIRE(calls != MAP_FAILED);
  new (calls) std::atomic<uint64_t>(0);
  Child child = Child::fork([calls]() {
    for (;;) {
      syscall(SYS_getppid);
      calls->fetch_add(1, std::memory_order_relaxed);
      struct timespec t0, t;
      clock_gettime(CLOCK_MONOTONIC, &t0);  // vDSO: no syscall
      do {
        clock_gettime(CLOCK_MONOTONIC, &t);
      } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 2000);
    }
    return 0;
  });
  std::this_thread::sleep_for(200ms);

  auto io = kj::setupAsyncIo();
  kj::Timer& timer = io.provider->getTimer();
  CollectorContext context{timer, io.unixEventPort};
  SyscallOptions options;
  options.mode = SyscallMode::kSampled;
  options.duty_cycle = 0.5;
  options.interval = 1 * kj::SECONDS;
  options.latency = false;
  uint64_t before = calls->load();
  auto collector = SyscallCollector::create(options);
  REQUIRE(collector.ok());
  uint64_t after_create = calls->load();
  auto start = timer.now();
  kj::Promise<void> running = (*collector)->run(context).eagerlyEvaluate(nullptr);
  timer.atTime(start + 4 * kj::SECONDS).wait(io.waitScope);  // four whole intervals
  Snapshot snap;
  (*collector)->collect(snap);
  uint64_t truth = calls->load() - (before + after_create) / 2;
  REQUIRE(snap.processes.count(child.pid()) == 1);
  double estimate = static_cast<double>(snap.processes[child.pid()].syscalls);
  INFO("estimate " << estimate << ", true " << truth << ", attached fraction "
                   << snap.syscall_duty_cycle);
  CHECK(estimate > 0.7 * truth);
  CHECK(estimate < 1.3 * truth);
  CHECK(snap.syscall_duty_cycle < 1.0);
  munmap(calls, sizeof(std::atomic<uint64_t>));
}

// --- Cost measurement, not a test: run with `syscall_collector_test "[cost]"`. -------------
// Attaches, in turn, empty programs and the collector's programs to sys_enter/sys_exit, drives
// a getppid loop, and prints bpf_stats' run_time_ns / run_cnt per program and the loop's cost
// per call. Numbers go to docs/syscall-sampling.md.

struct ProgCost {
  std::string name;
  uint64_t run_ns = 0;
  uint64_t runs = 0;
};

std::vector<ProgCost> progCosts(bpf_object* obj) {
  std::vector<ProgCost> out;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) {
      continue;
    }
    bpf_prog_info info = {};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
      out.push_back(ProgCost{bpf_program__name(prog), info.run_time_ns, info.run_cnt});
    }
  }
  return out;
}

double loopNsPerCall(int calls) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < calls; ++i) {
    syscall(SYS_getppid);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
}

void report(const char* what, bpf_object* obj, double loop_ns) {
  for (const ProgCost& c : progCosts(obj)) {
    printf("%-28s %-16s runs %10llu  %6.1f ns/run\n", what, c.name.c_str(),
           static_cast<unsigned long long>(c.runs), c.runs ? double(c.run_ns) / c.runs : 0.0);
  }
  printf("%-28s getppid loop: %.0f ns/call\n", what, loop_ns);
}

TEST_CASE("cost of the syscall programs against empty programs", "[.][cost]") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  const int kCalls = 2000000;
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);  // on while the fd is open
  REQUIRE(stats_fd >= 0);
  for (int round = 0; round < 3; ++round) {
    printf("round %d: no programs: getppid loop %.0f ns/call\n", round, loopNsPerCall(kCalls));
    {
      syscalls_empty_bpf* empty = syscalls_empty_bpf::open_and_load();
      REQUIRE(empty != nullptr);
      REQUIRE(syscalls_empty_bpf::attach(empty) == 0);
      double ns = loopNsPerCall(kCalls);
      report("empty", empty->obj, ns);
      syscalls_empty_bpf::destroy(empty);
    }
    for (bool latency : {true, false}) {
      SyscallOptions o = continuous();
      o.latency = latency;
      o.only_tgid = 0;
      auto c = SyscallCollector::create(o);
      REQUIRE(c.ok());
      double ns = loopNsPerCall(kCalls);
      Snapshot snap;
      (*c)->collect(snap);
      for (const MetricSample& m : snap.self) {
        if (m.name == "vigil_bpf_program_runs_total") {
          for (const MetricSample& t : snap.self) {
            if (t.name == "vigil_bpf_program_run_seconds_total" && t.labels == m.labels) {
              printf("%-28s %-16s runs %10.0f  %6.1f ns/run\n",
                     latency ? "vigil (latency on)" : "vigil (latency off)",
                     m.labels[0].second.c_str(), m.value, t.value * 1e9 / m.value);
            }
          }
        }
      }
      printf("%-28s getppid loop: %.0f ns/call\n",
             latency ? "vigil (latency on)" : "vigil (latency off)", ns);
    }
  }
  close(stats_fd);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

// --- Workload cost, not a test: `syscall_collector_test "[redis]"`. ------------------------
// Loopback redis-benchmark throughput with no syscall programs, in sampled mode (duty 0.1 of a
// 2 s interval, driven by run() on a KJ loop in a thread) and in continuous mode, alternating.
double redisOps(int port) {
  std::string out = testing::shell("redis-benchmark -p " + std::to_string(port) +
                                   " -t get,set -n 200000 -c 50 -q 2>/dev/null");
  // Final lines like "SET: 81234.56 requests per second, p50=..." (progress lines, ended by
  // '\r', say "rps="); sum the two.
  double total = 0;
  size_t pos = 0;
  while ((pos = out.find(" requests per second", pos)) != std::string::npos) {
    size_t colon = out.rfind(": ", pos);
    total += atof(out.c_str() + colon + 2);
    pos += 1;
  }
  return total;
}

TEST_CASE("redis-benchmark throughput by syscall mode", "[.][redis]") {
  if (!testing::bpfAllowed("syscall_collector_test")) {
    return;
  }
  int port = 20000 + getpid() % 20000;
  Child redis = Child::spawn(
      {"/usr/bin/redis-server", "--port", std::to_string(port), "--save", "", "--appendonly", "no"},
      "/dev/null");
  REQUIRE(testing::waitFor(
      [&]() {
        return testing::shell("redis-cli -p " + std::to_string(port) + " ping 2>/dev/null") ==
               "PONG\n";
      },
      10s));
  for (int round = 0; round < 3; ++round) {
    double none = redisOps(port);
    double sampled = 0;
    {
      std::atomic<bool> stop{false};
      std::thread loop([&]() {
        auto io = kj::setupAsyncIo();
        CollectorContext context{io.provider->getTimer(), io.unixEventPort};
        SyscallOptions o;
        o.mode = SyscallMode::kSampled;
        o.duty_cycle = 0.1;
        o.interval = 2 * kj::SECONDS;
        auto c = SyscallCollector::create(o);
        REQUIRE(c.ok());
        kj::Promise<void> running = (*c)->run(context).eagerlyEvaluate(nullptr);
        while (!stop) {
          io.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(io.waitScope);
        }
      });
      sampled = redisOps(port);
      stop = true;
      loop.join();
    }
    double continuous_ops = 0;
    {
      auto c = SyscallCollector::create(continuous());
      REQUIRE(c.ok());
      continuous_ops = redisOps(port);
    }
    printf("round %d: ops/s none %.0f, sampled %.0f (%.3f), continuous %.0f (%.3f)\n", round, none,
           sampled, sampled / none, continuous_ops, continuous_ops / none);
  }
}

}  // namespace
}  // namespace vigil

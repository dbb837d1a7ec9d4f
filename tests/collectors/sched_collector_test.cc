#include "userspace/collectors/sched_collector.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <sched.h>
#include <string>
#include <thread>
#include <vector>

#include "sched_empty.skel.h"
#include "sched_probes.skel.h"
#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

// A child that burns `seconds` of CPU, then sleeps until killed.
Child burnThenSleep(double seconds) {
  return Child::fork([seconds]() {
    testing::burnCpu(seconds);
    pause();
    return 0;
  });
}

char procState(pid_t pid) {
  std::string stat = testing::readFile("/proc/" + std::to_string(pid) + "/stat");
  auto p = stat.rfind(')');
  return p == std::string::npos || p + 2 >= stat.size() ? '?' : stat[p + 2];
}

TEST_CASE("on-CPU time of a burner matches /proc utime+stime within 10%") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  SchedOptions options;
  options.force_raw_tp = GENERATE(false, true);
  auto collector = SchedCollector::create(options);
  REQUIRE(collector.ok());
  Child child = burnThenSleep(1.0);
  REQUIRE(testing::waitFor([&]() { return procState(child.pid()) == 'S'; }, 10s, 10ms));
  double expected = testing::procCpuSeconds(child.pid());
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  const ProcessStats& p = snap.processes[child.pid()];
  double seen = p.cpu_ns / 1e9;
  INFO("bpf " << seen << "s, /proc " << expected << "s");
  CHECK(expected >= 0.9);
  CHECK(seen == Approx(expected).epsilon(0.10));
  CHECK(p.comm == "sched_collector");  // comm of the forked test binary, 15 bytes max
  CHECK(p.cgroup_id != 0);
  CHECK_FALSE(p.exited);
}

TEST_CASE("a running burner's time is visible before it leaves the CPU and never goes backwards") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  auto collector = SchedCollector::create(SchedOptions{});
  REQUIRE(collector.ok());
  Child child = burnThenSleep(1.5);
  uint64_t last = 0;
  int samples = 0;
  // Collect while the burner runs: each reading includes the slice in progress, so it grows
  // with /proc's figure instead of jumping at the next context switch.
  while (testing::procCpuSeconds(child.pid()) < 1.4) {
    Snapshot snap;
    (*collector)->collect(snap);
    auto it = snap.processes.find(child.pid());
    if (it != snap.processes.end()) {
      CHECK(it->second.cpu_ns >= last);
      last = it->second.cpu_ns;
      samples++;
    }
    std::this_thread::sleep_for(50ms);
  }
  CHECK(samples >= 5);
  REQUIRE(testing::waitFor([&]() { return procState(child.pid()) == 'S'; }, 10s, 10ms));
  double expected = testing::procCpuSeconds(child.pid());
  Snapshot snap;
  (*collector)->collect(snap);
  CHECK(snap.processes[child.pid()].cpu_ns >= last);
  CHECK(snap.processes[child.pid()].cpu_ns / 1e9 == Approx(expected).epsilon(0.10));
}

TEST_CASE("voluntary switches count each sleep of a sleeping process") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  auto collector = SchedCollector::create(SchedOptions{});
  REQUIRE(collector.ok());
  Child child = Child::fork([]() {
    for (int i = 0; i < 200; ++i) {
      usleep(1000);
    }
    pause();
    return 0;
  });
  REQUIRE(testing::waitFor(
      [&]() {
        Snapshot snap;
        (*collector)->collect(snap);
        auto it = snap.processes.find(child.pid());
        return it != snap.processes.end() && it->second.voluntary_switches >= 201;
      },
      10s));
}

TEST_CASE("an exited process is reported once with exited set, then retired") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  auto collector = SchedCollector::create(SchedOptions{});
  REQUIRE(collector.ok());
  Child child = Child::fork([]() {
    testing::burnCpu(0.2);
    return 0;
  });
  pid_t pid = child.pid();
  REQUIRE(child.wait(10s).has_value());
  Snapshot first;
  (*collector)->collect(first);
  REQUIRE(first.processes.count(pid) == 1);
  CHECK(first.processes[pid].exited);
  CHECK(first.processes[pid].cpu_ns >= 150000000);
  Snapshot second;
  (*collector)->collect(second);
  CHECK(second.processes.count(pid) == 0);
}

TEST_CASE("a process whose threads exit keeps their on-CPU time, switches and run-queue waits") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  SchedOptions options;
  options.max_process_histograms = 1000000;
  options.force_raw_tp = GENERATE(false, true);
  auto collector = SchedCollector::create(options);
  REQUIRE(collector.ok());
  // Four threads pinned to one CPU burn 0.25 s of CPU each and exit; the main thread then
  // sleeps. Everything the process did was done by threads that no longer exist.
  Child child = Child::fork([]() {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) {
      return 2;
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([]() { testing::burnCpu(0.25); });
    }
    for (auto& t : threads) {
      t.join();
    }
    pause();
    return 0;
  });
  REQUIRE(testing::waitFor(
      [&]() {
        return procState(child.pid()) == 'S' && testing::procCpuSeconds(child.pid()) >= 0.95;
      },
      20s, 10ms));
  double expected = testing::procCpuSeconds(child.pid());
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.processes.count(child.pid()) == 1);
  const ProcessStats& p = snap.processes[child.pid()];
  INFO("bpf " << p.cpu_ns / 1e9 << "s, /proc " << expected << "s");
  CHECK(p.cpu_ns / 1e9 == Approx(expected).epsilon(0.10));
  CHECK_FALSE(p.exited);
  // Four runnable threads on one CPU preempt each other: the waits of the exited threads are
  // in the process's histogram.
  uint64_t waits = 0;
  for (const HistogramSample& h : snap.histograms) {
    if (h.name != "vigil_process_runqueue_latency_seconds") {
      continue;
    }
    for (const auto& [k, v] : h.labels) {
      if (k == "pid" && v == std::to_string(child.pid())) {
        waits = h.count;
      }
    }
  }
  CHECK(waits >= 4);
  CHECK(p.involuntary_switches >= 4);
  // Nothing goes down in later collections.
  Snapshot again;
  (*collector)->collect(again);
  REQUIRE(again.processes.count(child.pid()) == 1);
  CHECK(again.processes[child.pid()].cpu_ns >= p.cpu_ns);
  CHECK(again.processes[child.pid()].involuntary_switches >= p.involuntary_switches);
}

TEST_CASE("tp_btf: the host and cgroup histograms count every process's waits, exited ones too") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  SchedOptions options;
  options.max_process_histograms = 1000000;
  auto collector = SchedCollector::create(options);
  REQUIRE(collector.ok());
  REQUIRE((*collector)->attachMode() == "tp_btf");
  Snapshot before;
  (*collector)->collect(before);
  auto hostCount = [](const Snapshot& s) {
    for (const HistogramSample& h : s.histograms) {
      if (h.name == "vigil_runqueue_latency_seconds") {
        return h.count;
      }
    }
    return uint64_t{0};
  };
  uint64_t host0 = hostCount(before);
  // Two pinned burners for 0.5 s, reaped before the next collection.
  Child child = Child::fork([]() {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) {
      return 2;
    }
    std::thread a([]() { testing::burnCpu(0.25); });
    std::thread b([]() { testing::burnCpu(0.25); });
    a.join();
    b.join();
    return 0;
  });
  pid_t pid = child.pid();
  REQUIRE(child.wait(20s).has_value());
  Snapshot after;
  (*collector)->collect(after);
  REQUIRE(after.processes.count(pid) == 1);
  CHECK(after.processes[pid].exited);
  uint64_t mine = 0, cgroup_total = 0;
  for (const HistogramSample& h : after.histograms) {
    if (h.name == "vigil_process_runqueue_latency_seconds") {
      for (const auto& [k, v] : h.labels) {
        if (k == "pid" && v == std::to_string(pid)) {
          mine = h.count;
        }
      }
    }
    if (h.name == "vigil_cgroup_runqueue_latency_seconds") {
      cgroup_total += h.count;
    }
  }
  CHECK(mine >= 2);
  CHECK(hostCount(after) >= host0 + mine);
  // Each wait is in exactly one cgroup histogram (none evicted or over the cap here).
  CHECK(cgroup_total == hostCount(after));
  // The exited process is retired, and the host histogram keeps its waits.
  Snapshot later;
  (*collector)->collect(later);
  CHECK(later.processes.count(pid) == 0);
  CHECK(hostCount(later) >= hostCount(after));
}

TEST_CASE("the collector reports itself up and exports its map-full counter") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  auto collector = SchedCollector::create(SchedOptions{});
  REQUIRE(collector.ok());
  Snapshot snap;
  (*collector)->collect(snap);
  REQUIRE(snap.collectors.size() == 1);
  CHECK(snap.collectors[0].name == "sched");
  CHECK(snap.collectors[0].up);
  bool found = false;
  for (const auto& m : snap.self) {
    found |= m.name == "vigil_bpf_map_full_total";
  }
  CHECK(found);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

// Samples at or above 1 ms: log2 buckets in microseconds, bucket i starts at 2^i us, so bucket 10
// (1024 us) is the first whose every value is >= 1 ms.
uint64_t samplesAtLeast1ms(const HistogramSample& h) {
  REQUIRE(h.unit_ns == 1000);
  uint64_t n = 0;
  for (size_t i = 10; i < h.buckets.size(); ++i) {
    n += h.buckets[i];
  }
  return n;
}

TEST_CASE("two CPU-bound threads pinned to one CPU wait in the run queue for >= 1 ms") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  SchedOptions options;
  options.max_process_histograms = 1000000;  // this test wants its pid whatever else is running
  options.force_raw_tp = GENERATE(false, true);
  auto collector = SchedCollector::create(options);
  REQUIRE(collector.ok());
  CHECK((*collector)->attachMode() == (options.force_raw_tp ? "raw_tp" : "tp_btf"));
  Child child = Child::fork([]() {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) {
      return 2;
    }
    // Threads inherit the affinity; both spin on CPU 0 for 1.5 s of wall time.
    auto spin = []() {
      struct timespec start, now;
      clock_gettime(CLOCK_MONOTONIC, &start);
      volatile uint64_t x = 0;
      do {
        for (int i = 0; i < 10000; ++i) {
          x = x + i;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
      } while ((now.tv_sec - start.tv_sec) * 1e9 + (now.tv_nsec - start.tv_nsec) < 1.5e9);
    };
    std::thread a(spin);
    std::thread b(spin);
    a.join();
    b.join();
    pause();
    return 0;
  });
  std::this_thread::sleep_for(2s);
  Snapshot snap;
  (*collector)->collect(snap);
  const HistogramSample* mine = nullptr;
  const HistogramSample* host = nullptr;
  for (const HistogramSample& h : snap.histograms) {
    if (h.name == "vigil_process_runqueue_latency_seconds") {
      for (const auto& [k, v] : h.labels) {
        if (k == "pid" && v == std::to_string(child.pid())) {
          mine = &h;
        }
      }
    }
    if (h.name == "vigil_runqueue_latency_seconds") {
      host = &h;
    }
  }
  REQUIRE(host != nullptr);
  REQUIRE(mine != nullptr);
  INFO("samples >= 1ms: " << samplesAtLeast1ms(*mine) << " of " << mine->count);
  CHECK(samplesAtLeast1ms(*mine) >= 50);
  CHECK(host->count >= mine->count);
  bool cgroup_seen = false;
  for (const HistogramSample& h : snap.histograms) {
    cgroup_seen |= h.name == "vigil_cgroup_runqueue_latency_seconds" && h.count > 0;
  }
  CHECK(cgroup_seen);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

// --- Cost measurement, not a test: run with `sched_collector_test "[cost]"`. ---------------
// Empty programs vs the collector's on the sched hooks, driven by a pipe ping-pong between two
// processes (a wakeup and two switches per message). Prints bpf_stats run_time_ns / run_cnt.

void pingPong(int rounds) {
  int ab[2], ba[2];
  REQUIRE(pipe(ab) == 0);
  REQUIRE(pipe(ba) == 0);
  Child peer = Child::fork([&]() {
    char c;
    for (int i = 0; i < rounds; ++i) {
      if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1) {
        return 1;
      }
    }
    return 0;
  });
  char c = 0;
  for (int i = 0; i < rounds; ++i) {
    REQUIRE(write(ab[1], &c, 1) == 1);
    REQUIRE(read(ba[0], &c, 1) == 1);
  }
  peer.wait(10s);
  for (int fd : {ab[0], ab[1], ba[0], ba[1]}) {
    close(fd);
  }
}

void printCosts(const char* what, const bpf_object* obj) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = bpf_program__fd(prog);
    if (fd < 0) {
      continue;
    }
    bpf_prog_info info = {};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.run_cnt > 0) {
      printf("%-8s %-16s runs %9llu  %6.1f ns/run\n", what, bpf_program__name(prog),
             static_cast<unsigned long long>(info.run_cnt),
             static_cast<double>(info.run_time_ns) / info.run_cnt);
    }
  }
}

TEST_CASE("cost of the sched programs against empty programs", "[.][cost]") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  REQUIRE(stats_fd >= 0);
  for (int round = 0; round < 3; ++round) {
    sched_empty_bpf* empty = sched_empty_bpf::open_and_load();
    REQUIRE(empty != nullptr);
    REQUIRE(sched_empty_bpf::attach(empty) == 0);
    pingPong(100000);
    printCosts("empty", empty->obj);
    sched_empty_bpf::destroy(empty);
    auto c = SchedCollector::create(SchedOptions{});
    REQUIRE(c.ok());
    pingPong(100000);
    printCosts("vigil", (*c)->object());
  }
  close(stats_fd);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

// --- Cost probes, not a test: run with `sched_collector_test "[cost-probes]"`. -------------
// Each program of bpf/sched/sched_probes.bpf.c is attached alone on tp_btf/sched_switch next to
// an empty program, in turn, for VIGIL_PROBE_ROUNDS (5) rounds of VIGIL_PROBE_WINDOW_MS (2000)
// each, under the bpfcost workload of bench/harness.py (redis-benchmark -c 20 when redis is
// installed, 200 execs/s, a getppid loop). Prints each probe's ns/event and its ratio to the
// empty program (medians over the rounds). To mirror `bench/run.sh --only bpfcost`, run an
// agent alongside without the sched collector (`disabled_collectors: [sched]`,
// `syscall_mode: continuous`).

struct ProgStats {
  uint64_t ns = 0;
  uint64_t runs = 0;
};

ProgStats progStats(const bpf_program* prog) {
  bpf_prog_info info = {};
  uint32_t len = sizeof(info);
  ProgStats s;
  if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) == 0) {
    s.ns = info.run_time_ns;
    s.runs = info.run_cnt;
  }
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int envInt(const char* name, int fallback) {
  const char* v = getenv(name);
  return v != nullptr && atoi(v) > 0 ? atoi(v) : fallback;
}

TEST_CASE("cost of sched_switch building blocks against an empty program", "[.][cost-probes]") {
  if (!testing::bpfAllowed("sched_collector_test")) {
    return;
  }
  const int rounds = envInt("VIGIL_PROBE_ROUNDS", 5);
  const int window_ms = envInt("VIGIL_PROBE_WINDOW_MS", 2000);
  const bool probe_first = envInt("VIGIL_PROBE_FIRST", 0) == 1;
  std::vector<std::string> probes = {"probe_prev_delay",  "probe_next_queued", "probe_next_wait",
                                     "probe_entry_rmw",   "probe_ts_lookup",   "probe_ts_design",
                                     "probe_pcpu_design", "probe_pcpu_wide",   "probe_pcpu_nodiv",
                                     "probe_packed",      "probe_alu"};
  if (const char* only = getenv("VIGIL_PROBES")) {  // a comma-separated subset
    probes.clear();
    std::string list = only;
    for (size_t at = 0; at <= list.size();) {
      size_t comma = list.find(',', at);
      comma = comma == std::string::npos ? list.size() : comma;
      if (comma > at) {
        probes.push_back(list.substr(at, comma - at));
      }
      at = comma + 1;
    }
  }
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  REQUIRE(stats_fd >= 0);
  sched_probes_bpf* skel = sched_probes_bpf::open();
  REQUIRE(skel != nullptr);
  int cpus = libbpf_num_possible_cpus();
  REQUIRE(cpus > 0);
  REQUIRE(bpf_map__set_max_entries(skel->maps.probe_tab, cpus << 6) == 0);
  REQUIRE(bpf_map__set_max_entries(skel->maps.probe_tab_hi, cpus << 6) == 0);
  REQUIRE(bpf_map__set_max_entries(skel->maps.probe_wide_tab, cpus << 6) == 0);
  REQUIRE(sched_probes_bpf::load(skel) == 0);
  bpf_link* fork_link = bpf_program__attach(skel->progs.probe_fork);
  REQUIRE(fork_link != nullptr);

  // The workload, as bench/harness.py's bpfcost part.
  std::vector<Child> load;
  std::string redis_port = std::to_string(testing::freePort());
  auto which = [](const std::string& name) {
    std::string path = testing::shell("command -v " + name);
    path.erase(path.find_last_not_of("\n") + 1);
    return path;
  };
  std::string redis_server = which("redis-server"), redis_benchmark = which("redis-benchmark");
  bool redis = !redis_server.empty() && !redis_benchmark.empty();
  if (redis) {
    load.push_back(Child::spawn({redis_server, "--port", redis_port, "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"},
                                "/dev/null"));
    std::this_thread::sleep_for(500ms);
    load.push_back(Child::spawn(
        {redis_benchmark, "-p", redis_port, "-c", "20", "-n", "1000000000", "-t", "set,get", "-q"},
        "/dev/null"));
  }
  int total_s = rounds * static_cast<int>(probes.size()) * window_ms / 1000 + 10;
  load.push_back(Child::spawn(
      {testing::binaryPath("vigil-bench-storm"), "exec", std::to_string(200 * total_s), "200"},
      "/dev/null"));
  std::string getppid = testing::binaryPath("vigil-bench-getppid");
  load.push_back(Child::fork([getppid]() {
    for (;;) {
      testing::shell(getppid + " 200000 >/dev/null");
    }
    return 0;
  }));

  std::map<std::string, std::vector<double>> ns, empty_ns, ratio;
  for (int r = 0; r < rounds; ++r) {
    for (const std::string& name : probes) {
      bpf_program* prog = bpf_object__find_program_by_name(skel->obj, name.c_str());
      REQUIRE(prog != nullptr);
      // Programs on a hook run in attach order; VIGIL_PROBE_FIRST=1 runs the probe first.
      bpf_link* lp = probe_first ? bpf_program__attach(prog) : nullptr;
      bpf_link* le = bpf_program__attach(skel->progs.probe_empty);
      if (!probe_first) {
        lp = bpf_program__attach(prog);
      }
      REQUIRE(le != nullptr);
      REQUIRE(lp != nullptr);
      ProgStats p0 = progStats(prog), e0 = progStats(skel->progs.probe_empty);
      std::this_thread::sleep_for(std::chrono::milliseconds(window_ms));
      ProgStats p1 = progStats(prog), e1 = progStats(skel->progs.probe_empty);
      bpf_link__destroy(lp);
      bpf_link__destroy(le);
      if (p1.runs > p0.runs && e1.runs > e0.runs) {
        double a = static_cast<double>(p1.ns - p0.ns) / (p1.runs - p0.runs);
        double b = static_cast<double>(e1.ns - e0.ns) / (e1.runs - e0.runs);
        ns[name].push_back(a);
        empty_ns[name].push_back(b);
        ratio[name].push_back(a / b);
      }
    }
  }
  for (Child& c : load) {
    c.signal(SIGKILL);
    c.wait(5s);
  }
  // A getppid run the loop had started ends by itself within a second.
  printf("workload: %s200 exec/s, getppid loop; load: %s", redis ? "redis-benchmark -c 20, " : "",
         testing::readFile("/proc/loadavg").c_str());
  for (const std::string& name : probes) {
    printf("%-18s %7.1f ns/event  empty %6.1f  ratio %.2f (%.2f-%.2f)  rounds %zu\n", name.c_str(),
           median(ns[name]), median(empty_ns[name]), median(ratio[name]),
           ratio[name].empty() ? 0 : *std::min_element(ratio[name].begin(), ratio[name].end()),
           ratio[name].empty() ? 0 : *std::max_element(ratio[name].begin(), ratio[name].end()),
           ratio[name].size());
  }
  uint64_t hits[16] = {};
  int zero = 0;
  if (bpf_map__lookup_elem(skel->maps.data_hits, &zero, sizeof(zero), hits, sizeof(hits), 0) == 0) {
    printf(
        "probe_pcpu_design entries (CPUs 0, 1): fast %llu %llu, other/stale %llu %llu, "
        "no storage %llu %llu\n",
        (unsigned long long)hits[0], (unsigned long long)hits[8], (unsigned long long)hits[1],
        (unsigned long long)hits[9], (unsigned long long)hits[2], (unsigned long long)hits[10]);
  }
  bpf_link__destroy(fork_link);
  sched_probes_bpf::destroy(skel);
  close(stats_fd);
}

}  // namespace
}  // namespace vigil

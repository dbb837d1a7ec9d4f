// The agent's per-process state is bounded by the live processes, not by how many have existed:
// a burst of short-lived processes is reported once (each as exited) and then forgotten by the
// scheduler collector (userspace and its kernel `exited` map) and by the attributor. Asserts on
// table sizes (the vigil_*_tracked_processes gauges), not on timing or RSS.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "sched/sched.h"
#include "tests/support/test_support.h"
#include "userspace/attribution/attributor.h"
#include "userspace/collectors/sched_collector.h"
#include "userspace/common/shrink.h"

namespace vigil {
namespace {

constexpr int kChurn = 2000;

// Forks `n` children that exit at once, reaping each; returns their pids.
std::vector<pid_t> churn(int n) {
  std::vector<pid_t> pids;
  pids.reserve(n);
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    pids.push_back(pid);
  }
  return pids;
}

std::optional<double> selfGauge(const Snapshot& snap, const std::string& name) {
  for (const MetricSample& m : snap.self) {
    if (m.name == name) {
      return m.value;
    }
  }
  return std::nullopt;
}

// Entries of the sched object's `exited` map (thread groups with exited threads, not yet
// reported).
size_t exitedEntries(const SchedCollector& c) {
  const bpf_map* map = bpf_object__find_map_by_name(const_cast<bpf_object*>(c.object()), "exited");
  REQUIRE(map != nullptr);
  int fd = bpf_map__fd(map);
  sched_exited_key key{}, next{};
  size_t n = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++n;
    key = next;
    prev = &key;
  }
  return n;
}

TEST_CASE("a burst of short-lived processes is reported once, then leaves no per-process state") {
  if (!testing::bpfAllowed("footprint_test")) {
    return;
  }
  auto sched = SchedCollector::create(SchedOptions{});
  REQUIRE(sched.ok());
  if ((*sched)->attachMode() != "tp_btf") {
    WARN("sched collector fell back to raw_tp; the tracked-process table is tp_btf's");
    return;
  }
  auto attributor = Attributor::create();
  REQUIRE(attributor.ok());

  // Baseline: the live processes of this machine (other builds may come and go).
  size_t baseline = 0;
  for (int i = 0; i < 2; ++i) {
    Snapshot snap;
    (*sched)->collect(snap);
    (*attributor)->annotate(snap);
    baseline = (*sched)->trackedProcesses();
    REQUIRE(selfGauge(snap, "vigil_sched_tracked_processes") == static_cast<double>(baseline));
  }

  std::vector<pid_t> pids = churn(kChurn);
  absl::flat_hash_set<uint32_t> churned(pids.begin(), pids.end());

  // The collection after the burst reports each child once, as exited.
  Snapshot burst;
  (*sched)->collect(burst);
  (*attributor)->annotate(burst);
  size_t reported = 0;
  for (const auto& [pid, p] : burst.processes) {
    if (churned.contains(pid)) {
      ++reported;
      CHECK(p.exited);
    }
  }
  INFO("baseline " << baseline << " tracked processes");
  // Every child is reported once, as exited, even one that exited before its first tick or
  // switch-out and so has all-zero totals (on a quiet machine about half of them: those were
  // once skipped, and their `exited` entries stayed in the kernel map for good). A reused pid
  // would be the only exception (counted in vigil_sched_pid_reuse_total).
  CHECK(reported +
            static_cast<size_t>(selfGauge(burst, "vigil_sched_pid_reuse_total").value_or(0)) >=
        static_cast<size_t>(kChurn));
  // Nothing is kept for them afterwards: the tracked table is back to the live processes
  // (with room for what other work on this machine started meanwhile, far below the burst).
  size_t tracked = (*sched)->trackedProcesses();
  CHECK(tracked <= baseline + 200);
  CHECK(selfGauge(burst, "vigil_sched_tracked_processes") == static_cast<double>(tracked));
  // The attributor remembers only processes still alive after this frame.
  size_t live = 0;
  for (const auto& [pid, p] : burst.processes) {
    live += !p.exited && p.cgroup_id != 0 ? 1 : 0;
  }
  CHECK((*attributor)->trackedProcesses() == live);
  CHECK(selfGauge(burst, "vigil_attribution_tracked_processes") == static_cast<double>(live));
  // The kernel's exited map no longer holds them either.
  CHECK(exitedEntries(**sched) < 200);

  // The next collection does not mention them again.
  Snapshot after;
  (*sched)->collect(after);
  (*attributor)->annotate(after);
  size_t again = 0;
  for (const auto& [pid, p] : after.processes) {
    again += churned.contains(pid) ? 1 : 0;
  }
  CHECK(again == 0);
  CHECK((*sched)->trackedProcesses() <= baseline + 200);
}

TEST_CASE("tables shrink once a quarter or less of their capacity is in use") {
  absl::flat_hash_set<uint32_t> table;
  for (uint32_t i = 0; i < 20000; ++i) {
    table.insert(i);
  }
  size_t peak = table.capacity();
  CHECK_FALSE(shrinkTableIfSparse(table));  // full: kept
  for (uint32_t i = 100; i < 20000; ++i) {
    table.erase(i);
  }
  CHECK(table.capacity() == peak);  // erasing alone keeps the slots
  CHECK(shrinkTableIfSparse(table));
  CHECK(table.size() == 100);
  CHECK(table.capacity() <= 256);
  CHECK_FALSE(shrinkTableIfSparse(table));  // small tables are left alone

  std::vector<int> v(50000);
  v.resize(10);
  CHECK(shrinkVectorIfSparse(v));
  CHECK(v.capacity() < 50000);
  CHECK(v.size() == 10);
}

}  // namespace
}  // namespace vigil

// Tests for vigil-bench-wire's folding experiment (bench/wire): the short-lived folder must sum
// exactly what it folds. (The event columns it was measured beside are product code now:
// tests/capnp/event_columns_test.cc.)
#include "bench/wire/fold_short_lived.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace vigil::bench {
namespace {

ProcessStats proc(uint32_t pid, const std::string& comm, uint64_t cgroup, uint64_t cpu_ns,
                  bool exited) {
  ProcessStats p;
  p.pid = pid;
  p.comm = comm;
  p.cgroup_id = cgroup;
  p.cpu_ns = cpu_ns;
  p.syscalls = pid;
  p.tcp_tx_bytes = 2 * pid;
  p.top_errnos = {{2, pid}};
  p.exited = exited;
  p.cmdline = "cmd " + std::to_string(pid);
  return p;
}

TEST_CASE("short-lived processes beyond the K busiest fold into one sample per comm and cgroup") {
  absl::flat_hash_map<uint32_t, ProcessStats> frame;
  for (auto p :
       {proc(10, "a", 1, 100, true), proc(11, "a", 1, 300, true), proc(12, "a", 1, 200, true),
        proc(20, "b", 2, 50, true), proc(21, "b", 2, 60, true), proc(30, "long", 1, 999, false),
        proc(40, "old", 1, 1, true)}) {
    frame.emplace(p.pid, p);
  }
  const absl::flat_hash_set<uint32_t> previous = {30, 40};  // 40 was seen before: not new
  ShortLivedFolder folder(1);
  auto folded = folder.fold(frame, previous);
  // Kept: 30 (long-lived), 40 (not new), 11 (the busiest short-lived); 10, 12 -> (a, 1) and
  // 20, 21 -> (b, 2).
  CHECK(folder.lastFolded() == 4);
  CHECK(folder.aggregates() == 2);
  REQUIRE(folded.size() == 5);
  CHECK(folded.count(11) == 1);
  CHECK(folded.count(30) == 1);
  CHECK(folded.count(40) == 1);
  const ProcessStats* a = nullptr;
  const ProcessStats* b = nullptr;
  for (const auto& [pid, p] : folded) {
    if (folder.foldedCount(pid) > 0) {
      (p.comm == "a" ? a : b) = &p;
    }
  }
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(folder.foldedCount(a->pid) == 2);
  CHECK(a->cgroup_id == 1);
  CHECK(a->cpu_ns == 300);
  CHECK(a->syscalls == 22);
  CHECK(a->tcp_tx_bytes == 44);
  CHECK(a->top_errnos == std::vector<std::pair<uint32_t, uint64_t>>{{2, 22}});
  CHECK(a->cmdline.empty());
  CHECK(!a->exited);
  CHECK(b->cpu_ns == 110);
  CHECK(folder.foldedCount(b->pid) == 2);

  // The next frame: one more "a" folds into the same aggregate (same pseudo-pid, cumulative).
  const uint32_t a_pid = a->pid;
  absl::flat_hash_map<uint32_t, ProcessStats> next;
  next.emplace(30, proc(30, "long", 1, 1500, false));
  next.emplace(50, proc(50, "a", 1, 5, true));
  next.emplace(51, proc(51, "a", 1, 7, true));
  auto folded2 = folder.fold(next, {10, 11, 12, 20, 21, 30, 40});
  CHECK(folder.lastFolded() == 1);
  REQUIRE(folded2.count(a_pid) == 1);
  CHECK(folder.foldedCount(a_pid) == 3);
  CHECK(folded2.at(a_pid).cpu_ns == 305);
  CHECK(folded2.size() == 4);  // 30, 51 (busiest), and both aggregates
}

}  // namespace
}  // namespace vigil::bench

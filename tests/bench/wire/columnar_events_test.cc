// Tests for vigil-bench-wire's experiments (bench/wire): the columnar event codec must give back
// every field of every event kind exactly, refuse malformed columns with a clear error, and the
// short-lived folder must sum exactly what it folds.
#include "bench/wire/columnar_events.h"

#include <capnp/message.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "bench/wire/fold_short_lived.h"

namespace vigil::bench {
namespace {

std::vector<wire::Event::Reader> readers(const std::vector<capnp::Orphan<wire::Event>>& events) {
  std::vector<wire::Event::Reader> out;
  for (const auto& e : events) {
    out.push_back(e.getReader());
  }
  return out;
}

// Events of every kind, with unset, set-but-empty and extreme values.
void addEveryKind(capnp::Orphanage orphanage, std::vector<capnp::Orphan<wire::Event>>& out,
                  int64_t t0) {
  auto add = [&](int64_t t, uint32_t pid) {
    out.push_back(orphanage.newOrphan<wire::Event>());
    auto e = out.back().get();
    e.setTimestampNs(t);
    e.setPid(pid);
    e.setTid(pid);
    return e;
  };
  auto fork = add(t0, 100);
  fork.setPpid(1);
  fork.setComm("sh");
  fork.setCgroupId(0xfedcba9876543210ull);
  fork.initFork().setChildPid(101);
  auto exec = add(t0 + 300'000, 101);
  exec.setPpid(100);
  exec.setComm("true");
  exec.setContainerId("");  // set but empty: must stay set
  exec.setPodUid("pod-1");
  auto x = exec.initExec();
  x.setFilename("/bin/true");
  x.setArgv("true --flag");
  x.setArgvTruncated(true);
  auto exit = add(t0 + 800'000, 101);
  exit.setComm("true");
  auto ex = exit.initExit();
  ex.setExitCode(-1);
  ex.setSignal(9);
  ex.setLifetimeNs(790'000);
  ex.setCoreDumped(true);
  auto bare = add(t0 - 5, 0xffffffffu);  // time going back, pid at the top of the range
  bare.setTid(0);
  bare.adoptExec(capnp::Orphan<wire::ExecEvent>());  // union member set, no payload
  auto oom = add(t0 + 900'000, 7);
  auto o = oom.initOomKill();
  o.setVictimPid(4242);
  o.setVictimComm("java");
  o.setVictimCgroupId(77);
  o.setTotalVmKb(1ull << 40);
  o.setAnonRssKb(123456);
  auto sig = add(t0 + 950'000, 7);
  auto s = sig.initSignal();
  s.setSignal(15);
  s.setTargetPid(1);
  s.setSenderPid(7);
  s.setResult(-3);
  auto tcp = add(t0 + 1'000'000, 55);
  auto tc = tcp.initTcpState();
  tc.setFamily(10);
  const kj::byte v6[16] = {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  tc.setSaddr(kj::arrayPtr(v6, 16));
  tc.setDaddr(kj::ArrayPtr<const kj::byte>());  // set but empty
  tc.setSport(65535);
  tc.setDport(6379);
  tc.setOldState(2);
  tc.setNewState(1);
  tc.setDurationNs(~0ull);
  tc.setTxBytes(1);
  tc.setRxBytes(0);
  tc.setLifetimeNs(5);
  tc.setSocketError(-111);
  tc.setSrttUs(4'000'000'000u);
  add(t0 + 1'000'001, 0);  // nothing set but the defaults
}

TEST_CASE("columnar events give back every field of every event kind") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<wire::Event>> previous, events;
  addEveryKind(arena.getOrphanage(), previous, 1'000'000'000);
  addEveryKind(arena.getOrphanage(), events, 3'000'000'000);
  const auto prev = readers(previous);
  auto cur = readers(events);
  const std::vector<wire::Event::Reader> none;
  // Against the previous frame's events, and against none (a keyframe's form).
  for (const auto* p : {&prev, &none}) {
    std::string columns = encodeEventColumns(*p, cur);
    capnp::MallocMessageBuilder out;
    auto back = decodeEventColumns(*p, columns, out.getOrphanage());
    REQUIRE(back.ok());
    REQUIRE(back->size() == cur.size());
    for (size_t i = 0; i < cur.size(); ++i) {
      INFO("event " << i);
      CHECK(sameEvent(cur[i], (*back)[i].getReader()));
    }
    // Unset stays unset and set-but-empty stays set.
    CHECK((*back)[1].getReader().hasContainerId());
    CHECK(!(*back)[0].getReader().hasContainerId());
    CHECK((*back)[6].getReader().getTcpState().hasDaddr());
    CHECK((*back)[3].getReader().isExec());
    CHECK(!(*back)[3].getReader().hasExec());
  }
}

TEST_CASE("sameEvent tells apart events that differ in one field") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<wire::Event>> a, b;
  addEveryKind(arena.getOrphanage(), a, 10);
  addEveryKind(arena.getOrphanage(), b, 10);
  REQUIRE(sameEvent(a[1].getReader(), b[1].getReader()));
  b[1].get().getExec().setArgvTruncated(false);
  CHECK(!sameEvent(a[1].getReader(), b[1].getReader()));
  b[0].get().setComm("");
  a[0].get().disownComm();
  CHECK(!sameEvent(a[0].getReader(), b[0].getReader()));
}

TEST_CASE("malformed event columns are refused with an error naming the problem") {
  capnp::MallocMessageBuilder arena;
  std::vector<capnp::Orphan<wire::Event>> events;
  addEveryKind(arena.getOrphanage(), events, 10);
  const std::vector<wire::Event::Reader> none;
  std::string columns = encodeEventColumns(none, readers(events));
  capnp::MallocMessageBuilder out;
  auto truncated =
      decodeEventColumns(none, columns.substr(0, columns.size() - 1), out.getOrphanage());
  REQUIRE(!truncated.ok());
  CHECK_THAT(std::string(truncated.status().message()), Catch::Contains("event column"));
  auto trailing = decodeEventColumns(none, columns + "x", out.getOrphanage());
  REQUIRE(!trailing.ok());
  CHECK(std::string(trailing.status().message()) == "bytes after the last event column");
  auto empty = decodeEventColumns(none, "", out.getOrphanage());
  REQUIRE(!empty.ok());
  CHECK(std::string(empty.status().message()) == "event column header is truncated");
  // Decoding against a different previous frame (a dictionary of the wrong size) fails or gives
  // different events, never a crash.
  std::vector<capnp::Orphan<wire::Event>> other;
  addEveryKind(arena.getOrphanage(), other, 99);
  auto encoded_with_prev = encodeEventColumns(readers(other), readers(events));
  auto wrong_base = decodeEventColumns(none, encoded_with_prev, out.getOrphanage());
  if (wrong_base.ok()) {
    bool all_same = true;
    for (size_t i = 0; i < events.size(); ++i) {
      all_same = all_same && sameEvent(events[i].getReader(), (*wrong_base)[i].getReader());
    }
    CHECK(!all_same);
  }
}

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

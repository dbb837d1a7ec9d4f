// The CO-RE BTF subset (kernel-compat/core_btf.h) against the real kernel: its root types are
// complete copies of vmlinux's, every collector object relocates against it exactly as against
// the full vmlinux BTF (libbpf's own record of each patched instruction is the oracle), the
// cache file is private, atomic and rejected when damaged, and the CLI falls back to the full
// BTF when a cached file cannot serve a load.
#include "kernel-compat/core_btf.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/test_support.h"
#include "userspace/cli/trace_hist.h"
#include "userspace/collectors/block_collector.h"
#include "userspace/collectors/core_btf_objects.h"
#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/process_collector.h"
#include "userspace/collectors/sched_collector.h"
#include "userspace/collectors/syscall_collector.h"

namespace vigil::compat {
namespace {

std::vector<std::string> g_patched;

// Keeps libbpf's lines recording the outcome of each CO-RE relocation.
int capturePrint(enum libbpf_print_level, const char* format, va_list args) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), format, args);
  std::string line = buf;
  if (absl::StrContains(line, "patched insn") || absl::StrContains(line, "substituting insn") ||
      absl::StrContains(line, "poison")) {
    g_patched.push_back(line);
  }
  return 0;
}

struct BtfFree {
  void operator()(btf* b) const { btf__free(b); }
};

// Loads all five collectors (every program of each kind enabled where options allow) and
// returns libbpf's relocation lines.
std::vector<std::string> relocationsOfAllCollectors() {
  g_patched.clear();
  libbpf_print_fn_t old = libbpf_set_print(capturePrint);
  {
    ProcessOptions po;
    auto p = ProcessCollector::create(po);
    REQUIRE(p.ok());
    NetOptions no;
    auto n = NetCollector::create(no);
    REQUIRE(n.ok());
    SchedOptions so;
    auto s = SchedCollector::create(so);
    REQUIRE(s.ok());
    SchedOptions so_raw;
    so_raw.force_raw_tp = true;
    auto s2 = SchedCollector::create(so_raw);
    REQUIRE(s2.ok());
    SyscallOptions yo;
    yo.mode = SyscallMode::kContinuous;
    yo.latency = true;
    auto y = SyscallCollector::create(yo);
    REQUIRE(y.ok());
    BlockOptions bo;
    auto b = BlockCollector::create(bo);
    REQUIRE(b.ok());
  }
  libbpf_set_print(old);
  return g_patched;
}

std::string keyOf(const std::string& path) {
  // .../core-<release>-<16 hex>.btf
  return path.substr(path.size() - 4 - 16, 16);
}

TEST_CASE("coreRootNames lists the kernel types each collector object relocates against") {
  std::set<std::string> all;
  for (const BpfObjectImage& o : collectorBpfObjects()) {
    auto names = coreRootNames(o);
    REQUIRE(names.ok());
    INFO(o.name);
    CHECK(!names->empty());
    for (const std::string& n : *names) {
      CHECK(!absl::StrContains(n, "___"));  // flavours reduce to the kernel's name
      all.insert(n);
    }
  }
  for (const char* want : {"task_struct", "sock", "tcp_sock", "linux_binprm", "kernfs_node"}) {
    INFO(want);
    CHECK(all.count(want) == 1);
  }
  BpfObjectImage junk{"junk", "not an ELF file", 15};
  CHECK(absl::IsInvalidArgument(coreRootNames(junk).status()));
}

TEST_CASE("the subset holds each root type once, complete, as vmlinux has it") {
  if (!vigil::testing::bpfAllowed("core BTF subset")) {
    return;
  }
  std::unique_ptr<btf, BtfFree> vmlinux(btf__load_vmlinux_btf());
  REQUIRE(vmlinux != nullptr);
  std::vector<std::string> roots;
  for (const BpfObjectImage& o : collectorBpfObjects()) {
    auto names = coreRootNames(o);
    REQUIRE(names.ok());
    roots.insert(roots.end(), names->begin(), names->end());
  }
  size_t types = 0;
  auto raw = buildCoreBtf(vmlinux.get(), roots, "vigil_core_btf_test", &types);
  REQUIRE(raw.ok());
  std::unique_ptr<btf, BtfFree> sub(btf__new(raw->data(), raw->size()));
  REQUIRE(sub != nullptr);
  CHECK(types == btf__type_cnt(sub.get()) - 1);
  CHECK(types < btf__type_cnt(vmlinux.get()) / 20);  // the point: a small file
  CHECK(btf__find_by_name_kind(sub.get(), "vigil_core_btf_test", BTF_KIND_STRUCT) > 0);
  int checked = 0;
  for (const std::string& name : roots) {
    for (int kind : {BTF_KIND_STRUCT, BTF_KIND_UNION}) {
      int vid = btf__find_by_name_kind(vmlinux.get(), name.c_str(), kind);
      if (vid < 0) {
        continue;  // e.g. a ___pre_5_5 flavour's type that this kernel no longer has
      }
      INFO(name);
      int count = 0, sid = 0;
      for (uint32_t i = 1; i < btf__type_cnt(sub.get()); ++i) {
        const btf_type* t = btf__type_by_id(sub.get(), i);
        if (btf_kind(t) == kind && name == btf__name_by_offset(sub.get(), t->name_off)) {
          ++count;
          sid = static_cast<int>(i);
        }
      }
      REQUIRE(count == 1);
      const btf_type* v = btf__type_by_id(vmlinux.get(), vid);
      const btf_type* s = btf__type_by_id(sub.get(), sid);
      REQUIRE(s->size == v->size);
      REQUIRE(btf_vlen(s) == btf_vlen(v));
      for (int m = 0; m < btf_vlen(v); ++m) {
        CHECK(std::string(btf__name_by_offset(sub.get(), btf_members(s)[m].name_off)) ==
              btf__name_by_offset(vmlinux.get(), btf_members(v)[m].name_off));
        CHECK(btf_member_bit_offset(s, m) == btf_member_bit_offset(v, m));
        CHECK(btf_member_bitfield_size(s, m) == btf_member_bitfield_size(v, m));
        CHECK(btf__resolve_size(sub.get(), btf_members(s)[m].type) ==
              btf__resolve_size(vmlinux.get(), btf_members(v)[m].type));
      }
      ++checked;
    }
  }
  CHECK(checked >= 20);
}

TEST_CASE("every collector relocates against the cached subset exactly as against vmlinux") {
  if (!vigil::testing::bpfAllowed("core BTF relocations")) {
    return;
  }
  vigil::testing::TempDir dir;
  CoreBtfCache cache(collectorBpfObjects(), dir.path());
  REQUIRE(cache.build().ok());
  auto path = cache.usablePath();
  REQUIRE(path.ok());

  setCoreBtfPath("");
  std::vector<std::string> full = relocationsOfAllCollectors();
  setCoreBtfPath(*path);
  std::vector<std::string> subset = relocationsOfAllCollectors();
  setCoreBtfPath("");
  CHECK(full.size() > 100);
  CHECK(subset == full);
}

TEST_CASE("the cache file is private, keyed, and rejected when damaged or writable by others") {
  if (!vigil::testing::bpfAllowed("core BTF cache")) {
    return;
  }
  vigil::testing::TempDir dir;
  std::string sub = dir.file("btf");
  CoreBtfCache cache(collectorBpfObjects(), sub);
  CHECK(absl::IsNotFound(cache.usablePath().status()));
  REQUIRE(cache.build().ok());
  REQUIRE(cache.usablePath().ok());
  CHECK(*cache.usablePath() == cache.path());
  struct stat st;
  REQUIRE(stat(sub.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(stat(cache.path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  // Other objects (another vigil build) get another file; writing it removes the old one.
  std::vector<BpfObjectImage> fewer = collectorBpfObjects();
  fewer.pop_back();
  CoreBtfCache other(fewer, sub);
  CHECK(other.path() != cache.path());
  REQUIRE(other.build().ok());
  CHECK(access(cache.path().c_str(), F_OK) != 0);
  REQUIRE(cache.build().ok());

  // Truncated: does not parse.
  REQUIRE(truncate(cache.path().c_str(), 100) == 0);
  CHECK(absl::IsDataLoss(cache.usablePath().status()));
  REQUIRE(cache.build().ok());  // rebuilt
  CHECK(cache.usablePath().ok());

  // A parseable BTF without this key's marker (e.g. a file copied from elsewhere).
  {
    std::ofstream f(cache.path(), std::ios::trunc | std::ios::binary);
    std::unique_ptr<btf, BtfFree> b(btf__new_empty());
    btf__add_int(b.get(), "int", 4, BTF_INT_SIGNED);
    uint32_t size = 0;
    const void* raw = btf__raw_data(b.get(), &size);
    f.write(static_cast<const char*>(raw), size);
  }
  CHECK(absl::IsDataLoss(cache.usablePath().status()));

  REQUIRE(cache.build().ok());
  REQUIRE(chmod(cache.path().c_str(), 0666) == 0);
  CHECK(absl::IsPermissionDenied(cache.usablePath().status()));
  REQUIRE(chmod(cache.path().c_str(), 0600) == 0);
  REQUIRE(chmod(sub.c_str(), 0777) == 0);
  CHECK(absl::IsPermissionDenied(cache.usablePath().status()));
  REQUIRE(chmod(sub.c_str(), 0700) == 0);
  CHECK(cache.usablePath().ok());
}

TEST_CASE("the CLI loads with the full vmlinux BTF when the cached file cannot serve a load") {
  if (!vigil::testing::bpfAllowed("core BTF fallback")) {
    return;
  }
  vigil::testing::TempDir dir;
  setenv("VIGIL_BTF_CACHE_DIR", dir.path().c_str(), 1);
  CoreBtfCache cache(collectorBpfObjects());
  REQUIRE(cache.dir() == dir.path());
  {
    // Sound on its face (private, parses, right marker) but with no kernel types at all.
    std::unique_ptr<btf, BtfFree> vmlinux(btf__load_vmlinux_btf());
    auto raw = buildCoreBtf(vmlinux.get(), {}, "vigil_core_btf_" + keyOf(cache.path()));
    REQUIRE(raw.ok());
    std::ofstream f(cache.path(), std::ios::binary);
    f.write(raw->data(), raw->size());
  }
  REQUIRE(chmod(cache.path().c_str(), 0600) == 0);
  REQUIRE(cache.usablePath().ok());

  cli::CoreBtfUse use(/*verbose=*/false);
  CHECK(use.active());
  ProcessOptions o;
  o.event_types = 1u << static_cast<int>(ProcEventType::kExec);
  auto c = use.create([&]() { return ProcessCollector::create(o); });
  CHECK(c.ok());
  CHECK(!use.active());
  CHECK(use.problems() == 1);
  CHECK(coreBtfPath() == nullptr);

  // With the cache off nothing is used and nothing is written.
  setenv("VIGIL_BTF_CACHE_DIR", "off", 1);
  cli::CoreBtfUse off(/*verbose=*/false);
  CHECK(!off.active());
  off.finish();
  CHECK(off.problems() == 0);
  unsetenv("VIGIL_BTF_CACHE_DIR");
}

}  // namespace
}  // namespace vigil::compat

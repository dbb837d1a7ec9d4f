// compat::MappedBtf against libbpf's own parse of the same /sys/kernel/btf/vmlinux: every type
// id, every btf_trace_* typedef and the pointer-ness of every tracepoint argument must agree.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "kernel-compat/btf_scan.h"
#include "kernel-compat/features.h"

namespace vigil::compat {
namespace {

// The oracle: the argument's type through libbpf, as process_collector's fallback reads it.
bool libbpfArgIsPointer(const struct btf* btf, int typedef_id, int arg) {
  if (typedef_id <= 0) {
    return false;  // no such tracepoint
  }
  const struct btf_type* ptr = btf__type_by_id(btf, btf__type_by_id(btf, typedef_id)->type);
  if (ptr == nullptr || !btf_is_ptr(ptr)) {
    return false;
  }
  const struct btf_type* proto = btf__type_by_id(btf, ptr->type);
  if (proto == nullptr || !btf_is_func_proto(proto) || btf_vlen(proto) < arg + 2) {
    return false;
  }
  int id = btf__resolve_type(btf, btf_params(proto)[arg + 1].type);
  const struct btf_type* t = id > 0 ? btf__type_by_id(btf, id) : nullptr;
  return t != nullptr && btf_is_ptr(t);
}

TEST_CASE("MappedBtf reads the kernel's BTF exactly as libbpf does") {
  auto mapped = MappedBtf::open();
  // Kernel 6.16+ allows the mapping; the test machine runs 6.18.
  REQUIRE(mapped != nullptr);
  struct btf* btf = btf__load_vmlinux_btf();
  REQUIRE(libbpf_get_error(btf) == 0);
  REQUIRE(mapped->typeCount() == btf__type_cnt(btf) - 1);

  int typedefs = 0, args = 0, pointers = 0;
  for (uint32_t id = 1; id < btf__type_cnt(btf); ++id) {
    const struct btf_type* t = btf__type_by_id(btf, id);
    std::string name = btf__name_by_offset(btf, t->name_off);
    if (!btf_is_typedef(t) || name.rfind("btf_trace_", 0) != 0) {
      continue;
    }
    ++typedefs;
    INFO(name);
    CHECK(mapped->find(name, BTF_KIND_TYPEDEF) ==
          static_cast<uint32_t>(btf__find_by_name_kind(btf, name.c_str(), BTF_KIND_TYPEDEF)));
    std::string tp = name.substr(strlen("btf_trace_"));
    for (int arg = 0; arg < 8; ++arg) {
      bool want = libbpfArgIsPointer(btf, id, arg);
      CHECK(mapped->tracepointArgIsPointer(tp, arg) == want);
      ++args;
      pointers += want ? 1 : 0;
    }
  }
  // The kernel has hundreds of BTF tracepoints; some arguments are pointers, some are not.
  CHECK(typedefs > 100);
  CHECK(pointers > 0);
  CHECK(pointers < args);
  CHECK(mapped->tracepointArgIsPointer("sched_switch", 1));        // struct task_struct *prev
  CHECK_FALSE(mapped->tracepointArgIsPointer("sched_switch", 0));  // bool preempt
  CHECK(mapped->find("no_such_type_in_any_kernel", BTF_KIND_STRUCT) == 0);
  CHECK_FALSE(mapped->tracepointArgIsPointer("no_such_tracepoint", 0));
  btf__free(btf);
}

TEST_CASE("the feature probes answer the same through the mapping as through libbpf") {
  const char* names[] = {"sched_switch", "sys_enter", "inet_sock_set_state", "mark_victim",
                         "no_such_tracepoint"};
  for (const char* n : names) {
    INFO(n);
    bool direct = libbpf_find_vmlinux_btf_id(n, BPF_TRACE_RAW_TP) > 0;  // no scope: libbpf
    VmlinuxBtfScope scope;
    CHECK(haveBtfTracepoint(n) == direct);
    auto is_ptr = tracepointArgIsPointer(n, 0);
    REQUIRE(is_ptr.has_value());
    CHECK(*is_ptr == libbpfArgIsPointer(scope.btf(),
                                        btf__find_by_name_kind(
                                            scope.btf(), (std::string("btf_trace_") + n).c_str(),
                                            BTF_KIND_TYPEDEF),
                                        0));
  }
  CHECK_FALSE(tracepointArgIsPointer("sched_switch", 0).has_value());  // outside any scope
}

TEST_CASE("the type and enumerator probes answer the same through the mapping as libbpf") {
  VmlinuxBtfScope scope;
  const struct btf* btf = scope.btf();
  REQUIRE(btf != nullptr);
  for (const char* f : {"bpf_iter_task_file", "tcp_close", "no_such_function_anywhere"}) {
    INFO(f);
    auto mapped = btfHasType(f, BTF_KIND_FUNC);
    REQUIRE(mapped.has_value());
    CHECK(*mapped == (btf__find_by_name_kind(btf, f, BTF_KIND_FUNC) > 0));
  }
  CHECK(btfHasType("bpf_iter_task_file", BTF_KIND_FUNC).value_or(false));
  // Every enumerator of enum bpf_func_id is found, and nothing else is.
  int id = btf__find_by_name_kind(btf, "bpf_func_id", BTF_KIND_ENUM);
  REQUIRE(id > 0);
  const struct btf_type* t = btf__type_by_id(btf, id);
  const struct btf_enum* e = btf_enum(t);
  REQUIRE(btf_vlen(t) > 100);
  for (int i = 0; i < btf_vlen(t); ++i) {
    std::string name = btf__name_by_offset(btf, e[i].name_off);
    INFO(name);
    CHECK(btfEnumHasValue("bpf_func_id", name).value_or(false));
  }
  CHECK(btfEnumHasValue("bpf_func_id", "BPF_FUNC_sock_from_file").value_or(false));
  CHECK_FALSE(btfEnumHasValue("bpf_func_id", "BPF_FUNC_no_such_helper").value_or(true));
  CHECK_FALSE(btfEnumHasValue("no_such_enum_anywhere", "X").value_or(true));
}

TEST_CASE("MappedBtf refuses what is not BTF") {
  char path[] = "/tmp/vigil-btf-scan-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  const char junk[64] = "not BTF at all";
  REQUIRE(write(fd, junk, sizeof(junk)) == static_cast<ssize_t>(sizeof(junk)));
  close(fd);
  CHECK(MappedBtf::open(path) == nullptr);
  unlink(path);
  CHECK(MappedBtf::open("/nonexistent/vigil/btf") == nullptr);
}

}  // namespace
}  // namespace vigil::compat

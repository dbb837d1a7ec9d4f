#include "userspace/collectors/core_btf_objects.h"

// The skeletons' map value types come from the wire headers, included first as the
// collectors do.
#include "block/block.h"
#include "net/net.h"
#include "process/process.h"
#include "sched/sched.h"
#include "syscalls/syscalls.h"
// clang-format off
#include "block.skel.h"
#include "net.skel.h"
#include "process.skel.h"
#include "sched.skel.h"
#include "syscalls.skel.h"
// clang-format on

namespace vigil {
namespace {

template <typename Skel>
compat::BpfObjectImage image(const char* name) {
  compat::BpfObjectImage o;
  o.name = name;
  o.data = Skel::elf_bytes(&o.size);
  return o;
}

}  // namespace

std::vector<compat::BpfObjectImage> collectorBpfObjects() {
  return {image<sched_bpf>("sched"), image<syscalls_bpf>("syscalls"), image<block_bpf>("block"),
          image<process_bpf>("process"), image<net_bpf>("net")};
}

}  // namespace vigil

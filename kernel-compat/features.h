// Load-time feature probes. Collectors ask these before loading a BPF object and switch off
// (bpf_program__set_autoload(false)) the programs whose attach type the kernel lacks. Every
// probe tests for the feature itself, never for a kernel version.
#pragma once

#include <optional>
#include <string>

struct btf;

namespace vigil::compat {

// Kernel BTF is present (/sys/kernel/btf/vmlinux), so CO-RE and tp_btf can work.
bool haveKernelBtf();

// A BTF-typed raw tracepoint named `tracepoint` (e.g. "sched_switch") exists, so a tp_btf
// program can attach to it.
bool haveBtfTracepoint(const std::string& tracepoint);

// While at least one scope is alive, vmlinux BTF is parsed once and shared: haveBtfTracepoint()
// then looks names up in it instead of parsing all of /sys/kernel/btf/vmlinux per call (~10 ms
// each, the bulk of a collector's start-up). Name lookups walk an mmap of the file where the
// kernel allows it (compat::MappedBtf, ~1 ms); libbpf parses it only when btf() is asked for or
// the mapping fails, at the first use, not when the scope opens. Freed when the last scope
// ends. Collectors open one in create().
class VmlinuxBtfScope {
 public:
  VmlinuxBtfScope();
  ~VmlinuxBtfScope();
  VmlinuxBtfScope(const VmlinuxBtfScope&) = delete;
  VmlinuxBtfScope& operator=(const VmlinuxBtfScope&) = delete;
  // The shared vmlinux BTF, or nullptr when the kernel has none.
  const ::btf* btf() const;
};

// Inside a VmlinuxBtfScope, on kernels that let /sys/kernel/btf/vmlinux be mapped (6.16+):
// whether argument `arg` (0 = the first after the context) of the BTF-typed tracepoint is a
// pointer (false when the tracepoint or the argument is missing), read from the mapping without
// a parse (compat::MappedBtf). std::nullopt otherwise: the caller parses with libbpf.
std::optional<bool> tracepointArgIsPointer(const std::string& tracepoint, int arg);

// Inside a VmlinuxBtfScope, where the file can be mapped (see above): whether vmlinux BTF has a
// type of BTF kind `kind` named `name`, and whether the enum `enum_name` has the enumerator
// `value`. std::nullopt otherwise: the caller asks VmlinuxBtfScope::btf().
std::optional<bool> btfHasType(const std::string& name, int kind);
std::optional<bool> btfEnumHasValue(const std::string& enum_name, const std::string& value);

// The kernel supports BPF ring buffers (5.8+); otherwise events need a perf buffer.
bool haveRingBuffer();

// Where tracefs is mounted ("" when it is not). SEC("tracepoint/...") programs need it.
std::string tracefsMount();

// Mounts tracefs at /sys/kernel/tracing if no tracefs is mounted. Returns the mount point or ""
// when it cannot (no privilege, no tracefs in the kernel).
std::string ensureTracefs();

// A classic tracepoint category/name exists (needs tracefs).
bool haveTracepoint(const std::string& category, const std::string& name);

}  // namespace vigil::compat

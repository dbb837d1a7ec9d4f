// A read-only view of the kernel's BTF through mmap(/sys/kernel/btf/vmlinux) (Linux 6.16+), for
// the few name lookups the feature probes make. Parsing the file with libbpf copies 5.5 MB twice
// (read() into a buffer, then btf__new's own copy) and costs ~9 ms of page faults; walking the
// mapping costs ~1 ms and allocates only an offset per type. Used by VmlinuxBtfScope's lookups;
// where the file cannot be mapped (older kernels) open() returns nullptr and callers fall back to
// libbpf. Layout: include/uapi/linux/btf.h and Documentation/bpf/btf.rst of the kernel.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace vigil::compat {

class MappedBtf {
 public:
  // nullptr when the file cannot be mapped or is not native-endian BTF with known kinds.
  static std::unique_ptr<MappedBtf> open(const char* path = "/sys/kernel/btf/vmlinux");
  ~MappedBtf();
  MappedBtf(const MappedBtf&) = delete;
  MappedBtf& operator=(const MappedBtf&) = delete;

  // Id of the first type named `name` with BTF kind `kind` (BTF_KIND_*), 0 when there is none.
  uint32_t find(absl::string_view name, int kind) const;

  // Whether argument `arg` (0 = the first after the context) of the BTF-typed tracepoint `tp`
  // is a pointer, after typedefs and qualifiers: the prototype that typedef btf_trace_<tp>
  // points to, as libbpf and the kernel resolve tp_btf targets. False when the typedef or its
  // prototype is missing or has fewer arguments.
  bool tracepointArgIsPointer(const std::string& tp, int arg) const;

  // Whether the enum (BTF_KIND_ENUM) named `enum_name` has an enumerator named `value`.
  bool enumHasValue(absl::string_view enum_name, absl::string_view value) const;

  size_t typeCount() const { return offsets_.size(); }

 private:
  MappedBtf() = default;
  struct Type {
    uint32_t name_off, info, size_or_type;
  };
  const Type* type(uint32_t id) const;  // nullptr for id 0 (void) or out of range
  absl::string_view name(uint32_t off) const;
  // Follows typedefs and qualifiers (const, volatile, restrict, type tags); 0 for void.
  uint32_t resolve(uint32_t id) const;

  void* map_ = nullptr;
  size_t map_len_ = 0;
  const uint8_t* types_ = nullptr;
  const char* strs_ = nullptr;
  uint32_t str_len_ = 0;
  std::vector<uint32_t> offsets_;  // offsets_[id - 1]: offset of type id in types_
};

}  // namespace vigil::compat

// A small BTF file holding only the kernel types vigil's BPF objects relocate against (CO-RE),
// cached on disk and handed to libbpf as bpf_object_open_opts.btf_custom_path.
//
// Why: for each local type a program relocates against, libbpf scans every type of vmlinux BTF
// (~126k on 6.18) for candidates with the same name, ~0.7 ms per type; `vigil trace tcp`
// relocates nine, a third of its start-up. Against a BTF of a few hundred types the search is
// free. This is the idea of bpftool's `gen min_core_btf` (BTFGen), built here at run time from
// /sys/kernel/btf/vmlinux so no tool or file has to ship with vigil.
//
// What the subset keeps, so that every relocation resolves exactly as against vmlinux:
//  - every vmlinux type whose name (without a ___flavour suffix) is the name of a CO-RE root
//    type of one of the objects (libbpf's candidate rule, relo_core.c), complete: all members
//    with their names, bit offsets and bitfield sizes, the struct sizes, enum values;
//  - everything such a type contains by value (embedded structs and unions, arrays, ints,
//    enums, typedefs, modifiers), complete, so nested field accesses and field sizes match;
//  - for pointers, the pointee's kind and name only: a struct or union reached through a pointer
//    (and not a root) becomes an empty struct of the same name and size. libbpf never looks
//    behind a pointer when it matches fields (bpf_core_fields_are_compat), and type-existence
//    checks stop at structs (bpf_core_types_are_compat), so nothing it compares changes.
// Objects using bpf_core_type_id_kernel() are refused: their result is a type id, which would be
// the subset's, not the kernel's.
//
// The cache file is keyed by the kernel (release, version string, size of its BTF) and a hash of
// the objects' bytes, so a new kernel or a new vigil never reads a stale file. It is written
// atomically (temporary file, then rename), in a directory owned by the user and closed to
// others, and checked before use (owner, mode, parse, a marker type carrying the key).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct btf;
struct bpf_object_open_opts;

namespace vigil::compat {

// A BPF object as its skeleton embeds it (bpftool's elf_bytes()).
struct BpfObjectImage {
  std::string name;
  const void* data = nullptr;
  size_t size = 0;
};

// The names of the types the object's CO-RE relocations are rooted at (from .BTF.ext and .BTF
// of the ELF image), ___flavour suffixes removed. An error for an image that is not a BPF ELF
// object with BTF, or that asks for kernel type ids (see above).
absl::StatusOr<std::vector<std::string>> coreRootNames(const BpfObjectImage& object);

// The subset of `vmlinux` described above for these root names, as raw BTF, with an empty
// struct named `marker` added (it carries the cache key). types_out: the number of types.
absl::StatusOr<std::string> buildCoreBtf(const ::btf* vmlinux,
                                         const std::vector<std::string>& roots,
                                         const std::string& marker, size_t* types_out = nullptr);

class CoreBtfCache {
 public:
  // dir: where files go; "" picks the default: $VIGIL_BTF_CACHE_DIR if set, else
  // /var/cache/vigil/btf for root, else $XDG_CACHE_HOME/vigil/btf (~/.cache/vigil/btf).
  // VIGIL_BTF_CACHE_DIR=off disables the cache.
  explicit CoreBtfCache(std::vector<BpfObjectImage> objects, std::string dir = "");

  bool disabled() const { return dir_.empty(); }
  const std::string& dir() const { return dir_; }
  // The file for this kernel and these objects (whether or not it exists yet).
  const std::string& path() const { return path_; }

  // The cache file, checked (owner, mode, parse, marker); an error says why it is not usable
  // (NotFound when it simply does not exist yet).
  absl::StatusOr<std::string> usablePath() const;

  // Builds the subset from /sys/kernel/btf/vmlinux and writes it atomically (no-op when a usable
  // file is already there). Costs one vmlinux BTF parse (~3-10 ms).
  absl::Status build() const;

 private:
  std::vector<BpfObjectImage> objects_;
  std::string dir_;
  std::string key_;  // 16 hex digits
  std::string path_;
};

// The path collectors pass as btf_custom_path: nullptr (libbpf's default, full vmlinux BTF)
// unless a caller set one. The agent never sets it; `vigil` does when its cache is usable.
const char* coreBtfPath();
void setCoreBtfPath(const std::string& path);  // "" switches back to the default

// Open options for a skeleton's open(): btf_custom_path = coreBtfPath(), or nullptr (libbpf's
// defaults) when no path is set. Valid until the next call on the same thread.
const bpf_object_open_opts* coreBtfOpenOpts();

}  // namespace vigil::compat

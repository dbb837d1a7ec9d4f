#include "kernel-compat/features.h"

#include "kernel-compat/btf_scan.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>

namespace vigil::compat {

bool haveKernelBtf() { return access("/sys/kernel/btf/vmlinux", R_OK) == 0; }

namespace {

std::mutex g_btf_mu;
::btf* g_btf = nullptr;    // guarded by g_btf_mu
int g_btf_scopes = 0;      // guarded by g_btf_mu
bool g_btf_tried = false;  // guarded by g_btf_mu: a parse was attempted in the current scopes
std::unique_ptr<MappedBtf> g_mapped;  // guarded by g_btf_mu
bool g_mapped_tried = false;          // guarded by g_btf_mu

}  // namespace

namespace {

// Kernels from 6.16 on let /sys/kernel/btf/vmlinux be mapped. Parsing from the mapping skips
// libbpf's read() of the whole file into a buffer that btf__new() then copies again: half the
// page faults, ~4 ms of a ~9 ms parse. Older kernels refuse the mmap; libbpf's loader is used.
::btf* loadVmlinuxBtf() {
  int fd = open("/sys/kernel/btf/vmlinux", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      size_t size = static_cast<size_t>(st.st_size);
      void* data = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data != MAP_FAILED) {
        ::btf* b = btf__new(data, size);  // copies the data
        munmap(data, size);
        if (libbpf_get_error(b) == 0) {
          close(fd);
          return b;
        }
      }
    }
    close(fd);
  }
  return btf__load_vmlinux_btf();
}

// The shared BTF, parsed on first use inside a scope (a collector that ends up asking nothing,
// e.g. one told to use raw_tp, parses nothing). Needs g_btf_mu held.
::btf* sharedBtfLocked() {
  if (g_btf_scopes > 0 && !g_btf_tried) {
    g_btf_tried = true;
    if (haveKernelBtf()) {
      g_btf = loadVmlinuxBtf();
      if (libbpf_get_error(g_btf) != 0) {
        g_btf = nullptr;
      }
    }
  }
  return g_btf;
}

// The mapped BTF for name lookups inside a scope (nullptr where the kernel does not allow the
// mapping). Needs g_btf_mu held.
const MappedBtf* mappedBtfLocked() {
  if (g_btf_scopes > 0 && !g_mapped_tried) {
    g_mapped_tried = true;
    g_mapped = MappedBtf::open();
  }
  return g_mapped.get();
}

}  // namespace

VmlinuxBtfScope::VmlinuxBtfScope() {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  ++g_btf_scopes;
}

VmlinuxBtfScope::~VmlinuxBtfScope() {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  if (--g_btf_scopes == 0) {
    if (g_btf != nullptr) {
      btf__free(g_btf);
      g_btf = nullptr;
    }
    g_btf_tried = false;
    g_mapped.reset();
    g_mapped_tried = false;
  }
}

const ::btf* VmlinuxBtfScope::btf() const {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  return sharedBtfLocked();
}

bool haveBtfTracepoint(const std::string& tracepoint) {
  if (!haveKernelBtf()) {
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(g_btf_mu);
    if (const MappedBtf* m = mappedBtfLocked()) {
      return m->find("btf_trace_" + tracepoint, BTF_KIND_TYPEDEF) > 0;
    }
    if (sharedBtfLocked() != nullptr) {
      // The same lookup libbpf_find_vmlinux_btf_id does for BPF_TRACE_RAW_TP.
      return btf__find_by_name_kind(g_btf, ("btf_trace_" + tracepoint).c_str(), BTF_KIND_TYPEDEF) >
             0;
    }
  }
  // libbpf resolves tp_btf targets through the "btf_trace_<name>" typedef in vmlinux BTF.
  return libbpf_find_vmlinux_btf_id(tracepoint.c_str(), BPF_TRACE_RAW_TP) > 0;
}

std::optional<bool> tracepointArgIsPointer(const std::string& tracepoint, int arg) {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  if (const MappedBtf* m = mappedBtfLocked()) {
    return m->tracepointArgIsPointer(tracepoint, arg);
  }
  return std::nullopt;
}

std::optional<bool> btfHasType(const std::string& name, int kind) {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  if (const MappedBtf* m = mappedBtfLocked()) {
    return m->find(name, kind) > 0;
  }
  return std::nullopt;
}

std::optional<bool> btfEnumHasValue(const std::string& enum_name, const std::string& value) {
  std::lock_guard<std::mutex> lock(g_btf_mu);
  if (const MappedBtf* m = mappedBtfLocked()) {
    return m->enumHasValue(enum_name, value);
  }
  return std::nullopt;
}

bool haveRingBuffer() { return libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) == 1; }

std::string tracefsMount() {
  std::ifstream mounts("/proc/self/mounts");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream fields(line);
    std::string dev, dir, type;
    fields >> dev >> dir >> type;
    if (type == "tracefs") {
      return dir;
    }
  }
  return "";
}

std::string ensureTracefs() {
  std::string mounted = tracefsMount();
  if (!mounted.empty()) {
    return mounted;
  }
  const char* dir = "/sys/kernel/tracing";
  if (mount("nodev", dir, "tracefs", 0, nullptr) != 0) {
    return "";
  }
  return dir;
}

bool haveTracepoint(const std::string& category, const std::string& name) {
  std::string root = tracefsMount();
  if (root.empty()) {
    return false;
  }
  struct stat st;
  return stat((root + "/events/" + category + "/" + name + "/id").c_str(), &st) == 0;
}

}  // namespace vigil::compat

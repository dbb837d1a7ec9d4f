#include "kernel-compat/core_btf.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <elf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/btf.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace vigil::compat {
namespace {

// Bumped when the subset's rules change, so older files are not reused.
constexpr uint64_t kFormatVersion = 2;

struct BtfDeleter {
  void operator()(::btf* b) const { btf__free(b); }
};
using BtfPtr = std::unique_ptr<::btf, BtfDeleter>;

// libbpf's bpf_core_essential_name_len() (relo_core.c): the name up to an "X___Y" flavour
// separator, where X and Y are not underscores.
std::string essentialName(absl::string_view name) {
  for (int i = static_cast<int>(name.size()) - 5; i >= 0; --i) {
    if (name[i] != '_' && name[i + 1] == '_' && name[i + 2] == '_' && name[i + 3] == '_' &&
        name[i + 4] != '_') {
      return std::string(name.substr(0, i + 1));
    }
  }
  return std::string(name);
}

// A section of a 64-bit little-endian ELF image by name; empty when absent or out of bounds.
absl::string_view elfSection(const BpfObjectImage& o, absl::string_view want) {
  const auto* base = static_cast<const uint8_t*>(o.data);
  if (o.size < sizeof(Elf64_Ehdr)) {
    return {};
  }
  Elf64_Ehdr eh;
  memcpy(&eh, base, sizeof(eh));
  if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shoff > o.size ||
      (o.size - eh.e_shoff) / sizeof(Elf64_Shdr) < eh.e_shnum || eh.e_shstrndx >= eh.e_shnum) {
    return {};
  }
  auto shdr = [&](size_t i) {
    Elf64_Shdr sh;
    memcpy(&sh, base + eh.e_shoff + i * sizeof(Elf64_Shdr), sizeof(sh));
    return sh;
  };
  Elf64_Shdr strs = shdr(eh.e_shstrndx);
  if (strs.sh_offset > o.size || strs.sh_size > o.size - strs.sh_offset) {
    return {};
  }
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh = shdr(i);
    if (sh.sh_name >= strs.sh_size || sh.sh_type == SHT_NOBITS) {
      continue;
    }
    const char* n = reinterpret_cast<const char*>(base + strs.sh_offset + sh.sh_name);
    size_t max = strs.sh_size - sh.sh_name;
    if (absl::string_view(n, strnlen(n, max)) != want) {
      continue;
    }
    if (sh.sh_offset > o.size || sh.sh_size > o.size - sh.sh_offset) {
      return {};
    }
    return absl::string_view(reinterpret_cast<const char*>(base + sh.sh_offset), sh.sh_size);
  }
  return {};
}

uint32_t readU32(absl::string_view s, size_t off) {
  uint32_t v;
  memcpy(&v, s.data() + off, sizeof(v));
  return v;
}

// A stable 64-bit hash (FNV-1a over 8-byte words, then the tail bytes).
class KeyHash {
 public:
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      mix(w);
    }
    for (; i < n; ++i) {
      mix(p[i]);
    }
    mix(n);
  }
  void add(absl::string_view s) { add(s.data(), s.size()); }
  uint64_t value() const { return h_; }

 private:
  void mix(uint64_t w) {
    h_ ^= w;
    h_ *= 0x100000001b3ULL;
    h_ ^= h_ >> 29;
  }
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

// Which copy of a type the subset holds: complete, or as seen through a pointer (structs and
// unions then become empty structs of the same name and size).
enum Variant : int { kFull = 0, kViaPointer = 1 };

class SubsetBuilder {
 public:
  explicit SubsetBuilder(const ::btf* src) : src_(src) {}

  void addRoot(uint32_t id) { want(id, kFull); }

  absl::StatusOr<std::string> finish(const std::string& marker, size_t* types_out) {
    while (!queue_.empty()) {
      auto [id, v] = queue_.front();
      queue_.pop_front();
      visit(id, v);
    }
    // A copy seen through a pointer is dropped where the complete copy exists (references go
    // to the complete one), so each name has one candidate, as in vmlinux. New ids follow the
    // order of the kept nodes, from 1.
    uint32_t next = 1;
    for (const auto& key : nodes_) {
      if (key.second == kViaPointer && ids_.contains(std::make_pair(key.first, kFull))) {
        continue;
      }
      final_[key] = next++;
    }
    BtfPtr out(btf__new_empty());
    if (out == nullptr) {
      return absl::InternalError("btf__new_empty failed");
    }
    for (const auto& key : nodes_) {
      auto it = final_.find(key);
      if (it == final_.end()) {
        continue;
      }
      int id = emit(out.get(), key.first, key.second);
      if (id != static_cast<int>(it->second)) {
        return absl::InternalError(
            absl::StrCat("core BTF: adding type ", key.first, " failed (", id, ")"));
      }
    }
    if (!marker.empty() && btf__add_struct(out.get(), marker.c_str(), 0) < 0) {
      return absl::InternalError("core BTF: adding the marker type failed");
    }
    uint32_t size = 0;
    const void* raw = btf__raw_data(out.get(), &size);
    if (raw == nullptr) {
      return absl::InternalError("core BTF: btf__raw_data failed");
    }
    if (types_out != nullptr) {
      *types_out = btf__type_cnt(out.get()) - 1;
    }
    return std::string(static_cast<const char*>(raw), size);
  }

 private:
  static bool isComposite(const btf_type* t) { return btf_is_struct(t) || btf_is_union(t); }

  // Records that (id, variant) is needed. Variants other than structs, unions and the
  // typedefs/modifiers on the way to one are the same as the complete copy.
  void want(uint32_t id, Variant v) {
    if (id == 0) {
      return;
    }
    const btf_type* t = btf__type_by_id(src_, id);
    if (t == nullptr) {
      return;
    }
    if (v == kViaPointer && !isComposite(t) && !btf_is_mod(t) && !btf_is_typedef(t)) {
      v = kFull;
    }
    auto key = std::make_pair(id, v);
    if (ids_.contains(key)) {
      return;
    }
    nodes_.push_back(key);
    ids_[key] = static_cast<uint32_t>(nodes_.size());
    queue_.push_back(key);
  }

  void visit(uint32_t id, Variant v) {
    const btf_type* t = btf__type_by_id(src_, id);
    switch (btf_kind(t)) {
      case BTF_KIND_PTR:
        want(t->type, kViaPointer);
        break;
      case BTF_KIND_TYPEDEF:
      case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST:
      case BTF_KIND_RESTRICT:
      case BTF_KIND_TYPE_TAG:
        want(t->type, v);
        break;
      case BTF_KIND_ARRAY:
        want(btf_array(t)->type, kFull);
        want(btf_array(t)->index_type, kFull);
        break;
      case BTF_KIND_STRUCT:
      case BTF_KIND_UNION:
        if (v == kFull) {
          const btf_member* m = btf_members(t);
          for (int i = 0; i < btf_vlen(t); ++i) {
            want(m[i].type, kFull);
          }
        }
        break;
      case BTF_KIND_FUNC_PROTO: {
        want(t->type, kFull);
        const btf_param* p = btf_params(t);
        for (int i = 0; i < btf_vlen(t); ++i) {
          want(p[i].type, kFull);
        }
        break;
      }
      default:
        break;  // INT, FLOAT, ENUM, ENUM64, FWD: no references
    }
  }

  // The new id of a referenced type: the complete copy when there is one, else the variant
  // asked for.
  uint32_t ref(uint32_t id, Variant v) const {
    if (id == 0) {
      return 0;
    }
    auto full = final_.find(std::make_pair(id, kFull));
    if (full != final_.end()) {
      return full->second;
    }
    auto it = final_.find(std::make_pair(id, v));
    return it != final_.end() ? it->second : 0;
  }

  const char* name(const btf_type* t) const { return btf__name_by_offset(src_, t->name_off); }

  int emit(::btf* out, uint32_t id, Variant v) {
    const btf_type* t = btf__type_by_id(src_, id);
    const char* n = name(t);
    switch (btf_kind(t)) {
      case BTF_KIND_INT:
      case BTF_KIND_FLOAT:
      case BTF_KIND_ENUM:
      case BTF_KIND_ENUM64:
      case BTF_KIND_FWD:
        return btf__add_type(out, src_, t);  // no type references: copied as is
      case BTF_KIND_PTR:
        return btf__add_ptr(out, ref(t->type, kViaPointer));
      case BTF_KIND_TYPEDEF:
        return btf__add_typedef(out, n, ref(t->type, v));
      case BTF_KIND_VOLATILE:
        return btf__add_volatile(out, ref(t->type, v));
      case BTF_KIND_CONST:
        return btf__add_const(out, ref(t->type, v));
      case BTF_KIND_RESTRICT:
        return btf__add_restrict(out, ref(t->type, v));
      case BTF_KIND_TYPE_TAG:
        return btf__add_type_tag(out, n, ref(t->type, v));
      case BTF_KIND_ARRAY: {
        const struct btf_array* a = btf_array(t);
        return btf__add_array(out, ref(a->index_type, kFull), ref(a->type, kFull), a->nelems);
      }
      case BTF_KIND_STRUCT:
      case BTF_KIND_UNION: {
        int nid =
            btf_is_struct(t) ? btf__add_struct(out, n, t->size) : btf__add_union(out, n, t->size);
        if (nid < 0 || v != kFull) {
          return nid;
        }
        const btf_member* m = btf_members(t);
        for (int i = 0; i < btf_vlen(t); ++i) {
          int err =
              btf__add_field(out, btf__name_by_offset(src_, m[i].name_off), ref(m[i].type, kFull),
                             btf_member_bit_offset(t, i), btf_member_bitfield_size(t, i));
          if (err < 0) {
            return err;
          }
        }
        return nid;
      }
      case BTF_KIND_FUNC_PROTO: {
        int nid = btf__add_func_proto(out, ref(t->type, kFull));
        if (nid < 0) {
          return nid;
        }
        const btf_param* p = btf_params(t);
        for (int i = 0; i < btf_vlen(t); ++i) {
          int err = btf__add_func_param(out, btf__name_by_offset(src_, p[i].name_off),
                                        ref(p[i].type, kFull));
          if (err < 0) {
            return err;
          }
        }
        return nid;
      }
      default:
        // FUNC, VAR, DATASEC, DECL_TAG are never roots nor referenced by the kinds above; keep
        // the numbering with a placeholder (an int) should the kernel add a kind we miss.
        return btf__add_int(out, "__vigil_unknown_kind", 1, 0);
    }
  }

  const ::btf* src_;
  std::vector<std::pair<uint32_t, Variant>> nodes_;
  absl::flat_hash_map<std::pair<uint32_t, Variant>, uint32_t> ids_;    // index in nodes_ + 1
  absl::flat_hash_map<std::pair<uint32_t, Variant>, uint32_t> final_;  // id in the subset
  std::deque<std::pair<uint32_t, Variant>> queue_;
};

// Checks that `path` is a regular file or directory owned by us and writable by nobody else.
absl::Status checkPrivate(const std::string& path, bool dir) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    int e = errno;
    if (e == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, " does not exist"));
    }
    return absl::UnavailableError(absl::StrCat(path, ": ", strerror(e)));
  }
  if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a ", dir ? "directory" : "regular file"));
  }
  if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, " is not owned by this user or is writable by others; not trusted"));
  }
  return absl::OkStatus();
}

absl::Status mkdirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      cur = dir.substr(0, i);
      if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) {
        return absl::UnavailableError(absl::StrCat("mkdir ", cur, ": ", strerror(errno)));
      }
    }
  }
  return absl::OkStatus();
}

std::string defaultDir() {
  const char* env = getenv("VIGIL_BTF_CACHE_DIR");
  if (env != nullptr && env[0] != '\0') {
    return strcmp(env, "off") == 0 ? "" : env;
  }
  if (geteuid() == 0) {
    return "/var/cache/vigil/btf";
  }
  const char* xdg = getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') {
    return absl::StrCat(xdg, "/vigil/btf");
  }
  const char* home = getenv("HOME");
  if (home != nullptr && home[0] == '/') {
    return absl::StrCat(home, "/.cache/vigil/btf");
  }
  return "";
}

constexpr char kVmlinuxPath[] = "/sys/kernel/btf/vmlinux";

std::mutex g_path_mu;
std::string g_path;

}  // namespace

absl::StatusOr<std::vector<std::string>> coreRootNames(const BpfObjectImage& object) {
  absl::string_view btf_sec = elfSection(object, ".BTF");
  absl::string_view ext = elfSection(object, ".BTF.ext");
  if (btf_sec.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(object.name, ": no .BTF section"));
  }
  std::vector<std::string> names;
  if (ext.empty()) {
    return names;  // no relocations at all
  }
  BtfPtr local(btf__new(btf_sec.data(), btf_sec.size()));
  if (local == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(object.name, ": .BTF does not parse"));
  }
  // struct btf_ext_header (libbpf's libbpf_internal.h; Documentation/bpf/btf.rst, ".BTF.ext
  // section"): magic u16, version u8, flags u8, hdr_len, func_info_off/len, line_info_off/len,
  // then core_relo_off/len when hdr_len covers them; offsets count from the header's end.
  if (ext.size() < 32 || (readU32(ext, 0) & 0xffffff) != (0xeB9Fu | (1u << 16))) {
    // magic 0xeB9F and version 1 in the low three bytes of the first little-endian word
    return absl::InvalidArgumentError(absl::StrCat(object.name, ": unknown .BTF.ext header"));
  }
  uint32_t hdr_len = readU32(ext, 4);
  if (hdr_len < 32) {
    return names;  // no CO-RE section
  }
  uint64_t off = uint64_t{hdr_len} + readU32(ext, 24);
  uint64_t len = readU32(ext, 28);
  if (hdr_len > ext.size() || off > ext.size() || len > ext.size() - off) {
    return absl::InvalidArgumentError(absl::StrCat(object.name, ": .BTF.ext out of bounds"));
  }
  absl::string_view relos = ext.substr(off, len);
  if (relos.size() < 4) {
    return names;
  }
  // u32 record size, then per ELF section {u32 sec_name_off; u32 num_info; records}, each
  // record a struct bpf_core_relo {insn_off, type_id, access_str_off, kind} (uapi/linux/bpf.h).
  uint32_t rec = readU32(relos, 0);
  if (rec < sizeof(bpf_core_relo)) {
    return absl::InvalidArgumentError(absl::StrCat(object.name, ": CO-RE record too small"));
  }
  std::set<std::string> seen;
  size_t p = 4;
  while (p + 8 <= relos.size()) {
    uint32_t n = readU32(relos, p + 4);
    p += 8;
    if (n > (relos.size() - p) / rec) {
      return absl::InvalidArgumentError(absl::StrCat(object.name, ": CO-RE section truncated"));
    }
    for (uint32_t i = 0; i < n; ++i, p += rec) {
      bpf_core_relo r;
      memcpy(&r, relos.data() + p, sizeof(r));
      if (r.kind == BPF_CORE_TYPE_ID_TARGET) {
        return absl::FailedPreconditionError(
            absl::StrCat(object.name,
                         " asks for kernel type ids (bpf_core_type_id_kernel); a subset BTF "
                         "cannot serve it"));
      }
      const btf_type* t = btf__type_by_id(local.get(), r.type_id);
      if (t == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(object.name, ": bad CO-RE type id"));
      }
      const char* n2 = btf__name_by_offset(local.get(), t->name_off);
      if (n2 != nullptr && n2[0] != '\0') {
        seen.insert(essentialName(n2));
      }
    }
  }
  names.assign(seen.begin(), seen.end());
  return names;
}

absl::StatusOr<std::string> buildCoreBtf(const ::btf* vmlinux,
                                         const std::vector<std::string>& roots,
                                         const std::string& marker, size_t* types_out) {
  absl::flat_hash_set<std::string> want(roots.begin(), roots.end());
  SubsetBuilder b(vmlinux);
  uint32_t n = btf__type_cnt(vmlinux);
  for (uint32_t id = 1; id < n; ++id) {
    const btf_type* t = btf__type_by_id(vmlinux, id);
    switch (btf_kind(t)) {
      case BTF_KIND_FUNC:
      case BTF_KIND_VAR:
      case BTF_KIND_DATASEC:
      case BTF_KIND_DECL_TAG:
        continue;  // never CO-RE candidates
      default:
        break;
    }
    const char* name = btf__name_by_offset(vmlinux, t->name_off);
    if (name == nullptr || name[0] == '\0') {
      continue;
    }
    if (want.contains(essentialName(name))) {
      b.addRoot(id);
    }
  }
  return b.finish(marker, types_out);
}

CoreBtfCache::CoreBtfCache(std::vector<BpfObjectImage> objects, std::string dir)
    : objects_(std::move(objects)), dir_(dir.empty() ? defaultDir() : std::move(dir)) {
  if (dir_.empty()) {
    return;
  }
  KeyHash h;
  h.add(&kFormatVersion, sizeof(kFormatVersion));
  struct utsname u;
  std::string release = "unknown";
  if (uname(&u) == 0) {
    release = u.release;
    h.add(u.release);
    h.add(u.version);
    h.add(u.machine);
  }
  struct stat st;
  if (stat(kVmlinuxPath, &st) == 0) {
    uint64_t size = st.st_size;
    h.add(&size, sizeof(size));
  }
  for (const BpfObjectImage& o : objects_) {
    h.add(o.name);
    h.add(o.data, o.size);
  }
  key_ = absl::StrFormat("%016x", h.value());
  for (char& c : release) {
    if (c == '/') {
      c = '_';
    }
  }
  path_ = absl::StrCat(dir_, "/core-", release, "-", key_, ".btf");
}

absl::StatusOr<std::string> CoreBtfCache::usablePath() const {
  if (disabled()) {
    return absl::FailedPreconditionError("the BTF cache is off (no cache directory)");
  }
  if (absl::Status st = checkPrivate(dir_, /*dir=*/true); !st.ok()) {
    return st;
  }
  if (absl::Status st = checkPrivate(path_, /*dir=*/false); !st.ok()) {
    return st;
  }
  BtfPtr b(btf__parse_raw(path_.c_str()));
  if (b == nullptr) {
    return absl::DataLossError(absl::StrCat(path_, " does not parse as BTF"));
  }
  if (btf__find_by_name_kind(b.get(), absl::StrCat("vigil_core_btf_", key_).c_str(),
                             BTF_KIND_STRUCT) < 0) {
    return absl::DataLossError(absl::StrCat(path_, " lacks its marker type"));
  }
  return path_;
}

absl::Status CoreBtfCache::build() const {
  if (disabled()) {
    return absl::FailedPreconditionError("the BTF cache is off (no cache directory)");
  }
  if (usablePath().ok()) {
    return absl::OkStatus();
  }
  std::vector<std::string> roots;
  for (const BpfObjectImage& o : objects_) {
    auto names = coreRootNames(o);
    if (!names.ok()) {
      return names.status();
    }
    roots.insert(roots.end(), names->begin(), names->end());
  }
  BtfPtr vmlinux(btf__parse_raw(kVmlinuxPath));
  if (vmlinux == nullptr) {
    return absl::UnavailableError(absl::StrCat(kVmlinuxPath, " does not parse"));
  }
  auto raw = buildCoreBtf(vmlinux.get(), roots, absl::StrCat("vigil_core_btf_", key_));
  if (!raw.ok()) {
    return raw.status();
  }
  if (absl::Status st = mkdirs(dir_); !st.ok()) {
    return st;
  }
  if (absl::Status st = checkPrivate(dir_, /*dir=*/true); !st.ok()) {
    return st;
  }
  std::string tmp = absl::StrCat(path_, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("create ", tmp, ": ", strerror(errno)));
  }
  size_t done = 0;
  while (done < raw->size()) {
    ssize_t w = write(fd, raw->data() + done, raw->size() - done);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      int e = errno;
      close(fd);
      unlink(tmp.c_str());
      return absl::UnavailableError(absl::StrCat("write ", tmp, ": ", strerror(e)));
    }
    done += static_cast<size_t>(w);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    unlink(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("sync ", tmp, ": ", strerror(errno)));
  }
  if (rename(tmp.c_str(), path_.c_str()) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("rename to ", path_, ": ", strerror(e)));
  }
  // Files for other kernels or other vigil builds are of no further use here.
  if (DIR* d = opendir(dir_.c_str()); d != nullptr) {
    std::string mine = path_.substr(dir_.size() + 1);
    while (dirent* e = readdir(d)) {
      absl::string_view n = e->d_name;
      if (n != mine && absl::StartsWith(n, "core-") && absl::EndsWith(n, ".btf")) {
        unlinkat(dirfd(d), e->d_name, 0);
      }
    }
    closedir(d);
  }
  return usablePath().status();
}

const char* coreBtfPath() {
  std::lock_guard<std::mutex> lock(g_path_mu);
  return g_path.empty() ? nullptr : g_path.c_str();
}

void setCoreBtfPath(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_path_mu);
  g_path = path;
}

const bpf_object_open_opts* coreBtfOpenOpts() {
  thread_local std::string path;
  thread_local bpf_object_open_opts opts;
  {
    std::lock_guard<std::mutex> lock(g_path_mu);
    if (g_path.empty()) {
      return nullptr;
    }
    path = g_path;
  }
  memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  opts.btf_custom_path = path.c_str();
  return &opts;
}

}  // namespace vigil::compat

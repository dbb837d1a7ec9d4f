#include "kernel-compat/btf_scan.h"

#include <fcntl.h>
#include <linux/btf.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace vigil::compat {
namespace {

int kindOf(uint32_t info) { return static_cast<int>((info >> 24) & 0x1f); }
uint32_t vlenOf(uint32_t info) { return info & 0xffff; }

// Bytes that follow struct btf_type for a type of this kind, or -1 for a kind this code does
// not know (a newer kernel): the caller then gives up rather than misread the section.
int64_t extraBytes(int kind, uint32_t vlen) {
  switch (kind) {
    case BTF_KIND_INT:
    case BTF_KIND_VAR:
    case BTF_KIND_DECL_TAG:
      return 4;
    case BTF_KIND_PTR:
    case BTF_KIND_FWD:
    case BTF_KIND_TYPEDEF:
    case BTF_KIND_VOLATILE:
    case BTF_KIND_CONST:
    case BTF_KIND_RESTRICT:
    case BTF_KIND_FUNC:
    case BTF_KIND_FLOAT:
    case BTF_KIND_TYPE_TAG:
      return 0;
    case BTF_KIND_ARRAY:
      return sizeof(struct btf_array);
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION:
      return int64_t{vlen} * sizeof(struct btf_member);
    case BTF_KIND_ENUM:
      return int64_t{vlen} * sizeof(struct btf_enum);
    case BTF_KIND_FUNC_PROTO:
      return int64_t{vlen} * sizeof(struct btf_param);
    case BTF_KIND_DATASEC:
      return int64_t{vlen} * sizeof(struct btf_var_secinfo);
    case BTF_KIND_ENUM64:
      return int64_t{vlen} * sizeof(struct btf_enum64);
  }
  return -1;
}

}  // namespace

std::unique_ptr<MappedBtf> MappedBtf::open(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(struct btf_header))) {
    close(fd);
    return nullptr;
  }
  size_t len = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) {
    return nullptr;
  }
  std::unique_ptr<MappedBtf> b(new MappedBtf());
  b->map_ = map;
  b->map_len_ = len;
  struct btf_header hdr;
  memcpy(&hdr, map, sizeof(hdr));
  uint64_t types_at = uint64_t{hdr.hdr_len} + hdr.type_off;
  uint64_t strs_at = uint64_t{hdr.hdr_len} + hdr.str_off;
  if (hdr.magic != BTF_MAGIC || hdr.hdr_len < sizeof(hdr) || types_at + hdr.type_len > len ||
      strs_at + hdr.str_len > len || hdr.type_len % 4 != 0) {
    return nullptr;  // not BTF, or the other byte order
  }
  b->types_ = static_cast<const uint8_t*>(map) + types_at;
  b->strs_ = static_cast<const char*>(map) + strs_at;
  b->str_len_ = hdr.str_len;
  b->offsets_.reserve(hdr.type_len / 16);
  uint64_t off = 0;
  while (off < hdr.type_len) {
    if (off + sizeof(Type) > hdr.type_len) {
      return nullptr;
    }
    Type t;
    memcpy(&t, b->types_ + off, sizeof(t));
    int64_t extra = extraBytes(kindOf(t.info), vlenOf(t.info));
    if (extra < 0) {
      return nullptr;
    }
    b->offsets_.push_back(static_cast<uint32_t>(off));
    off += sizeof(Type) + static_cast<uint64_t>(extra);
  }
  if (off != hdr.type_len) {
    return nullptr;
  }
  return b;
}

MappedBtf::~MappedBtf() {
  if (map_ != nullptr) {
    munmap(map_, map_len_);
  }
}

const MappedBtf::Type* MappedBtf::type(uint32_t id) const {
  if (id == 0 || id > offsets_.size()) {
    return nullptr;
  }
  return reinterpret_cast<const Type*>(types_ + offsets_[id - 1]);
}

absl::string_view MappedBtf::name(uint32_t off) const {
  if (off >= str_len_) {
    return "";
  }
  return absl::string_view(strs_ + off, strnlen(strs_ + off, str_len_ - off));
}

uint32_t MappedBtf::find(absl::string_view want, int kind) const {
  for (uint32_t id = 1; id <= offsets_.size(); ++id) {
    const Type* t = type(id);
    if (kindOf(t->info) == kind && name(t->name_off) == want) {
      return id;
    }
  }
  return 0;
}

uint32_t MappedBtf::resolve(uint32_t id) const {
  for (int depth = 0; depth < 32; ++depth) {
    const Type* t = type(id);
    if (t == nullptr) {
      return 0;
    }
    switch (kindOf(t->info)) {
      case BTF_KIND_TYPEDEF:
      case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST:
      case BTF_KIND_RESTRICT:
      case BTF_KIND_TYPE_TAG:
      case BTF_KIND_VAR:
        id = t->size_or_type;
        continue;
      default:
        return id;
    }
  }
  return 0;
}

bool MappedBtf::tracepointArgIsPointer(const std::string& tp, int arg) const {
  uint32_t id = find("btf_trace_" + tp, BTF_KIND_TYPEDEF);
  if (id == 0) {
    return false;
  }
  const Type* ptr = type(type(id)->size_or_type);
  if (ptr == nullptr || kindOf(ptr->info) != BTF_KIND_PTR) {
    return false;
  }
  uint32_t proto_id = ptr->size_or_type;
  const Type* proto = type(proto_id);
  // Parameter 0 is the context pointer; the tracepoint's own arguments follow.
  if (proto == nullptr || kindOf(proto->info) != BTF_KIND_FUNC_PROTO || arg < 0 ||
      vlenOf(proto->info) < static_cast<uint32_t>(arg) + 2) {
    return false;
  }
  struct btf_param p;
  memcpy(&p, types_ + offsets_[proto_id - 1] + sizeof(Type) + (arg + 1) * sizeof(p), sizeof(p));
  const Type* at = type(resolve(p.type));
  return at != nullptr && kindOf(at->info) == BTF_KIND_PTR;
}

bool MappedBtf::enumHasValue(absl::string_view enum_name, absl::string_view value) const {
  uint32_t id = find(enum_name, BTF_KIND_ENUM);
  if (id == 0) {
    return false;
  }
  uint32_t vlen = vlenOf(type(id)->info);
  const uint8_t* values = types_ + offsets_[id - 1] + sizeof(Type);
  for (uint32_t i = 0; i < vlen; ++i) {
    struct btf_enum e;
    memcpy(&e, values + i * sizeof(e), sizeof(e));
    if (name(e.name_off) == value) {
      return true;
    }
  }
  return false;
}

}  // namespace vigil::compat

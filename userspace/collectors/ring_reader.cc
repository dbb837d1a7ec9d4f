#include "userspace/collectors/ring_reader.h"

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "userspace/collectors/bpf_util.h"

namespace vigil {
namespace {

uint64_t loadAcquire(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(p), __ATOMIC_ACQUIRE);
}

uint32_t loadAcquire32(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const uint32_t*>(p), __ATOMIC_ACQUIRE);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RingReader>> RingReader::open(int map_fd, Callback callback,
                                                             void* ctx) {
  bpf_map_info info = {};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(map_fd, &info, &len) != 0) {
    return bpfError("ring buffer: map info", -errno);
  }
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t size = info.max_entries;
  if (info.type != BPF_MAP_TYPE_RINGBUF || size < page || (size & (size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("ring buffer: map ", info.name,
                                                   " is not a ring buffer of a power-of-two size "
                                                   "(type ",
                                                   info.type, ", ", size, " bytes)"));
  }
  std::unique_ptr<RingReader> r(new RingReader(map_fd, callback, ctx));
  r->page_size_ = page;
  r->data_size_ = size;
  void* cons = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
  if (cons == MAP_FAILED) {
    return bpfError("ring buffer: map the consumer page", -errno);
  }
  r->consumer_page_ = static_cast<uint8_t*>(cons);
  // The producer page and the data once: the kernel accepts a mapping shorter than the two
  // copies it offers.
  void* prod = mmap(nullptr, page + size, PROT_READ, MAP_SHARED, map_fd, static_cast<off_t>(page));
  if (prod == MAP_FAILED) {
    return bpfError("ring buffer: map the data pages", -errno);
  }
  r->producer_area_ = static_cast<uint8_t*>(prod);
  return r;
}

RingReader::~RingReader() {
  if (producer_area_ != nullptr) {
    munmap(producer_area_, page_size_ + data_size_);
  }
  if (consumer_page_ != nullptr) {
    munmap(consumer_page_, page_size_);
  }
}

int RingReader::consume() {
  const uint8_t* data = producer_area_ + page_size_;
  const uint64_t mask = data_size_ - 1;
  uint64_t cons = loadAcquire(consumer_page_);
  int handed = 0;
  for (;;) {
    uint64_t prod = loadAcquire(producer_area_);
    if (cons >= prod) {
      return handed;
    }
    bool progressed = false;
    while (cons < prod) {
      // Headers are 8-byte aligned and the data size a multiple of a page: a header never wraps.
      const uint8_t* hdr = data + (cons & mask);
      uint32_t len = loadAcquire32(hdr);
      if (len & BPF_RINGBUF_BUSY_BIT) {
        break;  // reserved, not committed yet: records after it wait too
      }
      uint32_t size = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
      uint64_t total = (static_cast<uint64_t>(size) + BPF_RINGBUF_HDR_SZ + 7) & ~uint64_t{7};
      if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
        uint64_t start = (cons + BPF_RINGBUF_HDR_SZ) & mask;
        void* sample;
        if (start + size <= data_size_) {
          sample = const_cast<uint8_t*>(data + start);
        } else {
          size_t first = data_size_ - start;
          scratch_.resize(size);
          memcpy(scratch_.data(), data + start, first);
          memcpy(scratch_.data() + first, data, size - first);
          sample = scratch_.data();
          ++wrapped_;
        }
        int rc = callback_(ctx_, sample, size);
        if (rc < 0) {
          // The record is handed over: release it so it is not seen twice.
          __atomic_store_n(reinterpret_cast<uint64_t*>(consumer_page_), cons + total,
                           __ATOMIC_RELEASE);
          return rc;
        }
        ++handed;
      }
      cons += total;
      progressed = true;
      __atomic_store_n(reinterpret_cast<uint64_t*>(consumer_page_), cons, __ATOMIC_RELEASE);
    }
    if (!progressed) {
      return handed;  // the next record is still being written
    }
  }
}

int RingReader::poll(int timeout_ms) {
  if (timeout_ms > 0 && loadAcquire(consumer_page_) >= loadAcquire(producer_area_)) {
    pollfd p = {map_fd_, POLLIN, 0};
    ::poll(&p, 1, timeout_ms);
  }
  return consume();
}

}  // namespace vigil

// Reads a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) with its data pages mapped once.
//
// Why not libbpf's ring_buffer: it maps the data area twice in a row (the kernel offers that so
// a record that wraps past the end reads as one contiguous span), and the kernel maps every page
// of a ring mapping when it is created. Each ring therefore showed as twice its size in the
// agent's RSS from the first second (3 MiB of the agent's ~16 MiB for a 512 KiB and a 1 MiB ring).
// Mapped once, the few records that wrap are copied into a scratch buffer instead. The reading
// protocol itself is the kernel's (kernel/bpf/ringbuf.c, include/uapi/linux/bpf.h): a consumer
// position page (read-write), a producer position page, then the data; each record starts with an
// 8-byte header {u32 len with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page offset}, and
// records are 8-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace vigil {

class RingReader {
 public:
  // Same shape as libbpf's ring_buffer_sample_fn: a negative return stops the current pass and
  // is returned by consume().
  using Callback = int (*)(void* ctx, void* data, size_t size);

  // Maps the ring behind `map_fd` (which stays owned by the caller and must outlive the reader).
  static absl::StatusOr<std::unique_ptr<RingReader>> open(int map_fd, Callback callback, void* ctx);
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Hands every committed record to the callback, in order, and releases their space to the
  // kernel. Returns the number of records handed over, or the callback's negative return.
  int consume();
  // Waits up to timeout_ms (poll(2) on the map) when nothing is committed, then consumes.
  int poll(int timeout_ms);
  // Readable (EPOLLIN) when committed records wait; the kernel signals it per its wakeup rules.
  int fd() const { return map_fd_; }
  // Size of the data area (the map's max_entries).
  size_t dataBytes() const { return data_size_; }
  // Records that wrapped past the end of the data area and were copied to be handed over.
  uint64_t wrappedRecords() const { return wrapped_; }

 private:
  RingReader(int map_fd, Callback callback, void* ctx)
      : map_fd_(map_fd), callback_(callback), ctx_(ctx) {}

  int map_fd_;
  Callback callback_;
  void* ctx_;
  size_t page_size_ = 0;
  size_t data_size_ = 0;  // a power of two
  uint8_t* consumer_page_ = nullptr;
  uint8_t* producer_area_ = nullptr;  // producer position page, then the data pages (once)
  std::vector<uint8_t> scratch_;      // a wrapped record, joined
  uint64_t wrapped_ = 0;
};

}  // namespace vigil

// Giving memory back after a burst. Hash maps and vectors keep the capacity of their largest size
// when entries are erased, so a burst of short-lived processes (1,000 exec/s for a few minutes)
// would leave every per-process table at its peak size for the rest of the agent's life. After
// each collection the agent's tables are shrunk when at most a quarter of their capacity is in
// use; the threshold leaves room for the usual interval-to-interval variation, so a steady
// workload does not rehash on every collection. docs/performance.md ("Footprint") has the figures.
#pragma once

#include <malloc.h>

#include <cstddef>
#include <vector>

namespace vigil {

// Entries below which a table is never shrunk: smaller than that, the slack costs less than
// rehashing does.
inline constexpr size_t kShrinkMinCapacity = 256;

// Shrinks an absl::flat_hash_map/flat_hash_set (anything with capacity() and rehash(0)) whose
// capacity is more than four times what it holds. Returns true if it shrank.
template <typename Table>
bool shrinkTableIfSparse(Table& table) {
  if (table.capacity() <= kShrinkMinCapacity || table.size() * 4 >= table.capacity()) {
    return false;
  }
  table.rehash(0);  // absl: rehash(0) sizes the table for its current contents
  return true;
}

// The same for a vector (its buffer is reallocated at the size it holds).
template <typename T>
bool shrinkVectorIfSparse(std::vector<T>& v) {
  if (v.capacity() <= kShrinkMinCapacity || v.size() * 4 >= v.capacity()) {
    return false;
  }
  v.shrink_to_fit();
  return true;
}

// Returns the free memory of the heap to the kernel. Building and encoding a frame under process
// churn allocates and frees several MiB (processes, events, their Cap'n Proto, packed and zstd
// copies); glibc keeps freed memory in the heap, so without this the agent's RSS would stay at
// the largest frame it ever built. malloc_trim also releases free pages inside the heap, not
// only at its top (glibc >= 2.8); it walks the free lists, well under a millisecond at the
// agent's heap size. Called once per collection, and by the uplink after encoding a large frame.
inline void releaseFreeMemory() { malloc_trim(0); }

// Serves every allocation of 128 KiB or more with its own mmap, returned to the kernel on free.
// glibc's default threshold is dynamic: after the first multi-MiB buffer is freed it rises to
// that size (up to 32 MiB), and from then on such buffers come from the heap, where their freed
// pages stay resident until the next malloc_trim. Under process churn the agent grows and frees
// buffers of several MiB all through the interval (the event buffer doubling, a frame's unpacked
// and predicted words), so with the dynamic threshold RSS held ~40 MiB during a 1,000 exec/s
// churn and ~28 MiB with this fixed one (docs/performance.md, "Footprint"). The cost is an
// mmap/munmap pair per large buffer, a handful per collection. Call once, before allocating.
inline void keepLargeBuffersOutOfHeap() { mallopt(M_MMAP_THRESHOLD, 128 << 10); }

}  // namespace vigil

// Clock readings in nanoseconds, as signed 64-bit integers (the wire's and the maps' unit).
#pragma once

#include <time.h>

#include <cstdint>

namespace vigil {

inline int64_t clockNs(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// CLOCK_MONOTONIC: what bpf_ktime_get_ns() reads, for intervals and kernel timestamps.
inline int64_t monoNs() { return clockNs(CLOCK_MONOTONIC); }

// CLOCK_REALTIME: Unix time, for timestamps that leave the host.
inline int64_t unixNs() { return clockNs(CLOCK_REALTIME); }

// CPU time of the calling thread, in seconds.
inline double threadCpuSeconds() {
  return static_cast<double>(clockNs(CLOCK_THREAD_CPUTIME_ID)) / 1e9;
}

}  // namespace vigil

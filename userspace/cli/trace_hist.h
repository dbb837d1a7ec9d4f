// Helpers shared by `vigil trace` and `vigil hist`: clean stop on SIGINT/SIGTERM, and log2
// histogram arithmetic and rendering (runqlat/biolatency-style ASCII bars, and JSON). Also the
// heap preparation `hist`, `top` and `snapshot` do before loading BPF objects.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "capnp/snapshot.h"

namespace vigil::cli {

// Installs SIGINT and SIGTERM handlers (without SA_RESTART, so blocking polls return EINTR)
// that set a flag read by stopRequested().
void installStopHandlers();
bool stopRequested();
// Sleeps for `d` or until SIGINT/SIGTERM arrives, whichever is first (no window in which a
// signal is missed: the signals are blocked between the check and the wait). Returns
// stopRequested().
bool sleepUnlessStopped(absl::Duration d);

// Prepares the heap for libbpf's parse of vmlinux BTF at load (a 5.5 MB read buffer and a 5.5 MB
// copy, ~2800 page faults: a third of a collector's start-up). Large allocations come from the
// heap instead of fresh mmaps (so a second parse reuses faulted-in memory), and the first 12 MiB
// of it is advised for transparent huge pages (6 faults instead of ~2800, where THP is enabled in
// "madvise" or "always" mode). Call before loading. keep = true (several objects: top,
// snapshot; hist) keeps freed heap memory for the next parse, at ~1-3 MiB of peak RSS; keep =
// false (one object: trace's process kinds) hands it back after the parse, so the peak RSS is
// as without the preparation (`trace exec`: 17.6 -> 10.8 ms to its header, 17 MiB either way).
void prepareHeapForBtf(bool keep = true);

// vigil's cached CO-RE BTF (kernel-compat/core_btf.h) for the commands that load collectors.
// The constructor points the collectors at the cached file for this kernel when it is there and
// sound, so libbpf relocates against a few hundred types instead of searching all of vmlinux
// BTF (~0.7 ms per relocated type). After start-up, finish() builds the file if it was missing
// (the first run on a kernel), off the path to the first output. Any problem means the normal
// path: with --verbose it is printed, and always counted in problems().
class CoreBtfUse {
 public:
  explicit CoreBtfUse(bool verbose);
  ~CoreBtfUse();
  CoreBtfUse(const CoreBtfUse&) = delete;
  CoreBtfUse& operator=(const CoreBtfUse&) = delete;

  bool active() const { return active_; }
  int problems() const { return problems_; }
  // Loading failed while the cached BTF was in use: stop using it and return true (the caller
  // retries once with libbpf's default, the full vmlinux BTF); false when it was not in use.
  bool fallBack(const absl::Status& why);
  // Builds the cache file when it was missing or stale. Idempotent.
  void finish();

  // Runs create() and, if it fails with the cached BTF in use, once more without it.
  template <typename Fn>
  auto create(Fn fn) -> decltype(fn()) {
    auto r = fn();
    if (!r.ok() && fallBack(r.status())) {
      r = fn();
    }
    return r;
  }

 private:
  void note(const std::string& message);
  bool verbose_;
  bool active_ = false;
  bool need_build_ = false;
  int problems_ = 0;
};

// A log2 histogram in nanoseconds-per-unit, as HistogramSample carries it.
struct Log2Hist {
  uint64_t unit_ns = 1000;
  std::vector<uint64_t> buckets;
  uint64_t count = 0;
  uint64_t sum_units = 0;

  // Adds `h` (its unit must match, or this is empty and takes its unit).
  void add(const HistogramSample& h);
  // this - earlier, bucket by bucket (clamped at 0: a counter reset counts from zero).
  Log2Hist minus(const Log2Hist& earlier) const;
};

// Lower bound of bucket i in units: 0 for bucket 0, else 2^i (see wire::Histogram).
uint64_t bucketLow(size_t i);

// runqlat-style text: one line per bucket from the first to the last non-empty one, with the
// range in a readable unit (ns/us/ms/s), the count and a bar scaled to the largest bucket.
std::string renderHist(const Log2Hist& h, const std::string& title);

// {"unit":"us","count":..,"sum":..,"buckets":[{"low":..,"high":..,"count":..},..]}, as one line.
std::string histJson(const Log2Hist& h, const std::string& metric, const std::string& scope);

}  // namespace vigil::cli

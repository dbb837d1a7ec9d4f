#include "userspace/cli/trace_hist.h"

#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernel-compat/core_btf.h"
#include "userspace/collectors/core_btf_objects.h"

namespace vigil::cli {
namespace {

volatile sig_atomic_t g_stop = 0;

void onStopSignal(int) { g_stop = 1; }

// A duration in nanoseconds as "512ns", "16us", "4ms", "2s".
std::string humanNs(uint64_t ns) {
  if (ns < 1000) {
    return absl::StrCat(ns, "ns");
  }
  if (ns < 1000000) {
    return absl::StrFormat("%gus", ns / 1e3);
  }
  if (ns < 1000000000) {
    return absl::StrFormat("%gms", ns / 1e6);
  }
  return absl::StrFormat("%gs", ns / 1e9);
}

const char* unitName(uint64_t unit_ns) {
  switch (unit_ns) {
    case 1:
      return "ns";
    case 1000:
      return "us";
    case 1000000:
      return "ms";
  }
  return "units";
}

}  // namespace

void installStopHandlers() {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stopRequested() { return g_stop != 0; }

bool sleepUnlessStopped(absl::Duration d) {
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop, &old);
  if (g_stop == 0 && d > absl::ZeroDuration()) {
    struct timespec ts = absl::ToTimespec(d);
    ppoll(nullptr, 0, &ts, &old);  // returns early (EINTR) when a stop signal is delivered
  }
  sigprocmask(SIG_SETMASK, &old, nullptr);
  return g_stop != 0;
}

void prepareHeapForBtf(bool keep) {
  constexpr size_t kHuge = size_t{2} << 20;
  constexpr size_t kReserve = size_t{12} << 20;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);   // 5.5 MB buffers from the heap, not fresh mmaps
  mallopt(M_TRIM_THRESHOLD, 256 << 20);  // and keep it: the next parse reuses the pages
  // Grow the heap by kReserve (untouched, so no RSS yet), advise it, give it back to malloc.
  char* p = static_cast<char*>(malloc(kReserve));
  if (p == nullptr) {
    return;
  }
  uintptr_t start = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = reinterpret_cast<uintptr_t>(p) + kReserve;
  if (end > start) {
    madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
  }
  free(p);
  if (!keep) {
    // glibc's default again: the reserve stays (freeing it above did not trim), and what
    // libbpf frees after its one parse goes back to the kernel before the ring buffer is
    // mapped, so the peak RSS is what it is without this preparation.
    mallopt(M_TRIM_THRESHOLD, 128 << 10);
  }
}

CoreBtfUse::CoreBtfUse(bool verbose) : verbose_(verbose) {
  compat::CoreBtfCache cache(collectorBpfObjects());
  if (cache.disabled()) {
    note("BTF cache: off (VIGIL_BTF_CACHE_DIR=off or no cache directory)");
    return;
  }
  auto path = cache.usablePath();
  if (path.ok()) {
    compat::setCoreBtfPath(*path);
    active_ = true;
    note(absl::StrCat("BTF cache: relocating against ", *path));
    return;
  }
  need_build_ = true;
  if (!absl::IsNotFound(path.status())) {
    ++problems_;
  }
  note(absl::StrCat("BTF cache: not used (", path.status().message(),
                    "); loading against the full vmlinux BTF"));
}

CoreBtfUse::~CoreBtfUse() { compat::setCoreBtfPath(""); }

bool CoreBtfUse::fallBack(const absl::Status& why) {
  if (!active_) {
    return false;
  }
  ++problems_;
  active_ = false;
  need_build_ = false;  // a fresh file would fail the same way; leave it for inspection
  compat::setCoreBtfPath("");
  note(absl::StrCat("BTF cache: loading with the cached BTF failed (", why.message(),
                    "); retrying with the full vmlinux BTF"));
  return true;
}

void CoreBtfUse::finish() {
  if (!need_build_) {
    return;
  }
  need_build_ = false;
  compat::CoreBtfCache cache(collectorBpfObjects());
  absl::Status st = cache.build();
  if (!st.ok()) {
    ++problems_;
    note(absl::StrCat("BTF cache: could not write ", cache.path(), ": ", st.message()));
    return;
  }
  note(absl::StrCat("BTF cache: wrote ", cache.path(), " for the next run"));
}

void CoreBtfUse::note(const std::string& message) {
  if (verbose_) {
    fprintf(stderr, "vigil: %s\n", message.c_str());
  }
}

void Log2Hist::add(const HistogramSample& h) {
  if (buckets.empty() && count == 0) {
    unit_ns = h.unit_ns;
  }
  if (buckets.size() < h.buckets.size()) {
    buckets.resize(h.buckets.size(), 0);
  }
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    buckets[i] += h.buckets[i];
  }
  count += h.count;
  sum_units += h.sum_units;
}

Log2Hist Log2Hist::minus(const Log2Hist& earlier) const {
  Log2Hist d = *this;
  for (size_t i = 0; i < d.buckets.size() && i < earlier.buckets.size(); ++i) {
    d.buckets[i] = d.buckets[i] >= earlier.buckets[i] ? d.buckets[i] - earlier.buckets[i] : 0;
  }
  d.count = 0;
  for (uint64_t b : d.buckets) {
    d.count += b;
  }
  d.sum_units = sum_units >= earlier.sum_units ? sum_units - earlier.sum_units : 0;
  return d;
}

uint64_t bucketLow(size_t i) { return i == 0 ? 0 : (uint64_t{1} << i); }

std::string renderHist(const Log2Hist& h, const std::string& title) {
  std::string out = absl::StrCat(title, "\n");
  size_t first = h.buckets.size(), last = 0;
  uint64_t peak = 0;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    if (h.buckets[i] != 0) {
      first = std::min(first, i);
      last = i;
      peak = std::max(peak, h.buckets[i]);
    }
  }
  if (peak == 0) {
    absl::StrAppend(&out, "  (no samples)\n");
    return out;
  }
  constexpr int kBarWidth = 40;
  absl::StrAppend(&out, absl::StrFormat("  %21s : %-10s |%-*s|\n", "latency", "count", kBarWidth,
                                        "distribution"));
  for (size_t i = first; i <= last; ++i) {
    std::string range = absl::StrCat(humanNs(bucketLow(i) * h.unit_ns), " -> ",
                                     humanNs((uint64_t{1} << (i + 1)) * h.unit_ns));
    int bar = static_cast<int>(h.buckets[i] * kBarWidth / peak);
    absl::StrAppend(&out, absl::StrFormat("  %21s : %-10u |%-*s|\n", range, h.buckets[i], kBarWidth,
                                          std::string(bar, '*')));
  }
  double avg = h.count ? static_cast<double>(h.sum_units) / h.count * h.unit_ns : 0;
  absl::StrAppend(&out, absl::StrFormat("  count %u, average %s\n", h.count,
                                        humanNs(static_cast<uint64_t>(avg))));
  return out;
}

std::string histJson(const Log2Hist& h, const std::string& metric, const std::string& scope) {
  nlohmann::json j;
  j["metric"] = metric;
  j["scope"] = scope;
  j["unit"] = unitName(h.unit_ns);
  j["unit_ns"] = h.unit_ns;
  j["count"] = h.count;
  j["sum"] = h.sum_units;
  nlohmann::json buckets = nlohmann::json::array();
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    if (h.buckets[i] == 0) {
      continue;
    }
    buckets.push_back({{"low", bucketLow(i)},
                       {"high", uint64_t{1} << (i + 1)},
                       {"low_ns", bucketLow(i) * h.unit_ns},
                       {"high_ns", (uint64_t{1} << (i + 1)) * h.unit_ns},
                       {"count", h.buckets[i]}});
  }
  j["buckets"] = buckets;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace vigil::cli

#include "userspace/collectors/block_collector.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "tests/support/test_support.h"

namespace vigil {
namespace {

using testing::Child;

constexpr size_t kMiB = 1024 * 1024;
constexpr size_t kTotal = 64 * kMiB;

// The whole disk behind st_dev: a partition's requests are issued on its parent disk.
std::string diskOf(dev_t dev) {
  std::string base = absl::StrCat("/sys/dev/block/", major(dev), ":", minor(dev));
  if (access((base + "/partition").c_str(), F_OK) == 0) {
    std::string parent = testing::readFile(base + "/../dev");
    return std::string(absl::StripAsciiWhitespace(parent));
  }
  return absl::StrCat(major(dev), ":", minor(dev));
}

const MetricSample* findHost(const Snapshot& s, const std::string& name,
                             const std::string& major_minor, const std::string& op) {
  for (const MetricSample& m : s.host) {
    if (m.name != name) {
      continue;
    }
    bool mm = false;
    bool o = false;
    for (const auto& [k, v] : m.labels) {
      mm |= k == "major_minor" && v == major_minor;
      o |= k == "op" && v == op;
    }
    if (mm && o) {
      return &m;
    }
  }
  return nullptr;
}

TEST_CASE("writing and fsyncing 64 MiB with O_DIRECT is attributed to the writer and its disk") {
  if (!testing::bpfAllowed("block_collector_test")) {
    return;
  }
  char path[] = "/var/tmp/vigil-block-test-XXXXXX";
  int probe = mkstemp(path);
  REQUIRE(probe >= 0);
  close(probe);
  struct stat st;
  REQUIRE(stat(path, &st) == 0);
  if (major(st.st_dev) == 0) {
    unlink(path);
    WARN("/var/tmp is not on a block device here; skipping");
    return;
  }
  std::string disk = diskOf(st.st_dev);

  BlockOptions options;
  options.force_raw_tp = GENERATE(false, true);
  auto collector = BlockCollector::create(options);
  REQUIRE(collector.ok());
  CHECK((*collector)->attachMode() == (options.force_raw_tp ? "raw_tp" : "tp_btf"));
  int done[2];
  REQUIRE(pipe(done) == 0);
  Child child = Child::fork([&]() {
    int fd = open(path, O_WRONLY | O_DIRECT | O_TRUNC);
    if (fd < 0) {
      return 2;
    }
    void* buf = nullptr;
    if (posix_memalign(&buf, 4096, kMiB) != 0) {
      return 3;
    }
    memset(buf, 0x5a, kMiB);
    for (size_t off = 0; off < kTotal; off += kMiB) {
      if (write(fd, buf, kMiB) != static_cast<ssize_t>(kMiB)) {
        return 4;
      }
    }
    if (fsync(fd) != 0) {
      return 5;
    }
    close(fd);
    char c = 1;
    (void)!write(done[1], &c, 1);
    pause();
    return 0;
  });
  char c = 0;
  REQUIRE(read(done[0], &c, 1) == 1);
  close(done[0]);
  close(done[1]);
  Snapshot snap;
  (*collector)->collect(snap);
  unlink(path);

  REQUIRE(snap.processes.count(child.pid()) == 1);
  const ProcessStats& p = snap.processes[child.pid()];
  INFO("disk " << disk << ", written by the child " << p.block_write_bytes << " bytes in "
               << p.block_write_ops << " requests");
  CHECK(static_cast<double>(p.block_write_bytes) == Approx(double(kTotal)).epsilon(0.05));
  CHECK(p.block_write_ops >= 64);
  CHECK(p.comm == "block_collector");  // the forked test binary, 15 bytes max

  const MetricSample* bytes = findHost(snap, "vigil_block_device_bytes_total", disk, "write");
  REQUIRE(bytes != nullptr);
  CHECK(bytes->value >= 0.95 * kTotal);  // other writers share the disk: a lower bound only
  bool hist = false;
  for (const HistogramSample& h : snap.histograms) {
    if (h.name != "vigil_block_latency_seconds") {
      continue;
    }
    bool mm = false;
    bool write = false;
    for (const auto& [k, v] : h.labels) {
      mm |= k == "major_minor" && v == disk;
      write |= k == "op" && v == "write";
    }
    if (mm && write) {
      hist = true;
      // Every 1 MiB O_DIRECT write completed before write() returned, so each has its latency
      // recorded. The child is also charged with a few small writes (usually 2 of its ops, 8 KiB)
      // whose completion can still be in flight when the collector reads: a CI run once saw 65
      // completions for 66 ops, so only the data writes are a firm lower bound.
      CHECK(h.count >= kTotal / kMiB);
      CHECK(h.unit_ns == 1000);
      CHECK(h.sum_units > 0);
    }
  }
  CHECK(hist);
  for (const MetricSample& m : snap.self) {
    if (m.name == "vigil_bpf_map_full_total" && m.labels[0].second.rfind("block_", 0) == 0) {
      CHECK(m.value == 0);
    }
  }
  bool up = false;
  for (const CollectorState& s : snap.collectors) {
    up |= s.name == "block" && s.up;
  }
  CHECK(up);
}

TEST_CASE("block device names come from sysfs, with major:minor as the fallback") {
  CHECK(blockDeviceName(4095, 1048575) == "4095:1048575");
  CHECK(blockDeviceName(1, 3) == "1:3");  // /dev/null is a char device: no block entry
}

}  // namespace
}  // namespace vigil

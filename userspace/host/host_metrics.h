// Host-wide metrics from /proc, sysfs and statfs, the counterpart of node_exporter's core
// collectors (cpu, loadavg, meminfo, filesystem, diskstats, netdev, pressure, filefd, stat,
// time). Metric names are vigil_host_* in base units, with node_exporter's label names, so
// dashboards carry over. Text that does not parse is skipped and counted per source in
// vigil_host_parse_errors_total{source=...}; a file that does not exist (PSI on an old kernel)
// is simply not exported.
#pragma once

#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "capnp/snapshot.h"

namespace vigil::host {

// Reads a whole file, up to `max_bytes` (procfs files report size 0, so read to EOF). NotFound
// when the file (or its process) is gone.
absl::StatusOr<std::string> readFileBounded(const std::string& path, size_t max_bytes = 1 << 20);

struct HostPaths {
  std::string proc = "/proc";  // tests point these at a tree of captured text
  std::string mountinfo = "/proc/1/mountinfo";
  bool statfs = true;  // statvfs() each reported mount point
  // Network and FUSE filesystems can hang statvfs() for minutes; for those the call runs on a
  // helper thread and the collector waits at most this long (see readFilesystems()).
  absl::Duration statfs_timeout = absl::Seconds(1);
  // Replaces statvfs() in tests.
  std::function<int(const char*, struct statvfs*)> statfs_fn;
};

// True for filesystem types whose statvfs() may block on a remote server or a FUSE daemon.
bool remoteFilesystem(const std::string& fstype);

class HostReader {
 public:
  explicit HostReader(HostPaths paths = {});

  // Appends every host metric to `host`, and vigil_host_parse_errors_total (cumulative since
  // construction, one series per source) to `self`.
  void collect(std::vector<MetricSample>& host, std::vector<MetricSample>& self);

  // Cumulative parse errors for a source ("stat", "meminfo", ...), for tests.
  uint64_t parseErrors(const std::string& source) const;

  // Every source name that vigil_host_parse_errors_total can carry.
  static const std::vector<std::string>& sources();

 private:
  void readStat(std::vector<MetricSample>& out);
  void readLoad(std::vector<MetricSample>& out);
  void readMemory(std::vector<MetricSample>& out);
  void readFilesystems(std::vector<MetricSample>& out);
  void readDisks(std::vector<MetricSample>& out);
  void readNet(std::vector<MetricSample>& out);
  void readPressure(std::vector<MetricSample>& out);
  void readFileNr(std::vector<MetricSample>& out);
  void readUptime(std::vector<MetricSample>& out);
  // The file's text, or nullopt when absent; other read errors count against `source`.
  std::optional<std::string> readText(const std::string& path, const std::string& source);
  void count(const std::string& source, uint64_t n = 1) { errors_[source] += n; }
  // statvfs() for `m`, bounded by paths_.statfs_timeout for remote filesystems. Returns the
  // call's result; -2 when it timed out or an earlier call on that mount is still blocked.
  int boundedStatfs(const std::string& mountpoint, const std::string& fstype, struct statvfs* out);
  struct PendingStatfs;

  HostPaths paths_;
  double ticks_per_second_;
  absl::flat_hash_map<std::string, uint64_t> errors_;
  // Calls still blocked in the kernel, by mount point; that mount is skipped until it returns.
  absl::flat_hash_map<std::string, std::shared_ptr<PendingStatfs>> pending_statfs_;
};

}  // namespace vigil::host

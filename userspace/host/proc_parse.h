// Pure parsers for the /proc text the host collector reads. Each takes the whole file as text
// and returns what it could read: a line that does not parse is skipped and counted in
// `skipped`, so one odd line never hides the rest. A file with nothing usable is an error. No
// parser reads a file or touches global state, so tests feed them captured and malformed text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vigil::host {

// CPU times in USER_HZ ticks, in /proc/stat's column order (see proc(5)).
struct CpuTimes {
  std::string cpu;  // "" for the aggregate "cpu" line, else the CPU number ("0", "1", ...)
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0,
           guest = 0, guest_nice = 0;
};

struct ProcStat {
  std::optional<CpuTimes> total;
  std::vector<CpuTimes> cpus;
  std::optional<uint64_t> context_switches;  // ctxt
  std::optional<uint64_t> forks;             // processes
  std::optional<uint64_t> interrupts;        // intr (first column: the total)
  std::optional<uint64_t> boot_time;         // btime, unix seconds
  std::optional<uint64_t> procs_running;
  std::optional<uint64_t> procs_blocked;
  int skipped = 0;
};
absl::StatusOr<ProcStat> parseProcStat(absl::string_view text);

struct LoadAvg {
  double load1 = 0, load5 = 0, load15 = 0;
};
absl::StatusOr<LoadAvg> parseLoadAvg(absl::string_view text);

// /proc/meminfo in bytes ("kB" values scaled; unitless values such as HugePages_Total as is).
struct MemInfo {
  std::vector<std::pair<std::string, uint64_t>> fields;
  int skipped = 0;
  std::optional<uint64_t> get(absl::string_view key) const;
};
absl::StatusOr<MemInfo> parseMemInfo(absl::string_view text);

// One line of /proc/<pid>/mountinfo (see proc(5)); octal escapes (\040) decoded.
struct MountEntry {
  uint32_t major = 0, minor = 0;
  std::string root;        // path of the mount's root within its filesystem
  std::string mountpoint;  // where it is mounted
  std::string fstype;
  std::string source;  // "device" in node_exporter's labels
  bool read_only = false;
};
struct MountInfo {
  std::vector<MountEntry> mounts;
  int skipped = 0;
};
absl::StatusOr<MountInfo> parseMountInfo(absl::string_view text);

// Pseudo and virtual filesystems whose sizes mean nothing to an operator, and mount points
// under /proc, /sys and /dev; node_exporter excludes the same by default.
bool ignoredFilesystem(const MountEntry& m);

// The mounts worth reporting: not ignored, and one mount per device (major:minor) so a bind
// mount does not report the same filesystem twice. The kept one is the mount of the
// filesystem's root ("/") if any, else the first; order follows mountinfo.
std::vector<MountEntry> reportableMounts(const std::vector<MountEntry>& mounts);

// /proc/diskstats (Documentation/admin-guide/iostats.rst). Sectors are always 512 bytes there.
struct DiskStats {
  std::string device;
  uint64_t reads = 0, reads_merged = 0, read_sectors = 0, read_ms = 0;
  uint64_t writes = 0, writes_merged = 0, write_sectors = 0, write_ms = 0;
  uint64_t io_in_progress = 0, io_ms = 0, weighted_io_ms = 0;
  std::optional<uint64_t> discards, discard_sectors, discard_ms;  // kernel 4.18+
  std::optional<uint64_t> flushes, flush_ms;                      // kernel 5.5+
};
struct DiskStatsFile {
  std::vector<DiskStats> disks;
  int skipped = 0;
};
absl::StatusOr<DiskStatsFile> parseDiskStats(absl::string_view text);

// Devices node_exporter skips by default: ram, loop and floppy devices, and partitions of
// sd/vd/hd/xvd/nvme/mmcblk disks (their I/O is already in the whole disk's line).
bool ignoredDisk(absl::string_view device);

// /proc/net/dev: two header lines, then "iface: 8 receive columns 8 transmit columns".
struct NetDevStats {
  std::string interface;
  uint64_t rx_bytes = 0, rx_packets = 0, rx_errs = 0, rx_drop = 0, rx_fifo = 0, rx_frame = 0,
           rx_compressed = 0, rx_multicast = 0;
  uint64_t tx_bytes = 0, tx_packets = 0, tx_errs = 0, tx_drop = 0, tx_fifo = 0, tx_colls = 0,
           tx_carrier = 0, tx_compressed = 0;
};
struct NetDevFile {
  std::vector<NetDevStats> interfaces;
  int skipped = 0;
};
absl::StatusOr<NetDevFile> parseNetDev(absl::string_view text);

// /proc/pressure/{cpu,memory,io} (Documentation/accounting/psi.rst). total is in microseconds.
struct PressureLine {
  double avg10 = 0, avg60 = 0, avg300 = 0;
  uint64_t total_us = 0;
};
struct Pressure {
  std::optional<PressureLine> some;
  std::optional<PressureLine> full;
  int skipped = 0;
};
absl::StatusOr<Pressure> parsePressure(absl::string_view text);

// /proc/sys/fs/file-nr: allocated, allocated-but-unused (always 0 since 2.6), maximum.
struct FileNr {
  uint64_t allocated = 0, unused = 0, maximum = 0;
};
absl::StatusOr<FileNr> parseFileNr(absl::string_view text);

// /proc/uptime: seconds since boot and summed idle seconds of all CPUs.
struct Uptime {
  double uptime_seconds = 0, idle_seconds = 0;
};
absl::StatusOr<Uptime> parseUptime(absl::string_view text);

// /proc/<pid>/stat. comm may hold spaces and parentheses, so it ends at the LAST ')'.
struct PidStat {
  uint32_t pid = 0;
  std::string comm;
  char state = '?';
  uint32_t ppid = 0;
  uint64_t utime_ticks = 0, stime_ticks = 0;
  uint64_t num_threads = 0;
  uint64_t start_ticks = 0;  // since boot
  uint64_t rss_pages = 0;
};
absl::StatusOr<PidStat> parsePidStat(absl::string_view text);

// /proc/<pid>/cmdline for display: NUL separators become spaces, the trailing NUL goes, other
// control characters (a newline in an argument) become '?', and the result is cut at
// `max_bytes` without splitting a UTF-8 sequence. Empty for kernel threads.
std::string cleanCmdline(absl::string_view raw, size_t max_bytes);

// Decodes mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash).
std::string unescapeOctal(absl::string_view s);

}  // namespace vigil::host

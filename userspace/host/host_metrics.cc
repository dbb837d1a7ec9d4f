#include "userspace/host/host_metrics.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "userspace/host/proc_parse.h"

namespace vigil::host {
namespace {

void gauge(std::vector<MetricSample>& out, const char* name, double v, Labels l = {}) {
  out.push_back(MetricSample{name, std::move(l), v, false});
}

void counter(std::vector<MetricSample>& out, const char* name, double v, Labels l = {}) {
  out.push_back(MetricSample{name, std::move(l), v, true});
}

}  // namespace

absl::StatusOr<std::string> readFileBounded(const std::string& path, size_t max_bytes) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string msg = absl::StrCat(path, ": ", strerror(e));
    if (e == ENOENT || e == ESRCH) {
      return absl::NotFoundError(msg);
    }
    return absl::UnavailableError(msg);
  }
  std::string out;
  char buf[16384];
  while (out.size() < max_bytes) {
    ssize_t n = ::read(fd, buf, std::min(sizeof(buf), max_bytes - out.size()));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      int e = errno;
      close(fd);
      // A process that exits between open() and read() answers ESRCH.
      std::string msg = absl::StrCat(path, ": ", strerror(e));
      return e == ESRCH ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

bool remoteFilesystem(const std::string& fstype) {
  static const char* const kRemote[] = {"nfs",  "nfs4",  "cifs",      "smb3",   "smbfs", "ceph",
                                        "9p",   "afs",   "glusterfs", "lustre", "gpfs",  "sshfs",
                                        "fuse", "davfs", "ncpfs",     "beegfs"};
  for (const char* t : kRemote) {
    if (fstype == t) {
      return true;
    }
  }
  return absl::StartsWith(fstype, "fuse.");
}

struct HostReader::PendingStatfs {
  absl::Notification done;
  int rc = -1;
  struct statvfs sv;
};

int HostReader::boundedStatfs(const std::string& mountpoint, const std::string& fstype,
                              struct statvfs* out) {
  auto fn = paths_.statfs_fn ? paths_.statfs_fn
                             : [](const char* p, struct statvfs* sv) { return statvfs(p, sv); };
  if (!remoteFilesystem(fstype)) {
    return fn(mountpoint.c_str(), out);
  }
  auto it = pending_statfs_.find(mountpoint);
  if (it != pending_statfs_.end()) {
    if (!it->second->done.HasBeenNotified()) {
      return -2;  // still blocked since an earlier collection: do not pile up threads
    }
    pending_statfs_.erase(it);
  }
  auto call = std::make_shared<PendingStatfs>();
  // Detached: if the server never answers, the thread stays blocked in the kernel, and only
  // one per mount point exists.
  std::thread([call, fn, mountpoint]() {
    call->rc = fn(mountpoint.c_str(), &call->sv);
    call->done.Notify();
  }).detach();
  if (!call->done.WaitForNotificationWithTimeout(paths_.statfs_timeout)) {
    pending_statfs_[mountpoint] = std::move(call);
    return -2;
  }
  *out = call->sv;
  return call->rc;
}

const std::vector<std::string>& HostReader::sources() {
  static const std::vector<std::string> s = {"stat",    "loadavg",   "meminfo", "mountinfo",
                                             "statfs",  "diskstats", "net_dev", "pressure",
                                             "file_nr", "uptime"};
  return s;
}

HostReader::HostReader(HostPaths paths) : paths_(std::move(paths)) {
  long hz = sysconf(_SC_CLK_TCK);
  ticks_per_second_ = hz > 0 ? static_cast<double>(hz) : 100.0;
  for (const std::string& s : sources()) {
    errors_[s] = 0;
  }
}

uint64_t HostReader::parseErrors(const std::string& source) const {
  auto it = errors_.find(source);
  return it == errors_.end() ? 0 : it->second;
}

std::optional<std::string> HostReader::readText(const std::string& path,
                                                const std::string& source) {
  auto text = readFileBounded(path);
  if (!text.ok()) {
    if (!absl::IsNotFound(text.status())) {
      count(source);
    }
    return std::nullopt;
  }
  return std::move(*text);
}

void HostReader::collect(std::vector<MetricSample>& host, std::vector<MetricSample>& self) {
  readStat(host);
  readLoad(host);
  readMemory(host);
  readFilesystems(host);
  readDisks(host);
  readNet(host);
  readPressure(host);
  readFileNr(host);
  readUptime(host);
  for (const std::string& s : sources()) {
    counter(self, "vigil_host_parse_errors_total", static_cast<double>(errors_[s]),
            {{"source", s}});
  }
}

void HostReader::readStat(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/stat", "stat");
  if (!text) {
    return;
  }
  auto st = parseProcStat(*text);
  if (!st.ok()) {
    count("stat");
    return;
  }
  count("stat", st->skipped);
  double hz = ticks_per_second_;
  auto modes = [&](const CpuTimes& t, const char* name, const char* guest_name, Labels base) {
    std::pair<const char*, uint64_t> m[] = {
        {"user", t.user},     {"nice", t.nice}, {"system", t.system},   {"idle", t.idle},
        {"iowait", t.iowait}, {"irq", t.irq},   {"softirq", t.softirq}, {"steal", t.steal}};
    for (const auto& [mode, ticks] : m) {
      Labels l = base;
      l.emplace_back("mode", mode);
      counter(out, name, ticks / hz, std::move(l));
    }
    // Guest time is already inside user/nice (as node_exporter reports it, separately).
    Labels gu = base, gn = base;
    gu.emplace_back("mode", "user");
    gn.emplace_back("mode", "nice");
    counter(out, guest_name, t.guest / hz, std::move(gu));
    counter(out, guest_name, t.guest_nice / hz, std::move(gn));
  };
  for (const CpuTimes& t : st->cpus) {
    modes(t, "vigil_host_cpu_seconds_total", "vigil_host_cpu_guest_seconds_total",
          {{"cpu", t.cpu}});
  }
  if (st->total) {
    modes(*st->total, "vigil_host_cpu_all_seconds_total", "vigil_host_cpu_all_guest_seconds_total",
          {});
  }
  gauge(out, "vigil_host_cpus", static_cast<double>(st->cpus.size()));
  if (st->context_switches) {
    counter(out, "vigil_host_context_switches_total", static_cast<double>(*st->context_switches));
  }
  if (st->forks) {
    counter(out, "vigil_host_forks_total", static_cast<double>(*st->forks));
  }
  if (st->interrupts) {
    counter(out, "vigil_host_interrupts_total", static_cast<double>(*st->interrupts));
  }
  if (st->boot_time) {
    gauge(out, "vigil_host_boot_time_seconds", static_cast<double>(*st->boot_time));
  }
  if (st->procs_running) {
    gauge(out, "vigil_host_procs_running", static_cast<double>(*st->procs_running));
  }
  if (st->procs_blocked) {
    gauge(out, "vigil_host_procs_blocked", static_cast<double>(*st->procs_blocked));
  }
}

void HostReader::readLoad(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/loadavg", "loadavg");
  if (!text) {
    return;
  }
  auto l = parseLoadAvg(*text);
  if (!l.ok()) {
    count("loadavg");
    return;
  }
  gauge(out, "vigil_host_load1", l->load1);
  gauge(out, "vigil_host_load5", l->load5);
  gauge(out, "vigil_host_load15", l->load15);
}

void HostReader::readMemory(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/meminfo", "meminfo");
  if (!text) {
    return;
  }
  auto m = parseMemInfo(*text);
  if (!m.ok()) {
    count("meminfo");
    return;
  }
  count("meminfo", m->skipped);
  static const std::pair<const char*, const char*> kFields[] = {
      {"MemTotal", "vigil_host_memory_total_bytes"},
      {"MemAvailable", "vigil_host_memory_available_bytes"},
      {"MemFree", "vigil_host_memory_free_bytes"},
      {"Cached", "vigil_host_memory_cached_bytes"},
      {"Buffers", "vigil_host_memory_buffers_bytes"},
      {"Shmem", "vigil_host_memory_shmem_bytes"},
      {"Dirty", "vigil_host_memory_dirty_bytes"},
      {"SwapTotal", "vigil_host_memory_swap_total_bytes"},
      {"SwapFree", "vigil_host_memory_swap_free_bytes"},
  };
  for (const auto& [key, name] : kFields) {
    if (auto v = m->get(key)) {
      gauge(out, name, static_cast<double>(*v));
    }
  }
}

void HostReader::readFilesystems(std::vector<MetricSample>& out) {
  auto text = readText(paths_.mountinfo, "mountinfo");
  if (!text) {
    return;
  }
  auto mi = parseMountInfo(*text);
  if (!mi.ok()) {
    count("mountinfo");
    return;
  }
  count("mountinfo", mi->skipped);
  for (const MountEntry& m : reportableMounts(mi->mounts)) {
    Labels l = {{"device", m.source}, {"mountpoint", m.mountpoint}, {"fstype", m.fstype}};
    gauge(out, "vigil_host_filesystem_readonly", m.read_only ? 1 : 0, l);
    if (!paths_.statfs) {
      continue;
    }
    struct statvfs sv;
    int rc = boundedStatfs(m.mountpoint, m.fstype, &sv);
    if (rc != 0) {
      count(rc == -2 ? "statfs_timeout" : "statfs");
      gauge(out, "vigil_host_filesystem_device_error", 1, l);
      continue;
    }
    gauge(out, "vigil_host_filesystem_device_error", 0, l);
    double frsize = static_cast<double>(sv.f_frsize ? sv.f_frsize : sv.f_bsize);
    gauge(out, "vigil_host_filesystem_size_bytes", sv.f_blocks * frsize, l);
    gauge(out, "vigil_host_filesystem_free_bytes", sv.f_bfree * frsize, l);
    gauge(out, "vigil_host_filesystem_avail_bytes", sv.f_bavail * frsize, l);
    gauge(out, "vigil_host_filesystem_files", static_cast<double>(sv.f_files), l);
    gauge(out, "vigil_host_filesystem_files_free", static_cast<double>(sv.f_ffree), l);
  }
}

void HostReader::readDisks(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/diskstats", "diskstats");
  if (!text) {
    return;
  }
  auto ds = parseDiskStats(*text);
  if (!ds.ok()) {
    count("diskstats");
    return;
  }
  count("diskstats", ds->skipped);
  for (const DiskStats& d : ds->disks) {
    if (ignoredDisk(d.device)) {
      continue;
    }
    Labels l = {{"device", d.device}};
    counter(out, "vigil_host_disk_reads_completed_total", static_cast<double>(d.reads), l);
    counter(out, "vigil_host_disk_reads_merged_total", static_cast<double>(d.reads_merged), l);
    counter(out, "vigil_host_disk_read_bytes_total", d.read_sectors * 512.0, l);
    counter(out, "vigil_host_disk_read_time_seconds_total", d.read_ms / 1e3, l);
    counter(out, "vigil_host_disk_writes_completed_total", static_cast<double>(d.writes), l);
    counter(out, "vigil_host_disk_writes_merged_total", static_cast<double>(d.writes_merged), l);
    counter(out, "vigil_host_disk_written_bytes_total", d.write_sectors * 512.0, l);
    counter(out, "vigil_host_disk_write_time_seconds_total", d.write_ms / 1e3, l);
    gauge(out, "vigil_host_disk_io_now", static_cast<double>(d.io_in_progress), l);
    counter(out, "vigil_host_disk_io_time_seconds_total", d.io_ms / 1e3, l);
    counter(out, "vigil_host_disk_io_time_weighted_seconds_total", d.weighted_io_ms / 1e3, l);
    if (d.discards) {
      counter(out, "vigil_host_disk_discards_completed_total", static_cast<double>(*d.discards), l);
      counter(out, "vigil_host_disk_discarded_sectors_total",
              static_cast<double>(*d.discard_sectors), l);
    }
    if (d.flushes) {
      counter(out, "vigil_host_disk_flush_requests_total", static_cast<double>(*d.flushes), l);
    }
  }
}

void HostReader::readNet(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/net/dev", "net_dev");
  if (!text) {
    return;
  }
  auto nd = parseNetDev(*text);
  if (!nd.ok()) {
    count("net_dev");
    return;
  }
  count("net_dev", nd->skipped);
  for (const NetDevStats& s : nd->interfaces) {
    Labels l = {{"device", s.interface}};
    std::pair<const char*, uint64_t> m[] = {
        {"vigil_host_network_receive_bytes_total", s.rx_bytes},
        {"vigil_host_network_receive_packets_total", s.rx_packets},
        {"vigil_host_network_receive_errs_total", s.rx_errs},
        {"vigil_host_network_receive_drop_total", s.rx_drop},
        {"vigil_host_network_receive_multicast_total", s.rx_multicast},
        {"vigil_host_network_transmit_bytes_total", s.tx_bytes},
        {"vigil_host_network_transmit_packets_total", s.tx_packets},
        {"vigil_host_network_transmit_errs_total", s.tx_errs},
        {"vigil_host_network_transmit_drop_total", s.tx_drop},
        {"vigil_host_network_transmit_colls_total", s.tx_colls},
    };
    for (const auto& [name, v] : m) {
      counter(out, name, static_cast<double>(v), l);
    }
  }
}

void HostReader::readPressure(std::vector<MetricSample>& out) {
  static const std::pair<const char*, std::pair<const char*, const char*>> kResources[] = {
      {"cpu",
       {"vigil_host_pressure_cpu_waiting_seconds_total",
        "vigil_host_pressure_cpu_stalled_seconds_total"}},
      {"memory",
       {"vigil_host_pressure_memory_waiting_seconds_total",
        "vigil_host_pressure_memory_stalled_seconds_total"}},
      {"io",
       {"vigil_host_pressure_io_waiting_seconds_total",
        "vigil_host_pressure_io_stalled_seconds_total"}},
  };
  for (const auto& [res, names] : kResources) {
    // Absent without CONFIG_PSI, and EOPNOTSUPP to read with psi=0 on the command line; both
    // mean "this kernel does not expose PSI", which is not an error.
    auto text = readFileBounded(absl::StrCat(paths_.proc, "/pressure/", res));
    if (!text.ok()) {
      continue;
    }
    auto p = parsePressure(*text);
    if (!p.ok()) {
      count("pressure");
      continue;
    }
    count("pressure", p->skipped);
    if (p->some) {
      counter(out, names.first, p->some->total_us / 1e6);
    }
    if (p->full) {
      counter(out, names.second, p->full->total_us / 1e6);
    }
  }
}

void HostReader::readFileNr(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/sys/fs/file-nr", "file_nr");
  if (!text) {
    return;
  }
  auto f = parseFileNr(*text);
  if (!f.ok()) {
    count("file_nr");
    return;
  }
  gauge(out, "vigil_host_filefd_allocated", static_cast<double>(f->allocated));
  gauge(out, "vigil_host_filefd_maximum", static_cast<double>(f->maximum));
}

void HostReader::readUptime(std::vector<MetricSample>& out) {
  auto text = readText(paths_.proc + "/uptime", "uptime");
  if (!text) {
    return;
  }
  auto u = parseUptime(*text);
  if (!u.ok()) {
    count("uptime");
    return;
  }
  gauge(out, "vigil_host_uptime_seconds", u->uptime_seconds);
}

}  // namespace vigil::host

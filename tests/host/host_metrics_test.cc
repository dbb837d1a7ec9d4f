// HostReader on this machine's real /proc (compared with /proc/meminfo and statvfs read by the
// test) and on a tree of odd text, where bad input must be counted, never fatal.
#include "userspace/host/host_metrics.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/synchronization/notification.h"
#include "tests/support/test_support.h"
#include "userspace/collectors/host_collector.h"
#include "userspace/collectors/registry.h"
#include "userspace/host/proc_reader.h"

namespace vigil::host {
namespace {

std::optional<double> find(const std::vector<MetricSample>& v, const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) {
  for (const MetricSample& m : v) {
    if (m.name != name) {
      continue;
    }
    bool match = true;
    for (const auto& [k, want] : labels) {
      bool found = false;
      for (const auto& [lk, lv] : m.labels) {
        found |= lk == k && lv == want;
      }
      match &= found;
    }
    if (match) {
      return m.value;
    }
  }
  return std::nullopt;
}

size_t countNamed(const std::vector<MetricSample>& v, const std::string& name) {
  size_t n = 0;
  for (const MetricSample& m : v) {
    n += m.name == name;
  }
  return n;
}

void write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

TEST_CASE("live: memory total equals /proc/meminfo MemTotal and CPU modes cover every CPU") {
  HostReader reader;
  std::vector<MetricSample> host, self;
  reader.collect(host, self);
  std::string meminfo = testing::readFile("/proc/meminfo");
  uint64_t kb = 0;
  REQUIRE(sscanf(meminfo.c_str(), "MemTotal: %lu kB", &kb) == 1);
  CHECK(find(host, "vigil_host_memory_total_bytes") == static_cast<double>(kb) * 1024);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  CHECK(find(host, "vigil_host_cpus") == static_cast<double>(cpus));
  // 8 modes per CPU.
  CHECK(countNamed(host, "vigil_host_cpu_seconds_total") == static_cast<size_t>(cpus) * 8);
  CHECK(find(host, "vigil_host_cpu_seconds_total", {{"cpu", "0"}, {"mode", "iowait"}}));
  CHECK(find(host, "vigil_host_cpu_all_seconds_total", {{"mode", "steal"}}));
  CHECK(find(host, "vigil_host_load1"));
  CHECK(find(host, "vigil_host_boot_time_seconds").value_or(0) > 1e9);
  CHECK(find(host, "vigil_host_uptime_seconds").value_or(0) > 0);
  CHECK(find(host, "vigil_host_filefd_maximum").value_or(0) > 0);
  CHECK(find(host, "vigil_host_network_receive_bytes_total", {{"device", "lo"}}));
  // PSI is exported exactly when the kernel has it.
  bool psi = access("/proc/pressure/io", R_OK) == 0;
  CHECK(find(host, "vigil_host_pressure_io_waiting_seconds_total").has_value() == psi);
  for (const std::string& s : HostReader::sources()) {
    INFO(s);
    CHECK(find(self, "vigil_host_parse_errors_total", {{"source", s}}) == 0.0);
  }
}

TEST_CASE("live: root filesystem size and free match statvfs") {
  HostReader reader;
  std::vector<MetricSample> host, self;
  reader.collect(host, self);
  struct statvfs sv;
  REQUIRE(statvfs("/", &sv) == 0);
  double frsize = static_cast<double>(sv.f_frsize);
  CHECK(find(host, "vigil_host_filesystem_size_bytes", {{"mountpoint", "/"}}) ==
        sv.f_blocks * frsize);
  CHECK(find(host, "vigil_host_filesystem_files", {{"mountpoint", "/"}}) ==
        static_cast<double>(sv.f_files));
  // Free space moves while other processes write; allow 64 MiB of drift.
  auto avail = find(host, "vigil_host_filesystem_avail_bytes", {{"mountpoint", "/"}});
  REQUIRE(avail);
  CHECK(std::abs(*avail - sv.f_bavail * frsize) < 64.0 * 1024 * 1024);
  // Pseudo filesystems are not reported.
  CHECK_FALSE(find(host, "vigil_host_filesystem_size_bytes", {{"mountpoint", "/proc"}}));
  CHECK_FALSE(find(host, "vigil_host_filesystem_size_bytes", {{"fstype", "cgroup2"}}));
}

TEST_CASE("live: diskstats bytes are sectors times 512 for a real disk") {
  auto text = readFileBounded("/proc/diskstats");
  REQUIRE(text.ok());
  HostReader reader;
  std::vector<MetricSample> host, self;
  reader.collect(host, self);
  // Every reported device is one that node_exporter would also report.
  for (const MetricSample& m : host) {
    if (m.name == "vigil_host_disk_reads_completed_total") {
      CHECK_FALSE(ignoredDisk(m.labels[0].second));
    }
  }
  CHECK(countNamed(host, "vigil_host_disk_reads_completed_total") >= 1);
}

TEST_CASE("odd /proc text: counted per source, the rest still exported, absent PSI silent") {
  testing::TempDir dir;
  std::string p = dir.path();
  write(p + "/stat", "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2\ncpu1 100 0 0 0 0 0 0 0 0 0\nctxt x\n");
  write(p + "/loadavg", "garbage\n");
  write(p + "/meminfo", "MemTotal: 1000 kB\nnonsense\nSwapTotal: 5 kB\n");
  write(p + "/diskstats", "8 0 sda 1 2\n");
  write(p + "/net/dev",
        "Inter-| x\n face |x\n  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n  bad: 1\n");
  write(p + "/sys/fs/file-nr", "10 0 100\n");
  write(p + "/uptime", "12.5 3.0\n");
  write(p + "/mountinfo", "nonsense\n");
  // No pressure/ directory: a kernel without PSI.
  HostReader reader(HostPaths{p, p + "/mountinfo", false});
  std::vector<MetricSample> host, self;
  reader.collect(host, self);
  CHECK(reader.parseErrors("stat") == 2);
  CHECK(reader.parseErrors("loadavg") == 1);
  CHECK(reader.parseErrors("meminfo") == 1);
  CHECK(reader.parseErrors("diskstats") == 1);
  CHECK(reader.parseErrors("net_dev") == 1);
  CHECK(reader.parseErrors("mountinfo") == 1);
  CHECK(reader.parseErrors("pressure") == 0);
  CHECK(reader.parseErrors("uptime") == 0);
  CHECK(find(self, "vigil_host_parse_errors_total", {{"source", "stat"}}) == 2.0);
  CHECK(find(host, "vigil_host_memory_total_bytes") == 1024000.0);
  CHECK(find(host, "vigil_host_memory_swap_total_bytes") == 5120.0);
  CHECK_FALSE(find(host, "vigil_host_memory_available_bytes"));
  double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  CHECK(find(host, "vigil_host_cpu_seconds_total", {{"cpu", "1"}, {"mode", "user"}}) == 100 / hz);
  CHECK(find(host, "vigil_host_network_transmit_bytes_total", {{"device", "lo"}}) == 9.0);
  CHECK(find(host, "vigil_host_filefd_allocated") == 10.0);
  CHECK(find(host, "vigil_host_uptime_seconds") == 12.5);
  CHECK_FALSE(find(host, "vigil_host_load1"));
  CHECK_FALSE(find(host, "vigil_host_context_switches_total"));
  CHECK(countNamed(host, "vigil_host_pressure_cpu_waiting_seconds_total") == 0);

  // Counts accumulate over collections; a missing file is not an error.
  std::filesystem::remove(p + "/uptime");
  host.clear();
  self.clear();
  reader.collect(host, self);
  CHECK(reader.parseErrors("stat") == 4);
  CHECK(reader.parseErrors("uptime") == 0);
  CHECK_FALSE(find(host, "vigil_host_uptime_seconds"));
}

TEST_CASE("a hung network filesystem's statfs is bounded, counted, and not piled up") {
  testing::TempDir dir;
  std::string p = dir.path();
  write(p + "/stat", "cpu  1 2 3 4 5 6 7 8 0 0\n");
  std::string nfs = p + "/mnt";
  std::filesystem::create_directories(nfs);
  write(p + "/mountinfo",
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "60 27 0:70 / " +
            nfs + " rw - nfs4 srv:/export rw\n");
  auto calls = std::make_shared<std::atomic<int>>(0);
  auto release = std::make_shared<absl::Notification>();
  HostPaths paths{p, p + "/mountinfo", true, absl::Milliseconds(200),
                  [calls, release, nfs](const char* path, struct statvfs* sv) {
                    if (path == nfs && calls->fetch_add(1) == 0) {
                      release->WaitForNotification();  // the server does not answer
                    }
                    return statvfs(path, sv);
                  }};
  HostReader reader(paths);
  auto collect = [&](std::vector<MetricSample>& host) {
    std::vector<MetricSample> self;
    auto t0 = absl::Now();
    reader.collect(host, self);
    return absl::Now() - t0;
  };
  std::vector<MetricSample> first, second, third;
  CHECK(collect(first) < absl::Seconds(2));
  CHECK(find(first, "vigil_host_filesystem_device_error", {{"mountpoint", nfs}}) == 1.0);
  CHECK(find(first, "vigil_host_filesystem_size_bytes", {{"mountpoint", "/"}}));
  CHECK(reader.parseErrors("statfs_timeout") == 1);
  // Still blocked: skipped at once, no second thread.
  CHECK(collect(second) < absl::Milliseconds(150));
  CHECK(calls->load() == 1);
  CHECK(reader.parseErrors("statfs_timeout") == 2);
  // The server answers: the mount is measured again.
  release->Notify();
  REQUIRE(testing::waitFor(
      [&]() {
        third.clear();
        collect(third);
        return find(third, "vigil_host_filesystem_size_bytes", {{"mountpoint", nfs}}).has_value();
      },
      std::chrono::seconds(5)));
  CHECK(find(third, "vigil_host_filesystem_device_error", {{"mountpoint", nfs}}) == 0.0);
}

TEST_CASE("PSI files present: waiting and stalled seconds from total microseconds") {
  testing::TempDir dir;
  std::string p = dir.path();
  write(p + "/stat", "cpu  1 2 3 4 5 6 7 8 0 0\n");
  write(p + "/pressure/cpu", "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n");
  write(p + "/pressure/io",
        "some avg10=0.13 avg60=1.01 avg300=0.43 total=6845081\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=4036747\n");
  write(p + "/pressure/memory", "broken\n");
  HostReader reader(HostPaths{p, p + "/mountinfo", false});
  std::vector<MetricSample> host, self;
  reader.collect(host, self);
  CHECK(find(host, "vigil_host_pressure_cpu_waiting_seconds_total") == 2.5);
  CHECK_FALSE(find(host, "vigil_host_pressure_cpu_stalled_seconds_total"));
  CHECK(find(host, "vigil_host_pressure_io_waiting_seconds_total") == 6.845081);
  CHECK(find(host, "vigil_host_pressure_io_stalled_seconds_total") == 4.036747);
  CHECK_FALSE(find(host, "vigil_host_pressure_memory_waiting_seconds_total"));
  CHECK(reader.parseErrors("pressure") == 1);
}

TEST_CASE("the host collector is registered, needs no privileges and reports itself up") {
  const auto& names = collectorNames();
  REQUIRE(std::find(names.begin(), names.end(), "host") != names.end());
  auto c = createCollector("host", CollectorConfig{});
  REQUIRE(c.ok());
  Snapshot snap;
  (*c)->collect(snap);
  REQUIRE(snap.collectors.size() == 1);
  CHECK(snap.collectors[0].name == "host");
  CHECK(snap.collectors[0].up);
  CHECK(find(snap.host, "vigil_host_memory_total_bytes").value_or(0) > 0);
  CHECK(find(snap.self, "vigil_host_parse_errors_total", {{"source", "meminfo"}}) == 0.0);
}

TEST_CASE("per-process reader: cmdline with a newline argument, and an exited process") {
  // The shell stops itself (a builtin, so no grandchild outlives the test holding its output).
  testing::Child child =
      testing::Child::spawn({"/bin/sh", "-c", "kill -STOP $$\n#x", "sh", "arg with\nnl"});
  REQUIRE(testing::waitFor(
      [&]() {
        auto c = readCmdline(child.pid());
        return c.ok() && c->find("kill -STOP") != std::string::npos;
      },
      std::chrono::seconds(5), std::chrono::milliseconds(10)));
  auto cmd = readCmdline(child.pid(), 4096);
  REQUIRE(cmd.ok());
  CHECK(*cmd == "/bin/sh -c kill -STOP $$?#x sh arg with?nl");
  auto bounded = readCmdline(child.pid(), 7);
  REQUIRE(bounded.ok());
  CHECK(*bounded == "/bin/sh");
  auto st = readPidStat(child.pid());
  REQUIRE(st.ok());
  CHECK(st->pid == static_cast<uint32_t>(child.pid()));
  child.signal(SIGKILL);
  REQUIRE(child.wait(std::chrono::seconds(5)).has_value());
  auto gone = readCmdline(child.pid());
  CHECK(absl::IsNotFound(gone.status()));
  CHECK(absl::IsNotFound(readPidStat(child.pid()).status()));
}

}  // namespace
}  // namespace vigil::host

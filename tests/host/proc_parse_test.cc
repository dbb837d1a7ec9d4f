// The /proc parsers against text captured on a Debian 12 / Linux 6.18 test machine, and
// against odd text: truncated lines, extra columns, garbage, empty files.
#include "userspace/host/proc_parse.h"

#include <catch2/catch.hpp>

namespace vigil::host {
namespace {

constexpr const char* kStat =
    "cpu  93043 0 15096 219316 518 0 109 54 0 0\n"
    "cpu0 45868 0 6903 111189 58 0 15 26 0 0\n"
    "cpu1 47174 0 8192 108127 460 0 93 28 0 0\n"
    "intr 551541 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 14 0 0 0 0 328 149\n"
    "ctxt 2559777\n"
    "btime 1795663987\n"
    "processes 21625\n"
    "procs_running 10\n"
    "procs_blocked 0\n"
    "softirq 123 0 1 2 3 4 5 6 7 8 9\n";

TEST_CASE("/proc/stat: CPU modes per CPU and total, and the scalar lines") {
  auto st = parseProcStat(kStat);
  REQUIRE(st.ok());
  REQUIRE(st->total.has_value());
  CHECK(st->total->user == 93043);
  CHECK(st->total->iowait == 518);
  CHECK(st->total->steal == 54);
  REQUIRE(st->cpus.size() == 2);
  CHECK(st->cpus[0].cpu == "0");
  CHECK(st->cpus[1].cpu == "1");
  CHECK(st->cpus[1].system == 8192);
  CHECK(st->cpus[1].softirq == 93);
  CHECK(st->context_switches == 2559777u);
  CHECK(st->forks == 21625u);
  CHECK(st->interrupts == 551541u);
  CHECK(st->boot_time == 1795663987u);
  CHECK(st->procs_running == 10u);
  CHECK(st->procs_blocked == 0u);
  CHECK(st->skipped == 0);
}

TEST_CASE("/proc/stat: truncated and garbled lines are skipped and counted") {
  auto st = parseProcStat(
      "cpu  1 2 3 4 5 6 7 8 9 10 11 12\n"  // extra columns from a future kernel: ignored
      "cpu0 1 2\n"                         // truncated
      "cpu1 1 2 3 4 x 6 7 8\n"             // garbage
      "cpuX 1 2 3 4 5\n"                   // bad CPU number
      "cpu2 1 2 3 4\n"                     // an old kernel's four columns
      "ctxt\n"                             // no value
      "btime -5\n");
  REQUIRE(st.ok());
  CHECK(st->total->guest_nice == 10);
  REQUIRE(st->cpus.size() == 1);
  CHECK(st->cpus[0].cpu == "2");
  CHECK(st->cpus[0].idle == 4);
  CHECK(st->cpus[0].iowait == 0);
  CHECK(st->skipped == 5);
  CHECK_FALSE(st->context_switches.has_value());
}

TEST_CASE("/proc/stat: empty or foreign text is an error, not a crash") {
  CHECK_FALSE(parseProcStat("").ok());
  CHECK_FALSE(parseProcStat("hello world\n\n").ok());
  CHECK_FALSE(parseProcStat(std::string("\0\0\0", 3)).ok());
}

TEST_CASE("/proc/loadavg") {
  auto l = parseLoadAvg("6.03 4.11 2.13 10/162 21625\n");
  REQUIRE(l.ok());
  CHECK(l->load1 == 6.03);
  CHECK(l->load5 == 4.11);
  CHECK(l->load15 == 2.13);
  CHECK_FALSE(parseLoadAvg("6.03 4.1").ok());
  CHECK_FALSE(parseLoadAvg("a b c d e").ok());
}

TEST_CASE("/proc/meminfo: kB scaled to bytes, unitless values kept, bad lines counted") {
  auto m = parseMemInfo(
      "MemTotal:       24684084 kB\n"
      "MemFree:        20561408 kB\n"
      "MemAvailable:   22029252 kB\n"
      "Buffers:           12236 kB\n"
      "Cached:          1632496 kB\n"
      "HugePages_Total:       0\n"
      "Broken line without colon\n"
      "Weird:   12 MB\n"
      "Trunc");
  REQUIRE(m.ok());
  CHECK(m->get("MemTotal") == 24684084ull * 1024);
  CHECK(m->get("MemAvailable") == 22029252ull * 1024);
  CHECK(m->get("HugePages_Total") == 0u);
  CHECK_FALSE(m->get("Weird").has_value());
  CHECK(m->skipped == 3);
  CHECK_FALSE(parseMemInfo("").ok());
}

constexpr const char* kMountInfo =
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k\n"
    "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k\n"
    "47 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    "60 27 0:50 / /mnt/my\\040disk ro,relatime - xfs /dev/sdb1 ro\n"
    "61 27 0:51 / /run/user/0 rw,nosuid - tmpfs tmpfs rw\n"
    "62 27 0:52 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw\n"
    "garbage\n"
    "70 27 x:y / /bad rw - ext4 /dev/x rw\n";

TEST_CASE("mountinfo: fields, octal escapes, read-only flag, bad lines counted") {
  auto mi = parseMountInfo(kMountInfo);
  REQUIRE(mi.ok());
  CHECK(mi->skipped == 2);
  REQUIRE(mi->mounts.size() == 9);
  const MountEntry& disk = mi->mounts[6];
  CHECK(disk.mountpoint == "/mnt/my disk");
  CHECK(disk.fstype == "xfs");
  CHECK(disk.source == "/dev/sdb1");
  CHECK(disk.read_only);
  CHECK(mi->mounts[3].root == "/run/netns");
  CHECK(mi->mounts[3].major == 254);
}

TEST_CASE("mountinfo: pseudo filesystems skipped and a bind mount reported once") {
  auto mi = parseMountInfo(kMountInfo);
  REQUIRE(mi.ok());
  auto keep = reportableMounts(mi->mounts);
  std::vector<std::string> points;
  for (const auto& m : keep) {
    points.push_back(m.mountpoint);
  }
  // /run/netns is a bind of the root filesystem's directory: the root mount wins, in the
  // position of the first mount of that device.
  CHECK(points == std::vector<std::string>{"/", "/mnt/my disk", "/run/user/0"});
}

TEST_CASE("unescapeOctal leaves incomplete escapes alone") {
  CHECK(unescapeOctal("a\\040b") == "a b");
  CHECK(unescapeOctal("a\\134b") == "a\\b");
  CHECK(unescapeOctal("end\\04") == "end\\04");
  CHECK(unescapeOctal("\\999") == "\\999");
}

TEST_CASE("/proc/diskstats: 18-column lines, older 14-column lines, bad lines") {
  auto ds = parseDiskStats(
      " 254       0 vda 79061 9310 5057370 90502 22646 14375 9386456 29626 0 13848 122635 9952 "
      "68 5575968 2403 2260 102\n"
      "   8       0 sda 10 0 80 5 20 0 160 7 1 30 40\n"
      "   8       1 sdb 1 2 3\n"
      "   8       2 sdc a b c d e f g h i j k\n");
  REQUIRE(ds.ok());
  REQUIRE(ds->disks.size() == 2);
  const DiskStats& vda = ds->disks[0];
  CHECK(vda.device == "vda");
  CHECK(vda.reads == 79061);
  CHECK(vda.read_sectors == 5057370);
  CHECK(vda.writes == 22646);
  CHECK(vda.write_sectors == 9386456);
  CHECK(vda.io_ms == 13848);
  CHECK(vda.weighted_io_ms == 122635);
  CHECK(vda.discards == 9952u);
  CHECK(vda.discard_sectors == 5575968u);
  CHECK(vda.flushes == 2260u);
  CHECK(vda.flush_ms == 102u);
  CHECK_FALSE(ds->disks[1].discards.has_value());
  CHECK(ds->skipped == 2);
}

TEST_CASE("ignoredDisk follows node_exporter's default exclusions") {
  for (const char* d :
       {"loop0", "ram12", "fd0", "sda1", "vdb2", "xvda1", "nvme0n1p1", "mmcblk0p2"}) {
    INFO(d);
    CHECK(ignoredDisk(d));
  }
  for (const char* d : {"vda", "sda", "nvme0n1", "zram0", "dm-0", "md0", "mmcblk0", "loop"}) {
    INFO(d);
    CHECK_FALSE(ignoredDisk(d));
  }
}

constexpr const char* kNetDev =
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
    "drop fifo colls carrier compressed\n"
    "    lo: 2994097    9087    0    0    0     0          0         0  2994097    9087    0    "
    "0    0     0       0          0\n"
    "  eth0: 87702789    1818    1    2    0     0          0         0    78768    1023    3    "
    "4    0     0       0          0\n"
    "cni-podman0:     208       3    0    0    0     0          0         3      414       5    "
    "0    2    0     0       0          0\n";

TEST_CASE("/proc/net/dev: receive and transmit columns per interface") {
  auto nd = parseNetDev(kNetDev);
  REQUIRE(nd.ok());
  REQUIRE(nd->interfaces.size() == 3);
  CHECK(nd->interfaces[1].interface == "eth0");
  CHECK(nd->interfaces[1].rx_bytes == 87702789);
  CHECK(nd->interfaces[1].rx_errs == 1);
  CHECK(nd->interfaces[1].rx_drop == 2);
  CHECK(nd->interfaces[1].tx_bytes == 78768);
  CHECK(nd->interfaces[1].tx_errs == 3);
  CHECK(nd->interfaces[1].tx_drop == 4);
  CHECK(nd->interfaces[2].interface == "cni-podman0");
  CHECK(nd->interfaces[2].rx_multicast == 3);
  CHECK(nd->skipped == 0);
}

TEST_CASE("/proc/net/dev: a counter glued to the name, truncated lines") {
  auto nd = parseNetDev(
      "eth1:4294967296 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
      "eth2: 1 2 3\n"
      "no colon here 1 2 3\n");
  REQUIRE(nd.ok());
  REQUIRE(nd->interfaces.size() == 1);
  CHECK(nd->interfaces[0].interface == "eth1");
  CHECK(nd->interfaces[0].rx_bytes == 4294967296ull);
  CHECK(nd->skipped == 2);
  CHECK_FALSE(parseNetDev("eth2: 1 2 3\n").ok());
}

TEST_CASE("PSI: some and full lines, total in microseconds; cpu without full") {
  auto p = parsePressure(
      "some avg10=0.13 avg60=1.01 avg300=0.43 total=6845081\n"
      "full avg10=0.00 avg60=0.00 avg300=0.00 total=4036747\n");
  REQUIRE(p.ok());
  REQUIRE(p->some);
  REQUIRE(p->full);
  CHECK(p->some->total_us == 6845081);
  CHECK(p->some->avg60 == 1.01);
  CHECK(p->full->total_us == 4036747);
  auto cpu = parsePressure("some avg10=99.36 avg60=77.73 avg300=56.10 total=358680308\n");
  REQUIRE(cpu.ok());
  CHECK_FALSE(cpu->full.has_value());
  auto odd = parsePressure("some avg10=1 total=5 newfield=7\nfull total=x\nother\n");
  REQUIRE(odd.ok());
  CHECK(odd->some->total_us == 5);
  CHECK(odd->skipped == 2);
  CHECK_FALSE(parsePressure("").ok());
}

TEST_CASE("file-nr and uptime") {
  auto f = parseFileNr("1320\t0\t2466170\n");
  REQUIRE(f.ok());
  CHECK(f->allocated == 1320);
  CHECK(f->maximum == 2466170);
  CHECK_FALSE(parseFileNr("1320 0").ok());
  auto u = parseUptime("1644.42 2193.16\n");
  REQUIRE(u.ok());
  CHECK(u->uptime_seconds == 1644.42);
  CHECK_FALSE(parseUptime("-1 2").ok());
  CHECK_FALSE(parseUptime("").ok());
}

TEST_CASE("/proc/<pid>/stat: comm with spaces and parentheses ends at the last ')'") {
  auto s = parsePidStat(
      "21632 (my (odd) proc) R 21619 21619 8564 0 -1 4194304 101 0 0 0 7 3 0 0 20 0 4 0 164442 "
      "3133440 365 18446744073709551615 94056757690368\n");
  REQUIRE(s.ok());
  CHECK(s->pid == 21632);
  CHECK(s->comm == "my (odd) proc");
  CHECK(s->state == 'R');
  CHECK(s->ppid == 21619);
  CHECK(s->utime_ticks == 7);
  CHECK(s->stime_ticks == 3);
  CHECK(s->num_threads == 4);
  CHECK(s->start_ticks == 164442);
  CHECK(s->rss_pages == 365);
}

TEST_CASE("/proc/<pid>/stat: truncated (process exiting mid-read) and garbage are errors") {
  CHECK_FALSE(parsePidStat("").ok());
  CHECK_FALSE(parsePidStat("21632 (cat) R 21619 21619").ok());
  CHECK_FALSE(parsePidStat("21632 cat R 1 2 3").ok());
  CHECK_FALSE(parsePidStat("x (cat) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21").ok());
  // A newline inside comm is legal (prctl(PR_SET_NAME)) and must not break the parse.
  auto nl = parsePidStat("5 (a\nb) S 1 5 5 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 100 0 10 0 0\n");
  REQUIRE(nl.ok());
  CHECK(nl->comm == "a\nb");
}

TEST_CASE("cleanCmdline: NULs to spaces, control characters replaced, bounded on UTF-8") {
  CHECK(cleanCmdline(std::string("sleep\0"
                                 "10\0",
                                 9),
                     100) == "sleep 10");
  CHECK(cleanCmdline(std::string("sh\0-c\0echo a\nb\0", 16), 100) == "sh -c echo a?b");
  CHECK(cleanCmdline("", 100).empty());
  CHECK(cleanCmdline("abcdef", 3) == "abc");
  // "é" is two bytes: a cut inside it drops the whole character.
  CHECK(cleanCmdline("ab\xc3\xa9", 3) == "ab");
}

}  // namespace
}  // namespace vigil::host

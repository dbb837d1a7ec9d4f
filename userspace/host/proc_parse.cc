#include "userspace/host/proc_parse.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace vigil::host {
namespace {

std::vector<absl::string_view> fields(absl::string_view line) {
  return absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
}

std::vector<absl::string_view> lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipWhitespace());
}

bool u64(absl::string_view s, uint64_t* out) { return absl::SimpleAtoi(s, out); }

absl::Status empty(const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": no parseable content"));
}

}  // namespace

absl::StatusOr<ProcStat> parseProcStat(absl::string_view text) {
  ProcStat out;
  bool any = false;
  for (absl::string_view line : lines(text)) {
    auto f = fields(line);
    if (f.empty()) {
      continue;
    }
    absl::string_view key = f[0];
    if (absl::StartsWith(key, "cpu")) {
      // user nice system idle iowait irq softirq steal guest guest_nice; older kernels have
      // fewer columns (steal since 2.6.11, guest_nice since 2.6.33): missing ones stay 0.
      absl::string_view num = key.substr(3);
      uint32_t cpu_index = 0;
      if (f.size() < 5 || (!num.empty() && !absl::SimpleAtoi(num, &cpu_index))) {
        ++out.skipped;
        continue;
      }
      CpuTimes t;
      t.cpu = std::string(num);
      uint64_t* cols[] = {&t.user, &t.nice,    &t.system, &t.idle,  &t.iowait,
                          &t.irq,  &t.softirq, &t.steal,  &t.guest, &t.guest_nice};
      bool ok = true;
      for (size_t i = 1; i < f.size() && i <= 10; ++i) {
        ok &= u64(f[i], cols[i - 1]);
      }
      if (!ok) {
        ++out.skipped;
        continue;
      }
      if (num.empty()) {
        out.total = t;
      } else {
        out.cpus.push_back(std::move(t));
      }
      any = true;
      continue;
    }
    std::optional<uint64_t>* target = nullptr;
    if (key == "ctxt") {
      target = &out.context_switches;
    } else if (key == "processes") {
      target = &out.forks;
    } else if (key == "intr") {
      target = &out.interrupts;
    } else if (key == "btime") {
      target = &out.boot_time;
    } else if (key == "procs_running") {
      target = &out.procs_running;
    } else if (key == "procs_blocked") {
      target = &out.procs_blocked;
    } else {
      continue;  // page, swap, softirq and lines newer kernels may add
    }
    uint64_t v = 0;
    if (f.size() < 2 || !u64(f[1], &v)) {
      ++out.skipped;
      continue;
    }
    *target = v;
    any = true;
  }
  if (!any) {
    return empty("/proc/stat");
  }
  return out;
}

absl::StatusOr<LoadAvg> parseLoadAvg(absl::string_view text) {
  auto f = fields(absl::StripAsciiWhitespace(text));
  LoadAvg out;
  if (f.size() < 3 || !absl::SimpleAtod(f[0], &out.load1) || !absl::SimpleAtod(f[1], &out.load5) ||
      !absl::SimpleAtod(f[2], &out.load15)) {
    return absl::InvalidArgumentError(
        absl::StrCat("/proc/loadavg: expected three numbers, got '", text.substr(0, 64), "'"));
  }
  return out;
}

std::optional<uint64_t> MemInfo::get(absl::string_view key) const {
  for (const auto& [k, v] : fields) {
    if (k == key) {
      return v;
    }
  }
  return std::nullopt;
}

absl::StatusOr<MemInfo> parseMemInfo(absl::string_view text) {
  MemInfo out;
  for (absl::string_view line : lines(text)) {
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      ++out.skipped;
      continue;
    }
    auto f = fields(line.substr(colon + 1));
    uint64_t v = 0;
    if (f.empty() || f.size() > 2 || !u64(f[0], &v) || (f.size() == 2 && f[1] != "kB")) {
      ++out.skipped;
      continue;
    }
    if (f.size() == 2) {
      v *= 1024;
    }
    out.fields.emplace_back(std::string(absl::StripAsciiWhitespace(line.substr(0, colon))), v);
  }
  if (out.fields.empty()) {
    return empty("/proc/meminfo");
  }
  return out;
}

std::string unescapeOctal(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

absl::StatusOr<MountInfo> parseMountInfo(absl::string_view text) {
  // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
  // (1)(2)(3)   (4)   (5)      (6)      (7...)  (8)(9)   (10)         (11)
  MountInfo out;
  for (absl::string_view line : lines(text)) {
    auto f = fields(line);
    size_t dash = 0;
    for (size_t i = 6; i < f.size(); ++i) {
      if (f[i] == "-") {
        dash = i;
        break;
      }
    }
    if (f.size() < 10 || dash == 0 || dash + 2 >= f.size()) {
      ++out.skipped;
      continue;
    }
    std::pair<absl::string_view, absl::string_view> mm = absl::StrSplit(f[2], ':');
    MountEntry m;
    if (!absl::SimpleAtoi(mm.first, &m.major) || !absl::SimpleAtoi(mm.second, &m.minor)) {
      ++out.skipped;
      continue;
    }
    m.root = unescapeOctal(f[3]);
    m.mountpoint = unescapeOctal(f[4]);
    for (absl::string_view opt : absl::StrSplit(f[5], ',')) {
      m.read_only |= opt == "ro";
    }
    m.fstype = std::string(f[dash + 1]);
    m.source = unescapeOctal(f[dash + 2]);
    out.mounts.push_back(std::move(m));
  }
  if (out.mounts.empty()) {
    return empty("mountinfo");
  }
  return out;
}

bool ignoredFilesystem(const MountEntry& m) {
  static const char* const kPseudo[] = {
      "autofs",     "binfmt_misc", "bpf",       "cgroup",     "cgroup2",   "configfs",
      "debugfs",    "devpts",      "devtmpfs",  "fusectl",    "hugetlbfs", "iso9660",
      "mqueue",     "nsfs",        "overlay",   "proc",       "procfs",    "pstore",
      "rpc_pipefs", "securityfs",  "selinuxfs", "squashfs",   "sysfs",     "tracefs",
      "efivarfs",   "ramfs",       "nfsd",      "fuse.lxcfs", "rootfs"};
  for (const char* t : kPseudo) {
    if (m.fstype == t) {
      return true;
    }
  }
  for (absl::string_view prefix : {"/proc", "/sys", "/dev", "/run/credentials"}) {
    if (absl::StartsWith(m.mountpoint, prefix) &&
        (m.mountpoint.size() == prefix.size() || m.mountpoint[prefix.size()] == '/')) {
      return true;
    }
  }
  for (absl::string_view prefix : {"/var/lib/docker/", "/var/lib/containers/storage/"}) {
    if (absl::StartsWith(m.mountpoint, prefix)) {
      return true;
    }
  }
  return false;
}

std::vector<MountEntry> reportableMounts(const std::vector<MountEntry>& mounts) {
  std::vector<MountEntry> out;
  for (const MountEntry& m : mounts) {
    if (ignoredFilesystem(m)) {
      continue;
    }
    bool replaced = false;
    bool duplicate = false;
    for (MountEntry& kept : out) {
      if (kept.major == m.major && kept.minor == m.minor) {
        duplicate = true;
        // Prefer the mount of the filesystem's root over a bind mount of a subdirectory.
        if (kept.root != "/" && m.root == "/") {
          kept = m;
          replaced = true;
        }
        break;
      }
    }
    if (!duplicate && !replaced) {
      out.push_back(m);
    }
  }
  return out;
}

absl::StatusOr<DiskStatsFile> parseDiskStats(absl::string_view text) {
  DiskStatsFile out;
  for (absl::string_view line : lines(text)) {
    auto f = fields(line);
    if (f.size() < 14) {
      ++out.skipped;
      continue;
    }
    DiskStats d;
    d.device = std::string(f[2]);
    uint64_t* cols[] = {&d.reads,          &d.reads_merged,  &d.read_sectors,  &d.read_ms,
                        &d.writes,         &d.writes_merged, &d.write_sectors, &d.write_ms,
                        &d.io_in_progress, &d.io_ms,         &d.weighted_io_ms};
    bool ok = true;
    for (size_t i = 0; i < 11; ++i) {
      ok &= u64(f[3 + i], cols[i]);
    }
    uint64_t v[6] = {};
    size_t extra = std::min<size_t>(f.size() - 14, 6);
    for (size_t i = 0; i < extra; ++i) {
      ok &= u64(f[14 + i], &v[i]);
    }
    if (!ok) {
      ++out.skipped;
      continue;
    }
    if (extra >= 4) {
      d.discards = v[0];
      d.discard_sectors = v[2];
      d.discard_ms = v[3];
    }
    if (extra >= 6) {
      d.flushes = v[4];
      d.flush_ms = v[5];
    }
    out.disks.push_back(std::move(d));
  }
  if (out.disks.empty() && out.skipped > 0) {
    return empty("/proc/diskstats");
  }
  return out;
}

bool ignoredDisk(absl::string_view d) {
  auto digitsFrom = [&](size_t i) {
    if (i >= d.size()) {
      return false;
    }
    for (; i < d.size(); ++i) {
      if (!absl::ascii_isdigit(d[i])) {
        return false;
      }
    }
    return true;
  };
  for (absl::string_view p : {"ram", "loop", "fd"}) {
    if (absl::StartsWith(d, p) && digitsFrom(p.size())) {
      return true;
    }
  }
  // sda1, vdb2, hda1, xvda1: letters then a partition number.
  for (absl::string_view p : {"sd", "vd", "hd", "xvd"}) {
    if (absl::StartsWith(d, p)) {
      size_t i = p.size();
      while (i < d.size() && absl::ascii_islower(d[i])) {
        ++i;
      }
      if (i > p.size() && digitsFrom(i)) {
        return true;
      }
    }
  }
  // nvme0n1p1, mmcblk0p1.
  for (absl::string_view p : {"nvme", "mmcblk"}) {
    if (absl::StartsWith(d, p)) {
      size_t pos = d.rfind('p');
      if (pos != absl::string_view::npos && pos > p.size() && digitsFrom(pos + 1)) {
        return true;
      }
    }
  }
  return false;
}

absl::StatusOr<NetDevFile> parseNetDev(absl::string_view text) {
  NetDevFile out;
  bool any_line = false;
  for (absl::string_view line : lines(text)) {
    if (absl::StrContains(line, '|')) {
      continue;  // the two header lines
    }
    any_line = true;
    // Byte counters can run into the name on old kernels ("eth0:123"), so split at the colon;
    // interface names cannot contain ':' in /proc/net/dev (aliases are not listed).
    size_t colon = line.rfind(':');
    if (colon == absl::string_view::npos) {
      ++out.skipped;
      continue;
    }
    NetDevStats s;
    s.interface = std::string(absl::StripAsciiWhitespace(line.substr(0, colon)));
    auto f = fields(line.substr(colon + 1));
    uint64_t* cols[] = {&s.rx_bytes, &s.rx_packets, &s.rx_errs,       &s.rx_drop,
                        &s.rx_fifo,  &s.rx_frame,   &s.rx_compressed, &s.rx_multicast,
                        &s.tx_bytes, &s.tx_packets, &s.tx_errs,       &s.tx_drop,
                        &s.tx_fifo,  &s.tx_colls,   &s.tx_carrier,    &s.tx_compressed};
    bool ok = f.size() >= 16 && !s.interface.empty();
    for (size_t i = 0; ok && i < 16; ++i) {
      ok &= u64(f[i], cols[i]);
    }
    if (!ok) {
      ++out.skipped;
      continue;
    }
    out.interfaces.push_back(std::move(s));
  }
  if (out.interfaces.empty() && any_line) {
    return empty("/proc/net/dev");
  }
  return out;
}

absl::StatusOr<Pressure> parsePressure(absl::string_view text) {
  Pressure out;
  for (absl::string_view line : lines(text)) {
    auto f = fields(line);
    if (f.empty() || (f[0] != "some" && f[0] != "full")) {
      ++out.skipped;
      continue;
    }
    PressureLine p;
    int seen = 0;
    bool ok = true;
    for (size_t i = 1; i < f.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(f[i], '=');
      if (kv.first == "avg10") {
        ok &= absl::SimpleAtod(kv.second, &p.avg10);
      } else if (kv.first == "avg60") {
        ok &= absl::SimpleAtod(kv.second, &p.avg60);
      } else if (kv.first == "avg300") {
        ok &= absl::SimpleAtod(kv.second, &p.avg300);
      } else if (kv.first == "total") {
        ok &= u64(kv.second, &p.total_us);
        ++seen;
      }
    }
    if (!ok || seen != 1) {
      ++out.skipped;
      continue;
    }
    (f[0] == "some" ? out.some : out.full) = p;
  }
  if (!out.some && !out.full) {
    return empty("pressure");
  }
  return out;
}

absl::StatusOr<FileNr> parseFileNr(absl::string_view text) {
  auto f = fields(absl::StripAsciiWhitespace(text));
  FileNr out;
  if (f.size() != 3 || !u64(f[0], &out.allocated) || !u64(f[1], &out.unused) ||
      !u64(f[2], &out.maximum)) {
    return absl::InvalidArgumentError(
        absl::StrCat("file-nr: expected three integers, got '", text.substr(0, 64), "'"));
  }
  return out;
}

absl::StatusOr<Uptime> parseUptime(absl::string_view text) {
  auto f = fields(absl::StripAsciiWhitespace(text));
  Uptime out;
  if (f.size() != 2 || !absl::SimpleAtod(f[0], &out.uptime_seconds) ||
      !absl::SimpleAtod(f[1], &out.idle_seconds) || out.uptime_seconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("/proc/uptime: expected two numbers, got '", text.substr(0, 64), "'"));
  }
  return out;
}

absl::StatusOr<PidStat> parsePidStat(absl::string_view text) {
  size_t open = text.find(" (");
  size_t close = text.rfind(')');
  if (open == absl::string_view::npos || close == absl::string_view::npos || close < open) {
    return absl::InvalidArgumentError("pid stat: no '(comm)'");
  }
  PidStat out;
  if (!absl::SimpleAtoi(text.substr(0, open), &out.pid)) {
    return absl::InvalidArgumentError("pid stat: bad pid");
  }
  out.comm = std::string(text.substr(open + 2, close - open - 2));
  // Fields after comm, numbered from 3 (state) as in proc(5).
  auto f = fields(absl::StripAsciiWhitespace(text.substr(close + 1)));
  if (f.size() < 22 || f[0].size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("pid stat: ", f.size(), " fields after comm, need at least 22 (truncated?)"));
  }
  out.state = f[0][0];
  // proc(5): ppid(4) utime(14) stime(15) num_threads(20) starttime(22) rss(24).
  if (!absl::SimpleAtoi(f[1], &out.ppid) || !u64(f[11], &out.utime_ticks) ||
      !u64(f[12], &out.stime_ticks) || !u64(f[17], &out.num_threads) ||
      !u64(f[19], &out.start_ticks) || !u64(f[21], &out.rss_pages)) {
    return absl::InvalidArgumentError("pid stat: non-numeric field");
  }
  return out;
}

std::string cleanCmdline(absl::string_view raw, size_t max_bytes) {
  while (!raw.empty() && raw.back() == '\0') {
    raw.remove_suffix(1);
  }
  std::string out;
  out.reserve(std::min(raw.size(), max_bytes));
  for (char c : raw) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '\0') {
      out += ' ';
    } else if (u < 0x20 || u == 0x7f) {
      out += '?';
    } else {
      out += c;
    }
  }
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    // Back up to the start of a UTF-8 sequence (continuation bytes are 10xxxxxx).
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) {
      --cut;
    }
    out.resize(cut);
  }
  return out;
}

}  // namespace vigil::host

#include "userspace/attribution/attributor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

// The kernfs file-handle type (include/linux/exportfs.h: FILEID_KERNFS); its 8 bytes are the
// kernfs node id, which for a cgroup is what bpf_get_current_cgroup_id() returns.
constexpr int kFileIdKernfs = 0xfe;

// Walks of the hierarchy (the fallback) are rate-limited; one covers every id it finds.
constexpr int64_t kWalkIntervalNs = 1'000'000'000;
constexpr size_t kWalkMaxEntries = 200000;

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescapeOctal(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string relativeTo(const std::string& mount, const std::string& abs) {
  if (abs == mount) {
    return "/";
  }
  if (absl::StartsWith(abs, mount) && abs.size() > mount.size() && abs[mount.size()] == '/') {
    return abs.substr(mount.size());
  }
  return abs;
}

}  // namespace

std::string findCgroup2Mount(absl::string_view mountinfo) {
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n')) {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    size_t sep = line.find(" - ");
    if (sep == absl::string_view::npos) {
      continue;
    }
    std::vector<absl::string_view> pre = absl::StrSplit(line.substr(0, sep), ' ');
    std::vector<absl::string_view> post =
        absl::StrSplit(line.substr(sep + 3), ' ', absl::SkipEmpty());
    if (pre.size() >= 5 && !post.empty() && post[0] == "cgroup2") {
      return unescapeOctal(pre[4]);
    }
  }
  return "";
}

absl::StatusOr<std::unique_ptr<CgroupResolver>> CgroupResolver::create(std::string mount,
                                                                       size_t max_entries) {
  if (mount.empty()) {
    std::ifstream in("/proc/self/mountinfo");
    std::stringstream text;
    text << in.rdbuf();
    mount = findCgroup2Mount(text.str());
    if (mount.empty()) {
      return absl::NotFoundError(
          "attribution: no cgroup2 mount in /proc/self/mountinfo; processes keep their cgroup "
          "ids but get no container, pod or unit");
    }
  }
  int fd = open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("attribution: cannot open cgroup2 mount ", mount, ": ", strerror(errno)));
  }
  if (max_entries == 0) {
    max_entries = 1;
  }
  return std::unique_ptr<CgroupResolver>(new CgroupResolver(std::move(mount), fd, max_entries));
}

CgroupResolver::~CgroupResolver() { close(mount_fd_); }

bool CgroupResolver::pathByHandle(uint64_t id, std::string* path) {
  alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + sizeof(uint64_t)];
  auto* fh = reinterpret_cast<struct file_handle*>(buf);
  fh->handle_bytes = sizeof(uint64_t);
  fh->handle_type = kFileIdKernfs;
  memcpy(fh->f_handle, &id, sizeof(id));
  ++stats_.handle_lookups;
  int fd = open_by_handle_at(mount_fd_, fh, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == EPERM || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
      handles_work_ = false;  // no CAP_DAC_READ_SEARCH, or no export support: walk instead
      VIGIL_LOG_INFO("attribution: open_by_handle_at on %s fails (%s); resolving by walking",
                     mount_, strerror(errno));
    }
    return false;
  }
  char target[4096];
  ssize_t n = readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target, sizeof(target) - 1);
  close(fd);
  if (n <= 0) {
    return false;
  }
  *path = relativeTo(mount_, std::string(target, static_cast<size_t>(n)));
  return true;
}

bool CgroupResolver::pathByWalk(uint64_t id, std::string* path) {
  auto it = walk_index_.find(id);
  if (it == walk_index_.end()) {
    int64_t now = monoNs();
    if (last_walk_ns_ != 0 && now - last_walk_ns_ < kWalkIntervalNs) {
      return false;
    }
    last_walk_ns_ = now;
    ++stats_.walks;
    walk_index_.clear();
    struct stat st;
    if (stat(mount_.c_str(), &st) == 0) {
      walk_index_[st.st_ino] = "/";
    }
    std::error_code ec;
    namespace fs = std::filesystem;
    for (fs::recursive_directory_iterator
             d(mount_, fs::directory_options::skip_permission_denied, ec),
         end;
         !ec && d != end && walk_index_.size() < kWalkMaxEntries; d.increment(ec)) {
      if (d->is_directory(ec) && stat(d->path().c_str(), &st) == 0) {
        walk_index_[st.st_ino] = relativeTo(mount_, d->path().string());
      }
    }
    it = walk_index_.find(id);
    if (it == walk_index_.end()) {
      return false;
    }
  }
  *path = it->second;
  return true;
}

const ResolvedCgroup& CgroupResolver::resolve(uint64_t cgroup_id) {
  auto it = entries_.find(cgroup_id);
  if (it != entries_.end()) {
    ++stats_.hits;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    return it->second.value;
  }
  ++stats_.misses;
  ResolvedCgroup r;
  std::string path;
  bool found = false;
  if (handles_work_) {
    found = pathByHandle(cgroup_id, &path);
  }
  if (!found && !handles_work_) {
    found = pathByWalk(cgroup_id, &path);
  }
  if (found) {
    r.found = true;
    r.path = path;
    r.identity = parseCgroupPath(path);
  } else {
    ++stats_.not_found;
  }
  if (entries_.size() >= max_entries_ && !lru_.empty()) {
    entries_.erase(lru_.back());
    lru_.pop_back();
    ++stats_.evictions;
  }
  lru_.push_front(cgroup_id);
  Entry& e = entries_[cgroup_id];
  e.value = std::move(r);
  e.lru = lru_.begin();
  return e.value;
}

void Attributor::Totals::max(const ProcessStats& p) {
  cpu_ns = std::max(cpu_ns, p.cpu_ns);
  syscalls = std::max(syscalls, p.syscalls);
  syscall_errors = std::max(syscall_errors, p.syscall_errors);
  tcp_tx_bytes = std::max(tcp_tx_bytes, p.tcp_tx_bytes);
  tcp_rx_bytes = std::max(tcp_rx_bytes, p.tcp_rx_bytes);
  block_read_bytes = std::max(block_read_bytes, p.block_read_bytes);
  block_write_bytes = std::max(block_write_bytes, p.block_write_bytes);
}

void Attributor::Totals::add(const Totals& t) {
  cpu_ns += t.cpu_ns;
  syscalls += t.syscalls;
  syscall_errors += t.syscall_errors;
  tcp_tx_bytes += t.tcp_tx_bytes;
  tcp_rx_bytes += t.tcp_rx_bytes;
  block_read_bytes += t.block_read_bytes;
  block_write_bytes += t.block_write_bytes;
}

absl::StatusOr<std::unique_ptr<Attributor>> Attributor::create(std::string mount,
                                                               size_t max_entries) {
  auto r = CgroupResolver::create(std::move(mount), max_entries);
  if (!r.ok()) {
    return r.status();
  }
  return std::unique_ptr<Attributor>(new Attributor(std::move(*r)));
}

void Attributor::annotate(Snapshot& snap) {
  // Processes: container id, and their counters remembered per cgroup.
  for (auto& [pid, p] : snap.processes) {
    if (p.cgroup_id == 0) {
      ++unattributed_processes_;
      continue;
    }
    const ResolvedCgroup& r = resolver_->resolve(p.cgroup_id);
    p.container_id = r.identity.container_id;
    LastSeen& ls = last_[pid];
    if (ls.cgroup_id != 0 && ls.cgroup_id != p.cgroup_id) {
      departed_[ls.cgroup_id].add(ls.totals);  // moved: its past stays with the old cgroup
      ls.totals = Totals{};
    }
    ls.cgroup_id = p.cgroup_id;
    ls.totals.max(p);
  }
  // Processes no longer reported, and those reported for the last time (exited), keep counting
  // for their cgroup; nothing is kept per exited process past the frame that reports its exit.
  std::vector<uint32_t> gone;
  for (const auto& [pid, ls] : last_) {
    auto it = snap.processes.find(pid);
    if (it == snap.processes.end() || it->second.exited) {
      departed_[ls.cgroup_id].add(ls.totals);
      gone.push_back(pid);
    }
  }
  for (uint32_t pid : gone) {
    last_.erase(pid);
  }
  shrinkTableIfSparse(last_);  // after a burst of short-lived processes (common/shrink.h)

  absl::flat_hash_map<uint64_t, std::pair<Totals, uint32_t>> by_cgroup;
  for (const auto& [pid, ls] : last_) {
    auto& [t, live] = by_cgroup[ls.cgroup_id];
    t.add(ls.totals);
    if (!snap.processes[pid].exited) {
      ++live;
    }
  }
  for (const auto& [cg, t] : departed_) {
    by_cgroup[cg].first.add(t);
  }
  std::vector<uint64_t> vanished;
  for (const auto& [cg, entry] : by_cgroup) {
    const ResolvedCgroup& r = resolver_->resolve(cg);
    const auto& [t, live] = entry;
    ContainerStats c;
    c.cgroup_id = cg;
    c.cgroup_path = r.found ? r.path : absl::StrCat("unknown:", cg);
    c.container_id = r.identity.container_id;
    c.runtime = r.identity.runtime;
    c.pod_uid = r.identity.pod_uid;
    c.qos_class = r.identity.qos_class;
    c.systemd_unit = r.identity.systemd_unit;
    c.cpu_ns = t.cpu_ns;
    c.syscalls = t.syscalls;
    c.syscall_errors = t.syscall_errors;
    c.tcp_tx_bytes = t.tcp_tx_bytes;
    c.tcp_rx_bytes = t.tcp_rx_bytes;
    c.block_read_bytes = t.block_read_bytes;
    c.block_write_bytes = t.block_write_bytes;
    c.processes = live;
    snap.containers.push_back(std::move(c));
    if (live == 0 && !r.found) {
      vanished.push_back(cg);  // the cgroup is gone: reported a last time, then forgotten
    }
  }
  for (uint64_t cg : vanished) {
    departed_.erase(cg);
  }

  // Events.
  for (auto& o : snap.events) {
    wire::Event::Builder e = o.get();
    if (e.getCgroupId() == 0) {
      ++unattributed_events_;
      continue;
    }
    const ResolvedCgroup& r = resolver_->resolve(e.getCgroupId());
    if (!r.identity.container_id.empty()) {
      e.setContainerId(r.identity.container_id);
    }
    if (!r.identity.pod_uid.empty()) {
      e.setPodUid(r.identity.pod_uid);
    }
  }

  const CgroupResolver::Stats& s = resolver_->stats();
  auto counter = [&](const char* name, Labels l, uint64_t v) {
    snap.self.push_back(MetricSample{name, std::move(l), static_cast<double>(v), true});
  };
  counter("vigil_attribution_cache_hits_total", {}, s.hits);
  counter("vigil_attribution_cache_misses_total", {}, s.misses);
  counter("vigil_attribution_cache_evictions_total", {}, s.evictions);
  counter("vigil_attribution_misses_total", {{"reason", "unknown_cgroup"}}, s.not_found);
  counter("vigil_attribution_misses_total", {{"reason", "no_cgroup_id"}},
          unattributed_processes_ + unattributed_events_);
  counter("vigil_attribution_lookups_total", {{"method", "file_handle"}}, s.handle_lookups);
  counter("vigil_attribution_lookups_total", {{"method", "walk"}}, s.walks);
  snap.self.push_back(MetricSample{
      "vigil_attribution_cache_entries", {}, static_cast<double>(resolver_->size()), false});
  snap.self.push_back(MetricSample{
      "vigil_attribution_tracked_processes", {}, static_cast<double>(last_.size()), false});
  snap.self.push_back(MetricSample{
      "vigil_attribution_departed_cgroups", {}, static_cast<double>(departed_.size()), false});
}

}  // namespace vigil

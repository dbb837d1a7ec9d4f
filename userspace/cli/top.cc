#include "userspace/cli/top.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "userspace/cli/snapshot_json.h"

namespace vigil::cli {
namespace {

using nlohmann::json;

bool collectorUp(const Snapshot& s, std::initializer_list<const char*> names) {
  for (const CollectorState& c : s.collectors) {
    for (const char* n : names) {
      if (c.up && c.name == n) {
        return true;
      }
    }
  }
  return false;
}

uint64_t delta(uint64_t cur, uint64_t prev) { return cur >= prev ? cur - prev : cur; }

std::string label(const Labels& labels, const char* key) {
  for (const auto& [k, v] : labels) {
    if (k == key) {
      return v;
    }
  }
  return "";
}

bool isRunqHistogram(const HistogramSample& h) {
  return absl::StrContains(h.name, "runqueue") || absl::StrContains(h.name, "runq");
}

// Run-queue histograms keyed by pid (process ones) and by cgroup id (cgroup ones).
struct RunqIndex {
  absl::flat_hash_map<std::string, const HistogramSample*> by_pid;
  absl::flat_hash_map<std::string, const HistogramSample*> by_cgroup;
  uint64_t unit_ns = 1000;
};

RunqIndex indexRunq(const Snapshot& s) {
  RunqIndex idx;
  for (const HistogramSample& h : s.histograms) {
    if (!isRunqHistogram(h)) {
      continue;
    }
    std::string pid = label(h.labels, "pid");
    std::string cg = label(h.labels, "cgroup_id");
    if (!pid.empty()) {
      idx.by_pid[pid] = &h;
      idx.unit_ns = h.unit_ns;
    } else if (!cg.empty()) {
      idx.by_cgroup[cg] = &h;
    }
  }
  return idx;
}

// cur - prev bucket-wise (prev missing or larger: cur alone).
void addDelta(std::vector<uint64_t>& acc, const HistogramSample* cur, const HistogramSample* prev) {
  if (cur == nullptr) {
    return;
  }
  bool reset = prev == nullptr || prev->count > cur->count;
  acc.resize(std::max(acc.size(), cur->buckets.size()));
  for (size_t i = 0; i < cur->buckets.size(); ++i) {
    uint64_t p = (!reset && i < prev->buckets.size()) ? prev->buckets[i] : 0;
    acc[i] += delta(cur->buckets[i], p);
  }
}

const HistogramSample* find(const absl::flat_hash_map<std::string, const HistogramSample*>& m,
                            const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? nullptr : it->second;
}

struct Accum {
  TopRow row;
  std::vector<uint64_t> runq;
  bool runq_seen = false;
  absl::flat_hash_map<uint64_t, bool> cgroups;
};

}  // namespace

TopColumns availableColumns(const Snapshot& s) {
  TopColumns c;
  c.cpu = collectorUp(s, {"sched"});
  c.runq = false;
  for (const HistogramSample& h : s.histograms) {
    c.runq |= isRunqHistogram(h);
  }
  c.syscalls = collectorUp(s, {"syscalls", "syscall"});
  c.net = collectorUp(s, {"net", "tcp", "network"});
  c.block = collectorUp(s, {"block", "blockio"});
  return c;
}

std::optional<TopSort> parseSortKey(const std::string& s) {
  static const std::pair<const char*, TopSort> kKeys[] = {
      {"cpu", TopSort::kCpu},    {"c", TopSort::kCpu},         {"syscalls", TopSort::kSyscalls},
      {"s", TopSort::kSyscalls}, {"errors", TopSort::kErrors}, {"e", TopSort::kErrors},
      {"net", TopSort::kNet},    {"n", TopSort::kNet},         {"block", TopSort::kBlock},
      {"b", TopSort::kBlock},    {"runq", TopSort::kRunq},     {"r", TopSort::kRunq},
      {"pid", TopSort::kPid},    {"p", TopSort::kPid}};
  for (const auto& [k, v] : kKeys) {
    if (s == k) {
      return v;
    }
  }
  return std::nullopt;
}

const char* sortName(TopSort s) {
  switch (s) {
    case TopSort::kCpu:
      return "cpu";
    case TopSort::kSyscalls:
      return "syscalls";
    case TopSort::kErrors:
      return "errors";
    case TopSort::kNet:
      return "net";
    case TopSort::kBlock:
      return "block";
    case TopSort::kRunq:
      return "runq";
    case TopSort::kPid:
      return "pid";
  }
  return "cpu";
}

std::vector<TopRow> computeRows(const Snapshot& prev, const Snapshot& cur, double seconds,
                                bool by_container, const TopFilter& filter) {
  if (seconds <= 0) {
    seconds = 1;
  }
  RunqIndex rq_cur = indexRunq(cur), rq_prev = indexRunq(prev);
  std::map<std::string, Accum> groups;  // ordered: stable output for equal sort keys
  for (const auto& [pid, p] : cur.processes) {
    if (filter.pid != 0 && pid != filter.pid) {
      continue;
    }
    if (!filter.container.empty() && !absl::StartsWith(p.container_id, filter.container)) {
      continue;
    }
    if (!filter.comm.empty() && !absl::StrContains(p.comm, filter.comm)) {
      continue;
    }
    ProcessStats zero;
    auto it = prev.processes.find(pid);
    const ProcessStats& q = it == prev.processes.end() ? zero : it->second;
    std::string key = by_container ? (p.container_id.empty() ? "(host)" : p.container_id)
                                   : absl::StrFormat("%010u", pid);
    bool fresh = groups.find(key) == groups.end();
    Accum& a = groups[key];
    TopRow& r = a.row;
    if (by_container) {
      r.container = key;
      if (fresh) {
        r.processes = 0;
      }
    } else {
      r.pid = pid;
      r.comm = p.comm;
      r.container = p.container_id;
    }
    r.cpu_percent += delta(p.cpu_ns, q.cpu_ns) / (seconds * 1e9) * 100.0;
    r.syscalls_per_s += delta(p.syscalls, q.syscalls) / seconds;
    r.errors_per_s += delta(p.syscall_errors, q.syscall_errors) / seconds;
    r.tx_bytes_per_s += delta(p.tcp_tx_bytes, q.tcp_tx_bytes) / seconds;
    r.rx_bytes_per_s += delta(p.tcp_rx_bytes, q.tcp_rx_bytes) / seconds;
    r.retransmits_per_s += delta(p.tcp_retransmits, q.tcp_retransmits) / seconds;
    r.block_bytes_per_s += (delta(p.block_read_bytes, q.block_read_bytes) +
                            delta(p.block_write_bytes, q.block_write_bytes)) /
                           seconds;
    std::string pid_s = absl::StrCat(pid);
    if (!by_container) {
      const HistogramSample* h = find(rq_cur.by_pid, pid_s);
      if (h != nullptr) {
        a.runq_seen = true;
        addDelta(a.runq, h, find(rq_prev.by_pid, pid_s));
      }
    } else if (p.cgroup_id != 0 && !a.cgroups.contains(p.cgroup_id)) {
      a.cgroups[p.cgroup_id] = true;
      std::string cg = absl::StrCat(p.cgroup_id);
      const HistogramSample* h = find(rq_cur.by_cgroup, cg);
      if (h != nullptr) {
        a.runq_seen = true;
        addDelta(a.runq, h, find(rq_prev.by_cgroup, cg));
      }
    }
    if (by_container) {
      ++a.row.processes;
    }
  }
  std::vector<TopRow> rows;
  for (auto& [key, a] : groups) {
    if (a.runq_seen) {
      double p50 = log2Quantile(a.runq, rq_cur.unit_ns, 0.5);
      double p99 = log2Quantile(a.runq, rq_cur.unit_ns, 0.99);
      if (p50 >= 0) {
        a.row.runq_p50 = p50;
        a.row.runq_p99 = p99;
      }
    }
    rows.push_back(std::move(a.row));
  }
  return rows;
}

void sortRows(std::vector<TopRow>& rows, TopSort sort) {
  auto key = [sort](const TopRow& r) -> double {
    switch (sort) {
      case TopSort::kCpu:
        return r.cpu_percent;
      case TopSort::kSyscalls:
        return r.syscalls_per_s;
      case TopSort::kErrors:
        return r.errors_per_s;
      case TopSort::kNet:
        return r.tx_bytes_per_s + r.rx_bytes_per_s;
      case TopSort::kBlock:
        return r.block_bytes_per_s;
      case TopSort::kRunq:
        return r.runq_p99.value_or(-1);
      case TopSort::kPid:
        return -static_cast<double>(r.pid);
    }
    return 0;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const TopRow& a, const TopRow& b) {
    double ka = key(a), kb = key(b);
    if (ka != kb) {
      return ka > kb;
    }
    return a.cpu_percent > b.cpu_percent;
  });
}

TopHeader headerFrom(const Snapshot& cur, double interval_s) {
  TopHeader h;
  h.node = cur.agent.node_name;
  time_t now = cur.end_unix_ns / 1000000000;
  struct tm tm;
  localtime_r(&now, &tm);
  h.time = absl::StrFormat("%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
  for (const MetricSample& m : cur.host) {
    if (m.name == "vigil_host_load1") {
      h.load1 = m.value;
    } else if (m.name == "vigil_host_load5") {
      h.load5 = m.value;
    } else if (m.name == "vigil_host_load15") {
      h.load15 = m.value;
    } else if (m.name == "vigil_host_memory_total_bytes") {
      h.mem_total = m.value;
    } else if (m.name == "vigil_host_memory_available_bytes") {
      h.mem_available = m.value;
    }
  }
  h.interval_s = interval_s;
  return h;
}

std::string humanNumber(double v) {
  const char* suffix[] = {"", "K", "M", "G", "T", "P"};
  size_t i = 0;
  while (v >= 1000 && i + 1 < sizeof(suffix) / sizeof(suffix[0])) {
    v /= 1024;
    ++i;
  }
  if (i == 0) {
    return v == static_cast<double>(static_cast<int64_t>(v)) ? absl::StrCat(static_cast<int64_t>(v))
                                                             : absl::StrFormat("%.1f", v);
  }
  return v < 10 ? absl::StrFormat("%.1f%s", v, suffix[i]) : absl::StrFormat("%.0f%s", v, suffix[i]);
}

std::string humanSeconds(double s) {
  if (s < 1e-6) {
    return absl::StrFormat("%.0fns", s * 1e9);
  }
  if (s < 1e-3) {
    return absl::StrFormat("%.0fus", s * 1e6);
  }
  if (s < 1) {
    return s < 0.01 ? absl::StrFormat("%.1fms", s * 1e3) : absl::StrFormat("%.0fms", s * 1e3);
  }
  return absl::StrFormat("%.1fs", s);
}

std::vector<std::string> renderTop(const TopHeader& h, const std::vector<TopRow>& rows,
                                   const TopColumns& cols, TopSort sort, bool by_container,
                                   size_t width, size_t height) {
  std::vector<std::string> out;
  auto opt = [](const std::optional<double>& v, const char* fmt) {
    return v ? absl::StrFormat(fmt, *v) : std::string("-");
  };
  std::string line1 =
      absl::StrCat("vigil top - ", h.time, "  ", h.node, "  load ", opt(h.load1, "%.2f"), " ",
                   opt(h.load5, "%.2f"), " ", opt(h.load15, "%.2f"));
  if (h.mem_total && h.mem_available) {
    absl::StrAppend(&line1, "  mem ", humanNumber(*h.mem_total - *h.mem_available), "/",
                    humanNumber(*h.mem_total));
  }
  out.push_back(line1);
  out.push_back(
      absl::StrCat(by_container ? "containers: " : "processes: ", rows.size(),
                   "  sort: ", sortName(sort), "  every ", absl::StrFormat("%gs", h.interval_s),
                   "  keys: c s e n b r p sort, q quit", h.status.empty() ? "" : "  ", h.status));
  out.push_back("");
  std::string head = by_container ? absl::StrFormat("%-12s %6s", "CONTAINER", "PROCS")
                                  : absl::StrFormat("%7s %-12s", "PID", "COMM");
  absl::StrAppend(&head,
                  absl::StrFormat(" %6s %5s %5s %6s %5s %6s %6s %4s %6s", "CPU%", "RQ50", "RQ99",
                                  "SYS/s", "ERR/s", "TX/s", "RX/s", "RETR", "BLK/s"));
  out.push_back(head);
  auto col = [](bool on, const std::string& v) { return on ? v : std::string("-"); };
  for (const TopRow& r : rows) {
    if (height != 0 && out.size() >= height) {
      break;
    }
    std::string line = by_container
                           ? absl::StrFormat("%-12s %6u", r.container.substr(0, 12), r.processes)
                           : absl::StrFormat("%7u %-12s", r.pid, r.comm.substr(0, 12));
    absl::StrAppend(&line, absl::StrFormat(" %6s %5s %5s %6s %5s %6s %6s %4s %6s",
                                           col(cols.cpu, absl::StrFormat("%.1f", r.cpu_percent)),
                                           r.runq_p50 ? humanSeconds(*r.runq_p50) : "-",
                                           r.runq_p99 ? humanSeconds(*r.runq_p99) : "-",
                                           col(cols.syscalls, humanNumber(r.syscalls_per_s)),
                                           col(cols.syscalls, humanNumber(r.errors_per_s)),
                                           col(cols.net, humanNumber(r.tx_bytes_per_s)),
                                           col(cols.net, humanNumber(r.rx_bytes_per_s)),
                                           col(cols.net, humanNumber(r.retransmits_per_s)),
                                           col(cols.block, humanNumber(r.block_bytes_per_s))));
    out.push_back(line);
  }
  if (height != 0 && out.size() > height) {
    out.resize(height);  // a tiny terminal: the header alone is too tall
  }
  for (std::string& l : out) {
    if (width != 0 && l.size() > width) {
      l.resize(width);
    }
  }
  return out;
}

json topToJson(const std::vector<TopRow>& rows, const TopColumns& cols, TopSort sort,
               bool by_container, double interval_s) {
  auto opt = [](bool on, double v) { return on ? json(v) : json(nullptr); };
  json out;
  out["by"] = by_container ? "container" : "process";
  out["sort"] = sortName(sort);
  out["interval_seconds"] = interval_s;
  out["columns"] = {{"cpu", cols.cpu},
                    {"runq", cols.runq},
                    {"syscalls", cols.syscalls},
                    {"net", cols.net},
                    {"block", cols.block}};
  json list = json::array();
  for (const TopRow& r : rows) {
    json o;
    if (by_container) {
      o["container_id"] = r.container;
      o["processes"] = r.processes;
    } else {
      o["pid"] = r.pid;
      o["comm"] = r.comm;
      o["container_id"] = r.container;
    }
    o["cpu_percent"] = opt(cols.cpu, r.cpu_percent);
    o["runq_p50_seconds"] = r.runq_p50 ? json(*r.runq_p50) : json(nullptr);
    o["runq_p99_seconds"] = r.runq_p99 ? json(*r.runq_p99) : json(nullptr);
    o["syscalls_per_second"] = opt(cols.syscalls, r.syscalls_per_s);
    o["syscall_errors_per_second"] = opt(cols.syscalls, r.errors_per_s);
    o["tcp_sent_bytes_per_second"] = opt(cols.net, r.tx_bytes_per_s);
    o["tcp_received_bytes_per_second"] = opt(cols.net, r.rx_bytes_per_s);
    o["tcp_retransmits_per_second"] = opt(cols.net, r.retransmits_per_s);
    o["block_bytes_per_second"] = opt(cols.block, r.block_bytes_per_s);
    list.push_back(std::move(o));
  }
  out["rows"] = list;
  return out;
}

}  // namespace vigil::cli

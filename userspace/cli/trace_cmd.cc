// `vigil trace exec|exit|tcp|oom|signal`: streams kernel events like execsnoop, exitsnoop,
// tcplife, oomkill and killsnoop. Loads only the collector the event kind needs (process or
// net), reads its ring buffer through the collector (so masking, loss accounting and the event
// model are the agent's), attributes events to containers and pods, and prints them as they
// arrive. --pid is applied in the kernel (the collectors' only_tgid rodata), as are --comm and
// the event kind for process events (ProcessOptions::only_comm / event_types, so `trace exec`
// loads only the exec program); --comm for tcp and --container are applied here.
#include <arpa/inet.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "userspace/attribution/attributor.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/trace_hist.h"
#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/process_collector.h"

namespace vigil::cli {
namespace {

enum class Kind { kExec, kExit, kTcp, kOom, kSignal };

struct Filters {
  uint32_t pid = 0;
  std::string comm;       // the exact comm
  std::string container;  // prefix of the container id
};

std::string clockTime(int64_t unix_ns) {
  time_t secs = static_cast<time_t>(unix_ns / 1000000000);
  struct tm tm;
  localtime_r(&secs, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return absl::StrFormat("%s.%03d", buf, static_cast<int>((unix_ns / 1000000) % 1000));
}

std::string address(uint16_t family, capnp::Data::Reader bytes) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (family == AF_INET && bytes.size() >= 4) {
    inet_ntop(AF_INET, bytes.begin(), buf, sizeof(buf));
  } else if (family == AF_INET6 && bytes.size() >= 16) {
    inet_ntop(AF_INET6, bytes.begin(), buf, sizeof(buf));
  }
  return buf;
}

const char* tcpStateName(int s) {
  static const char* const kNames[] = {
      "?",     "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
      "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
  return s >= 0 && s < 13 ? kNames[s] : "?";
}

// connect (active open), accept (passive open) or close; "" for other transitions.
const char* tcpEventName(const wire::TcpStateEvent::Reader& t) {
  if (t.getNewState() == 1) {
    return t.getOldState() == 2 ? "connect" : "accept";
  }
  if (t.getNewState() == 7) {
    return "close";
  }
  return "";
}

std::string dash(const std::string& s) { return s.empty() ? "-" : s; }

std::string shortId(std::string id) {
  if (id.size() > 12) {
    id.resize(12);
  }
  return dash(id);
}

void printHeader(Kind kind, bool json, const std::string& what) {
  if (json) {
    fprintf(stderr, "vigil trace: tracing %s events; Ctrl-C to stop\n", what.c_str());
    return;
  }
  switch (kind) {
    case Kind::kExec:
      printf("%-12s %-7s %-7s %-16s %-12s %s\n", "TIME", "PID", "PPID", "COMM", "CONTAINER",
             "ARGV");
      break;
    case Kind::kExit:
      printf("%-12s %-7s %-7s %-16s %-12s %5s %4s %10s\n", "TIME", "PID", "PPID", "COMM",
             "CONTAINER", "EXIT", "SIG", "AGE(ms)");
      break;
    case Kind::kTcp:
      printf("%-12s %-7s %-7s %-16s %-12s %-22s %-22s %10s %10s %9s\n", "TIME", "EVENT", "PID",
             "COMM", "CONTAINER", "LOCAL", "REMOTE", "TX_BYTES", "RX_BYTES", "MS");
      break;
    case Kind::kOom:
      printf("%-12s %-7s %-16s %-12s %12s %12s\n", "TIME", "PID", "COMM", "CONTAINER",
             "TOTAL_VM_KB", "ANON_RSS_KB");
      break;
    case Kind::kSignal:
      printf("%-12s %-7s %-16s %-12s %-7s %4s %6s\n", "TIME", "PID", "COMM", "CONTAINER", "SENDER",
             "SIG", "RESULT");
      break;
  }
}

bool kindMatches(Kind kind, const wire::Event::Reader& e) {
  switch (kind) {
    case Kind::kExec:
      return e.isExec();
    case Kind::kExit:
      return e.isExit();
    case Kind::kTcp:
      return e.isTcpState() && tcpEventName(e.getTcpState())[0] != '\0';
    case Kind::kOom:
      return e.isOomKill();
    case Kind::kSignal:
      return e.isSignal();
  }
  return false;
}

bool passes(const Filters& f, const wire::Event::Reader& e) {
  if (f.pid != 0 && e.getPid() != f.pid) {
    return false;
  }
  if (!f.comm.empty() && std::string(e.getComm()) != f.comm) {
    return false;
  }
  if (!f.container.empty() && !absl::StartsWith(std::string(e.getContainerId()), f.container)) {
    return false;
  }
  return true;
}

// The kernel has released a socket's local port by the time it enters CLOSE, so close events
// carry sport 0. The port is remembered from the socket's ESTABLISHED event (connect or accept),
// keyed by the addresses and the remote port, and filled in at close.
class LocalPorts {
 public:
  // Returns the local port to print for `t`.
  uint16_t observe(const wire::TcpStateEvent::Reader& t) {
    std::string key = absl::StrCat(t.getFamily(), "|", address(t.getFamily(), t.getSaddr()), "|",
                                   address(t.getFamily(), t.getDaddr()), "|", t.getDport());
    if (t.getNewState() == 1 && t.getSport() != 0) {
      if (ports_.size() >= kMax) {
        ports_.clear();  // bounded: connections older than this lose their port (printed as 0)
      }
      ports_[key] = t.getSport();
      return t.getSport();
    }
    if (t.getNewState() == 7 && t.getSport() == 0) {
      auto it = ports_.find(key);
      if (it != ports_.end()) {
        uint16_t port = it->second;
        ports_.erase(it);
        return port;
      }
    }
    return t.getSport();
  }

 private:
  static constexpr size_t kMax = 65536;
  absl::flat_hash_map<std::string, uint16_t> ports_;
};

void printEvent(Kind kind, bool json, const wire::Event::Reader& e, uint16_t sport) {
  std::string comm = e.getComm();
  std::string container = e.getContainerId();
  if (json) {
    nlohmann::json j;
    j["time_unix_ns"] = e.getTimestampNs();
    j["pid"] = e.getPid();
    j["tid"] = e.getTid();
    j["ppid"] = e.getPpid();
    j["comm"] = comm;
    j["cgroup_id"] = e.getCgroupId();
    j["container_id"] = container;
    j["pod_uid"] = std::string(e.getPodUid());
    switch (kind) {
      case Kind::kExec: {
        auto x = e.getExec();
        j["event"] = "exec";
        j["filename"] = std::string(x.getFilename());
        j["argv"] = std::string(x.getArgv());
        j["argv_truncated"] = x.getArgvTruncated();
        break;
      }
      case Kind::kExit: {
        auto x = e.getExit();
        j["event"] = "exit";
        j["exit_code"] = x.getExitCode();
        j["signal"] = x.getSignal();
        j["core_dumped"] = x.getCoreDumped();
        j["lifetime_ns"] = x.getLifetimeNs();
        break;
      }
      case Kind::kTcp: {
        auto t = e.getTcpState();
        j["event"] = tcpEventName(t);
        j["family"] = t.getFamily() == AF_INET6 ? "ipv6" : "ipv4";
        j["saddr"] = address(t.getFamily(), t.getSaddr());
        j["sport"] = sport;
        j["daddr"] = address(t.getFamily(), t.getDaddr());
        j["dport"] = t.getDport();
        j["old_state"] = tcpStateName(t.getOldState());
        j["new_state"] = tcpStateName(t.getNewState());
        j["tx_bytes"] = t.getTxBytes();
        j["rx_bytes"] = t.getRxBytes();
        j["duration_ns"] = t.getDurationNs();
        j["lifetime_ns"] = t.getLifetimeNs();
        j["socket_error"] = t.getSocketError();
        j["srtt_us"] = t.getSrttUs();
        break;
      }
      case Kind::kOom: {
        auto x = e.getOomKill();
        j["event"] = "oom_kill";
        j["total_vm_kb"] = x.getTotalVmKb();
        j["anon_rss_kb"] = x.getAnonRssKb();
        break;
      }
      case Kind::kSignal: {
        auto x = e.getSignal();
        j["event"] = "signal";
        j["signal"] = x.getSignal();
        j["sender_pid"] = x.getSenderPid();
        j["result"] = x.getResult();
        break;
      }
    }
    fputs(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str(), stdout);
    fputc('\n', stdout);
    return;
  }
  std::string t = clockTime(e.getTimestampNs());
  switch (kind) {
    case Kind::kExec: {
      auto x = e.getExec();
      printf("%-12s %-7u %-7u %-16s %-12s %s%s\n", t.c_str(), e.getPid(), e.getPpid(), comm.c_str(),
             shortId(container).c_str(), std::string(x.getArgv()).c_str(),
             x.getArgvTruncated() ? " ..." : "");
      break;
    }
    case Kind::kExit: {
      auto x = e.getExit();
      printf("%-12s %-7u %-7u %-16s %-12s %5d %4d %10.1f\n", t.c_str(), e.getPid(), e.getPpid(),
             comm.c_str(), shortId(container).c_str(), x.getExitCode(), x.getSignal(),
             x.getLifetimeNs() / 1e6);
      break;
    }
    case Kind::kTcp: {
      auto x = e.getTcpState();
      std::string local = absl::StrCat(address(x.getFamily(), x.getSaddr()), ":", sport);
      std::string remote = absl::StrCat(address(x.getFamily(), x.getDaddr()), ":", x.getDport());
      printf("%-12s %-7s %-7u %-16s %-12s %-22s %-22s %10lu %10lu %9.3f\n", t.c_str(),
             tcpEventName(x), e.getPid(), comm.c_str(), shortId(container).c_str(), local.c_str(),
             remote.c_str(), static_cast<unsigned long>(x.getTxBytes()),
             static_cast<unsigned long>(x.getRxBytes()),
             (x.getNewState() == 7 ? x.getLifetimeNs() : x.getDurationNs()) / 1e6);
      break;
    }
    case Kind::kOom: {
      auto x = e.getOomKill();
      printf("%-12s %-7u %-16s %-12s %12lu %12lu\n", t.c_str(), e.getPid(), comm.c_str(),
             shortId(container).c_str(), static_cast<unsigned long>(x.getTotalVmKb()),
             static_cast<unsigned long>(x.getAnonRssKb()));
      break;
    }
    case Kind::kSignal: {
      auto x = e.getSignal();
      printf("%-12s %-7u %-16s %-12s %-7u %4d %6d\n", t.c_str(), e.getPid(), comm.c_str(),
             shortId(container).c_str(), x.getSenderPid(), x.getSignal(), x.getResult());
      break;
    }
  }
}

// Sums a self metric over the samples whose labels include `want`.
uint64_t selfSum(const Snapshot& s, const std::string& name, const Labels& want) {
  double total = 0;
  for (const MetricSample& m : s.self) {
    if (m.name != name) {
      continue;
    }
    bool all = true;
    for (const auto& w : want) {
      bool found = false;
      for (const auto& l : m.labels) {
        found = found || l == w;
      }
      all = all && found;
    }
    if (all) {
      total += m.value;
    }
  }
  return static_cast<uint64_t>(total);
}

}  // namespace

int runTrace(const Command& self, const Args& args) {
  if (args.positional().size() != 1) {
    return usageError(self, "name one event kind: exec, exit, tcp, oom or signal");
  }
  const std::string& what = args.positional()[0];
  Kind kind;
  if (what == "exec") {
    kind = Kind::kExec;
  } else if (what == "exit") {
    kind = Kind::kExit;
  } else if (what == "tcp") {
    kind = Kind::kTcp;
  } else if (what == "oom") {
    kind = Kind::kOom;
  } else if (what == "signal") {
    kind = Kind::kSignal;
  } else {
    return usageError(
        self, absl::StrCat("unknown event kind '", what, "': use exec, exit, tcp, oom or signal"));
  }
  auto pid = args.u32("pid", 0);
  auto duration = args.duration("duration", absl::ZeroDuration());
  auto ring_kb = args.u32("ring-kb", 0);
  if (!pid.ok()) {
    return usageError(self, std::string(pid.status().message()));
  }
  if (!duration.ok()) {
    return usageError(self, std::string(duration.status().message()));
  }
  if (!ring_kb.ok()) {
    return usageError(self, std::string(ring_kb.status().message()));
  }
  uint32_t ring_bytes = *ring_kb * 1024;
  if (ring_bytes != 0 && (ring_bytes < 4096 || (ring_bytes & (ring_bytes - 1)) != 0)) {
    return usageError(self, "--ring-kb must be a power of two, at least 4");
  }
  Filters filters{*pid, args.get("comm"), args.get("container")};
  if (filters.comm.size() > 15) {
    return usageError(self, absl::StrCat("--comm '", filters.comm,
                                         "' is longer than a kernel comm (15 bytes): give the "
                                         "first 15 characters"));
  }
  bool json = args.has("json");
  if (geteuid() != 0) {
    return collectorFailure(self, absl::PermissionDeniedError("not running as root"));
  }
  installStopHandlers();
  CoreBtfUse core_btf(args.has("verbose"));

  std::unique_ptr<ProcessCollector> proc;
  std::unique_ptr<NetCollector> net;
  if (kind == Kind::kTcp) {
    // libbpf parses vmlinux BTF at load: prepared heap memory (huge pages) makes that ~5 ms
    // faster. Here the heap is kept (~3 MiB more peak RSS): handing it back after the parse,
    // as the process kinds do, cost ~7 ms for the net object (docs/cli.md).
    if (!core_btf.active()) {
      prepareHeapForBtf(/*keep=*/true);  // with the cache the one parse comes after the header
    }
    NetOptions o;
    o.only_tgid = filters.pid;
    o.wakeup_bytes = 1;  // print each event as it happens
    // Start-up: no map preallocation at load, no retransmit/reset counter programs (the trace
    // prints neither); docs/cli.md, "Start-up cost".
    o.preallocate = false;
    o.counter_hooks = false;
    o.defer_baseline = true;  // run below, after the header
    o.force_raw_tp = true;    // verifies faster than tp_btf (docs/cli.md, "Start-up cost")
    o.lazy_iterator = true;   // the iterator (and its vmlinux BTF parse) after the header
    if (ring_bytes != 0) {
      o.ring_bytes = ring_bytes;
    }
    auto c = core_btf.create([&]() { return NetCollector::create(o); });
    if (!c.ok()) {
      return collectorFailure(self, c.status());
    }
    net = std::move(*c);
  } else {
    // One object, one parse of vmlinux BTF: the prepared heap makes it ~7 ms faster, and
    // handing the memory back after it (keep = false) keeps the peak RSS where it was.
    if (!core_btf.active()) {
      prepareHeapForBtf(/*keep=*/false);  // with the cache nothing parses vmlinux BTF
    }
    ProcessOptions o;
    o.only_tgid = filters.pid;
    o.wakeup_bytes = 1;  // print each event as it happens
    o.only_comm = filters.comm;
    o.force_raw_tp = true;  // no vmlinux BTF parse with the cached CO-RE BTF (docs/cli.md)
    ProcEventType type = kind == Kind::kExec   ? ProcEventType::kExec
                         : kind == Kind::kExit ? ProcEventType::kExit
                         : kind == Kind::kOom  ? ProcEventType::kOomKill
                                               : ProcEventType::kSignal;
    o.event_types = 1u << static_cast<int>(type);
    // 1 MiB (the agent uses 8): a few thousand events between 100 ms drains is plenty for one
    // kind, and a smaller ring is ~5 MiB less RSS. Loss is counted and printed; --ring-kb raises
    // it.
    o.ring_bytes = ring_bytes != 0 ? ring_bytes : 1u << 20;
    auto c = core_btf.create([&]() { return ProcessCollector::create(o); });
    if (!c.ok()) {
      return collectorFailure(self, c.status());
    }
    proc = std::move(*c);
  }
  // Probes are attached: say so right away (the first output is what a user waits for).
  printHeader(kind, json, what);
  fflush(stdout);
  if (net != nullptr) {
    // The baseline pass create() left to us: the sockets already open are adopted, so their
    // close is reported too.
    if (absl::Status st = net->iterate(); !st.ok()) {
      fprintf(stderr, "vigil trace: %s\n", std::string(st.message()).c_str());
    }
  }

  core_btf.finish();  // the first run on this kernel writes the cache, after the header

  std::unique_ptr<Attributor> attributor;
  if (auto a = Attributor::create(); a.ok()) {
    attributor = std::move(*a);
  } else {
    fprintf(stderr, "vigil trace: no container attribution: %s\n",
            std::string(a.status().message()).c_str());
  }

  absl::Time deadline =
      *duration > absl::ZeroDuration() ? absl::Now() + *duration : absl::InfiniteFuture();
  std::unique_ptr<Snapshot> last;
  LocalPorts ports;
  while (true) {
    bool stop = stopRequested() || absl::Now() >= deadline;
    int wait_ms = 100;
    if (deadline != absl::InfiniteFuture()) {
      wait_ms = std::max<int64_t>(
          0, std::min<int64_t>(wait_ms, absl::ToInt64Milliseconds(deadline - absl::Now())));
    }
    if (!stop) {
      if (proc) {
        proc->poll(wait_ms);
      } else {
        net->poll(wait_ms);
      }
    }
    auto snap = std::make_unique<Snapshot>();
    if (proc) {
      proc->collect(*snap);
    } else {
      net->collect(*snap);
    }
    if (attributor) {
      attributor->annotate(*snap);
    }
    bool printed = false;
    for (auto& o : snap->events) {
      wire::Event::Reader e = o.getReader();
      uint16_t sport = e.isTcpState() ? ports.observe(e.getTcpState()) : 0;
      if (kindMatches(kind, e) && passes(filters, e)) {
        printEvent(kind, json, e, sport);
        printed = true;
      }
    }
    if (printed) {
      fflush(stdout);
    }
    if (stop) {
      last = std::move(snap);
      break;
    }
  }

  // Lost events: in-kernel reserve failures and this process's buffer drops for the traced
  // kind (the collectors keep generated == seen + lost).
  Labels want;
  if (kind == Kind::kTcp) {
    want = {{"collector", "net"}};
  } else {
    const char* type = kind == Kind::kExec   ? "exec"
                       : kind == Kind::kExit ? "exit"
                       : kind == Kind::kOom  ? "oom_kill"
                                             : "signal";
    want = {{"collector", "process"}, {"type", type}};
  }
  uint64_t lost = selfSum(*last, "vigil_ringbuf_reserve_failures_total", want) +
                  selfSum(*last, "vigil_events_dropped_total", want);
  if (lost > 0) {
    fprintf(stderr,
            "vigil trace: %lu %s events lost (ring buffer full; a larger --ring-kb or a "
            "narrower filter helps)\n",
            static_cast<unsigned long>(lost), what.c_str());
  }
  return kExitOk;
}

}  // namespace vigil::cli

// `vigil hist runq|syscall|block|tcp-connect|tcp-rtt`: log2 latency histograms like runqlat
// and biolatency, from the histograms the collectors already put in the Snapshot. Loads only the
// one collector the histogram needs; --pid sets its only_tgid rodata so the kernel records just
// that process; syscall latency is requested in continuous mode (full coverage, not sampled).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "userspace/attribution/attributor.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/trace_hist.h"
#include "userspace/collectors/block_collector.h"
#include "userspace/collectors/net_collector.h"
#include "userspace/collectors/sched_collector.h"
#include "userspace/collectors/syscall_collector.h"

namespace vigil::cli {
namespace {

struct Target {
  std::string collector;  // sched, syscalls, block, net
  std::string metric;     // the Snapshot histogram
};

std::string label(const Labels& labels, const std::string& key) {
  for (const auto& [k, v] : labels) {
    if (k == key) {
      return v;
    }
  }
  return "";
}

}  // namespace

int runHist(const Command& self, const Args& args) {
  if (args.positional().size() != 1) {
    return usageError(self, "name one histogram: runq, syscall, block, tcp-connect or tcp-rtt");
  }
  const std::string& what = args.positional()[0];
  Target t;
  if (what == "runq") {
    t = {"sched", "vigil_runqueue_latency_seconds"};
  } else if (what == "syscall") {
    t = {"syscalls", "vigil_syscall_latency_seconds"};
  } else if (what == "block") {
    t = {"block", "vigil_block_latency_seconds"};
  } else if (what == "tcp-connect") {
    t = {"net", "vigil_tcp_connect_latency_seconds"};
  } else if (what == "tcp-rtt") {
    t = {"net", "vigil_tcp_srtt_seconds"};
  } else {
    return usageError(self, absl::StrCat("unknown histogram '", what,
                                         "': use runq, syscall, block, tcp-connect or tcp-rtt"));
  }
  auto pid = args.u32("pid", 0);
  auto duration = args.duration("duration", absl::Seconds(5));
  auto interval = args.duration("interval", absl::ZeroDuration());
  if (!pid.ok()) {
    return usageError(self, std::string(pid.status().message()));
  }
  if (!duration.ok()) {
    return usageError(self, std::string(duration.status().message()));
  }
  if (!interval.ok()) {
    return usageError(self, std::string(interval.status().message()));
  }
  std::string container = args.get("container");
  std::string device = args.get("device");
  if (!device.empty() && what != "block") {
    return usageError(self, "--device applies to 'vigil hist block' only");
  }
  if (!container.empty() && what != "runq") {
    return usageError(self,
                      "--container is supported for 'vigil hist runq' only (the other "
                      "collectors keep no per-cgroup histogram); use --pid instead");
  }
  if (!container.empty() && *pid != 0) {
    return usageError(self, "use --pid or --container, not both");
  }
  bool json = args.has("json");
  if (geteuid() != 0) {
    return collectorFailure(self, absl::PermissionDeniedError("not running as root"));
  }
  installStopHandlers();
  CoreBtfUse core_btf(args.has("verbose"));
  if (!core_btf.active()) {
    // Only a load against the full vmlinux BTF parses it (with the cache, raw_tp parses none);
    // otherwise the huge-page heap would only cost faults (trace_hist.h).
    prepareHeapForBtf();
  }

  std::unique_ptr<Collector> collector;
  absl::Status st;
  if (t.collector == "sched") {
    SchedOptions o;
    o.only_tgid = *pid;
    o.max_processes = 64;  // the histograms do not use per-process CPU stats; faster load
    // The raw_tp flavour (the same histograms, read through BPF_CORE_READ) verifies ~5 ms
    // faster than tp_btf: every direct task_struct load in a tp_btf program makes this kernel's
    // verifier look a type up by name in vmlinux BTF, a linear scan (docs/cli.md, "Start-up").
    o.force_raw_tp = true;
    auto c = core_btf.create([&]() { return SchedCollector::create(o); });
    st = c.status();
    if (c.ok()) {
      collector = std::move(*c);
    }
  } else if (t.collector == "syscalls") {
    SyscallOptions o;
    o.mode = SyscallMode::kContinuous;
    o.latency = true;  // full coverage: every syscall, not a sampled window
    o.only_tgid = *pid;
    o.force_raw_tp = true;  // as runq: with the cached CO-RE BTF, no vmlinux BTF parse
    auto c = core_btf.create([&]() { return SyscallCollector::create(o); });
    st = c.status();
    if (c.ok()) {
      collector = std::move(*c);
    }
  } else if (t.collector == "block") {
    BlockOptions o;
    o.only_tgid = *pid;
    // raw_tp, as for runq: no tp_btf feature probe (one vmlinux BTF parse less) and a faster
    // verification; the same histogram.
    o.force_raw_tp = true;
    auto c = core_btf.create([&]() { return BlockCollector::create(o); });
    st = c.status();
    if (c.ok()) {
      collector = std::move(*c);
    }
  } else {
    NetOptions o;
    o.only_tgid = *pid;
    o.ring_bytes = 4096;      // hist reads only the histogram maps; keep the unused ring small
    o.preallocate = false;    // as `trace tcp`: entries allocated on use, not zeroed at load
    o.counter_hooks = false;  // retransmits and resets are not histograms
    o.defer_baseline = true;  // run after the header (below)
    o.force_raw_tp = true;    // as runq: faster verification, and no vmlinux BTF parse
    o.lazy_iterator = true;   // tcp-rtt: the iterator after the header (as trace tcp)
    // Connect latency is measured from connect() on, for sockets this run sees open: adopting
    // earlier sockets (the iterator) matters only for tcp-rtt, sampled at close.
    o.socket_iterator = what == "tcp-rtt";
    auto c = core_btf.create([&]() { return NetCollector::create(o); });
    st = c.status();
    if (c.ok()) {
      collector = std::move(*c);
    }
  }
  if (collector == nullptr) {
    return collectorFailure(self, st);
  }
  // The window starts when the probes are attached: the kernel histograms start at zero, so
  // the first print needs no baseline read (one collect() less before the window).
  absl::Time start = absl::Now();
  std::unique_ptr<Attributor> attributor;
  if (!container.empty()) {
    auto a = Attributor::create();
    if (!a.ok()) {
      return fail(self, kExitUnsupported,
                  absl::StrCat("--container needs cgroup v2 attribution: ", a.status().message()));
    }
    attributor = std::move(*a);
  }

  std::string scope = *pid != 0            ? absl::StrCat("pid ", *pid)
                      : !container.empty() ? absl::StrCat("container ", container)
                      : !device.empty()    ? absl::StrCat("device ", device)
                                           : "host";
  // The metric read for --pid on runq is the per-process histogram (with only_tgid set the
  // kernel records nothing else anyway); --container sums the cgroup histograms whose cgroup
  // belongs to that container.
  std::string metric = t.metric;
  if (what == "runq" && *pid != 0) {
    metric = "vigil_process_runqueue_latency_seconds";
  } else if (what == "runq" && !container.empty()) {
    metric = "vigil_cgroup_runqueue_latency_seconds";
  }
  auto* sched = dynamic_cast<SchedCollector*>(collector.get());
  auto read = [&]() {
    Snapshot snap;
    if (sched != nullptr) {
      sched->collectRunqueueHistograms(snap);  // no per-process CPU stats or comm reads
    } else {
      collector->collect(snap);
    }
    Log2Hist h;
    for (const HistogramSample& s : snap.histograms) {
      if (s.name != metric) {
        continue;
      }
      if (metric == "vigil_process_runqueue_latency_seconds" &&
          label(s.labels, "pid") != absl::StrCat(*pid)) {
        continue;
      }
      if (!device.empty() && label(s.labels, "device") != device &&
          label(s.labels, "major_minor") != device) {
        continue;
      }
      if (!container.empty()) {
        uint64_t cg = 0;
        if (!absl::SimpleAtoi(label(s.labels, "cgroup_id"), &cg)) {
          continue;
        }
        const ResolvedCgroup& r = attributor->resolver().resolve(cg);
        if (!absl::StartsWith(r.identity.container_id, container)) {
          continue;
        }
      }
      h.add(s);
    }
    return h;
  };

  if (!json) {
    printf("Tracing %s latency (%s)%s... Hit Ctrl-C to end.\n", what.c_str(), scope.c_str(),
           *interval > absl::ZeroDuration()
               ? ""
               : absl::StrCat(" for ", absl::FormatDuration(*duration)).c_str());
  } else {
    fprintf(stderr, "vigil hist: tracing %s latency (%s)\n", what.c_str(), scope.c_str());
  }
  fflush(stdout);
  if (auto* net = dynamic_cast<NetCollector*>(collector.get())) {
    // The deferred baseline pass: connections open before now are adopted, so their close
    // still adds an RTT sample.
    if (absl::Status st = net->iterate(); !st.ok()) {
      fprintf(stderr, "vigil hist: %s\n", std::string(st.message()).c_str());
    }
  }
  core_btf.finish();  // the first run on this kernel writes the cache, after the header
  Log2Hist base;      // empty: the collector started at zero; --interval moves it forward

  absl::Time end = *duration > absl::ZeroDuration() ? start + *duration : absl::InfiniteFuture();
  if (*interval > absl::ZeroDuration() && !args.has("duration")) {
    end = absl::InfiniteFuture();  // --interval alone repeats until Ctrl-C
  }
  absl::Time next = *interval > absl::ZeroDuration() ? start + *interval : end;
  while (true) {
    absl::Time now = absl::Now();
    bool done = stopRequested() || now >= end;
    if (!done && now < next) {
      sleepUnlessStopped(next - now);  // Ctrl-C ends the wait at once
      continue;
    }
    Log2Hist cur = read();
    Log2Hist delta = cur.minus(base);
    if (*interval > absl::ZeroDuration()) {
      base = cur;
    }
    std::string title = absl::StrCat(what, " latency, ", scope);
    if (json) {
      puts(histJson(delta, metric, scope).c_str());
    } else {
      fputs(renderHist(delta, title).c_str(), stdout);
      if (*interval > absl::ZeroDuration() && !done) {
        fputc('\n', stdout);
      }
    }
    fflush(stdout);
    if (done) {
      break;
    }
    next = std::min(next + *interval, end);
  }
  return kExitOk;
}

}  // namespace vigil::cli

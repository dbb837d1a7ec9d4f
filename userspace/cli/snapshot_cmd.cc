// `vigil snapshot`: load the collectors, collect for --duration, print one frame.
#include <signal.h>

#include <kj/async-unix.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/local_collect.h"
#include "userspace/cli/snapshot_json.h"
#include "userspace/collectors/bpf_util.h"
#include "userspace/common/clock.h"

namespace vigil::cli {
namespace {

void printSummary(const Snapshot& s) {
  printf("vigil snapshot of %s (kernel %s), %.1fs\n", s.agent.node_name.c_str(),
         s.agent.kernel.c_str(), (s.end_unix_ns - s.start_unix_ns) / 1e9);
  for (const CollectorState& c : s.collectors) {
    printf("  collector %-10s %s%s%s\n", c.name.c_str(), c.up ? "up" : "down",
           c.reason.empty() ? "" : ": ", c.reason.c_str());
  }
  for (const MetricSample& m : s.host) {
    if (m.name == "vigil_host_load1" || m.name == "vigil_host_memory_available_bytes" ||
        m.name == "vigil_host_memory_total_bytes") {
      printf("  %-36s %.6g\n", m.name.c_str(), m.value);
    }
  }
  std::vector<const ProcessStats*> procs;
  for (const auto& [pid, p] : s.processes) {
    procs.push_back(&p);
  }
  std::sort(procs.begin(), procs.end(),
            [](const ProcessStats* a, const ProcessStats* b) { return a->cpu_ns > b->cpu_ns; });
  printf("\n  %7s %-16s %10s %10s\n", "PID", "COMM", "CPU(s)", "SYSCALLS");
  for (size_t i = 0; i < procs.size() && i < 15; ++i) {
    printf("  %7u %-16s %10.3f %10lu\n", procs[i]->pid, procs[i]->comm.c_str(),
           procs[i]->cpu_ns / 1e9, static_cast<unsigned long>(procs[i]->syscalls));
  }
  printf("\n  %zu processes, %zu containers, %zu histograms, %zu events. Use --json for all.\n",
         s.processes.size(), s.containers.size(), s.histograms.size(), s.events.size());
}

}  // namespace

int runSnapshot(const Command& self, const Args& args) {
  if (!args.positional().empty()) {
    return usageError(self, absl::StrCat("unexpected argument '", args.positional()[0], "'"));
  }
  auto duration = args.duration("duration", absl::Seconds(2));
  if (!duration.ok()) {
    return usageError(self, std::string(duration.status().message()));
  }
  CollectorConfig config;
  config.syscall_mode = args.get("syscall_mode", "continuous");
  if (config.syscall_mode != "continuous" && config.syscall_mode != "sampled" &&
      config.syscall_mode != "off") {
    return usageError(self, absl::StrCat("--syscall-mode must be continuous, sampled or off, got '",
                                         config.syscall_mode, "'"));
  }
  // An investigation wants every event: UDP bytes too (docs/metrics.md, network).
  config.net_message_mode = "continuous";
  auto pid = args.u32("pid", 0);
  if (!pid.ok()) {
    return usageError(self, std::string(pid.status().message()));
  }
  config.only_tgid = *pid;
  config.preallocate_maps = false;  // start-up: docs/cli.md, "Start-up cost"
  config.prefer_raw_tp = true;      // likewise: no vmlinux BTF parse for three of the objects
  config.interval = absl::ToInt64Milliseconds(*duration) * kj::MILLISECONDS;
  for (absl::string_view c : absl::StrSplit(args.get("comm"), ',', absl::SkipEmpty())) {
    config.comm_filter.emplace_back(c);
  }
  for (absl::string_view d : absl::StrSplit(args.get("disable"), ',', absl::SkipEmpty())) {
    config.disabled.insert(std::string(d));
  }

  if (getenv("VIGIL_LIBBPF_DEBUG") == nullptr) {
    installLibbpfLogger(false);
  }
  CoreBtfUse core_btf(args.has("verbose"));
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  auto io = kj::setupAsyncIo();
  auto collectors = LocalCollectors::create(config, io, &core_btf);
  if (!collectors.ok()) {
    return collectorFailure(self, collectors.status());
  }
  for (const std::string& w : (*collectors)->warnings()) {
    fprintf(stderr, "vigil snapshot: %s\n", w.c_str());
  }
  if ((*collectors)->running() == 0) {
    return fail(self, kExitUnsupported, "no collector could start; see the lines above");
  }
  bool interrupted = false;
  auto stop = io.unixEventPort.onSignal(SIGINT)
                  .exclusiveJoin(io.unixEventPort.onSignal(SIGTERM))
                  .then([&interrupted](siginfo_t) { interrupted = true; });
  // The window opened before the collectors loaded (their counts start at their load), so
  // duration_seconds bounds every count. It ends one interval after it opened, as asked, but
  // never less than three quarters of an interval after the last collector loaded: on a busy
  // host loading can take seconds, and a window that closed right after it would hold nothing.
  // duration_seconds then says how long the window really was.
  int64_t interval_ns = config.interval / kj::NANOSECONDS;
  int64_t loaded_ns = unixNs() - (*collectors)->startedUnixNs();
  kj::Duration remaining = std::max(interval_ns - loaded_ns, interval_ns * 3 / 4) * kj::NANOSECONDS;
  auto window = sleepFromNow(io.provider->getTimer(), remaining);
  window.exclusiveJoin(kj::mv(stop)).exclusiveJoin((*collectors)->run()).wait(io.waitScope);
  auto snap = (*collectors)->collect();
  if (!config.comm_filter.empty()) {
    // Not every collector filters by comm itself; the output does, whatever they did.
    absl::erase_if(snap->processes, [&](const auto& entry) {
      const std::string& comm = entry.second.comm;
      return std::find(config.comm_filter.begin(), config.comm_filter.end(), comm) ==
             config.comm_filter.end();
    });
  }
  if (interrupted) {
    fprintf(stderr, "vigil snapshot: interrupted; printing what was collected so far\n");
  }
  if (args.has("json")) {
    std::string out = snapshotToJson(*snap).dump(args.has("pretty") ? 2 : -1, ' ', false,
                                                 nlohmann::json::error_handler_t::replace);
    out += '\n';
    fwrite(out.data(), 1, out.size(), stdout);
  } else {
    printSummary(*snap);
  }
  fflush(stdout);
  core_btf.finish();  // the first run on this kernel writes the cache, after the output
  return kExitOk;
}

}  // namespace vigil::cli

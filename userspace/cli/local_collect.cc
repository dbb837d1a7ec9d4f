#include "userspace/cli/local_collect.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "kernel-compat/core_btf.h"
#include "kernel-compat/features.h"
#include "userspace/cli/trace_hist.h"
#include "userspace/collectors/registry.h"
#include "userspace/common/version.h"
#include "userspace/common/clock.h"

namespace vigil::cli {

kj::Promise<void> sleepFromNow(kj::Timer& timer, kj::Duration delay) {
  return timer.atTime(kj::systemPreciseMonotonicClock().now() + delay);
}

AgentInfo localInfo() {
  AgentInfo info;
  struct utsname u;
  uname(&u);
  info.node_name = u.nodename;
  info.agent_id = u.nodename;
  info.kernel = u.release;
  info.version = kVigilVersion;
  return info;
}

LocalCollectors::LocalCollectors(const CollectorConfig& config, kj::AsyncIoContext& io)
    : config_(config),
      context_{io.provider->getTimer(), io.unixEventPort},
      started_unix_ns_(unixNs()) {}

absl::StatusOr<std::unique_ptr<LocalCollectors>> LocalCollectors::create(
    const CollectorConfig& config, kj::AsyncIoContext& io, CoreBtfUse* core_btf) {
  std::unique_ptr<LocalCollectors> lc(new LocalCollectors(config, io));
  if (core_btf == nullptr || !core_btf->active()) {
    prepareHeapForBtf();  // one libbpf BTF parse per collector: reuse the memory, huge pages
  }
  // Mounted once here rather than raced for by the loading threads below.
  compat::ensureTracefs();
  std::vector<std::string> names;
  for (const std::string& name : collectorNames()) {
    if (config.disabled.contains(name)) {
      lc->down_.push_back(CollectorState{name, false, "disabled by --disable"});
      continue;
    }
    names.push_back(name);
  }
  // One thread per collector: loading is CPU work (libbpf's BTF parse, the kernel's verifier)
  // for each object independently, so on a machine with several CPUs `top` and `snapshot` wait
  // for the slowest object instead of the sum (docs/cli.md, "Start-up cost").
  std::vector<absl::StatusOr<std::unique_ptr<Collector>>> made;
  for (size_t i = 0; i < names.size(); ++i) {
    made.emplace_back(absl::UnknownError("not loaded"));
  }
  {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < names.size(); ++i) {
      threads.emplace_back(
          [&made, &names, &config, i]() { made[i] = createCollector(names[i], config); });
    }
    for (std::thread& t : threads) {
      t.join();
    }
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    auto& c = made[i];
    if (!c.ok() && !absl::IsPermissionDenied(c.status()) && core_btf != nullptr &&
        core_btf->active()) {
      // Loaded against the cached CO-RE BTF and failed: once more with the full vmlinux BTF
      // (this and any later failure retries without the cache).
      core_btf->fallBack(c.status());
    }
    if (!c.ok() && !absl::IsPermissionDenied(c.status()) && core_btf != nullptr &&
        core_btf->problems() > 0 && compat::coreBtfPath() == nullptr) {
      c = createCollector(name, config);
    }
    if (!c.ok()) {
      if (absl::IsPermissionDenied(c.status())) {
        return c.status();
      }
      lc->warnings_.push_back(
          absl::StrCat("collector ", name, " disabled: ", c.status().message()));
      lc->down_.push_back(CollectorState{name, false, std::string(c.status().message())});
      continue;
    }
    lc->collectors_.push_back(std::move(*c));
  }
  return lc;
}

kj::Promise<void> LocalCollectors::run() {
  kj::Promise<void> all = kj::NEVER_DONE;
  for (auto& c : collectors_) {
    all = all.exclusiveJoin(c->run(context_));
  }
  return all;
}

bool LocalCollectors::up(const std::string& name) const {
  for (const auto& c : collectors_) {
    if (c->name() == name) {
      return true;
    }
  }
  return false;
}

std::unique_ptr<Snapshot> LocalCollectors::collect() {
  int64_t t0 = monoNs();
  auto snap = std::make_unique<Snapshot>();
  snap->agent = localInfo();
  snap->boot_epoch = static_cast<uint64_t>(started_unix_ns_);
  snap->seq = ++seq_;
  snap->start_unix_ns = started_unix_ns_;
  snap->end_unix_ns = unixNs();
  snap->interval_ms = static_cast<uint32_t>(config_.interval / kj::MILLISECONDS);
  snap->syscall_duty_cycle = config_.syscall_mode == "continuous" ? 1.0
                             : config_.syscall_mode == "off"      ? 0.0
                                                                  : config_.syscall_duty_cycle;
  for (auto& c : collectors_) {
    c->collect(*snap);
  }
  for (const auto& d : down_) {
    snap->collectors.push_back(d);
  }
  collect_ns_total_ += static_cast<uint64_t>(monoNs() - t0);
  // The CLI's own cost, under the agent's names: in a snapshot the CLI is the agent.
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu =
      ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  long rss_pages = 0;
  if (FILE* f = fopen("/proc/self/statm", "r")) {
    long size = 0;
    if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2) {
      rss_pages = 0;
    }
    fclose(f);
  }
  snap->self.push_back(MetricSample{"vigil_agent_cpu_seconds_total", {}, cpu, true});
  snap->self.push_back(MetricSample{"vigil_agent_resident_memory_bytes",
                                    {},
                                    static_cast<double>(rss_pages) * sysconf(_SC_PAGESIZE),
                                    false});
  snap->self.push_back(
      MetricSample{"vigil_agent_collect_seconds_total", {}, collect_ns_total_ / 1e9, true});
  return snap;
}

}  // namespace vigil::cli

#include "userspace/agent/agent.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"
#include "kernel-compat/features.h"
#include "userspace/collectors/registry.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/log.h"
#include "userspace/common/version.h"

namespace vigil {
namespace {

int64_t unixNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t monoNowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

uint64_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

double selfCpuSeconds() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

absl::Status writeReadyFile(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    if (!out) {
      return absl::UnavailableError(absl::StrCat("cannot write ready file ", tmp));
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot rename ready file to ", path));
  }
  return absl::OkStatus();
}

}  // namespace

AgentInfo localAgentInfo(const std::string& node_name, const std::string& agent_id,
                         const Labels& labels) {
  AgentInfo info;
  struct utsname u;
  uname(&u);
  info.node_name = node_name.empty() ? u.nodename : node_name;
  info.agent_id = agent_id.empty() ? info.node_name : agent_id;
  info.kernel = u.release;
  info.version = kVigilVersion;
  info.labels = labels;
  return info;
}

Agent::Agent(AgentOptions options, kj::AsyncIoContext& io, uint64_t boot_epoch)
    : options_(std::move(options)),
      io_(io),
      context_{io.provider->getTimer(), io.unixEventPort},
      boot_epoch_(boot_epoch),
      uplink_(*io.provider, [this]() {
        UplinkOptions u;
        u.aggregators = options_.aggregators;
        u.identity = localAgentInfo(options_.node_name, options_.agent_id, options_.labels);
        u.boot_epoch = boot_epoch_;
        u.token = options_.token;
        u.max_queue_bytes = options_.max_queue_bytes;
        u.max_backoff = options_.reconnect_max;
        return u;
      }()) {}

Agent::~Agent() = default;

absl::StatusOr<std::unique_ptr<Agent>> Agent::create(AgentOptions options, kj::AsyncIoContext& io) {
  if (options.interval < 1 * kj::SECONDS) {
    return absl::InvalidArgumentError("--interval must be at least 1s");
  }
  if (options.aggregators.empty()) {
    return absl::InvalidArgumentError("--aggregator needs at least one host:port");
  }
  std::unique_ptr<Agent> agent(
      new Agent(std::move(options), io, static_cast<uint64_t>(unixNowNs())));

  if (!compat::haveKernelBtf()) {
    return absl::FailedPreconditionError(
        "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); vigil needs a kernel "
        "built with CONFIG_DEBUG_INFO_BTF=y (most distributions since 2020)");
  }
  CollectorConfig& config = agent->collector_config_;
  config.interval = agent->options_.interval;
  for (const std::string& name : collectorNames()) {
    if (config.disabled.contains(name)) {
      agent->disabled_collectors_.push_back(CollectorState{name, false, "disabled by config"});
      continue;
    }
    auto c = createCollector(name, config);
    if (!c.ok()) {
      if (absl::IsPermissionDenied(c.status())) {
        return c.status();  // no BPF at all: nothing useful can run
      }
      VIGIL_LOG_WARN("collector %s disabled: %s", name, c.status().message());
      agent->disabled_collectors_.push_back(
          CollectorState{name, false, std::string(c.status().message())});
      continue;
    }
    agent->collectors_.push_back(std::move(*c));
  }
  if (agent->collectors_.empty()) {
    return absl::FailedPreconditionError("no collector could start; see the lines above");
  }

  auto listener = listenTcp(io.provider->getNetwork(), io.waitScope, agent->options_.http_addr,
                            agent->options_.http_port, "http_port");
  if (!listener.ok()) {
    return listener.status();
  }
  agent->http_listener_ = kj::mv(*listener);
  agent->http_port_ = agent->http_listener_->getPort();
  Agent* self = agent.get();
  agent->http_ = kj::heap<HttpServer>(io.provider->getTimer(),
                                      [self](const HttpRequest& r) { return self->handleHttp(r); });
  if (!agent->options_.ready_file.empty()) {
    auto st = writeReadyFile(agent->options_.ready_file,
                             absl::StrCat("http_port=", agent->http_port_, "\n"));
    if (!st.ok()) {
      return st;
    }
  }
  return agent;
}

kj::Promise<void> Agent::run() {
  auto now = io_.provider->getTimer().now();
  kj::Promise<void> all = collectLoop(now + options_.interval)
                              .exclusiveJoin(uplink_.run())
                              .exclusiveJoin(http_->listen(*http_listener_));
  for (auto& c : collectors_) {
    all = all.exclusiveJoin(c->run(context_));
  }
  return all;
}

kj::Promise<void> Agent::collectLoop(kj::TimePoint next) {
  return io_.provider->getTimer().atTime(next).then([this, next]() {
    collectOnce();
    auto following = next + options_.interval;
    auto now = io_.provider->getTimer().now();
    if (following < now) {
      // We fell behind (e.g. the machine was suspended): skip missed ticks, keep cadence.
      following = now + options_.interval;
    }
    return collectLoop(following);
  });
}

void Agent::collectOnce() {
  int64_t started = monoNowNs();
  auto snap = std::make_unique<Snapshot>();
  snap->agent = localAgentInfo(options_.node_name, options_.agent_id, options_.labels);
  snap->boot_epoch = boot_epoch_;
  snap->seq = ++seq_;
  snap->start_unix_ns = last_collect_ns_ ? last_collect_ns_ : static_cast<int64_t>(boot_epoch_);
  snap->end_unix_ns = unixNowNs();
  last_collect_ns_ = snap->end_unix_ns;
  snap->interval_ms = static_cast<uint32_t>(options_.interval / kj::MILLISECONDS);
  snap->syscall_duty_cycle = 0;
  for (auto& c : collectors_) {
    c->collect(*snap);
  }
  for (const auto& d : disabled_collectors_) {
    snap->collectors.push_back(d);
  }
  collect_ns_total_ += static_cast<uint64_t>(monoNowNs() - started);
  appendSelfMetrics(snap->self);

  capnp::MallocMessageBuilder message;
  toWire(*snap, message);
  uplink_.enqueue(snap->seq, encodeFrame(message, wire::Encoding::PACKED_ZSTD));
  latest_ = std::move(snap);
}

void Agent::appendSelfMetrics(std::vector<MetricSample>& out) {
  uplink_.appendSelfMetrics(out);
  out.push_back(
      MetricSample{"vigil_agent_collect_seconds_total", {}, collect_ns_total_ / 1e9, true});
  out.push_back(MetricSample{
      "vigil_agent_resident_memory_bytes", {}, static_cast<double>(residentBytes()), false});
  out.push_back(MetricSample{"vigil_agent_cpu_seconds_total", {}, selfCpuSeconds(), true});
  out.push_back(MetricSample{"vigil_agent_boot_epoch_seconds", {}, boot_epoch_ / 1e9, false});
}

std::string Agent::renderMetrics(bool open_metrics) {
  PromWriter out(open_metrics);
  Snapshot empty;
  Snapshot& snap = latest_ ? *latest_ : empty;
  // The agent's own counters are fresh on every scrape; the collectors' are as of the last frame.
  std::vector<MetricSample> frame_self = snap.self;
  std::vector<MetricSample> self;
  for (MetricSample& m : frame_self) {
    if (m.name.rfind("vigil_agent_", 0) != 0) {
      self.push_back(std::move(m));
    }
  }
  appendSelfMetrics(self);
  std::swap(snap.self, self);
  writeSnapshotMetrics(snap, ExpositionOptions{}, out);
  std::swap(snap.self, self);
  return out.finish();
}

kj::Promise<HttpReply> Agent::handleHttp(const HttpRequest& request) {
  if (request.path == "/healthz") {
    return HttpReply::text(
        200, absl::StrCat("ok\nuplink_connected ", uplink_.stats().connected ? 1 : 0, "\n"));
  }
  if (request.path == "/metrics") {
    bool om = request.accept.find("application/openmetrics-text") != std::string::npos;
    return HttpReply{200, PromWriter::contentType(om), renderMetrics(om)};
  }
  return HttpReply::text(404, "not found; try /metrics or /healthz\n");
}

}  // namespace vigil

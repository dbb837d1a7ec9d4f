#include "userspace/agent/agent.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"
#include "kernel-compat/features.h"
#include "userspace/collectors/registry.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"
#include "userspace/common/version.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

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
      settings_(options_.settings),
      last_tick_(io.provider->getTimer().now()) {}

Agent::~Agent() noexcept(false) {
  // The uplink holds a reference to this agent as its ConfigHandler; drop it first.
  uplink_.reset();
}

namespace {

bool isLoopback(const std::string& addr) {
  std::string host = addr.substr(0, addr.rfind(':'));
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "[::1]" || host == "::1";
}

absl::StatusOr<std::string> readPem(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

absl::Status Agent::setUpTls() {
  bool want_tls = !options_.tls_ca_file.empty();
  if (!want_tls) {
    if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
      return absl::InvalidArgumentError("--tls_cert/--tls_key need --tls_ca (the aggregator's CA)");
    }
    for (const std::string& a : options_.aggregators) {
      if (!isLoopback(a) && !options_.insecure_plaintext) {
        return absl::InvalidArgumentError(
            absl::StrCat("aggregator ", a,
                         " is not on loopback: give --tls_ca (and --tls_cert/--tls_key for "
                         "mutual TLS), or --insecure_plaintext to send frames unencrypted"));
      }
    }
    return absl::OkStatus();
  }
  auto ca = readPem(options_.tls_ca_file, "tls_ca");
  if (!ca.ok()) {
    return ca.status();
  }
  std::string cert_pem, key_pem;
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    auto c = readPem(options_.tls_cert_file, "tls_cert");
    auto k = readPem(options_.tls_key_file, "tls_key");
    if (!c.ok()) {
      return c.status();
    }
    if (!k.ok()) {
      return k.status();
    }
    cert_pem = *c;
    key_pem = *k;
  }
  KJ_IF_MAYBE (
      e, kj::runCatchingExceptions([&]() {
        tls_trusted_.add(kj::TlsCertificate(*ca));
        kj::TlsContext::Options opts;
        opts.useSystemTrustStore = false;
        opts.trustedCertificates = tls_trusted_.asPtr();
        if (!cert_pem.empty()) {
          tls_keypair_ = kj::TlsKeypair{kj::TlsPrivateKey(key_pem), kj::TlsCertificate(cert_pem)};
          opts.defaultKeypair = KJ_ASSERT_NONNULL(tls_keypair_);
        }
        tls_ = kj::heap<kj::TlsContext>(kj::mv(opts));
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS setup failed (check the PEM files): ", e->getDescription().cStr()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Agent>> Agent::create(AgentOptions options, kj::AsyncIoContext& io) {
  if (options.aggregators.empty()) {
    return absl::InvalidArgumentError("--aggregator needs at least one host:port");
  }
  if (auto st = validateSettings(options.settings, collectorNames()); !st.ok()) {
    return st;
  }
  std::unique_ptr<Agent> agent(new Agent(std::move(options), io, static_cast<uint64_t>(unixNs())));
  if (auto st = agent->setUpTls(); !st.ok()) {
    return st;
  }
  CollectorConfig& config = agent->collector_config_;
  config.interval = agent->settings_.interval_ms * kj::MILLISECONDS;
  config.disabled = agent->settings_.disabled_collectors;
  config.syscall_mode = agent->settings_.syscall_mode;
  config.syscall_duty_cycle = agent->settings_.syscall_duty_cycle;
  config.net_message_mode = agent->settings_.net_message_mode;
  config.mask_patterns = agent->settings_.mask_patterns;
  config.comm_filter = agent->settings_.comm_filter;
  config.max_processes = agent->settings_.max_processes;
  config.process_ring_bytes = agent->settings_.process_ring_bytes;
  config.net_ring_bytes = agent->settings_.net_ring_bytes;
  for (const std::string& p : agent->settings_.mask_patterns) {
    agent->mask_res_.emplace_back(p, std::regex::ECMAScript);
  }
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
      agent->load_failures_[name] = std::string(c.status().message());
      agent->disabled_collectors_.push_back(
          CollectorState{name, false, std::string(c.status().message())});
      continue;
    }
    agent->collectors_.push_back(Running{std::move(*c), nullptr});
  }
  // Attribution and masking run on every snapshot after the collectors (docs/attribution.md,
  // docs/masking.md).
  auto attributor = Attributor::create();
  if (attributor.ok()) {
    agent->attributor_ = std::move(*attributor);
  } else {
    VIGIL_LOG_WARN("%s", attributor.status().message());
  }
  std::vector<std::string> mask_errors;
  agent->masker_ = Masker::create(config.mask_patterns, &mask_errors);
  for (const std::string& e : mask_errors) {
    VIGIL_LOG_WARN("%s; pattern skipped", e);
  }
  if (agent->collectors_.empty() && agent->settings_.disabled_collectors.empty()) {
    return absl::FailedPreconditionError("no collector could start; see the lines above");
  }

  // The spool and uplink come after the collectors: an agent that cannot run at all exits with
  // the one line that says why, not with spool noise first.
  std::unique_ptr<Spool> spool;
  bool spool_failed = false;
  if (!agent->options_.spool_path.empty()) {
    SpoolOptions so = agent->options_.spool;
    so.owner = localAgentInfo(agent->options_.node_name, agent->options_.agent_id, {}).agent_id;
    auto opened = Spool::open(agent->options_.spool_path, so);
    if (opened.ok()) {
      spool = std::move(*opened);
      if (spool->frames() > 0) {
        VIGIL_LOG_INFO("spool %s holds %d unacknowledged frame(s) (%d bytes) from earlier runs",
                       spool->path(), spool->frames(), spool->bytes());
      }
    } else {
      VIGIL_LOG_ERROR("%s; unacknowledged frames are kept in memory only",
                      opened.status().message());
      spool_failed = true;
    }
  }
  UplinkOptions u;
  u.aggregators = agent->options_.aggregators;
  u.identity =
      localAgentInfo(agent->options_.node_name, agent->options_.agent_id, agent->options_.labels);
  u.boot_epoch = agent->boot_epoch_;
  u.token = agent->options_.token;
  u.max_queue_bytes = agent->options_.max_queue_bytes;
  u.max_backoff = agent->options_.reconnect_max;
  u.min_backoff = agent->options_.reconnect_min;
  u.probe_interval = agent->options_.probe_interval;
  u.replay_rate = agent->options_.replay_rate;
  u.replay_burst = agent->options_.replay_burst;
  u.max_in_flight = agent->options_.max_in_flight;
  u.keyframe_every = agent->options_.wire_keyframe_every;
  if (agent->tls_) {
    u.tls = *agent->tls_;
  }
  u.tls_server_name = agent->options_.tls_server_name;
  u.config_handler = static_cast<ConfigHandler&>(*agent);
  agent->uplink_ = std::make_unique<Uplink>(*io.provider, std::move(u), std::move(spool));
  if (spool_failed) {
    agent->uplink_->noteSpoolUnavailable();  // visible as vigil_agent_spool_ok 0 + an error
  }

  if (!compat::haveKernelBtf()) {
    return absl::FailedPreconditionError(
        "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); vigil needs a kernel "
        "built with CONFIG_DEBUG_INFO_BTF=y (most distributions since 2020)");
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

void Agent::startCollector(Running& r) {
  std::string name(r.collector->name());
  r.task = r.collector->run(context_).eagerlyEvaluate([name](kj::Exception&& e) {
    VIGIL_LOG_ERROR("collector %s background work failed: %s", name, e.getDescription().cStr());
  });
}

kj::Promise<void> Agent::run() {
  running_ = true;
  for (auto& r : collectors_) {
    startCollector(r);
  }
  last_tick_ = io_.provider->getTimer().now();
  return collectLoop().exclusiveJoin(uplink_->run()).exclusiveJoin(http_->listen(*http_listener_));
}

uint32_t Agent::intervalInUseMs() const {
  if (settings_.sampling.enabled && host_busy_) {
    return *host_busy_ ? settings_.sampling.high_interval_ms : settings_.sampling.low_interval_ms;
  }
  return settings_.interval_ms;
}

void Agent::propagateInterval() {
  kj::Duration interval = intervalInUseMs() * kj::MILLISECONDS;
  if (interval == collector_config_.interval) {
    return;
  }
  collector_config_.interval = interval;
  for (auto& r : collectors_) {
    r.collector->setInterval(interval);
  }
}

kj::Promise<void> Agent::collectLoop() {
  auto interval = intervalInUseMs() * kj::MILLISECONDS;
  auto paf = kj::newPromiseAndFulfiller<void>();
  collect_wake_ = kj::mv(paf.fulfiller);
  return io_.provider->getTimer()
      .atTime(last_tick_ + interval)
      .exclusiveJoin(kj::mv(paf.promise))
      .then([this]() {
        collect_wake_ = nullptr;
        auto interval = intervalInUseMs() * kj::MILLISECONDS;
        auto now = io_.provider->getTimer().now();
        auto due = last_tick_ + interval;
        if (now >= due) {
          // Keep cadence; if we fell behind by more than an interval (suspend, config change),
          // restart the cadence from now.
          last_tick_ = now - due > interval ? now : due;
          collectOnce();
          if (settings_.sampling.enabled) {
            auto cpu = host_cpu_.sample();
            if (cpu) {
              uint32_t before = intervalInUseMs();
              host_busy_ = *cpu >= settings_.sampling.cpu_threshold_percent;
              if (intervalInUseMs() != before) {
                VIGIL_LOG_INFO("dynamic sampling: host CPU %.1f%%, interval now %.1fs", *cpu,
                               intervalInUseMs() / 1000.0);
              }
              propagateInterval();
            }
          }
        }
        return collectLoop();
      });
}

void Agent::applyFilters(Snapshot& snap) {
  if (!settings_.comm_filter.empty()) {
    for (auto it = snap.processes.begin(); it != snap.processes.end();) {
      auto cur = it++;
      if (std::find(settings_.comm_filter.begin(), settings_.comm_filter.end(), cur->second.comm) ==
          settings_.comm_filter.end()) {
        snap.processes.erase(cur);
      }
    }
  }
}

void Agent::collectOnce() {
  int64_t started = monoNs();
  // The previous snapshot only serves /metrics, which cannot run before this one replaces it
  // (one event loop): drop it first, so two snapshots are never held at once.
  latest_.reset();
  auto snap = std::make_unique<Snapshot>();
  snap->agent = localAgentInfo(options_.node_name, options_.agent_id, options_.labels);
  snap->boot_epoch = boot_epoch_;
  snap->seq = ++seq_;
  snap->start_unix_ns = last_collect_ns_ ? last_collect_ns_ : static_cast<int64_t>(boot_epoch_);
  snap->end_unix_ns = unixNs();
  last_collect_ns_ = snap->end_unix_ns;
  snap->interval_ms = intervalInUseMs();
  snap->config_version = settings_.version;
  snap->syscall_duty_cycle = 0;
  for (auto& r : collectors_) {
    r.collector->collect(*snap);
  }
  applyFilters(*snap);
  if (attributor_) {
    attributor_->annotate(*snap);
  }
  maskSnapshotCmdlines(*masker_, *snap);
  for (const auto& d : disabled_collectors_) {
    snap->collectors.push_back(d);
  }
  collect_ns_total_ += static_cast<uint64_t>(monoNs() - started);
  appendSelfMetrics(snap->self);

  {
    capnp::MallocMessageBuilder message;
    toWire(*snap, message);
    uint64_t seq = snap->seq;
    // The frame holds a copy of the events now, and /metrics renders everything of the snapshot
    // but its events: free them (under process churn, 1,000 exec/s, tens of thousands) before
    // packing rather than at the next collection.
    snap->clearEvents();
    latest_ = std::move(snap);
    uplink_->enqueue(seq, encodeFrame(message, wire::Encoding::PACKED_ZSTD));
  }
  releaseFreeMemory();  // userspace/common/shrink.h
}

void Agent::applyConfig(wire::AgentConfig::Reader config, wire::ConfigResult::Builder result) {
  result.setVersion(config.getVersion());
  auto merged = mergePushedConfig(settings_, config);
  absl::Status st = merged.ok() ? applySettings(*merged) : merged.status();
  if (st.ok()) {
    config_applied_++;
    result.setApplied(true);
    VIGIL_LOG_INFO("applied config version %d from the aggregator", config.getVersion());
  } else {
    config_failed_++;
    result.setApplied(false);
    result.setError(std::string(st.message()));
    VIGIL_LOG_WARN("refused config version %d: %s (version %d stays in force)", config.getVersion(),
                   st.message(), settings_.version);
  }
}

namespace {

// Whether a running collector must be reloaded to apply `next`: settings it reads only at load
// (map capacities, which programs load). The interval is not one: setInterval() carries it.
bool needsReload(absl::string_view name, const CollectorConfig& cur, const CollectorConfig& next) {
  if (name == "syscalls") {
    return cur.syscall_mode != next.syscall_mode ||
           cur.syscall_duty_cycle != next.syscall_duty_cycle ||
           cur.max_processes != next.max_processes;
  }
  if (name == "sched") {
    return cur.max_processes != next.max_processes;
  }
  if (name == "process") {
    return cur.process_ring_bytes != next.process_ring_bytes;
  }
  if (name == "net") {
    // Sampled message mode follows the syscall duty cycle.
    return cur.net_ring_bytes != next.net_ring_bytes ||
           cur.net_message_mode != next.net_message_mode ||
           (next.net_message_mode == "sampled" &&
            cur.syscall_duty_cycle != next.syscall_duty_cycle);
  }
  return false;
}

}  // namespace

absl::Status Agent::applySettings(const AgentSettings& next) {
  if (auto st = validateSettings(next, collectorNames()); !st.ok()) {
    return st;
  }
  std::vector<std::regex> res;
  for (const std::string& p : next.mask_patterns) {
    res.emplace_back(p, std::regex::ECMAScript);
  }
  CollectorConfig cfg = collector_config_;
  cfg.disabled = next.disabled_collectors;
  cfg.syscall_mode = next.syscall_mode;
  cfg.syscall_duty_cycle = next.syscall_duty_cycle;
  cfg.net_message_mode = next.net_message_mode;
  cfg.mask_patterns = next.mask_patterns;
  cfg.comm_filter = next.comm_filter;
  cfg.max_processes = next.max_processes;
  cfg.process_ring_bytes = next.process_ring_bytes;
  cfg.net_ring_bytes = next.net_ring_bytes;

  // Phase 1: load every collector the new config needs while the running set stays untouched,
  // so a failure (the kernel refusing a map or a program) rolls back by dropping what was
  // loaded here: the running collectors keep their programs, maps and counters. Collectors the
  // config enables load first, then replacements for running ones whose load-time settings
  // changed: a replacement counts alongside the collector it replaces until the commit, so it
  // loads last. Peak memory is therefore old + new (docs/configuration.md).
  std::vector<std::string> enable, reload;
  for (const std::string& name : collectorNames()) {
    bool running = false;
    for (auto& r : collectors_) {
      running |= r.collector->name() == name;
    }
    if (next.disabled_collectors.contains(name)) {
      continue;
    }
    if (running) {
      if (needsReload(name, collector_config_, cfg)) {
        reload.push_back(name);
      }
    } else if (settings_.disabled_collectors.contains(name)) {
      enable.push_back(name);
    }
    // Down for a kernel reason at start: stays down (it failed once; retrying on every push
    // would turn each push into a repeat of the same failure).
  }
  std::vector<Running> created;
  for (const auto* names : {&enable, &reload}) {
    for (const std::string& name : *names) {
      auto c = createCollector(name, cfg);
      if (!c.ok()) {
        std::string undone;
        for (auto& r : created) {
          absl::StrAppend(&undone, undone.empty() ? "" : ", ", r.collector->name());
        }
        // Destroying `created` detaches and unloads what phase 1 loaded.
        created.clear();
        return absl::FailedPreconditionError(
            absl::StrCat("collector ", name, " failed to load: ", c.status().message(),
                         undone.empty() ? "" : absl::StrCat("; unloaded again: ", undone)));
      }
      created.push_back(Running{std::move(*c), nullptr});
    }
  }

  // Phase 2 (cannot fail): destroy what is disabled or replaced (detaching its BPF programs),
  // add the new ones, then switch the settings the agent itself applies.
  for (auto it = collectors_.begin(); it != collectors_.end();) {
    std::string name(it->collector->name());
    bool disabled = next.disabled_collectors.contains(name);
    if (disabled || std::find(reload.begin(), reload.end(), name) != reload.end()) {
      VIGIL_LOG_INFO("collector %s %s", name,
                     disabled ? "disabled by config; detached" : "reloaded with new settings");
      // Drop the background work first: vector::erase move-assigns the later entries down,
      // member by member, which would destroy this collector (closing its ring buffer) while its
      // task still watches the ring buffer's fd.
      it->task = nullptr;
      it = collectors_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& r : created) {
    VIGIL_LOG_INFO("collector %s %s", r.collector->name(),
                   std::find(enable.begin(), enable.end(), r.collector->name()) != enable.end()
                       ? "enabled by config"
                       : "loaded with new settings");
    collectors_.push_back(std::move(r));
    if (running_) {
      startCollector(collectors_.back());
    }
  }
  disabled_collectors_.clear();
  for (const std::string& name : collectorNames()) {
    if (next.disabled_collectors.contains(name)) {
      disabled_collectors_.push_back(CollectorState{name, false, "disabled by config"});
    } else if (auto it = load_failures_.find(name); it != load_failures_.end()) {
      disabled_collectors_.push_back(CollectorState{name, false, it->second});
    }
  }
  uint32_t interval_before = intervalInUseMs();
  if (!next.sampling.enabled) {
    host_busy_.reset();  // a later enable starts from the plain interval, not a stale verdict
  }
  settings_ = next;
  // Collectors loaded above got the old interval in use; propagateInterval() compares against it.
  collector_config_ = cfg;
  mask_res_ = std::move(res);
  // The patterns were validated above; the masker applies them with the built-in rules.
  masker_ = Masker::create(settings_.mask_patterns, nullptr);
  for (auto& r : collectors_) {
    r.collector->setMaskPatterns(settings_.mask_patterns);  // exec argv masked by the collector
  }
  propagateInterval();
  if (intervalInUseMs() != interval_before) {
    // The collect loop sleeps until one old interval after the last frame: wake it so the next
    // frame is due one new interval after the last.
    KJ_IF_MAYBE (w, collect_wake_) {
      (*w)->fulfill();
    }
  }
  return absl::OkStatus();
}

void Agent::appendSelfMetrics(std::vector<MetricSample>& out) {
  uplink_->appendSelfMetrics(out);
  out.push_back(MetricSample{
      "vigil_agent_config_version", {}, static_cast<double>(settings_.version), false});
  out.push_back(MetricSample{"vigil_agent_config_pushes_total",
                             {{"result", "applied"}},
                             static_cast<double>(config_applied_),
                             true});
  out.push_back(MetricSample{"vigil_agent_config_pushes_total",
                             {{"result", "failed"}},
                             static_cast<double>(config_failed_),
                             true});
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
        200, absl::StrCat("ok\nuplink_connected ", uplink_->stats().connected ? 1 : 0, "\n"));
  }
  if (request.path == "/metrics") {
    bool om = request.accept.find("application/openmetrics-text") != std::string::npos;
    return HttpReply{200, PromWriter::contentType(om), renderMetrics(om)};
  }
  return HttpReply::text(404, "not found; try /metrics or /healthz\n");
}

}  // namespace vigil

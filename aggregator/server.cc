#include "aggregator/server.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil::aggregator {
Server::Server(ServerOptions options, kj::AsyncIoContext& io)
    : options_(std::move(options)),
      io_(io),
      store_(options_.store),
      series_(options_.series),
      query_api_(series_) {
  store_.setFrameListener([this](const Snapshot& frame) { series_.appendFrame(frame); });
}

Server::~Server() = default;

absl::StatusOr<std::unique_ptr<Server>> Server::create(ServerOptions options,
                                                       kj::AsyncIoContext& io) {
  std::unique_ptr<Server> s(new Server(std::move(options), io));
  std::error_code ec;
  std::filesystem::create_directories(s->options_.data_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create --data_dir ", s->options_.data_dir, ": ", ec.message()));
  }
  auto log = IngestLog::open(s->options_.data_dir + "/ingest.db", s->options_.log);
  if (!log.ok()) {
    return log.status();
  }
  s->log_ = std::move(*log);
  if (auto st = s->replayLog(); !st.ok()) {
    return st;
  }
  if (absl::Status st = s->setupAlerting(); !st.ok()) {
    return st;
  }
  for (size_t i = 0; i < s->options_.remote_write_urls.size(); ++i) {
    const std::string& url = s->options_.remote_write_urls[i];
    auto w = RemoteWriter::create(io.provider->getTimer(), io.provider->getNetwork(), *s->log_, url,
                                  i == 0 ? "remote_write" : "remote_write:" + url,
                                  s->options_.remote_write);
    if (!w.ok()) {
      return w.status();
    }
    s->remote_writers_.push_back(std::move(*w));
  }
  s->ingest_ = kj::heap<Ingest>(io.provider->getTimer(), *s->log_, s->store_, s->options_.ingest);
  auto rpc = listenTcp(io.provider->getNetwork(), io.waitScope, s->options_.rpc_addr,
                       s->options_.rpc_port, "rpc_port");
  if (!rpc.ok()) {
    return rpc.status();
  }
  s->rpc_listener_ = kj::mv(*rpc);
  s->rpc_port_ = s->rpc_listener_->getPort();
  auto http = listenTcp(io.provider->getNetwork(), io.waitScope, s->options_.http_addr,
                        s->options_.http_port, "http_port");
  if (!http.ok()) {
    return http.status();
  }
  s->http_listener_ = kj::mv(*http);
  s->http_port_ = s->http_listener_->getPort();
  Server* self = s.get();
  s->http_ = kj::heap<HttpServer>(io.provider->getTimer(),
                                  [self](const HttpRequest& r) { return self->handleHttp(r); });
  if (!s->options_.ready_file.empty()) {
    std::string tmp = s->options_.ready_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "rpc_port=" << s->rpc_port_ << "\nhttp_port=" << s->http_port_ << "\n";
    }
    if (rename(tmp.c_str(), s->options_.ready_file.c_str()) != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot write ready file ", s->options_.ready_file));
    }
  }
  return s;
}

kj::Promise<void> Server::run() {
  kj::Promise<void> all = ingest_->listen(*rpc_listener_)
                              .exclusiveJoin(http_->listen(*http_listener_))
                              .exclusiveJoin(retentionLoop())
                              .exclusiveJoin(alertLoop());
  for (auto& w : remote_writers_) {
    all = all.exclusiveJoin(w->run());
  }
  return all;
}

void Server::logIngestSummary() const {
  GroupCommitStats c = ingest_->committer().stats();
  const IngestStats& in = ingest_->stats();
  VIGIL_LOG_INFO(
      "ingest summary: frames_accepted=%d frames_duplicate=%d commit_batches=%d "
      "commit_frames=%d mean_batch_frames=%.2f commit_seconds_sum=%.3f worker_cpu_seconds=%.3f "
      "series_cpu_seconds=%.3f queue_max_frames=%d queue_full=%d series=%d series_memory_bytes=%d "
      "delta_frames=%d delta_base_bytes=%d",
      in.frames_accepted, in.frames_duplicate, c.batches, c.frames,
      c.batches ? static_cast<double>(c.frames) / static_cast<double>(c.batches) : 0.0,
      c.commit_seconds_sum, c.worker_cpu_seconds, c.series_cpu_seconds, c.queued_max, c.queue_full,
      series_.numSeries(), series_.memoryBytes(), in.delta_frames, in.delta_base_bytes);
}

absl::Status Server::setupAlerting() {
  auto audit = AuditLog::open(options_.data_dir + "/audit.db");
  if (!audit.ok()) {
    return audit.status();
  }
  audit_ = std::move(*audit);
  auto engine = alerting::AlertEngine::create(options_.data_dir + "/alerts.db");
  if (!engine.ok()) {
    return engine.status();
  }
  engine_ = std::move(*engine);
  FleetApiOptions fo;
  if (!options_.api_tokens_file.empty()) {
    auto tokens = loadApiTokens(options_.api_tokens_file);
    if (!tokens.ok()) {
      return tokens.status();
    }
    fo.tokens = std::move(*tokens);
  }
  const std::string& a = options_.http_addr;
  fo.loopback_only = a == "localhost" || a == "::1" || a.rfind("127.", 0) == 0;
  fo.offline_after_ms = options_.agent_offline_after_ms;
  fleet_ = std::make_unique<FleetApi>(std::move(fo), store_, *audit_);
  fleet_->setAlertEngine(engine_.get());
  // Batch pushes (to ids, labels or all) go to each agent through the transport's capability.
  fleet_->setPushConfig([this](const std::string& agent_id, const AgentConfigSpec& spec) {
    return ingest_->pushConfig(agent_id, spec).then([](ConfigPushResult r) {
      PushResult out;
      out.applied = r.applied;
      out.version = r.version;
      out.error = r.delivered ? r.error : (r.error.empty() ? "agent not connected" : r.error);
      return out;
    });
  });
  if (!options_.rules_file.empty()) {
    fleet_->setRulesReload([this]() { return loadRules(); });
    if (absl::Status st = loadRules(); !st.ok()) {
      return st;  // refuse to start on a broken rule file: nothing older to keep
    }
  }
  if (options_.notifier.generator_url.empty() ||
      options_.notifier.generator_url == NotifierOptions().generator_url) {
    options_.notifier.generator_url =
        absl::StrCat("http://", options_.http_addr, ":", options_.http_port, "/api/v1/alerts");
  }
  notifier_ = std::make_unique<Notifier>(io_.provider->getTimer(), io_.provider->getNetwork(),
                                         options_.notifier);
  return absl::OkStatus();
}

const SeriesSource& Server::alertSource() {
  if (merged_ == nullptr) {
    // The series store holds everything agents report; the recent /metrics history adds only
    // what the store does not have (aggregator-level series such as vigil_agent_up).
    recent_.setSkip([this](const std::string& name) { return series_.hasMetric(name); });
    merged_ = std::make_unique<alerting::MergedSource>(
        std::vector<const SeriesSource*>{&series_, &recent_, &injected_});
  }
  return *merged_;
}

namespace {
// Identity of the rule file's current content for the hot-reload poll: mtime and size (works
// for editors that write in place and for those that rename a new file over it).
std::string fileStamp(const std::string& path) {
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(path, ec);
  if (ec) {
    return "missing";
  }
  auto size = std::filesystem::file_size(path, ec);
  return absl::StrCat(mtime.time_since_epoch().count(), "/", ec ? 0 : size);
}

// How much aggregator-level history (vigil_agent_up and friends, recorded for every agent every
// second) the rules can read: the longest window (plus the baseline of anomaly rules) and a
// minute of slack, at least 5 and at most 30 minutes. Keeping a fixed 30 minutes would hold
// ~1 GiB at 10,000 agents for rules that look back a minute.
int64_t historyNeeded(const alerting::RuleSet& rules) {
  constexpr int64_t kMin = 5 * 60 * 1000;
  constexpr int64_t kMax = 30 * 60 * 1000;
  int64_t need = 0;
  for (const alerting::Rule& r : rules.rules) {
    int64_t w = r.window_ms + (r.kind == alerting::RuleKind::kAnomaly ? r.baseline_ms : 0);
    need = std::max(need, w + 60 * 1000);
  }
  return std::clamp(need, kMin, kMax);
}
}  // namespace

absl::Status Server::loadRules() {
  rules_stamp_ = fileStamp(options_.rules_file);
  std::ifstream in(options_.rules_file);
  absl::Status st;
  if (!in) {
    st = absl::NotFoundError(absl::StrCat("cannot read --rules_file ", options_.rules_file));
  } else {
    std::stringstream ss;
    ss << in.rdbuf();
    alerting::ParseOptions po;
    po.file_name = options_.rules_file;
    po.source = &alertSource();
    auto rules = alerting::parseRules(ss.str(), po);
    if (!rules.ok() && !rules_loaded_once_) {
      // At startup nothing has reported yet, so "unknown metric" cannot be judged: accept the
      // file if it is valid apart from that check, and say which metric was not seen.
      po.check_metrics = false;
      auto unchecked = alerting::parseRules(ss.str(), po);
      if (unchecked.ok()) {
        VIGIL_LOG_WARN("accepting rules at startup although: %s", rules.status().message());
        rules = std::move(unchecked);
      }
    }
    if (rules.ok()) {
      rules_loaded_once_ = true;
      size_t n = rules->rules.size();
      recent_.setRetention(historyNeeded(*rules));
      engine_->setRules(std::move(*rules), unixNs() / 1000000);
      rule_reloads_ok_++;
      last_reload_ok_ = true;
      last_reload_error_.clear();
      VIGIL_LOG_INFO("loaded %d alert rule(s) from %s", n, options_.rules_file);
      return absl::OkStatus();
    }
    st = rules.status();
  }
  rule_reloads_failed_++;
  last_reload_ok_ = false;
  last_reload_error_ = std::string(st.message());
  VIGIL_LOG_ERROR("rejected rule file (%d rule(s) stay active): %s", engine_->rules().rules.size(),
                  st.message());
  return st;
}

kj::Promise<void> Server::alertLoop() {
  return io_.provider->getTimer()
      .afterDelay(options_.alert_eval_interval_ms * kj::MILLISECONDS)
      .then([this]() {
        alertTick(unixNs() / 1000000);
        return alertLoop();
      });
}

void Server::alertTick(int64_t now_ms) {
  recent_.setNow(now_ms);
  if (!options_.rules_file.empty()) {
    // Only rules read this history, and without a rule file none can be loaded: at 10,000
    // agents recording it costs 40,000 samples a second on the event loop.
    store_.render(recent_, now_ms * 1000000, /*agent_level_only=*/true);
  }
  injected_.setNow(now_ms);
  if (!options_.rules_file.empty()) {
    if (fileStamp(options_.rules_file) != rules_stamp_) {
      (void)loadRules();  // errors are logged and counted; the old rules stay
    }
  }
  std::vector<alerting::AgentStatus> agents;
  for (const auto& [id, r] : store_.agents()) {
    agents.push_back({id, r->info.node_name.empty() ? id : r->info.node_name, r->online,
                      r->last_seen_ns / 1000000});
  }
  engine_->evaluate(alertSource(), agents, now_ms);
  notifier_->notify(engine_->alerts(), now_ms);
}

kj::Maybe<kj::Promise<HttpReply>> Server::handleInjection(const HttpRequest& request) {
  // TEST ONLY (--enable_test_injection): {"metric": "...", "labels": {...}, "value": 1.5,
  // "timestamp_ms": optional}. Lets tests drive anomaly/forecast rules with synthetic series.
  if (request.path != "/api/v1/test/inject") {
    return nullptr;
  }
  if (!options_.enable_test_injection || request.method != kj::HttpMethod::POST) {
    return kj::Promise<HttpReply>(HttpReply::text(404, "test injection is disabled\n"));
  }
  auto j = nlohmann::json::parse(request.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("metric") || !j["metric"].is_string() ||
      !j.contains("value") || !j["value"].is_number() ||
      !validMetricName(j["metric"].get<std::string>())) {
    return kj::Promise<HttpReply>(
        HttpReply::text(400, "want {\"metric\": NAME, \"labels\": {}, \"value\": N}\n"));
  }
  LabelSet labels;
  if (j.contains("labels") && j["labels"].is_object()) {
    for (auto& [k, v] : j["labels"].items()) {
      if (!v.is_string() || !validLabelName(k)) {
        return kj::Promise<HttpReply>(HttpReply::text(400, "bad label\n"));
      }
      labels.emplace_back(k, v.get<std::string>());
    }
  }
  int64_t ts = j.value("timestamp_ms", unixNs() / 1000000);
  injected_.add(j["metric"].get<std::string>(), labels, Sample{ts, j["value"].get<double>()});
  return kj::Promise<HttpReply>(HttpReply::text(200, "ok\n"));
}

absl::Status Server::replayLog() {
  int64_t after = 0;
  int64_t frames = 0;
  int64_t bad = 0;
  while (true) {
    auto batch = log_->readAfter(after, 256);
    if (!batch.ok()) {
      return batch.status();
    }
    if (batch->empty()) {
      break;
    }
    for (const LogRecord& r : *batch) {
      after = r.id;
      auto decoded = decodeFrame(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size()),
          r.encoding);
      Snapshot snap;
      if (!decoded.ok() || !fromWire((*decoded)->frame(), snap).ok()) {
        bad++;  // was valid when accepted; a decoder change must not stop the restart
        continue;
      }
      store_.apply(snap, r.received_ns);
      frames++;
    }
  }
  for (const auto& [id, rec] : store_.agents()) {
    store_.agentDisconnected(id, unixNs());
  }
  if (frames > 0 || bad > 0) {
    VIGIL_LOG_INFO("replayed %d frame(s) from the ingest log (%d undecodable)", frames, bad);
  }
  return absl::OkStatus();
}

kj::Promise<void> Server::retentionLoop() {
  return io_.provider->getTimer().afterDelay(60 * kj::SECONDS).then([this]() {
    series_.enforceRetention(unixNs() / 1000000);
    auto r = log_->enforceRetention(unixNs());
    if (!r.ok()) {
      VIGIL_LOG_WARN("ingest log retention failed: %s", r.status().message());
    } else if (r->records_dropped > 0) {
      VIGIL_LOG_INFO("ingest log retention dropped %d frame(s), %d bytes", r->records_dropped,
                     r->bytes_dropped);
    }
    return retentionLoop();
  });
}

kj::Promise<HttpReply> Server::handleHttp(const HttpRequest& request) {
  if (request.path == "/healthz") {
    return HttpReply::text(200, "ok\n");
  }
  if (request.path == "/metrics") {
    bool om = request.accept.find("application/openmetrics-text") != std::string::npos;
    PromWriter out(om);
    store_.render(out, unixNs());
    ingest_->writeMetrics(out);
    series_.writeMetrics(out);
    query_api_.writeMetrics(out);
    writeRemoteWriteMetrics(remote_writers_, out);
    const IngestLogStats& ls = log_->stats();
    out.family("vigil_aggregator_log_bytes", MetricType::kGauge,
               "Payload bytes held in the durable ingest log.");
    out.sample("vigil_aggregator_log_bytes", {}, static_cast<double>(log_->payloadBytes()));
    out.family("vigil_aggregator_log_appends_total", MetricType::kCounter,
               "Frames durably appended to the ingest log.");
    out.sample("vigil_aggregator_log_appends_total", {}, static_cast<double>(ls.appended));
    out.family("vigil_aggregator_log_append_errors_total", MetricType::kCounter,
               "Appends that failed (frames not acknowledged; agents retry).");
    out.sample("vigil_aggregator_log_append_errors_total", {},
               static_cast<double>(ls.append_errors));
    out.family("vigil_aggregator_log_retention_dropped_total", MetricType::kCounter,
               "Frames removed from the ingest log by age or size retention.");
    out.sample("vigil_aggregator_log_retention_dropped_total", {},
               static_cast<double>(ls.retention_dropped));
    engine_->render(out);
    notifier_->render(out);
    fleet_->render(out);
    out.family("vigil_alert_rule_reloads_total", MetricType::kCounter,
               "Rule file loads by result (a failed load keeps the previous rules).");
    out.sample("vigil_alert_rule_reloads_total", {{"result", "ok"}},
               static_cast<double>(rule_reloads_ok_));
    out.sample("vigil_alert_rule_reloads_total", {{"result", "error"}},
               static_cast<double>(rule_reloads_failed_));
    out.family("vigil_alert_rules_last_reload_ok", MetricType::kGauge,
               "1 if the last rule file load succeeded.");
    out.sample("vigil_alert_rules_last_reload_ok", {}, last_reload_ok_ ? 1 : 0);
    out.family("vigil_alert_history_series", MetricType::kGauge,
               "Series held in the alert engine's recent-history window.");
    out.sample("vigil_alert_history_series", {}, static_cast<double>(recent_.seriesCount()));
    out.family("vigil_alert_history_retention_seconds", MetricType::kGauge,
               "How far back the recent-history window keeps samples (follows the rules).");
    out.sample("vigil_alert_history_retention_seconds", {},
               static_cast<double>(recent_.retention()) / 1000.0);
    out.family("vigil_alert_history_overflow_total", MetricType::kCounter,
               "Samples not recorded because the recent-history series cap was reached.");
    out.sample("vigil_alert_history_overflow_total", {}, static_cast<double>(recent_.overflow()));
    return HttpReply{200, PromWriter::contentType(om), out.finish()};
  }
  KJ_IF_MAYBE (reply, fleet_->handle(request, unixNs() / 1000000)) {
    return kj::mv(*reply);
  }
  KJ_IF_MAYBE (reply, handleInjection(request)) {
    return kj::mv(*reply);
  }
  if (auto reply = query_api_.handle(request, unixNs() / 1000000)) {
    return kj::mv(*reply);
  }
  // POST /api/v1/agents/<id>/config: push a config (JSON, see aggregator/fleet.h) to one agent.
  constexpr absl::string_view kAgents = "/api/v1/agents/";
  constexpr absl::string_view kConfig = "/config";
  absl::string_view path = request.path;
  if (absl::StartsWith(path, kAgents) && absl::EndsWith(path, kConfig) &&
      path.size() > kAgents.size() + kConfig.size()) {
    if (request.method != kj::HttpMethod::POST) {
      return HttpReply::text(405, "use POST with a JSON config body\n");
    }
    std::string id(path.substr(kAgents.size(), path.size() - kAgents.size() - kConfig.size()));
    // An admin action like the fleet API's own pushes: same tokens, same audit log.
    std::string who;
    if (auto deny = fleet_->admitAdmin(request, &who)) {
      return kj::mv(*deny);
    }
    auto spec = agentConfigFromJson(request.body);
    if (!spec.ok()) {
      fleet_->auditAction(who, request, id, absl::StrCat("error: ", spec.status().message()));
      return HttpReply::text(400, absl::StrCat(spec.status().message(), "\n"));
    }
    return ingest_->pushConfig(id, std::move(*spec))
        .then([this, id, who, request](ConfigPushResult r) {
          fleet_->auditAction(who, request, id,
                              r.applied ? absl::StrCat("applied version ", r.version)
                                        : absl::StrCat("error: ", r.error));
          int status = r.applied ? 200 : (r.delivered ? 422 : 404);
          return HttpReply::json(status, configResultJson(id, r));
        });
  }
  return HttpReply::text(404, "not found; try /metrics, /healthz or /api/v1/agents\n");
}

}  // namespace vigil::aggregator

#include "aggregator/server.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "userspace/common/log.h"

namespace vigil::aggregator {
namespace {

std::string jsonEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

}  // namespace

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
                              .exclusiveJoin(retentionLoop());
  for (auto& w : remote_writers_) {
    all = all.exclusiveJoin(w->run());
  }
  return all;
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
      if (!decoded.ok()) {
        bad++;  // was valid when accepted; a decoder change must not stop the restart
        continue;
      }
      Snapshot snap;
      fromWire((*decoded)->frame(), snap);
      store_.apply(snap, r.received_ns);
      frames++;
    }
  }
  for (const auto& [id, rec] : store_.agents()) {
    store_.agentDisconnected(id, unixNanos());
  }
  if (frames > 0 || bad > 0) {
    VIGIL_LOG_INFO("replayed %d frame(s) from the ingest log (%d undecodable)", frames, bad);
  }
  return absl::OkStatus();
}

kj::Promise<void> Server::retentionLoop() {
  return io_.provider->getTimer().afterDelay(60 * kj::SECONDS).then([this]() {
    series_.enforceRetention(unixNanos() / 1000000);
    auto r = log_->enforceRetention(unixNanos());
    if (!r.ok()) {
      VIGIL_LOG_WARN("ingest log retention failed: %s", r.status().message());
    } else if (r->records_dropped > 0) {
      VIGIL_LOG_INFO("ingest log retention dropped %d frame(s), %d bytes", r->records_dropped,
                     r->bytes_dropped);
    }
    return retentionLoop();
  });
}

std::string Server::agentsJson() {
  std::string out = "{\"agents\":[";
  bool first = true;
  for (const auto& [id, r] : store_.agents()) {
    if (!first) {
      out += ',';
    }
    first = false;
    absl::StrAppend(&out, "{\"agent_id\":\"", jsonEscape(id), "\",\"node\":\"",
                    jsonEscape(r->info.node_name), "\",\"online\":", r->online ? "true" : "false",
                    ",\"version\":\"", jsonEscape(r->info.version), "\",\"kernel\":\"",
                    jsonEscape(r->info.kernel), "\",\"last_seen\":", r->last_seen_ns / 1000000000,
                    ",\"boot_epoch\":", r->boot_epoch, ",\"last_seq\":", r->last_seq,
                    ",\"config_version\":", r->config_version,
                    ",\"offline_since\":", r->offline_since_ns / 1000000000,
                    ",\"offline_reason\":\"", jsonEscape(r->offline_reason), "\",\"labels\":{");
    bool lf = true;
    for (const auto& [k, v] : r->info.labels) {
      absl::StrAppend(&out, lf ? "" : ",", "\"", jsonEscape(k), "\":\"", jsonEscape(v), "\"");
      lf = false;
    }
    out += "}}";
  }
  out += "]}\n";
  return out;
}

kj::Promise<HttpReply> Server::handleHttp(const HttpRequest& request) {
  if (request.path == "/healthz") {
    return HttpReply::text(200, "ok\n");
  }
  if (request.path == "/metrics") {
    bool om = request.accept.find("application/openmetrics-text") != std::string::npos;
    PromWriter out(om);
    store_.render(out, unixNanos());
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
    return HttpReply{200, PromWriter::contentType(om), out.finish()};
  }
  if (auto reply = query_api_.handle(request, unixNanos() / 1000000)) {
    return kj::mv(*reply);
  }
  if (request.path == "/api/v1/agents") {
    return HttpReply::json(200, agentsJson());
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
    auto spec = agentConfigFromJson(request.body);
    if (!spec.ok()) {
      return HttpReply::text(400, absl::StrCat(spec.status().message(), "\n"));
    }
    return ingest_->pushConfig(id, std::move(*spec)).then([id](ConfigPushResult r) {
      int status = r.applied ? 200 : (r.delivered ? 422 : 404);
      return HttpReply::json(status, configResultJson(id, r));
    });
  }
  return HttpReply::text(404, "not found; try /metrics, /healthz or /api/v1/agents\n");
}

}  // namespace vigil::aggregator

#include "aggregator/server.h"

#include <fstream>

#include "absl/strings/str_cat.h"
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
      ingest_(io.provider->getTimer(), store_, options_.ingest) {}

Server::~Server() = default;

absl::StatusOr<std::unique_ptr<Server>> Server::create(ServerOptions options,
                                                       kj::AsyncIoContext& io) {
  std::unique_ptr<Server> s(new Server(std::move(options), io));
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
  return ingest_.listen(*rpc_listener_).exclusiveJoin(http_->listen(*http_listener_));
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
                    ",\"config_version\":", r->config_version, ",\"labels\":{");
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
    ingest_.writeMetrics(out);
    return HttpReply{200, PromWriter::contentType(om), out.finish()};
  }
  if (request.path == "/api/v1/agents") {
    return HttpReply::json(200, agentsJson());
  }
  return HttpReply::text(404, "not found; try /metrics, /healthz or /api/v1/agents\n");
}

}  // namespace vigil::aggregator

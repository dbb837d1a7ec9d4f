// A small HTTP/1.1 server on kj-http for vigil's local endpoints (/metrics, /healthz, JSON APIs).
// Handlers get the whole request (body read up to a limit) and return a reply, synchronously or
// as a promise. Oversized bodies and unparseable URLs are answered with 4xx here, before any
// handler sees them.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace vigil {

struct HttpRequest {
  kj::HttpMethod method = kj::HttpMethod::GET;
  std::string path;  // decoded, e.g. "/api/v1/agents"
  absl::flat_hash_map<std::string, std::string> query;
  std::vector<std::pair<std::string, std::string>> query_all;  // every parameter, repeats kept
  std::string authorization;                                   // raw Authorization header
  std::string accept;
  std::string remote;  // peer address, for audit logs
  std::string body;

  std::string queryOr(const std::string& key, const std::string& fallback) const {
    auto it = query.find(key);
    return it == query.end() ? fallback : it->second;
  }
};

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;

  static HttpReply text(int status, std::string body) {
    return HttpReply{status, "text/plain; charset=utf-8", std::move(body)};
  }
  static HttpReply json(int status, std::string body) {
    return HttpReply{status, "application/json", std::move(body)};
  }
};

using HttpHandler = std::function<kj::Promise<HttpReply>(const HttpRequest&)>;

class HttpServer final : private kj::HttpService {
 public:
  static constexpr size_t kMaxBodyBytes = 4 << 20;

  HttpServer(kj::Timer& timer, HttpHandler handler);
  ~HttpServer();

  // Serves connections from `listener` until the promise is dropped.
  kj::Promise<void> listen(kj::ConnectionReceiver& listener);

 private:
  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override;

  kj::Own<kj::HttpHeaderTable> table_;
  kj::HttpHeaderId authorization_;
  kj::HttpHeaderId accept_;
  HttpHandler handler_;
  kj::HttpServer server_;
};

// Binds a TCP listener. Errors name the address and the likely cause (port in use, no
// permission) so a daemon can print one line and exit.
absl::StatusOr<kj::Own<kj::ConnectionReceiver>> listenTcp(kj::Network& network,
                                                          kj::WaitScope& wait_scope,
                                                          const std::string& host, uint16_t port,
                                                          const std::string& what_flag);

}  // namespace vigil

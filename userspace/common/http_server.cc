#include "userspace/common/http_server.h"

#include <kj/compat/url.h>

#include "absl/strings/str_cat.h"

namespace vigil {
namespace {

const char* statusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

kj::Own<kj::HttpHeaderTable> buildTable(kj::HttpHeaderId* authorization, kj::HttpHeaderId* accept) {
  kj::HttpHeaderTable::Builder builder;
  *authorization = builder.add("Authorization");
  *accept = builder.add("Accept");
  return builder.build();
}

}  // namespace

HttpServer::HttpServer(kj::Timer& timer, HttpHandler handler)
    : table_(buildTable(&authorization_, &accept_)),
      handler_(std::move(handler)),
      server_(timer, *table_, *this) {}

HttpServer::~HttpServer() = default;

kj::Promise<void> HttpServer::listen(kj::ConnectionReceiver& listener) {
  return server_.listenHttp(listener);
}

kj::Promise<void> HttpServer::request(kj::HttpMethod method, kj::StringPtr url,
                                      const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                                      Response& response) {
  auto send = [this, &response](HttpReply reply) -> kj::Promise<void> {
    kj::HttpHeaders out(*table_);
    out.set(kj::HttpHeaderId::CONTENT_TYPE, reply.content_type);
    auto stream = response.send(reply.status, statusText(reply.status), out,
                                static_cast<uint64_t>(reply.body.size()));
    auto data = kj::heapString(reply.body.data(), reply.body.size());
    auto promise = stream->write(data.begin(), data.size());
    return promise.attach(kj::mv(stream), kj::mv(data));
  };

  auto req = kj::heap<HttpRequest>();
  req->method = method;
  KJ_IF_MAYBE (parsed, kj::Url::tryParse(url, kj::Url::HTTP_REQUEST)) {
    std::string path;
    for (auto& part : parsed->path) {
      absl::StrAppend(&path, "/", part.cStr());
    }
    req->path = path.empty() ? "/" : path;
    for (auto& param : parsed->query) {
      req->query[param.name.cStr()] = param.value == nullptr ? "" : param.value.cStr();
      req->query_all.emplace_back(param.name.cStr(),
                                  param.value == nullptr ? "" : param.value.cStr());
    }
  } else {
    return send(HttpReply::text(400, "malformed request URL\n"));
  }
  KJ_IF_MAYBE (auth, headers.get(authorization_)) {
    req->authorization = auth->cStr();
  }
  KJ_IF_MAYBE (acc, headers.get(accept_)) {
    req->accept = acc->cStr();
  }

  KJ_IF_MAYBE (length, body.tryGetLength()) {
    if (*length > kMaxBodyBytes) {
      return send(
          HttpReply::text(413, absl::StrCat("request body exceeds ", kMaxBodyBytes, " bytes\n")));
    }
  }
  return body.readAllText(kMaxBodyBytes + 1)
      .then([this, req = kj::mv(req), send](kj::String text) mutable -> kj::Promise<void> {
        if (text.size() > kMaxBodyBytes) {
          return send(HttpReply::text(
              413, absl::StrCat("request body exceeds ", kMaxBodyBytes, " bytes\n")));
        }
        req->body = std::string(text.cStr(), text.size());
        auto& ref = *req;
        return handler_(ref)
            .then([send](HttpReply reply) { return send(std::move(reply)); })
            .attach(kj::mv(req));
      });
}

absl::StatusOr<kj::Own<kj::ConnectionReceiver>> listenTcp(kj::Network& network,
                                                          kj::WaitScope& wait_scope,
                                                          const std::string& host, uint16_t port,
                                                          const std::string& what_flag) {
  kj::Own<kj::ConnectionReceiver> receiver;
  std::string where = absl::StrCat(host, ":", port);
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 auto addr = network.parseAddress(host, port).wait(wait_scope);
                 receiver = addr->listen();
               })) {
    std::string why = e->getDescription().cStr();
    if (why.find("EADDRINUSE") != std::string::npos ||
        why.find("Address already in use") != std::string::npos) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", where,
                                                 ": address already in use (is another vigil "
                                                 "process running? choose another with --",
                                                 what_flag, ")"));
    }
    if (why.find("EACCES") != std::string::npos || why.find("Permission") != std::string::npos) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot listen on ", where, ": permission denied"));
    }
    return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", why));
  }
  return receiver;
}

}  // namespace vigil

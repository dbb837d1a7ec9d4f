#include "userspace/cli/http_client.h"

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include "absl/strings/str_cat.h"

namespace vigil::cli {

absl::StatusOr<HttpResponse> httpGet(const std::string& host_port, const std::string& path,
                                     const std::string& bearer_token, absl::Duration timeout) {
  auto io = kj::setupAsyncIo();
  kj::HttpHeaderTable table;
  auto& timer = io.provider->getTimer();
  HttpResponse out;
  bool connected = false;
  // kj reports connect and protocol failures as exceptions; they become a Status here, once.
  kj::Maybe<kj::Exception> error = kj::runCatchingExceptions([&]() {
    auto addr = io.provider->getNetwork().parseAddress(host_port).wait(io.waitScope);
    auto conn =
        timer.timeoutAfter(absl::ToInt64Milliseconds(timeout) * kj::MILLISECONDS, addr->connect())
            .wait(io.waitScope);
    connected = true;
    auto client = kj::newHttpClient(table, *conn);
    kj::HttpHeaders headers(table);
    headers.set(kj::HttpHeaderId::HOST, host_port);
    headers.add("Accept", "application/json");
    if (!bearer_token.empty()) {
      headers.add("Authorization", kj::str("Bearer ", bearer_token.c_str()));
    }
    auto request = client->request(kj::HttpMethod::GET, path, headers);
    auto body = request.response.then([&out](kj::HttpClient::Response&& r) {
      out.status = r.statusCode;
      auto stream = kj::mv(r.body);
      auto text = stream->readAllText(8 << 20);
      return text.attach(kj::mv(stream));
    });
    kj::String text =
        timer.timeoutAfter(absl::ToInt64Milliseconds(timeout) * kj::MILLISECONDS, kj::mv(body))
            .wait(io.waitScope);
    out.body = std::string(text.cStr(), text.size());
  });
  KJ_IF_MAYBE (e, error) {
    std::string what = e->getDescription().cStr();
    if (!connected) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", host_port, ": ", what));
    }
    return absl::InternalError(absl::StrCat("HTTP request to ", host_port, " failed: ", what));
  }
  return out;
}

}  // namespace vigil::cli

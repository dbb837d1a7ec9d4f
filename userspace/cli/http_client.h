// A blocking HTTP GET for the CLI's aggregator queries, on kj-http with its own short-lived
// event loop. Failing to connect (refused, unresolvable, timed out) is Unavailable, so the
// caller can tell "aggregator unreachable" from "aggregator answered with an error".
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "userspace/common/url.h"

namespace vigil::cli {

struct HttpResponse {
  int status = 0;
  std::string body;
};

// `bearer_token`, when set, is sent as "Authorization: Bearer TOKEN".
absl::StatusOr<HttpResponse> httpGet(const std::string& host_port, const std::string& path,
                                     const std::string& bearer_token = "",
                                     absl::Duration timeout = absl::Seconds(10));

using ::vigil::urlEncode;  // userspace/common/url.h

}  // namespace vigil::cli

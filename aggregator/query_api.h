// The aggregator's read API over the series store, shaped like Prometheus's HTTP API so tools
// that speak it (and `vigil query`) can use it:
//   GET /api/v1/series?match[]=SELECTOR[&match[]=...]&start=&end=
//   GET /api/v1/query_range?query=SELECTOR&start=&end=[&step=][&lookback=]
// It is NOT PromQL: a query is one selector (metric{label matchers}); with `step`, each step
// takes the last sample at or before it within the lookback (default 5m); without `step`, every
// stored sample in the range is returned with its own timestamp. See docs/query-api.md.
//
// Everything in the request is validated (sizes, UTF-8, selector syntax, times); a bad request
// gets 400 with Prometheus's error JSON and is counted by reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "aggregator/series_store.h"
#include "userspace/common/http_server.h"

namespace vigil::aggregator {

struct QueryApiOptions {
  int64_t default_lookback_ms = 5 * 60 * 1000;
  size_t max_query_bytes = 4096;
  size_t max_matchers = 32;
  size_t max_series = 10000;
  size_t max_points_per_series = 11000;  // as Prometheus
};

// Parses a time: unix seconds (with optional fraction) or RFC3339. Returns unix ms.
absl::StatusOr<int64_t> parseTimeParam(const std::string& text);
// Parses a duration: seconds ("15", "1.5") or a number with unit (ms, s, m, h, d, w). Returns ms.
absl::StatusOr<int64_t> parseDurationParam(const std::string& text);
// True if `s` is well-formed UTF-8.
bool validUtf8(const std::string& s);
// `s` with each byte that is not part of a valid UTF-8 sequence replaced by U+FFFD.
std::string repairUtf8(const std::string& s);
// JSON string literal for `s` (quotes included); invalid UTF-8 bytes become U+FFFD.
std::string jsonString(const std::string& s);

class QueryApi {
 public:
  QueryApi(const SeriesStore& store, QueryApiOptions options = {})
      : store_(store), options_(options) {}

  // Answers /api/v1/series and /api/v1/query_range; nullopt for other paths.
  std::optional<HttpReply> handle(const HttpRequest& request, int64_t now_ms);

  // vigil_aggregator_query_requests_total{endpoint}, ..._rejected_total{endpoint,reason}.
  void writeMetrics(MetricSink& out) const;

 private:
  HttpReply series(const HttpRequest& request, int64_t now_ms);
  HttpReply queryRange(const HttpRequest& request, int64_t now_ms);
  HttpReply reject(const std::string& endpoint, const std::string& reason,
                   const std::string& message);

  const SeriesStore& store_;
  QueryApiOptions options_;
  absl::flat_hash_map<std::string, uint64_t> requests_;
  absl::flat_hash_map<std::pair<std::string, std::string>, uint64_t> rejected_;
};

}  // namespace vigil::aggregator

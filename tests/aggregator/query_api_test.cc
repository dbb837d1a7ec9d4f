#include "aggregator/query_api.h"

#include <catch2/catch.hpp>

namespace vigil::aggregator {
namespace {

HttpRequest get(const std::string& path, std::vector<std::pair<std::string, std::string>> params) {
  HttpRequest r;
  r.path = path;
  for (const auto& [k, v] : params) {
    r.query[k] = v;
  }
  r.query_all = std::move(params);
  return r;
}

LabelSet ls(std::initializer_list<std::pair<std::string, std::string>> l) {
  LabelSet out(l.begin(), l.end());
  std::sort(out.begin(), out.end());
  return out;
}

struct Fixture {
  SeriesStore store;
  QueryApi api{store};
  int64_t base;  // a whole second, recent enough for the retention window

  Fixture() {
    base = (unixMillis() / 1000 - 600) * 1000;
    // cpu{node="a"}: samples every 10 s at base+0..base+50 s (values 0..5), then a stale marker.
    for (int i = 0; i <= 5; ++i) {
      store.append("a", ls({{"__name__", "cpu"}, {"node", "a"}}), base + i * 10000, i);
    }
    store.append("a", ls({{"__name__", "cpu"}, {"node", "a"}}), base + 60000, staleNaN());
    store.append("b", ls({{"__name__", "cpu"}, {"node", "b"}}), base + 1500, 0.25);
    store.append("b", ls({{"__name__", "mem"}, {"node", "b"}}), base, 7);
  }
  std::string s(int64_t ms) const { return std::to_string(ms / 1000) + (ms % 1000 ? ".5" : ""); }
};

TEST_CASE("query_range with a step takes the last sample within the lookback at each step") {
  Fixture f;
  auto reply = f.api.handle(get("/api/v1/query_range", {{"query", "cpu{node=\"a\"}"},
                                                        {"start", f.s(f.base + 5000)},
                                                        {"end", f.s(f.base + 65000)},
                                                        {"step", "20s"}}),
                            unixMillis());
  REQUIRE(reply);
  CHECK(reply->status == 200);
  int64_t b = f.base / 1000;
  // Steps at +5 (sample 0), +25 (sample 2), +45 (sample 4); +65 is after the stale marker.
  std::string want = "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[" +
                     std::string("{\"metric\":{\"__name__\":\"cpu\",\"node\":\"a\"},\"values\":[") +
                     "[" + std::to_string(b + 5) + ",\"0\"],[" + std::to_string(b + 25) +
                     ",\"2\"],[" + std::to_string(b + 45) + ",\"4\"]]}]}}\n";
  CHECK(reply->body == want);
}

TEST_CASE("query_range without a step returns every stored sample with its own timestamp") {
  Fixture f;
  auto reply = f.api.handle(
      get("/api/v1/query_range",
          {{"query", "cpu{node=~\"b|c\"}"}, {"start", f.s(f.base)}, {"end", f.s(f.base + 100000)}}),
      unixMillis());
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body == "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[" +
                           std::string("{\"metric\":{\"__name__\":\"cpu\",\"node\":\"b\"},") +
                           "\"values\":[[" + std::to_string(f.base / 1000 + 1) +
                           ".5,\"0.25\"]]}]}}\n");
}

TEST_CASE("series lists matching label sets for several match[] selectors, RFC3339 times") {
  Fixture f;
  auto reply = f.api.handle(
      get("/api/v1/series",
          {{"match[]", "cpu{node=\"b\"}"}, {"match[]", "mem"}, {"start", "2020-01-01T00:00:00Z"}}),
      unixMillis());
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body ==
        "{\"status\":\"success\",\"data\":[{\"__name__\":\"cpu\",\"node\":\"b\"},"
        "{\"__name__\":\"mem\",\"node\":\"b\"}]}\n");
}

TEST_CASE("bad requests get 400 with Prometheus error JSON and a counted reason") {
  Fixture f;
  struct Case {
    std::string path;
    std::vector<std::pair<std::string, std::string>> params;
    std::string error;
    std::string reason;
  };
  std::vector<Case> cases = {
      {"/api/v1/query_range", {}, "missing parameter \\\"query\\\"", "missing_parameter"},
      {"/api/v1/query_range",
       {{"query", "cpu{node=~\"(\"}"}},
       "bad regex for label 'node'",
       "bad_selector"},
      {"/api/v1/query_range", {{"query", "cpu{"}}, "expected a label name", "bad_selector"},
      {"/api/v1/query_range",
       {{"query", "{node=~\".*\"}"}},
       "needs a metric name or at least one matcher",
       "bad_selector"},
      {"/api/v1/query_range",
       {{"query", "cpu"}, {"start", "yesterday"}},
       "invalid parameter \\\"start\\\": cannot parse \\\"yesterday\\\"",
       "bad_time"},
      {"/api/v1/query_range",
       {{"query", "cpu"}, {"start", "100"}, {"end", "50"}},
       "end timestamp must not be before start time",
       "bad_time"},
      {"/api/v1/query_range",
       {{"query", "cpu"}, {"step", "5parsecs"}},
       "invalid parameter \\\"step\\\"",
       "bad_step"},
      {"/api/v1/query_range",
       {{"query", "cpu"}, {"start", "0"}, {"end", "100000"}, {"step", "1s"}},
       "exceeded maximum resolution of 11000 points",
       "too_many_points"},
      {"/api/v1/query_range",
       {{"query", "cpu{node=\"\xff\"}"}},
       "is not valid UTF-8",
       "invalid_utf8"},
      {"/api/v1/query_range",
       {{"query", "cpu{node=\"" + std::string(5000, 'x') + "\"}"}},
       "selector is 5012 bytes; the limit is 4096",
       "bad_selector"},
      {"/api/v1/series", {}, "no match[] parameter provided", "missing_parameter"},
  };
  for (const Case& c : cases) {
    INFO(c.path << " expecting " << c.error);
    auto reply = f.api.handle(get(c.path, c.params), unixMillis());
    REQUIRE(reply);
    CHECK(reply->status == 400);
    CHECK(reply->content_type == "application/json");
    CHECK(reply->body.rfind("{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"", 0) ==
          0);
    CHECK(reply->body.find(c.error) != std::string::npos);
  }
  PromWriter w;
  f.api.writeMetrics(w);
  std::string text = w.finish();
  CHECK(text.find("vigil_aggregator_query_rejected_total{endpoint=\"query_range\",reason="
                  "\"bad_selector\"} 4") != std::string::npos);
  CHECK(text.find("vigil_aggregator_query_requests_total{endpoint=\"query_range\"} 10") !=
        std::string::npos);
  CHECK_FALSE(f.api.handle(get("/api/v1/agents", {}), 0));
}

TEST_CASE("times and durations parse in the documented forms") {
  CHECK(*parseTimeParam("1700000000") == 1700000000000);
  CHECK(*parseTimeParam("1700000000.25") == 1700000000250);
  CHECK(*parseTimeParam("2023-11-14T22:13:20Z") == 1700000000000);
  CHECK(*parseTimeParam("2023-11-14T23:13:20.5+01:00") == 1700000000500);
  CHECK_FALSE(parseTimeParam("nan").ok());
  CHECK(*parseDurationParam("30s") == 30000);
  CHECK(*parseDurationParam("5m") == 300000);
  CHECK(*parseDurationParam("1h30m") == 5400000);
  CHECK(*parseDurationParam("250ms") == 250);
  CHECK(*parseDurationParam("2d") == 172800000);
  CHECK(*parseDurationParam("15") == 15000);
  CHECK(*parseDurationParam("0.5") == 500);
  CHECK_FALSE(parseDurationParam("0").ok());
  CHECK_FALSE(parseDurationParam("-5s").ok());
  CHECK(parseDurationParam("5").ok());
  CHECK_FALSE(parseDurationParam("s").ok());
  CHECK(validUtf8("h\xc3\xa9llo"));
  CHECK_FALSE(validUtf8("\xc3"));
  CHECK_FALSE(validUtf8("\xc0\xaf"));      // overlong
  CHECK_FALSE(validUtf8("\xed\xa0\x80"));  // surrogate
  CHECK(jsonString("a\"\\\n\x01\xff") == "\"a\\\"\\\\\\n\\u0001\xef\xbf\xbd\"");
}

}  // namespace
}  // namespace vigil::aggregator

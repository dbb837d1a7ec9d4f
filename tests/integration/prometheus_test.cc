// End to end with a real Prometheus 2.42 (Debian's /usr/bin/prometheus) as the remote-write
// receiver: real vigil-agent (1 s interval) → vigil-aggregator → remote_write → Prometheus, then
// series read back through Prometheus's HTTP API are compared sample by sample (timestamps and
// values) with what the aggregator's query API holds, after a minute of data, after Prometheus was
// down for two minutes, and after an aggregator restart mid-stream.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;
using testing::freePort;
using testing::nowMs;
using testing::urlEncode;
using Samples = std::vector<std::pair<int64_t, double>>;  // (ms, value)

struct PrometheusServer {
  const testing::TempDir& dir;
  int port = 0;
  Child child;

  explicit PrometheusServer(const testing::TempDir& d) : dir(d) {
    std::ofstream(dir.file("prometheus.yml"))
        << "global:\n  scrape_interval: 1h\n"
           "storage:\n  tsdb:\n    out_of_order_time_window: 1h\n";
  }

  // Starts on `want_port`, or on a fresh free port (retrying if another process grabbed it).
  void start(int want_port = 0) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port = want_port != 0 ? want_port : freePort();
      child = Child::spawn({"/usr/bin/prometheus", "--config.file=" + dir.file("prometheus.yml"),
                            "--storage.tsdb.path=" + dir.file("prom-data"),
                            "--web.listen-address=127.0.0.1:" + std::to_string(port),
                            "--web.enable-remote-write-receiver", "--log.level=warn"},
                           dir.file("prometheus.log"));
      bool ready = testing::waitFor(
          [&]() {
            return testing::httpGet(static_cast<uint16_t>(port), "/-/ready").status == 200 ||
                   !child.alive();
          },
          30s, 100ms);
      if (ready && child.alive()) {
        return;
      }
      child = Child();
      if (want_port != 0) {
        break;  // the caller needs this exact port
      }
    }
    FAIL("prometheus did not start:\n" << testing::readFile(dir.file("prometheus.log")));
  }

  void stop() {
    child.signal(SIGTERM);
    REQUIRE(child.wait(30s).has_value());
  }

  // Raw samples of `selector` in (end - range, end], via an instant query of a range vector.
  std::map<std::string, Samples> raw(const std::string& selector, int64_t end_ms, int64_t range_s) {
    std::string q = selector + "[" + std::to_string(range_s) + "s]";
    auto r = testing::httpGet(
        static_cast<uint16_t>(port),
        "/api/v1/query?query=" + urlEncode(q) + "&time=" + std::to_string(end_ms / 1000.0));
    INFO(r.body);
    REQUIRE(r.status == 200);
    return parseMatrix(r.body);
  }

  static std::map<std::string, Samples> parseMatrix(const std::string& body) {
    auto j = nlohmann::json::parse(body);
    REQUIRE(j["status"] == "success");
    std::map<std::string, Samples> out;
    for (const auto& s : j["data"]["result"]) {
      std::string key;
      for (const auto& [k, v] : s["metric"].items()) {
        if (k != "__name__") {
          key += k + "=" + v.get<std::string>() + ",";
        }
      }
      Samples& samples = out[key];
      for (const auto& p : s["values"]) {
        int64_t ms = std::llround(p[0].get<double>() * 1000);
        samples.emplace_back(ms, std::strtod(p[1].get<std::string>().c_str(), nullptr));
      }
    }
    return out;
  }
};

struct Stack {
  testing::TempDir dir;
  PrometheusServer prom{dir};
  Child aggregator;
  Child agent;
  int rpc_port = 0;
  int agg_http = 0;
  int starts = 0;

  void startAggregator() {
    std::string ready = dir.file("agg.ready" + std::to_string(++starts));
    aggregator = Child::spawn(
        {testing::binaryPath("vigil-aggregator"), "--rpc_port=" + std::to_string(rpc_port),
         "--http_port=0", "--ready_file=" + ready, "--data_dir=" + dir.file("agg-data"),
         "--remote_write_url=http://127.0.0.1:" + std::to_string(prom.port) + "/api/v1/write",
         "--remote_write_max_backoff=2s"},
        dir.file("aggregator.log"));
    auto rpc = testing::readReadyPort(ready, "rpc_port", 10s);
    auto http = testing::readReadyPort(ready, "http_port", 10s);
    INFO(logs());
    REQUIRE(rpc);
    REQUIRE(http);
    rpc_port = *rpc;
    agg_http = *http;
  }

  void startAgent() {
    agent = Child::spawn(
        {testing::binaryPath("vigil-agent"), "--aggregator=127.0.0.1:" + std::to_string(rpc_port),
         "--http_port=0", "--interval=1s", "--node_name=prom-node", "--reconnect_max=1s",
         "--ready_file=" + dir.file("agent.ready")},
        dir.file("agent.log"));
    INFO(logs());
    REQUIRE(testing::readReadyPort(dir.file("agent.ready"), "http_port", 20s));
  }

  std::string logs() const {
    return "aggregator log:\n" + testing::readFile(dir.file("aggregator.log")) + "\nagent log:\n" +
           testing::readFile(dir.file("agent.log")) + "\nprometheus log:\n" +
           testing::readFile(dir.file("prometheus.log"));
  }

  double aggMetric(const std::string& name) {
    auto r = testing::httpGet(static_cast<uint16_t>(agg_http), "/metrics");
    return testing::promValue(r.body, name, {}).value_or(-1);
  }

  // Waits until the forwarder has sent everything in the log.
  void waitForwarded(std::chrono::seconds timeout) {
    INFO(logs());
    REQUIRE(testing::waitFor(
        [&]() {
          return aggMetric("vigil_aggregator_remote_write_lag_frames") == 0 &&
                 aggMetric("vigil_aggregator_remote_write_samples_sent_total") > 0;
        },
        timeout, 200ms));
  }

  std::map<std::string, Samples> aggRaw(const std::string& selector, int64_t start_ms,
                                        int64_t end_ms) {
    auto r = testing::httpGet(static_cast<uint16_t>(agg_http),
                              "/api/v1/query_range?query=" + urlEncode(selector) +
                                  "&start=" + std::to_string(start_ms / 1000.0) +
                                  "&end=" + std::to_string(end_ms / 1000.0));
    INFO(r.body);
    REQUIRE(r.status == 200);
    return PrometheusServer::parseMatrix(r.body);
  }

  // Every sample the aggregator holds for `selector` since `start_ms` is in Prometheus with the
  // same timestamp and value, and Prometheus has nothing else. Returns the samples compared.
  size_t compare(const std::string& selector, int64_t start_ms) {
    // Up to the last frame both have seen: the forwarder is caught up, so take the aggregator's
    // newest sample time and look no further.
    int64_t end_ms = nowMs();
    auto ours = aggRaw(selector, start_ms, end_ms);
    REQUIRE_FALSE(ours.empty());
    int64_t last = 0;
    for (const auto& [k, s] : ours) {
      last = std::max(last, s.back().first);
    }
    ours = aggRaw(selector, start_ms, last);
    std::map<std::string, Samples> theirs;
    // A frame logged just before `last` may still be on its way to Prometheus: give it a moment.
    testing::waitFor(
        [&]() {
          theirs = prom.raw(selector, last, (last - start_ms) / 1000 + 1);
          for (auto& [k, s] : theirs) {
            s.erase(std::remove_if(s.begin(), s.end(),
                                   [&](const auto& p) { return p.first < start_ms; }),
                    s.end());
          }
          if (theirs.size() != ours.size()) {
            return false;
          }
          for (const auto& [k, s] : ours) {
            if (theirs.count(k) == 0 || theirs.at(k).size() < s.size()) {
              return false;
            }
          }
          return true;
        },
        10s, 300ms);
    size_t n = 0;
    REQUIRE(theirs.size() == ours.size());
    for (const auto& [key, s] : ours) {
      INFO("series {" << key << "}");
      REQUIRE(theirs.count(key) == 1);
      const Samples& t = theirs.at(key);
      REQUIRE(t.size() == s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        INFO("sample " << i);
        CHECK(t[i].first == s[i].first);
        CHECK(t[i].second == s[i].second);
      }
      n += s.size();
    }
    return n;
  }
};

// Gaps between consecutive samples (agent interval 1 s; a gap would be a missing frame).
int64_t maxGapMs(const Samples& s) {
  int64_t gap = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    gap = std::max(gap, s[i].first - s[i - 1].first);
  }
  return gap;
}

TEST_CASE(
    "Prometheus receives via remote_write exactly what the aggregator holds, across a "
    "Prometheus outage and an aggregator restart") {
  if (!testing::bpfAllowed("prometheus_test")) {
    return;
  }
  Stack st;
  st.prom.start();
  st.startAggregator();
  st.startAgent();
  int64_t start_ms = nowMs();
  std::string agent_cpu = "vigil_process_cpu_seconds_total{node=\"prom-node\",pid=\"" +
                          std::to_string(st.agent.pid()) + "\"}";
  const std::string interval = "vigil_collection_interval_seconds{node=\"prom-node\"}";

  // A minute of agent data.
  std::this_thread::sleep_for(60s);
  st.waitForwarded(30s);
  size_t n1 = st.compare(interval, start_ms);
  CHECK(n1 >= 55);
  st.compare(agent_cpu, start_ms);
  st.compare("vigil_config_version", start_ms);
  auto first = st.aggRaw(interval, start_ms, nowMs());
  CHECK(maxGapMs(first.begin()->second) < 1900);

  // Prometheus down for two minutes: the forwarder retries; the log keeps the frames.
  st.prom.stop();
  std::this_thread::sleep_for(120s);
  CHECK(st.aggMetric("vigil_aggregator_remote_write_lag_frames") > 100);
  CHECK(st.aggMetric("vigil_aggregator_remote_write_retries_total") > 0);
  st.prom.start(st.prom.port);
  st.waitForwarded(60s);
  size_t n2 = st.compare(interval, start_ms);
  CHECK(n2 >= n1 + 115);
  st.compare(agent_cpu, start_ms);
  auto second = st.prom.raw(interval, nowMs(), (nowMs() - start_ms) / 1000 + 1);
  CHECK(maxGapMs(second.begin()->second) < 1900);  // nothing missing from the outage

  // Aggregator restart mid-stream: the forwarder resumes from its persisted cursor.
  st.aggregator.signal(SIGTERM);
  REQUIRE(st.aggregator.wait(10s).has_value());
  // What Prometheus holds now is all the old process delivered (one interval sample per frame).
  size_t before_restart =
      st.prom.raw(interval, nowMs(), (nowMs() - start_ms) / 1000 + 1).begin()->second.size();
  std::this_thread::sleep_for(3s);  // the agent queues frames meanwhile
  st.startAggregator();
  st.waitForwarded(60s);
  std::this_thread::sleep_for(3s);  // a few live frames after the restart
  st.waitForwarded(30s);
  size_t n3 = st.compare(interval, start_ms);
  CHECK(n3 >= n2 + 5);
  st.compare(agent_cpu, start_ms);
  auto third = st.prom.raw(interval, nowMs(), (nowMs() - start_ms) / 1000 + 1);
  CHECK(maxGapMs(third.begin()->second) < 1900);
  // No duplicate: the new process forwarded exactly the frames Prometheus did not have (this
  // agent is the only one, so one frame = one interval sample).
  std::string log = testing::readFile(st.dir.file("aggregator.log"));
  auto pos = log.rfind("resuming after ingest log record ");
  REQUIRE(pos != std::string::npos);
  CHECK(std::stoll(log.substr(pos + 33)) > 0);
  double frames_after = st.aggMetric("vigil_aggregator_remote_write_frames_sent_total");
  INFO("frames forwarded after the restart: " << frames_after << "; Prometheus had "
                                              << before_restart << ", now " << n3);
  CHECK(frames_after == static_cast<double>(n3 - before_restart));
}

}  // namespace
}  // namespace vigil

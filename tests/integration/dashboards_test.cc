// Every query of every provisioned Grafana dashboard (deploy/grafana/dashboards/*.json) runs
// against a real Prometheus 2.42 (Debian's /usr/bin/prometheus, started here) that scrapes a real
// vigil-aggregator fed by a real vigil-agent every second.
//
// Rule: a panel query must return data when every metric it names is produced by this build,
// i.e. appears on the aggregator's /metrics during the test. Panels over metrics that no merged
// collector produces yet (or that need a workload this test does not run, e.g. containers) are
// listed as "no data" with the missing metric names, and do not fail the test. A query that
// Prometheus rejects always fails.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::Child;
using testing::freePort;
using testing::urlEncode;
using testing::writeFile;

// Grafana variables as a user would see them with "All" selected.
std::string substitute(std::string e) {
  for (auto [from, to] : {std::pair{"$__rate_interval", "1m"}, std::pair{"$__interval", "15s"},
                          std::pair{"$node", ".*"}}) {
    for (size_t p = e.find(from); p != std::string::npos; p = e.find(from, p + 1)) {
      e.replace(p, strlen(from), to);
    }
  }
  return e;
}

std::set<std::string> metricNames(const std::string& expr) {
  std::set<std::string> out;
  static const std::regex re(R"(\b(vigil_[a-z0-9_]+|ALERTS)\b)");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), re); it != std::sregex_iterator();
       ++it) {
    out.insert((*it)[1]);
  }
  return out;
}

TEST_CASE("every dashboard panel query returns data from Prometheus fed by vigil") {
  if (!testing::bpfAllowed("dashboards_test")) {
    return;
  }
  testing::TempDir dir;
  // A rule that always fires, so the alerts dashboard has ALERTS series.
  writeFile(dir.file("rules.yml"),
            "rules:\n  - {name: DashboardProbe, metric: vigil_agent_up, threshold: 0, "
            "severity: info}\n");
  Child aggregator =
      Child::spawn({testing::binaryPath("vigil-aggregator"), "--rpc_port=0", "--http_port=0",
                    "--ready_file=" + dir.file("agg.ready"), "--data_dir=" + dir.file("agg-data"),
                    "--rules_file=" + dir.file("rules.yml")},
                   dir.file("aggregator.log"));
  auto rpc = testing::readReadyPort(dir.file("agg.ready"), "rpc_port", 10s);
  auto http = testing::readReadyPort(dir.file("agg.ready"), "http_port", 10s);
  REQUIRE(rpc);
  REQUIRE(http);
  Child agent = Child::spawn(
      {testing::binaryPath("vigil-agent"), "--aggregator=127.0.0.1:" + std::to_string(*rpc),
       "--http_port=0", "--interval=1s", "--node_name=dash-node",
       "--ready_file=" + dir.file("agent.ready")},
      dir.file("agent.log"));
  REQUIRE(testing::readReadyPort(dir.file("agent.ready"), "http_port", 20s));

  int prom_port = freePort();
  writeFile(dir.file("prometheus.yml"),
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: vigil\n    static_configs:\n"
            "      - targets: ['127.0.0.1:" +
                std::to_string(*http) + "']\n");
  Child prometheus = Child::spawn(
      {"/usr/bin/prometheus", "--config.file=" + dir.file("prometheus.yml"),
       "--storage.tsdb.path=" + dir.file("prom-data"),
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
      dir.file("prometheus.log"));
  auto query = [&](const std::string& q) {
    auto r = testing::httpGet(prom_port, "/api/v1/query?query=" + urlEncode(q));
    return json::parse(r.body, nullptr, false);
  };
  // 20 s of scrapes at 1 s: enough for rate() over 1m windows.
  bool scraped = testing::waitFor(
      [&]() {
        json j = query("count_over_time(vigil_agent_up[1m])");
        return j.is_object() && j["status"] == "success" && !j["data"]["result"].empty() &&
               std::stod(j["data"]["result"][0]["value"][1].get<std::string>()) >= 20;
      },
      90s, 500ms);
  INFO(testing::readFile(dir.file("prometheus.log")));
  REQUIRE(scraped);

  // What this build produces: metric names on the aggregator's /metrics (with samples).
  std::set<std::string> produced;
  {
    std::string m = testing::httpGet(*http, "/metrics").body;
    std::istringstream in(m);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') {
        continue;
      }
      std::string name = line.substr(0, line.find_first_of("{ "));
      produced.insert(name);
    }
  }

  int panels = 0;
  int with_data = 0;
  std::vector<std::string> gaps;
  std::string dir_path = std::string(VIGIL_SOURCE_DIR) + "/deploy/grafana/dashboards";
  std::vector<std::filesystem::path> files;
  for (const auto& f : std::filesystem::directory_iterator(dir_path)) {
    files.push_back(f.path());
  }
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() == 5);  // host, containers, processes, network, alerts
  for (const auto& file : files) {
    json d = json::parse(testing::readFile(file.string()), nullptr, false);
    REQUIRE(d.is_object());
    REQUIRE(!d["panels"].empty());
    for (const json& p : d["panels"]) {
      panels++;
      bool any_data = false;
      std::set<std::string> missing;
      for (const json& t : p["targets"]) {
        std::string expr = substitute(t["expr"].get<std::string>());
        json r = query(expr);
        INFO(file.filename().string()
             << " / " << p["title"].get<std::string>() << ": " << expr << "\n"
             << r.dump());
        REQUIRE(r.is_object());
        CHECK(r["status"] == "success");  // a query Prometheus rejects is always a failure
        bool has = !r["data"]["result"].empty();
        std::set<std::string> absent;
        for (const std::string& n : metricNames(expr)) {
          if (!produced.count(n)) {
            absent.insert(n);
          }
        }
        if (absent.empty()) {
          CHECK(has);  // every metric it names is produced: it must have data
        }
        missing.insert(absent.begin(), absent.end());
        any_data = any_data || has;
      }
      if (any_data) {
        with_data++;
      } else {
        std::string why;
        for (const std::string& m : missing) {
          why += (why.empty() ? "" : ", ") + m;
        }
        gaps.push_back(file.filename().string() + " / " + p["title"].get<std::string>() +
                       " (not produced by this build: " + why + ")");
      }
    }
  }
  std::string report = std::to_string(with_data) + "/" + std::to_string(panels) +
                       " panels returned data; panels without data:";
  for (const std::string& g : gaps) {
    report += "\n  - " + g;
  }
  WARN(report);
  CHECK(with_data > 0);
}

}  // namespace
}  // namespace vigil

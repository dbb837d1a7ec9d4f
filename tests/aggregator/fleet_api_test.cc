// The fleet API and the rule loader of a real vigil-aggregator process: bearer roles (401/403)
// and the audit log, rule files that are rejected with file:line, rule name and reason while the
// old rules stay active, config push validation, and alert state across a restart.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::Child;

void writeFile(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
  }
  rename(tmp.c_str(), path.c_str());
}

constexpr const char* kAdmin = "Bearer admin-token-0123456789";
constexpr const char* kViewer = "Bearer viewer-token-0123456789";

struct Aggregator {
  testing::TempDir& dir;
  Child proc;
  int http = 0;

  Aggregator(testing::TempDir& d, std::vector<std::string> extra) : dir(d) {
    unlink(dir.file("agg.ready").c_str());
    std::vector<std::string> argv = {testing::binaryPath("vigil-aggregator"), "--rpc_port=0",
                                     "--http_port=0", "--ready_file=" + dir.file("agg.ready"),
                                     "--data_dir=" + dir.file("data")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = Child::spawn(argv, dir.file("aggregator.log"));
    auto port = testing::readReadyPort(dir.file("agg.ready"), "http_port", 10s);
    INFO(testing::readFile(dir.file("aggregator.log")));
    REQUIRE(port);
    http = *port;
  }
  json get(const std::string& path, const std::string& auth, int* status = nullptr) {
    auto r = testing::httpGet(http, path, auth);
    if (status) {
      *status = r.status;
    }
    return json::parse(r.body, nullptr, false);
  }
  testing::HttpResult post(const std::string& path, const std::string& body,
                           const std::string& auth) {
    return testing::httpRequest(http, "POST", path, body, auth);
  }
};

void writeTokens(const testing::TempDir& dir) {
  writeFile(dir.file("tokens.yml"),
            "tokens:\n"
            "  admin-token-0123456789: {name: alice, role: admin}\n"
            "  viewer-token-0123456789: {name: victor, role: viewer}\n");
}

TEST_CASE("no token gets 401, a viewer on an admin endpoint gets 403, both audited") {
  testing::TempDir dir;
  writeTokens(dir);
  Aggregator agg(dir, {"--api_tokens_file=" + dir.file("tokens.yml")});
  int status = 0;
  agg.get("/api/v1/alerts", "", &status);
  CHECK(status == 401);
  agg.get("/api/v1/agents", "Bearer wrong-token-123", &status);
  CHECK(status == 401);
  json alerts = agg.get("/api/v1/alerts", kViewer, &status);
  CHECK(status == 200);
  CHECK(alerts["alerts"].is_array());
  agg.get("/api/v1/agents", kViewer, &status);
  CHECK(status == 200);
  auto denied = agg.post("/api/v1/collectors", R"({"target":{"all":true},"disable":["sched"]})",
                         kViewer);
  CHECK(denied.status == 403);
  CHECK(denied.body.find("victor") != std::string::npos);
  agg.get("/api/v1/audit", kViewer, &status);
  CHECK(status == 403);

  json audit = agg.get("/api/v1/audit", kAdmin, &status);
  REQUIRE(status == 200);
  const json& e = audit["entries"];
  REQUIRE(e.size() == 4);
  CHECK(e[0]["who"] == "anonymous");
  CHECK(e[0]["action"] == "GET /api/v1/alerts");
  CHECK(e[0]["result"] == "denied: 401 missing bearer token");
  CHECK(e[1]["result"] == "denied: 401 unknown token");
  CHECK(e[2]["who"] == "victor");
  CHECK(e[2]["role"] == "viewer");
  CHECK(e[2]["action"] == "POST /api/v1/collectors");
  CHECK(e[2]["result"] == "denied: 403 admin role required");
  CHECK(e[3]["action"] == "GET /api/v1/audit");
  CHECK(e[3]["result"] == "denied: 403 admin role required");
  CHECK(e[0]["time"].get<std::string>().size() == 24);  // RFC 3339 with ms

  auto metrics = testing::httpGet(agg.http, "/metrics").body;
  CHECK(testing::promValue(metrics, "vigil_api_denied_total", {{"code", "401"}}) == 2.0);
  CHECK(testing::promValue(metrics, "vigil_api_denied_total", {{"code", "403"}}) == 2.0);

  // Admin actions are audited with their target and result. The config push hook belongs to
  // the transport; without it the API answers 501 and says so.
  auto push = agg.post("/api/v1/config",
                       R"({"target":{"labels":{"team":"db"}},"config":{"interval_ms":5000}})",
                       kAdmin);
  CHECK(push.status == 501);
  auto bad = agg.post("/api/v1/config", R"({"target":{"all":true},"config":{"interval_ms":5}})",
                      kAdmin);
  CHECK(bad.status == 400);
  CHECK(bad.body.find("interval_ms") != std::string::npos);
  auto unknown_agent =
      agg.post("/api/v1/collectors", R"({"target":{"agents":["nope"]},"enable":["sched"]})",
               kAdmin);
  CHECK(unknown_agent.status == 404);
  audit = agg.get("/api/v1/audit?after_id=4", kAdmin, &status);
  REQUIRE(audit["entries"].size() == 3);  // reads by an authorized caller are not audited
  CHECK(audit["entries"][0]["who"] == "alice");
  CHECK(audit["entries"][0]["target"] == "labels{team=db}");
  CHECK(audit["entries"][0]["result"] ==
        "error: 501 config push not available in this build");
  CHECK(audit["entries"][1]["result"].get<std::string>().rfind("error: 400", 0) == 0);
  CHECK(audit["entries"][2]["result"] == "error: 404 unknown agent 'nope'");
}

TEST_CASE("broken rule files are rejected with line, rule and reason; old rules stay active") {
  testing::TempDir dir;
  writeTokens(dir);
  const std::string good =
      "rules:\n"
      "  - name: AgentsUp\n"
      "    metric: vigil_agent_up\n"
      "    op: \"<\"\n"
      "    threshold: 1\n";
  writeFile(dir.file("rules.yml"), good);
  Aggregator agg(dir, {"--api_tokens_file=" + dir.file("tokens.yml"),
                       "--rules_file=" + dir.file("rules.yml")});
  auto rules = [&]() { return agg.get("/api/v1/rules", kViewer)["rules"]; };
  REQUIRE(rules().size() == 1);
  std::string path = dir.file("rules.yml");

  struct Case {
    const char* what;
    std::string text;
    std::string expected;
  };
  std::vector<Case> cases = {
      {"invalid YAML", "rules:\n  - name: Broken\n    threshold: [1, 2\n",
       path + ":4:1: invalid YAML: "},
      {"unknown metric",
       "rules:\n  - name: Ok\n    metric: vigil_agent_up\n    threshold: 1\n"
       "  - name: Typo\n    metric: vigil_agnet_up\n    threshold: 1\n",
       path + ":6: rule 'Typo': unknown metric 'vigil_agnet_up': not in the series store and not "
              "a vigil metric family (docs/metrics.md)"},
      {"bad regex",
       "rules:\n  - name: BadRegex\n    metric: vigil_agent_up\n"
       "    matchers: ['node=~\"web-(\"']\n    threshold: 1\n",
       path + ":4: rule 'BadRegex': bad regex for label 'node': \"web-(\": "},
  };
  for (const Case& c : cases) {
    SECTION(c.what) {
      // The file watcher notices the change and refuses it (logged and counted) ...
      writeFile(path, c.text);
      REQUIRE(testing::waitFor(
          [&]() {
            auto m = testing::httpGet(agg.http, "/metrics").body;
            auto e = testing::promValue(m, "vigil_alert_rule_reloads_total", {{"result", "error"}});
            return e && *e == 1;
          },
          10s, 100ms));
      CHECK(testing::readFile(dir.file("aggregator.log")).find(c.expected) != std::string::npos);
      // ... and so does an explicit reload through the API.
      auto r = agg.post("/api/v1/rules/reload", "", kAdmin);
      CHECK(r.status == 422);
      json body = json::parse(r.body, nullptr, false);
      std::string err = body.value("error", "");
      INFO(err);
      CHECK(err.rfind(c.expected, 0) == 0);
      CHECK(body["kept_old_rules"] == true);
      REQUIRE(rules().size() == 1);
      CHECK(rules()[0]["name"] == "AgentsUp");
      json audit = agg.get("/api/v1/audit", kAdmin);
      CHECK(audit["entries"].back()["action"] == "POST /api/v1/rules/reload");
      CHECK(audit["entries"].back()["result"].get<std::string>().rfind("error: " + c.expected,
                                                                        0) == 0);
      // A good file then loads through the watcher.
      writeFile(path, good + "  - {name: Second, metric: vigil_agent_up, threshold: 5}\n");
      CHECK(testing::waitFor([&]() { return rules().size() == 2; }, 10s, 100ms));
    }
  }
}

TEST_CASE("alert state survives an aggregator restart") {
  testing::TempDir dir;
  writeFile(dir.file("rules.yml"),
            "rules:\n  - {name: Hot, metric: vigil_test_temp, threshold: 50, for: 1h}\n"
            "  - {name: Boiling, metric: vigil_test_temp, threshold: 90}\n");
  // vigil_test_temp is synthetic (test-only injection path); it has to exist before the rule
  // file is loaded, so the first start runs without rules and the file is added by reload.
  std::string since;
  {
    writeFile(dir.file("empty.yml"), "rules: []\n");
    Aggregator agg(dir, {"--enable_test_injection", "--rules_file=" + dir.file("empty.yml")});
    auto r = agg.post("/api/v1/test/inject", R"({"metric":"vigil_test_temp","value":95})", "");
    REQUIRE(r.status == 200);
    writeFile(dir.file("empty.yml"), testing::readFile(dir.file("rules.yml")));
    REQUIRE(testing::waitFor(
        [&]() { return agg.get("/api/v1/alerts?state=firing", "")["alerts"].size() == 1; }, 10s,
        100ms));
    json all = agg.get("/api/v1/alerts", "")["alerts"];
    REQUIRE(all.size() == 2);
    CHECK(all[0]["name"] == "Boiling");
    CHECK(all[1]["name"] == "Hot");
    CHECK(all[1]["state"] == "pending");
    since = all[1]["active_since"];
    agg.proc.signal(SIGTERM);
    agg.proc.wait(10s);
  }
  Aggregator agg(dir, {"--enable_test_injection", "--rules_file=" + dir.file("empty.yml")});
  json all = agg.get("/api/v1/alerts", "")["alerts"];
  REQUIRE(all.size() == 2);
  CHECK(all[0]["state"] == "firing");
  CHECK(all[1]["state"] == "pending");
  CHECK(all[1]["active_since"] == since);
  auto m = testing::httpGet(agg.http, "/metrics").body;
  CHECK(testing::promValue(m, "ALERTS", {{"alertname", "Boiling"}, {"alertstate", "firing"}}) ==
        1.0);
  CHECK(testing::promValue(m, "ALERTS", {{"alertname", "Hot"}, {"alertstate", "pending"}}) ==
        1.0);
}

}  // namespace
}  // namespace vigil

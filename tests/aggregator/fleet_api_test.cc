// The fleet API and the rule loader of a real vigil-aggregator process: bearer roles (401/403)
// and the audit log, rule files that are rejected with file:line, rule name and reason while the
// old rules stay active, config push validation, and alert state across a restart.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <atomic>
#include <mutex>
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
  auto denied =
      agg.post("/api/v1/collectors", R"({"target":{"all":true},"disable":["sched"]})", kViewer);
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
  auto push =
      agg.post("/api/v1/config",
               R"({"target":{"labels":{"team":"db"}},"config":{"interval_ms":5000}})", kAdmin);
  CHECK(push.status == 501);
  auto bad =
      agg.post("/api/v1/config", R"({"target":{"all":true},"config":{"interval_ms":5}})", kAdmin);
  CHECK(bad.status == 400);
  CHECK(bad.body.find("interval_ms") != std::string::npos);
  auto unknown_agent = agg.post("/api/v1/collectors",
                                R"({"target":{"agents":["nope"]},"enable":["sched"]})", kAdmin);
  CHECK(unknown_agent.status == 404);
  audit = agg.get("/api/v1/audit?after_id=4", kAdmin, &status);
  REQUIRE(audit["entries"].size() == 3);  // reads by an authorized caller are not audited
  CHECK(audit["entries"][0]["who"] == "alice");
  CHECK(audit["entries"][0]["target"] == "labels{team=db}");
  CHECK(audit["entries"][0]["result"] == "error: 501 config push not available in this build");
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
      CHECK(audit["entries"].back()["result"].get<std::string>().rfind("error: " + c.expected, 0) ==
            0);
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
  CHECK(testing::promValue(m, "ALERTS", {{"alertname", "Hot"}, {"alertstate", "pending"}}) == 1.0);
}

}  // namespace
}  // namespace vigil

namespace vigil {
namespace {

// A minimal HTTP receiver for webhook posts (a real socket server on loopback): answers the
// first `fail_first` requests with 500, then 200, and keeps every body.
class HookReceiver {
 public:
  explicit HookReceiver(int fail_first) : fail_first_(fail_first) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    listen(fd_, 16);
    thread_ = std::thread([this]() { loop(); });
  }
  ~HookReceiver() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::string> bodies() {
    std::lock_guard<std::mutex> l(mu_);
    return bodies_;
  }
  int requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }

 private:
  void loop() {
    while (!stop_) {
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        return;
      }
      std::string data;
      char buf[65536];
      while (true) {
        ssize_t n = recv(c, buf, sizeof(buf), 0);
        if (n <= 0) {
          break;
        }
        data.append(buf, n);
        auto end = data.find("\r\n\r\n");
        if (end == std::string::npos) {
          continue;
        }
        std::string head = data.substr(0, end);
        for (char& ch : head) {
          ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
        }
        auto cl = head.find("content-length:");
        size_t want = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15));
        if (data.size() >= end + 4 + want) {
          std::lock_guard<std::mutex> l(mu_);
          requests_++;
          bool fail = requests_ <= fail_first_;
          if (!fail) {
            bodies_.push_back(data.substr(end + 4, want));
          }
          std::string reply =
              fail ? "HTTP/1.1 500 Internal Server Error\r\n" : "HTTP/1.1 200 OK\r\n";
          reply += "Content-Length: 0\r\nConnection: close\r\n\r\n";
          send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
          break;
        }
      }
      close(c);
    }
  }

  int fail_first_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> bodies_;
  int requests_ = 0;
};

TEST_CASE("webhook gets grouped alerts, failures are retried, the group rate limit holds back") {
  testing::TempDir dir;
  HookReceiver hook(/*fail_first=*/2);
  writeFile(dir.file("rules.yml"), "rules: []\n");
  Aggregator agg(dir, {"--enable_test_injection", "--rules_file=" + dir.file("rules.yml"),
                       "--webhook_url=http://127.0.0.1:" + std::to_string(hook.port()) + "/hook",
                       "--alert_group_limit=2", "--alert_resend_interval=1h"});
  for (const char* disk : {"sda", "sdb", "sdc"}) {
    auto r = agg.post("/api/v1/test/inject",
                      std::string(R"({"metric":"vigil_test_disk_errors","labels":{"disk":")") +
                          disk + R"("},"value":3})",
                      "");
    REQUIRE(r.status == 200);
  }
  writeFile(dir.file("rules.yml"),
            "rules:\n  - name: DiskErrors\n    metric: vigil_test_disk_errors\n"
            "    threshold: 0\n    severity: critical\n    annotations:\n"
            "      summary: \"{{ $labels.disk }} has {{ $value }} errors\"\n");
  // Two failed posts (500) are retried with backoff; then two alerts per minute pass the
  // DiskErrors group's limit and the third is held back.
  bool delivered = testing::waitFor([&]() { return !hook.bodies().empty(); }, 20s, 100ms);
  if (!delivered) {
    FAIL("requests: " << hook.requests() << "\n"
                      << testing::readFile(dir.file("aggregator.log")) << "\n"
                      << agg.get("/api/v1/alerts", "").dump());
  }
  std::this_thread::sleep_for(1500ms);
  auto bodies = hook.bodies();
  REQUIRE(bodies.size() == 1);
  json doc = json::parse(bodies[0], nullptr, false);
  REQUIRE(doc.is_object());
  CHECK(doc["receiver"] == "vigil");
  REQUIRE(doc["groups"].size() == 1);
  CHECK(doc["groups"][0]["labels"]["alertname"] == "DiskErrors");
  const json& alerts = doc["groups"][0]["alerts"];
  REQUIRE(alerts.size() == 2);
  CHECK(alerts[0]["status"] == "firing");
  CHECK(alerts[0]["labels"]["severity"] == "critical");
  CHECK(alerts[0]["annotations"]["summary"] ==
        alerts[0]["labels"]["disk"].get<std::string>() + " has 3 errors");
  CHECK(alerts[0]["startsAt"].get<std::string>().size() == 24);
  auto m = testing::httpGet(agg.http, "/metrics").body;
  CHECK(testing::promValue(m, "vigil_notifier_failures_total", {{"kind", "webhook"}}) == 2.0);
  CHECK(testing::promValue(m, "vigil_notifier_alerts_sent_total", {{"kind", "webhook"}}) == 2.0);
  auto suppressed = testing::promValue(m, "vigil_notifier_suppressed_total", {{"kind", "webhook"}});
  REQUIRE(suppressed);
  CHECK(*suppressed >= 1);
}

}  // namespace
}  // namespace vigil

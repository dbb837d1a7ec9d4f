// End to end on loopback: real vigil-aggregator and vigil-agent binaries, the real kernel, and a
// real CPU-burning child whose time the aggregator must report.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <thread>

#include "tests/support/test_support.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

struct Pipeline {
  testing::TempDir dir;
  Child aggregator;
  Child agent;
  int rpc_port = 0;
  int agg_http = 0;
  int agent_http = 0;

  Pipeline()
      : aggregator(Child::spawn(
            {testing::binaryPath("vigil-aggregator"), "--rpc_port=0", "--http_port=0",
             "--ready_file=" + dir.file("agg.ready"), "--data_dir=" + dir.file("agg-data")},
            dir.file("aggregator.log"))) {
    auto rpc = testing::readReadyPort(dir.file("agg.ready"), "rpc_port", 10s);
    auto http = testing::readReadyPort(dir.file("agg.ready"), "http_port", 10s);
    REQUIRE(rpc);
    REQUIRE(http);
    rpc_port = *rpc;
    agg_http = *http;
    agent = Child::spawn(
        {testing::binaryPath("vigil-agent"), "--aggregator=127.0.0.1:" + std::to_string(rpc_port),
         "--http_port=0", "--interval=1s", "--node_name=test-node", "--reconnect_max=2s",
         "--ready_file=" + dir.file("agent.ready")},
        dir.file("agent.log"));
    auto ah = testing::readReadyPort(dir.file("agent.ready"), "http_port", 20s);
    INFO(testing::readFile(dir.file("agent.log")));
    REQUIRE(ah);
    agent_http = *ah;
  }

  std::string logs() const {
    return "aggregator log:\n" + testing::readFile(dir.file("aggregator.log")) + "\nagent log:\n" +
           testing::readFile(dir.file("agent.log"));
  }
};

TEST_CASE("a CPU burner's time reaches the aggregator's /metrics within 15% of /proc") {
  if (!testing::bpfAllowed("pipeline_test")) {
    return;
  }
  Pipeline p;
  Child burner = Child::fork([]() {
    testing::burnCpu(1.0);
    pause();
    return 0;
  });
  std::string pid = std::to_string(burner.pid());
  // The burner has used its second once it sleeps.
  REQUIRE(
      testing::waitFor([&]() { return testing::procCpuSeconds(burner.pid()) >= 0.99; }, 20s, 20ms));
  std::this_thread::sleep_for(100ms);
  double expected = testing::procCpuSeconds(burner.pid());

  std::optional<double> seen;
  bool ok = testing::waitFor(
      [&]() {
        auto r = testing::httpGet(p.agg_http, "/metrics");
        seen = testing::promValue(r.body, "vigil_process_cpu_seconds_total",
                                  {{"node", "test-node"}, {"pid", pid}});
        return seen && *seen >= expected * 0.85;
      },
      20s, 200ms);
  INFO(p.logs());
  REQUIRE(ok);
  INFO("aggregator " << *seen << "s, /proc " << expected << "s");
  CHECK(*seen == Approx(expected).epsilon(0.15));

  // The agent serves its own /metrics and /healthz.
  auto health = testing::httpGet(p.agent_http, "/healthz");
  CHECK(health.status == 200);
  CHECK(health.body.find("uplink_connected 1") != std::string::npos);
  auto own = testing::httpGet(p.agent_http, "/metrics");
  CHECK(own.status == 200);
  CHECK(testing::promValue(own.body, "vigil_process_cpu_seconds_total", {{"pid", pid}}));
  CHECK(testing::promValue(own.body, "vigil_agent_frames_acked_total", {}).value_or(0) >= 1);

  // The fleet view knows the agent.
  auto agents = testing::httpGet(p.agg_http, "/api/v1/agents");
  CHECK(agents.body.find("\"agent_id\":\"test-node\"") != std::string::npos);
  CHECK(agents.body.find("\"online\":true") != std::string::npos);
}

TEST_CASE("the agent keeps collecting while the aggregator is down and delivers afterwards") {
  if (!testing::bpfAllowed("pipeline_test")) {
    return;
  }
  Pipeline p;
  REQUIRE(testing::waitFor(
      [&]() {
        auto r = testing::httpGet(p.agg_http, "/metrics");
        return testing::promValue(r.body, "vigil_agent_up", {{"agent_id", "test-node"}}) == 1.0;
      },
      20s));
  p.aggregator.signal(SIGTERM);
  REQUIRE(p.aggregator.wait(10s).has_value());
  // Frames queue up while the aggregator is away.
  REQUIRE(testing::waitFor(
      [&]() {
        auto r = testing::httpGet(p.agent_http, "/metrics");
        return testing::promValue(r.body, "vigil_agent_queue_frames", {}).value_or(0) >= 2;
      },
      20s));
  auto queued = testing::httpGet(p.agent_http, "/metrics");
  CHECK(testing::promValue(queued.body, "vigil_agent_uplink_connected", {}) == 0.0);
  // Same ports again.
  p.aggregator = Child::spawn(
      {testing::binaryPath("vigil-aggregator"), "--rpc_port=" + std::to_string(p.rpc_port),
       "--http_port=" + std::to_string(p.agg_http)},
      p.dir.file("aggregator2.log"));
  bool drained = testing::waitFor(
      [&]() {
        auto r = testing::httpGet(p.agent_http, "/metrics");
        return testing::promValue(r.body, "vigil_agent_queue_frames", {}) == 0.0 &&
               testing::promValue(r.body, "vigil_agent_uplink_connected", {}) == 1.0;
      },
      60s, 200ms);
  INFO(p.logs());
  CHECK(drained);
  auto r = testing::httpGet(p.agg_http, "/metrics");
  CHECK(testing::promValue(r.body, "vigil_agent_frames_received_total", {{"agent_id", "test-node"}})
            .value_or(0) >= 2);
}

TEST_CASE("SIGTERM stops the agent and leaves no vigil BPF program in the kernel") {
  if (!testing::bpfAllowed("pipeline_test")) {
    return;
  }
  Pipeline p;
  std::vector<int> progs;
  REQUIRE(testing::waitFor(
      [&]() {
        progs = testing::bpfProgramIdsInMetrics(testing::httpGet(p.agent_http, "/metrics").body);
        return !progs.empty();
      },
      10s));
  for (int id : progs) {
    CHECK(testing::bpfProgramExists(id));
  }
  p.agent.signal(SIGTERM);
  auto status = p.agent.wait(10s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  // Programs are freed asynchronously after their last fd closes; give the kernel a moment.
  bool clean = testing::waitFor(
      [&]() {
        for (int id : progs) {
          if (testing::bpfProgramExists(id)) {
            return false;
          }
        }
        return true;
      },
      5s);
  CHECK(clean);
}

TEST_CASE("a second aggregator on a port in use fails with a clear message") {
  testing::TempDir dir;
  Child first =
      Child::spawn({testing::binaryPath("vigil-aggregator"), "--rpc_port=0", "--http_port=0",
                    "--ready_file=" + dir.file("a.ready"), "--data_dir=" + dir.file("a-data")},
                   dir.file("a.log"));
  auto rpc = testing::readReadyPort(dir.file("a.ready"), "rpc_port", 10s);
  REQUIRE(rpc);
  Child second =
      Child::spawn({testing::binaryPath("vigil-aggregator"), "--rpc_port=" + std::to_string(*rpc),
                    "--http_port=0", "--data_dir=" + dir.file("b-data")},
                   dir.file("b.log"));
  auto status = second.wait(10s);
  REQUIRE(status.has_value());
  CHECK(WEXITSTATUS(*status) == 1);
  std::string log = testing::readFile(dir.file("b.log"));
  INFO(log);
  CHECK(log.find("address already in use") != std::string::npos);
  CHECK(log.find("--rpc_port") != std::string::npos);
}

TEST_CASE("an agent without privileges exits with one line naming the cause and the fix") {
  if (geteuid() != 0) {
    WARN("needs root to drop to an unprivileged user; skipped");
    return;
  }
  testing::TempDir dir;
  Child agent =
      Child::spawn({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--inh-caps=-all", testing::binaryPath("vigil-agent"), "--http_port=0"},
                   dir.file("agent.log"));
  auto status = agent.wait(10s);
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
  std::string log = testing::readFile(dir.file("agent.log"));
  INFO(log);
  CHECK(log ==
        "vigil-agent: sched: permission denied loading BPF; run as root (sudo) or grant "
        "CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE\n");
}

}  // namespace
}  // namespace vigil

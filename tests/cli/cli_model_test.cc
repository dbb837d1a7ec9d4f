// The CLI's pure parts: flag parsing, the top model and its rendering, snapshot JSON names, and
// the aggregator reply tables (including replies with missing or mistyped fields).
#include <catch2/catch.hpp>

#include "userspace/cli/aggregator_cmds.h"
#include "userspace/cli/args.h"
#include "userspace/cli/cli.h"
#include "userspace/cli/http_client.h"
#include "userspace/cli/snapshot_json.h"
#include "userspace/cli/top.h"

namespace vigil::cli {
namespace {

using nlohmann::json;

const std::vector<FlagSpec> kSpecs = {{"duration", true, "D", ""},
                                      {"json", false, "", ""},
                                      {"syscall-mode", true, "M", ""},
                                      {"pid", true, "P", ""}};

TEST_CASE("args: --k=v, --k v, bools, dashes equal underscores, positional after --") {
  auto a = Args::parse(
      {"--duration=3s", "--json", "--syscall_mode", "off", "sel{a=\"b\"}", "--", "--pid"}, kSpecs);
  REQUIRE(a.ok());
  CHECK(a->duration("duration", absl::Seconds(2)).value() == absl::Seconds(3));
  CHECK(a->has("json"));
  CHECK(a->get("syscall-mode") == "off");
  CHECK(a->positional() == std::vector<std::string>{"sel{a=\"b\"}", "--pid"});
  CHECK(a->duration("missing", absl::Seconds(2)).value() == absl::Seconds(2));
}

TEST_CASE("args: unknown flags, missing values and bad numbers are usage errors") {
  CHECK(Args::parse({"--nope"}, kSpecs).status().message() == "unknown flag '--nope'");
  CHECK_FALSE(Args::parse({"--duration"}, kSpecs).ok());
  CHECK_FALSE(Args::parse({"--json=yes"}, kSpecs).ok());
  auto a = Args::parse({"--duration=soon", "--pid=-4"}, kSpecs);
  REQUIRE(a.ok());
  CHECK_FALSE(a->duration("duration", absl::Seconds(1)).ok());
  CHECK_FALSE(a->u32("pid", 0).ok());
  auto b = Args::parse({"--duration=1.5", "-h"}, kSpecs);
  REQUIRE(b.ok());
  CHECK(b->duration("duration", absl::Seconds(1)).value() == absl::Milliseconds(1500));
  CHECK(b->has("help"));
  auto z = Args::parse({"--duration=0s"}, kSpecs);
  CHECK_FALSE(z->duration("duration", absl::Seconds(1)).ok());
}

TEST_CASE("every command has a help page with examples and the exit codes") {
  for (const Command& c : commands()) {
    INFO(c.name);
    std::string page = helpPage(c);
    CHECK(page.find("usage: vigil " + c.name) == 0);
    CHECK(page.find("examples:\n  ") != std::string::npos);
    CHECK(page.find("4 aggregator unreachable") != std::string::npos);
  }
}

ProcessStats proc(uint32_t pid, const char* comm, uint64_t cpu_ms, uint64_t syscalls = 0,
                  const char* container = "") {
  ProcessStats p;
  p.pid = pid;
  p.comm = comm;
  p.cpu_ns = cpu_ms * 1000000;
  p.syscalls = syscalls;
  p.container_id = container;
  p.cgroup_id = container[0] ? 100 : 1;
  return p;
}

void fill(Snapshot& s, std::vector<ProcessStats> procs) {
  for (auto& p : procs) {
    s.processes[p.pid] = p;
  }
  s.collectors.push_back(CollectorState{"sched", true, ""});
}

TEST_CASE("top: CPU% and rates are deltas; new and reused pids count from zero") {
  Snapshot prev, cur;
  fill(prev, {proc(10, "busy", 1000, 50), proc(11, "idle", 500), proc(12, "reused", 9000)});
  fill(cur, {proc(10, "busy", 1900, 250), proc(11, "idle", 510), proc(12, "reused", 300),
             proc(13, "new", 200)});
  auto rows = computeRows(prev, cur, 1.0, false, {});
  sortRows(rows, TopSort::kCpu);
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].pid == 10);
  CHECK(rows[0].cpu_percent == Approx(90.0));
  CHECK(rows[0].syscalls_per_s == Approx(200.0));
  CHECK(rows[1].pid == 12);
  CHECK(rows[1].cpu_percent == Approx(30.0));
  CHECK(rows[2].pid == 13);
  CHECK(rows[2].cpu_percent == Approx(20.0));
  CHECK(rows[3].cpu_percent == Approx(1.0));
  sortRows(rows, TopSort::kSyscalls);
  CHECK(rows[0].pid == 10);
  sortRows(rows, TopSort::kPid);
  CHECK(rows[0].pid == 10);
  CHECK(rows[3].pid == 13);
}

TEST_CASE("top: filters by pid, comm substring and container prefix; container grouping") {
  Snapshot prev, cur;
  fill(cur, {proc(1, "nginx", 100, 0, "abcdef0123"), proc(2, "nginx-worker", 300, 0, "abcdef0123"),
             proc(3, "redis", 50, 0, "ffff"), proc(4, "sshd", 10)});
  CHECK(computeRows(prev, cur, 1, false, TopFilter{3, "", ""}).size() == 1);
  CHECK(computeRows(prev, cur, 1, false, TopFilter{0, "", "nginx"}).size() == 2);
  CHECK(computeRows(prev, cur, 1, false, TopFilter{0, "abc", ""}).size() == 2);
  auto groups = computeRows(prev, cur, 1, true, {});
  sortRows(groups, TopSort::kCpu);
  REQUIRE(groups.size() == 3);
  CHECK(groups[0].container == "abcdef0123");
  CHECK(groups[0].processes == 2);
  CHECK(groups[0].cpu_percent == Approx(40.0));
  CHECK(groups[2].container == "(host)");
  CHECK(groups[2].processes == 1);
}

TEST_CASE("top: run-queue p50/p99 from the interval's histogram delta") {
  Snapshot prev, cur;
  fill(prev, {proc(7, "w", 0)});
  fill(cur, {proc(7, "w", 100)});
  HistogramSample before{"vigil_process_runqueue_latency_seconds", {{"pid", "7"}}, 1000, {}, 0, 0};
  before.buckets = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 500};  // old samples at 2^11 us
  before.count = 500;
  HistogramSample after = before;
  after.buckets[3] = 98;  // new: 98 samples below 16 us, 2 below 2048 us
  after.buckets[10] = 502;
  after.count = 600;
  prev.histograms.push_back(before);
  cur.histograms.push_back(after);
  auto rows = computeRows(prev, cur, 1, false, {});
  REQUIRE(rows.size() == 1);
  REQUIRE(rows[0].runq_p50);
  CHECK(*rows[0].runq_p50 == Approx(16e-6));
  CHECK(*rows[0].runq_p99 == Approx(2048e-6));
  CHECK(availableColumns(cur).runq);
}

TEST_CASE("top: absent collectors show '-' and every line fits 80 columns and 24 rows") {
  Snapshot prev, cur;
  std::vector<ProcessStats> many;
  for (uint32_t i = 1; i <= 60; ++i) {
    many.push_back(proc(i, "a-very-long-command-name", i * 10, i * 1000000));
  }
  fill(cur, many);
  cur.agent.node_name = "node-with-a-rather-long-host-name.example.internal";
  TopColumns cols = availableColumns(cur);
  CHECK(cols.cpu);
  CHECK_FALSE(cols.syscalls);
  auto rows = computeRows(prev, cur, 1, false, {});
  sortRows(rows, TopSort::kCpu);
  auto lines = renderTop(headerFrom(cur, 1), rows, cols, TopSort::kCpu, false, 80, 24);
  CHECK(lines.size() == 24);
  for (const std::string& l : lines) {
    CHECK(l.size() <= 80);
  }
  // Row 4 is the busiest process; its syscalls column prints '-' with no syscall collector.
  CHECK(lines[4].find("   60 a-very-long-") == 2);
  CHECK(lines[4].find(" 60.0 ") != std::string::npos);
  CHECK(lines[4].find("     -") != std::string::npos);
  auto tiny = renderTop(headerFrom(cur, 1), rows, cols, TopSort::kCpu, false, 20, 2);
  CHECK(tiny.size() == 2);
  CHECK(tiny[0].size() == 20);
  json j = topToJson(rows, cols, TopSort::kCpu, false, 1);
  CHECK(j["rows"][0]["pid"] == 60);
  CHECK(j["rows"][0]["syscalls_per_second"].is_null());
  CHECK(j["rows"][0]["cpu_percent"] == Approx(60.0));
}

TEST_CASE("human units") {
  CHECK(humanNumber(0) == "0");
  CHECK(humanNumber(999) == "999");
  CHECK(humanNumber(1536) == "1.5K");
  CHECK(humanNumber(50 * 1048576.0) == "50M");
  CHECK(humanSeconds(12e-6) == "12us");
  CHECK(humanSeconds(1.5e-3) == "1.5ms");
  CHECK(humanSeconds(0.25) == "250ms");
  CHECK(humanSeconds(2) == "2.0s");
  CHECK(parseSortKey("n") == TopSort::kNet);
  CHECK_FALSE(parseSortKey("x").has_value());
}

TEST_CASE("snapshot JSON: Prometheus names and base units, labelled metrics as arrays") {
  Snapshot s;
  ProcessStats& p = s.process(42);
  p.comm = "burn";
  p.cpu_ns = 1500000000;
  p.voluntary_switches = 3;
  p.block_write_bytes = 4096;
  p.top_errnos = {{2, 7}};
  s.host.push_back(MetricSample{"vigil_host_load1", {}, 0.5, false});
  s.host.push_back(
      MetricSample{"vigil_host_cpu_seconds_total", {{"cpu", "0"}, {"mode", "user"}}, 12.5, true});
  s.self.push_back(MetricSample{"vigil_agent_cpu_seconds_total", {}, 0.1, true});
  HistogramSample h{"vigil_runqueue_latency_seconds", {}, 1000, {0, 4, 0, 1}, 5, 30};
  s.histograms.push_back(h);
  s.collectors.push_back(CollectorState{"sched", true, ""});
  auto ev = s.newEvent();
  ev.setPid(42);
  ev.setTimestampNs(1764130000123456789);
  ev.initExit().setExitCode(3);
  json j = snapshotToJson(s);
  CHECK(j["schema"] == 1);
  CHECK(j["host"]["vigil_host_load1"] == 0.5);
  CHECK(j["host"]["vigil_host_cpu_seconds_total"][0]["labels"]["mode"] == "user");
  CHECK(j["host"]["vigil_host_cpu_seconds_total"][0]["value"] == 12.5);
  const json& jp = j["processes"][0];
  CHECK(jp["pid"] == 42);
  CHECK(jp["vigil_process_cpu_seconds_total"] == 1.5);
  CHECK(jp["vigil_process_context_switches_total"]["voluntary"] == 3);
  CHECK(jp["vigil_process_block_bytes_total"]["write"] == 4096);
  CHECK(jp["vigil_process_syscall_errno_total"]["2"] == 7);
  CHECK(jp["vigil_process_tcp_resets_total"]["sent"] == 0);
  CHECK(jp["vigil_process_cpu_seconds_total"].is_number_float());
  CHECK(jp["vigil_process_context_switches_total"]["voluntary"].is_number_unsigned());
  ContainerStats c;
  c.cgroup_path = "/system.slice/foo.service";
  c.systemd_unit = "foo.service";
  c.cpu_ns = 2500000000;
  c.block_read_bytes = 512;
  c.processes = 2;
  s.containers.push_back(c);
  json jc = snapshotToJson(s)["containers"][0];
  CHECK(jc["unit"] == "foo.service");
  CHECK(jc["vigil_container_cpu_seconds_total"] == 2.5);
  CHECK(jc["vigil_container_block_bytes_total"]["read"] == 512);
  CHECK(jc["vigil_container_processes"] == 2);
  const json& jh = j["histograms"][0];
  CHECK(jh["sum_seconds"] == Approx(30e-6));
  CHECK(jh["buckets"].size() == 2);
  CHECK(jh["buckets"][0]["le_seconds"] == Approx(4e-6));
  CHECK(jh["p50_seconds"] == Approx(4e-6));
  CHECK(jh["p99_seconds"] == Approx(16e-6));
  CHECK(j["events"][0]["pid"] == 42);
  CHECK(j["events"][0]["exit"]["exitCode"] == 3);
  CHECK(j["events"][0]["timestampNs"] == "1764130000123456789");  // 64-bit ints as strings
  CHECK(j["self"]["vigil_agent_cpu_seconds_total"] == 0.1);
  CHECK(j["collectors"][0]["collector"] == "sched");
}

TEST_CASE("agents table from the aggregator's reply, tolerant of odd fields") {
  json reply = json::parse(R"({"agents":[
    {"agent_id":"n1","node":"n1","online":true,"version":"0.1.0","kernel":"6.18","last_seen":995,
     "boot_epoch":1,"last_seq":12,"config_version":0,"labels":{"zone":"a"}},
    {"agent_id":"n2","online":"yes","last_seen":"x","labels":[]},
    42]})");
  auto t = formatAgents(reply, 1000);
  REQUIRE(t.ok());
  CHECK(t->find("AGENT  NODE  STATUS   VERSION  KERNEL  LAST SEEN  SEQ  LABELS\n") == 0);
  CHECK(t->find("n1     n1    online   0.1.0    6.18    5s ago     12   zone=a\n") !=
        std::string::npos);
  CHECK(t->find("n2     -     offline  -        -       -          -") != std::string::npos);
  CHECK(t->find("3 agents, 1 online") != std::string::npos);
  CHECK_FALSE(formatAgents(json::parse("[1,2]"), 0).ok());
}

TEST_CASE("alerts table and state filter") {
  json reply = json::parse(R"({"alerts":[
    {"name":"HighRunq","state":"firing","severity":"page","labels":{"node":"n1"},
     "annotations":{"summary":"runq p99 > 10ms"},"active_since":940,"value":0.012},
    {"name":"DiskFull","state":"pending","severity":"warn","labels":{},"annotations":{},
     "active_since":"2026-11-26T04:00:00Z","value":"0.97"},
    {"name":"Old","state":"firing","active_since":"1970-01-01T00:10:00Z"},
    {"name":"Odd","state":"firing","active_since":"yesterday"}]})");
  auto all = formatAlerts(reply, 1000, "");
  REQUIRE(all.ok());
  CHECK(all->find("NAME      STATE    SEVERITY  SINCE") == 0);
  CHECK(all->find("HighRunq  firing   page      60s ago") != std::string::npos);
  CHECK(all->find("runq p99 > 10ms") != std::string::npos);
  CHECK(all->find("DiskFull  pending  warn      -") != std::string::npos);       // in the future
  CHECK(all->find("Old       firing   -         6m ago") != std::string::npos);  // RFC3339
  CHECK(all->find("Odd       firing   -         yesterday") != std::string::npos);
  CHECK(all->find("4 alerts") != std::string::npos);
  auto firing = formatAlerts(reply, 1000, "firing");
  CHECK(firing->find("DiskFull") == std::string::npos);
  CHECK(*formatAlerts(json::parse(R"({"alerts":[]})"), 0, "") == "no alerts\n");
}

TEST_CASE("query: one row per series with last/min/max/avg; errors surface") {
  json reply = json::parse(R"({"status":"success","data":{"resultType":"matrix","result":[
    {"metric":{"__name__":"vigil_host_load1","node":"n1"},
     "values":[[100,"1"],[130,"3"],[160,"2"],[190,"bad"]]},
    {"metric":{"node":"n2"},"values":[]}]}})");
  auto t = formatQuery(reply);
  REQUIRE(t.ok());
  CHECK(t->find("vigil_host_load1{node=\"n1\"}  2     1    3    2    3\n") != std::string::npos);
  CHECK(t->find("{node=\"n2\"}                  -     -    -    -    0\n") != std::string::npos);
  auto err = formatQuery(json::parse(R"({"status":"error","error":"parse error at 3"})"));
  REQUIRE_FALSE(err.ok());
  CHECK(err.status().message() == "query failed: parse error at 3");
  CHECK(*formatQuery(json::parse(R"({"status":"success","data":{"result":[]}})")) ==
        "no series matched\n");
}

TEST_CASE("urlEncode and ago") {
  CHECK(urlEncode("m{a=\"b c\"}") == "m%7Ba%3D%22b%20c%22%7D");
  CHECK(ago(990, 1000) == "10s ago");
  CHECK(ago(1000 - 300, 1000) == "5m ago");
  CHECK(ago(10000 - 7200, 10000) == "2h ago");
  CHECK(ago(0, 1000) == "-");
}

}  // namespace
}  // namespace vigil::cli

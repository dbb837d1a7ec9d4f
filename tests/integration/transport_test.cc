// Transport fault tests (issue 4): real vigil-aggregator and vigil-agent processes on loopback,
// faults injected by killing and restarting them, delivery checked in the aggregator's ingest
// log with the sqlite3 CLI. Heartbeats, intervals and backoffs are shortened by flags; the one
// long sleep is the 60 s aggregator outage the issue asks for.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "capnp/vigil.capnp.h"
#include "tests/support/test_support.h"
#include "userspace/collectors/registry.h"

namespace vigil {
namespace {

using namespace std::chrono_literals;
using testing::Child;

constexpr int kHeartbeatMs = 500;

struct Aggregator {
  const testing::TempDir& dir;
  std::string name;
  std::vector<std::string> extra;
  Child proc;
  int rpc_port = 0;
  int http_port = 0;

  Aggregator(const testing::TempDir& d, std::string n, std::vector<std::string> flags = {})
      : dir(d), name(std::move(n)), extra(std::move(flags)) {
    start();
  }

  std::string db() const { return dir.file(name + "-data/ingest.db"); }
  std::string log() const { return testing::readFile(dir.file(name + ".log")); }
  std::string addr() const { return "127.0.0.1:" + std::to_string(rpc_port); }

  // Starts (or restarts on the same RPC port) the aggregator.
  void start() {
    std::string ready = dir.file(name + ".ready");
    unlink(ready.c_str());
    std::vector<std::string> argv = {
        testing::binaryPath("vigil-aggregator"), "--rpc_port=" + std::to_string(rpc_port),
        // A fresh HTTP port each start: only the RPC port
        // must survive a restart (agents reconnect to it).
        "--http_port=0", "--heartbeat_ms=" + std::to_string(kHeartbeatMs), "--ready_file=" + ready,
        "--data_dir=" + dir.file(name + "-data")};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = Child::spawn(argv, dir.file(name + ".log"));
    auto rpc = testing::readReadyPort(ready, "rpc_port", 10s);
    auto http = testing::readReadyPort(ready, "http_port", 10s);
    INFO(log());
    REQUIRE(rpc);
    REQUIRE(http);
    rpc_port = *rpc;
    http_port = *http;
  }

  void kill(int sig) {
    proc.signal(sig);
    REQUIRE(proc.wait(10s));
  }

  std::string metrics() const { return testing::httpGet(http_port, "/metrics").body; }
  double metric(const std::string& n, const std::map<std::string, std::string>& labels = {}) const {
    return testing::promValue(metrics(), n, labels).value_or(0);
  }
  std::string agents() const { return testing::httpGet(http_port, "/api/v1/agents").body; }
  bool hasOnline(const std::string& agent_id) const {
    auto doc = nlohmann::json::parse(agents(), nullptr, false);
    if (!doc.is_object() || !doc.contains("agents")) {
      return false;
    }
    for (const auto& a : doc["agents"]) {
      if (a.value("agent_id", "") == agent_id) {
        return a.value("online", false);
      }
    }
    return false;
  }
};

// (epoch, seq) pairs of an agent in an ingest log, in log order.
std::vector<std::pair<uint64_t, uint64_t>> loggedFrames(const std::string& db,
                                                        const std::string& agent_id) {
  std::string out = testing::shell("sqlite3 -separator ' ' " + db +
                                   " \"SELECT boot_epoch, seq FROM frames WHERE agent_id='" +
                                   agent_id + "' ORDER BY id\" 2>/dev/null");
  std::vector<std::pair<uint64_t, uint64_t>> frames;
  std::istringstream in(out);
  uint64_t e, s;
  while (in >> e >> s) {
    frames.emplace_back(e, s);
  }
  return frames;
}

// How many of the agent's logged frames decode on their own (the log never holds a delta), and
// how many there are.
std::pair<size_t, size_t> selfContainedFrames(const std::string& db, const std::string& agent_id) {
  std::string out = testing::shell("sqlite3 -separator ' ' " + db +
                                   " \"SELECT encoding, hex(payload) FROM frames WHERE agent_id='" +
                                   agent_id + "' ORDER BY id\" 2>/dev/null");
  std::istringstream in(out);
  int encoding = 0;
  std::string hex;
  size_t ok = 0;
  size_t total = 0;
  while (in >> encoding >> hex) {
    total++;
    std::vector<kj::byte> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<kj::byte>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    }
    if (decodeFrame(kj::arrayPtr(bytes.data(), bytes.size()), static_cast<wire::Encoding>(encoding))
            .ok()) {
      ok++;
    }
  }
  return {ok, total};
}

std::map<uint64_t, std::vector<uint64_t>> seqsByEpoch(
    const std::vector<std::pair<uint64_t, uint64_t>>& frames) {
  std::map<uint64_t, std::vector<uint64_t>> out;
  for (auto [e, s] : frames) {
    out[e].push_back(s);
  }
  for (auto& [e, v] : out) {
    std::sort(v.begin(), v.end());
  }
  return out;
}

// True when `seqs` is exactly 1..n (each once).
bool exactlyOneToN(const std::vector<uint64_t>& seqs, uint64_t n) {
  if (seqs.size() != n) {
    return false;
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (seqs[i] != i + 1) {
      return false;
    }
  }
  return true;
}

struct Agent {
  const testing::TempDir& dir;
  std::string name;
  std::vector<std::string> argv;
  Child proc;
  int http_port = 0;

  Agent(const testing::TempDir& d, std::string node, const std::string& aggregators,
        std::vector<std::string> flags = {})
      : dir(d), name(std::move(node)) {
    argv = {testing::binaryPath("vigil-agent"),
            "--aggregator=" + aggregators,
            "--http_port=0",
            "--interval=1s",
            "--node_name=" + name,
            "--reconnect_min=200ms",
            "--reconnect_max=1s",
            "--probe_interval=1s",
            "--spool_dir=" + dir.file(name + "-spool"),
            "--ready_file=" + dir.file(name + ".ready")};
    argv.insert(argv.end(), flags.begin(), flags.end());
    start();
  }

  void start() {
    unlink(dir.file(name + ".ready").c_str());
    proc = Child::spawn(argv, dir.file(name + ".log"));
    auto port = testing::readReadyPort(dir.file(name + ".ready"), "http_port", 30s);
    INFO(log());
    REQUIRE(port);
    http_port = *port;
  }

  std::string spool() const { return dir.file(name + "-spool/spool.db"); }
  std::string log() const { return testing::readFile(dir.file(name + ".log")); }
  double metric(const std::string& n, const std::map<std::string, std::string>& labels = {}) const {
    auto r = testing::httpGet(http_port, "/metrics");
    return testing::promValue(r.body, n, labels).value_or(-1);
  }
};

TEST_CASE("a 60 s aggregator outage loses and duplicates nothing: every seq arrives once") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "outage-node", agg.addr(), {"--replay_rate=20", "--replay_burst=5"});
  REQUIRE(
      testing::waitFor([&]() { return loggedFrames(agg.db(), "outage-node").size() >= 3; }, 15s));
  agg.kill(SIGTERM);
  std::this_thread::sleep_for(60s);
  double queued = agent.metric("vigil_agent_queue_frames");
  INFO(agent.log());
  CHECK(queued >= 55);  // a minute of frames waited in the spool
  auto restarted = std::chrono::steady_clock::now();
  agg.start();
  double drained_s = 0;
  REQUIRE(testing::waitFor(
      [&]() {
        bool done = agent.metric("vigil_agent_queue_frames") == 0;
        if (done && drained_s == 0) {
          drained_s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count();
        }
        return done;
      },
      30s, 50ms));
  // Stop producing, then every seq the agent made must be in the log exactly once.
  agent.proc.signal(SIGTERM);
  REQUIRE(agent.proc.wait(10s));
  auto frames = loggedFrames(agg.db(), "outage-node");
  auto by_epoch = seqsByEpoch(frames);
  INFO(agg.log());
  REQUIRE(by_epoch.size() == 1);
  auto& seqs = by_epoch.begin()->second;
  uint64_t max_seq = seqs.back();
  CHECK(max_seq >= 65);
  CHECK(exactlyOneToN(seqs, max_seq));
  std::string spool_count =
      testing::shell("sqlite3 " + agent.spool() + " 'SELECT COUNT(*) FROM frames'");
  CHECK(spool_count == "0\n");
  // Delta frames (on by default) were used, and everything logged decodes on its own.
  CHECK(agg.metric("vigil_aggregator_delta_frames_total") > 0);
  auto [decodable, logged] = selfContainedFrames(agg.db(), "outage-node");
  CHECK(logged == seqs.size());
  CHECK(decodable == logged);
  WARN("replayed " << queued << " spooled frames in " << drained_s << " s at --replay_rate=20");
}

TEST_CASE("after kill -9 of an agent its spooled frames of the old boot epoch are delivered") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "crash-node", agg.addr());
  REQUIRE(
      testing::waitFor([&]() { return loggedFrames(agg.db(), "crash-node").size() >= 2; }, 15s));
  agg.kill(SIGKILL);
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_queue_frames") >= 3; }, 15s));
  agent.proc.signal(SIGKILL);
  REQUIRE(agent.proc.wait(5s));

  CHECK(testing::shell("sqlite3 " + agent.spool() + " 'PRAGMA integrity_check'") == "ok\n");
  std::string old_epoch =
      testing::shell("sqlite3 " + agent.spool() + " 'SELECT MIN(epoch) FROM frames'");
  std::string last = testing::shell("sqlite3 " + agent.spool() + " 'SELECT MAX(seq) FROM frames'");
  REQUIRE(!old_epoch.empty());
  uint64_t epoch1 = std::stoull(old_epoch);
  uint64_t last_seq = std::stoull(last);
  REQUIRE(last_seq >= 4);

  agg.start();
  agent.start();  // a new boot epoch, same spool
  bool ok = testing::waitFor(
      [&]() {
        auto by = seqsByEpoch(loggedFrames(agg.db(), "crash-node"));
        return by.size() == 2 && by[epoch1].size() == last_seq;
      },
      20s);
  INFO(agent.log());
  INFO(agg.log());
  REQUIRE(ok);
  auto by = seqsByEpoch(loggedFrames(agg.db(), "crash-node"));
  CHECK(exactlyOneToN(by[epoch1], last_seq));
  for (auto& [e, seqs] : by) {
    if (e != epoch1) {
      CHECK(e > epoch1);
      CHECK(seqs.front() == 1);
    }
  }
  CHECK(testing::shell("sqlite3 " + agent.spool() + " 'PRAGMA integrity_check'") == "ok\n");
}

TEST_CASE("kill -9 of the aggregator right after a frame loses nothing it acknowledged") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "ack-node", agg.addr());
  REQUIRE(testing::waitFor([&]() { return loggedFrames(agg.db(), "ack-node").size() >= 3; }, 15s,
                           10ms));
  // The third ack may still be on its way to the agent: kill once the agent holds it.
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_frames_acked_total") >= 3; },
                           15s, 10ms));
  agg.kill(SIGKILL);
  std::this_thread::sleep_for(200ms);
  double acked = agent.metric("vigil_agent_frames_acked_total");
  REQUIRE(acked >= 3);
  // Read the crashed aggregator's log as it was left (sqlite3 recovers the WAL).
  auto by = seqsByEpoch(loggedFrames(agg.db(), "ack-node"));
  REQUIRE(by.size() == 1);
  auto& seqs = by.begin()->second;
  CHECK(seqs.size() >= static_cast<size_t>(acked));
  CHECK(exactlyOneToN(seqs, seqs.size()));
  CHECK(testing::shell("sqlite3 " + agg.db() + " 'PRAGMA integrity_check'") == "ok\n");

  agg.start();
  double produced = 0;
  REQUIRE(testing::waitFor(
      [&]() {
        produced = agent.metric("vigil_agent_frames_total");
        return agent.metric("vigil_agent_queue_frames") == 0 &&
               agent.metric("vigil_agent_frames_acked_total") >= acked + 2;
      },
      20s));
  agent.proc.signal(SIGTERM);
  REQUIRE(agent.proc.wait(10s));
  auto after = seqsByEpoch(loggedFrames(agg.db(), "ack-node"));
  REQUIRE(after.size() == 1);
  auto& all = after.begin()->second;
  CHECK(all.size() >= static_cast<size_t>(produced));
  CHECK(exactlyOneToN(all, all.back()));
}

// Opens a TCP connection to the RPC port, writes `bytes` (then half-closes if asked) and waits
// for the server to close. Returns true when the server closed the connection.
bool sendRaw(int port, const std::string& bytes, bool half_close) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return false;
  }
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
    if (n <= 0) {
      break;
    }
    off += static_cast<size_t>(n);
  }
  if (half_close) {
    shutdown(fd, SHUT_WR);
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[4096];
  bool closed = false;
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
      closed = true;
      break;
    }
    if (n < 0) {
      break;  // timeout: still open
    }
  }
  close(fd);
  return closed;
}

std::string framingHeader(uint32_t segments_minus_one, std::vector<uint32_t> sizes) {
  std::string out(4, '\0');
  memcpy(out.data(), &segments_minus_one, 4);
  for (uint32_t s : sizes) {
    out.append(reinterpret_cast<const char*>(&s), 4);
  }
  while (out.size() % 8 != 0) {
    out.push_back('\0');
  }
  return out;
}

TEST_CASE("garbage, truncated and oversized messages close only their own connection") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "steady-node", agg.addr());
  REQUIRE(
      testing::waitFor([&]() { return loggedFrames(agg.db(), "steady-node").size() >= 1; }, 15s));

  CHECK(sendRaw(agg.rpc_port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false));
  std::string truncated = framingHeader(0, {100}) + std::string(16, 'x');
  CHECK(sendRaw(agg.rpc_port, truncated, true));
  std::string oversized = framingHeader(0, {(64u << 20) / 8}) + std::string(64, '\0');
  CHECK(sendRaw(agg.rpc_port, oversized, false));

  REQUIRE(testing::waitFor(
      [&]() {
        return agg.metric("vigil_aggregator_connections_closed_total",
                          {{"reason", "truncated_message"}}) == 1;
      },
      5s));
  INFO(agg.log());
  CHECK(agg.metric("vigil_aggregator_connections_closed_total", {{"reason", "bad_framing"}}) == 1);
  CHECK(agg.metric("vigil_aggregator_connections_closed_total",
                   {{"reason", "oversized_message"}}) == 1);
  std::string log = agg.log();
  CHECK(log.find("bad_framing: message claims") != std::string::npos);
  CHECK(log.find("oversized_message: message of") != std::string::npos);
  CHECK(log.find("truncated_message: connection ended inside a message") != std::string::npos);

  // The well-behaved agent is still served.
  size_t before = loggedFrames(agg.db(), "steady-node").size();
  CHECK(testing::waitFor(
      [&]() { return loggedFrames(agg.db(), "steady-node").size() >= before + 2; }, 10s));
  CHECK(agg.hasOnline("steady-node"));
}

// Registers as `agent_id` with `token` over plain RPC and pushes one frame that claims
// `frame_agent`. Returns "" on success or the error text.
std::string registerAndPush(int port, const std::string& agent_id, const std::string& token,
                            const std::string& frame_agent) {
  auto io = kj::setupAsyncIo();
  std::string result;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 auto addr = io.provider->getNetwork()
                                 .parseAddress("127.0.0.1", static_cast<uint>(port))
                                 .wait(io.waitScope);
                 auto stream = addr->connect().wait(io.waitScope);
                 capnp::TwoPartyClient client(*stream);
                 auto agg = client.bootstrap().castAs<wire::Aggregator>();
                 auto req = agg.registerRequest();
                 auto hello = req.initHello();
                 hello.initAgent().setAgentId(agent_id);
                 hello.setBootEpoch(42);
                 hello.setToken(token);
                 auto reg = req.send().wait(io.waitScope);
                 auto session = reg.getSession();
                 Snapshot snap;
                 snap.agent.agent_id = frame_agent;
                 snap.boot_epoch = 42;
                 snap.seq = 1;
                 capnp::MallocMessageBuilder msg;
                 toWire(snap, msg);
                 auto payload = encodeFrame(msg, wire::Encoding::PACKED_ZSTD);
                 auto push = session.pushRequest();
                 push.setSeq(1);
                 push.setEncoding(wire::Encoding::PACKED_ZSTD);
                 push.setPayload(payload);
                 push.send().wait(io.waitScope);
               })) {
    result = e->getDescription().cStr();
  }
  return result;
}

TEST_CASE("a wrong token is refused and frames claiming another agent are rejected") {
  testing::TempDir dir;
  {
    FILE* f = fopen(dir.file("tokens.yaml").c_str(), "w");
    fputs("agents:\n  node-a: token-a\n  node-b: token-b\n", f);
    fclose(f);
  }
  Aggregator agg(dir, "agg", {"--tokens_file=" + dir.file("tokens.yaml")});

  std::string wrong = registerAndPush(agg.rpc_port, "node-a", "token-b", "node-a");
  CHECK(wrong.find("registration refused") != std::string::npos);
  CHECK(agg.metric("vigil_aggregator_rejected_total", {{"reason", "bad_token"}}) == 1);
  CHECK(agg.log().find("agent 'node-a' presented a wrong or missing token") != std::string::npos);

  std::string spoof = registerAndPush(agg.rpc_port, "node-a", "token-a", "node-b");
  CHECK(spoof.find("frame refused") != std::string::npos);
  CHECK(agg.metric("vigil_aggregator_rejected_total", {{"reason", "agent_id_mismatch"}}) == 1);
  CHECK(loggedFrames(agg.db(), "node-b").empty());

  CHECK(registerAndPush(agg.rpc_port, "node-a", "token-a", "node-a") == "");
  CHECK(loggedFrames(agg.db(), "node-a").size() == 1);
}

// A CA, a server certificate for 127.0.0.1 and a client certificate with CN=agent_cn.
void makeCerts(const testing::TempDir& dir, const std::string& agent_cn) {
  std::string d = dir.path();
  std::string script =
      "set -e; cd " + d +
      "; openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=vigil-test-ca "
      "-keyout ca.key -out ca.pem 2>/dev/null"
      "; openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key "
      "-out server.csr 2>/dev/null"
      "; printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext"
      "; openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-extfile server.ext -out server.pem 2>/dev/null"
      "; openssl req -newkey rsa:2048 -nodes -subj /CN=" +
      agent_cn +
      " -keyout agent.key -out agent.csr 2>/dev/null"
      "; openssl x509 -req -in agent.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 "
      "-out agent.pem 2>/dev/null; echo done";
  REQUIRE(testing::shell(script) == "done\n");
}

TEST_CASE("with mutual TLS an agent without a client certificate is refused; with one it ships") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  makeCerts(dir, "tls-node");
  Aggregator agg(dir, "agg",
                 {"--tls_cert=" + dir.file("server.pem"), "--tls_key=" + dir.file("server.key"),
                  "--tls_client_ca=" + dir.file("ca.pem")});
  {
    Agent nocert(dir, "tls-node", agg.addr(),
                 {"--tls_ca=" + dir.file("ca.pem"), "--tls_server_name=localhost"});
    REQUIRE(testing::waitFor(
        [&]() {
          return agg.metric("vigil_aggregator_connections_closed_total",
                            {{"reason", "no_client_cert"}}) >= 1;
        },
        10s));
    CHECK(loggedFrames(agg.db(), "tls-node").empty());
    CHECK(agg.log().find("no_client_cert: OpenSSL error") != std::string::npos);
  }
  {
    // The right certificate but another identity: the CN binds the agent id.
    Agent impostor(dir, "other-node", agg.addr(),
                   {"--tls_ca=" + dir.file("ca.pem"), "--tls_server_name=localhost",
                    "--tls_cert=" + dir.file("agent.pem"), "--tls_key=" + dir.file("agent.key")});
    REQUIRE(testing::waitFor(
        [&]() {
          return agg.metric("vigil_aggregator_rejected_total", {{"reason", "identity_mismatch"}}) >=
                 1;
        },
        10s));
    CHECK(loggedFrames(agg.db(), "other-node").empty());
  }
  Agent good(dir, "tls-node", agg.addr(),
             {"--tls_ca=" + dir.file("ca.pem"), "--tls_server_name=localhost",
              "--tls_cert=" + dir.file("agent.pem"), "--tls_key=" + dir.file("agent.key")});
  bool ok = testing::waitFor([&]() { return loggedFrames(agg.db(), "tls-node").size() >= 2; }, 15s);
  INFO(agg.log());
  INFO(good.log());
  CHECK(ok);
  // Plaintext to a TLS port fails the handshake, is counted, and does not disturb the others.
  CHECK(sendRaw(agg.rpc_port, std::string(64, '\0'), false));
  CHECK(testing::waitFor(
      [&]() {
        return agg.metric("vigil_aggregator_connections_closed_total",
                          {{"reason", "tls_handshake_failed"}}) >= 1;
      },
      5s));
}

TEST_CASE(
    "a pushed config changes the interval and detaches a disabled collector; a bad one is "
    "refused") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  const auto& names = collectorNames();
  std::string victim =
      std::find(names.begin(), names.end(), "syscalls") != names.end() ? "syscalls" : "sched";
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "cfg-node", agg.addr(), {"--interval=10s"});
  REQUIRE(testing::waitFor([&]() { return agg.hasOnline("cfg-node"); }, 15s));
  // The first frame (after 10 s) carries the BPF program IDs of every collector.
  std::vector<int> before;
  REQUIRE(testing::waitFor(
      [&]() {
        before =
            testing::bpfProgramIdsInMetrics(testing::httpGet(agent.http_port, "/metrics").body);
        return !before.empty();
      },
      15s));
  auto reply = testing::httpRequest(agg.http_port, "POST", "/api/v1/agents/cfg-node/config",
                                    "{\"version\": 7, \"interval_ms\": 1000, "
                                    "\"disabled_collectors\": [\"" +
                                        victim + "\"]}");
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  CHECK(reply.body.find("\"applied\":true") != std::string::npos);
  size_t n0 = loggedFrames(agg.db(), "cfg-node").size();
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(testing::waitFor([&]() { return loggedFrames(agg.db(), "cfg-node").size() >= n0 + 4; },
                           8s, 50ms));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 5.5);  // four frames at a 1 s interval (not 10 s)

  std::string m = testing::httpGet(agent.http_port, "/metrics").body;
  std::vector<int> after = testing::bpfProgramIdsInMetrics(m);
  std::vector<int> gone;
  for (int id : before) {
    if (std::find(after.begin(), after.end(), id) == after.end()) {
      gone.push_back(id);
    }
  }
  CHECK(!gone.empty());
  for (int id : gone) {
    CHECK_FALSE(testing::bpfProgramExists(id));
  }
  CHECK(testing::promValue(m, "vigil_collector_up", {{"collector", victim}}) == 0.0);
  CHECK(testing::promValue(m, "vigil_collection_interval_seconds", {}) == 1.0);
  if (victim == "sched") {
    CHECK(m.find("vigil_process_cpu_seconds_total{") == std::string::npos);
  }
  CHECK(agg.agents().find("\"config_version\":7") != std::string::npos);

  auto bad = testing::httpRequest(agg.http_port, "POST", "/api/v1/agents/cfg-node/config",
                                  "{\"version\": 8, \"interval_ms\": 50}");
  CHECK(bad.status == 422);
  CHECK(bad.body.find("interval must be between 1s and 1h, got 50ms") != std::string::npos);
  CHECK(testing::httpRequest(agg.http_port, "POST", "/api/v1/agents/cfg-node/config",
                             "{\"version\": 9, \"disabled_collectors\": [\"nope\"]}")
            .status == 422);
  CHECK(testing::httpRequest(agg.http_port, "POST", "/api/v1/agents/cfg-node/config",
                             "{\"interval\": 5}")
            .status == 400);
  CHECK(agg.agents().find("\"config_version\":7") != std::string::npos);
  size_t n1 = loggedFrames(agg.db(), "cfg-node").size();
  CHECK(testing::waitFor([&]() { return loggedFrames(agg.db(), "cfg-node").size() >= n1 + 2; }, 4s,
                         50ms));
  CHECK(testing::promValue(testing::httpGet(agent.http_port, "/metrics").body,
                           "vigil_agent_config_version", {}) == 7.0);
}

TEST_CASE("agents fail over within two heartbeats when their aggregator dies, and lose nothing") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator a(dir, "agg-a");
  Aggregator b(dir, "agg-b");
  std::string both = a.addr() + "," + b.addr();
  std::vector<std::unique_ptr<Agent>> agents;
  std::vector<std::string> nodes = {"shard-1", "shard-2", "shard-3", "shard-4"};
  for (const std::string& n : nodes) {
    agents.push_back(std::make_unique<Agent>(dir, n, both));
  }
  // Rendezvous hashing spreads them; find the ones on A.
  std::vector<std::string> on_a;
  REQUIRE(testing::waitFor(
      [&]() {
        on_a.clear();
        size_t online = 0;
        for (const std::string& n : nodes) {
          bool in_a = a.hasOnline(n);
          online += in_a || b.hasOnline(n);
          if (in_a) {
            on_a.push_back(n);
          }
        }
        return online == nodes.size();
      },
      20s));
  Aggregator& victim = on_a.empty() ? b : a;
  Aggregator& survivor = on_a.empty() ? a : b;
  std::vector<std::string> moved;
  for (const std::string& n : nodes) {
    if (victim.hasOnline(n)) {
      moved.push_back(n);
    }
  }
  REQUIRE(!moved.empty());
  victim.kill(SIGKILL);
  auto killed = std::chrono::steady_clock::now();
  REQUIRE(testing::waitFor(
      [&]() {
        for (const std::string& n : moved) {
          if (!survivor.hasOnline(n)) {
            return false;
          }
        }
        return true;
      },
      std::chrono::milliseconds(2 * kHeartbeatMs * 4), 20ms));
  double failover_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  CHECK(failover_s <= 2 * kHeartbeatMs / 1000.0 + 0.2);
  std::this_thread::sleep_for(2s);
  // Stop the agents once their queues are empty; then the union of both logs holds every frame.
  for (auto& ag : agents) {
    REQUIRE(testing::waitFor([&]() { return ag->metric("vigil_agent_queue_frames") == 0; }, 10s));
    ag->proc.signal(SIGTERM);
    REQUIRE(ag->proc.wait(10s));
  }
  for (const std::string& n : moved) {
    auto fa = loggedFrames(victim.db(), n);
    auto fb = loggedFrames(survivor.db(), n);
    std::set<std::pair<uint64_t, uint64_t>> all(fa.begin(), fa.end());
    all.insert(fb.begin(), fb.end());
    auto by = seqsByEpoch({all.begin(), all.end()});
    REQUIRE(by.size() == 1);
    auto& seqs = by.begin()->second;
    INFO(n << ": " << fa.size() << " frame(s) on the killed aggregator, " << fb.size()
           << " on the survivor");
    CHECK(exactlyOneToN(seqs, seqs.back()));
    CHECK(!fb.empty());
    auto [decodable, logged] = selfContainedFrames(survivor.db(), n);
    CHECK(decodable == logged);
  }
  // The survivor never saw the moved agents' earlier frames: their sessions there began with a
  // keyframe, so no delta named a base it lacked.
  CHECK(survivor.metric("vigil_aggregator_rejected_total", {{"reason", "delta_unknown_base"}}) ==
        0);
  WARN("failover took " << failover_s << " s with " << kHeartbeatMs << " ms heartbeats");
}

TEST_CASE("an agent returns to its preferred aggregator when it is back") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator a(dir, "agg-a");
  Aggregator b(dir, "agg-b");
  Agent agent(dir, "return-node", a.addr() + "," + b.addr());
  Aggregator* preferred = nullptr;
  REQUIRE(testing::waitFor(
      [&]() {
        preferred = a.hasOnline("return-node") ? &a : (b.hasOnline("return-node") ? &b : nullptr);
        return preferred != nullptr;
      },
      15s));
  Aggregator& other = preferred == &a ? b : a;
  preferred->kill(SIGKILL);
  REQUIRE(testing::waitFor([&]() { return other.hasOnline("return-node"); }, 5s, 20ms));
  preferred->start();
  INFO(agent.log());
  CHECK(testing::waitFor([&]() { return preferred->hasOnline("return-node"); }, 10s));
  CHECK(testing::waitFor([&]() { return !other.hasOnline("return-node"); }, 5s));
}

TEST_CASE("a full disk under the spool: the agent keeps running from memory and loses nothing") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  std::string spool_dir = dir.file("full-node-spool");
  REQUIRE(testing::shell("mkdir -p " + spool_dir + " && mount -t tmpfs -o size=1m tmpfs " +
                         spool_dir + " && echo ok") == "ok\n");
  struct Unmount {
    std::string path;
    ~Unmount() { testing::shell("umount -l " + path); }
  } unmount{spool_dir};
  Aggregator agg(dir, "agg");
  agg.kill(SIGKILL);
  Agent agent(dir, "full-node", agg.addr());
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_queue_frames") >= 2; }, 15s));
  CHECK(agent.metric("vigil_agent_spool_ok") == 1);
  // Now the disk fills up under the running agent.
  testing::shell("dd if=/dev/zero of=" + spool_dir + "/filler bs=4k 2>/dev/null");
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_spool_ok") == 0; }, 15s));
  REQUIRE(
      testing::waitFor([&]() { return agent.metric("vigil_agent_spool_errors_total") >= 2; }, 10s));
  std::string log = agent.log();
  CHECK(log.find("keeping unacknowledged frames in memory") != std::string::npos);
  // One log line, not one per frame.
  CHECK(log.find("keeping unacknowledged frames in memory") ==
        log.rfind("keeping unacknowledged frames in memory"));
  // Frames keep coming (in memory) while the disk is full.
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_queue_frames") >= 5; }, 15s));
  agg.start();
  REQUIRE(testing::waitFor([&]() { return agent.metric("vigil_agent_queue_frames") == 0; }, 20s));
  REQUIRE(agent.proc.alive());
  agent.proc.signal(SIGTERM);
  REQUIRE(agent.proc.wait(10s));
  auto by = seqsByEpoch(loggedFrames(agg.db(), "full-node"));
  REQUIRE(by.size() == 1);
  auto& seqs = by.begin()->second;
  INFO(agent.log());
  CHECK(seqs.size() >= 5);
  CHECK(exactlyOneToN(seqs, seqs.back()));
}

TEST_CASE("dynamic sampling picks the busy-host interval and exports it") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  {
    FILE* f = fopen(dir.file("agent.yaml").c_str(), "w");
    // A threshold this low counts any activity as busy: the interval must become high_interval.
    fputs(
        "interval: 3s\ndynamic_sampling:\n  cpu_threshold_percent: 0.001\n"
        "  low_interval: 3s\n  high_interval: 1s\n",
        f);
    fclose(f);
  }
  Aggregator agg(dir, "agg");
  Agent agent(dir, "dyn-node", agg.addr(), {"--config=" + dir.file("agent.yaml")});
  CHECK(testing::waitFor([&]() { return agent.metric("vigil_collection_interval_seconds") == 1.0; },
                         15s));
  CHECK(agent.log().find("dynamic sampling: host CPU") != std::string::npos);
  size_t n0 = loggedFrames(agg.db(), "dyn-node").size();
  CHECK(testing::waitFor([&]() { return loggedFrames(agg.db(), "dyn-node").size() >= n0 + 3; },
                         4500ms, 50ms));
}

TEST_CASE("the aggregator marks an agent offline when it is killed, with time and reason") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "gone-node", agg.addr());
  REQUIRE(testing::waitFor([&]() { return agg.hasOnline("gone-node"); }, 15s));
  CHECK(agg.metric("vigil_agent_up", {{"agent_id", "gone-node"}}) == 1);
  // The heartbeat interval is the aggregator's (--heartbeat_ms), not the agent's 10 s default.
  CHECK(agent.metric("vigil_agent_heartbeat_interval_seconds") == kHeartbeatMs / 1000.0);
  agent.proc.signal(SIGSTOP);  // silent but connected: only the heartbeat timer can notice
  REQUIRE(testing::waitFor([&]() { return !agg.hasOnline("gone-node"); },
                           std::chrono::milliseconds(kHeartbeatMs * 4), 50ms));
  CHECK(agg.agents().find("\"offline_reason\":\"heartbeat_missed\"") != std::string::npos);
  CHECK(agg.metric("vigil_agent_up", {{"agent_id", "gone-node"}}) == 0);
  agent.proc.signal(SIGCONT);
  CHECK(testing::waitFor([&]() { return agg.hasOnline("gone-node"); }, 5s));
  agent.proc.signal(SIGKILL);
  REQUIRE(agent.proc.wait(5s));
  CHECK(testing::waitFor(
      [&]() {
        return agg.agents().find("\"offline_reason\":\"connection_lost\"") != std::string::npos;
      },
      5s));
}

}  // namespace
}  // namespace vigil

// Transport fault tests (issue 4): real vigil-aggregator and vigil-agent processes on loopback,
// faults injected by killing and restarting them, delivery checked in the aggregator's ingest
// log with the sqlite3 CLI. Heartbeats, intervals and backoffs are shortened by flags; the one
// long sleep is the 60 s aggregator outage the issue asks for.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <chrono>
#include <cerrno>
#include <map>
#include <optional>
#include <regex>
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

// What a test needs from one logged frame (decoded from the aggregator's ingest log).
struct LoggedFrame {
  int64_t row = 0;  // ingest log row id (log order)
  uint64_t seq = 0;
  uint64_t config_version = 0;
  uint32_t interval_ms = 0;
  double syscall_duty_cycle = 0;
  uint64_t syscalls = 0;  // summed over the frame's processes
  std::map<std::string, CollectorState> collectors;
  std::vector<std::string> exec_argvs;  // argv of the frame's exec events
};

// Frames of an agent in the ingest log with a row id above `after_row`, decoded.
std::vector<LoggedFrame> decodedFrames(const std::string& db, const std::string& agent_id,
                                       int64_t after_row = 0) {
  std::string out = testing::shell("sqlite3 -separator ' ' " + db +
                                   " \"SELECT id, encoding, hex(payload) FROM frames WHERE " +
                                   "agent_id='" + agent_id + "' AND id > " +
                                   std::to_string(after_row) + " ORDER BY id\" 2>/dev/null");
  std::vector<LoggedFrame> frames;
  std::istringstream in(out);
  int64_t row;
  int encoding;
  std::string hex;
  while (in >> row >> encoding >> hex) {
    std::vector<kj::byte> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<kj::byte>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    }
    auto decoded = decodeFrame(kj::arrayPtr(bytes.data(), bytes.size()),
                               static_cast<wire::Encoding>(encoding));
    REQUIRE(decoded.ok());
    Snapshot snap;
    REQUIRE(fromWire((*decoded)->frame(), snap).ok());
    LoggedFrame f;
    f.row = row;
    f.seq = snap.seq;
    f.config_version = snap.config_version;
    f.interval_ms = snap.interval_ms;
    f.syscall_duty_cycle = snap.syscall_duty_cycle;
    for (const auto& [pid, p] : snap.processes) {
      f.syscalls += p.syscalls;
    }
    for (const CollectorState& c : snap.collectors) {
      f.collectors[c.name] = c;
    }
    for (const auto& o : snap.events) {
      wire::Event::Reader e = o.getReader();
      if (e.isExec()) {
        f.exec_argvs.push_back(e.getExec().getArgv());
      }
    }
    frames.push_back(std::move(f));
  }
  return frames;
}

// BPF program IDs in an agent's /metrics page, by program name.
std::map<std::string, std::set<int>> programsInMetrics(const std::string& metrics_text) {
  std::map<std::string, std::set<int>> out;
  std::regex sample("vigil_bpf_program_runs_total\\{([^}]*)\\}");
  std::regex program("program=\"([^\"]+)\"");
  std::regex id("id=\"([0-9]+)\"");
  for (auto it = std::sregex_iterator(metrics_text.begin(), metrics_text.end(), sample);
       it != std::sregex_iterator(); ++it) {
    std::string labels = (*it)[1];
    std::smatch p, i;
    if (std::regex_search(labels, p, program) && std::regex_search(labels, i, id)) {
      out[p[1]].insert(std::stoi(i[1]));
    }
  }
  return out;
}

// IDs of programs whose name starts with `prefix`.
std::set<int> idsWithPrefix(const std::map<std::string, std::set<int>>& programs,
                            const std::string& prefix) {
  std::set<int> out;
  for (const auto& [name, ids] : programs) {
    if (name.rfind(prefix, 0) == 0) {
      out.insert(ids.begin(), ids.end());
    }
  }
  return out;
}

// The BPF objects a process holds open, from /proc/PID/fd and fdinfo: what would leak if a
// rolled-back collector were not unloaded. Independent of other BPF users on the machine.
struct HeldBpf {
  std::multiset<int> programs;        // prog_id of each bpf-prog fd
  std::multiset<int> linked;          // prog_id of each bpf_link fd (attached programs)
  std::multiset<uint32_t> map_sizes;  // max_entries of each bpf-map fd
  bool operator==(const HeldBpf& o) const {
    return programs == o.programs && linked == o.linked && map_sizes == o.map_sizes;
  }
};

std::optional<int64_t> fdinfoField(const std::string& fdinfo, const std::string& key) {
  std::istringstream in(fdinfo);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      return std::stoll(line.substr(key.size() + 1));
    }
  }
  return std::nullopt;
}

HeldBpf heldBpf(pid_t pid) {
  HeldBpf out;
  std::string dir = "/proc/" + std::to_string(pid);
  std::string fds = testing::shell("ls " + dir + "/fd 2>/dev/null");
  std::istringstream in(fds);
  std::string fd;
  while (in >> fd) {
    char target[256];
    ssize_t n = readlink((dir + "/fd/" + fd).c_str(), target, sizeof(target) - 1);
    if (n <= 0) {
      continue;
    }
    std::string kind(target, static_cast<size_t>(n));
    std::string info = testing::readFile(dir + "/fdinfo/" + fd);
    if (kind == "anon_inode:bpf-prog") {
      out.programs.insert(static_cast<int>(fdinfoField(info, "prog_id").value_or(-1)));
    } else if (kind == "anon_inode:bpf_link") {
      out.linked.insert(static_cast<int>(fdinfoField(info, "prog_id").value_or(-1)));
    } else if (kind == "anon_inode:bpf-map") {
      out.map_sizes.insert(static_cast<uint32_t>(fdinfoField(info, "max_entries").value_or(0)));
    }
  }
  return out;
}

// A memory cgroup with a limit, as systemd's MemoryMax= or a pod's memory limit gives the
// agent. The kernel charges BPF maps to the memory cgroup of the process creating them, so a
// map the limit cannot hold fails to load with ENOMEM. Uses cgroup v1's memory controller when
// it is mounted (hybrid hosts, like this machine), else cgroup v2's memory.max.
class MemoryCgroup {
 public:
  MemoryCgroup() {
    std::string self = testing::readFile("/proc/self/cgroup");
    std::smatch m;
    std::string leaf = "vigil-rollback-" + std::to_string(getpid());
    if (std::regex_search(self, m, std::regex("[0-9]+:memory:([^\n]*)")) &&
        access("/sys/fs/cgroup/memory/cgroup.procs", F_OK) == 0) {
      path_ = "/sys/fs/cgroup/memory" + std::string(m[1]) + "/" + leaf;
      limit_file_ = "memory.limit_in_bytes";
      usage_file_ = "memory.usage_in_bytes";
    } else if (testing::readFile("/sys/fs/cgroup/cgroup.controllers").find("memory") !=
               std::string::npos) {
      testing::shell("echo +memory > /sys/fs/cgroup/cgroup.subtree_control");
      path_ = "/sys/fs/cgroup/" + leaf;
      limit_file_ = "memory.max";
      usage_file_ = "memory.current";
    }
    if (!path_.empty() && mkdir(path_.c_str(), 0755) != 0) {
      path_.clear();
    }
  }
  ~MemoryCgroup() {
    if (path_.empty()) {
      return;
    }
    // Its processes are gone by now (declare the cgroup before them); charges may linger a bit.
    testing::waitFor([&]() { return rmdir(path_.c_str()) == 0 || errno == ENOENT; }, 5s);
  }
  bool ok() const { return !path_.empty(); }
  bool write(const std::string& file, const std::string& value) const {
    FILE* f = fopen((path_ + "/" + file).c_str(), "w");
    if (f == nullptr) {
      return false;
    }
    bool ok = fputs(value.c_str(), f) >= 0;
    return fclose(f) == 0 && ok;
  }
  bool add(pid_t pid) const { return write("cgroup.procs", std::to_string(pid)); }
  int64_t usage() const { return std::stoll("0" + testing::readFile(path_ + "/" + usage_file_)); }
  bool limit(int64_t bytes) const { return write(limit_file_, std::to_string(bytes)); }

 private:
  std::string path_;
  std::string limit_file_;
  std::string usage_file_;
};

// POSTs a config for `node` to the aggregator. A 404 (the agent is between connections: on this
// shared 2-core machine a heartbeat is sometimes missed and the agent reconnects) means nothing
// was delivered, so the push is retried for a few seconds; any other answer is returned.
testing::HttpResult pushConfig(const Aggregator& agg, const std::string& node,
                               const std::string& body) {
  testing::HttpResult r;
  testing::waitFor(
      [&]() {
        r = testing::httpRequest(agg.http_port, "POST", "/api/v1/agents/" + node + "/config", body);
        return r.status != 404;
      },
      10s, 200ms);
  return r;
}

TEST_CASE(
    "a pushed config changes the interval from 10 s to 1 s and detaches the syscall collector; a "
    "bad one is refused") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "cfg-node", agg.addr(), {"--interval=10s"});
  REQUIRE(testing::waitFor([&]() { return agg.hasOnline("cfg-node"); }, 15s));
  // The first frame (after 10 s) carries the BPF program IDs of every collector.
  std::map<std::string, std::set<int>> before;
  REQUIRE(testing::waitFor(
      [&]() {
        before = programsInMetrics(testing::httpGet(agent.http_port, "/metrics").body);
        return !idsWithPrefix(before, "vigil_sys").empty();
      },
      15s));
  auto first = decodedFrames(agg.db(), "cfg-node");
  REQUIRE(!first.empty());
  CHECK(first.back().interval_ms == 10000);
  CHECK(first.back().syscalls > 0);  // sampled syscall counts: the agent itself makes syscalls
  CHECK(first.back().collectors["syscalls"].up);
  int64_t last_row = first.back().row;

  auto reply =
      pushConfig(agg, "cfg-node",
                 R"({"version": 7, "interval_ms": 1000, "disabled_collectors": ["syscalls"]})");
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  CHECK(reply.body.find("\"applied\":true") != std::string::npos);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(testing::waitFor(
      [&]() { return decodedFrames(agg.db(), "cfg-node", last_row).size() >= 5; }, 8s, 50ms));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 5.5);  // five frames at a 1 s interval (the first is due at once), not 10 s
  auto frames = decodedFrames(agg.db(), "cfg-node", last_row);
  for (LoggedFrame f : frames) {
    INFO("seq " << f.seq);
    CHECK(f.config_version == 7);
    CHECK(f.interval_ms == 1000);
    CHECK(f.syscalls == 0);  // no syscall data at all
    CHECK(f.syscall_duty_cycle == 0.0);
    CHECK_FALSE(f.collectors["syscalls"].up);
    CHECK(f.collectors["syscalls"].reason == "disabled by config");
    CHECK(f.collectors["sched"].up);
  }
  for (size_t i = 1; i < frames.size(); ++i) {
    CHECK(frames[i].seq == frames[i - 1].seq + 1);
  }

  // The syscall programs are gone from the kernel (`bpftool prog show id N` fails); the other
  // collectors kept theirs (not reloaded).
  std::string m = testing::httpGet(agent.http_port, "/metrics").body;
  auto after = programsInMetrics(m);
  CHECK(idsWithPrefix(after, "vigil_sys").empty());
  for (int id : idsWithPrefix(before, "vigil_sys")) {
    CHECK_FALSE(testing::bpfProgramExists(id));
  }
  for (const auto& [name, ids] : before) {
    if (name.rfind("vigil_sys", 0) != 0) {
      CHECK(after[name] == ids);
    }
  }
  CHECK(testing::promValue(m, "vigil_collector_up", {{"collector", "syscalls"}}) == 0.0);
  CHECK(testing::promValue(m, "vigil_collection_interval_seconds", {}) == 1.0);
  CHECK(agg.agents().find("\"config_version\":7") != std::string::npos);

  auto bad = pushConfig(agg, "cfg-node", "{\"version\": 8, \"interval_ms\": 50}");
  CHECK(bad.status == 422);
  CHECK(bad.body.find("interval must be between 1s and 1h, got 50ms") != std::string::npos);
  CHECK(
      pushConfig(agg, "cfg-node", "{\"version\": 9, \"disabled_collectors\": [\"nope\"]}").status ==
      422);
  auto big = pushConfig(agg, "cfg-node", "{\"version\": 10, \"max_processes\": 5000000}");
  CHECK(big.status == 422);
  CHECK(big.body.find("max_processes must be 0 (collector default) or 64..4194304, got 5000000") !=
        std::string::npos);
  CHECK(pushConfig(agg, "cfg-node", "{\"interval\": 5}").status == 400);
  CHECK(agg.agents().find("\"config_version\":7") != std::string::npos);
  size_t n1 = loggedFrames(agg.db(), "cfg-node").size();
  CHECK(testing::waitFor([&]() { return loggedFrames(agg.db(), "cfg-node").size() >= n1 + 2; }, 4s,
                         50ms));
  m = testing::httpGet(agent.http_port, "/metrics").body;
  CHECK(testing::promValue(m, "vigil_agent_config_version", {}) == 7.0);
  CHECK(testing::promValue(m, "vigil_agent_config_pushes_total", {{"result", "failed"}}) == 3.0);
  CHECK(programsInMetrics(m) == after);

  // Masks and the net message mode are pushable too. Pushed patterns reach the exec events the
  // already-loaded process collector reads from then on; the message mode reloads only net.
  // (Reloading net, which is not the last collector, once crashed the agent: its ring buffer was
  // closed before the task watching it was dropped.)
  CHECK(testing::promValue(m, "vigil_net_message_duty_cycle_ratio", {}) == 0.0);
  auto masks = pushConfig(agg, "cfg-node",
                          R"({"version": 11, "mask_patterns": ["vigilsecret[0-9]+"],
                              "net_message_mode": "continuous"})");
  INFO(masks.body);
  INFO(agent.log());
  REQUIRE(masks.status == 200);
  CHECK(testing::waitFor(
      [&]() {
        m = testing::httpGet(agent.http_port, "/metrics").body;  // refreshed at the next frame
        return testing::promValue(m, "vigil_net_message_duty_cycle_ratio", {}) == 1.0;
      },
      4s, 100ms));
  auto reloaded = programsInMetrics(m);
  for (const auto& [name, ids] : after) {
    if (name.rfind("vigil_exec", 0) == 0 || name.rfind("vigil_sched", 0) == 0) {
      CHECK(reloaded[name] == ids);  // the process collector kept its programs
    }
  }
  int64_t before_exec = decodedFrames(agg.db(), "cfg-node").back().row;
  testing::shell("/bin/echo vigilsecret4242 keep-me >/dev/null");
  std::vector<std::string> seen;
  REQUIRE(testing::waitFor(
      [&]() {
        for (const LoggedFrame& f : decodedFrames(agg.db(), "cfg-node", before_exec)) {
          for (const std::string& a : f.exec_argvs) {
            if (a.find("keep-me") != std::string::npos) {
              seen.push_back(a);
            }
          }
        }
        return !seen.empty();
      },
      5s, 100ms));
  for (const std::string& a : seen) {
    INFO(a);
    CHECK(a.find("vigilsecret4242") == std::string::npos);
    CHECK(a.find("***") != std::string::npos);
  }
}

// Attach windows the syscall collector opened so far (it opens one per interval in sampled mode).
double syscallWindows(const Agent& agent) {
  return agent.metric("vigil_syscall_attach_windows_total");
}

TEST_CASE("a running syscall collector follows a pushed interval without being reloaded") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  Aggregator agg(dir, "agg");
  Agent agent(dir, "follow-node", agg.addr(), {"--interval=10s"});
  REQUIRE(testing::waitFor([&]() { return agg.hasOnline("follow-node"); }, 15s));
  std::set<int> sys_before;
  REQUIRE(testing::waitFor(
      [&]() {
        sys_before = idsWithPrefix(
            programsInMetrics(testing::httpGet(agent.http_port, "/metrics").body), "vigil_sys");
        return !sys_before.empty();
      },
      15s));
  double w0 = syscallWindows(agent);
  CHECK(w0 >= 1);
  CHECK(w0 <= 2);  // one window per 10 s so far
  auto reply = pushConfig(agg, "follow-node", R"({"version": 3, "interval_ms": 1000})");
  INFO(reply.body);
  REQUIRE(reply.status == 200);
  // The window open when the push arrived ends on its old 10 s schedule; after that the windows
  // follow the 1 s interval. At 10 s windows, w0 + 5 would take 50 s.
  REQUIRE(testing::waitFor([&]() { return syscallWindows(agent) >= w0 + 5; }, 17s, 200ms));
  // About 6 windows in 6 s (none at the old 10 s); the range leaves a loaded machine slack.
  double w1 = syscallWindows(agent);
  std::this_thread::sleep_for(6s);
  double w2 = syscallWindows(agent);
  CHECK(w2 - w1 >= 4);
  CHECK(w2 - w1 <= 8);
  // Same collector: same programs, and not reloaded.
  auto sys_after = idsWithPrefix(
      programsInMetrics(testing::httpGet(agent.http_port, "/metrics").body), "vigil_sys");
  CHECK(sys_after == sys_before);
  CHECK(agent.log().find("reloaded") == std::string::npos);
  // The attached share stays the duty cycle (0.1): counts are still scaled correctly.
  double duty = testing::promValue(testing::httpGet(agent.http_port, "/metrics").body,
                                   "vigil_syscall_duty_cycle_ratio", {})
                    .value_or(-1);
  if (duty >= 0) {
    CHECK(duty < 0.3);
  }
}

TEST_CASE(
    "a push the kernel refuses (ENOMEM under the agent's memory limit) is rolled back: FAILED "
    "with the kernel's error, the old version, the same programs attached, nothing leaked") {
  if (!testing::bpfAllowed("transport_test")) {
    return;
  }
  testing::TempDir dir;
  {
    FILE* f = fopen(dir.file("agent.yaml").c_str(), "w");
    // Continuous syscall mode keeps every program attached, so attachment compares exactly.
    fputs("version: 1\nsyscall_mode: continuous\ndisabled_collectors: [block]\n", f);
    fclose(f);
  }
  MemoryCgroup cgroup;  // declared before the agent: outlives it
  REQUIRE(cgroup.ok());
  Aggregator agg(dir, "agg");
  Agent agent(dir, "rb-node", agg.addr(), {"--config=" + dir.file("agent.yaml")});
  REQUIRE(testing::waitFor([&]() { return agg.hasOnline("rb-node"); }, 15s));
  std::map<std::string, std::set<int>> before;
  REQUIRE(testing::waitFor(
      [&]() {
        before = programsInMetrics(testing::httpGet(agent.http_port, "/metrics").body);
        return !idsWithPrefix(before, "vigil_sched").empty() &&
               !idsWithPrefix(before, "vigil_sys").empty();
      },
      10s));
  CHECK(idsWithPrefix(before, "vigil_bcmp").empty());
  HeldBpf held = heldBpf(agent.proc.pid());
  REQUIRE(!held.linked.empty());

  // The agent gets 40 MiB of headroom over what it uses now (charges made before the move stay
  // with the old cgroup). 4M processes need a 64 MiB bucket array for sched's per-process hash
  // (proc_stats under raw_tp, exited under tp_btf; more with proc_stats' preallocated
  // elements): the kernel refuses it.
  REQUIRE(cgroup.add(agent.proc.pid()));
  REQUIRE(cgroup.limit(cgroup.usage() + (40 << 20)));

  // One push that enables block (loads fine), disables syscalls and grows sched's map (refused).
  auto reply = pushConfig(agg, "rb-node", R"({"version": 2, "enabled_collectors": ["block"],
                                        "disabled_collectors": ["syscalls"],
                                        "max_processes": 4194304})");
  INFO(reply.body);
  INFO(agent.log());
  REQUIRE(reply.status == 422);
  CHECK(reply.body.find("collector sched failed to load") != std::string::npos);
  CHECK(reply.body.find("Cannot allocate memory") != std::string::npos);  // the kernel's ENOMEM
  CHECK(reply.body.find("unloaded again: block") != std::string::npos);
  CHECK(agent.log().find("refused config version 2") != std::string::npos);
  CHECK(agent.log().find("version 1 stays in force") != std::string::npos);
  CHECK(agent.proc.alive());  // refused by the kernel, not OOM-killed

  // Two more frames: the old config is in force and every program is the one from before.
  int64_t last_row = decodedFrames(agg.db(), "rb-node").back().row;
  REQUIRE(testing::waitFor(
      [&]() { return decodedFrames(agg.db(), "rb-node", last_row).size() >= 2; }, 5s, 50ms));
  for (LoggedFrame f : decodedFrames(agg.db(), "rb-node", last_row)) {
    CHECK(f.config_version == 1);
    // The collector the refused config disabled never stopped: still up, still counting.
    CHECK(f.collectors["syscalls"].up);
    CHECK(f.syscalls > 0);
    CHECK(f.syscall_duty_cycle == 1.0);
    CHECK_FALSE(f.collectors["block"].up);
    CHECK(f.collectors["block"].reason == "disabled by config");
  }
  std::string m = testing::httpGet(agent.http_port, "/metrics").body;
  CHECK(programsInMetrics(m) == before);
  CHECK(testing::promValue(m, "vigil_agent_config_version", {}) == 1.0);
  CHECK(testing::promValue(m, "vigil_agent_config_pushes_total", {{"result", "failed"}}) == 1.0);
  CHECK(agg.agents().find("\"config_version\":1") != std::string::npos);
  // Nothing leaked: the agent holds exactly the programs, links and maps it held before (block's
  // programs and maps and the half-built sched are closed), and every program is still attached.
  HeldBpf now = heldBpf(agent.proc.pid());
  CHECK(now.programs == held.programs);
  CHECK(now.linked == held.linked);
  CHECK(now.map_sizes == held.map_sizes);
  for (const auto& [name, ids] : before) {
    for (int id : ids) {
      INFO(name);
      CHECK(now.linked.count(id) == 1);
    }
  }

  // The same change with a capacity the limit holds applies: sched reloads with the new map
  // size, block loads, syscalls detach.
  auto ok = pushConfig(agg, "rb-node", R"({"version": 3, "enabled_collectors": ["block"],
                                     "disabled_collectors": ["syscalls"],
                                     "max_processes": 32768})");
  INFO(ok.body);
  REQUIRE(ok.status == 200);
  last_row = decodedFrames(agg.db(), "rb-node").back().row;
  REQUIRE(testing::waitFor(
      [&]() { return decodedFrames(agg.db(), "rb-node", last_row).size() >= 2; }, 5s, 50ms));
  auto applied = decodedFrames(agg.db(), "rb-node", last_row).back();
  CHECK(applied.config_version == 3);
  CHECK(applied.collectors["block"].up);
  CHECK(applied.collectors["sched"].up);
  CHECK_FALSE(applied.collectors["syscalls"].up);
  auto after = programsInMetrics(testing::httpGet(agent.http_port, "/metrics").body);
  CHECK(!idsWithPrefix(after, "vigil_bcmp").empty());
  CHECK(idsWithPrefix(after, "vigil_sys").empty());
  std::set<int> old_sched = idsWithPrefix(before, "vigil_sched");
  std::set<int> new_sched = idsWithPrefix(after, "vigil_sched");
  CHECK(!new_sched.empty());
  for (int id : old_sched) {
    CHECK(new_sched.count(id) == 0);
    CHECK_FALSE(testing::bpfProgramExists(id));
  }
  for (int id : idsWithPrefix(before, "vigil_sys")) {
    CHECK_FALSE(testing::bpfProgramExists(id));
  }
  CHECK(heldBpf(agent.proc.pid()).map_sizes.count(32768) >= 1);  // sched's proc_stats, resized
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
  INFO(agent.log());
  // Frames reach the aggregator at the new cadence. Six frames take about 6 s at 1 s and at least
  // 15 s at 3 s; the bound in between leaves a loaded CI machine 2x slack (a 4.5 s wait for three
  // frames was too tight there).
  size_t n0 = loggedFrames(agg.db(), "dyn-node").size();
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(testing::waitFor([&]() { return loggedFrames(agg.db(), "dyn-node").size() >= n0 + 6; },
                           20s, 100ms));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(secs < 12.0);
  // The running syscall collector follows the interval in use: one attach window per second
  // (the 3 s window open at the switch has ended by now): about 6 in 6 s, against 2 at 3 s.
  double w1 = syscallWindows(agent);
  std::this_thread::sleep_for(6s);
  double w2 = syscallWindows(agent);
  CHECK(w2 - w1 >= 4);
  CHECK(w2 - w1 <= 8);
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

// Delta frames end to end, in one process: the aggregator's Ingest (real RPC over loopback, real
// SQLite ingest log) fed by hand-made pushes for the refusal cases, and by the agent's real Uplink
// for the resync path. What is logged must always decode on its own and equal the frame the agent
// made; every refused delta is counted by reason.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "aggregator/ingest.h"
#include "aggregator/ingest_log.h"
#include "aggregator/store.h"
#include "capnp/event_columns.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "tests/support/test_support.h"
#include "userspace/agent/uplink.h"

namespace vigil {
namespace {

constexpr uint64_t kEpoch = 9;

void fillFrame(Snapshot& s, uint64_t seq, const std::string& agent_id = "node-d") {
  s.agent.agent_id = s.agent.node_name = agent_id;
  s.boot_epoch = kEpoch;
  s.seq = seq;
  s.interval_ms = 1000;
  for (uint32_t pid = 100; pid < 130; ++pid) {
    ProcessStats& p = s.process(pid);
    p.comm = "worker";
    p.cmdline = "/usr/bin/worker --id " + std::to_string(pid);
    uint64_t busy = pid % 3 == 0 ? seq : 1;
    p.cpu_ns = busy * 1000003 * pid;
    p.syscalls = busy * 977;
  }
  if (seq % 5 == 0) {
    s.processes.erase(110 + static_cast<uint32_t>(seq % 7));
  }
  s.process(static_cast<uint32_t>(1000 + seq)).comm = "short-lived";
  s.host.push_back(MetricSample{
      "vigil_host_cpu_seconds_total", {{"mode", "user"}}, static_cast<double>(seq) * 3.5, true});
}

kj::Array<kj::byte> packedOf(uint64_t seq, const std::string& agent_id = "node-d") {
  Snapshot s;
  fillFrame(s, seq, agent_id);
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  return encodeFrame(message, wire::Encoding::PACKED);
}

bool sameBytes(kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b) {
  return a.size() == b.size() && memcmp(a.begin(), b.begin(), a.size()) == 0;
}

// An aggregator's ingest side on 127.0.0.1:<port>, in this thread's event loop.
struct Server {
  testing::TempDir dir;
  kj::AsyncIoContext& io;
  std::unique_ptr<aggregator::IngestLog> log;
  aggregator::Store store;
  std::unique_ptr<aggregator::Ingest> ingest;
  kj::Own<kj::ConnectionReceiver> listener;
  kj::Promise<void> serving = nullptr;
  uint port = 0;

  explicit Server(kj::AsyncIoContext& context, aggregator::IngestOptions options = {})
      : io(context) {
    auto opened = aggregator::IngestLog::open(dir.file("ingest.db"));
    REQUIRE(opened.ok());
    log = std::move(*opened);
    ingest = std::make_unique<aggregator::Ingest>(io.provider->getTimer(), *log, store,
                                                  std::move(options));
    auto addr = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
    listener = addr->listen();
    port = listener->getPort();
    serving = ingest->listen(*listener).eagerlyEvaluate(nullptr);
  }

  uint64_t rejected(const std::string& reason) const {
    auto it = ingest->stats().rejected.find(reason);
    return it == ingest->stats().rejected.end() ? 0 : it->second;
  }

  std::vector<aggregator::LogRecord> records() {
    auto r = log->readAfter(0, 1000);
    REQUIRE(r.ok());
    return std::move(*r);
  }
};

// A hand-driven agent connection.
struct Client {
  kj::AsyncIoContext& io;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  wire::Aggregator::Client aggregator = nullptr;
  wire::IngestSession::Client session = nullptr;
  bool accepts_delta = false;
  bool accepts_pointer_delta = false;
  bool accepts_event_columns = false;

  Client(kj::AsyncIoContext& context, uint port) : io(context) {
    auto addr = io.provider->getNetwork().parseAddress("127.0.0.1", port).wait(io.waitScope);
    stream = addr->connect().wait(io.waitScope);
    rpc = kj::heap<capnp::TwoPartyClient>(*stream);
    aggregator = rpc->bootstrap().castAs<wire::Aggregator>();
  }

  void registerSession() {
    auto req = aggregator.registerRequest();
    auto hello = req.initHello();
    hello.initAgent().setAgentId("node-d");
    hello.setBootEpoch(kEpoch);
    auto resp = req.send().wait(io.waitScope);
    session = resp.getSession();
    accepts_delta = resp.getAcceptsDelta();
    accepts_pointer_delta = resp.getAcceptsPointerDelta();
    accepts_event_columns = resp.getAcceptsEventColumns();
  }

  // "" when acknowledged (a "dup" when as a duplicate), else the error text.
  std::string push(uint64_t seq, wire::Encoding encoding, kj::ArrayPtr<const kj::byte> payload,
                   uint64_t base_seq = 0) {
    auto req = session.pushRequest();
    req.setSeq(seq);
    req.setEncoding(encoding);
    req.setPayload(payload);
    req.setBaseSeq(base_seq);
    std::string out;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   auto resp = req.send().wait(io.waitScope);
                   out = resp.getAck().getDuplicate() ? "dup" : "";
                 })) {
      out = e->getDescription().cStr();
    }
    return out;
  }
};

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

TEST_CASE(
    "the aggregator expands deltas against the session's last frame before logging, and "
    "refuses unknown-base, out-of-order and undecodable deltas with a counted reason") {
  auto io = kj::setupAsyncIo();
  Server server(io);
  Client c(io, server.port);
  c.registerSession();
  CHECK(c.accepts_delta);

  auto p1 = packedOf(1);
  auto p2 = packedOf(2);
  auto p3 = packedOf(3);
  auto p4 = packedOf(4);
  CHECK(c.push(1, wire::Encoding::PACKED_ZSTD, compressPacked(p1)) == "");
  CHECK(c.push(2, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p1, p2), 1) == "");

  // Based on a frame that is not the session's last one.
  std::string stale = c.push(3, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p1, p3), 1);
  CHECK(has(stale, "frame refused"));
  CHECK(has(stale, "delta_unknown_base"));
  CHECK(server.rejected("delta_unknown_base") == 1);
  // The session now refuses everything, even a keyframe, so nothing overtakes frame 3.
  std::string after = c.push(3, wire::Encoding::PACKED_ZSTD, compressPacked(p3));
  CHECK(has(after, "delta_session_broken"));
  CHECK(server.rejected("delta_session_broken") == 1);

  // A new session has no base (think: a failover aggregator that never saw frame 2).
  c.registerSession();
  CHECK(has(c.push(3, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p2, p3), 2),
            "delta_unknown_base"));
  CHECK(server.rejected("delta_unknown_base") == 2);

  // A keyframe on a new session, then deltas that do not expand.
  c.registerSession();
  CHECK(c.push(3, wire::Encoding::PACKED_ZSTD, compressPacked(p3)) == "");
  kj::byte garbage[40];
  for (size_t i = 0; i < sizeof(garbage); ++i) {
    garbage[i] = static_cast<kj::byte>(i * 29 + 5);
  }
  CHECK(has(c.push(4, wire::Encoding::PACKED_ZSTD_DELTA, kj::arrayPtr(garbage, sizeof(garbage)), 3),
            "delta_bad"));
  c.registerSession();
  CHECK(c.push(3, wire::Encoding::PACKED_ZSTD, compressPacked(p3)) == "dup");
  // A delta damaged in one byte: zstd's frame checksum (or its block checks) refuses it.
  auto damaged = encodeDelta(p3, p4);
  damaged[damaged.size() / 2] ^= 0x5a;
  CHECK(has(c.push(4, wire::Encoding::PACKED_ZSTD_DELTA, damaged, 3), "delta_bad"));
  CHECK(server.rejected("delta_bad") == 2);

  // A delta that names itself or a later frame as its base.
  c.registerSession();
  CHECK(c.push(3, wire::Encoding::PACKED_ZSTD, compressPacked(p3)) == "dup");
  CHECK(has(c.push(4, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p3, p4), 4),
            "delta_out_of_order"));
  CHECK(has(c.push(4, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p3, p4), 0),
            "delta_session_broken"));
  CHECK(server.rejected("delta_out_of_order") == 1);

  // A duplicate keyframe is a valid base; the delta after it is accepted.
  c.registerSession();
  CHECK(c.push(3, wire::Encoding::PACKED_ZSTD, compressPacked(p3)) == "dup");
  CHECK(c.push(4, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p3, p4), 3) == "");
  CHECK(server.ingest->stats().delta_frames == 2);

  // The log holds frames 1-4 once each, self-contained, byte-identical to the agent's frames.
  auto records = server.records();
  REQUIRE(records.size() == 4);
  const kj::Array<kj::byte>* want[] = {&p1, &p2, &p3, &p4};
  for (size_t i = 0; i < 4; ++i) {
    CHECK(records[i].seq == i + 1);
    CHECK(records[i].encoding == wire::Encoding::PACKED_ZSTD);
    auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(records[i].payload.data()),
                              records[i].payload.size());
    auto decoded = decodeFrame(bytes, records[i].encoding);
    REQUIRE(decoded.ok());
    CHECK(sameBytes((*decoded)->packed(), *want[i]));
  }
  CHECK(server.store.agents().count("node-d") == 1);
}

TEST_CASE(
    "pointer-predicted deltas expand to the exact frame before logging; a wrong base, a byte "
    "delta labelled as one and a damaged one are refused with a counted reason") {
  auto io = kj::setupAsyncIo();
  Server server(io);
  Client c(io, server.port);
  c.registerSession();
  CHECK(c.accepts_pointer_delta);

  auto p1 = packedOf(1);
  auto p2 = packedOf(2);
  auto p3 = packedOf(3);
  auto pointerDelta = [](const kj::Array<kj::byte>& base, const kj::Array<kj::byte>& frame) {
    kj::Array<kj::byte> out;
    KJ_IF_MAYBE (d, encodePointerDelta(base, frame)) {
      out = kj::mv(*d);
    }
    REQUIRE(out.size() > 0);
    return out;
  };
  CHECK(c.push(1, wire::Encoding::PACKED_ZSTD, compressPacked(p1)) == "");
  CHECK(c.push(2, wire::Encoding::POINTER_ZSTD_DELTA, pointerDelta(p1, p2), 1) == "");
  // Against a base the session does not hold.
  CHECK(has(c.push(3, wire::Encoding::POINTER_ZSTD_DELTA, pointerDelta(p1, p3), 1),
            "delta_unknown_base"));
  CHECK(server.rejected("delta_unknown_base") == 1);
  // A byte delta sent as a pointer delta: its back-references meet the base's pointer-predicted
  // words, not its packed bytes, and zstd's frame checksum refuses the result.
  c.registerSession();
  CHECK(c.push(2, wire::Encoding::PACKED_ZSTD, compressPacked(p2)) == "dup");
  CHECK(has(c.push(3, wire::Encoding::POINTER_ZSTD_DELTA, encodeDelta(p2, p3), 2), "delta_bad"));
  c.registerSession();
  CHECK(c.push(2, wire::Encoding::PACKED_ZSTD, compressPacked(p2)) == "dup");
  auto damaged = pointerDelta(p2, p3);
  damaged[damaged.size() / 2] ^= 0x5a;
  CHECK(has(c.push(3, wire::Encoding::POINTER_ZSTD_DELTA, damaged, 2), "delta_bad"));
  CHECK(server.rejected("delta_bad") == 2);
  c.registerSession();
  CHECK(c.push(2, wire::Encoding::PACKED_ZSTD, compressPacked(p2)) == "dup");
  CHECK(c.push(3, wire::Encoding::POINTER_ZSTD_DELTA, pointerDelta(p2, p3), 2) == "");
  CHECK(server.ingest->stats().delta_frames == 2);

  auto records = server.records();
  REQUIRE(records.size() == 3);
  const kj::Array<kj::byte>* want[] = {&p1, &p2, &p3};
  for (size_t i = 0; i < 3; ++i) {
    CHECK(records[i].seq == i + 1);
    CHECK(records[i].encoding == wire::Encoding::PACKED_ZSTD);
    auto bytes = kj::arrayPtr(reinterpret_cast<const kj::byte*>(records[i].payload.data()),
                              records[i].payload.size());
    auto decoded = decodeFrame(bytes, records[i].encoding);
    REQUIRE(decoded.ok());
    CHECK(sameBytes((*decoded)->packed(), *want[i]));
  }
}

TEST_CASE(
    "the uplink sends keyframes then deltas; after a dropped frame it resyncs from a "
    "keyframe and every other seq is logged exactly once") {
  auto io = kj::setupAsyncIo();
  Server server(io);
  UplinkOptions o;
  o.aggregators = {"127.0.0.1:" + std::to_string(server.port)};
  o.identity.agent_id = o.identity.node_name = "node-d";
  o.boot_epoch = kEpoch;
  o.replay_rate = 0;  // unpaced
  o.max_in_flight = 8;
  o.keyframe_every = 4;
  Uplink uplink(*io.provider, o, nullptr);
  // Frame 6 claims another agent: refused on its merits and dropped. Frame 7 is a delta against
  // it. The aggregator checks frames on its commit thread, after the event loop expanded the
  // deltas queued behind frame 6 against its bytes: a delta that arrived before the refusal is a
  // valid frame of node-d and is logged; one that arrives after it names a base the session no
  // longer has (delta_unknown_base), and the uplink must resync, not drop it. Which of the two
  // happens depends on timing; either way every other seq is logged exactly once.
  constexpr uint64_t kFrames = 20;
  for (uint64_t seq = 1; seq <= kFrames; ++seq) {
    uplink.enqueue(seq, compressPacked(packedOf(seq, seq == 6 ? "node-x" : "node-d")));
  }
  auto running = uplink.run().eagerlyEvaluate(nullptr);
  for (int i = 0; i < 500 && uplink.stats().frames_acked + uplink.stats().frames_refused < kFrames;
       ++i) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  const UplinkStats& st = uplink.stats();
  CHECK(st.frames_acked == kFrames - 1);
  CHECK(st.frames_refused == 1);
  CHECK(st.frames_duplicate == 0);
  CHECK(st.delta_resyncs <= 1);
  CHECK(st.deltas_sent >= 10);
  // Every frame here is single-segment (encodeFrame), so every delta is pointer-predicted.
  CHECK(st.pointer_deltas_sent == st.deltas_sent);
  CHECK(st.keyframes_sent >= 5);
  CHECK(server.rejected("agent_id_mismatch") == 1);
  CHECK(server.rejected("delta_unknown_base") == st.delta_resyncs);

  std::set<uint64_t> seen;
  for (const auto& r : server.records()) {
    CHECK(seen.insert(r.seq).second);  // exactly once
    auto bytes =
        kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size());
    auto decoded = decodeFrame(bytes, r.encoding);
    REQUIRE(decoded.ok());
    CHECK(sameBytes((*decoded)->packed(), packedOf(r.seq)));
  }
  std::set<uint64_t> want;
  for (uint64_t seq = 1; seq <= kFrames; ++seq) {
    if (seq != 6) {
      want.insert(seq);
    }
  }
  CHECK(seen == want);
  // Deltas made the wire smaller than the keyframes alone would have been.
  size_t keyframes_only = 0;
  for (uint64_t seq = 1; seq <= kFrames; ++seq) {
    keyframes_only += compressPacked(packedOf(seq)).size();
  }
  CHECK(st.payload_bytes_sent < keyframes_only);
}

TEST_CASE("an aggregator without delta frames is sent keyframes only, and refuses a delta") {
  auto io = kj::setupAsyncIo();
  aggregator::IngestOptions options;
  options.accept_delta = false;
  Server server(io, options);

  // A hand-made delta is refused with its reason and breaks the session.
  {
    Client c(io, server.port);
    c.registerSession();
    CHECK_FALSE(c.accepts_delta);
    CHECK_FALSE(c.accepts_pointer_delta);
    auto p1 = packedOf(1);
    CHECK(c.push(1, wire::Encoding::PACKED_ZSTD, compressPacked(p1)) == "");
    CHECK(has(c.push(2, wire::Encoding::PACKED_ZSTD_DELTA, encodeDelta(p1, packedOf(2)), 1),
              "delta_not_accepted"));
    CHECK(server.rejected("delta_not_accepted") == 1);
  }

  // The uplink reads acceptsDelta and never sends one.
  UplinkOptions o;
  o.aggregators = {"127.0.0.1:" + std::to_string(server.port)};
  o.identity.agent_id = o.identity.node_name = "node-d";
  o.boot_epoch = kEpoch;
  o.replay_rate = 0;
  o.keyframe_every = 4;
  Uplink uplink(*io.provider, o, nullptr);
  for (uint64_t seq = 2; seq <= 9; ++seq) {
    uplink.enqueue(seq, compressPacked(packedOf(seq)));
  }
  auto running = uplink.run().eagerlyEvaluate(nullptr);
  for (int i = 0; i < 500 && uplink.stats().frames_acked < 8; ++i) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  CHECK(uplink.stats().frames_acked == 8);
  CHECK(uplink.stats().deltas_sent == 0);
  CHECK(uplink.stats().pointer_deltas_sent == 0);
  CHECK(uplink.stats().keyframes_sent == 8);
  CHECK(uplink.stats().delta_resyncs == 0);
  CHECK(server.records().size() == 9);
  CHECK(server.ingest->stats().delta_frames == 0);
}

// fillFrame plus a fork, exec and exit of one short-lived child, in `form`, as a keyframe payload.
kj::Array<kj::byte> frameWithEvents(uint64_t seq, WireForm form) {
  Snapshot s;
  fillFrame(s, seq);
  const int64_t t = 1'764'000'000'000'000'000 + static_cast<int64_t>(seq) * 1'000'000'000;
  auto fork = s.newEvent();
  fork.setTimestampNs(t);
  fork.setPid(100);
  fork.setComm("worker");
  fork.initFork().setChildPid(static_cast<uint32_t>(5000 + seq));
  auto exec = s.newEvent();
  exec.setTimestampNs(t + 300'000);
  exec.setPid(static_cast<uint32_t>(5000 + seq));
  exec.setPpid(100);
  exec.setComm("true");
  exec.initExec().setArgv("true --seq " + std::to_string(seq));
  auto exit = s.newEvent();
  exit.setTimestampNs(t + 900'000);
  exit.setPid(static_cast<uint32_t>(5000 + seq));
  exit.initExit().setLifetimeNs(600'000);
  capnp::MallocMessageBuilder message;
  toWire(s, message, form);
  return encodeFrame(message, wire::Encoding::PACKED_ZSTD);
}

// The events of a logged record, through the one reader every consumer uses.
std::vector<std::string> loggedArgvs(const aggregator::LogRecord& r) {
  auto decoded = decodeFrame(
      kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size()),
      r.encoding);
  REQUIRE(decoded.ok());
  Snapshot snap;
  REQUIRE(fromWire((*decoded)->frame(), snap).ok());
  REQUIRE(snap.events.size() == 3);
  std::vector<std::string> out;
  for (const auto& e : snap.events) {
    if (e.getReader().isExec()) {
      out.push_back(e.getReader().getExec().getArgv().cStr());
    }
  }
  return out;
}

TEST_CASE("the aggregator takes events as columns or as a list, and refuses malformed columns") {
  auto io = kj::setupAsyncIo();
  Server server(io);
  Client c(io, server.port);
  c.registerSession();
  CHECK(c.accepts_event_columns);
  CHECK(c.push(1, wire::Encoding::PACKED_ZSTD, frameWithEvents(1, WireForm::kCurrent)) == "");
  CHECK(c.push(2, wire::Encoding::PACKED_ZSTD, frameWithEvents(2, WireForm::kEventList)) == "");

  // Columns whose time column was cut short, and a frame carrying both forms.
  auto damaged = [](uint64_t seq, bool both) {
    auto decoded =
        decodeFrame(frameWithEvents(seq, WireForm::kCurrent), wire::Encoding::PACKED_ZSTD);
    REQUIRE(decoded.ok());
    capnp::MallocMessageBuilder m;
    m.setRoot((*decoded)->frame());
    auto frame = m.getRoot<wire::Frame>();
    if (both) {
      frame.initEvents(1)[0].setPid(1);
    } else {
      auto time = frame.getEventColumns().getTime();
      std::vector<kj::byte> cut(time.begin(), time.end() - 1);
      frame.getEventColumns().setTime(kj::arrayPtr(cut.data(), cut.size()));
    }
    return encodeFrame(m, wire::Encoding::PACKED_ZSTD);
  };
  std::string refused = c.push(3, wire::Encoding::PACKED_ZSTD, damaged(3, false));
  CHECK(has(refused, "malformed_frame"));
  CHECK(has(refused, "event column time is truncated"));
  refused = c.push(4, wire::Encoding::PACKED_ZSTD, damaged(4, true));
  CHECK(has(refused, "malformed_frame"));
  CHECK(has(refused, "frame carries events both as a list (1) and as columns"));
  CHECK(server.rejected("malformed_frame") == 2);

  // What was logged reads back with the same events, whichever form it came in.
  auto records = server.records();
  REQUIRE(records.size() == 2);
  CHECK(loggedArgvs(records[0]) == std::vector<std::string>{"true --seq 1"});
  CHECK(loggedArgvs(records[1]) == std::vector<std::string>{"true --seq 2"});
}

// An aggregator from before Frame.eventColumns: its register reply leaves acceptsEventColumns
// (and deltas) unset, and it keeps what is pushed to it.
class OldAggregator final : public wire::Aggregator::Server {
 public:
  std::vector<kj::Array<kj::byte>> payloads;

 protected:
  kj::Promise<void> register_(RegisterContext context) override {
    context.getResults().setSession(kj::heap<Session>(*this));
    return kj::READY_NOW;
  }

 private:
  class Session final : public wire::IngestSession::Server {
   public:
    explicit Session(OldAggregator& owner) : owner_(owner) {}

   protected:
    kj::Promise<void> push(PushContext context) override {
      auto params = context.getParams();
      owner_.payloads.push_back(kj::heapArray<kj::byte>(params.getPayload()));
      context.getResults().initAck().setSeq(params.getSeq());
      return kj::READY_NOW;
    }
    kj::Promise<void> heartbeat(HeartbeatContext context) override {
      context.getResults().setHeartbeatIntervalMs(1000);
      return kj::READY_NOW;
    }

   private:
    OldAggregator& owner_;
  };
};

TEST_CASE("an aggregator that does not read event columns is sent the events as a list") {
  auto io = kj::setupAsyncIo();
  auto aggregator = kj::heap<OldAggregator>();
  OldAggregator& old = *aggregator;
  capnp::TwoPartyServer rpc(kj::mv(aggregator));
  auto addr = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
  auto listener = addr->listen();
  const uint port = listener->getPort();
  auto serving = rpc.listen(*listener).eagerlyEvaluate(nullptr);

  UplinkOptions o;
  o.aggregators = {"127.0.0.1:" + std::to_string(port)};
  o.identity.agent_id = o.identity.node_name = "node-d";
  o.boot_epoch = kEpoch;
  o.replay_rate = 0;
  Uplink uplink(*io.provider, o, nullptr);
  for (uint64_t seq = 1; seq <= 3; ++seq) {
    uplink.enqueue(seq, frameWithEvents(seq, WireForm::kCurrent));
  }
  auto running = uplink.run().eagerlyEvaluate(nullptr);
  for (int i = 0; i < 500 && uplink.stats().frames_acked < 3; ++i) {
    io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
  }
  REQUIRE(uplink.stats().frames_acked == 3);
  CHECK(uplink.stats().event_list_frames_sent == 3);
  REQUIRE(old.payloads.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    auto decoded = decodeFrame(old.payloads[i], wire::Encoding::PACKED_ZSTD);
    REQUIRE(decoded.ok());
    auto frame = (*decoded)->frame();
    // What an old aggregator reads: the list, with every event.
    CHECK(!frame.hasEventColumns());
    REQUIRE(frame.getEvents().size() == 3);
    CHECK(std::string(frame.getEvents()[1].getExec().getArgv().cStr()) ==
          "true --seq " + std::to_string(i + 1));
  }
}

}  // namespace
}  // namespace vigil

// Group commit of the ingest log (aggregator/group_commit.h) against the real vigil-aggregator
// binary: many simulated agents on real Cap'n Proto RPC connections push pipelined frames at
// once; acknowledgements must only ever follow the commit that made a frame durable, and the
// batch metrics must account for every frame.
#include <signal.h>

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <tuple>

#include "aggregator/ingest_log.h"
#include "aggregator/series_store.h"
#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "capnp/vigil.capnp.h"
#include "tests/support/test_support.h"

namespace vigil::aggregator {
namespace {

using testing::Child;
using testing::TempDir;

struct Aggregator {
  TempDir& dir;
  Child proc;
  uint16_t rpc_port = 0;
  uint16_t http_port = 0;

  Aggregator(TempDir& d, const std::vector<std::string>& extra) : dir(d) {
    std::string ready = dir.file("agg.ready");
    unlink(ready.c_str());
    std::vector<std::string> argv = {testing::binaryPath("vigil-aggregator"), "--rpc_port=0",
                                     "--http_port=0", "--data_dir=" + dir.file("data"),
                                     "--ready_file=" + ready};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = Child::spawn(argv, dir.file("agg.log"));
    auto rpc = testing::readReadyPort(ready, "http_port", std::chrono::seconds(20));
    REQUIRE(rpc.has_value());
    rpc_port =
        static_cast<uint16_t>(*testing::readReadyPort(ready, "rpc_port", std::chrono::seconds(1)));
    http_port = static_cast<uint16_t>(*rpc);
  }
};

class NoConfig final : public wire::AgentControl::Server {
 protected:
  kj::Promise<void> applyConfig(ApplyConfigContext context) override {
    context.getResults().initResult().setApplied(false);
    return kj::READY_NOW;
  }
};

// Frames 1 ms apart from the start of the test, so every one is a new sample of its series.
void fillFrame(Snapshot& snap, const std::string& agent, uint64_t epoch, uint64_t seq) {
  static const int64_t kBaseNs = static_cast<int64_t>(time(nullptr)) * 1000000000;
  snap.agent.agent_id = agent;
  snap.agent.node_name = agent;
  snap.boot_epoch = epoch;
  snap.seq = seq;
  snap.interval_ms = 1000;
  snap.end_unix_ns = kBaseNs + static_cast<int64_t>(seq) * 1000000;
  snap.start_unix_ns = snap.end_unix_ns - 1000000000;
  for (int i = 0; i < 5; ++i) {
    MetricSample m;
    m.name = "vigil_test_value_" + std::to_string(i);
    m.labels = {{"slot", std::to_string(i)}};
    m.value = static_cast<double>(seq * 10 + i);
    snap.host.push_back(std::move(m));
  }
}

kj::Array<kj::byte> makeFrame(const std::string& agent, uint64_t epoch, uint64_t seq) {
  Snapshot snap;
  fillFrame(snap, agent, epoch, seq);
  capnp::MallocMessageBuilder message;
  toWire(snap, message);
  return encodeFrame(message, wire::Encoding::PACKED_ZSTD);
}

// Simulated agents on one event loop: each registers and keeps `pipeline` pushes in flight.
class Agents {
 public:
  Agents(kj::AsyncIoContext& io, uint16_t port, int n, uint64_t epoch)
      : io_(io), port_(port), n_(n), epoch_(epoch) {}

  struct Agent {
    std::string id;
    kj::Own<kj::AsyncIoStream> stream;
    kj::Own<capnp::TwoPartyClient> client;
    wire::IngestSession::Client session = nullptr;
    uint64_t last_seq = 0;  // as told by register
    uint64_t next = 0;
  };

  void connect() {
    auto addr = io_.provider->getNetwork().parseAddress("127.0.0.1", port_).wait(io_.waitScope);
    for (int i = 0; i < n_; ++i) {
      auto a = kj::heap<Agent>();
      a->id = "gc-agent-" + std::to_string(i);
      a->stream = addr->connect().wait(io_.waitScope);
      a->client = kj::heap<capnp::TwoPartyClient>(*a->stream);
      auto req = a->client->bootstrap().castAs<wire::Aggregator>().registerRequest();
      auto hello = req.initHello();
      hello.initAgent().setAgentId(a->id);
      hello.getAgent().setNodeName(a->id);
      hello.setBootEpoch(epoch_);
      req.setControl(kj::heap<NoConfig>());
      auto resp = req.send().wait(io_.waitScope);
      a->session = resp.getSession();
      a->last_seq = resp.getLastSeq();
      a->next = a->last_seq + 1;
      agents_.push_back(kj::mv(a));
    }
  }

  // Sends `frames` frames per agent, `pipeline` in flight per agent; records acks.
  kj::Promise<void> pushAll(int frames, int pipeline) {
    kj::Vector<kj::Promise<void>> all;
    for (auto& a : agents_) {
      for (int p = 0; p < pipeline; ++p) {
        all.add(pushLoop(*a, frames));
      }
    }
    return kj::joinPromises(all.releaseAsArray());
  }

  kj::Promise<bool> pushOne(Agent& a, uint64_t seq) {
    auto req = a.session.pushRequest();
    req.setSeq(seq);
    req.setEncoding(wire::Encoding::PACKED_ZSTD);
    req.setPayload(makeFrame(a.id, epoch_, seq));
    return req.send().then([](capnp::Response<wire::IngestSession::PushResults> r) {
      return r.getAck().getDuplicate();
    });
  }

  std::set<std::tuple<std::string, uint64_t, uint64_t>> acked;
  uint64_t acked_duplicates = 0;
  std::vector<kj::Own<Agent>>& agents() { return agents_; }

 private:
  kj::Promise<void> pushLoop(Agent& a, int frames) {
    if (a.next > a.last_seq + static_cast<uint64_t>(frames)) {
      return kj::READY_NOW;
    }
    uint64_t seq = a.next++;
    return pushOne(a, seq).then([this, &a, seq, frames](bool duplicate) {
      acked.insert({a.id, epoch_, seq});
      if (duplicate) {
        acked_duplicates++;
      }
      return pushLoop(a, frames);
    });
  }

  kj::AsyncIoContext& io_;
  uint16_t port_;
  int n_;
  uint64_t epoch_;
  std::vector<kj::Own<Agent>> agents_;
};

double metric(uint16_t port, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  auto r = testing::httpGet(port, "/metrics");
  REQUIRE(r.status == 200);
  auto v = testing::promValue(r.body, name, labels);
  INFO(name);
  REQUIRE(v.has_value());
  return *v;
}

TEST_CASE(
    "group commit: after kill -9 every acknowledged frame of many concurrent agents is in "
    "the log exactly once") {
  TempDir dir;
  std::map<std::string, uint64_t> max_acked;
  std::set<std::tuple<std::string, uint64_t, uint64_t>> acked;
  {
    Aggregator agg(dir, {"--ingest_commit_linger=3ms"});
    auto io = kj::setupAsyncIo();
    Agents agents(io, agg.rpc_port, 40, 7);
    agents.connect();
    // Far more frames than fit in the time we give them: the kill lands mid-stream, with
    // pushes queued, in a batch being written, and acknowledged ones on their way back.
    auto pushing = agents.pushAll(100000, 4);
    auto& timer = io.provider->getTimer();
    while (agents.acked.size() < 1500) {
      timer.afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
    }
    agg.proc.signal(SIGKILL);
    REQUIRE(agg.proc.wait(std::chrono::seconds(10)).has_value());
    // Acks that were already on the wire count as acknowledged too: drain what arrives.
    timer.afterDelay(200 * kj::MILLISECONDS).wait(io.waitScope);
    acked = agents.acked;
    CHECK(agents.acked_duplicates == 0);
  }
  REQUIRE(acked.size() >= 1500);
  for (const auto& [agent, epoch, seq] : acked) {
    max_acked[agent] = std::max(max_acked[agent], seq);
  }
  CHECK(max_acked.size() == 40);

  // What the log holds after the crash (SQLite recovers the WAL on open).
  std::map<std::tuple<std::string, uint64_t, uint64_t>, int> in_log;
  {
    auto log = IngestLog::open(dir.file("data") + "/ingest.db");
    REQUIRE(log.ok());
    int64_t after = 0;
    while (true) {
      auto batch = (*log)->readAfter(after, 1000);
      REQUIRE(batch.ok());
      if (batch->empty()) {
        break;
      }
      for (const LogRecord& r : *batch) {
        after = r.id;
        in_log[{r.agent_id, r.boot_epoch, r.seq}]++;
        // Each record is the frame it claims to be.
        auto decoded = decodeFrame(
            kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size()),
            r.encoding);
        REQUIRE(decoded.ok());
        Snapshot snap;
        REQUIRE(fromWire((*decoded)->frame(), snap).ok());
        CHECK(snap.agent.agent_id == r.agent_id);
        CHECK(snap.seq == r.seq);
      }
    }
  }
  size_t missing = 0;
  for (const auto& key : acked) {
    auto it = in_log.find(key);
    if (it == in_log.end()) {
      missing++;
    } else {
      CHECK(it->second == 1);
    }
  }
  CHECK(missing == 0);
  for (const auto& [key, n] : in_log) {
    CHECK(n == 1);
  }
  // Committed but not acknowledged (the crash came between commit and ack) is allowed; the
  // agent resends those and gets a duplicate ack.
  CHECK(in_log.size() >= acked.size());

  // After a restart: registration resumes after the last durable seq, a resent acknowledged
  // frame is acknowledged again as a duplicate, and nothing is applied twice.
  Aggregator agg(dir, {"--ingest_commit_linger=3ms"});
  auto io = kj::setupAsyncIo();
  Agents again(io, agg.rpc_port, 40, 7);
  again.connect();
  uint64_t resent_dupes = 0;
  for (auto& a : again.agents()) {
    INFO(a->id);
    CHECK(a->last_seq >= max_acked[a->id]);
    if (again.pushOne(*a, max_acked[a->id]).wait(io.waitScope)) {
      resent_dupes++;
    }
  }
  CHECK(resent_dupes == 40);
  CHECK(metric(agg.http_port, "vigil_aggregator_frames_duplicate_total") == 40);
  CHECK(metric(agg.http_port, "vigil_aggregator_frames_accepted_total") == 0);
}

TEST_CASE("group commit metrics count every frame, and batches are bounded by frames") {
  TempDir dir;
  // 30 agents x 3 pipelined pushes arrive together; a 50 ms linger gathers them, and at most 8
  // frames fit in one batch.
  Aggregator agg(dir, {"--ingest_commit_linger=50ms", "--ingest_batch_max_frames=8"});
  auto io = kj::setupAsyncIo();
  Agents agents(io, agg.rpc_port, 30, 3);
  agents.connect();
  agents.pushAll(20, 3).wait(io.waitScope);
  REQUIRE(agents.acked.size() == 600);
  CHECK(agents.acked_duplicates == 0);

  double batches = metric(agg.http_port, "vigil_aggregator_commit_batches_total");
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_frames_total") == 600);
  CHECK(metric(agg.http_port, "vigil_aggregator_frames_accepted_total") == 600);
  CHECK(metric(agg.http_port, "vigil_aggregator_log_appends_total") == 600);
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_batch_frames_sum") == 600);
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_batch_frames_count") == batches);
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_seconds_count") == batches);
  // Never more than 8 frames in a batch; and gathering worked: fewer batches than frames.
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_batch_frames_bucket", {{"le", "8"}}) ==
        batches);
  CHECK(batches >= 600.0 / 8);
  CHECK(batches < 600);
  double by_frames =
      metric(agg.http_port, "vigil_aggregator_commit_batches_closed_total", {{"reason", "frames"}});
  double by_linger =
      metric(agg.http_port, "vigil_aggregator_commit_batches_closed_total", {{"reason", "linger"}});
  CHECK(by_frames > 0);
  CHECK(by_frames + by_linger +
            metric(agg.http_port, "vigil_aggregator_commit_batches_closed_total",
                   {{"reason", "bytes"}}) ==
        batches);
  CHECK(metric(agg.http_port, "vigil_aggregator_ingest_queue_frames") == 0);
  CHECK(metric(agg.http_port, "vigil_aggregator_ingest_queue_max_frames") >= 8);
  CHECK(metric(agg.http_port, "vigil_aggregator_commit_failed_batches_total") == 0);
  CHECK(metric(agg.http_port, "vigil_aggregator_ingest_queue_full_total") == 0);
  // The series store took every sample of every frame on the commit thread.
  Snapshot one;
  fillFrame(one, "gc-agent-0", 3, 1);
  size_t per_frame = renderFrameSamples(one).size();
  REQUIRE(per_frame >= 5);
  // The series store trails the acks by at most one batch.
  CHECK(testing::waitFor(
      [&] {
        return metric(agg.http_port, "vigil_aggregator_series_samples_appended_total") ==
               600.0 * per_frame;
      },
      std::chrono::seconds(10)));
  CHECK(metric(agg.http_port, "vigil_aggregator_series") == 30.0 * per_frame);
  CHECK(metric(agg.http_port, "vigil_aggregator_series_out_of_order_total") == 0);
  CHECK(metric(agg.http_port, "vigil_aggregator_series_hash_collisions") == 0);
  // After each agent's first frame, every sample took the allocation-free path.
  CHECK(metric(agg.http_port, "vigil_aggregator_series_fast_path_samples_total") ==
        (600.0 - 30) * per_frame);
}

TEST_CASE("a full ingest queue refuses pushes, counted, and acknowledges none of them") {
  TempDir dir;
  // One frame may wait; a long linger keeps it waiting while the others arrive.
  Aggregator agg(dir, {"--ingest_commit_linger=300ms", "--ingest_queue_max_frames=1",
                       "--ingest_batch_max_frames=1000"});
  auto io = kj::setupAsyncIo();
  Agents agents(io, agg.rpc_port, 5, 1);
  agents.connect();
  int acked = 0;
  int refused = 0;
  kj::Vector<kj::Promise<void>> all;
  for (auto& a : agents.agents()) {
    all.add(agents.pushOne(*a, 1).then([&acked](bool) { acked++; },
                                       [&refused](kj::Exception&& e) {
                                         CHECK(e.getType() == kj::Exception::Type::OVERLOADED);
                                         refused++;
                                       }));
  }
  kj::joinPromises(all.releaseAsArray()).wait(io.waitScope);
  CHECK(acked + refused == 5);
  CHECK(refused >= 1);
  CHECK(metric(agg.http_port, "vigil_aggregator_ingest_queue_full_total") == refused);
  CHECK(metric(agg.http_port, "vigil_aggregator_rejected_total", {{"reason", "queue_full"}}) ==
        refused);
  CHECK(metric(agg.http_port, "vigil_aggregator_log_appends_total") == acked);

  // A refused agent is fenced: its next frame on the same session is not logged ahead of the
  // refused one, even though the queue has room now. After registering again it resumes.
  REQUIRE(refused >= 1);
  CHECK(metric(agg.http_port, "vigil_aggregator_ingest_queue_frames") == 0);
  uint64_t before =
      static_cast<uint64_t>(metric(agg.http_port, "vigil_aggregator_log_appends_total"));
  int fenced = 0;
  for (auto& a : agents.agents()) {
    agents.pushOne(*a, 2)
        .then([](bool) {},
              [&fenced](kj::Exception&& e) {
                CHECK(e.getType() == kj::Exception::Type::OVERLOADED);
                fenced++;
              })
        .wait(io.waitScope);
  }
  CHECK(fenced == refused);
  CHECK(metric(agg.http_port, "vigil_aggregator_rejected_total", {{"reason", "fenced"}}) ==
        refused);
  CHECK(metric(agg.http_port, "vigil_aggregator_log_appends_total") == before + (5 - refused));
  Agents again(io, agg.rpc_port, 5, 1);
  again.connect();
  for (auto& a : again.agents()) {
    // Resumes after its last durable seq: 0 for the refused agents, 2 for the others.
    CHECK((a->last_seq == 0 || a->last_seq == 2));
    CHECK_FALSE(again.pushOne(*a, a->last_seq + 1).wait(io.waitScope));
  }
}

}  // namespace
}  // namespace vigil::aggregator

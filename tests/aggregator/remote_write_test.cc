#include "aggregator/remote_write.h"

#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "capnp/frame_codec.h"
#include "capnp/snapshot.h"
#include "tests/support/test_support.h"

namespace vigil::aggregator {
namespace {

uint64_t bitsOf(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

LabelSet ls(std::initializer_list<std::pair<std::string, std::string>> l) {
  LabelSet out(l.begin(), l.end());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("a WriteRequest decodes back to the same series, samples and stale markers") {
  std::vector<PendingSeries> in = {
      {ls({{"__name__", "a_total"}, {"node", "n1"}, {"pid", "1"}}),
       {{1000, 1.5}, {2000, 2.5}, {3000, staleNaN()}}},
      {ls({{"__name__", "b"}, {"node", "n\xc3\xa9\"\n"}}), {{-5, -0.0}, {7, 1e300}}},
      {ls({{"__name__", "c"}}), {}},
  };
  std::string body = encodeWriteRequest(in);
  auto out = decodeWriteRequest(body);
  REQUIRE(out.ok());
  REQUIRE(out->size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    CHECK((*out)[i].labels == in[i].labels);
    REQUIRE((*out)[i].samples.size() == in[i].samples.size());
    for (size_t j = 0; j < in[i].samples.size(); ++j) {
      CHECK((*out)[i].samples[j].timestamp_ms == in[i].samples[j].timestamp_ms);
      CHECK(bitsOf((*out)[i].samples[j].value) == bitsOf(in[i].samples[j].value));
    }
  }
  CHECK_FALSE(decodeWriteRequest("not snappy at all").ok());
}

void frame(Snapshot& s, const std::string& agent, uint64_t seq, int64_t end_ms,
           std::initializer_list<uint32_t> pids) {
  s.agent.agent_id = agent;
  s.agent.node_name = agent;
  s.boot_epoch = 1;
  s.seq = seq;
  s.end_unix_ns = end_ms * 1000000;
  s.interval_ms = 1000;
  for (uint32_t pid : pids) {
    ProcessStats& p = s.process(pid);
    p.comm = "p" + std::to_string(pid);
    p.cpu_ns = seq * 1000000000ULL;
  }
}

const PendingSeries* find(const std::vector<PendingSeries>& v, const std::string& name,
                          const std::string& pid) {
  for (const PendingSeries& s : v) {
    bool name_ok = false;
    bool pid_ok = pid.empty();
    for (const auto& [k, val] : s.labels) {
      name_ok |= k == "__name__" && val == name;
      pid_ok |= k == "pid" && val == pid;
    }
    if (name_ok && pid_ok) {
      return &s;
    }
  }
  return nullptr;
}

TEST_CASE("series that leave an agent's frames, or whose agent goes quiet, get stale markers") {
  WriteBatcher b;
  Snapshot f1, f2;
  frame(f1, "a", 1, 10000, {1, 2});
  frame(f2, "a", 2, 11000, {1});
  b.addFrame(f1);
  b.addFrame(f2);
  CHECK(b.staleMarkers() == 3);  // pid 2: cpu seconds + two context-switch series
  auto batch = b.take();
  const PendingSeries* p1 = find(batch, "vigil_process_cpu_seconds_total", "1");
  const PendingSeries* p2 = find(batch, "vigil_process_cpu_seconds_total", "2");
  REQUIRE(p1);
  REQUIRE(p2);
  REQUIRE(p1->samples.size() == 2);
  CHECK(p1->samples[0].timestamp_ms == 10000);
  CHECK(p1->samples[0].value == 1);
  CHECK(p1->samples[1].timestamp_ms == 11000);
  CHECK(p1->samples[1].value == 2);
  REQUIRE(p2->samples.size() == 2);
  CHECK(p2->samples[1].timestamp_ms == 11000);
  CHECK(isStaleNaN(p2->samples[1].value));
  for (size_t i = 1; i < batch.size(); ++i) {
    CHECK(batch[i - 1].labels < batch[i].labels);
  }

  // Agent "a" goes quiet: every series of its last frame is marked stale, once.
  size_t series_in_f2 = renderFrameSamples(f2).size();
  CHECK(b.expireAgents(/*before_ms=*/11001, /*t_ms=*/70000) == series_in_f2);
  batch = b.take();
  REQUIRE(batch.size() == series_in_f2);
  for (const PendingSeries& s : batch) {
    REQUIRE(s.samples.size() == 1);
    CHECK(s.samples[0].timestamp_ms == 70000);
    CHECK(isStaleNaN(s.samples[0].value));
  }
  CHECK(b.expireAgents(11001, 80000) == 0);
}

// A scripted remote-write receiver. Prometheus (tests/integration/prometheus_test.cc) is the
// real one; this stand-in exists because Prometheus cannot be made to answer 503, 429 or 400 on
// demand, which is what the retry and drop paths need.
class ScriptedReceiver final : public kj::HttpService {
 public:
  explicit ScriptedReceiver(std::vector<int> statuses) : statuses_(std::move(statuses)) {
    kj::HttpHeaderTable::Builder b;
    encoding_ = b.add("Content-Encoding");
    version_ = b.add("X-Prometheus-Remote-Write-Version");
    agent_ = b.add("User-Agent");
    table_ = b.build();
  }

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override {
    Received r;
    r.method = method;
    r.url = url.cStr();
    auto get = [&](kj::HttpHeaderId id) {
      KJ_IF_MAYBE (v, headers.get(id)) {
        return std::string(v->cStr());
      }
      return std::string();
    };
    r.content_type = get(kj::HttpHeaderId::CONTENT_TYPE);
    r.encoding = get(encoding_);
    r.version = get(version_);
    r.user_agent = get(agent_);
    return body.readAllBytes().then(
        [this, r = std::move(r), &response](kj::Array<kj::byte> bytes) mutable {
          r.body.assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
          int status = received.size() < statuses_.size() ? statuses_[received.size()] : 200;
          r.status = status;
          received.push_back(std::move(r));
          kj::HttpHeaders h(*table_);
          auto out = response.send(static_cast<uint>(status), "scripted", h, uint64_t{2});
          return out->write("ok", 2).attach(kj::mv(out));
        });
  }

  struct Received {
    kj::HttpMethod method;
    std::string url, content_type, encoding, version, user_agent, body;
    int status = 0;
  };
  std::vector<Received> received;
  kj::HttpHeaderTable& table() { return *table_; }

 private:
  std::vector<int> statuses_;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::HttpHeaderId encoding_, version_, agent_;
};

void appendFrame(IngestLog& log, Snapshot& s) {
  capnp::MallocMessageBuilder msg;
  toWire(s, msg);
  auto bytes = encodeFrame(msg, wire::Encoding::PACKED);
  REQUIRE(*log.append(s.agent.agent_id, s.boot_epoch, s.seq, wire::Encoding::PACKED, bytes.begin(),
                      bytes.size(), 1));
}

TEST_CASE("the forwarder retries 5xx and 429, drops 4xx, and resumes from its persisted cursor") {
  testing::TempDir dir;
  auto log = IngestLog::open(dir.file("ingest.db"));
  REQUIRE(log.ok());
  // Batches of two frames each.
  int64_t t0 = 1700000000000;
  for (uint64_t seq = 1; seq <= 6; ++seq) {
    Snapshot s;
    frame(s, "a", seq, t0 + static_cast<int64_t>(seq) * 1000, {42, 43});
    appendFrame(**log, s);
  }
  size_t per_frame = [&]() {
    Snapshot s;
    frame(s, "a", 1, t0, {42, 43});
    return renderFrameSamples(s).size();
  }();

  auto io = kj::setupAsyncIo();
  // 503 then 429 on batch 1 (retried), 200 for it, 400 for batch 2 (dropped), 200 for batch 3.
  ScriptedReceiver receiver({503, 429, 200, 400, 200});
  auto listener =
      io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope)->listen();
  kj::HttpServer server(io.provider->getTimer(), receiver.table(), receiver);
  auto serving = server.listenHttp(*listener).eagerlyEvaluate(nullptr);
  std::string url = "http://127.0.0.1:" + std::to_string(listener->getPort()) + "/api/v1/write";

  RemoteWriteOptions opts;
  opts.max_samples_per_send = 2 * per_frame;
  opts.min_backoff_ms = 5;
  opts.poll_interval_ms = 10;
  opts.agent_stale_after_ms = 1LL << 50;  // keep the frames' agent "alive" for this test
  auto writer = RemoteWriter::create(io.provider->getTimer(), io.provider->getNetwork(), **log, url,
                                     "remote_write", opts);
  REQUIRE(writer.ok());
  {
    auto running = (*writer)->run().eagerlyEvaluate(nullptr);
    for (int i = 0; i < 500 && (*writer)->stats().cursor < 6; ++i) {
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
  }
  const RemoteWriteStats& st = (*writer)->stats();
  CHECK(st.cursor == 6);
  CHECK(*(*log)->cursor("remote_write") == 6);
  REQUIRE(receiver.received.size() == 5);
  CHECK(st.retries == 2);
  CHECK(st.samples_failed == 4 * per_frame);
  CHECK(st.samples_dropped == 2 * per_frame);
  CHECK(st.samples_sent == 4 * per_frame);
  CHECK(st.responses.at(503) == 1);
  CHECK(st.responses.at(400) == 1);
  for (const auto& r : receiver.received) {
    CHECK(r.method == kj::HttpMethod::POST);
    CHECK(r.url == "/api/v1/write");
    CHECK(r.content_type == "application/x-protobuf");
    CHECK(r.encoding == "snappy");
    CHECK(r.version == "0.1.0");
    CHECK(r.user_agent.rfind("vigil-aggregator/", 0) == 0);
  }
  // Retries resend the same batch; later batches carry later frames in time order.
  CHECK(receiver.received[0].body == receiver.received[2].body);
  auto last = decodeWriteRequest(receiver.received[4].body);
  REQUIRE(last.ok());
  const PendingSeries* cpu = find(*last, "vigil_process_cpu_seconds_total", "42");
  REQUIRE(cpu);
  REQUIRE(cpu->samples.size() == 2);
  CHECK(cpu->samples[0].timestamp_ms == t0 + 5000);
  CHECK(cpu->samples[1].timestamp_ms == t0 + 6000);
  CHECK(cpu->samples[1].value == 6);

  // A new writer on the same log (an aggregator restart) sends only frames after the cursor, and
  // still knows (from the frames before it) that pid 43 was there: it ends pid 43's series.
  for (uint64_t seq = 7; seq <= 8; ++seq) {
    Snapshot s;
    frame(s, "a", seq, t0 + static_cast<int64_t>(seq) * 1000, {42});
    appendFrame(**log, s);
  }
  auto again = RemoteWriter::create(io.provider->getTimer(), io.provider->getNetwork(), **log, url,
                                    "remote_write", opts);
  REQUIRE(again.ok());
  {
    auto running = (*again)->run().eagerlyEvaluate(nullptr);
    for (int i = 0; i < 500 && (*again)->stats().cursor < 8; ++i) {
      io.provider->getTimer().afterDelay(10 * kj::MILLISECONDS).wait(io.waitScope);
    }
  }
  REQUIRE(receiver.received.size() == 6);
  auto resumed = decodeWriteRequest(receiver.received[5].body);
  REQUIRE(resumed.ok());
  cpu = find(*resumed, "vigil_process_cpu_seconds_total", "42");
  REQUIRE(cpu);
  REQUIRE(cpu->samples.size() == 2);
  CHECK(cpu->samples[0].timestamp_ms == t0 + 7000);
  CHECK(cpu->samples[1].timestamp_ms == t0 + 8000);
  const PendingSeries* gone = find(*resumed, "vigil_process_cpu_seconds_total", "43");
  REQUIRE(gone);
  REQUIRE(gone->samples.size() == 1);
  CHECK(gone->samples[0].timestamp_ms == t0 + 7000);
  CHECK(isStaleNaN(gone->samples[0].value));
  CHECK((*again)->stats().stale_markers == 3);

  PromWriter w;
  writeRemoteWriteMetrics({}, w);
  CHECK(w.finish().empty());
}

TEST_CASE("remote-write URLs other than http://host are refused with a clear error") {
  testing::TempDir dir;
  auto log = IngestLog::open(dir.file("ingest.db"));
  REQUIRE(log.ok());
  auto io = kj::setupAsyncIo();
  for (const char* bad : {"https://example.com/write", "not a url", "ftp://x/y"}) {
    auto w = RemoteWriter::create(io.provider->getTimer(), io.provider->getNetwork(), **log, bad,
                                  "remote_write", {});
    CHECK_FALSE(w.ok());
    CHECK(w.status().message().find("--remote_write_url") != absl::string_view::npos);
  }
}

}  // namespace
}  // namespace vigil::aggregator

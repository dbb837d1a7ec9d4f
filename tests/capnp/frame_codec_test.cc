#include "capnp/frame_codec.h"

#include <zstd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "capnp/snapshot.h"

namespace vigil {
namespace {

void fillSnapshot(Snapshot& s) {
  s.agent.agent_id = "node-a";
  s.agent.node_name = "node-a";
  s.agent.labels = {{"zone", "z1"}};
  s.boot_epoch = 77;
  s.seq = 5;
  ProcessStats& p = s.process(1234);
  p.comm = "redis-server";
  p.cpu_ns = 1500000000;
  p.voluntary_switches = 10;
  p.top_errnos = {{11, 7}, {2, 3}};
  s.host.push_back(MetricSample{"vigil_host_load1", {}, 0.5, false});
  s.histograms.push_back(
      HistogramSample{"vigil_runqueue_latency_seconds", {}, 1000, {1, 2, 3}, 6, 12});
  auto ev = s.newEvent();
  ev.setPid(99);
  ev.initExec().setFilename("/bin/true");
}

kj::Array<kj::byte> encodeSample(wire::Encoding enc) {
  Snapshot s;
  fillSnapshot(s);
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  return encodeFrame(message, enc);
}

TEST_CASE("a frame survives encode and decode in both encodings") {
  for (auto enc : {wire::Encoding::PACKED, wire::Encoding::PACKED_ZSTD}) {
    auto bytes = encodeSample(enc);
    auto decoded = decodeFrame(bytes, enc);
    REQUIRE(decoded.ok());
    Snapshot back;
    fromWire((*decoded)->frame(), back);
    CHECK(back.agent.agent_id == "node-a");
    CHECK(back.agent.labels == Labels{{"zone", "z1"}});
    CHECK(back.boot_epoch == 77);
    CHECK(back.seq == 5);
    REQUIRE(back.processes.count(1234) == 1);
    CHECK(back.processes[1234].comm == "redis-server");
    CHECK(back.processes[1234].cpu_ns == 1500000000);
    CHECK(back.processes[1234].top_errnos.size() == 2);
    CHECK(back.host.size() == 1);
    CHECK(back.histograms[0].buckets == std::vector<uint64_t>{1, 2, 3});
    REQUIRE(back.events.size() == 1);
    CHECK(std::string(back.events[0].getReader().getExec().getFilename().cStr()) == "/bin/true");
  }
}

TEST_CASE("garbage bytes are refused with a reason, not a crash") {
  kj::byte garbage[64];
  for (size_t i = 0; i < sizeof(garbage); ++i) {
    garbage[i] = static_cast<kj::byte>(i * 37 + 11);
  }
  auto packed = decodeFrame(kj::arrayPtr(garbage, sizeof(garbage)), wire::Encoding::PACKED);
  CHECK_FALSE(packed.ok());
  auto zstd = decodeFrame(kj::arrayPtr(garbage, sizeof(garbage)), wire::Encoding::PACKED_ZSTD);
  REQUIRE_FALSE(zstd.ok());
  CHECK(std::string(zstd.status().message()).find("zstd") != std::string::npos);
}

TEST_CASE("a truncated frame is refused") {
  auto bytes = encodeSample(wire::Encoding::PACKED);
  auto cut = decodeFrame(bytes.slice(0, bytes.size() / 2), wire::Encoding::PACKED);
  CHECK_FALSE(cut.ok());
  auto zbytes = encodeSample(wire::Encoding::PACKED_ZSTD);
  auto zcut = decodeFrame(zbytes.slice(0, zbytes.size() - 3), wire::Encoding::PACKED_ZSTD);
  CHECK_FALSE(zcut.ok());
}

TEST_CASE("an oversized payload and a decompression bomb are refused before allocation") {
  auto big = kj::heapArray<kj::byte>(kMaxPayloadBytes + 1);
  auto r = decodeFrame(big, wire::Encoding::PACKED);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("exceeds the limit") != std::string::npos);

  // 100 MiB of zeros compress to a few KiB but declare a size above kMaxDecodedBytes.
  std::vector<char> zeros(100 << 20, 0);
  std::vector<char> out(ZSTD_compressBound(zeros.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), zeros.data(), zeros.size(), 1);
  REQUIRE_FALSE(ZSTD_isError(n));
  auto bomb = decodeFrame(kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()), n),
                          wire::Encoding::PACKED_ZSTD);
  REQUIRE_FALSE(bomb.ok());
  CHECK(std::string(bomb.status().message()).find("oversized") != std::string::npos);
}

TEST_CASE("an unknown encoding is refused") {
  auto bytes = encodeSample(wire::Encoding::PACKED);
  auto r = decodeFrame(bytes, static_cast<wire::Encoding>(9));
  CHECK_FALSE(r.ok());
}

}  // namespace
}  // namespace vigil

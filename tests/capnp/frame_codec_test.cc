#include "capnp/frame_codec.h"

#include <zstd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <vector>

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
    REQUIRE(fromWire((*decoded)->frame(), back).ok());
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

// --- Delta frames ------------------------------------------------------------------------------

kj::Array<kj::byte> packedOf(const Snapshot& s) {
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  return encodeFrame(message, wire::Encoding::PACKED);
}

bool sameBytes(kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b) {
  return a.size() == b.size() && memcmp(a.begin(), b.begin(), a.size()) == 0;
}

// A small host: 40 processes with cumulative counters, host metrics, a histogram.
void fillHost(Snapshot& s, uint64_t seq) {
  s.agent.agent_id = s.agent.node_name = "node-d";
  s.agent.labels = {{"zone", "z1"}};
  s.boot_epoch = 9;
  s.seq = seq;
  s.interval_ms = 10000;
  for (uint32_t pid = 100; pid < 140; ++pid) {
    ProcessStats& p = s.process(pid);
    p.comm = "worker";
    p.cmdline = "/usr/bin/worker --id " + std::to_string(pid);
    p.cgroup_id = 4242;
    // Only every fourth process is busy; the others' counters stand still.
    uint64_t busy = pid % 4 == 0 ? seq : 1;
    p.cpu_ns = busy * 1000003 * pid;
    p.voluntary_switches = busy * 17;
    p.syscalls = busy * 977;
  }
  s.host.push_back(MetricSample{"vigil_host_load", {{"window", "1"}}, 0.25, false});
  s.host.push_back(MetricSample{
      "vigil_host_cpu_seconds_total", {{"mode", "user"}}, static_cast<double>(seq) * 3.5, true});
  s.histograms.push_back(HistogramSample{
      "vigil_runqueue_latency_seconds", {}, 1000, {seq, 2 * seq, 7, 0, 1}, 3 * seq + 8, 99 * seq});
}

TEST_CASE(
    "a delta expands to exactly the frame's bytes: series and processes added, removed, "
    "changed, exited, and new events") {
  Snapshot base;
  fillHost(base, 10);
  Snapshot next;
  fillHost(next, 11);
  next.processes.erase(101);                 // gone without an exit record
  next.processes[102].exited = true;         // exiting in this frame
  next.processes[103].cmdline = "changed";   // a string changed
  ProcessStats& fresh = next.process(7777);  // appeared
  fresh.comm = "newcomer";
  fresh.cpu_ns = 5;
  next.host.push_back(MetricSample{"vigil_host_new_series", {{"k", "v"}}, 1, false});
  next.host.erase(next.host.begin());  // a host series went away
  auto ev = next.newEvent();
  ev.setPid(7777);
  ev.initExec().setFilename("/usr/bin/newcomer");

  auto base_packed = packedOf(base);
  auto next_packed = packedOf(next);
  auto delta = encodeDelta(base_packed, next_packed);
  auto expanded = expandDelta(base_packed, delta);
  REQUIRE(expanded.ok());
  REQUIRE(sameBytes(*expanded, next_packed));

  auto decoded = decodeFrame(*expanded, wire::Encoding::PACKED);
  REQUIRE(decoded.ok());
  Snapshot back;
  REQUIRE(fromWire((*decoded)->frame(), back).ok());
  CHECK(back.seq == 11);
  CHECK(back.processes.size() == 40);
  CHECK(back.processes.count(101) == 0);
  CHECK(back.processes[102].exited);
  CHECK(back.processes[103].cmdline == "changed");
  // On-CPU time travels in whole microseconds (ProcessSample.cpuUs).
  CHECK(back.processes[104].cpu_ns == 11ull * 1000003 * 104 / 1000 * 1000);
  CHECK(back.processes[105].cpu_ns == 1000003ull * 105 / 1000 * 1000);
  CHECK(back.processes[7777].comm == "newcomer");
  REQUIRE(back.host.size() == 2);
  CHECK(back.host[0].name == "vigil_host_cpu_seconds_total");
  CHECK(back.host[0].value == 38.5);
  CHECK(back.host[1].name == "vigil_host_new_series");
  CHECK(back.histograms[0].buckets == std::vector<uint64_t>{11, 22, 7, 0, 1});
  REQUIRE(back.events.size() == 1);
  CHECK(std::string(back.events[0].getReader().getExec().getFilename().cStr()) ==
        "/usr/bin/newcomer");
}

TEST_CASE("a delta of a frame whose processes mostly stand still is a fraction of the keyframe") {
  Snapshot base;
  fillHost(base, 10);
  Snapshot next;
  fillHost(next, 11);
  auto base_packed = packedOf(base);
  auto next_packed = packedOf(next);
  auto keyframe = compressPacked(next_packed);
  auto delta = encodeDelta(base_packed, next_packed);
  INFO("keyframe " << keyframe.size() << " B, delta " << delta.size() << " B");
  CHECK(delta.size() * 4 < keyframe.size());
  // An unchanged frame costs only the zstd frame header, one match and the checksum.
  auto copy = kj::heapArray<kj::byte>(next_packed.asPtr());
  auto same = encodeDelta(copy, next_packed);
  CHECK(same.size() < 32);
}

TEST_CASE("a delta against the wrong base, no base or garbage is refused, never mis-decoded") {
  Snapshot a;
  fillHost(a, 10);
  Snapshot b;
  fillHost(b, 11);
  Snapshot c;
  fillHost(c, 12);
  auto pa = packedOf(a);
  auto pb = packedOf(b);
  auto pc = packedOf(c);
  auto delta = encodeDelta(pb, pc);  // c based on b

  // The right base works.
  REQUIRE(expandDelta(pb, delta).ok());
  // A base that differs in one byte: the matches copy it; the checksum catches it.
  auto pb_flipped = kj::heapArray<kj::byte>(pb.asPtr());
  pb_flipped[pb_flipped.size() / 2] ^= 0x5a;
  auto wrong = expandDelta(pb_flipped, delta);
  REQUIRE_FALSE(wrong.ok());
  CHECK(std::string(wrong.status().message()).find("does not expand against its base") !=
        std::string::npos);
  // Another frame as the base.
  CHECK_FALSE(expandDelta(pa, delta).ok());
  // No base: back-references point before the start of the output.
  auto none = expandDelta(kj::ArrayPtr<const kj::byte>(), delta);
  CHECK_FALSE(none.ok());
  // A truncated delta and garbage.
  CHECK_FALSE(expandDelta(pb, delta.slice(0, delta.size() - 5)).ok());
  kj::byte garbage[48];
  for (size_t i = 0; i < sizeof(garbage); ++i) {
    garbage[i] = static_cast<kj::byte>(i * 91 + 3);
  }
  auto g = expandDelta(pb, kj::arrayPtr(garbage, sizeof(garbage)));
  REQUIRE_FALSE(g.ok());
  CHECK(std::string(g.status().message()).find("not zstd") != std::string::npos);
  // A delta is never decodable on its own.
  auto alone = decodeFrame(delta, wire::Encoding::PACKED_ZSTD_DELTA);
  REQUIRE_FALSE(alone.ok());
  CHECK(std::string(alone.status().message()).find("needs its base") != std::string::npos);
}

TEST_CASE("a delta that declares an oversized frame is refused before allocation") {
  std::vector<char> zeros(100 << 20, 0);
  std::vector<char> out(ZSTD_compressBound(zeros.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), zeros.data(), zeros.size(), 1);
  REQUIRE_FALSE(ZSTD_isError(n));
  auto base = packedOf(Snapshot());
  auto bomb = expandDelta(base, kj::arrayPtr(reinterpret_cast<const kj::byte*>(out.data()), n));
  REQUIRE_FALSE(bomb.ok());
  CHECK(std::string(bomb.status().message()).find("oversized") != std::string::npos);
}

TEST_CASE(
    "a delta is exact for signed, NaN and infinite values, repeated names, union changes "
    "and resized lists") {
  Snapshot base;
  fillHost(base, 10);
  Snapshot next;
  fillHost(next, 11);
  // Same metric name twice (matched by occurrence), NaN, infinities, negative values.
  for (Snapshot* s : {&base, &next}) {
    bool n = s == &next;
    s->host.push_back(MetricSample{"vigil_dup", {{"i", "0"}}, n ? -2.5 : 7.0, false});
    s->host.push_back(MetricSample{"vigil_dup", {{"i", "1"}}, n ? std::nan("") : 1e300, false});
    s->host.push_back(MetricSample{"vigil_inf", {}, n ? -INFINITY : INFINITY, false});
    // The same event (same timestamp) in both frames: matched, with negative fields.
    auto ev = s->newEvent();
    ev.setTimestampNs(-5);
    ev.setPid(1);
    auto exit = ev.initExit();
    exit.setExitCode(n ? -1 : 3);
    exit.setSignal(n ? 9 : -2147483647 - 1);
    // Same timestamp, different union member.
    auto ev2 = s->newEvent();
    ev2.setTimestampNs(77);
    if (n) {
      ev2.initFork().setChildPid(4000000000u);
    } else {
      ev2.initSignal().setSignal(-7);
    }
  }
  next.histograms[0].buckets = {0, 0, 0, 0, 0, 0, 0, ~0ull};  // longer than the base's
  base.processes[104].top_errnos = {{11, 5}, {2, 1}};
  next.processes[104].top_errnos = {{2, 9}, {11, 5}, {4, 1}};  // reordered, one new

  auto base_packed = packedOf(base);
  auto next_packed = packedOf(next);
  auto delta = encodeDelta(base_packed, next_packed);
  auto expanded = expandDelta(base_packed, delta);
  REQUIRE(expanded.ok());
  REQUIRE(sameBytes(*expanded, next_packed));
  auto decoded = decodeFrame(*expanded, wire::Encoding::PACKED);
  REQUIRE(decoded.ok());
  auto f = (*decoded)->frame();
  auto host = f.getHost();
  CHECK(metricValue(host[host.size() - 3]) == -2.5);
  CHECK(host[host.size() - 3].getScaled() == -25);  // the exact decimal form
  CHECK(std::isnan(metricValue(host[host.size() - 2])));
  CHECK(std::isnan(host[host.size() - 2].getValue()));  // no decimal form: the float64
  CHECK(metricValue(host[host.size() - 1]) == -INFINITY);
  Snapshot back;
  REQUIRE(fromWire(f, back).ok());
  REQUIRE(back.events.size() >= 2);
  CHECK(back.events[0].getReader().getExit().getExitCode() == -1);
  CHECK(back.events[0].getReader().getExit().getSignal() == 9);
  CHECK(back.events[1].getReader().getFork().getChildPid() == 4000000000u);
  CHECK(f.getHistograms()[0].getBuckets()[7] == ~0ull);
}

uint64_t bitsOf(double v) {
  uint64_t b;
  memcpy(&b, &v, sizeof(b));
  return b;
}

// A Metric value through toWire and fromWire.
double roundTripMetric(double v) {
  Snapshot s;
  s.host.push_back(MetricSample{"m", {}, v, true});
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  auto bytes = encodeFrame(message, wire::Encoding::PACKED);
  auto decoded = decodeFrame(bytes, wire::Encoding::PACKED);
  REQUIRE(decoded.ok());
  Snapshot back;
  REQUIRE(fromWire((*decoded)->frame(), back).ok());
  REQUIRE(back.host.size() == 1);
  return back.host[0].value;
}

TEST_CASE("metric values travel as exact scaled decimals when they have one, bit for bit") {
  // Values the collectors produce: /proc/stat ticks / 100, PSI us / 1e6, BPF ns / 1e9, ms / 1000,
  // byte counts, /proc/loadavg text, and ones with no short decimal form.
  std::vector<double> values = {123456789 / 100.0,
                                987654321 / 1e6,
                                12345678901 / 1e9,
                                4242 / 1000.0,
                                1.5e12,
                                0.52,
                                4096.0 * 2500123,
                                0.1 + 0.2,
                                1.0 / 3.0,
                                -17.25,
                                9223372036854775807.0,
                                1e300,
                                5e-324,
                                1e-9,
                                std::nan(""),
                                INFINITY,
                                -INFINITY,
                                0.0,
                                -0.0,
                                9007199254740993.0};
  for (double v : values) {
    INFO(v);
    double back = roundTripMetric(v);
    CHECK(bitsOf(back) == bitsOf(v));
  }
  int64_t scaled = 0;
  uint8_t digits = 0;
  REQUIRE(scaledDecimal(123456789 / 100.0, &scaled, &digits));
  CHECK(scaled == 123456789);
  CHECK(digits == 2);
  REQUIRE(scaledDecimal(12345678901 / 1e9, &scaled, &digits));
  CHECK(scaled == 12345678901);
  CHECK(digits == 9);
  REQUIRE(scaledDecimal(1.5e12, &scaled, &digits));
  CHECK(scaled == 1500000000000);
  CHECK(digits == 0);
  CHECK_FALSE(scaledDecimal(1.0 / 3.0, &scaled, &digits));
  CHECK_FALSE(scaledDecimal(-0.0, &scaled, &digits));
  CHECK_FALSE(scaledDecimal(std::nan(""), &scaled, &digits));
  CHECK_FALSE(scaledDecimal(9223372036854775807.0, &scaled, &digits));
  // Every tick count up to a day of one CPU comes back exactly.
  for (uint64_t ticks = 0; ticks < 8640000; ticks += 7) {
    double v = static_cast<double>(ticks) / 100.0;
    if (!scaledDecimal(v, &scaled, &digits)) {
      CHECK(ticks == 0);
      continue;
    }
    if (bitsOf(scaledValue(scaled, digits)) != bitsOf(v)) {
      FAIL("tick count " << ticks << " does not round-trip");
    }
  }
}

TEST_CASE("a Metric in the old float64 form and one with an out-of-range scale read as value") {
  capnp::MallocMessageBuilder message;
  auto m = message.initRoot<wire::Metric>();
  m.setValue(2.5);
  CHECK(metricValue(m.asReader()) == 2.5);
  m.setValue(0);
  m.setScaled(250);
  m.setScaleDigits(2);
  CHECK(metricValue(m.asReader()) == 2.5);
  // A corrupt scale never indexes past the table: the float64 (0) is taken.
  m.setScaleDigits(200);
  CHECK(metricValue(m.asReader()) == 0.0);
}

TEST_CASE("on-CPU time travels in microseconds, floored, and old frames in ns still read") {
  Snapshot s;
  s.process(1).cpu_ns = 1234567891;  // 1234567.891 us
  s.process(2).cpu_ns = 999;         // below 1 us
  s.process(3).tcp_connect_latency_sum_ns = 345000;
  s.process(4).tcp_connect_latency_sum_ns = 345001;  // not whole us: sent in ns
  ContainerStats c;
  c.cgroup_id = 9;
  c.cpu_ns = 5000000777;
  s.containers.push_back(c);
  capnp::MallocMessageBuilder message;
  toWire(s, message);
  auto frame = message.getRoot<wire::Frame>();
  CHECK(frame.getProcesses()[0].getCpuNs() == 0);
  CHECK(frame.getProcesses()[0].getCpuUs() == 1234567);
  CHECK(frame.getProcesses()[2].getTcpConnectLatencySumNs() == 0);
  CHECK(frame.getProcesses()[2].getTcpConnectLatencySumUs() == 345);
  CHECK(frame.getProcesses()[3].getTcpConnectLatencySumNs() == 345001);
  CHECK(frame.getContainers()[0].getCpuUs() == 5000000);
  Snapshot back;
  REQUIRE(fromWire(frame.asReader(), back).ok());
  CHECK(back.processes[1].cpu_ns == 1234567000);
  CHECK(back.processes[2].cpu_ns == 0);
  CHECK(back.processes[3].tcp_connect_latency_sum_ns == 345000);
  CHECK(back.processes[4].tcp_connect_latency_sum_ns == 345001);
  CHECK(back.containers[0].cpu_ns == 5000000000);

  // A frame of an agent that predates cpuUs: cpuNs set, read exactly.
  capnp::MallocMessageBuilder old;
  auto of = old.initRoot<wire::Frame>();
  auto op = of.initProcesses(1)[0];
  op.setPid(7);
  op.setCpuNs(1234567891);
  op.setTcpConnectLatencySumNs(345000);
  of.initContainers(1)[0].setCpuNs(5000000777);
  Snapshot old_back;
  REQUIRE(fromWire(of.asReader(), old_back).ok());
  CHECK(old_back.processes[7].cpu_ns == 1234567891);
  CHECK(old_back.processes[7].tcp_connect_latency_sum_ns == 345000);
  CHECK(old_back.containers[0].cpu_ns == 5000000777);
}

kj::Array<kj::byte> pointerDeltaOf(kj::ArrayPtr<const kj::byte> base,
                                   kj::ArrayPtr<const kj::byte> frame) {
  kj::Array<kj::byte> out;
  KJ_IF_MAYBE (d, encodePointerDelta(base, frame)) {
    out = kj::mv(*d);
  }
  return out;
}

TEST_CASE(
    "a pointer-predicted delta expands to exactly the frame's bytes and, when processes come "
    "and go, is smaller than the byte delta") {
  Snapshot base;
  fillHost(base, 10);
  Snapshot next;
  fillHost(next, 11);
  next.processes.erase(101);
  ProcessStats& fresh = next.process(1120);  // appeared, sorted after the others
  fresh.comm = "newcomer";
  fresh.cmdline = "/usr/bin/newcomer --with a fairly long command line";
  ProcessStats& early = next.process(50);  // appeared first in pid order: everything moves
  early.comm = "early";
  early.cmdline = "/usr/bin/early";
  next.histograms.push_back(HistogramSample{"vigil_a_first", {{"pid", "50"}}, 1000, {1, 2}, 3, 4});
  auto ev = next.newEvent();
  ev.setPid(50);
  ev.initExec().setFilename("/usr/bin/early");

  auto base_packed = packedOf(base);
  auto next_packed = packedOf(next);
  auto delta = pointerDeltaOf(base_packed, next_packed);
  REQUIRE(delta.size() > 0);
  auto expanded = expandPointerDelta(base_packed, delta);
  REQUIRE(expanded.ok());
  REQUIRE(sameBytes(*expanded, next_packed));
  auto decoded = decodeFrame(*expanded, wire::Encoding::PACKED);
  REQUIRE(decoded.ok());
  Snapshot back;
  REQUIRE(fromWire((*decoded)->frame(), back).ok());
  CHECK(back.processes.size() == 41);
  CHECK(back.processes[50].cmdline == "/usr/bin/early");
  CHECK(back.processes[1120].comm == "newcomer");
  CHECK(back.histograms[0].name == "vigil_a_first");  // (name, labels) order on the wire
  CHECK(encodeDelta(base_packed, next_packed).size() > delta.size());

  // Against itself, and from an empty frame.
  auto same = pointerDeltaOf(next_packed, next_packed);
  auto same_back = expandPointerDelta(next_packed, same);
  REQUIRE(same_back.ok());
  CHECK(sameBytes(*same_back, next_packed));
  Snapshot empty;
  auto empty_packed = packedOf(empty);
  auto grown = expandPointerDelta(empty_packed, pointerDeltaOf(empty_packed, next_packed));
  REQUIRE(grown.ok());
  CHECK(sameBytes(*grown, next_packed));
}

TEST_CASE(
    "a pointer delta against the wrong base, garbage, or words that are not a message is "
    "refused; a multi-segment frame gets a byte delta instead") {
  Snapshot a;
  fillHost(a, 10);
  Snapshot b;
  fillHost(b, 11);
  Snapshot other;
  fillHost(other, 50);
  other.process(7).cmdline = "x";
  auto pa = packedOf(a);
  auto pb = packedOf(b);
  auto po = packedOf(other);
  auto delta = pointerDeltaOf(pa, pb);
  REQUIRE(delta.size() > 0);

  CHECK_FALSE(expandPointerDelta(po, delta).ok());
  kj::byte garbage[64];
  for (size_t i = 0; i < sizeof(garbage); ++i) {
    garbage[i] = static_cast<kj::byte>(i * 37 + 11);
  }
  CHECK_FALSE(expandPointerDelta(pa, kj::arrayPtr(garbage, sizeof(garbage))).ok());
  auto bad_base = expandPointerDelta(kj::arrayPtr(garbage, sizeof(garbage)), delta);
  REQUIRE_FALSE(bad_base.ok());
  CHECK(std::string(bad_base.status().message()).find("base frame") != std::string::npos);

  // A self-contained zstd frame (it ignores the prefix) whose content is not whole words, and
  // one that is words but whose root is a far pointer: both refused, naming the problem.
  kj::byte odd[13] = {1, 2, 3};
  auto odd_r = expandPointerDelta(pa, compressPacked(kj::arrayPtr(odd, sizeof(odd))));
  REQUIRE_FALSE(odd_r.ok());
  CHECK(std::string(odd_r.status().message()).find("whole words") != std::string::npos);
  uint64_t far[2] = {uint64_t{1} << 32, 2 | (5 << 3)};  // one segment of one word: far pointer
  auto far_r = expandPointerDelta(
      pa, compressPacked(kj::arrayPtr(reinterpret_cast<const kj::byte*>(far), sizeof(far))));
  REQUIRE_FALSE(far_r.ok());
  CHECK(std::string(far_r.status().message()).find("do not walk") != std::string::npos);
  // A struct pointer past the end of the segment.
  uint64_t oob[2] = {uint64_t{1} << 32, (uint64_t{4} << 32) | (100 << 2)};
  CHECK_FALSE(expandPointerDelta(pa, compressPacked(kj::arrayPtr(
                                         reinterpret_cast<const kj::byte*>(oob), sizeof(oob))))
                  .ok());

  // A root that is a composite list of 2^29 empty elements walks at once (nothing to visit);
  // the words are a valid message, but not a Frame, which decodeFrame then refuses.
  uint64_t empties[3] = {uint64_t{2} << 32, 1 | (uint64_t{7} << 32),
                         ((uint64_t{1} << 29) - 1) << 2};
  auto empties_r = expandPointerDelta(
      pa,
      compressPacked(kj::arrayPtr(reinterpret_cast<const kj::byte*>(empties), sizeof(empties))));
  REQUIRE(empties_r.ok());
  CHECK_FALSE(decodeFrame(*empties_r, wire::Encoding::PACKED).ok());

  // Packed from a message of several segments (as older agents spooled frames): no pointer
  // delta; the byte delta still works.
  auto multi = [](const Snapshot& s) {
    capnp::MallocMessageBuilder message(16, capnp::AllocationStrategy::FIXED_SIZE);
    toWire(s, message);
    REQUIRE(message.getSegmentsForOutput().size() > 1);
    kj::VectorOutputStream out;
    capnp::writePackedMessage(out, message);
    return kj::heapArray<kj::byte>(out.getArray());
  };
  auto ma = multi(a);
  auto mb = multi(b);
  CHECK(encodePointerDelta(ma, mb) == nullptr);
  CHECK(encodePointerDelta(pa, mb) == nullptr);
  auto byte_back = expandDelta(ma, encodeDelta(ma, mb));
  REQUIRE(byte_back.ok());
  CHECK(sameBytes(*byte_back, mb));
}

TEST_CASE(
    "a chain of pointer deltas expands against kept pointer-predicted words to the same bytes "
    "as against packed bases, and refuses what expandPointerDelta refuses with the same texts") {
  std::vector<kj::Array<kj::byte>> frames;
  for (uint64_t seq = 10; seq < 14; ++seq) {
    Snapshot s;
    fillHost(s, seq);
    if (seq == 12) {
      s.processes.erase(104);  // a process exits: every pointer after it moves
      s.process(90).comm = "early";
    }
    frames.push_back(packedOf(s));
  }
  auto first = pointerPredictedWords(frames[0]);
  REQUIRE(first.ok());
  // The predicted words hold the frame: back to exactly its packed bytes.
  auto again = packedFromPredicted(*first);
  REQUIRE(again.ok());
  CHECK(sameBytes(*again, frames[0]));
  kj::Array<uint64_t> base = kj::mv(*first);
  for (size_t i = 1; i < frames.size(); ++i) {
    auto delta = pointerDeltaOf(frames[i - 1], frames[i]);
    REQUIRE(delta.size() > 0);
    auto by_words = expandPointerDeltaWords(base, delta, /*keep_predicted=*/true);
    REQUIRE(by_words.ok());
    CHECK(sameBytes(by_words->packed, frames[i]));
    auto by_packed = expandPointerDelta(frames[i - 1], delta);
    REQUIRE(by_packed.ok());
    CHECK(sameBytes(*by_packed, frames[i]));
    // The kept words are the next base, and equal what the frame's bytes predict.
    auto expected = pointerPredictedWords(frames[i]);
    REQUIRE(expected.ok());
    REQUIRE(by_words->predicted.size() == expected->size());
    CHECK(memcmp(by_words->predicted.begin(), expected->begin(), expected->size() * 8) == 0);
    base = kj::mv(by_words->predicted);
  }
  auto without = expandPointerDeltaWords(base, pointerDeltaOf(frames[3], frames[3]), false);
  REQUIRE(without.ok());
  CHECK(without->predicted.size() == 0);
  CHECK(sameBytes(without->packed, frames[3]));

  // Refusals: a delta against another base (the checksum), garbage, content that is not whole
  // words, words that do not walk; each with the text expandPointerDelta gives.
  auto delta = pointerDeltaOf(frames[2], frames[3]);
  auto wrong = expandPointerDeltaWords(base, delta, true);
  REQUIRE_FALSE(wrong.ok());
  CHECK(std::string(wrong.status().message()).find("does not expand against its base") !=
        std::string::npos);
  kj::byte garbage[64];
  for (size_t i = 0; i < sizeof(garbage); ++i) {
    garbage[i] = static_cast<kj::byte>(i * 37 + 11);
  }
  auto g = expandPointerDeltaWords(base, kj::arrayPtr(garbage, sizeof(garbage)), true);
  REQUIRE_FALSE(g.ok());
  CHECK(std::string(g.status().message()) == "delta payload is not zstd data");
  kj::byte odd[13] = {1, 2, 3};
  auto o = expandPointerDeltaWords(base, compressPacked(kj::arrayPtr(odd, sizeof(odd))), true);
  REQUIRE_FALSE(o.ok());
  CHECK(std::string(o.status().message()).find("whole words") != std::string::npos);
  uint64_t far[2] = {uint64_t{1} << 32, 2 | (5 << 3)};
  auto f = expandPointerDeltaWords(
      base, compressPacked(kj::arrayPtr(reinterpret_cast<const kj::byte*>(far), sizeof(far))),
      true);
  REQUIRE_FALSE(f.ok());
  CHECK(std::string(f.status().message()).find("do not walk") != std::string::npos);
  CHECK_FALSE(packedFromPredicted(kj::arrayPtr(far, 2)).ok());
  CHECK_FALSE(pointerPredictedWords(kj::arrayPtr(garbage, sizeof(garbage))).ok());
}

TEST_CASE("compression and decompression give the same bytes when called again and again") {
  // The zstd contexts are reused per thread: a prefix or parameter left from one call must not
  // change the next one.
  Snapshot a;
  fillHost(a, 10);
  Snapshot b;
  fillHost(b, 11);
  auto pa = packedOf(a);
  auto pb = packedOf(b);
  auto plain = compressPacked(pb);
  auto delta = encodeDelta(pa, pb);
  for (int round = 0; round < 3; ++round) {
    CHECK(sameBytes(compressPacked(pb), plain));
    CHECK(sameBytes(encodeDelta(pa, pb), delta));
    auto expanded = expandDelta(pa, delta);
    REQUIRE(expanded.ok());
    CHECK(sameBytes(*expanded, pb));
    // A self-contained frame decompresses right after a delta that used a prefix.
    auto back = packedBytes(plain, wire::Encoding::PACKED_ZSTD);
    REQUIRE(back.ok());
    CHECK(sameBytes(*back, pb));
  }
  // A failed expansion leaves nothing behind for the next call.
  CHECK_FALSE(expandDelta(pb, delta).ok());
  auto after = expandDelta(pa, delta);
  REQUIRE(after.ok());
  CHECK(sameBytes(*after, pb));
}

}  // namespace
}  // namespace vigil

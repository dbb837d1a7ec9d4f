#include "aggregator/series_store.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace vigil::aggregator {
namespace {

uint64_t bitsOf(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

// Encodes the samples in chunks of XorChunk::kMaxSamples and checks every bit comes back.
void roundTrip(const std::vector<Sample>& in) {
  std::vector<XorChunk> chunks;
  for (const Sample& s : in) {
    if (chunks.empty() || chunks.back().full()) {
      chunks.emplace_back();
    }
    chunks.back().append(s.timestamp_ms, s.value);
  }
  std::vector<Sample> out;
  for (const XorChunk& c : chunks) {
    c.decode(out);
  }
  REQUIRE(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    INFO("sample " << i);
    CHECK(out[i].timestamp_ms == in[i].timestamp_ms);
    CHECK(bitsOf(out[i].value) == bitsOf(in[i].value));
  }
}

TEST_CASE("chunks round-trip regular, irregular and extreme samples bit for bit") {
  std::mt19937_64 rng(42);
  std::vector<Sample> regular;
  int64_t t = 1700000000000;
  double v = 0;
  for (int i = 0; i < 1000; ++i) {
    t += 1000;
    v += static_cast<double>(rng() % 1000) / 7.0;
    regular.push_back({t, v});
  }
  roundTrip(regular);

  std::vector<Sample> irregular;
  t = -5000;  // negative timestamps are still valid int64 ms
  for (int i = 0; i < 1000; ++i) {
    // Deltas from 1 ms to many days, hitting every delta-of-delta bucket and the 64-bit escape.
    static const int64_t kDeltas[] = {1,    2,    999,   1000,   1001,
                                      8191, 8192, 70000, 600000, 86400000LL * 30};
    t += kDeltas[rng() % (sizeof(kDeltas) / sizeof(kDeltas[0]))];
    double x;
    uint64_t raw = rng();
    std::memcpy(&x, &raw, sizeof(x));  // random bit patterns, including NaNs and denormals
    irregular.push_back({t, x});
  }
  roundTrip(irregular);

  const double kInf = std::numeric_limits<double>::infinity();
  std::vector<Sample> edge = {
      {0, 0.0},
      {1, -0.0},
      {2, kInf},
      {3, -kInf},
      {4, std::numeric_limits<double>::quiet_NaN()},
      {5, staleNaN()},
      {6, std::numeric_limits<double>::max()},
      {7, std::numeric_limits<double>::denorm_min()},
      {8, std::numeric_limits<double>::lowest()},
      {9, 1.0},
      {10, 1.0},
      {std::numeric_limits<int64_t>::max() / 2, 3.5},
      {std::numeric_limits<int64_t>::max() - 1, staleNaN()},
  };
  roundTrip(edge);
  roundTrip({{123, 4.5}});
}

TEST_CASE("the stale marker keeps its exact NaN payload") {
  XorChunk c;
  c.append(1000, 1.5);
  c.append(2000, staleNaN());
  c.append(3000, 2.5);
  std::vector<Sample> out;
  c.decode(out);
  REQUIRE(out.size() == 3);
  CHECK(isStaleNaN(out[1].value));
  CHECK(bitsOf(out[1].value) == 0x7ff0000000000002ULL);
  CHECK_FALSE(isStaleNaN(std::numeric_limits<double>::quiet_NaN()));
}

TEST_CASE("a chunk decodes only the requested time range") {
  XorChunk c;
  for (int i = 1; i <= 10; ++i) {
    c.append(i * 1000, i);
  }
  std::vector<Sample> out;
  c.decode(out, 3000, 5500);
  REQUIRE(out.size() == 3);
  CHECK(out[0].timestamp_ms == 3000);
  CHECK(out[2].value == 5);
}

LabelSet ls(std::initializer_list<std::pair<std::string, std::string>> l) {
  LabelSet out(l.begin(), l.end());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("selectors use the label index and treat absent labels as empty") {
  SeriesStore store;
  int64_t t = unixMillis();
  REQUIRE(store.append("a", ls({{"__name__", "cpu"}, {"node", "n1"}, {"mode", "user"}}), t, 1) ==
          SeriesStore::AppendResult::kOk);
  store.append("a", ls({{"__name__", "cpu"}, {"node", "n1"}, {"mode", "system"}}), t, 2);
  store.append("b", ls({{"__name__", "cpu"}, {"node", "n2"}, {"mode", "user"}}), t, 3);
  store.append("b", ls({{"__name__", "cpu"}, {"node", "n2"}}), t, 4);
  store.append("b", ls({{"__name__", "mem"}, {"node", "n2"}}), t, 5);

  auto values = [&](const std::string& text) {
    auto sel = parseSelector(text);
    REQUIRE(sel.ok());
    std::vector<double> out;
    for (const Series& s : store.select(*sel, t - 1000, t + 1000)) {
      REQUIRE(s.samples.size() == 1);
      out.push_back(s.samples[0].value);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  CHECK(values("cpu") == std::vector<double>{1, 2, 3, 4});
  CHECK(values("cpu{node=\"n1\"}") == std::vector<double>{1, 2});
  CHECK(values("cpu{mode=\"user\"}") == std::vector<double>{1, 3});
  CHECK(values("cpu{mode!=\"user\"}") == std::vector<double>{2, 4});
  CHECK(values("cpu{mode=\"\"}") == std::vector<double>{4});
  CHECK(values("cpu{mode=~\"sys.*\",node=~\"n.\"}") == std::vector<double>{2});
  CHECK(values("cpu{node!~\"n1\"}") == std::vector<double>{3, 4});
  CHECK(values("cpu{node=\"n3\"}").empty());
  CHECK(values("disk").empty());
  CHECK(values("mem") == std::vector<double>{5});
  CHECK(store.hasMetric("cpu"));
  CHECK_FALSE(store.hasMetric("disk"));
  // Time range: nothing before or after.
  auto sel = parseSelector("cpu");
  CHECK(store.select(*sel, t + 1, t + 5000).empty());
  CHECK(store.seriesLabels(*sel, t, t).size() == 4);
}

TEST_CASE("out-of-order samples are refused and counted") {
  SeriesStore store;
  int64_t t = unixMillis();
  LabelSet l = ls({{"__name__", "x"}});
  CHECK(store.append("a", l, t, 1) == SeriesStore::AppendResult::kOk);
  CHECK(store.append("a", l, t, 2) == SeriesStore::AppendResult::kOutOfOrder);
  CHECK(store.append("a", l, t - 1, 2) == SeriesStore::AppendResult::kOutOfOrder);
  CHECK(store.append("a", l, t + 1, 3) == SeriesStore::AppendResult::kOk);
  CHECK(store.stats().samples_out_of_order == 2);
  CHECK(store.numSamples() == 2);
}

TEST_CASE("the per-agent series cap drops new series, counts their samples and spares others") {
  SeriesStoreOptions o;
  o.max_series_per_agent = 3;
  SeriesStore store(o);
  int64_t t = unixMillis();
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 5; ++i) {
      store.append("a", ls({{"__name__", "x"}, {"i", std::to_string(i)}}), t + round, i);
    }
    store.append("b", ls({{"__name__", "x"}, {"i", "0"}, {"node", "b"}}), t + round, 0);
  }
  CHECK(store.numSeries() == 4);
  auto st = store.stats();
  CHECK(st.dropped_by_agent["a"] == 4);  // series 3 and 4, two rounds each
  CHECK(st.dropped_by_agent.count("b") == 0);
  // Existing series keep accepting samples.
  CHECK(store.numSamples() == 8);
  PromWriter w;
  store.writeMetrics(w);
  CHECK(w.finish().find("vigil_aggregator_series_dropped_total{agent_id=\"a\"} 4") !=
        std::string::npos);
}

TEST_CASE("retention drops old chunks and empty series, and frees their cap slots") {
  SeriesStoreOptions o;
  o.retention_ms = 10 * 60 * 1000;
  o.max_series_per_agent = 1;
  SeriesStore store(o);
  int64_t now = unixMillis();
  LabelSet old_series = ls({{"__name__", "old"}});
  for (int i = 0; i < 300; ++i) {
    store.append("a", old_series, now - 9 * 60 * 1000 + i * 1000, i);
  }
  CHECK(store.numSamples() == 300);
  // Cutoff at now - 7 min: chunk 0 (120 samples, ending at now - 7 min - 1 s) goes.
  store.enforceRetention(now + 3 * 60 * 1000);
  CHECK(store.numSamples() == 180);
  store.enforceRetention(now + 30 * 60 * 1000);
  CHECK(store.numSeries() == 0);
  CHECK_FALSE(store.hasMetric("old"));
  CHECK(store.append("a", ls({{"__name__", "new"}}), now, 1) == SeriesStore::AppendResult::kOk);
}

TEST_CASE("a frame becomes one sample per /metrics series at the frame's end time") {
  SeriesStore store;
  Snapshot s;
  s.agent.agent_id = "agent-1";
  s.agent.node_name = "node-1";
  s.end_unix_ns = unixMillis() * 1000000;
  s.interval_ms = 1000;
  ProcessStats& p = s.process(42);
  p.comm = "burner";
  p.cpu_ns = 2500000000;
  p.voluntary_switches = 3;
  s.host.push_back(MetricSample{"vigil_host_load1", {}, 0.5, false});
  store.appendFrame(s);
  auto sel = parseSelector("vigil_process_cpu_seconds_total{comm=\"burner\"}");
  auto got = store.select(*sel, 0, INT64_MAX);
  REQUIRE(got.size() == 1);
  CHECK(got[0].labels == ls({{"__name__", "vigil_process_cpu_seconds_total"},
                             {"comm", "burner"},
                             {"node", "node-1"},
                             {"pid", "42"}}));
  REQUIRE(got[0].samples.size() == 1);
  CHECK(got[0].samples[0].timestamp_ms == s.end_unix_ns / 1000000);
  CHECK(got[0].samples[0].value == 2.5);
  CHECK(store.hasMetric("vigil_host_load1"));
  CHECK(store.hasMetric("vigil_collection_interval_seconds"));
  // An old frame (before the retention window) is not stored.
  Snapshot old;
  old.agent.agent_id = "agent-1";
  old.end_unix_ns = (unixMillis() - 3 * 3600 * 1000) * 1000000;
  size_t before = store.numSamples();
  store.appendFrame(old);
  CHECK(store.numSamples() == before);
  CHECK(store.stats().frames_too_old == 1);
}

TEST_CASE("a series that leaves its agent's frames gets a stale marker that select() hides") {
  SeriesStore store;
  int64_t t = unixMillis() - 10000;
  auto frameAt = [&](int64_t ms, std::initializer_list<uint32_t> pids) {
    Snapshot s;
    s.agent.agent_id = "a";
    s.agent.node_name = "a";
    s.end_unix_ns = ms * 1000000;
    for (uint32_t pid : pids) {
      s.process(pid).comm = "p";
    }
    store.appendFrame(s);
  };
  frameAt(t, {1, 2});
  frameAt(t + 1000, {1});
  frameAt(t + 2000, {1});
  CHECK(store.stats().stale_markers == 3);  // pid 2: cpu seconds + two context-switch series
  auto sel = parseSelector("vigil_process_cpu_seconds_total{pid=\"2\"}");
  auto plain = store.select(*sel, 0, INT64_MAX);
  REQUIRE(plain.size() == 1);
  CHECK(plain[0].samples.size() == 1);
  auto raw = store.selectWithStaleMarkers(*sel, 0, INT64_MAX);
  REQUIRE(raw.size() == 1);
  REQUIRE(raw[0].samples.size() == 2);
  CHECK(raw[0].samples[1].timestamp_ms == t + 1000);
  CHECK(isStaleNaN(raw[0].samples[1].value));
}

TEST_CASE("frame samples with invalid names are left out and bad UTF-8 is repaired, counted") {
  SeriesStore store;
  Snapshot s;
  s.agent.agent_id = "agent-1";
  s.agent.node_name = "node-1";
  s.end_unix_ns = unixMillis() * 1000000;
  ProcessStats& p = s.process(7);
  p.comm = "bad\xff\xfe";
  p.cpu_ns = 1000000000;
  s.host.push_back(MetricSample{"vigil_host_ok", {{"bad-label", "x"}}, 1, false});
  s.host.push_back(MetricSample{"0bad metric", {}, 1, false});
  store.appendFrame(s);
  CHECK_FALSE(store.hasMetric("vigil_host_ok"));
  CHECK_FALSE(store.hasMetric("0bad metric"));
  auto sel = parseSelector("vigil_process_cpu_seconds_total{pid=\"7\"}");
  auto got = store.select(*sel, 0, INT64_MAX);
  REQUIRE(got.size() == 1);
  CHECK(got[0].labels[1] ==
        std::pair<std::string, std::string>("comm", "bad\xef\xbf\xbd\xef\xbf\xbd"));
  auto st = store.stats();
  CHECK(st.invalid.invalid_names == 2);
  CHECK(st.invalid.invalid_utf8 == 3);  // cpu seconds and the two context-switch series
}

// A unit benchmark, not a timed assertion: prints ingest rate and bytes per sample for a
// realistic mix at a 1 s interval with a few ms of timestamp jitter: a third float CPU-seconds
// counters (nanosecond resolution, so full mantissas), a third integer counters, a third constant
// gauges. Run with: series_store_test "[bench]"
TEST_CASE("benchmark: ingest rate and memory per sample", "[.][bench]") {
  SeriesStore store;
  constexpr int kSeries = 5000;
  constexpr int kSteps = 240;
  std::vector<LabelSet> labels;
  for (int i = 0; i < kSeries; ++i) {
    labels.push_back(ls({{"__name__", "vigil_process_cpu_seconds_total"},
                         {"comm", "proc" + std::to_string(i % 97)},
                         {"node", "node-1"},
                         {"pid", std::to_string(1000 + i)}}));
  }
  std::mt19937_64 rng(1);
  std::vector<double> v(kSeries, 0);
  int64_t t0 = unixMillis() - kSteps * 1000;
  auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kSeries; ++i) {
      if (i % 3 == 0) {
        v[i] += static_cast<double>(rng() % 20000000) / 1e9;
      } else if (i % 3 == 1) {
        v[i] += static_cast<double>(rng() % 50);
      }
      store.append("a", labels[i], t0 + step * 1000 + static_cast<int64_t>(rng() % 3), v[i]);
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double n = static_cast<double>(kSeries) * kSteps;
  WARN("appended " << n << " samples in " << secs << " s = " << n / secs << " samples/s; "
                   << static_cast<double>(store.chunkBytes()) / n << " chunk bytes/sample, "
                   << static_cast<double>(store.memoryBytes()) / n << " total bytes/sample");
  auto sel = parseSelector("vigil_process_cpu_seconds_total");
  start = std::chrono::steady_clock::now();
  auto all = store.select(*sel, 0, INT64_MAX);
  secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN("selected " << all.size() << " series in " << secs << " s = " << n / secs
                   << " samples/s decoded");
  CHECK(all.size() == kSeries);
}

}  // namespace
}  // namespace vigil::aggregator

namespace vigil::aggregator {
namespace {

// Unit benchmark of the whole ingest path of the series store (render a frame through the
// /metrics renderer, then append): frames of 300 processes at a 1 s interval.
TEST_CASE("benchmark: appendFrame with 300 processes", "[.][bench]") {
  SeriesStore store;
  constexpr int kFrames = 200;
  int64_t t0 = unixMillis() - kFrames * 1000;
  size_t samples = 0;
  double secs = 0;
  for (int f = 0; f < kFrames; ++f) {
    Snapshot s;
    s.agent.agent_id = "bench";
    s.agent.node_name = "bench";
    s.end_unix_ns = (t0 + f * 1000) * 1000000;
    s.interval_ms = 1000;
    for (uint32_t pid = 1; pid <= 300; ++pid) {
      ProcessStats& p = s.process(pid);
      p.comm = "proc" + std::to_string(pid % 40);
      p.cpu_ns = static_cast<uint64_t>(f) * pid * 1000003;
      p.voluntary_switches = static_cast<uint64_t>(f) * 3;
      p.involuntary_switches = static_cast<uint64_t>(f);
      p.syscalls = static_cast<uint64_t>(f) * 100 + pid;
    }
    auto start = std::chrono::steady_clock::now();
    store.appendFrame(s);
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  samples = store.stats().samples_appended;
  WARN("appendFrame: " << kFrames / secs << " frames/s, " << samples / secs
                       << " samples/s (incl. rendering); "
                       << static_cast<double>(store.chunkBytes()) / samples
                       << " chunk bytes/sample");
  CHECK(samples > 0);
}

}  // namespace
}  // namespace vigil::aggregator

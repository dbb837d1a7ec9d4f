// Unit tests of rule evaluation and the alert state machine. The series come from a test
// fixture (FixtureSource below: a plain in-memory SeriesSource), not from the real store.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "aggregator/alerting/engine.h"
#include "aggregator/alerting/recent_series.h"
#include "aggregator/alerting/rules.h"
#include "tests/support/test_support.h"

namespace vigil::aggregator::alerting {
namespace {

// TEST FIXTURE: a SeriesSource over hand-written series.
class FixtureSource final : public SeriesSource {
 public:
  void add(const std::string& name, LabelSet labels, int64_t t, double v) {
    labels.emplace_back("__name__", name);
    std::sort(labels.begin(), labels.end());
    for (Series& s : series_) {
      if (s.labels == labels) {
        s.samples.push_back({t, v});
        return;
      }
    }
    series_.push_back({labels, {{t, v}}});
  }
  std::vector<Series> select(const Selector& sel, int64_t from, int64_t to) const override {
    std::vector<Series> out;
    for (const Series& s : series_) {
      std::string name;
      bool ok = true;
      for (const auto& kv : s.labels) {
        if (kv.first == "__name__") {
          name = kv.second;
        }
      }
      for (const LabelMatcher& m : sel.matchers) {
        std::string v;
        for (const auto& kv : s.labels) {
          if (kv.first == m.name) {
            v = kv.second;
          }
        }
        ok = ok && m.matches(v);
      }
      if (name != sel.metric || !ok) {
        continue;
      }
      Series c{s.labels, {}};
      for (const Sample& x : s.samples) {
        if (x.timestamp_ms >= from && x.timestamp_ms <= to) {
          c.samples.push_back(x);
        }
      }
      if (!c.samples.empty()) {
        out.push_back(c);
      }
    }
    return out;
  }
  bool hasMetric(const std::string& m) const override {
    return std::any_of(series_.begin(), series_.end(), [&](const Series& s) {
      return std::find(s.labels.begin(), s.labels.end(),
                       std::pair<std::string, std::string>("__name__", m)) != s.labels.end();
    });
  }

 private:
  std::vector<Series> series_;
};

RuleSet mustParse(const std::string& yaml, const SeriesSource* src = nullptr) {
  ParseOptions o;
  o.file_name = "rules.yaml";
  o.source = src;
  o.check_metrics = src != nullptr;  // fixture metrics are not vigil families
  auto r = parseRules(yaml, o);
  INFO(r.status().message());
  REQUIRE(r.ok());
  return *r;
}

std::string stateOf(const AlertEngine& e) {
  auto a = e.alerts();
  if (a.empty()) {
    return "none";
  }
  return alertStateName(a[0].state);
}

TEST_CASE("the seed's {metric, threshold, level} shape is one rule") {
  RuleSet rs = mustParse("rules:\n  - {metric: cpu, threshold: 90, level: warning}\n");
  REQUIRE(rs.rules.size() == 1);
  const Rule& r = rs.rules[0];
  CHECK(r.name == "cpu_90");
  CHECK(r.severity == "warning");
  CHECK(r.selector.metric == "vigil_process_cpu_seconds_total");
  CHECK(r.func == Func::kRate);
  CHECK(r.aggregate);
  CHECK(r.sum_by == std::vector<std::string>{"node"});
  CHECK(r.scale == 100);
  CHECK(r.threshold == 90);

  // Two processes on node a using 0.6 and 0.4 CPU: 100 % of one CPU.
  FixtureSource src;
  for (int t = 0; t <= 60; t += 10) {
    src.add("vigil_process_cpu_seconds_total", {{"node", "a"}, {"pid", "1"}}, t * 1000, t * 0.6);
    src.add("vigil_process_cpu_seconds_total", {{"node", "a"}, {"pid", "2"}}, t * 1000, t * 0.4);
  }
  auto inst = AlertEngine::evaluateRule(r, src, {}, 60000);
  REQUIRE(inst.size() == 1);
  CHECK(inst[0].labels == LabelSet{{"node", "a"}});
  CHECK(inst[0].value == Approx(100.0));
  CHECK(inst[0].fire);
}

TEST_CASE("threshold with for, hysteresis and keep_firing_for") {
  RuleSet rs = mustParse(R"(rules:
  - name: Hot
    metric: temp
    function: last
    threshold: 90
    clear: 70
    for: 10s
    keep_firing_for: 5s
    severity: critical
    annotations:
      summary: "{{ $labels.host }} is at {{ $value }}"
)",
                         nullptr);
  auto engine = *AlertEngine::create("");
  engine->setRules(rs, 0);
  FixtureSource src;
  int64_t t = 0;
  auto step = [&](double v) {
    t += 1000;
    src.add("temp", {{"host", "h1"}}, t, v);
    engine->evaluate(src, {}, t);
    return stateOf(*engine);
  };
  CHECK(step(50) == "none");
  CHECK(step(95) == "pending");
  for (int i = 0; i < 9; ++i) {
    CHECK(step(95) == "pending");
  }
  CHECK(step(95) == "firing");  // 10 s after it first held
  auto a = engine->alerts()[0];
  CHECK(a.annotations["summary"] == "h1 is at 95");
  CHECK(a.severity == "critical");
  // Below the threshold but above the clear level: still firing (hysteresis).
  for (int i = 0; i < 20; ++i) {
    CHECK(step(80) == "firing");
  }
  // Below clear: keep_firing_for (5 s) keeps it firing, then it resolves.
  for (int i = 0; i < 4; ++i) {
    CHECK(step(60) == "firing");
  }
  CHECK(step(60) == "resolved");
  // A pending alert that drops below the threshold before `for` is forgotten.
  CHECK(step(95) == "pending");
  CHECK(step(89) == "none");  // the new occurrence replaced the resolved one, then ended
  CHECK(engine->alerts().empty());
}

TEST_CASE("rate and quantile-from-histogram windows") {
  FixtureSource src;
  for (int t = 0; t <= 30; ++t) {
    src.add("reqs_total", {}, t * 1000, t * 5.0);
  }
  RuleSet rs = mustParse(R"(rules:
  - {name: R, metric: reqs_total, function: rate, window: 10s, threshold: 4}
  - {name: Q, metric: lat, function: quantile, quantile: 0.5, window: 10s, threshold: 0.1}
  - {name: A, metric: reqs_total, function: avg, window: 10s, threshold: 0}
  - {name: M, metric: reqs_total, function: max, window: 10s, threshold: 0}
  - {name: N, metric: reqs_total, function: min, window: 10s, threshold: 0}
)",
                         nullptr);
  auto r = AlertEngine::evaluateRule(rs.rules[0], src, {}, 30000);
  REQUIRE(r.size() == 1);
  CHECK(r[0].value == Approx(5.0));
  CHECK(AlertEngine::evaluateRule(rs.rules[2], src, {}, 30000)[0].value == Approx(125.0));
  CHECK(AlertEngine::evaluateRule(rs.rules[3], src, {}, 30000)[0].value == Approx(150.0));
  CHECK(AlertEngine::evaluateRule(rs.rules[4], src, {}, 30000)[0].value == Approx(100.0));
  // Histogram: in the window, 10 observations <= 0.1 s, 10 more <= 0.2 s, none above.
  for (int t : {0, 10}) {
    int k = t / 10;
    src.add("lat_bucket", {{"le", "0.1"}}, t * 1000, 10.0 * k);
    src.add("lat_bucket", {{"le", "0.2"}}, t * 1000, 20.0 * k);
    src.add("lat_bucket", {{"le", "+Inf"}}, t * 1000, 20.0 * k);
  }
  auto q = AlertEngine::evaluateRule(rs.rules[1], src, {}, 10000);
  REQUIRE(q.size() == 1);
  CHECK(q[0].value == Approx(0.1));  // rank 10 of 20 is the top of the first bucket
  rs.rules[1].quantile = 0.75;
  CHECK(AlertEngine::evaluateRule(rs.rules[1], src, {}, 10000)[0].value == Approx(0.15));
}

TEST_CASE("anomaly needs minimum history, then fires on a step and clears") {
  RuleSet rs = mustParse(R"(rules:
  - name: Step
    kind: anomaly
    metric: load
    window: 5s
    baseline: 60s
    min_history: 30s
    band: 4
    clear_band: 2
    min_stddev: 0.5
)",
                         nullptr);
  auto engine = *AlertEngine::create("");
  engine->setRules(rs, 0);
  FixtureSource src;
  // Cold start: a jump after 10 s of history does not fire.
  for (int t = 1; t <= 10; ++t) {
    src.add("load", {}, t * 1000, 10 + (t % 2));
  }
  src.add("load", {}, 11000, 50);
  engine->evaluate(src, {}, 11000);
  CHECK(stateOf(*engine) == "none");
  FixtureSource src2;
  for (int t = 1; t <= 60; ++t) {
    src2.add("load", {}, t * 1000, 10 + (t % 2));
  }
  engine->evaluate(src2, {}, 60000);
  CHECK(stateOf(*engine) == "none");
  for (int t = 61; t <= 63; ++t) {
    src2.add("load", {}, t * 1000, 30);
  }
  engine->evaluate(src2, {}, 63000);
  CHECK(stateOf(*engine) == "firing");  // for: 0
  CHECK(engine->alerts()[0].value > 4);
  for (int t = 64; t <= 75; ++t) {
    src2.add("load", {}, t * 1000, 10.5);
  }
  engine->evaluate(src2, {}, 75000);
  CHECK(stateOf(*engine) == "resolved");

  rs.rules[0].method = AnomalyMethod::kEwma;
  auto ewma = AlertEngine::evaluateRule(rs.rules[0], src2, {}, 63000);
  REQUIRE(ewma.size() == 1);
  CHECK(ewma[0].fire);
}

TEST_CASE("forecast fires when the linear fit crosses the threshold within the horizon") {
  RuleSet rs = mustParse(R"(rules:
  - name: DiskFull
    kind: forecast
    metric: free_bytes
    window: 60s
    min_history: 20s
    horizon: 4h
    op: "<"
    threshold: 0
)",
                         nullptr);
  FixtureSource src;
  // 1 GB free, losing 50 kB/s: empty in ~5.5 h -> no alert at 4 h.
  for (int t = 0; t <= 60; t += 5) {
    src.add("free_bytes", {{"mountpoint", "/"}}, t * 1000, 1e9 - 5e4 * t);
  }
  auto i = AlertEngine::evaluateRule(rs.rules[0], src, {}, 60000);
  REQUIRE(i.size() == 1);
  CHECK(i[0].value == Approx(1e9 - 5e4 * (60 + 4 * 3600)));
  CHECK_FALSE(i[0].fire);
  // Losing 100 kB/s: empty in ~2.8 h -> fires.
  FixtureSource fast;
  for (int t = 0; t <= 60; t += 5) {
    fast.add("free_bytes", {{"mountpoint", "/"}}, t * 1000, 1e9 - 1e5 * t);
  }
  auto f = AlertEngine::evaluateRule(rs.rules[0], fast, {}, 60000);
  REQUIRE(f.size() == 1);
  CHECK(f[0].fire);
  // Too little history: no verdict.
  CHECK(AlertEngine::evaluateRule(rs.rules[0], fast, {}, 10000).empty());
}

TEST_CASE("absent and agent_offline rules") {
  RuleSet rs = mustParse(R"(rules:
  - {name: Gone, kind: absent, selector: 'hb{job="x"}', window: 10s}
  - {name: Off, kind: agent_offline, offline_after: 30s, severity: critical}
)",
                         nullptr);
  FixtureSource src;
  src.add("hb", {{"job", "x"}}, 1000, 1);
  auto present = AlertEngine::evaluateRule(rs.rules[0], src, {}, 5000);
  REQUIRE(present.size() == 1);
  CHECK_FALSE(present[0].fire);
  auto absent = AlertEngine::evaluateRule(rs.rules[0], src, {}, 20000);
  CHECK(absent[0].fire);
  CHECK(absent[0].labels == LabelSet{{"job", "x"}});

  std::vector<AgentStatus> agents = {
      {"a1", "n1", true, 95000}, {"a2", "n2", false, 99000}, {"a3", "n3", true, 50000}};
  auto off = AlertEngine::evaluateRule(rs.rules[1], src, agents, 100000);
  REQUIRE(off.size() == 3);
  CHECK_FALSE(off[0].fire);
  CHECK(off[1].fire);  // disconnected
  CHECK(off[2].fire);  // silent for 50 s
}

TEST_CASE("a firing alert whose series vanishes is nodata, not resolved") {
  RuleSet rs = mustParse("rules:\n  - {name: T, metric: m, threshold: 1}\n", nullptr);
  auto engine = *AlertEngine::create("");
  engine->setRules(rs, 0);
  FixtureSource src;
  src.add("m", {}, 1000, 5);
  engine->evaluate(src, {}, 1000);
  CHECK(stateOf(*engine) == "firing");
  FixtureSource empty;
  engine->evaluate(empty, {}, 2000);
  CHECK(stateOf(*engine) == "nodata");
  PromWriter w;
  engine->render(w);
  CHECK(w.finish().find("ALERTS{alertname=\"T\",severity=\"warning\",alertstate=\"nodata\"} 1") !=
        std::string::npos);
}

TEST_CASE("alert state survives a restart through the data dir") {
  vigil::testing::TempDir dir;
  std::string db = dir.file("alerts.db");
  RuleSet rs = mustParse("rules:\n  - {name: T, metric: m, threshold: 1, for: 1m}\n", nullptr);
  FixtureSource src;
  src.add("m", {{"x", "1"}}, 1000, 5);
  {
    auto e = *AlertEngine::create(db);
    e->setRules(rs, 0);
    e->evaluate(src, {}, 1000);
    CHECK(stateOf(*e) == "pending");
  }
  auto e = *AlertEngine::create(db);
  REQUIRE(e->alerts().size() == 1);
  CHECK(e->alerts()[0].state == AlertState::kPending);
  CHECK(e->alerts()[0].active_since_ms == 1000);
  e->setRules(rs, 2000);
  src.add("m", {{"x", "1"}}, 61000, 5);
  e->evaluate(src, {}, 61000);  // `for` counted from before the restart
  CHECK(stateOf(*e) == "firing");
}

TEST_CASE("bad rules give file, line, rule name and reason") {
  FixtureSource src;
  src.add("present_metric", {}, 1, 1);
  ParseOptions o;
  o.file_name = "r.yaml";
  o.source = &src;
  auto unknown =
      parseRules("rules:\n  - name: U\n    metric: no_such_metric\n    threshold: 1\n", o);
  REQUIRE_FALSE(unknown.ok());
  CHECK(std::string(unknown.status().message()) ==
        "r.yaml:3: rule 'U': unknown metric 'no_such_metric': not in the series store and not a "
        "vigil metric family (docs/metrics.md)");
  auto regex = parseRules(
      "rules:\n  - name: B\n    metric: present_metric\n    matchers: ['comm=~\"((\"']\n"
      "    threshold: 1\n",
      o);
  REQUIRE_FALSE(regex.ok());
  CHECK(std::string(regex.status().message())
            .rfind("r.yaml:4: rule 'B': bad regex for label 'comm'", 0) == 0);
  auto yaml = parseRules("rules:\n  - name: X\n    threshold: [1\n", o);
  REQUIRE_FALSE(yaml.ok());
  CHECK(std::string(yaml.status().message()).rfind("r.yaml:4:", 0) == 0);
  auto key = parseRules("rules:\n  - name: K\n    metric: present_metric\n    treshold: 1\n", o);
  REQUIRE_FALSE(key.ok());
  CHECK(std::string(key.status().message()) == "r.yaml:4: rule 'K': unknown key 'treshold'");
  auto clear =
      parseRules("rules:\n  - {name: C, metric: present_metric, threshold: 1, clear: 2}\n", o);
  REQUIRE_FALSE(clear.ok());
  CHECK(std::string(clear.status().message()).find("rule 'C'") != std::string::npos);
  CHECK(parseRules("rules:\n  - {name: V, metric: vigil_host_filesystem_free_bytes, "
                   "threshold: 1}\n",
                   o)
            .ok());  // a vigil family counts as known before any data arrives
}

TEST_CASE("recent series records rendered samples within its retention") {
  RecentSeries rs(10000, 2);
  rs.setNow(1000);
  rs.sample("a", "a", {{"x", "1"}}, 1, std::nullopt);
  rs.sample("b", "b", {}, 2, std::nullopt);
  rs.sample("c", "c", {}, 3, std::nullopt);  // over the series cap
  CHECK(rs.overflow() == 1);
  rs.setNow(2000);
  rs.sample("a", "a", {{"x", "1"}}, 4, std::nullopt);
  auto sel = *parseSelector("a{x=\"1\"}");
  auto got = rs.select(sel, 0, 5000);
  REQUIRE(got.size() == 1);
  CHECK(got[0].samples.size() == 2);
  rs.setNow(11500);
  CHECK(rs.select(sel, 0, 20000)[0].samples.size() == 1);
  CHECK(rs.hasMetric("b") == false);
}

}  // namespace
}  // namespace vigil::aggregator::alerting

#include "aggregator/alerting/engine.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "userspace/common/log.h"

namespace vigil::aggregator::alerting {
namespace {

std::string fingerprintOf(const LabelSet& labels) {
  std::string out;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, k, "\x1f", v, "\x1e");
  }
  return out;
}

LabelSet withoutName(const LabelSet& labels) {
  LabelSet out;
  for (const auto& kv : labels) {
    if (kv.first != "__name__") {
      out.push_back(kv);
    }
  }
  return out;
}

void setLabel(LabelSet& labels, const std::string& k, const std::string& v) {
  for (auto& kv : labels) {
    if (kv.first == k) {
      kv.second = v;
      return;
    }
  }
  labels.emplace_back(k, v);
  std::sort(labels.begin(), labels.end());
}

bool cmpHolds(Cmp cmp, double v, double threshold) {
  return cmp == Cmp::kAbove ? v > threshold : v < threshold;
}

// Per-interval rates between consecutive samples; a counter reset (drop) skips that interval.
std::vector<Sample> pointRates(const std::vector<Sample>& s) {
  std::vector<Sample> out;
  for (size_t i = 1; i < s.size(); ++i) {
    int64_t dt = s[i].timestamp_ms - s[i - 1].timestamp_ms;
    if (dt <= 0 || s[i].value < s[i - 1].value) {
      continue;
    }
    out.push_back({s[i].timestamp_ms, (s[i].value - s[i - 1].value) * 1000.0 / dt});
  }
  return out;
}

// `func` over the samples (already limited to the window). nullopt: not enough data.
std::optional<double> applyFunc(Func f, const std::vector<Sample>& s) {
  if (s.empty()) {
    return std::nullopt;
  }
  switch (f) {
    case Func::kLast:
      return s.back().value;
    case Func::kAvg: {
      double sum = 0;
      for (const Sample& x : s) {
        sum += x.value;
      }
      return sum / s.size();
    }
    case Func::kMax: {
      double m = s[0].value;
      for (const Sample& x : s) {
        m = std::max(m, x.value);
      }
      return m;
    }
    case Func::kMin: {
      double m = s[0].value;
      for (const Sample& x : s) {
        m = std::min(m, x.value);
      }
      return m;
    }
    case Func::kRate: {
      if (s.size() < 2 || s.back().timestamp_ms <= s.front().timestamp_ms) {
        return std::nullopt;
      }
      double inc = 0;
      for (size_t i = 1; i < s.size(); ++i) {
        double d = s[i].value - s[i - 1].value;
        inc += d >= 0 ? d : s[i].value;  // a reset restarts the counter from zero
      }
      return inc * 1000.0 / (s.back().timestamp_ms - s.front().timestamp_ms);
    }
    case Func::kQuantile:
      return std::nullopt;  // handled on bucket groups
  }
  return std::nullopt;
}

std::vector<Sample> inRange(const std::vector<Sample>& s, int64_t from, int64_t to) {
  std::vector<Sample> out;
  for (const Sample& x : s) {
    if (x.timestamp_ms >= from && x.timestamp_ms <= to) {
      out.push_back(x);
    }
  }
  return out;
}

std::string labelValue(const LabelSet& labels, const std::string& name) {
  for (const auto& kv : labels) {
    if (kv.first == name) {
      return kv.second;
    }
  }
  return "";
}

// histogram_quantile-style: linear interpolation inside the bucket holding the rank.
std::optional<double> bucketQuantile(double q, std::vector<std::pair<double, double>> buckets) {
  std::sort(buckets.begin(), buckets.end());
  if (buckets.empty() || !std::isinf(buckets.back().first)) {
    return std::nullopt;
  }
  double total = buckets.back().second;
  if (total <= 0) {
    return std::nullopt;
  }
  double rank = q * total;
  double prev_bound = 0;
  double prev_count = 0;
  for (const auto& [bound, count] : buckets) {
    if (count >= rank) {
      if (std::isinf(bound)) {
        return prev_bound;
      }
      double in_bucket = count - prev_count;
      if (in_bucket <= 0) {
        return bound;
      }
      return prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket;
    }
    prev_bound = bound;
    prev_count = count;
  }
  return prev_bound;
}

std::vector<AlertEngine::Instance> thresholdValues(const Rule& rule, const SeriesSource& source,
                                                   int64_t now_ms) {
  std::vector<AlertEngine::Instance> out;
  int64_t from = now_ms - rule.window_ms;
  std::vector<std::pair<LabelSet, double>> values;
  if (rule.func == Func::kQuantile) {
    Selector sel = rule.selector;
    sel.metric = absl::StrCat(rule.selector.metric, "_bucket");
    std::map<LabelSet, std::vector<std::pair<double, double>>> groups;
    for (const Series& s : source.select(sel, from, now_ms)) {
      std::vector<Sample> w = inRange(s.samples, from, now_ms);
      if (w.empty()) {
        continue;
      }
      // Increase over the window (cumulative buckets); a single sample counts as it stands.
      double inc = w.size() == 1 ? w[0].value : w.back().value - w.front().value;
      if (inc < 0) {
        inc = w.back().value;
      }
      LabelSet key;
      double le = 0;
      for (const auto& kv : s.labels) {
        if (kv.first == "le") {
          le = kv.second == "+Inf" ? INFINITY : std::strtod(kv.second.c_str(), nullptr);
        } else if (kv.first != "__name__") {
          key.push_back(kv);
        }
      }
      groups[key].emplace_back(le, inc);
    }
    for (auto& [key, buckets] : groups) {
      if (auto q = bucketQuantile(rule.quantile, buckets)) {
        values.emplace_back(key, *q);
      }
    }
  } else {
    for (const Series& s : source.select(rule.selector, from, now_ms)) {
      if (auto v = applyFunc(rule.func, inRange(s.samples, from, now_ms))) {
        values.emplace_back(withoutName(s.labels), *v);
      }
    }
  }
  if (rule.aggregate) {
    std::map<LabelSet, double> sums;
    for (const auto& [labels, v] : values) {
      LabelSet key;
      for (const std::string& by : rule.sum_by) {
        std::string lv = labelValue(labels, by);
        if (!lv.empty()) {
          key.emplace_back(by, lv);
        }
      }
      std::sort(key.begin(), key.end());
      sums[key] += v;
    }
    values.assign(sums.begin(), sums.end());
  }
  for (auto& [labels, v] : values) {
    double scaled = v * rule.scale;
    out.push_back({labels, scaled, cmpHolds(rule.cmp, scaled, rule.threshold),
                   cmpHolds(rule.cmp, scaled, rule.clear)});
  }
  return out;
}

std::vector<AlertEngine::Instance> anomalyValues(const Rule& rule, const SeriesSource& source,
                                                 int64_t now_ms) {
  std::vector<AlertEngine::Instance> out;
  int64_t recent_from = now_ms - rule.window_ms;
  int64_t from = recent_from - rule.baseline_ms;
  for (const Series& s : source.select(rule.selector, from, now_ms)) {
    std::vector<Sample> pts = inRange(s.samples, from, now_ms);
    if (rule.func == Func::kRate) {
      pts = pointRates(pts);
    }
    std::vector<Sample> base;
    std::vector<Sample> recent;
    for (const Sample& p : pts) {
      (p.timestamp_ms < recent_from ? base : recent).push_back(p);
    }
    if (base.size() < 3 || recent.empty() ||
        recent_from - base.front().timestamp_ms < rule.min_history_ms) {
      continue;  // not enough history to judge: never fire on a cold start
    }
    Func f = rule.func == Func::kRate || rule.func == Func::kQuantile ? Func::kAvg : rule.func;
    double current = *applyFunc(f, recent);
    double mean = 0;
    double var = 0;
    if (rule.method == AnomalyMethod::kZScore) {
      for (const Sample& p : base) {
        mean += p.value;
      }
      mean /= base.size();
      for (const Sample& p : base) {
        var += (p.value - mean) * (p.value - mean);
      }
      var /= base.size() - 1;
    } else {
      mean = base[0].value;
      double a = rule.ewma_alpha;
      for (size_t i = 1; i < base.size(); ++i) {
        double d = base[i].value - mean;
        mean += a * d;
        var = (1 - a) * (var + a * d * d);
      }
    }
    double sd = std::max(std::sqrt(var), rule.min_stddev);
    double z = (current - mean) / sd;
    out.push_back(
        {withoutName(s.labels), z, std::fabs(z) > rule.band, std::fabs(z) > rule.clear_band});
  }
  return out;
}

std::vector<AlertEngine::Instance> forecastValues(const Rule& rule, const SeriesSource& source,
                                                  int64_t now_ms) {
  std::vector<AlertEngine::Instance> out;
  int64_t from = now_ms - rule.window_ms;
  for (const Series& s : source.select(rule.selector, from, now_ms)) {
    std::vector<Sample> pts = inRange(s.samples, from, now_ms);
    if (pts.size() < 3 ||
        pts.back().timestamp_ms - pts.front().timestamp_ms < rule.min_history_ms) {
      continue;
    }
    // Least squares on (seconds since now, value); centring keeps the sums well conditioned.
    double n = pts.size();
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (const Sample& p : pts) {
      double x = (p.timestamp_ms - now_ms) / 1000.0;
      sx += x;
      sy += p.value;
      sxx += x * x;
      sxy += x * p.value;
    }
    double den = n * sxx - sx * sx;
    if (den == 0) {
      continue;
    }
    double slope = (n * sxy - sx * sy) / den;
    double intercept = (sy - slope * sx) / n;
    double predicted = (intercept + slope * (rule.horizon_ms / 1000.0)) * rule.scale;
    out.push_back({withoutName(s.labels), predicted, cmpHolds(rule.cmp, predicted, rule.threshold),
                   cmpHolds(rule.cmp, predicted, rule.clear)});
  }
  return out;
}

std::vector<AlertEngine::Instance> absentValues(const Rule& rule, const SeriesSource& source,
                                                int64_t now_ms) {
  bool present = false;
  for (const Series& s : source.select(rule.selector, now_ms - rule.window_ms, now_ms)) {
    if (!inRange(s.samples, now_ms - rule.window_ms, now_ms).empty()) {
      present = true;
      break;
    }
  }
  LabelSet labels;
  for (const LabelMatcher& m : rule.selector.matchers) {
    if (m.op == LabelMatcher::Op::kEqual) {
      labels.emplace_back(m.name, m.value);
    }
  }
  std::sort(labels.begin(), labels.end());
  return {{labels, present ? 0.0 : 1.0, !present, !present}};
}

std::vector<AlertEngine::Instance> offlineValues(const Rule& rule,
                                                 const std::vector<AgentStatus>& agents,
                                                 int64_t now_ms) {
  std::vector<AlertEngine::Instance> out;
  for (const AgentStatus& a : agents) {
    double silent_s = (now_ms - a.last_seen_ms) / 1000.0;
    bool offline = !a.online || now_ms - a.last_seen_ms > rule.offline_after_ms;
    LabelSet labels = {{"agent_id", a.agent_id}, {"node", a.node}};
    out.push_back({labels, silent_s, offline, offline});
  }
  return out;
}

}  // namespace

const char* alertStateName(AlertState s) {
  switch (s) {
    case AlertState::kPending:
      return "pending";
    case AlertState::kFiring:
      return "firing";
    case AlertState::kResolved:
      return "resolved";
    case AlertState::kNoData:
      return "nodata";
  }
  return "?";
}

std::string expandTemplate(const std::string& text, const LabelSet& labels, double value) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t open = text.find("{{", i);
    if (open == std::string::npos) {
      out += text.substr(i);
      break;
    }
    size_t close = text.find("}}", open);
    if (close == std::string::npos) {
      out += text.substr(i);
      break;
    }
    out += text.substr(i, open - i);
    std::string expr = text.substr(open + 2, close - open - 2);
    expr.erase(0, expr.find_first_not_of(' '));
    expr.erase(expr.find_last_not_of(' ') + 1);
    if (expr == "$value") {
      out += absl::StrFormat("%.4g", value);
    } else if (expr.rfind("$labels.", 0) == 0) {
      out += labelValue(labels, expr.substr(8));
    } else {
      out += text.substr(open, close + 2 - open);  // unknown: left visible, not dropped
    }
    i = close + 2;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<AlertEngine>> AlertEngine::create(const std::string& db_path,
                                                                 EngineOptions options) {
  std::unique_ptr<AlertEngine> e(new AlertEngine(options));
  if (!db_path.empty()) {
    if (absl::Status st = e->openDb(db_path); !st.ok()) {
      return st;
    }
    e->load();
  }
  return e;
}

AlertEngine::~AlertEngine() {
  if (db_ != nullptr) {
    sqlite3_close(db_);
  }
}

absl::Status AlertEngine::openDb(const std::string& path) {
  if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    return absl::UnavailableError(absl::StrCat("cannot open alert state ", path, ": ", msg));
  }
  char* err = nullptr;
  const char* ddl =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS alerts (rule TEXT NOT NULL, fingerprint TEXT NOT NULL,"
      " body TEXT NOT NULL, PRIMARY KEY (rule, fingerprint));";
  if (sqlite3_exec(db_, ddl, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "?";
    sqlite3_free(err);
    return absl::UnavailableError(absl::StrCat("cannot create alert state table: ", msg));
  }
  return absl::OkStatus();
}

void AlertEngine::load() {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT rule, fingerprint, body FROM alerts", -1, &st, nullptr) !=
      SQLITE_OK) {
    return;
  }
  size_t n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::string rule = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    std::string body = reinterpret_cast<const char*>(sqlite3_column_text(st, 2));
    auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      continue;  // a damaged row costs that alert's history, not the restart
    }
    Alert a;
    a.rule = rule;
    const nlohmann::json labels = j.value("labels", nlohmann::json::object());
    const nlohmann::json annotations = j.value("annotations", nlohmann::json::object());
    for (auto& [k, v] : labels.items()) {
      if (v.is_string()) {
        a.labels.emplace_back(k, v.get<std::string>());
      }
    }
    std::sort(a.labels.begin(), a.labels.end());
    a.fingerprint = fingerprintOf(a.labels);
    for (auto& [k, v] : annotations.items()) {
      if (v.is_string()) {
        a.annotations[k] = v.get<std::string>();
      }
    }
    a.severity = j.value("severity", "");
    std::string state = j.value("state", "");
    a.state = state == "firing"     ? AlertState::kFiring
              : state == "resolved" ? AlertState::kResolved
              : state == "nodata"   ? AlertState::kNoData
                                    : AlertState::kPending;
    a.active_since_ms = j.value("active_since_ms", int64_t{0});
    a.fired_at_ms = j.value("fired_at_ms", int64_t{0});
    a.resolved_at_ms = j.value("resolved_at_ms", int64_t{0});
    a.last_held_ms = j.value("last_held_ms", int64_t{0});
    a.value = j.value("value", 0.0);
    alerts_[rule][a.fingerprint] = std::move(a);
    n++;
  }
  sqlite3_finalize(st);
  if (n > 0) {
    VIGIL_LOG_INFO("restored %d alert(s) from the alert state store", n);
  }
}

void AlertEngine::persist() {
  if (db_ == nullptr || !dirty_) {
    return;
  }
  bool ok = sqlite3_exec(db_, "BEGIN; DELETE FROM alerts;", nullptr, nullptr, nullptr) == SQLITE_OK;
  sqlite3_stmt* st = nullptr;
  ok = ok && sqlite3_prepare_v2(db_, "INSERT INTO alerts (rule, fingerprint, body) VALUES (?,?,?)",
                                -1, &st, nullptr) == SQLITE_OK;
  for (const auto& [rule, by_fp] : alerts_) {
    for (const auto& [fp, a] : by_fp) {
      if (!ok) {
        break;
      }
      nlohmann::json j;
      j["labels"] = nlohmann::json::object();
      for (const auto& [k, v] : a.labels) {
        j["labels"][k] = v;
      }
      j["annotations"] = a.annotations;
      j["severity"] = a.severity;
      j["state"] = alertStateName(a.state);
      j["active_since_ms"] = a.active_since_ms;
      j["fired_at_ms"] = a.fired_at_ms;
      j["resolved_at_ms"] = a.resolved_at_ms;
      j["last_held_ms"] = a.last_held_ms;
      j["value"] = std::isfinite(a.value) ? a.value : 0.0;
      std::string body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      sqlite3_bind_text(st, 1, rule.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 2, fp.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(st, 3, body.c_str(), -1, SQLITE_TRANSIENT);
      ok = sqlite3_step(st) == SQLITE_DONE;
      sqlite3_reset(st);
    }
  }
  sqlite3_finalize(st);
  if (ok && sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) {
    dirty_ = false;
  } else {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    stats_.persist_errors++;
    VIGIL_LOG_WARN("cannot persist alert state: %s", sqlite3_errmsg(db_));
  }
}

void AlertEngine::setRules(RuleSet rules, int64_t now_ms) {
  rules_ = std::move(rules);
  for (auto& [name, by_fp] : alerts_) {
    bool exists = std::any_of(rules_.rules.begin(), rules_.rules.end(),
                              [&](const Rule& r) { return r.name == name; });
    if (exists) {
      continue;
    }
    for (auto it = by_fp.begin(); it != by_fp.end();) {
      auto cur = it++;
      Alert& a = cur->second;
      if (a.state == AlertState::kPending) {
        by_fp.erase(cur);
      } else if (a.state != AlertState::kResolved) {
        a.state = AlertState::kResolved;
        a.resolved_at_ms = now_ms;
      }
      dirty_ = true;
    }
  }
  persist();
}

std::vector<AlertEngine::Instance> AlertEngine::evaluateRule(const Rule& rule,
                                                             const SeriesSource& source,
                                                             const std::vector<AgentStatus>& agents,
                                                             int64_t now_ms) {
  switch (rule.kind) {
    case RuleKind::kThreshold:
      return thresholdValues(rule, source, now_ms);
    case RuleKind::kAbsent:
      return absentValues(rule, source, now_ms);
    case RuleKind::kAgentOffline:
      return offlineValues(rule, agents, now_ms);
    case RuleKind::kAnomaly:
      return anomalyValues(rule, source, now_ms);
    case RuleKind::kForecast:
      return forecastValues(rule, source, now_ms);
  }
  return {};
}

Alert AlertEngine::makeAlert(const Rule& rule, const Instance& inst) const {
  Alert a;
  a.rule = rule.name;
  a.labels = inst.labels;
  for (const auto& [k, v] : rule.labels) {
    setLabel(a.labels, k, v);
  }
  setLabel(a.labels, "alertname", rule.name);
  setLabel(a.labels, "severity", rule.severity);
  a.fingerprint = fingerprintOf(a.labels);
  a.severity = rule.severity;
  return a;
}

void AlertEngine::evaluate(const SeriesSource& source, const std::vector<AgentStatus>& agents,
                           int64_t now_ms) {
  stats_.evaluations++;
  for (const Rule& rule : rules_.rules) {
    stats_.rule_evaluations++;
    std::vector<Instance> insts = evaluateRule(rule, source, agents, now_ms);
    auto& by_fp = alerts_[rule.name];
    absl::flat_hash_map<std::string, bool> seen;
    size_t active = 0;
    for (const auto& [fp, a] : by_fp) {
      active += a.state != AlertState::kResolved;
    }
    for (const Instance& inst : insts) {
      Alert proto = makeAlert(rule, inst);
      seen[proto.fingerprint] = true;
      auto it = by_fp.find(proto.fingerprint);
      bool live = it != by_fp.end() && it->second.state != AlertState::kResolved;
      if (!live) {
        if (!inst.fire) {
          continue;
        }
        if (active >= options_.max_instances_per_rule) {
          stats_.instances_capped++;
          continue;
        }
        active++;
        proto.state = AlertState::kPending;
        proto.active_since_ms = now_ms;
        proto.last_held_ms = now_ms;
        it = by_fp.insert_or_assign(proto.fingerprint, std::move(proto)).first;
        dirty_ = true;
        stats_.state_changes++;
      }
      Alert& a = it->second;
      a.value = inst.value;
      AlertState before = a.state;
      if (a.state == AlertState::kPending) {
        if (!inst.fire) {
          by_fp.erase(it);  // `for` not met: forget it (Prometheus does the same)
          stats_.state_changes++;
          dirty_ = true;
          continue;
        }
        a.last_held_ms = now_ms;
      } else {
        // firing or no-data: hysteresis keeps it active until the clear threshold is crossed.
        if (inst.hold) {
          a.last_held_ms = now_ms;
        }
        if (a.state == AlertState::kNoData) {
          a.state = AlertState::kFiring;
        }
        if (!inst.hold && now_ms - a.last_held_ms >= rule.keep_firing_for_ms) {
          a.state = AlertState::kResolved;
          a.resolved_at_ms = now_ms;
        }
      }
      if (a.state == AlertState::kPending && now_ms - a.active_since_ms >= rule.for_ms) {
        a.state = AlertState::kFiring;
        a.fired_at_ms = now_ms;
      }
      for (const auto& [k, v] : rule.annotations) {
        a.annotations[k] = expandTemplate(v, a.labels, a.value);
      }
      if (a.state != before) {
        dirty_ = true;
        stats_.state_changes++;
      }
    }
    // Alerts whose series did not show up in this evaluation.
    for (auto it = by_fp.begin(); it != by_fp.end();) {
      auto cur = it++;
      Alert& a = cur->second;
      if (seen.contains(cur->first)) {
        continue;
      }
      if (a.state == AlertState::kPending) {
        by_fp.erase(cur);
        dirty_ = true;
      } else if (a.state == AlertState::kFiring) {
        a.state = AlertState::kNoData;
        dirty_ = true;
        stats_.state_changes++;
      } else if (a.state == AlertState::kNoData &&
                 now_ms - a.last_held_ms > options_.nodata_timeout_ms) {
        a.state = AlertState::kResolved;
        a.resolved_at_ms = now_ms;
        dirty_ = true;
      }
    }
  }
  for (auto& [name, by_fp] : alerts_) {
    for (auto it = by_fp.begin(); it != by_fp.end();) {
      auto cur = it++;
      if (cur->second.state == AlertState::kResolved &&
          now_ms - cur->second.resolved_at_ms > options_.resolved_retention_ms) {
        by_fp.erase(cur);
        dirty_ = true;
      }
    }
  }
  persist();
}

std::vector<Alert> AlertEngine::alerts() const {
  std::vector<Alert> out;
  for (const auto& [name, by_fp] : alerts_) {
    for (const auto& [fp, a] : by_fp) {
      out.push_back(a);
    }
  }
  return out;
}

void AlertEngine::render(MetricSink& out) const {
  out.family("ALERTS", MetricType::kGauge,
             "Active alerts of the vigil alert engine (1 per pending, firing or nodata alert).");
  for (const auto& [name, by_fp] : alerts_) {
    for (const auto& [fp, a] : by_fp) {
      if (a.state == AlertState::kResolved) {
        continue;
      }
      Labels l(a.labels.begin(), a.labels.end());
      l.emplace_back("alertstate", alertStateName(a.state));
      out.sample("ALERTS", l, 1);
    }
  }
  out.family("vigil_alert_rules", MetricType::kGauge, "Alert rules loaded.");
  out.sample("vigil_alert_rules", {}, static_cast<double>(rules_.rules.size()));
  out.family("vigil_alert_evaluations_total", MetricType::kCounter,
             "Evaluation rounds of all rules.");
  out.sample("vigil_alert_evaluations_total", {}, static_cast<double>(stats_.evaluations));
  out.family("vigil_alert_state_changes_total", MetricType::kCounter,
             "Alert state transitions (pending, firing, resolved, nodata).");
  out.sample("vigil_alert_state_changes_total", {}, static_cast<double>(stats_.state_changes));
  out.family("vigil_alert_state_persist_errors_total", MetricType::kCounter,
             "Failed writes of alert state to the data dir.");
  out.sample("vigil_alert_state_persist_errors_total", {},
             static_cast<double>(stats_.persist_errors));
  out.family("vigil_alert_instances_capped_total", MetricType::kCounter,
             "Alert instances not created because a rule hit its instance cap.");
  out.sample("vigil_alert_instances_capped_total", {},
             static_cast<double>(stats_.instances_capped));
}

}  // namespace vigil::aggregator::alerting

#include "aggregator/alerting/rules.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "userspace/common/frame_metrics.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator::alerting {
namespace {

// Collects family names from declareFrameFamilies so the list of known metrics cannot drift
// from what the renderer emits.
class NameSink final : public MetricSink {
 public:
  explicit NameSink(absl::flat_hash_set<std::string>& names) : names_(names) {}
  void family(absl::string_view name, MetricType, absl::string_view) override {
    names_.insert(std::string(name));
  }
  void ensureFamily(absl::string_view name, MetricType) override {
    names_.insert(std::string(name));
  }
  void sample(absl::string_view, absl::string_view, const Labels&, double,
              std::optional<int64_t>) override {}

 private:
  absl::flat_hash_set<std::string>& names_;
};

// Families emitted outside frame_metrics: agent self-metrics, the aggregator's own, and the host
// collector's families (docs/metrics.md), which a rule may name before the first host frame.
constexpr const char* kOtherKnown[] = {
    "vigil_agent_up",
    "vigil_agent_last_seen_timestamp_seconds",
    "vigil_agent_info",
    "vigil_agent_frames_received_total",
    "vigil_agent_collect_seconds_total",
    "vigil_agent_resident_memory_bytes",
    "vigil_agent_cpu_seconds_total",
    "vigil_agent_boot_epoch_seconds",
    "vigil_agent_frames_total",
    "vigil_agent_frames_acked_total",
    "vigil_agent_frames_dropped_total",
    "vigil_agent_queue_frames",
    "vigil_agent_queue_bytes",
    "vigil_agent_uplink_connected",
    "vigil_bpf_program_run_seconds_total",
    "vigil_bpf_program_runs_total",
    "vigil_bpf_map_full_total",
    "vigil_host_boot_time_seconds",
    "vigil_host_context_switches_total",
    "vigil_host_cpu_all_guest_seconds_total",
    "vigil_host_cpu_all_seconds_total",
    "vigil_host_cpu_guest_seconds_total",
    "vigil_host_cpu_seconds_total",
    "vigil_host_cpus",
    "vigil_host_load1",
    "vigil_host_load5",
    "vigil_host_load15",
    "vigil_host_disk_discarded_sectors_total",
    "vigil_host_disk_discards_completed_total",
    "vigil_host_disk_flush_requests_total",
    "vigil_host_disk_io_now",
    "vigil_host_disk_io_time_seconds_total",
    "vigil_host_disk_io_time_weighted_seconds_total",
    "vigil_host_disk_read_bytes_total",
    "vigil_host_disk_read_time_seconds_total",
    "vigil_host_disk_reads_completed_total",
    "vigil_host_disk_reads_merged_total",
    "vigil_host_disk_write_time_seconds_total",
    "vigil_host_disk_writes_completed_total",
    "vigil_host_disk_writes_merged_total",
    "vigil_host_disk_written_bytes_total",
    "vigil_host_filefd_allocated",
    "vigil_host_filefd_maximum",
    "vigil_host_filesystem_avail_bytes",
    "vigil_host_filesystem_device_error",
    "vigil_host_filesystem_files",
    "vigil_host_filesystem_files_free",
    "vigil_host_filesystem_free_bytes",
    "vigil_host_filesystem_readonly",
    "vigil_host_filesystem_size_bytes",
    "vigil_host_forks_total",
    "vigil_host_interrupts_total",
    "vigil_host_memory_available_bytes",
    "vigil_host_memory_buffers_bytes",
    "vigil_host_memory_cached_bytes",
    "vigil_host_memory_dirty_bytes",
    "vigil_host_memory_free_bytes",
    "vigil_host_memory_shmem_bytes",
    "vigil_host_memory_swap_free_bytes",
    "vigil_host_memory_swap_total_bytes",
    "vigil_host_memory_total_bytes",
    "vigil_host_network_receive_bytes_total",
    "vigil_host_network_receive_drop_total",
    "vigil_host_network_receive_errs_total",
    "vigil_host_network_receive_multicast_total",
    "vigil_host_network_receive_packets_total",
    "vigil_host_network_transmit_bytes_total",
    "vigil_host_network_transmit_colls_total",
    "vigil_host_network_transmit_drop_total",
    "vigil_host_network_transmit_errs_total",
    "vigil_host_network_transmit_packets_total",
    "vigil_host_parse_errors_total",
    "vigil_host_pressure_cpu_stalled_seconds_total",
    "vigil_host_pressure_cpu_waiting_seconds_total",
    "vigil_host_pressure_io_stalled_seconds_total",
    "vigil_host_pressure_io_waiting_seconds_total",
    "vigil_host_pressure_memory_stalled_seconds_total",
    "vigil_host_pressure_memory_waiting_seconds_total",
    "vigil_host_procs_blocked",
    "vigil_host_procs_running",
    "vigil_host_uptime_seconds",
    "vigil_runqueue_latency_seconds",
    "vigil_process_runqueue_latency_seconds",
};

struct Alias {
  const char* name;
  const char* metric;
  Func func;
  int64_t window_ms;
  bool aggregate;
  const char* by;
  double scale;
};

// `metric: cpu` (the seed's rule shape): CPU used by all processes of a node, in percent of one
// CPU, averaged over 1 minute: 100 * sum by (node) (rate(vigil_process_cpu_seconds_total[1m])).
constexpr Alias kAliases[] = {
    {"cpu", "vigil_process_cpu_seconds_total", Func::kRate, 60000, true, "node", 100.0},
};

const std::set<std::string> kRuleKeys = {
    "name",       "kind",     "severity",      "level",    "metric",     "selector",
    "matchers",   "function", "window",        "quantile", "sum_by",     "aggregate",
    "scale",      "op",       "threshold",     "clear",    "for",        "keep_firing_for",
    "method",     "baseline", "min_history",   "band",     "clear_band", "alpha",
    "min_stddev", "horizon",  "offline_after", "labels",   "annotations"};

class RuleError {
 public:
  RuleError(const ParseOptions& o, std::string rule) : o_(&o), rule_(std::move(rule)) {}
  absl::Status at(const YAML::Node& n, const std::string& reason) const {
    return at(n.Mark().line + 1, reason);
  }
  absl::Status at(int line, const std::string& reason) const {
    return absl::InvalidArgumentError(
        absl::StrCat(o_->file_name, ":", line, ": rule '", rule_, "': ", reason));
  }

 private:
  const ParseOptions* o_;
  std::string rule_;
};

bool scalarString(const YAML::Node& n, std::string* out) {
  if (!n.IsScalar()) {
    return false;
  }
  *out = n.Scalar();
  return true;
}

bool scalarDouble(const YAML::Node& n, double* out) {
  if (!n.IsScalar()) {
    return false;
  }
  return absl::SimpleAtod(n.Scalar(), out) && std::isfinite(*out);
}

absl::Status parseOne(const YAML::Node& node, const ParseOptions& opts, Rule& r) {
  r.line = node.Mark().line + 1;
  std::string name = "<unnamed>";
  if (node["name"] && node["name"].IsScalar()) {
    name = node["name"].Scalar();
  }
  RuleError err(opts, name);
  if (!node.IsMap()) {
    return err.at(node, "a rule must be a mapping");
  }
  for (const auto& kv : node) {
    std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (!kRuleKeys.count(key)) {
      return err.at(kv.first, absl::StrCat("unknown key '", key, "'"));
    }
  }
  auto str = [&](const char* key, std::string* out) -> absl::Status {
    if (YAML::Node n = node[key]) {
      if (!scalarString(n, out)) {
        return err.at(n, absl::StrCat("'", key, "' must be a string"));
      }
    }
    return absl::OkStatus();
  };
  auto num = [&](const char* key, double* out) -> absl::Status {
    if (YAML::Node n = node[key]) {
      if (!scalarDouble(n, out)) {
        return err.at(n, absl::StrCat("'", key, "' must be a number, got '",
                                      n.IsScalar() ? n.Scalar() : "?", "'"));
      }
    }
    return absl::OkStatus();
  };
  auto dur = [&](const char* key, int64_t* out) -> absl::Status {
    if (YAML::Node n = node[key]) {
      auto d =
          n.IsScalar() ? parseDurationMs(n.Scalar()) : absl::InvalidArgumentError("not a scalar");
      if (!d.ok()) {
        return err.at(n, absl::StrCat("'", key, "': ", d.status().message()));
      }
      *out = *d;
    }
    return absl::OkStatus();
  };
#define RULE_RETURN_IF_ERROR(expr) \
  if (absl::Status _st = (expr); !_st.ok()) return _st

  std::string kind = "threshold";
  RULE_RETURN_IF_ERROR(str("kind", &kind));
  name = node["name"] && node["name"].IsScalar() ? node["name"].Scalar() : "";
  if (kind == "threshold") {
    r.kind = RuleKind::kThreshold;
  } else if (kind == "absent") {
    r.kind = RuleKind::kAbsent;
  } else if (kind == "agent_offline") {
    r.kind = RuleKind::kAgentOffline;
  } else if (kind == "anomaly") {
    r.kind = RuleKind::kAnomaly;
  } else if (kind == "forecast") {
    r.kind = RuleKind::kForecast;
  } else {
    return err.at(node["kind"], absl::StrCat("unknown kind '", kind,
                                             "' (threshold, absent, agent_offline, anomaly, "
                                             "forecast)"));
  }
  std::string metric;
  RULE_RETURN_IF_ERROR(str("metric", &metric));
  if (name.empty()) {
    // The seed's shorthand has no name: derive a stable one.
    if (metric.empty() || !node["threshold"]) {
      return err.at(node, "'name' is required");
    }
    name = absl::StrCat(metric, "_", node["threshold"].Scalar());
  }
  r.name = name;
  err = RuleError(opts, name);
  if (r.name.find_first_of(" \"{}\n") != std::string::npos) {
    return err.at(node["name"], "a rule name may not contain spaces, quotes or braces");
  }
  RULE_RETURN_IF_ERROR(str("severity", &r.severity));
  RULE_RETURN_IF_ERROR(str("level", &r.severity));

  // What to evaluate.
  int selector_line = r.line;
  if (r.kind != RuleKind::kAgentOffline) {
    std::string selector_text;
    RULE_RETURN_IF_ERROR(str("selector", &selector_text));
    if (!selector_text.empty() && !metric.empty()) {
      return err.at(node["selector"], "give either 'metric' or 'selector', not both");
    }
    const Alias* alias = nullptr;
    for (const Alias& a : kAliases) {
      if (metric == a.name) {
        alias = &a;
      }
    }
    if (alias != nullptr) {
      r.func = alias->func;
      r.window_ms = alias->window_ms;
      r.aggregate = alias->aggregate;
      r.sum_by = {alias->by};
      r.scale = alias->scale;
      metric = alias->metric;
    }
    if (!metric.empty()) {
      selector_text = metric;
      selector_line = node["metric"].Mark().line + 1;
    } else if (!selector_text.empty()) {
      selector_line = node["selector"].Mark().line + 1;
    } else {
      return err.at(node, "needs 'metric' or 'selector'");
    }
    if (YAML::Node m = node["matchers"]) {
      // matchers: {label: value} for equality or ["label=~\"re\"", ...] in selector syntax.
      std::vector<std::string> parts;
      if (m.IsMap()) {
        for (const auto& kv : m) {
          std::string v = kv.second.IsScalar() ? kv.second.Scalar() : "";
          std::string esc;
          for (char c : v) {
            if (c == '"' || c == '\\') {
              esc += '\\';
            }
            esc += c;
          }
          parts.push_back(absl::StrCat(kv.first.Scalar(), "=\"", esc, "\""));
        }
      } else if (m.IsSequence()) {
        for (const auto& item : m) {
          if (!item.IsScalar()) {
            return err.at(item, "each matcher must be a string like label=~\"re\"");
          }
          parts.push_back(item.Scalar());
        }
      } else {
        return err.at(m, "'matchers' must be a mapping or a list");
      }
      selector_line = m.Mark().line + 1;
      if (selector_text.find('{') != std::string::npos) {
        return err.at(m, "give matchers either inside 'selector' or in 'matchers', not both");
      }
      selector_text = absl::StrCat(selector_text, "{", absl::StrJoin(parts, ","), "}");
    }
    auto sel = parseSelector(selector_text);
    if (!sel.ok()) {
      return err.at(selector_line, std::string(sel.status().message()));
    }
    r.selector = std::move(*sel);
    r.selector_text = selector_text;
    if (r.selector.metric.empty()) {
      return err.at(selector_line, "the selector needs a metric name");
    }
    std::string fn = r.kind == RuleKind::kForecast ? "last" : "";
    RULE_RETURN_IF_ERROR(str("function", &fn));
    if (!fn.empty()) {
      static const std::map<std::string, Func> kFuncs = {
          {"last", Func::kLast}, {"avg", Func::kAvg},   {"max", Func::kMax},
          {"min", Func::kMin},   {"rate", Func::kRate}, {"quantile", Func::kQuantile}};
      auto it = kFuncs.find(fn);
      if (it == kFuncs.end()) {
        return err.at(node["function"], absl::StrCat("unknown function '", fn,
                                                     "' (last, avg, max, min, rate, "
                                                     "quantile)"));
      }
      r.func = it->second;
    }
    if (opts.check_metrics) {
      std::string lookup = r.selector.metric;
      if (r.func == Func::kQuantile) {
        lookup = absl::StrCat(r.selector.metric, "_bucket");
      }
      bool known = knownVigilMetrics().contains(r.selector.metric) ||
                   (opts.source != nullptr &&
                    (opts.source->hasMetric(r.selector.metric) || opts.source->hasMetric(lookup)));
      if (!known) {
        return err.at(selector_line,
                      absl::StrCat("unknown metric '", r.selector.metric,
                                   "': not in the series store and not a vigil metric family "
                                   "(docs/metrics.md)"));
      }
    }
  }
  RULE_RETURN_IF_ERROR(dur("window", &r.window_ms));
  if (r.window_ms <= 0) {
    return err.at(node["window"], "'window' must be positive");
  }
  RULE_RETURN_IF_ERROR(num("quantile", &r.quantile));
  if (r.quantile < 0 || r.quantile > 1) {
    return err.at(node["quantile"], "'quantile' must be within 0..1");
  }
  if (YAML::Node by = node["sum_by"]) {
    if (!by.IsSequence()) {
      return err.at(by, "'sum_by' must be a list of label names");
    }
    r.sum_by.clear();
    for (const auto& l : by) {
      if (!l.IsScalar() || !validLabelName(l.Scalar())) {
        return err.at(l, "'sum_by' entries must be label names");
      }
      r.sum_by.push_back(l.Scalar());
    }
    r.aggregate = true;
  }
  if (YAML::Node agg = node["aggregate"]) {
    if (!agg.IsScalar() || agg.Scalar() != "sum") {
      return err.at(agg, "'aggregate' supports only 'sum'");
    }
    r.aggregate = true;
  }
  RULE_RETURN_IF_ERROR(num("scale", &r.scale));

  std::string op = ">";
  RULE_RETURN_IF_ERROR(str("op", &op));
  if (op == ">" || op == ">=") {
    r.cmp = Cmp::kAbove;
  } else if (op == "<" || op == "<=") {
    r.cmp = Cmp::kBelow;
  } else {
    return err.at(node["op"], absl::StrCat("'op' must be > or <, got '", op, "'"));
  }
  if (r.kind == RuleKind::kThreshold || r.kind == RuleKind::kForecast) {
    if (!node["threshold"]) {
      return err.at(node, "'threshold' is required");
    }
    RULE_RETURN_IF_ERROR(num("threshold", &r.threshold));
    r.clear = r.threshold;
    RULE_RETURN_IF_ERROR(num("clear", &r.clear));
    if (r.cmp == Cmp::kAbove && r.clear > r.threshold) {
      return err.at(node["clear"], "'clear' must not be above 'threshold' for op '>'");
    }
    if (r.cmp == Cmp::kBelow && r.clear < r.threshold) {
      return err.at(node["clear"], "'clear' must not be below 'threshold' for op '<'");
    }
  }
  RULE_RETURN_IF_ERROR(dur("for", &r.for_ms));
  RULE_RETURN_IF_ERROR(dur("keep_firing_for", &r.keep_firing_for_ms));

  std::string method = "zscore";
  RULE_RETURN_IF_ERROR(str("method", &method));
  if (method == "zscore") {
    r.method = AnomalyMethod::kZScore;
  } else if (method == "ewma") {
    r.method = AnomalyMethod::kEwma;
  } else {
    return err.at(node["method"], "'method' must be zscore or ewma");
  }
  RULE_RETURN_IF_ERROR(dur("baseline", &r.baseline_ms));
  RULE_RETURN_IF_ERROR(dur("min_history", &r.min_history_ms));
  RULE_RETURN_IF_ERROR(num("band", &r.band));
  r.clear_band = r.band * 2 / 3;
  RULE_RETURN_IF_ERROR(num("clear_band", &r.clear_band));
  if (r.clear_band > r.band) {
    return err.at(node["clear_band"], "'clear_band' must not exceed 'band'");
  }
  RULE_RETURN_IF_ERROR(num("alpha", &r.ewma_alpha));
  if (r.ewma_alpha <= 0 || r.ewma_alpha > 1) {
    return err.at(node["alpha"], "'alpha' must be within (0, 1]");
  }
  RULE_RETURN_IF_ERROR(num("min_stddev", &r.min_stddev));
  RULE_RETURN_IF_ERROR(dur("horizon", &r.horizon_ms));
  RULE_RETURN_IF_ERROR(dur("offline_after", &r.offline_after_ms));

  for (auto [key, out] :
       {std::pair{"labels", &r.labels}, std::pair{"annotations", &r.annotations}}) {
    if (YAML::Node m = node[key]) {
      if (!m.IsMap()) {
        return err.at(m, absl::StrCat("'", key, "' must be a mapping"));
      }
      for (const auto& kv : m) {
        if (!kv.second.IsScalar()) {
          return err.at(kv.second, absl::StrCat("'", key, "' values must be strings"));
        }
        if (std::string(key) == "labels" && !validLabelName(kv.first.Scalar())) {
          return err.at(kv.first, absl::StrCat("invalid label name '", kv.first.Scalar(), "'"));
        }
        (*out)[kv.first.Scalar()] = kv.second.Scalar();
      }
    }
  }
#undef RULE_RETURN_IF_ERROR
  return absl::OkStatus();
}

}  // namespace

const char* ruleKindName(RuleKind kind) {
  switch (kind) {
    case RuleKind::kThreshold:
      return "threshold";
    case RuleKind::kAbsent:
      return "absent";
    case RuleKind::kAgentOffline:
      return "agent_offline";
    case RuleKind::kAnomaly:
      return "anomaly";
    case RuleKind::kForecast:
      return "forecast";
  }
  return "?";
}

const absl::flat_hash_set<std::string>& knownVigilMetrics() {
  static const absl::flat_hash_set<std::string>* names = [] {
    auto* set = new absl::flat_hash_set<std::string>();
    NameSink sink(*set);
    declareFrameFamilies(sink);
    for (const char* n : kOtherKnown) {
      set->insert(n);
    }
    return set;
  }();
  return *names;
}

absl::StatusOr<int64_t> parseDurationMs(const std::string& text) {
  double plain = 0;
  if (absl::SimpleAtod(text, &plain)) {
    if (plain < 0 || !std::isfinite(plain)) {
      return absl::InvalidArgumentError(absl::StrCat("bad duration '", text, "'"));
    }
    return static_cast<int64_t>(plain * 1000);
  }
  int64_t total = 0;
  size_t i = 0;
  if (text.empty()) {
    return absl::InvalidArgumentError("empty duration");
  }
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) {
      ++i;
    }
    double n = 0;
    if (i == start || !absl::SimpleAtod(text.substr(start, i - start), &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad duration '", text, "' (use e.g. 30s, 5m, 4h, 1h30m, 250ms)"));
    }
    size_t us = i;
    while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') {
      ++i;
    }
    std::string unit = text.substr(us, i - us);
    double mult = 0;
    if (unit == "ms") {
      mult = 1;
    } else if (unit == "s") {
      mult = 1000;
    } else if (unit == "m") {
      mult = 60000;
    } else if (unit == "h") {
      mult = 3600000;
    } else if (unit == "d") {
      mult = 86400000;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("bad duration unit '", unit, "' in '", text, "' (ms, s, m, h, d)"));
    }
    total += static_cast<int64_t>(n * mult);
  }
  return total;
}

absl::StatusOr<RuleSet> parseRules(const std::string& yaml_text, const ParseOptions& options) {
  RuleSet set;
  set.source = options.file_name;
  YAML::Node root;
  // yaml-cpp reports syntax errors by throwing; convert once, here, with the line it gives.
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(options.file_name, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": invalid YAML: ", e.msg));
  }
  if (root.IsNull()) {
    return set;  // an empty file: no rules
  }
  YAML::Node list = root.IsMap() ? root["rules"] : root;
  if (!list || !list.IsSequence()) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.file_name, ":", root.Mark().line + 1,
                     ": expected a top-level 'rules:' list (docs/alerting.md)"));
  }
  std::set<std::string> names;
  try {
    for (const auto& item : list) {
      Rule r;
      if (absl::Status st = parseOne(item, options, r); !st.ok()) {
        return st;
      }
      if (!names.insert(r.name).second) {
        return absl::InvalidArgumentError(absl::StrCat(options.file_name, ":", r.line, ": rule '",
                                                       r.name, "': duplicate rule name"));
      }
      set.rules.push_back(std::move(r));
    }
  } catch (const YAML::Exception& e) {
    // Type conversions inside yaml-cpp (e.g. a sequence where a scalar is expected).
    return absl::InvalidArgumentError(
        absl::StrCat(options.file_name, ":", e.mark.line + 1, ": invalid rule: ", e.msg));
  }
  return set;
}

}  // namespace vigil::aggregator::alerting

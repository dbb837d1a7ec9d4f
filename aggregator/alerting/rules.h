// Alert rules: the YAML format operators write (docs/alerting.md), parsed into validated Rule
// values. Parsing never throws: a broken file, an unknown metric or a bad regex comes back as an
// InvalidArgument that names the file line and the rule, so the engine can keep the old rules.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "aggregator/series.h"

namespace vigil::aggregator::alerting {

enum class RuleKind { kThreshold, kAbsent, kAgentOffline, kAnomaly, kForecast };
enum class Func { kLast, kAvg, kMax, kMin, kRate, kQuantile };
enum class Cmp { kAbove, kBelow };
enum class AnomalyMethod { kZScore, kEwma };

const char* ruleKindName(RuleKind kind);

struct Rule {
  std::string name;
  int line = 0;  // 1-based line of the rule in its file
  RuleKind kind = RuleKind::kThreshold;
  std::string severity = "warning";

  // What is evaluated (all kinds but agent_offline).
  Selector selector;
  std::string selector_text;
  Func func = Func::kLast;
  int64_t window_ms = 60000;
  double quantile = 0.99;  // Func::kQuantile
  // Sum the per-series values by these labels (empty + aggregate: one sum over all series).
  bool aggregate = false;
  std::vector<std::string> sum_by;
  double scale = 1.0;

  // threshold / forecast: fire when value `cmp` threshold; once active, stay active until the
  // value crosses `clear` (hysteresis; defaults to `threshold`).
  Cmp cmp = Cmp::kAbove;
  double threshold = 0;
  double clear = 0;

  int64_t for_ms = 0;
  int64_t keep_firing_for_ms = 0;

  // anomaly: the baseline is [now - window - baseline, now - window); the current value is
  // `func` over the last `window`.
  AnomalyMethod method = AnomalyMethod::kZScore;
  int64_t baseline_ms = 600000;
  int64_t min_history_ms = 120000;
  double band = 3.0;        // |z| (or EWMA band width in std devs) that fires
  double clear_band = 2.0;  // |z| below which an active anomaly clears
  double ewma_alpha = 0.1;
  double min_stddev = 1e-9;  // floor, so a perfectly flat baseline does not divide by zero

  // forecast: extrapolate a linear fit over `window` to now + horizon.
  int64_t horizon_ms = 4LL * 3600 * 1000;

  // agent_offline: an agent is offline when disconnected or silent for this long.
  int64_t offline_after_ms = 30000;

  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
};

struct RuleSet {
  std::vector<Rule> rules;
  std::string source;  // file path, for messages
};

struct ParseOptions {
  std::string file_name = "<rules>";
  // Metric names that exist (the series store) and names vigil is known to produce; a rule
  // naming a metric in neither is rejected. Null source: only the known list is consulted.
  const SeriesSource* source = nullptr;
  bool check_metrics = true;
};

// The metric families vigil's agents produce, whether or not data has arrived yet.
const absl::flat_hash_set<std::string>& knownVigilMetrics();

// Parses a rules file. Errors read "FILE:LINE: rule 'NAME': reason".
absl::StatusOr<RuleSet> parseRules(const std::string& yaml_text, const ParseOptions& options);

// Parses "30s", "5m", "4h", "1h30m", "250ms" or a bare number of seconds.
absl::StatusOr<int64_t> parseDurationMs(const std::string& text);

}  // namespace vigil::aggregator::alerting

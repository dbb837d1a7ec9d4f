// The alert engine: evaluates rules (rules.h) against a SeriesSource and the fleet's liveness,
// runs each alert instance through pending -> firing -> resolved (with `for`,
// `keep_firing_for` and hysteresis), keeps that state in SQLite so a restart resumes it, and
// exposes it as ALERTS series and as JSON. Notifiers read the alerts it returns.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "aggregator/alerting/rules.h"
#include "aggregator/series.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator::alerting {

enum class AlertState {
  kPending,
  kFiring,
  kResolved,
  // A firing alert whose data vanished (series gone, agent offline). Deliberately not
  // "resolved": nobody showed the problem went away. Agent loss has its own rule kind.
  kNoData,
};
const char* alertStateName(AlertState s);

struct Alert {
  std::string rule;
  std::string fingerprint;
  LabelSet labels;  // alertname, severity, the series' labels, the rule's labels (sorted)
  std::map<std::string, std::string> annotations;
  std::string severity;
  AlertState state = AlertState::kPending;
  int64_t active_since_ms = 0;  // when the condition first held (start of `for`)
  int64_t fired_at_ms = 0;
  int64_t resolved_at_ms = 0;
  int64_t last_held_ms = 0;  // last evaluation at which the condition held
  double value = 0;
};

struct AgentStatus {
  std::string agent_id;
  std::string node;
  bool online = false;
  int64_t last_seen_ms = 0;
};

struct EngineStats {
  uint64_t evaluations = 0;
  uint64_t rule_evaluations = 0;
  uint64_t state_changes = 0;
  uint64_t persist_errors = 0;
  uint64_t instances_capped = 0;
};

struct EngineOptions {
  // Resolved alerts stay listed (and are re-sent by notifiers) this long.
  int64_t resolved_retention_ms = 10 * 60 * 1000;
  // A no-data alert is given up (resolved) after this long.
  int64_t nodata_timeout_ms = 60 * 60 * 1000;
  // Cap on alert instances per rule, so a rule over a high-cardinality metric cannot explode.
  size_t max_instances_per_rule = 1000;
};

class AlertEngine {
 public:
  // db_path "" keeps state in memory only (tests).
  static absl::StatusOr<std::unique_ptr<AlertEngine>> create(const std::string& db_path,
                                                             EngineOptions options = {});
  ~AlertEngine();

  // Replaces the rules. Alerts of rules that still exist (same name) keep their state; alerts
  // of removed rules are resolved.
  void setRules(RuleSet rules, int64_t now_ms);
  const RuleSet& rules() const { return rules_; }

  void evaluate(const SeriesSource& source, const std::vector<AgentStatus>& agents, int64_t now_ms);

  // Pending, firing, no-data and recently resolved alerts, ordered by rule then labels.
  std::vector<Alert> alerts() const;

  // ALERTS{alertname,alertstate,...} 1 for pending/firing/nodata alerts, plus engine counters.
  void render(MetricSink& out) const;
  const EngineStats& stats() const { return stats_; }

  // The value of one evaluation of a rule, per alert instance (exposed for tests).
  struct Instance {
    LabelSet labels;  // series labels without __name__
    double value = 0;
    bool fire = false;  // the firing condition holds
    bool hold = false;  // the clear threshold has not been crossed
  };
  static std::vector<Instance> evaluateRule(const Rule& rule, const SeriesSource& source,
                                            const std::vector<AgentStatus>& agents, int64_t now_ms);

 private:
  AlertEngine(EngineOptions options) : options_(options) {}
  absl::Status openDb(const std::string& path);
  void load();
  void persist();
  Alert makeAlert(const Rule& rule, const Instance& inst) const;

  EngineOptions options_;
  RuleSet rules_;
  // rule name -> fingerprint -> alert
  std::map<std::string, std::map<std::string, Alert>> alerts_;
  EngineStats stats_;
  sqlite3* db_ = nullptr;
  bool dirty_ = false;
};

// Expands {{ $labels.NAME }} and {{ $value }} in an annotation template.
std::string expandTemplate(const std::string& text, const LabelSet& labels, double value);

}  // namespace vigil::aggregator::alerting

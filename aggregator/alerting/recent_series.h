// RecentSeries: a small bounded in-memory SeriesSource. The aggregator records what it renders
// into it each evaluation tick when no series store is wired in, and it backs the test-only
// injection path (--enable_test_injection). Bounded by age and by series count; series over the
// cap are counted, not stored.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "aggregator/series.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator::alerting {

class RecentSeries final : public SeriesSource, public MetricSink {
 public:
  RecentSeries(int64_t retention_ms, size_t max_series)
      : retention_ms_(retention_ms), max_series_(max_series) {}

  // Samples passed to sample() without a timestamp get `now_ms`; samples older than the
  // retention are dropped.
  void setNow(int64_t now_ms);
  // How far back samples are kept; the next setNow() drops older ones.
  void setRetention(int64_t retention_ms) { retention_ms_ = retention_ms; }
  int64_t retention() const { return retention_ms_; }
  void add(const std::string& name, const LabelSet& labels, Sample s);

  std::vector<Series> select(const Selector& selector, int64_t start_ms,
                             int64_t end_ms) const override;
  bool hasMetric(const std::string& metric) const override;

  void family(absl::string_view, MetricType, absl::string_view) override {}
  void ensureFamily(absl::string_view, MetricType) override {}
  void sample(absl::string_view family, absl::string_view name, const Labels& labels, double value,
              std::optional<int64_t> timestamp_ms) override;

  // Metrics for which this returns true are not recorded (another source holds them).
  // The answer is asked once per metric name and tick (setNow() forgets them): the aggregator's
  // skip asks the series store, whose lock the series thread holds while it ingests a frame, and
  // asking it for each of the 40,000 samples a tick records at 10,000 agents stalled the event
  // loop behind that thread.
  void setSkip(std::function<bool(const std::string&)> skip) {
    skip_ = std::move(skip);
    skip_cache_.clear();
  }

  size_t seriesCount() const { return series_.size(); }
  uint64_t overflow() const { return overflow_; }

 private:
  int64_t retention_ms_;
  size_t max_series_;
  int64_t now_ms_ = 0;
  uint64_t overflow_ = 0;
  // Key includes __name__. Hashed, not ordered: the aggregator records every agent's own series
  // each tick, and at 10,000 agents comparing long label vectors in an ordered map was the
  // largest cost of the whole aggregator (perf, 10,000 simulated agents at 4 s). select() sorts
  // its result instead.
  absl::flat_hash_map<LabelSet, std::deque<Sample>> series_;
  std::map<std::string, size_t> per_metric_;
  std::function<bool(const std::string&)> skip_;
  absl::flat_hash_map<std::string, bool> skip_cache_;  // this tick's answers of skip_
};

// Reads from several sources in order of preference: a metric is read from the first source
// that has it (the series store, then the recent /metrics history for aggregator-level
// metrics such as vigil_agent_up, then the test injection source), so no series is seen twice.
class MergedSource final : public SeriesSource {
 public:
  explicit MergedSource(std::vector<const SeriesSource*> sources) : sources_(std::move(sources)) {}
  std::vector<Series> select(const Selector& selector, int64_t start_ms,
                             int64_t end_ms) const override;
  bool hasMetric(const std::string& metric) const override;

 private:
  std::vector<const SeriesSource*> sources_;
};

}  // namespace vigil::aggregator::alerting

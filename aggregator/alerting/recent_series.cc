#include "aggregator/alerting/recent_series.h"

#include <algorithm>

namespace vigil::aggregator::alerting {

void RecentSeries::setNow(int64_t now_ms) {
  now_ms_ = now_ms;
  skip_cache_.clear();
  int64_t cutoff = now_ms - retention_ms_;
  for (auto it = series_.begin(); it != series_.end();) {
    auto& d = it->second;
    while (!d.empty() && d.front().timestamp_ms < cutoff) {
      d.pop_front();
    }
    if (d.empty()) {
      for (const auto& kv : it->first) {
        if (kv.first == "__name__" && --per_metric_[kv.second] == 0) {
          per_metric_.erase(kv.second);
        }
      }
      series_.erase(it++);
    } else {
      ++it;
    }
  }
}

void RecentSeries::add(const std::string& name, const LabelSet& labels, Sample s) {
  if (skip_) {
    auto [it, fresh] = skip_cache_.try_emplace(name, false);
    if (fresh) {
      it->second = skip_(name);
    }
    if (it->second) {
      return;
    }
  }
  LabelSet key = labels;
  key.emplace_back("__name__", name);
  std::sort(key.begin(), key.end());
  auto it = series_.find(key);
  if (it == series_.end()) {
    if (series_.size() >= max_series_) {
      overflow_++;
      return;
    }
    it = series_.emplace(std::move(key), std::deque<Sample>{}).first;
    per_metric_[name]++;
  }
  auto& d = it->second;
  if (!d.empty() && d.back().timestamp_ms >= s.timestamp_ms) {
    if (d.back().timestamp_ms == s.timestamp_ms) {
      d.back().value = s.value;
    }
    return;  // out of order: the window only moves forward
  }
  d.push_back(s);
}

void RecentSeries::sample(absl::string_view, absl::string_view name, const Labels& labels,
                          double value, std::optional<int64_t> timestamp_ms) {
  add(std::string(name), labels, Sample{timestamp_ms.value_or(now_ms_), value});
}

std::vector<Series> RecentSeries::select(const Selector& selector, int64_t start_ms,
                                         int64_t end_ms) const {
  std::vector<Series> out;
  for (const auto& [labels, samples] : series_) {
    bool ok = true;
    bool name_ok = selector.metric.empty();
    for (const auto& kv : labels) {
      if (kv.first == "__name__" && kv.second == selector.metric) {
        name_ok = true;
      }
    }
    if (!name_ok) {
      continue;
    }
    for (const LabelMatcher& m : selector.matchers) {
      std::string v;
      for (const auto& kv : labels) {
        if (kv.first == m.name) {
          v = kv.second;
        }
      }
      if (!m.matches(v)) {
        ok = false;
        break;
      }
    }
    if (!ok) {
      continue;
    }
    Series s;
    s.labels = labels;
    for (const Sample& x : samples) {
      if (x.timestamp_ms >= start_ms && x.timestamp_ms <= end_ms) {
        s.samples.push_back(x);
      }
    }
    if (!s.samples.empty()) {
      out.push_back(std::move(s));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Series& a, const Series& b) { return a.labels < b.labels; });
  return out;
}

bool RecentSeries::hasMetric(const std::string& metric) const {
  return per_metric_.count(metric) > 0;
}

std::vector<Series> MergedSource::select(const Selector& selector, int64_t start_ms,
                                         int64_t end_ms) const {
  for (const SeriesSource* s : sources_) {
    if (s->hasMetric(selector.metric)) {
      return s->select(selector, start_ms, end_ms);
    }
  }
  return {};
}

bool MergedSource::hasMetric(const std::string& metric) const {
  return std::any_of(sources_.begin(), sources_.end(),
                     [&](const SeriesSource* s) { return s->hasMetric(metric); });
}

}  // namespace vigil::aggregator::alerting

// Types shared by the aggregator's series store, its query API and the alert engine: label sets,
// samples, matchers, and the read interface the alert engine evaluates rules against.
#pragma once

#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace vigil::aggregator {

// Sorted by name, unique names; includes __name__ for the metric name.
using LabelSet = std::vector<std::pair<std::string, std::string>>;

struct Sample {
  int64_t timestamp_ms = 0;
  double value = 0;
};

struct Series {
  LabelSet labels;
  std::vector<Sample> samples;  // ascending timestamps
};

struct LabelMatcher {
  enum class Op { kEqual, kNotEqual, kRegex, kNotRegex };
  std::string name;
  Op op = Op::kEqual;
  std::string value;
  std::shared_ptr<const std::regex> regex;  // set for kRegex/kNotRegex (fully anchored)

  // Builds a matcher; a bad regex is an InvalidArgument naming the label and the error.
  static absl::StatusOr<LabelMatcher> make(std::string name, Op op, std::string value);
  bool matches(const std::string& label_value) const;
};

// A metric selector: METRIC{l="v",l2=~"re",...}.
struct Selector {
  std::string metric;
  std::vector<LabelMatcher> matchers;
};

// Parses `metric{a="b",c!="d",e=~"f.*",g!~"h"}`; errors name the position and the problem.
absl::StatusOr<Selector> parseSelector(const std::string& text);

// Read side of the series store.
class SeriesSource {
 public:
  virtual ~SeriesSource() = default;
  // Series of `selector` with their samples in [start_ms, end_ms].
  virtual std::vector<Series> select(const Selector& selector, int64_t start_ms,
                                     int64_t end_ms) const = 0;
  // True if any series of this metric name exists (to reject rules naming unknown metrics).
  virtual bool hasMetric(const std::string& metric) const = 0;
};

}  // namespace vigil::aggregator

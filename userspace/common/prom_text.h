// Writer for the Prometheus text exposition format (version 0.0.4) and, on request, OpenMetrics
// 1.0 text. Samples of one family are grouped under one HELP/TYPE header whatever order they are
// added in, label values are escaped, and values print exactly (integers without exponent).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace vigil {

using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram, kUntyped };

// Where metric samples go: the text writer below, or the aggregator's series store. Renderers
// (frame_metrics.h) write to a MetricSink so every consumer sees the same names and labels.
class MetricSink {
 public:
  virtual ~MetricSink() = default;

  // Declares a family; samples added before or after land under its header.
  virtual void family(absl::string_view name, MetricType type, absl::string_view help) = 0;

  // Declares a family's type unless it was declared already (keeps an earlier HELP).
  virtual void ensureFamily(absl::string_view name, MetricType type) = 0;

  // Adds one sample. `name` may carry a suffix of its family (_bucket, _sum, _count, _total).
  virtual void sample(absl::string_view family, absl::string_view name, const Labels& labels,
                      double value, std::optional<int64_t> timestamp_ms = std::nullopt) = 0;

  // Convenience for a sample whose name is the family name.
  void sample(absl::string_view family, const Labels& labels, double value,
              std::optional<int64_t> timestamp_ms = std::nullopt) {
    sample(family, family, labels, value, timestamp_ms);
  }
};

class PromWriter final : public MetricSink {
 public:
  explicit PromWriter(bool open_metrics = false) : open_metrics_(open_metrics) {}

  void family(absl::string_view name, MetricType type, absl::string_view help) override;
  void ensureFamily(absl::string_view name, MetricType type) override;
  void sample(absl::string_view family, absl::string_view name, const Labels& labels, double value,
              std::optional<int64_t> timestamp_ms = std::nullopt) override;
  using MetricSink::sample;

  std::string finish() const;

  static std::string contentType(bool open_metrics);

 private:
  struct Family {
    std::string name;
    MetricType type = MetricType::kUntyped;
    std::string help;
    std::string body;
  };
  Family& get(absl::string_view name);

  bool open_metrics_;
  std::vector<Family> families_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// Formats a sample value as Prometheus expects: integers exactly, NaN and +Inf/-Inf by name.
std::string formatValue(double value);

// Escapes a label value (backslash, double quote, newline).
std::string escapeLabelValue(absl::string_view value);

// True when `name` is a valid Prometheus metric name / label name.
bool validMetricName(absl::string_view name);
bool validLabelName(absl::string_view name);

}  // namespace vigil

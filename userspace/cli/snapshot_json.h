// Snapshot → JSON for `vigil snapshot --json`. Field names are the Prometheus metric names
// wherever the two overlap, in the same base units (seconds, bytes), so a script written
// against the JSON reads the same numbers a dashboard shows. docs/metrics.md ("Snapshot JSON")
// documents every field.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "capnp/snapshot.h"

namespace vigil::cli {

nlohmann::json snapshotToJson(const Snapshot& s);

// A metric list (host or self) as an object keyed by metric name: a metric without labels is a
// number, one with labels an array of {"labels": {...}, "value": v}.
nlohmann::json metricsToJson(const std::vector<MetricSample>& metrics);

// Upper bound (seconds) of the log2 bucket holding quantile q of the histogram, or -1 when
// it is empty. Bucket i holds values below 2^(i+1) units (see wire::Histogram).
double log2Quantile(const std::vector<uint64_t>& buckets, uint64_t unit_ns, double q);

}  // namespace vigil::cli

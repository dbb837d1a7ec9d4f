// Renders a Snapshot as Prometheus metrics. The agent's /metrics, the aggregator's /metrics and
// the CLI share this so one metric means the same everywhere; docs/metrics.md lists the names.
#pragma once

#include "capnp/snapshot.h"
#include "userspace/common/prom_text.h"

namespace vigil {

struct ExpositionOptions {
  // Labels added to every series (the aggregator adds node="...").
  Labels base_labels;
  // Timestamp to attach to samples, or none for "now" semantics.
  std::optional<int64_t> timestamp_ms;
};

// Declares every vigil metric family (HELP and TYPE) once.
void declareFrameFamilies(MetricSink& out);

void writeProcessMetrics(const ProcessStats& p, const ExpositionOptions& opts, MetricSink& out);
void writeSnapshotMetrics(const Snapshot& s, const ExpositionOptions& opts, MetricSink& out);

// Bucket upper bounds in seconds for a log2 histogram with `unit_ns` units: bucket i holds
// values below 2^(i+1) units.
double log2BucketUpperSeconds(size_t i, uint64_t unit_ns);

}  // namespace vigil

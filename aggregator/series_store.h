// The aggregator's in-memory time series store: every series the fleet reports, over the
// retention window (default 2 h), for the query API and the alert engine (it implements
// SeriesSource). It is a consumer of the ingest log: frames are rendered through the same
// MetricSink path as /metrics (frame_metrics.h), so a series here has exactly the name and labels
// it has on /metrics, with one sample per frame at the frame's end time. Being in memory, it is
// rebuilt at start by replaying the retention window of the log.
//
// Samples are compressed in chunks of up to 120 with the Gorilla scheme (Pelkonen et al.,
// "Gorilla: A Fast, Scalable, In-Memory Time Series Database", VLDB 2015, section 4.1):
// delta-of-delta timestamps in variable-width buckets and XOR-encoded float64 values. This is
// the core storage of the component, so it is written here rather than taken from a library: no
// Debian package offers an embeddable Gorilla chunk codec, and the format is ~150 lines. The bit
// layout is our own (documented in series_store.cc) and never leaves the process.
//
// A postings index (label pair → sorted series ids) answers selectors. Cardinality is bounded per
// agent (SeriesStoreOptions::max_series_per_agent); samples of series refused by the cap are
// counted per agent and exported.
#pragma once

#include <cstdint>
#include <climits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/series.h"
#include "capnp/snapshot.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator {

// One Gorilla-compressed run of samples with strictly increasing timestamps.
class XorChunk {
 public:
  static constexpr int kMaxSamples = 120;

  // Appends a sample; the caller guarantees t > lastTime() when count() > 0.
  void append(int64_t t_ms, double value);
  // Appends the samples with start_ms <= t <= end_ms to `out`, in order.
  void decode(std::vector<Sample>& out, int64_t start_ms = INT64_MIN,
              int64_t end_ms = INT64_MAX) const;
  // Drops the encoder's spare capacity once the chunk is full.
  void seal() { bytes_.shrink_to_fit(); }

  int count() const { return count_; }
  bool full() const { return count_ >= kMaxSamples; }
  int64_t firstTime() const { return first_t_; }
  int64_t lastTime() const { return prev_t_; }
  size_t bytes() const { return bytes_.capacity(); }
  size_t usedBytes() const { return (bits_ + 7) / 8; }

 private:
  void writeBits(uint64_t v, int n);

  std::vector<uint8_t> bytes_;
  uint32_t bits_ = 0;
  uint16_t count_ = 0;
  uint8_t leading_ = 0xff;  // 0xff: no XOR window yet
  uint8_t trailing_ = 0;
  int64_t first_t_ = 0;
  int64_t prev_t_ = 0;
  int64_t prev_delta_ = 0;
  uint64_t prev_bits_ = 0;
};

// The Prometheus stale marker (a NaN with this exact bit pattern), written when a series ends.
constexpr uint64_t kStaleNaNBits = 0x7ff0000000000002ULL;
double staleNaN();
bool isStaleNaN(double v);

int64_t unixMillis();

struct SeriesStoreOptions {
  int64_t retention_ms = 2LL * 3600 * 1000;
  size_t max_series_per_agent = 20000;
};

// Renders a frame as (labels incl. __name__, value) pairs, exactly as /metrics shows the agent.
struct FrameSample {
  LabelSet labels;
  double value = 0;
};
// Agent-supplied names and values are checked here, since everything downstream (remote-write
// receivers especially, which refuse a whole request for one bad label) needs valid ones: a
// sample with an invalid metric or label name is left out, and a label value that is not UTF-8
// has its bad bytes replaced by U+FFFD. Both are counted in `issues` when given.
struct RenderIssues {
  uint64_t invalid_names = 0;
  uint64_t invalid_utf8 = 0;
};
std::vector<FrameSample> renderFrameSamples(const Snapshot& frame, RenderIssues* issues = nullptr);
// The `node` label the aggregator gives an agent's series.
std::string nodeLabel(const Snapshot& frame);
// Key of a label set (for hashing); unique per label set.
std::string labelKey(const LabelSet& labels);
// 64-bit hash of a label set, independent of label order (a sum of per-pair hashes), so the
// store can hash labels as a renderer emits them without sorting or copying them first.
uint64_t labelHash(const LabelSet& labels);

// A series' labels packed into one allocation: for each label (sorted by name) a 4-byte name
// length, the name, a 4-byte value length, the value. About a third of the memory of a LabelSet
// (two std::string of 32 bytes per label plus heap copies of long names and values).
class CompactLabels {
 public:
  CompactLabels() = default;
  explicit CompactLabels(const LabelSet& labels);

  size_t size() const { return count_; }
  // Calls f(name, value) for each label in order.
  template <typename F>
  void forEach(F&& f) const {
    size_t at = 0;
    for (uint32_t i = 0; i < count_; ++i) {
      absl::string_view k = read(at);
      absl::string_view v = read(at);
      f(k, v);
    }
  }
  // The value of `name`, or false.
  bool find(absl::string_view name, absl::string_view* value) const;
  LabelSet toLabelSet() const;
  bool operator==(const LabelSet& labels) const;
  size_t heapBytes() const { return buf_.capacity() + 1; }

 private:
  absl::string_view read(size_t& at) const;
  std::string buf_;
  uint32_t count_ = 0;
};

struct SeriesStoreStats {
  uint64_t samples_appended = 0;
  uint64_t samples_out_of_order = 0;
  uint64_t stale_markers = 0;  // stored when a series leaves its agent's frames  // timestamp not
                               // after the series' last sample
  uint64_t frames_appended = 0;
  uint64_t frames_too_old = 0;  // frame ended before now - retention
  RenderIssues invalid;         // samples dropped / values repaired while rendering frames
  uint64_t series_created = 0;
  uint64_t series_removed = 0;   // all samples aged out
  uint64_t fast_path_hits = 0;   // frame samples matched to a stored series without allocating
  uint64_t hash_collisions = 0;  // series sharing a labelHash with another (now)
  uint64_t positional_hits = 0;  // of fast_path_hits: found at the same position as last frame
  absl::flat_hash_map<std::string, uint64_t> dropped_by_agent;  // cap overflow, in samples
};

class SeriesStore final : public SeriesSource {
 public:
  explicit SeriesStore(SeriesStoreOptions options = {}) : options_(options) {}

  // Appends one sample per series of the frame at the frame's end time.
  void appendFrame(const Snapshot& frame);

  enum class AppendResult { kOk, kOutOfOrder, kOverCap };
  // Appends one sample to the series `labels` (sorted, with __name__) owned by `agent_id`.
  AppendResult append(const std::string& agent_id, const LabelSet& labels, int64_t t_ms,
                      double value);

  // Drops chunks that ended before now - retention, and series left empty.
  void enforceRetention(int64_t now_ms);

  // Samples in [start_ms, end_ms]; stale markers are left out (a series simply ends).
  std::vector<Series> select(const Selector& selector, int64_t start_ms,
                             int64_t end_ms) const override;
  // Same, keeping stale markers (staleNaN()) where a series ended: for lookback queries.
  std::vector<Series> selectWithStaleMarkers(const Selector& selector, int64_t start_ms,
                                             int64_t end_ms) const;
  bool hasMetric(const std::string& metric) const override;
  // Label sets of the series matching `selector` with a sample in [start_ms, end_ms].
  std::vector<LabelSet> seriesLabels(const Selector& selector, int64_t start_ms,
                                     int64_t end_ms) const;

  // Self-metrics: series count, samples, bytes, cap drops per agent.
  void writeMetrics(MetricSink& out) const;

  size_t numSeries() const;
  uint64_t numSamples() const;
  // Bytes held by chunk payloads (capacity) and the total including index and labels (estimate).
  size_t chunkBytes() const;
  size_t memoryBytes() const;
  SeriesStoreStats stats() const;
  const SeriesStoreOptions& options() const { return options_; }

 private:
  struct MemSeries {
    uint32_t id = 0;
    // Position in its agent's previous frame (emit_order_), to predict the next sample's series.
    uint32_t emit_pos = UINT32_MAX;
    CompactLabels labels;
    std::string agent_id;
    std::vector<XorChunk> chunks;  // ascending time; the last is the head being appended to
    uint64_t samples = 0;
  };
  using Postings = std::vector<uint32_t>;  // ascending series ids

  class FrameSink;
  // absent_hash: the caller looked labelHash(labels) up already and found no such series (saves
  // a second hash and probe per new series).
  AppendResult appendLocked(const std::string& agent_id, const LabelSet& labels, int64_t t_ms,
                            double value, uint32_t* id_out,
                            std::optional<uint64_t> absent_hash = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  AppendResult appendSample(MemSeries& s, int64_t t_ms, double value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The series with this labelHash() whose labels satisfy eq, or null.
  template <typename Eq>
  MemSeries* findLocked(uint64_t hash, const Eq& eq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<Series> selectImpl(const Selector& selector, int64_t start_ms, int64_t end_ms,
                                 bool keep_stale) const;
  std::vector<uint32_t> candidates(const Selector& selector) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void removeSeries(uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SeriesStoreOptions options_;
  mutable absl::Mutex mu_;
  uint32_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint32_t, std::unique_ptr<MemSeries>> series_ ABSL_GUARDED_BY(mu_);
  // labelHash → series (owned by series_; a pointer saves a second lookup per sample); the
  // rare second series of an equal hash goes to collisions_ (by id).
  absl::flat_hash_map<uint64_t, MemSeries*> by_hash_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> collisions_ ABSL_GUARDED_BY(mu_);
  // name → value → postings.
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, Postings>> postings_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> per_agent_ ABSL_GUARDED_BY(mu_);
  SeriesStoreStats stats_ ABSL_GUARDED_BY(mu_);
  // Per agent: ids of the series in its last frame (sorted), to mark the ones that end.
  absl::flat_hash_map<std::string, std::vector<uint32_t>> last_frame_series_ ABSL_GUARDED_BY(mu_);
  uint64_t live_samples_ ABSL_GUARDED_BY(mu_) = 0;
  // No stored sample is older than this (a lower bound): retention skips its walk over all
  // series while nothing can have expired.
  int64_t oldest_ms_ ABSL_GUARDED_BY(mu_) = INT64_MAX;
  // Per agent: the series of its last frame in the order the renderer emitted them (null where
  // a sample was refused). Cleared whenever retention removes series.
  absl::flat_hash_map<std::string, std::vector<MemSeries*>> emit_order_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vigil::aggregator

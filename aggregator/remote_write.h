// Forwards the fleet's series to any Prometheus remote-write 1.0 receiver (Prometheus with
// --web.enable-remote-write-receiver, VictoriaMetrics, Mimir, Thanos receive, ...).
//
// Each configured URL has a RemoteWriter: a consumer of the durable ingest log with its own
// persisted cursor. It reads frames after the cursor, renders them with the same names and
// labels as /metrics (renderFrameSamples), batches them into a WriteRequest (protobuf, then
// snappy block format), POSTs it with the headers the spec requires, and moves the cursor only
// once the receiver answered 2xx (or refused the batch for good with a 4xx, which is counted as a
// drop). 5xx, 429 and network errors are retried with exponential backoff, so a receiver outage
// loses nothing: the log holds the data and the cursor resumes after an aggregator restart with
// no gap and no resend.
//
// A series that was in an agent's previous frame but not in its current one (an exited process,
// a removed container) gets a Prometheus stale marker at the current frame's time; so do all of
// an agent's series once it has sent nothing for `agent_stale_after_ms` while the writer is
// caught up. See docs/remote-write.md.
#pragma once

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "aggregator/ingest_log.h"
#include "aggregator/series_store.h"

namespace vigil::aggregator {

struct RemoteWriteOptions {
  size_t max_samples_per_send = 5000;  // a batch closes at the first frame that reaches this
  size_t max_frames_per_read = 64;
  int64_t timeout_ms = 30000;  // per request
  int64_t min_backoff_ms = 100;
  int64_t max_backoff_ms = 30000;
  int64_t poll_interval_ms = 500;  // how often to look for new frames once caught up
  int64_t agent_stale_after_ms = 60000;
  std::string user_agent = "vigil-aggregator/0.1";
  // At start, log records before the cursor read to learn each agent's last series set.
  size_t prime_records = 1024;
};

struct PendingSeries {
  LabelSet labels;              // sorted by name, includes __name__
  std::vector<Sample> samples;  // ascending timestamps
};

// Serializes series as a remote-write WriteRequest and compresses it (snappy block format).
std::string encodeWriteRequest(const std::vector<PendingSeries>& series);
// The inverse, for tests and debugging: uncompresses and parses a request body.
absl::StatusOr<std::vector<PendingSeries>> decodeWriteRequest(const std::string& body);

// Turns frames into per-series sample lists, adding stale markers for series that ended.
class WriteBatcher {
 public:
  void addFrame(const Snapshot& frame);
  // Records which series the agent had in `frame` without sending anything: used at start on the
  // frames just before the cursor, so series that end right after a restart still get markers.
  void prime(const Snapshot& frame);
  // Stale markers at t_ms for every series of agents whose last frame ended before `before_ms`;
  // those agents are forgotten. Returns the number of markers added.
  size_t expireAgents(int64_t before_ms, int64_t t_ms);
  size_t samples() const { return samples_; }
  size_t staleMarkers() const { return stale_markers_; }
  // The batch so far, labels sorted, each series' samples in timestamp order; then empties it.
  std::vector<PendingSeries> take();

 private:
  void add(const LabelSet& labels, int64_t t_ms, double value);

  struct AgentState {
    int64_t last_frame_ms = 0;
    absl::flat_hash_map<std::string, LabelSet> series;  // key → labels of the last frame
  };
  absl::flat_hash_map<std::string, AgentState> agents_;
  absl::flat_hash_map<std::string, PendingSeries> batch_;
  size_t samples_ = 0;
  size_t stale_markers_ = 0;
};

struct RemoteWriteStats {
  uint64_t samples_sent = 0;
  uint64_t frames_sent = 0;      // log records covered by accepted requests
  uint64_t samples_failed = 0;   // in attempts that failed and were retried
  uint64_t samples_dropped = 0;  // refused with a non-retryable 4xx
  uint64_t stale_markers = 0;
  uint64_t retries = 0;
  uint64_t requests = 0;
  uint64_t frames_undecodable = 0;
  absl::flat_hash_map<int, uint64_t> responses;  // by HTTP status (0: no response)
  int64_t last_success_ms = 0;
  int64_t cursor = 0;
  int64_t head = 0;
};

class RemoteWriter {
 public:
  // `url` must be http://host[:port]/path. `consumer` names the cursor in the ingest log.
  static absl::StatusOr<std::unique_ptr<RemoteWriter>> create(kj::Timer& timer,
                                                              kj::Network& network, IngestLog& log,
                                                              std::string url, std::string consumer,
                                                              RemoteWriteOptions options);
  ~RemoteWriter();

  // Forwards forever; drop the promise to stop (an unacknowledged batch is resent next time).
  kj::Promise<void> run();

  const std::string& url() const { return url_; }
  const RemoteWriteStats& stats() const { return stats_; }
  // Appends this writer's samples to the families written by writeRemoteWriteMetrics.
  void writeMetrics(MetricSink& out) const;

 private:
  RemoteWriter(kj::Timer& timer, kj::Network& network, IngestLog& log, std::string url,
               std::string consumer, RemoteWriteOptions options);
  kj::Promise<void> step();
  // Fills pending_ from the log; false when there is nothing to send.
  bool buildBatch();
  kj::Promise<int> send();
  kj::Promise<void> handleStatus(int status);
  void commit();

  kj::Timer& timer_;
  IngestLog& log_;
  std::string url_;
  std::string consumer_;
  RemoteWriteOptions options_;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::HttpHeaderId content_encoding_;
  kj::HttpHeaderId user_agent_;
  kj::HttpHeaderId rw_version_;
  kj::Own<kj::HttpClient> client_;
  WriteBatcher batcher_;
  int64_t cursor_ = 0;
  int64_t backoff_ms_ = 0;
  struct Pending {
    std::string body;
    int64_t end_id = 0;
    size_t samples = 0;
    size_t stale_markers = 0;
    size_t frames = 0;
  };
  std::unique_ptr<Pending> pending_;
  std::string last_error_;
  RemoteWriteStats stats_;
};

// Declares the remote-write families and writes every writer's samples.
void writeRemoteWriteMetrics(const std::vector<std::unique_ptr<RemoteWriter>>& writers,
                             MetricSink& out);

}  // namespace vigil::aggregator

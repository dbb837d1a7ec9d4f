// Group commit for the aggregator's ingest log. Frames accepted by the RPC event loop are queued
// here; one worker thread writes whatever has gathered (bounded by frames, bytes and a short
// linger) to the ingest log in ONE transaction with one fsync and hands the batch back to the
// event loop, which applies each frame to the fleet Store and only then resolves the frame's
// acknowledgement. Before the write, the worker decodes and checks each frame (`prepare`), so
// the event loop never unpacks a frame. After it, the appended frames go to the off-loop
// consumer (the series store) on a third thread, which works beside the next commit: the series
// store trails the acks by at most two batches, and a slow series store slows the commits (its
// queue is bounded; then the ingest queue bound pushes back).
//
// So the promise of docs/transport.md still holds frame by frame: an ack is sent only after the
// COMMIT that made its frame durable returned, and (agent, epoch, seq) dedupe happens inside that
// transaction (also against earlier frames of the same batch). What changes is the cost: one
// fsync per batch instead of per frame, and decoding the frame into series off the event loop.
//
// Limits are counted, never silent: a full queue refuses the push (reason queue_full, the agent
// retries), and every batch is counted by size, bytes, commit time and what closed it.
//
// A failed commit fails the whole batch (nothing of it is in the log) and fences each of its
// (agent, epoch) pairs (a push refused for a full queue fences its agent the same way): later
// frames of those agents that were already queued behind it are refused too, until the agent
// registers again and resumes after its last durable seq. Without the fence a pipelined seq N+1
// could commit while N failed, and the resent N would then be taken for an old duplicate.
#pragma once

#include <kj/async.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "aggregator/ingest_log.h"
#include "capnp/snapshot.h"
#include "userspace/common/prom_text.h"

namespace vigil::aggregator {

struct GroupCommitOptions {
  // A batch is closed when it holds max_batch_frames frames or max_batch_bytes payload bytes,
  // or when linger has passed since its first frame was queued (frames that queued up during
  // the previous commit go out at once).
  size_t max_batch_frames = 1024;
  size_t max_batch_bytes = 16u << 20;
  int64_t linger_us = 2000;
  // Frames queued (not yet committed) at most; beyond it pushes are refused (queue_full).
  size_t max_queue_frames = 20000;
};

// One frame on its way into the log.
struct CommitItem {
  std::string agent_id;
  uint64_t boot_epoch = 0;
  uint64_t seq = 0;
  wire::Encoding encoding = wire::Encoding::PACKED;
  kj::Array<kj::byte> payload;  // as logged (self-contained)
  int64_t received_ns = 0;
  // Decoded; read after the commit by the event loop and the worker (shared, read-only).
  std::shared_ptr<const Snapshot> frame;
  // When true, the frame is decoded and checked on the commit thread, before the log write, by
  // the committer's `prepare` callback (off the event loop): from `decode_input` with
  // `decode_encoding` when that is set (an expanded delta), else from `payload` with `encoding`.
  // A frame that fails comes back as kRejected with reject_reason and error, and is not logged.
  bool decode = false;
  kj::Array<kj::byte> decode_input;
  wire::Encoding decode_encoding = wire::Encoding::PACKED;
  std::string reject_reason;

  // Filled in by the committer.
  // kFenced: refused because an earlier frame of the agent failed or was refused (queue full)
  // and the agent has not registered again since. kRejected: `prepare` refused the frame
  // (malformed, or it does not match its push).
  enum class Outcome {
    kAppended,
    kDuplicate,
    kFailed,
    kQueueFull,
    kFenced,
    kRejected
  } outcome = Outcome::kFailed;
  std::string error;  // for kFailed / kQueueFull / kFenced / kRejected
  uint64_t ticket = 0;
  int64_t queued_mono_ns = 0;
};

struct GroupCommitStats {
  uint64_t batches = 0;
  uint64_t frames = 0;  // frames in committed batches (appended + duplicate)
  uint64_t bytes = 0;
  uint64_t failed_batches = 0;
  uint64_t failed_frames = 0;  // in failed batches, or fenced behind one
  uint64_t queue_full = 0;
  uint64_t rejected = 0;  // refused by `prepare` (decode or header check) on the commit thread
  // Histograms: frames per batch (buckets 1, 2, 4, ... 1024, +Inf) and commit seconds.
  std::vector<uint64_t> batch_frames_buckets;
  double batch_frames_sum = 0;
  std::vector<uint64_t> commit_seconds_buckets;
  double commit_seconds_sum = 0;
  absl::flat_hash_map<std::string, uint64_t> closed_by;  // frames | bytes | linger
  uint64_t queued_frames = 0;                            // now
  uint64_t queued_bytes = 0;                             // now
  uint64_t queued_max = 0;                               // high-water mark
  double worker_cpu_seconds = 0;                         // CPU time of the worker thread
  double series_cpu_seconds = 0;                         // CPU time of the off-loop consumer
  uint64_t series_queue_frames = 0;                      // committed, not yet consumed (now)
};

class GroupCommitter {
 public:
  // `off_loop` runs on the worker thread for every appended frame, after its commit, once the
  // batch went back to the loop (the series store: thread-safe). `on_loop` runs on the event
  // loop for every appended frame, right before its ack (the fleet Store).
  // `prepare` (optional) runs on the worker thread for every queued item with decode set, before
  // its batch is written: it decodes and checks the frame, sets `frame` and returns true, or
  // sets reject_reason and error and returns false (the item then comes back as kRejected).
  GroupCommitter(IngestLog& log, GroupCommitOptions options,
                 std::function<void(const Snapshot&, int64_t received_ns)> off_loop,
                 std::function<void(const Snapshot&, int64_t received_ns)> on_loop,
                 std::function<bool(CommitItem&)> prepare = nullptr);
  // Stops the worker after the batch it is writing; queued frames are not acknowledged.
  ~GroupCommitter();

  // Event loop only. Queues the frame; the promise resolves (on this loop) once its batch
  // committed (kAppended/kDuplicate) or failed (kFailed), or at once with kQueueFull.
  kj::Promise<CommitItem> submit(CommitItem item);

  // Event loop only: a new registration of (agent, epoch) lifts a fence set by a failed commit
  // for frames queued from now on.
  void unfence(const std::string& agent_id, uint64_t boot_epoch);

  // Delivers committed batches back to the event loop; runs until dropped.
  kj::Promise<void> run();

  GroupCommitStats stats() const;
  const GroupCommitOptions& options() const { return options_; }
  void writeMetrics(MetricSink& out) const;

  // Bucket bounds of the batch-size histogram (frames) and the commit-time histogram (seconds).
  static const std::vector<double>& batchFrameBounds();
  static const std::vector<double>& commitSecondsBounds();

 private:
  void workerMain();
  void consumerMain();
  std::vector<std::unique_ptr<CommitItem>> takeBatch(std::string* closed_by);
  // Writes the batch; returns the frames it appended, for the off-loop consumer.
  std::vector<std::pair<std::shared_ptr<const Snapshot>, int64_t>> commitBatch(
      std::vector<std::unique_ptr<CommitItem>>& batch);
  static std::string fenceKey(const std::string& agent_id, uint64_t epoch);

  IngestLog& log_;
  GroupCommitOptions options_;
  std::function<void(const Snapshot&, int64_t)> off_loop_;
  std::function<void(const Snapshot&, int64_t)> on_loop_;
  std::function<bool(CommitItem&)> prepare_;

  // Event-loop side.
  uint64_t next_ticket_ = 1;
  absl::flat_hash_map<uint64_t, kj::Own<kj::PromiseFulfiller<CommitItem>>> waiting_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<CommitItem>> queue_ ABSL_GUARDED_BY(mu_);
  size_t queue_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<CommitItem>> done_ ABSL_GUARDED_BY(mu_);
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake_loop_ ABSL_GUARDED_BY(mu_);
  // (agent, epoch) → first ticket accepted again (UINT64_MAX until the agent registers again).
  absl::flat_hash_map<std::string, uint64_t> fenced_ ABSL_GUARDED_BY(mu_);
  GroupCommitStats stats_ ABSL_GUARDED_BY(mu_);

  // Committed frames waiting for the off-loop consumer (its own thread, so the series store
  // runs beside the next commit instead of after it). Bounded by max_batch_frames: beyond it the
  // worker waits before it takes the next batch, so a slow consumer still slows the commits.
  std::deque<std::pair<std::shared_ptr<const Snapshot>, int64_t>> consume_ ABSL_GUARDED_BY(mu_);
  bool consumer_busy_ ABSL_GUARDED_BY(mu_) = false;

  std::thread worker_;
  std::thread consumer_;
};

}  // namespace vigil::aggregator

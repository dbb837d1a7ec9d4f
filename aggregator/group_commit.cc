#include "aggregator/group_commit.h"

#include <pthread.h>
#include <time.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil::aggregator {
namespace {

void observe(const std::vector<double>& bounds, std::vector<uint64_t>& buckets, double v) {
  if (buckets.size() != bounds.size() + 1) {
    buckets.assign(bounds.size() + 1, 0);
  }
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) {
    i++;
  }
  buckets[i]++;
}

void writeHistogram(MetricSink& out, const std::string& name, const std::vector<double>& bounds,
                    const std::vector<uint64_t>& buckets, double sum) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += i < buckets.size() ? buckets[i] : 0;
    std::string le = i < bounds.size() ? absl::StrCat(bounds[i]) : "+Inf";
    out.sample(name, name + "_bucket", {{"le", le}}, static_cast<double>(cumulative));
  }
  out.sample(name, name + "_sum", {}, sum);
  out.sample(name, name + "_count", {}, static_cast<double>(cumulative));
}

}  // namespace

const std::vector<double>& GroupCommitter::batchFrameBounds() {
  static const std::vector<double> kBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  return kBounds;
}

const std::vector<double>& GroupCommitter::commitSecondsBounds() {
  static const std::vector<double> kBounds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                              0.05,   0.1,   0.25,  0.5,   1,    2.5};
  return kBounds;
}

GroupCommitter::GroupCommitter(IngestLog& log, GroupCommitOptions options,
                               std::function<void(const Snapshot&, int64_t)> off_loop,
                               std::function<void(const Snapshot&, int64_t)> on_loop,
                               std::function<bool(CommitItem&)> prepare)
    : log_(log),
      options_(options),
      off_loop_(std::move(off_loop)),
      on_loop_(std::move(on_loop)),
      prepare_(std::move(prepare)) {
  options_.max_batch_frames = std::max<size_t>(1, options_.max_batch_frames);
  options_.max_batch_bytes = std::max<size_t>(1, options_.max_batch_bytes);
  options_.max_queue_frames = std::max<size_t>(1, options_.max_queue_frames);
  options_.linger_us = std::max<int64_t>(0, options_.linger_us);
  {
    absl::MutexLock lock(&mu_);
    stats_.batch_frames_buckets.assign(batchFrameBounds().size() + 1, 0);
    stats_.commit_seconds_buckets.assign(commitSecondsBounds().size() + 1, 0);
  }
  // Named so top -H, perf and the benchmark can tell the aggregator's threads apart.
  worker_ = std::thread([this]() {
    pthread_setname_np(pthread_self(), "vigil-commit");
    workerMain();
  });
  consumer_ = std::thread([this]() {
    pthread_setname_np(pthread_self(), "vigil-series");
    consumerMain();
  });
}

GroupCommitter::~GroupCommitter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  worker_.join();
  consumer_.join();
}

void GroupCommitter::consumerMain() {
  while (true) {
    std::deque<std::pair<std::shared_ptr<const Snapshot>, int64_t>> work;
    {
      absl::MutexLock lock(&mu_);
      consumer_busy_ = false;
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !consume_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) {
        return;  // what is left is in the log; a restart replays it into the series store
      }
      work.swap(consume_);
      consumer_busy_ = true;
    }
    if (off_loop_) {
      for (const auto& [frame, received_ns] : work) {
        off_loop_(*frame, received_ns);
      }
    }
    work.clear();
    absl::MutexLock lock(&mu_);
    stats_.series_cpu_seconds = threadCpuSeconds();
  }
}

std::string GroupCommitter::fenceKey(const std::string& agent_id, uint64_t epoch) {
  return absl::StrCat(agent_id, "\x1f", epoch);
}

kj::Promise<CommitItem> GroupCommitter::submit(CommitItem item) {
  item.ticket = next_ticket_++;
  item.queued_mono_ns = monoNs();
  auto paf = kj::newPromiseAndFulfiller<CommitItem>();
  uint64_t ticket = item.ticket;
  {
    absl::MutexLock lock(&mu_);
    if (queue_.size() >= options_.max_queue_frames) {
      stats_.queue_full++;
      // Like a failed commit: frames of this agent pipelined behind the refused one must not
      // be logged before it (the agent registers again and resends from its last durable seq).
      fenced_[fenceKey(item.agent_id, item.boot_epoch)] = UINT64_MAX;
      item.outcome = CommitItem::Outcome::kQueueFull;
      item.error = absl::StrCat("ingest queue full (", options_.max_queue_frames,
                                " frames waiting for the log)");
      return kj::mv(item);
    }
    queue_bytes_ += item.payload.size();
    queue_.push_back(std::make_unique<CommitItem>(kj::mv(item)));
    stats_.queued_max = std::max<uint64_t>(stats_.queued_max, queue_.size());
  }
  waiting_.insert({ticket, kj::mv(paf.fulfiller)});
  return kj::mv(paf.promise);
}

void GroupCommitter::unfence(const std::string& agent_id, uint64_t boot_epoch) {
  absl::MutexLock lock(&mu_);
  auto it = fenced_.find(fenceKey(agent_id, boot_epoch));
  if (it != fenced_.end()) {
    it->second = next_ticket_;
  }
}

kj::Promise<void> GroupCommitter::run() {
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    absl::MutexLock lock(&mu_);
    if (done_.empty()) {
      wake_loop_ = kj::mv(paf.fulfiller);
    } else {
      paf.fulfiller->fulfill();
    }
  }
  return paf.promise.then([this]() {
    std::vector<std::unique_ptr<CommitItem>> done;
    {
      absl::MutexLock lock(&mu_);
      done.swap(done_);
    }
    for (auto& item : done) {
      if (item->outcome == CommitItem::Outcome::kAppended && on_loop_ && item->frame) {
        on_loop_(*item->frame, item->received_ns);
      }
      auto it = waiting_.find(item->ticket);
      if (it != waiting_.end()) {
        it->second->fulfill(kj::mv(*item));
        waiting_.erase(it);
      }
    }
    return run();
  });
}

std::vector<std::unique_ptr<CommitItem>> GroupCommitter::takeBatch(std::string* closed_by) {
  std::vector<std::unique_ptr<CommitItem>> out;
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
  auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queue_.size() >= options_.max_batch_frames ||
           queue_bytes_ >= options_.max_batch_bytes;
  };
  mu_.Await(absl::Condition(&ready));
  if (stopping_) {
    return out;
  }
  // Linger: give frames arriving right behind the first a chance to share its commit. Frames
  // that queued during the previous commit are past their linger already and go at once.
  int64_t deadline = queue_.front()->queued_mono_ns + options_.linger_us * 1000;
  while (!full()) {
    int64_t now = monoNs();
    if (now >= deadline) {
      break;
    }
    mu_.AwaitWithTimeout(absl::Condition(&full), absl::Nanoseconds(deadline - now));
  }
  if (stopping_) {
    return out;
  }
  *closed_by = queue_.size() >= options_.max_batch_frames ? "frames"
               : queue_bytes_ >= options_.max_batch_bytes ? "bytes"
                                                          : "linger";
  size_t bytes = 0;
  while (!queue_.empty() && out.size() < options_.max_batch_frames &&
         (out.empty() || bytes + queue_.front()->payload.size() <= options_.max_batch_bytes)) {
    bytes += queue_.front()->payload.size();
    queue_bytes_ -= queue_.front()->payload.size();
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return out;
}

void GroupCommitter::workerMain() {
  while (true) {
    std::string closed_by;
    auto batch = takeBatch(&closed_by);
    if (batch.empty()) {
      return;
    }
    auto appended = commitBatch(batch);
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> wake;
    {
      absl::MutexLock lock(&mu_);
      stats_.closed_by[closed_by]++;
      stats_.worker_cpu_seconds = threadCpuSeconds();
      for (auto& item : batch) {
        done_.push_back(std::move(item));
      }
      wake = kj::mv(wake_loop_);
    }
    if (wake) {
      wake->fulfill();
    }
    absl::MutexLock lock(&mu_);
    // Back-pressure: at most about one batch waits for the consumer.
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || consume_.size() < options_.max_batch_frames;
    };
    mu_.Await(absl::Condition(&room));
    if (stopping_) {
      return;
    }
    for (auto& a : appended) {
      consume_.push_back(std::move(a));
    }
    stats_.worker_cpu_seconds = threadCpuSeconds();
  }
}

std::vector<std::pair<std::shared_ptr<const Snapshot>, int64_t>> GroupCommitter::commitBatch(
    std::vector<std::unique_ptr<CommitItem>>& batch) {
  std::vector<std::pair<std::shared_ptr<const Snapshot>, int64_t>> appended_frames;
  {
    absl::MutexLock lock(&mu_);
    for (auto& item : batch) {
      if (fenced_.empty()) {
        break;
      }
      auto it = fenced_.find(fenceKey(item->agent_id, item->boot_epoch));
      if (it != fenced_.end() && item->ticket < it->second) {
        item->outcome = CommitItem::Outcome::kFenced;
        item->error =
            "an earlier frame of this agent could not be stored; register again and resend";
      }
    }
  }
  std::vector<AppendRequest> reqs;
  std::vector<CommitItem*> items;
  reqs.reserve(batch.size());
  items.reserve(batch.size());
  size_t bytes = 0;
  uint64_t fenced = 0;
  uint64_t rejected = 0;
  for (auto& item : batch) {
    if (item->outcome == CommitItem::Outcome::kFenced) {
      fenced++;
      continue;
    }
    if (item->decode) {
      // Decoding here, not on the event loop: the loop only moves bytes and answers pushes.
      bool ok = prepare_ ? prepare_(*item) : false;
      item->decode = false;
      item->decode_input = nullptr;
      if (!ok) {
        item->outcome = CommitItem::Outcome::kRejected;
        if (item->reject_reason.empty()) {
          item->reject_reason = "malformed_frame";
          item->error = "no decoder for this frame";
        }
        rejected++;
        continue;
      }
    }
    AppendRequest r;
    r.agent_id = &item->agent_id;
    r.boot_epoch = item->boot_epoch;
    r.seq = item->seq;
    r.encoding = item->encoding;
    r.payload = item->payload.begin();
    r.size = item->payload.size();
    r.now_ns = item->received_ns;
    reqs.push_back(r);
    items.push_back(item.get());
    bytes += item->payload.size();
  }
  int64_t t0 = monoNs();
  absl::Status st = log_.appendBatch(reqs);
  double commit_s = static_cast<double>(monoNs() - t0) / 1e9;
  if (st.ok()) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      bool appended = reqs[i].outcome == AppendRequest::Outcome::kAppended;
      items[i]->outcome =
          appended ? CommitItem::Outcome::kAppended : CommitItem::Outcome::kDuplicate;
      if (appended && items[i]->frame) {
        appended_frames.emplace_back(items[i]->frame, items[i]->received_ns);
      }
    }
  } else {
    VIGIL_LOG_ERROR("ingest log commit of %d frame(s) failed; none is acknowledged: %s",
                    reqs.size(), st.message());
    for (CommitItem* item : items) {
      item->outcome = CommitItem::Outcome::kFailed;
      item->error = std::string(st.message());
    }
  }
  absl::MutexLock lock(&mu_);
  if (!st.ok()) {
    for (CommitItem* item : items) {
      fenced_[fenceKey(item->agent_id, item->boot_epoch)] = UINT64_MAX;
    }
    stats_.failed_batches++;
    stats_.failed_frames += items.size();
  } else if (!reqs.empty()) {
    stats_.batches++;
    stats_.frames += reqs.size();
    stats_.bytes += bytes;
    observe(batchFrameBounds(), stats_.batch_frames_buckets, static_cast<double>(reqs.size()));
    stats_.batch_frames_sum += static_cast<double>(reqs.size());
    observe(commitSecondsBounds(), stats_.commit_seconds_buckets, commit_s);
    stats_.commit_seconds_sum += commit_s;
  }
  stats_.failed_frames += fenced;
  stats_.rejected += rejected;
  return appended_frames;
}

GroupCommitStats GroupCommitter::stats() const {
  absl::MutexLock lock(&mu_);
  GroupCommitStats s = stats_;
  s.queued_frames = queue_.size();
  s.queued_bytes = queue_bytes_;
  s.series_queue_frames = consume_.size();
  return s;
}

void GroupCommitter::writeMetrics(MetricSink& out) const {
  GroupCommitStats s = stats();
  out.family("vigil_aggregator_commit_batches_total", MetricType::kCounter,
             "Group commits of the ingest log: transactions (one fsync each) that committed.");
  out.sample("vigil_aggregator_commit_batches_total", {}, static_cast<double>(s.batches));
  out.family("vigil_aggregator_commit_frames_total", MetricType::kCounter,
             "Frames in committed batches (appended and duplicate).");
  out.sample("vigil_aggregator_commit_frames_total", {}, static_cast<double>(s.frames));
  out.family("vigil_aggregator_commit_bytes_total", MetricType::kCounter,
             "Frame payload bytes in committed batches.");
  out.sample("vigil_aggregator_commit_bytes_total", {}, static_cast<double>(s.bytes));
  out.family("vigil_aggregator_commit_batch_frames", MetricType::kHistogram,
             "Frames per committed batch.");
  writeHistogram(out, "vigil_aggregator_commit_batch_frames", batchFrameBounds(),
                 s.batch_frames_buckets, s.batch_frames_sum);
  out.family("vigil_aggregator_commit_seconds", MetricType::kHistogram,
             "Time to write and commit (fsync) one batch.");
  writeHistogram(out, "vigil_aggregator_commit_seconds", commitSecondsBounds(),
                 s.commit_seconds_buckets, s.commit_seconds_sum);
  out.family("vigil_aggregator_commit_batches_closed_total", MetricType::kCounter,
             "Batches by what closed them: frames (--ingest_batch_max_frames), bytes "
             "(--ingest_batch_max_bytes) or linger (--ingest_commit_linger passed).");
  for (const char* reason : {"frames", "bytes", "linger"}) {
    auto it = s.closed_by.find(reason);
    out.sample("vigil_aggregator_commit_batches_closed_total", {{"reason", reason}},
               static_cast<double>(it == s.closed_by.end() ? 0 : it->second));
  }
  out.family("vigil_aggregator_commit_failed_batches_total", MetricType::kCounter,
             "Batches whose commit failed (none of their frames was acknowledged).");
  out.sample("vigil_aggregator_commit_failed_batches_total", {},
             static_cast<double>(s.failed_batches));
  out.family("vigil_aggregator_commit_failed_frames_total", MetricType::kCounter,
             "Frames not acknowledged because their batch failed, or because an earlier frame of "
             "the same agent failed (fenced until it registers again).");
  out.sample("vigil_aggregator_commit_failed_frames_total", {},
             static_cast<double>(s.failed_frames));
  out.family("vigil_aggregator_ingest_queue_frames", MetricType::kGauge,
             "Frames waiting for the ingest log (accepted by the RPC loop, not yet committed).");
  out.sample("vigil_aggregator_ingest_queue_frames", {}, static_cast<double>(s.queued_frames));
  out.family("vigil_aggregator_ingest_queue_bytes", MetricType::kGauge,
             "Payload bytes waiting for the ingest log.");
  out.sample("vigil_aggregator_ingest_queue_bytes", {}, static_cast<double>(s.queued_bytes));
  out.family("vigil_aggregator_ingest_queue_max_frames", MetricType::kGauge,
             "Highest number of frames waiting for the ingest log since start.");
  out.sample("vigil_aggregator_ingest_queue_max_frames", {}, static_cast<double>(s.queued_max));
  out.family("vigil_aggregator_ingest_queue_limit_frames", MetricType::kGauge,
             "Queue bound (--ingest_queue_max_frames); pushes beyond it are refused.");
  out.sample("vigil_aggregator_ingest_queue_limit_frames", {},
             static_cast<double>(options_.max_queue_frames));
  out.family("vigil_aggregator_ingest_queue_full_total", MetricType::kCounter,
             "Pushes refused because the ingest queue was full (not acknowledged; agents retry).");
  out.sample("vigil_aggregator_ingest_queue_full_total", {}, static_cast<double>(s.queue_full));
  out.family("vigil_aggregator_ingest_worker_cpu_seconds_total", MetricType::kCounter,
             "CPU time of the group-commit thread (frame decoding and checks, log writes).");
  out.sample("vigil_aggregator_ingest_worker_cpu_seconds_total", {}, s.worker_cpu_seconds);
  out.family("vigil_aggregator_series_ingest_cpu_seconds_total", MetricType::kCounter,
             "CPU time of the thread feeding committed frames to the series store.");
  out.sample("vigil_aggregator_series_ingest_cpu_seconds_total", {}, s.series_cpu_seconds);
  out.family("vigil_aggregator_series_ingest_queue_frames", MetricType::kGauge,
             "Committed frames waiting for the series store (bounded by "
             "--ingest_batch_max_frames; beyond it commits wait).");
  out.sample("vigil_aggregator_series_ingest_queue_frames", {},
             static_cast<double>(s.series_queue_frames));
}

}  // namespace vigil::aggregator

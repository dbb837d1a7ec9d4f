#include "aggregator/remote_write.h"

#include <kj/compat/url.h>
#include <snappy.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "aggregator/ingest.h"
#include "capnp/frame_codec.h"
#include "proto/remote_write.pb.h"
#include "userspace/common/log.h"
#include "userspace/common/clock.h"

namespace vigil::aggregator {

std::string encodeWriteRequest(const std::vector<PendingSeries>& series) {
  prompb::WriteRequest req;
  for (const PendingSeries& s : series) {
    prompb::TimeSeries* ts = req.add_timeseries();
    for (const auto& [name, value] : s.labels) {
      prompb::Label* l = ts->add_labels();
      l->set_name(name);
      l->set_value(value);
    }
    for (const Sample& smp : s.samples) {
      prompb::Sample* p = ts->add_samples();
      p->set_value(smp.value);
      p->set_timestamp(smp.timestamp_ms);
    }
  }
  std::string raw;
  req.SerializeToString(&raw);
  std::string out;
  snappy::Compress(raw.data(), raw.size(), &out);
  return out;
}

absl::StatusOr<std::vector<PendingSeries>> decodeWriteRequest(const std::string& body) {
  std::string raw;
  if (!snappy::Uncompress(body.data(), body.size(), &raw)) {
    return absl::InvalidArgumentError("body is not snappy block-compressed data");
  }
  prompb::WriteRequest req;
  if (!req.ParseFromString(raw)) {
    return absl::InvalidArgumentError("body is not a remote-write WriteRequest protobuf");
  }
  std::vector<PendingSeries> out;
  for (const prompb::TimeSeries& ts : req.timeseries()) {
    PendingSeries s;
    for (const prompb::Label& l : ts.labels()) {
      s.labels.emplace_back(l.name(), l.value());
    }
    for (const prompb::Sample& p : ts.samples()) {
      s.samples.push_back(Sample{p.timestamp(), p.value()});
    }
    out.push_back(std::move(s));
  }
  return out;
}

void WriteBatcher::add(const LabelSet& labels, int64_t t_ms, double value) {
  PendingSeries& s = batch_[labelKey(labels)];
  if (s.labels.empty()) {
    s.labels = labels;
  }
  s.samples.push_back(Sample{t_ms, value});
  samples_++;
}

void WriteBatcher::addFrame(const Snapshot& frame) {
  int64_t t_ms = frame.end_unix_ns / 1000000;
  AgentState& agent = agents_[frame.agent.agent_id];
  absl::flat_hash_map<std::string, LabelSet> now;
  for (FrameSample& s : renderFrameSamples(frame)) {
    std::string key = labelKey(s.labels);
    add(s.labels, t_ms, s.value);
    now.emplace(std::move(key), std::move(s.labels));
  }
  for (const auto& [key, labels] : agent.series) {
    if (!now.contains(key)) {
      add(labels, t_ms, staleNaN());
      stale_markers_++;
    }
  }
  agent.series = std::move(now);
  agent.last_frame_ms = std::max(agent.last_frame_ms, t_ms);
}

void WriteBatcher::prime(const Snapshot& frame) {
  AgentState& agent = agents_[frame.agent.agent_id];
  agent.series.clear();
  for (FrameSample& s : renderFrameSamples(frame)) {
    std::string key = labelKey(s.labels);
    agent.series.emplace(std::move(key), std::move(s.labels));
  }
  agent.last_frame_ms = std::max(agent.last_frame_ms, frame.end_unix_ns / 1000000);
}

size_t WriteBatcher::expireAgents(int64_t before_ms, int64_t t_ms) {
  size_t n = 0;
  for (auto it = agents_.begin(); it != agents_.end();) {
    auto cur = it++;
    if (cur->second.last_frame_ms >= before_ms) {
      continue;
    }
    for (const auto& [key, labels] : cur->second.series) {
      add(labels, std::max(t_ms, cur->second.last_frame_ms + 1), staleNaN());
      n++;
    }
    agents_.erase(cur);
  }
  stale_markers_ += n;
  return n;
}

std::vector<PendingSeries> WriteBatcher::take() {
  std::vector<PendingSeries> out;
  out.reserve(batch_.size());
  for (auto& [key, s] : batch_) {
    // Frames arrive in log order; an agent whose clock stepped back could break time order.
    std::stable_sort(s.samples.begin(), s.samples.end(), [](const Sample& a, const Sample& b) {
      return a.timestamp_ms < b.timestamp_ms;
    });
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(),
            [](const PendingSeries& a, const PendingSeries& b) { return a.labels < b.labels; });
  batch_.clear();
  samples_ = 0;
  stale_markers_ = 0;
  return out;
}

absl::StatusOr<std::unique_ptr<RemoteWriter>> RemoteWriter::create(kj::Timer& timer,
                                                                   kj::Network& network,
                                                                   IngestLog& log, std::string url,
                                                                   std::string consumer,
                                                                   RemoteWriteOptions options) {
  KJ_IF_MAYBE (parsed, kj::Url::tryParse(url)) {
    if (parsed->scheme != "http") {
      return absl::InvalidArgumentError(
          absl::StrCat("--remote_write_url ", url, ": only http:// URLs are supported (scheme '",
                       parsed->scheme.cStr(), "'); put a TLS proxy in front for https"));
    }
    if (parsed->host.size() == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--remote_write_url ", url, ": no host"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--remote_write_url ", url, ": not a valid URL (want http://host:port/path)"));
  }
  auto cursor = log.cursor(consumer);
  if (!cursor.ok()) {
    return cursor.status();
  }
  std::unique_ptr<RemoteWriter> w(
      new RemoteWriter(timer, network, log, std::move(url), std::move(consumer), options));
  w->cursor_ = *cursor;
  w->stats_.cursor = *cursor;
  // Learn each agent's series from the frames just before the cursor (already sent).
  int64_t from = std::max<int64_t>(0, *cursor - static_cast<int64_t>(options.prime_records));
  while (from < *cursor) {
    auto records = log.readAfter(from, 64);
    if (!records.ok() || records->empty()) {
      break;
    }
    for (const LogRecord& r : *records) {
      if (r.id > *cursor) {
        from = *cursor;
        break;
      }
      from = r.id;
      auto decoded = decodeFrame(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size()),
          r.encoding);
      Snapshot snap;
      if (decoded.ok() && fromWire((*decoded)->frame(), snap).ok()) {
        w->batcher_.prime(snap);
      }
    }
  }
  auto head = log.headId();
  VIGIL_LOG_INFO("remote_write %s: resuming after ingest log record %d (log head %d)", w->url_,
                 *cursor, head.ok() ? *head : -1);
  return w;
}

RemoteWriter::RemoteWriter(kj::Timer& timer, kj::Network& network, IngestLog& log, std::string url,
                           std::string consumer, RemoteWriteOptions options)
    : timer_(timer),
      log_(log),
      url_(std::move(url)),
      consumer_(std::move(consumer)),
      options_(std::move(options)) {
  kj::HttpHeaderTable::Builder builder;
  content_encoding_ = builder.add("Content-Encoding");
  user_agent_ = builder.add("User-Agent");
  rw_version_ = builder.add("X-Prometheus-Remote-Write-Version");
  table_ = builder.build();
  client_ = kj::newHttpClient(timer, *table_, network, nullptr);
}

RemoteWriter::~RemoteWriter() = default;

kj::Promise<void> RemoteWriter::run() {
  return step().then([this]() { return run(); });
}

bool RemoteWriter::buildBatch() {
  int64_t end_id = cursor_;
  size_t frames = 0;
  bool more = true;
  while (more && batcher_.samples() < options_.max_samples_per_send) {
    auto records = log_.readAfter(end_id, options_.max_frames_per_read);
    if (!records.ok()) {
      VIGIL_LOG_WARN("remote_write %s: cannot read the ingest log: %s", url_,
                     records.status().message());
      break;
    }
    more = records->size() == options_.max_frames_per_read;
    for (const LogRecord& r : *records) {
      auto decoded = decodeFrame(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.payload.data()), r.payload.size()),
          r.encoding);
      end_id = r.id;
      frames++;
      Snapshot snap;
      if (!decoded.ok() || !fromWire((*decoded)->frame(), snap).ok()) {
        stats_.frames_undecodable++;
        continue;
      }
      batcher_.addFrame(snap);
      if (batcher_.samples() >= options_.max_samples_per_send) {
        more = false;
        break;
      }
    }
  }
  if (!more && frames == 0) {
    // Caught up: this is when an agent that stopped sending is declared gone.
    int64_t now = unixNs() / 1000000;
    batcher_.expireAgents(now - options_.agent_stale_after_ms, now);
  }
  auto head = log_.headId();
  if (head.ok()) {
    stats_.head = *head;
  }
  if (batcher_.samples() == 0) {
    if (end_id != cursor_) {
      cursor_ = end_id;  // only undecodable frames: skip them for good
      commit();
    }
    return false;
  }
  auto p = std::make_unique<Pending>();
  p->samples = batcher_.samples();
  p->stale_markers = batcher_.staleMarkers();
  p->end_id = end_id;
  p->frames = frames;
  p->body = encodeWriteRequest(batcher_.take());
  pending_ = std::move(p);
  return true;
}

void RemoteWriter::commit() {
  auto st = log_.setCursor(consumer_, cursor_);
  if (!st.ok()) {
    // The data went out; a lost cursor update only means a resend after a restart.
    VIGIL_LOG_WARN("remote_write %s: cannot persist cursor: %s", url_, st.message());
  }
  stats_.cursor = cursor_;
}

kj::Promise<void> RemoteWriter::step() {
  if (!pending_ && !buildBatch()) {
    return timer_.afterDelay(options_.poll_interval_ms * kj::MILLISECONDS);
  }
  return send().then([this](int status) { return handleStatus(status); });
}

kj::Promise<int> RemoteWriter::send() {
  stats_.requests++;
  kj::HttpHeaders headers(*table_);
  headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/x-protobuf");
  headers.set(content_encoding_, "snappy");
  headers.set(user_agent_, options_.user_agent);
  headers.set(rw_version_, "0.1.0");
  auto req = client_->request(kj::HttpMethod::POST, url_, headers, pending_->body.size());
  auto write =
      req.body->write(pending_->body.data(), pending_->body.size()).attach(kj::mv(req.body));
  auto exchange =
      write.then([response = kj::mv(req.response)]() mutable { return kj::mv(response); })
          .then([this](kj::HttpClient::Response&& r) {
            int status = static_cast<int>(r.statusCode);
            return r.body->readAllText(64 * 1024)
                .then([](kj::String text) { return kj::mv(text); },
                      [](kj::Exception&&) { return kj::str("(unreadable response body)"); })
                .attach(kj::mv(r.body))
                .then([this, status](kj::String text) {
                  if (status < 200 || status >= 300) {
                    last_error_ = absl::StrCat("HTTP ", status, ": ",
                                               std::string(text.cStr()).substr(0, 300));
                  }
                  return status;
                });
          });
  return timer_.timeoutAfter(options_.timeout_ms * kj::MILLISECONDS, kj::mv(exchange))
      .then([](int status) { return status; },
            [this](kj::Exception&& e) {
              last_error_ = e.getDescription().cStr();
              return 0;
            });
}

kj::Promise<void> RemoteWriter::handleStatus(int status) {
  stats_.responses[status]++;
  const Pending& p = *pending_;
  if (status >= 200 && status < 300) {
    stats_.samples_sent += p.samples;
    stats_.frames_sent += p.frames;
    stats_.stale_markers += p.stale_markers;
    stats_.last_success_ms = unixNs() / 1000000;
    cursor_ = p.end_id;
    pending_.reset();
    backoff_ms_ = 0;
    commit();
    return kj::READY_NOW;
  }
  if (status >= 400 && status < 500 && status != 429) {
    // The receiver will never take this batch (bad labels, too old, ...): drop it, count it, and
    // move on so one bad batch cannot block the stream.
    VIGIL_LOG_ERROR("remote_write %s: dropped %d samples: %s", url_, p.samples, last_error_);
    stats_.samples_dropped += p.samples;
    cursor_ = p.end_id;
    pending_.reset();
    backoff_ms_ = 0;
    commit();
    return kj::READY_NOW;
  }
  // 5xx, 429, or no answer: keep the batch and retry after a growing pause.
  stats_.samples_failed += p.samples;
  stats_.retries++;
  backoff_ms_ = backoff_ms_ == 0 ? options_.min_backoff_ms
                                 : std::min(backoff_ms_ * 2, options_.max_backoff_ms);
  if (stats_.retries == 1 || backoff_ms_ == options_.max_backoff_ms) {
    VIGIL_LOG_WARN("remote_write %s: %s; retrying in %d ms", url_, last_error_, backoff_ms_);
  }
  return timer_.afterDelay(backoff_ms_ * kj::MILLISECONDS);
}

void RemoteWriter::writeMetrics(MetricSink& out) const {
  Labels l = {{"url", url_}};
  auto put = [&](const char* name, double v) { out.sample(name, l, v); };
  put("vigil_aggregator_remote_write_samples_sent_total", stats_.samples_sent);
  put("vigil_aggregator_remote_write_frames_sent_total", stats_.frames_sent);
  put("vigil_aggregator_remote_write_samples_failed_total", stats_.samples_failed);
  put("vigil_aggregator_remote_write_samples_dropped_total", stats_.samples_dropped);
  put("vigil_aggregator_remote_write_stale_markers_total", stats_.stale_markers);
  put("vigil_aggregator_remote_write_retries_total", stats_.retries);
  put("vigil_aggregator_remote_write_frames_undecodable_total", stats_.frames_undecodable);
  // The head moves with every accepted frame, also while a batch is being retried.
  auto head = log_.headId();
  int64_t head_id = head.ok() ? *head : stats_.head;
  put("vigil_aggregator_remote_write_lag_frames",
      static_cast<double>(std::max<int64_t>(0, head_id - stats_.cursor)));
  put("vigil_aggregator_remote_write_last_success_timestamp_seconds",
      stats_.last_success_ms / 1000.0);
  for (const auto& [code, n] : stats_.responses) {
    out.sample("vigil_aggregator_remote_write_requests_total",
               {{"url", url_}, {"code", code == 0 ? "error" : absl::StrCat(code)}},
               static_cast<double>(n));
  }
}

void writeRemoteWriteMetrics(const std::vector<std::unique_ptr<RemoteWriter>>& writers,
                             MetricSink& out) {
  if (writers.empty()) {
    return;
  }
  out.family("vigil_aggregator_remote_write_samples_sent_total", MetricType::kCounter,
             "Samples (including stale markers) accepted by the remote-write receiver.");
  out.family("vigil_aggregator_remote_write_frames_sent_total", MetricType::kCounter,
             "Ingest log frames covered by requests the receiver accepted.");
  out.family("vigil_aggregator_remote_write_samples_failed_total", MetricType::kCounter,
             "Samples in requests that failed (5xx, 429, network) and were retried.");
  out.family("vigil_aggregator_remote_write_samples_dropped_total", MetricType::kCounter,
             "Samples the receiver refused with a non-retryable 4xx; not resent.");
  out.family("vigil_aggregator_remote_write_stale_markers_total", MetricType::kCounter,
             "Stale markers sent for ended series (exited processes, gone agents).");
  out.family("vigil_aggregator_remote_write_retries_total", MetricType::kCounter,
             "Retried remote-write requests.");
  out.family("vigil_aggregator_remote_write_frames_undecodable_total", MetricType::kCounter,
             "Logged frames the forwarder could not decode and skipped.");
  out.family("vigil_aggregator_remote_write_lag_frames", MetricType::kGauge,
             "Frames in the ingest log not yet forwarded (log head id - cursor).");
  out.family("vigil_aggregator_remote_write_last_success_timestamp_seconds", MetricType::kGauge,
             "Unix time of the last accepted remote-write request.");
  out.family("vigil_aggregator_remote_write_requests_total", MetricType::kCounter,
             "Remote-write requests by HTTP status (code=\"error\": no response).");
  for (const auto& w : writers) {
    w->writeMetrics(out);
  }
}

}  // namespace vigil::aggregator

#include "userspace/agent/uplink.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "capnp/event_columns.h"
#include "capnp/frame_codec.h"
#include "userspace/common/log.h"
#include "userspace/common/shrink.h"
#include "userspace/common/clock.h"

namespace vigil {
namespace {

// Packed frames at least this large (a busy node under process churn) make the delta encoding
// allocate and free several MiB; the heap is trimmed after them (userspace/common/shrink.h).
constexpr size_t kTrimAfterPackedBytes = 1 << 20;

// Stable across builds and platforms (std::hash is not): FNV-1a, then a splitmix64 finalizer so
// that similar node names spread evenly.
uint64_t stableHash(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

// Hands pushed configs to the agent; an agent built without a handler refuses them clearly.
class AgentControlImpl final : public wire::AgentControl::Server {
 public:
  explicit AgentControlImpl(kj::Maybe<ConfigHandler&> handler) : handler_(handler) {}

 protected:
  kj::Promise<void> applyConfig(ApplyConfigContext context) override {
    auto result = context.getResults().initResult();
    auto config = context.getParams().getConfig();
    KJ_IF_MAYBE (h, handler_) {
      h->applyConfig(config, result);
      return kj::READY_NOW;
    }
    result.setVersion(config.getVersion());
    result.setApplied(false);
    result.setError("this agent does not accept pushed configs");
    return kj::READY_NOW;
  }

 private:
  kj::Maybe<ConfigHandler&> handler_;
};

std::pair<std::string, uint> splitHostPort(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) {
    return {addr, 9470};
  }
  std::string host = addr.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  uint port = static_cast<uint>(std::strtoul(addr.c_str() + colon + 1, nullptr, 10));
  return {host, port ? port : 9470};
}

}  // namespace

std::vector<std::string> rendezvousOrder(const std::vector<std::string>& addresses,
                                         const std::string& node_name) {
  std::vector<std::pair<uint64_t, std::string>> weighted;
  for (const std::string& a : addresses) {
    weighted.emplace_back(stableHash(node_name + "|" + a), a);
  }
  std::sort(weighted.begin(), weighted.end(),
            [](const auto& x, const auto& y) { return x.first > y.first; });
  std::vector<std::string> out;
  for (auto& [w, a] : weighted) {
    out.push_back(std::move(a));
  }
  return out;
}

struct Uplink::Connection final : public kj::TaskSet::ErrorHandler {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient client;
  wire::Aggregator::Client aggregator;
  wire::IngestSession::Client session = nullptr;
  uint64_t session_epoch = 0;
  bool has_session = false;
  // Delta state of the current session: the packed bytes of the last frame pushed on it.
  bool accepts_delta = false;
  bool accepts_pointer_delta = false;  // Encoding.pointerZstdDelta too
  bool accepts_event_columns = false;  // reads Frame.eventColumns (else: the events list)
  bool delta_disabled = false;         // the aggregator could not expand our deltas: keyframes only
  bool resync = false;                 // a delta was refused: register again before the next push
  uint64_t base_seq = 0;
  kj::Array<kj::byte> base_packed;
  uint32_t since_keyframe = 0;
  bool switching = false;
  size_t index;
  kj::Own<kj::PromiseFulfiller<void>> fail;
  kj::Maybe<kj::Promise<void>> failed;
  kj::TaskSet tasks;

  Connection(kj::Own<kj::AsyncIoStream> s, size_t i)
      : stream(kj::mv(s)),
        client(*stream),
        aggregator(client.bootstrap().castAs<wire::Aggregator>()),
        index(i),
        tasks(*this) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    fail = kj::mv(paf.fulfiller);
    failed = kj::mv(paf.promise);
  }

  void taskFailed(kj::Exception&& e) override { fail->reject(kj::mv(e)); }
};

Uplink::Uplink(kj::AsyncIoProvider& io, UplinkOptions options, std::unique_ptr<Spool> spool)
    : io_(io),
      options_(std::move(options)),
      spool_(std::move(spool)),
      tokens_at_(io.getTimer().now()) {
  KJ_REQUIRE(!options_.aggregators.empty(), "no aggregator address configured");
  order_ = rendezvousOrder(options_.aggregators, options_.identity.node_name);
  stats_.spool_ok = spool_ != nullptr;
  tokens_ = options_.replay_burst;
  updateQueueStats();
}

Uplink::~Uplink() = default;

void Uplink::wake() {
  KJ_IF_MAYBE (w, waiter_) {
    (*w)->fulfill();
    waiter_ = nullptr;
  }
}

kj::Promise<void> Uplink::waitForWake() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

void Uplink::updateQueueStats() {
  uint64_t frames = memory_tail_.size();
  uint64_t bytes = memory_bytes_;
  if (spool_ && stats_.spool_ok) {
    frames += static_cast<uint64_t>(spool_->frames());
    bytes += static_cast<uint64_t>(spool_->bytes());
  } else {
    for (const Pending& p : window_) {
      if (p.spool_id == 0) {
        frames++;
      }
    }
  }
  stats_.queue_frames = frames;
  stats_.queue_bytes = bytes;
}

void Uplink::enqueue(uint64_t seq, kj::Array<kj::byte> payload) {
  stats_.frames_enqueued++;
  uint64_t epoch = options_.boot_epoch;
  // Spool unless frames are already waiting in memory (they must go first, in order).
  if (spool_ && memory_tail_.empty()) {
    auto id = spool_->append(epoch, seq, payload.begin(), payload.size(), unixNs());
    if (id.ok()) {
      if (!stats_.spool_ok) {
        VIGIL_LOG_INFO("spool %s is writable again", spool_->path());
      }
      stats_.spool_ok = true;
      spool_has_more_ = true;
      updateQueueStats();
      wake();
      return;
    }
    stats_.spool_errors++;
    stats_.spool_ok = false;
    if (!spool_warned_) {
      spool_warned_ = true;
      VIGIL_LOG_ERROR(
          "%s; keeping unacknowledged frames in memory (at most %d bytes) until it is writable",
          id.status().message(), options_.max_queue_bytes);
    }
  }
  memory_bytes_ += payload.size();
  memory_tail_.push_back(Pending{0, epoch, seq, kj::mv(payload)});
  // Keep the newest frame even if it alone exceeds the bound.
  while (memory_bytes_ > options_.max_queue_bytes && memory_tail_.size() > 1) {
    memory_bytes_ -= memory_tail_.front().payload.size();
    memory_tail_.pop_front();
    stats_.frames_dropped_queue_full++;
  }
  updateQueueStats();
  wake();
}

void Uplink::refill() {
  constexpr size_t kWindowFrames = 64;
  while (window_.size() < kWindowFrames) {
    if (spool_ && spool_has_more_) {
      auto rows = spool_->readAfter(loaded_id_, kWindowFrames - window_.size());
      if (!rows.ok()) {
        stats_.spool_errors++;
        spool_has_more_ = false;
        VIGIL_LOG_ERROR("%s", rows.status().message());
        continue;
      }
      if (rows->empty()) {
        spool_has_more_ = false;
        continue;
      }
      for (SpoolEntry& e : *rows) {
        auto bytes = kj::heapArray<kj::byte>(e.payload.size());
        memcpy(bytes.begin(), e.payload.data(), e.payload.size());
        window_.push_back(Pending{e.id, e.epoch, e.seq, kj::mv(bytes)});
        loaded_id_ = e.id;
      }
      continue;
    }
    if (!memory_tail_.empty()) {
      memory_bytes_ -= memory_tail_.front().payload.size();
      window_.push_back(kj::mv(memory_tail_.front()));
      memory_tail_.pop_front();
      continue;
    }
    break;
  }
}

void Uplink::ackFront(bool refused, bool duplicate) {
  KJ_ASSERT(!window_.empty());
  Pending p = kj::mv(window_.front());
  window_.pop_front();
  if (in_flight_ > 0) {
    in_flight_--;
  }
  if (refused) {
    stats_.frames_refused++;
  } else {
    stats_.frames_acked++;
  }
  if (duplicate) {
    stats_.frames_duplicate++;
  }
  if (p.spool_id > 0 && spool_) {
    acked_spool_id_ = p.spool_id;
    // Deleting is one fsync'd commit: during a replay batch it (every 16 acks or when nothing
    // is in flight). A crash before the delete only means a redelivery, which is deduplicated.
    if (++acks_since_delete_ >= 16 || in_flight_ == 0) {
      flushAcked();
    }
  }
  updateQueueStats();
}

void Uplink::flushAcked() {
  if (spool_ && acked_spool_id_ > 0 && acks_since_delete_ > 0) {
    acks_since_delete_ = 0;
    if (auto st = spool_->removeThrough(acked_spool_id_); !st.ok()) {
      // The frames stay spooled and are redelivered after a restart; the aggregator dedupes.
      stats_.spool_errors++;
    }
  }
}

kj::Duration Uplink::nextBackoff() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  kj::Duration d = options_.min_backoff;
  for (uint32_t i = 0; i < attempt_ && d < options_.max_backoff; ++i) {
    d = d * 2;
  }
  if (d > options_.max_backoff) {
    d = options_.max_backoff;
  }
  // Jitter over the upper half spreads a fleet's reconnects.
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  attempt_++;
  return static_cast<int64_t>(d / kj::MILLISECONDS * jitter(rng)) * kj::MILLISECONDS;
}

double Uplink::takeTokenDelaySeconds() {
  if (options_.replay_rate <= 0) {
    return 0;
  }
  auto now = io_.getTimer().now();
  double elapsed = static_cast<double>((now - tokens_at_) / kj::MICROSECONDS) / 1e6;
  tokens_at_ = now;
  tokens_ = std::min(options_.replay_burst, tokens_ + elapsed * options_.replay_rate);
  if (tokens_ >= 1) {
    tokens_ -= 1;
    return 0;
  }
  return (1 - tokens_) / options_.replay_rate;
}

kj::Promise<void> Uplink::run() {
  size_t index = index_;
  return connectTo(index).then(
      [this]() { return run(); },
      [this, index](kj::Exception&& e) -> kj::Promise<void> {
        bool was_connected = stats_.connected;
        stats_.connected = false;
        connection_ = nullptr;
        in_flight_ = 0;
        send_generation_++;
        flushAcked();
        kj::Duration delay = 0 * kj::MILLISECONDS;
        const std::string& addr = order_[index];
        if (switch_to_ >= 0) {
          index_ = static_cast<size_t>(switch_to_);
          switch_to_ = -1;
          VIGIL_LOG_INFO("aggregator %s answers again; moving back to it", order_[index_]);
          return run();
        }
        if (was_connected) {
          index_ = 0;  // start again from the preferred aggregator
          delay = nextBackoff();
        } else {
          stats_.connect_failures++;
          if (index + 1 < order_.size()) {
            index_ = index + 1;  // fail over down the list at once
          } else {
            index_ = 0;
            delay = nextBackoff();
          }
        }
        VIGIL_LOG_WARN("aggregator %s %s (%s); next try %s in %.1fs with %d frame(s) queued", addr,
                       was_connected ? "connection lost" : "unreachable", e.getDescription().cStr(),
                       order_[index_], delay / kj::MILLISECONDS / 1000.0, stats_.queue_frames);
        return io_.getTimer().afterDelay(delay).then([this]() { return run(); });
      });
}

kj::Promise<kj::Own<kj::AsyncIoStream>> Uplink::dial(size_t index) {
  auto [host, port] = splitHostPort(order_[index]);
  std::string server_name = options_.tls_server_name.empty() ? host : options_.tls_server_name;
  auto connected =
      io_.getNetwork()
          .parseAddress(host, port)
          .then(
              [](kj::Own<kj::NetworkAddress> addr) { return addr->connect().attach(kj::mv(addr)); })
          .then([this, server_name](
                    kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
            KJ_IF_MAYBE (tls, options_.tls) {
              return tls->wrapClient(kj::mv(stream), server_name);
            }
            return kj::mv(stream);
          });
  return io_.getTimer().timeoutAfter(options_.connect_timeout, kj::mv(connected));
}

kj::Promise<void> Uplink::connectTo(size_t index) {
  stats_.current_aggregator = order_[index];
  return dial(index).then([this, index](kj::Own<kj::AsyncIoStream> stream) {
    auto owned = kj::heap<Connection>(kj::mv(stream), index);
    auto& conn = *owned;
    connection_ = kj::mv(owned);
    refill();
    uint64_t epoch = window_.empty() ? options_.boot_epoch : window_.front().epoch;
    return registerEpoch(conn, epoch).then([this, &conn, index]() {
      stats_.connected = true;
      stats_.connects++;
      if (index > 0) {
        stats_.failovers++;
      }
      attempt_ = 0;
      VIGIL_LOG_INFO("connected to aggregator %s%s (%d frame(s) to send)", order_[index],
                     index > 0 ? " (fallback)" : "", stats_.queue_frames);
      auto disconnected = conn.client.onDisconnect().then([]() -> kj::Promise<void> {
        return KJ_EXCEPTION(DISCONNECTED, "aggregator closed the connection");
      });
      kj::Promise<void> failed = KJ_ASSERT_NONNULL(kj::mv(conn.failed));
      conn.failed = nullptr;
      auto all = pump(conn)
                     .exclusiveJoin(heartbeatLoop(conn))
                     .exclusiveJoin(kj::mv(disconnected))
                     .exclusiveJoin(kj::mv(failed));
      if (index > 0) {
        all = all.exclusiveJoin(probeLoop(conn));
      }
      return all;
    });
  });
}

kj::Promise<void> Uplink::registerEpoch(Connection& conn, uint64_t epoch) {
  auto req = conn.aggregator.registerRequest();
  auto hello = req.initHello();
  auto agent = hello.initAgent();
  agent.setAgentId(options_.identity.agent_id);
  agent.setNodeName(options_.identity.node_name);
  agent.setVersion(options_.identity.version);
  agent.setKernel(options_.identity.kernel);
  auto labels = agent.initLabels(options_.identity.labels.size());
  for (size_t i = 0; i < options_.identity.labels.size(); ++i) {
    labels[i].setKey(options_.identity.labels[i].first);
    labels[i].setValue(options_.identity.labels[i].second);
  }
  hello.setBootEpoch(epoch);
  hello.setToken(options_.token);
  hello.setProtocolVersion(0);
  KJ_IF_MAYBE (h, options_.config_handler) {
    hello.setConfigVersion(h->configVersion());
  }
  req.setControl(kj::heap<AgentControlImpl>(options_.config_handler));
  return req.send().then(
      [this, &conn, epoch](capnp::Response<wire::Aggregator::RegisterResults> resp) {
        conn.session = resp.getSession();
        conn.session_epoch = epoch;
        conn.has_session = true;
        // A new session has no base: its first frame is a keyframe.
        conn.accepts_delta = resp.getAcceptsDelta();
        conn.accepts_pointer_delta = resp.getAcceptsPointerDelta();
        conn.accepts_event_columns = resp.getAcceptsEventColumns();
        conn.resync = false;
        conn.base_seq = 0;
        conn.base_packed = nullptr;
        conn.since_keyframe = 0;
        if (resp.getHeartbeatIntervalMs() >= 100) {
          stats_.heartbeat_interval_ms = resp.getHeartbeatIntervalMs();
        }
        uint64_t last = resp.getLastSeq();
        // Frames the aggregator already holds (their ack was lost) are done.
        refill();
        while (in_flight_ == 0 && !window_.empty() && window_.front().epoch == epoch &&
               window_.front().seq <= last) {
          ackFront(false, true);
          refill();
        }
        if (epoch != options_.boot_epoch) {
          VIGIL_LOG_INFO(
              "sending spooled frames of earlier boot epoch %d (aggregator has up to "
              "seq %d)",
              epoch, last);
        }
      });
}

wire::Encoding Uplink::encodeForSend(Connection& conn, const Pending& next,
                                     kj::Array<kj::byte>& out, uint64_t& base_seq) {
  base_seq = 0;
  // An aggregator that does not read Frame.eventColumns would drop those events: it gets the
  // frame with an events list. A payload that does not decode is sent as spooled, for the
  // aggregator to refuse with a reason.
  kj::ArrayPtr<const kj::byte> payload = next.payload;
  kj::Array<kj::byte> as_list;
  if (!conn.accepts_event_columns) {
    auto listed = withEventList(next.payload);
    if (listed.ok() && listed->size() > 0) {
      as_list = kj::mv(*listed);
      payload = as_list;
      stats_.event_list_frames_sent++;
    }
  }
  if (options_.keyframe_every == 0 || !conn.accepts_delta || conn.delta_disabled) {
    out = kj::heapArray<kj::byte>(payload);
    stats_.keyframes_sent++;
    return wire::Encoding::PACKED_ZSTD;
  }
  auto packed = packedBytes(payload, wire::Encoding::PACKED_ZSTD);
  if (!packed.ok()) {
    // Not ours to judge here: send it as spooled (the aggregator refuses it with a reason) and
    // start the next push with a keyframe.
    conn.base_seq = 0;
    conn.base_packed = nullptr;
    out = kj::heapArray<kj::byte>(payload);
    stats_.keyframes_sent++;
    return wire::Encoding::PACKED_ZSTD;
  }
  wire::Encoding encoding = wire::Encoding::PACKED_ZSTD;
  if (conn.base_seq != 0 && conn.base_seq < next.seq &&
      conn.since_keyframe + 1 < options_.keyframe_every) {
    // Pointer-predicted when the aggregator takes it and both frames are single-segment (frames
    // spooled by an older agent are not): a byte delta otherwise.
    wire::Encoding delta_encoding = wire::Encoding::PACKED_ZSTD_DELTA;
    kj::Array<kj::byte> delta;
    if (conn.accepts_pointer_delta) {
      KJ_IF_MAYBE (d, encodePointerDelta(conn.base_packed, *packed)) {
        delta = kj::mv(*d);
        delta_encoding = wire::Encoding::POINTER_ZSTD_DELTA;
      }
    }
    if (delta_encoding == wire::Encoding::PACKED_ZSTD_DELTA) {
      delta = encodeDelta(conn.base_packed, *packed);
    }
    // A frame that shares little with its base is cheaper whole (and restarts the count).
    if (delta.size() < payload.size()) {
      out = kj::mv(delta);
      base_seq = conn.base_seq;
      encoding = delta_encoding;
    }
  }
  if (encoding != wire::Encoding::PACKED_ZSTD) {
    conn.since_keyframe++;
    stats_.deltas_sent++;
    if (encoding == wire::Encoding::POINTER_ZSTD_DELTA) {
      stats_.pointer_deltas_sent++;
    }
  } else {
    out = kj::heapArray<kj::byte>(payload);
    conn.since_keyframe = 0;
    stats_.keyframes_sent++;
  }
  conn.base_seq = next.seq;
  conn.base_packed = kj::mv(*packed);
  if (conn.base_packed.size() >= kTrimAfterPackedBytes) {
    releaseFreeMemory();  // the expansion and delta of a large frame are freed by now
  }
  return encoding;
}

kj::Promise<void> Uplink::pump(Connection& conn) {
  refill();
  if (conn.switching && in_flight_ == 0) {
    return KJ_EXCEPTION(DISCONNECTED, "returning to the preferred aggregator");
  }
  if (conn.resync) {
    if (in_flight_ == 0 && !window_.empty()) {
      // The refused delta is still the window's front: a new session starts with it as a
      // keyframe (registering also skips whatever the aggregator already holds).
      return registerEpoch(conn, window_.front().epoch).then([this, &conn]() {
        return pump(conn);
      });
    }
    return waitForWake().then([this, &conn]() { return pump(conn); });
  }
  if (!conn.switching && in_flight_ < window_.size() && in_flight_ < options_.max_in_flight) {
    Pending& next = window_[in_flight_];
    if (next.epoch != conn.session_epoch) {
      if (in_flight_ == 0) {
        return registerEpoch(conn, next.epoch).then([this, &conn]() { return pump(conn); });
      }
      return waitForWake().then([this, &conn]() { return pump(conn); });
    }
    double delay = takeTokenDelaySeconds();
    if (delay > 0) {
      stats_.rate_limited_waits++;
      auto wait = static_cast<int64_t>(delay * 1e6) * kj::MICROSECONDS;
      return io_.getTimer().afterDelay(wait).then([this, &conn]() { return pump(conn); });
    }
    auto req = conn.session.pushRequest();
    req.setSeq(next.seq);
    kj::Array<kj::byte> payload;
    uint64_t base_seq = 0;
    req.setEncoding(encodeForSend(conn, next, payload, base_seq));
    req.setBaseSeq(base_seq);
    req.setPayload(payload);
    stats_.payload_bytes_sent += payload.size();
    uint64_t seq = next.seq;
    uint64_t epoch = next.epoch;
    uint64_t generation = send_generation_;
    in_flight_++;
    conn.tasks.add(req.send().then(
        [this, seq, epoch, generation](capnp::Response<wire::IngestSession::PushResults> resp) {
          if (generation != send_generation_) {
            return;  // sent before a resync; the frame is sent again
          }
          auto ack = resp.getAck();
          KJ_REQUIRE(ack.getSeq() == seq, "aggregator acknowledged the wrong frame", ack.getSeq(),
                     seq);
          KJ_REQUIRE(
              !window_.empty() && window_.front().seq == seq && window_.front().epoch == epoch,
              "acknowledgement out of order", seq);
          ackFront(false, ack.getDuplicate());
          wake();
        },
        [this, &conn, seq, epoch, generation](kj::Exception&& e) {
          if (generation != send_generation_) {
            return;  // pipelined behind a refused delta: refused too, and sent again
          }
          const char* what = e.getDescription().cStr();
          bool refused = e.getType() == kj::Exception::Type::FAILED &&
                         strstr(what, "frame refused") != nullptr && !window_.empty() &&
                         window_.front().seq == seq && window_.front().epoch == epoch;
          if (refused && strstr(what, "delta_") != nullptr) {
            // The aggregator could not use our delta (it lacks the base, or the delta did not
            // expand). Nothing is lost: the frame is spooled whole. Disown the pushes behind it
            // (the session refuses them all), register again and resend it as a keyframe.
            stats_.delta_resyncs++;
            if (strstr(what, "delta_bad") != nullptr || strstr(what, "delta_not_accepted")) {
              conn.delta_disabled = true;
            }
            VIGIL_LOG_WARN("aggregator refused delta frame %d (%s); resending from a keyframe", seq,
                           what);
            send_generation_++;
            in_flight_ = 0;
            conn.resync = true;
            wake();
            return;
          }
          // The aggregator refused this frame on its merits: resending it would be refused
          // forever, so drop it, count it and go on. Transport failures reconnect instead.
          if (refused) {
            VIGIL_LOG_ERROR("aggregator refused frame %d, dropping it: %s", seq, what);
            ackFront(true, false);
            wake();
            return;
          }
          kj::throwFatalException(kj::mv(e));
        }));
    return pump(conn);
  }
  return waitForWake().then([this, &conn]() { return pump(conn); });
}

kj::Promise<void> Uplink::heartbeatLoop(Connection& conn) {
  uint32_t ms = stats_.heartbeat_interval_ms ? stats_.heartbeat_interval_ms : 10000;
  return io_.getTimer().afterDelay(ms * kj::MILLISECONDS).then([this, &conn, ms]() {
    auto reply = conn.session.heartbeatRequest().send().then(
        [this](capnp::Response<wire::IngestSession::HeartbeatResults> resp) {
          if (resp.getHeartbeatIntervalMs() >= 100) {
            stats_.heartbeat_interval_ms = resp.getHeartbeatIntervalMs();
          }
        });
    return io_.getTimer()
        .timeoutAfter(2 * ms * kj::MILLISECONDS, kj::mv(reply))
        .then([this, &conn]() { return heartbeatLoop(conn); });
  });
}

kj::Promise<bool> Uplink::probe(size_t index) {
  return dial(index).then([](kj::Own<kj::AsyncIoStream>) { return true; },
                          [](kj::Exception&&) { return false; });
}

kj::Promise<void> Uplink::probeFrom(Connection& conn, size_t index) {
  if (index >= conn.index) {
    return probeLoop(conn);
  }
  return probe(index).then([this, &conn, index](bool up) -> kj::Promise<void> {
    if (up) {
      switch_to_ = static_cast<int64_t>(index);
      conn.switching = true;  // drain the in-flight pushes, then reconnect there
      wake();
      return kj::NEVER_DONE;
    }
    return probeFrom(conn, index + 1);
  });
}

kj::Promise<void> Uplink::probeLoop(Connection& conn) {
  return io_.getTimer().afterDelay(options_.probe_interval).then([this, &conn]() {
    return probeFrom(conn, 0);
  });
}

void Uplink::appendSelfMetrics(std::vector<MetricSample>& out) const {
  auto add = [&out](const char* name, Labels labels, double v, bool counter) {
    out.push_back(MetricSample{name, std::move(labels), v, counter});
  };
  SpoolStats ss = spool_ ? spool_->stats() : SpoolStats{};
  add("vigil_agent_frames_total", {}, stats_.frames_enqueued, true);
  add("vigil_agent_frames_acked_total", {}, stats_.frames_acked, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "queue_full"}},
      stats_.frames_dropped_queue_full, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "refused"}}, stats_.frames_refused, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "spool_full"}}, ss.dropped_full, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "spool_age"}}, ss.dropped_age, true);
  add("vigil_agent_queue_frames", {}, stats_.queue_frames, false);
  add("vigil_agent_queue_bytes", {}, stats_.queue_bytes, false);
  add("vigil_agent_spool_ok", {}, stats_.spool_ok ? 1 : 0, false);
  add("vigil_agent_spool_errors_total", {}, stats_.spool_errors + ss.write_errors, true);
  add("vigil_agent_spool_recovered_frames_total", {}, ss.recovered, true);
  add("vigil_agent_spool_quarantined_total", {}, ss.quarantined, true);
  add("vigil_agent_uplink_connected", {}, stats_.connected ? 1 : 0, false);
  add("vigil_agent_uplink_connects_total", {}, stats_.connects, true);
  add("vigil_agent_uplink_connect_failures_total", {}, stats_.connect_failures, true);
  add("vigil_agent_uplink_failovers_total", {}, stats_.failovers, true);
  add("vigil_agent_uplink_sent_bytes_total", {}, stats_.payload_bytes_sent, true);
  add("vigil_agent_uplink_frames_sent_total", {{"encoding", "keyframe"}}, stats_.keyframes_sent,
      true);
  add("vigil_agent_uplink_frames_sent_total", {{"encoding", "delta"}},
      stats_.deltas_sent - stats_.pointer_deltas_sent, true);
  add("vigil_agent_uplink_frames_sent_total", {{"encoding", "pointer_delta"}},
      stats_.pointer_deltas_sent, true);
  add("vigil_agent_uplink_event_list_frames_total", {}, stats_.event_list_frames_sent, true);
  add("vigil_agent_uplink_delta_resyncs_total", {}, stats_.delta_resyncs, true);
  add("vigil_agent_uplink_rate_limited_total", {}, stats_.rate_limited_waits, true);
  add("vigil_agent_duplicate_acks_total", {}, stats_.frames_duplicate, true);
  add("vigil_agent_heartbeat_interval_seconds", {}, stats_.heartbeat_interval_ms / 1000.0, false);
}

}  // namespace vigil

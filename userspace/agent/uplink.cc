#include "userspace/agent/uplink.h"

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "userspace/common/log.h"

namespace vigil {
namespace {

// The aggregator may change its mind about config; until config push lands the agent refuses
// pushed configs with a clear reason instead of pretending to apply them.
class AgentControlImpl final : public wire::AgentControl::Server {
 protected:
  kj::Promise<void> applyConfig(ApplyConfigContext context) override {
    auto result = context.getResults().initResult();
    result.setVersion(context.getParams().getConfig().getVersion());
    result.setApplied(false);
    result.setError("this agent version does not support config push yet");
    return kj::READY_NOW;
  }
};

}  // namespace

struct Uplink::Connection {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyClient client;
  wire::IngestSession::Client session = nullptr;

  explicit Connection(kj::Own<kj::AsyncIoStream> s) : stream(kj::mv(s)), client(*stream) {}
};

Uplink::Uplink(kj::AsyncIoProvider& io, UplinkOptions options)
    : io_(io), options_(std::move(options)) {
  KJ_REQUIRE(!options_.aggregators.empty(), "no aggregator address configured");
}

Uplink::~Uplink() = default;

void Uplink::enqueue(uint64_t seq, kj::Array<kj::byte> payload) {
  stats_.frames_enqueued++;
  stats_.queue_bytes += payload.size();
  queue_.push_back(Pending{seq, kj::mv(payload)});
  // Keep the newest frame even if it alone exceeds the bound.
  while (stats_.queue_bytes > options_.max_queue_bytes && queue_.size() > 1) {
    stats_.queue_bytes -= queue_.front().payload.size();
    queue_.pop_front();
    stats_.frames_dropped_queue_full++;
  }
  stats_.queue_frames = queue_.size();
  KJ_IF_MAYBE (waiter, frame_waiter_) {
    (*waiter)->fulfill();
    frame_waiter_ = nullptr;
  }
}

void Uplink::ackThrough(uint64_t seq) {
  while (!queue_.empty() && queue_.front().seq <= seq) {
    stats_.queue_bytes -= queue_.front().payload.size();
    queue_.pop_front();
  }
  stats_.queue_frames = queue_.size();
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
  // Full jitter over the upper half spreads a fleet's reconnects.
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  attempt_++;
  return static_cast<int64_t>(d / kj::MILLISECONDS * jitter(rng)) * kj::MILLISECONDS;
}

kj::Promise<void> Uplink::run() {
  return connectAndPump().then(
      [this]() { return run(); },
      [this](kj::Exception&& e) -> kj::Promise<void> {
        bool was_connected = stats_.connected;
        stats_.connected = false;
        connection_ = nullptr;
        if (!was_connected) {
          stats_.connect_failures++;
        }
        kj::Duration delay = nextBackoff();
        VIGIL_LOG_WARN("aggregator %s %s (%s); retrying in %.1fs with %d frame(s) queued",
                       options_.aggregators[0], was_connected ? "connection lost" : "unreachable",
                       e.getDescription().cStr(), delay / kj::MILLISECONDS / 1000.0, queue_.size());
        return io_.getTimer().afterDelay(delay).then([this]() { return run(); });
      });
}

kj::Promise<void> Uplink::connectAndPump() {
  std::pair<std::string, std::string> hp = absl::StrSplit(options_.aggregators[0], ':');
  return io_.getNetwork()
      .parseAddress(hp.first, static_cast<uint>(std::stoul(hp.second.empty() ? "9470" : hp.second)))
      .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect().attach(kj::mv(addr)); })
      .then([this](kj::Own<kj::AsyncIoStream> stream) {
        auto owned = kj::heap<Connection>(kj::mv(stream));
        auto& conn = *owned;
        connection_ = kj::mv(owned);
        auto aggregator = conn.client.bootstrap().castAs<wire::Aggregator>();
        auto req = aggregator.registerRequest();
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
        hello.setBootEpoch(options_.boot_epoch);
        hello.setToken(options_.token);
        hello.setProtocolVersion(0);
        req.setControl(kj::heap<AgentControlImpl>());
        return req.send().then(
            [this, &conn](capnp::Response<wire::Aggregator::RegisterResults> resp) {
              conn.session = resp.getSession();
              stats_.heartbeat_interval_ms = resp.getHeartbeatIntervalMs();
              stats_.connected = true;
              stats_.connects++;
              attempt_ = 0;
              ackThrough(resp.getLastSeq());
              VIGIL_LOG_INFO("connected to aggregator %s (%d frame(s) to send)",
                             options_.aggregators[0], queue_.size());
              auto disconnected = conn.client.onDisconnect().then([]() -> kj::Promise<void> {
                return KJ_EXCEPTION(DISCONNECTED, "aggregator closed the connection");
              });
              return pump().exclusiveJoin(heartbeatLoop()).exclusiveJoin(kj::mv(disconnected));
            });
      });
}

kj::Promise<void> Uplink::waitForFrame() {
  if (!queue_.empty()) {
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  frame_waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

kj::Promise<void> Uplink::pump() {
  return waitForFrame().then([this]() {
    KJ_IF_MAYBE (conn, connection_) {
      const Pending& next = queue_.front();
      auto req = (*conn)->session.pushRequest();
      req.setSeq(next.seq);
      req.setEncoding(wire::Encoding::PACKED_ZSTD);
      req.setPayload(next.payload);
      stats_.payload_bytes_sent += next.payload.size();
      uint64_t seq = next.seq;
      return req.send().then(
          [this, seq](capnp::Response<wire::IngestSession::PushResults> resp) {
            auto ack = resp.getAck();
            KJ_REQUIRE(ack.getSeq() == seq, "aggregator acknowledged the wrong frame", ack.getSeq(),
                       seq);
            stats_.frames_acked++;
            if (ack.getDuplicate()) {
              stats_.frames_duplicate++;
            }
            ackThrough(seq);
            return pump();
          },
          [this, seq](kj::Exception&& e) -> kj::Promise<void> {
            // The aggregator refused this frame on its merits: resending it would be refused
            // forever, so drop it, count it and go on. Transport failures reconnect instead.
            if (e.getType() == kj::Exception::Type::FAILED &&
                strstr(e.getDescription().cStr(), "frame refused") != nullptr) {
              VIGIL_LOG_ERROR("aggregator refused frame %d, dropping it: %s", seq,
                              e.getDescription().cStr());
              stats_.frames_refused++;
              ackThrough(seq);
              return pump();
            }
            return kj::mv(e);
          });
    }
    return kj::Promise<void>(KJ_EXCEPTION(DISCONNECTED, "no connection"));
  });
}

kj::Promise<void> Uplink::heartbeatLoop() {
  uint32_t ms = stats_.heartbeat_interval_ms ? stats_.heartbeat_interval_ms : 10000;
  return io_.getTimer().afterDelay(ms * kj::MILLISECONDS).then([this, ms]() {
    KJ_IF_MAYBE (conn, connection_) {
      auto reply = (*conn)->session.heartbeatRequest().send().then(
          [this](capnp::Response<wire::IngestSession::HeartbeatResults> resp) {
            if (resp.getHeartbeatIntervalMs() >= 100) {
              stats_.heartbeat_interval_ms = resp.getHeartbeatIntervalMs();
            }
          });
      return io_.getTimer().timeoutAfter(2 * ms * kj::MILLISECONDS, kj::mv(reply)).then([this]() {
        return heartbeatLoop();
      });
    }
    return kj::Promise<void>(KJ_EXCEPTION(DISCONNECTED, "no connection"));
  });
}

void Uplink::appendSelfMetrics(std::vector<MetricSample>& out) const {
  auto add = [&out](const char* name, Labels labels, double v, bool counter) {
    out.push_back(MetricSample{name, std::move(labels), v, counter});
  };
  add("vigil_agent_frames_total", {}, stats_.frames_enqueued, true);
  add("vigil_agent_frames_acked_total", {}, stats_.frames_acked, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "queue_full"}},
      stats_.frames_dropped_queue_full, true);
  add("vigil_agent_frames_dropped_total", {{"reason", "refused"}}, stats_.frames_refused, true);
  add("vigil_agent_queue_frames", {}, stats_.queue_frames, false);
  add("vigil_agent_queue_bytes", {}, stats_.queue_bytes, false);
  add("vigil_agent_uplink_connected", {}, stats_.connected ? 1 : 0, false);
  add("vigil_agent_uplink_connects_total", {}, stats_.connects, true);
  add("vigil_agent_uplink_connect_failures_total", {}, stats_.connect_failures, true);
  add("vigil_agent_uplink_sent_bytes_total", {}, stats_.payload_bytes_sent, true);
}

}  // namespace vigil
